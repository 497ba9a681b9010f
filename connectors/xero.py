"""Xero Accounting API (`api.xro/2.0`) client: OAuth 2 with rotating refresh tokens, the `xero-tenant-id`
header on every accounting call, `page`/`pageSize` paging, incremental reads by `If-Modified-Since`, `where`
filters, and writes of many elements per request (`summarizeErrors=false`, one result per element) that always
carry an `Idempotency-Key`, so a re-sent write is replayed by Xero instead of applied twice.

Errors are decoded from Xero's three shapes: the `ValidationException` body (`ErrorNumber`, `Type`, `Message`,
`Elements[].ValidationErrors[]`), the problem body of 401/403 (`Title`, `Detail`: "TokenExpired: …"), and 429
with `Retry-After` and `X-Rate-Limit-Problem` (a day-limit 429 is not retried within a run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.errors import (
    AppError,
    AuthenticationError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from connectors.http import AppClient, RateLimiter

PRODUCTION_BASE_URL = "https://api.xero.com"
XERO_TOKEN_URL = "https://identity.xero.com/connect/token"
API_PATH = "api.xro/2.0"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_IDEMPOTENCY_KEY = 128
# Xero recommends about 50 elements per write (request ≤ 3.5 MB); Items allow up to 500.
MAX_ELEMENTS = 50
MAX_ELEMENTS_BY_COLLECTION = {"Items": 500}

# Collections read with page/pageSize; the others answer every row in one response.
PAGED = frozenset({"Contacts", "Invoices", "CreditNotes", "Payments", "BankTransactions", "ManualJournals",
                   "PurchaseOrders", "Prepayments", "Overpayments", "Quotes"})
# The envelope key when it is not the path's own name.
# the paged collections extraction reads: what the change probe asks about
CHANGE_SIGNAL_COLLECTIONS = ("Invoices", "CreditNotes", "Payments", "Contacts")
ENVELOPE_KEYS = {"Organisation": "Organisations"}
# Each collection's id field (TaxRates have none but their TaxType; Currencies their Code).
ID_FIELDS = {
    "Contacts": "ContactID", "Invoices": "InvoiceID", "CreditNotes": "CreditNoteID", "Payments": "PaymentID",
    "Items": "ItemID", "Accounts": "AccountID", "TaxRates": "TaxType", "Currencies": "Code",
    "Organisation": "OrganisationID",
}
# Documents that are voided / deleted by a status change (Xero never removes them); Items and Accounts are
# deleted with HTTP DELETE.
_STATUS_DELETES = frozenset({"Invoices", "CreditNotes", "Payments"})
_HTTP_DELETES = frozenset({"Items", "Accounts"})

_COLLECTION = re.compile(r"^[A-Z][A-Za-z]*$")
_DOTNET_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")

# Exception types of Xero's error body that say more than the HTTP status.
_ERROR_TYPES: dict[str, type[AppError]] = {
    "ValidationException": ValidationFailed,
    "PostDataInvalidException": ValidationFailed,
    "QueryParseException": ValidationFailed,
    "ObjectNotFoundException": NotFound,
    "UnauthorisedException": AuthenticationError,
    "OrganisationOfflineException": ServerError,
    "NotAvailableException": ServerError,
    "RateLimitExceededException": RateLimited,
}


def token_url_for(base_url: str) -> str:
    """The token endpoint that goes with an API base URL: Xero's identity server for Xero hosts, and
    `<base>/connect/token` for the sandbox emulator (which serves both on one server)."""
    host = httpx.URL(base_url).host
    if host == "xero.com" or host.endswith(".xero.com"):
        return XERO_TOKEN_URL
    return base_url.rstrip("/") + "/connect/token"


def parse_dotnet_date(value: Any) -> datetime | None:
    """`/Date(1740873600000+0000)/` -> an aware UTC datetime (the number is epoch milliseconds in UTC; the
    offset is informational). Also takes ISO strings. None for None; ValueError for anything else."""
    if value is None:
        return None
    text = str(value).strip()
    match = _DOTNET_DATE.match(text)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_if_modified_since(value: datetime) -> str:
    """A timezone-aware datetime as the If-Modified-Since header Xero reads (UTC, second precision)."""
    if value.tzinfo is None:
        raise ValueError("If-Modified-Since needs a timezone-aware datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def quote_literal(value: str) -> str:
    """A string literal for a `where` expression: double-quoted, an inner quote doubled (the dynamic-LINQ
    dialect Xero evaluates `where` with)."""
    return '"' + str(value).replace('"', '""') + '"'


@dataclass(frozen=True)
class XeroPage:
    """One answer of a list read: its records, the `pagination` block (paged collections), the server's
    `DateTimeUTC` (a clock-skew-free cursor for the next If-Modified-Since) and the page number."""

    records: list[dict]
    page: int
    pagination: Mapping[str, Any] | None = None
    server_time: datetime | None = None


@dataclass(frozen=True)
class ElementResult:
    """One element's outcome in a many-element write with summarizeErrors=false."""

    index: int
    record: dict
    status: str  # OK | WARNING | ERROR
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    id: str | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.status != "ERROR" and not self.errors


class XeroClient(AppClient):
    app = "xero"

    def __init__(self, base_url: str, tenant_id: str, auth: httpx.Auth, **kw: Any):
        tenant_id = str(tenant_id or "").strip()
        if not tenant_id:
            raise ValueError("a Xero client needs the organisation's xero-tenant-id")
        # Xero allows 60 calls/min and 5 in flight per tenant and app.
        kw.setdefault("limiter", RateLimiter(per_minute=60, max_concurrent=5))
        self.tenant_id = tenant_id
        self.root_url = base_url.rstrip("/")
        headers = {"xero-tenant-id": tenant_id, "Accept": "application/json", **kw.pop("headers", {})}
        super().__init__(f"{self.root_url}/{API_PATH}/", auth=auth, headers=headers, **kw)

    # ----- errors ------------------------------------------------------------------------------------------------

    def decode_error(self, response: httpx.Response) -> AppError:
        status = response.status_code
        body = _json_or_none(response)
        if status == 429:
            problem = response.headers.get("X-Rate-Limit-Problem")
            return self.make_error(response, f"rate limit exceeded ({problem or 'limit not named'})",
                                   code=problem or None, cls=RateLimited)
        if isinstance(body, dict) and ("ErrorNumber" in body or "Elements" in body or
                                       ("Type" in body and "Message" in body)):
            kind = str(body.get("Type") or "") or None
            messages = element_errors(body)
            cls = _ERROR_TYPES.get(kind or "")
            if cls is None and status < 400:
                cls = ValidationFailed
            message = str(body.get("Message") or kind or f"HTTP {status}")
            return self.make_error(response, message, code=kind, detail="; ".join(messages) or None, cls=cls)
        if isinstance(body, dict) and ("Title" in body or "Detail" in body):  # problem details (401/403)
            detail = str(body.get("Detail") or "") or None
            code = detail.split(":", 1)[0].strip() if detail else None
            message = str(body.get("Title") or f"HTTP {status}")
            return self.make_error(response, message, code=code if code and " " not in code else None,
                                   detail=detail)
        text = response.text.strip()
        if text.startswith("oauth_problem="):  # the older form-encoded 401 body
            fields = dict(httpx.QueryParams(text))
            return self.make_error(response, fields.get("oauth_problem_advice") or "unauthorised",
                                   code=fields.get("oauth_problem"))
        message = f"HTTP {status} {response.reason_phrase}".strip()
        return self.make_error(response, message, detail=(text[:200] or None) if status != 404 else None)

    def check_body(self, response: httpx.Response, body: Any) -> None:
        # A 2xx that is really a validation failure (without summarizeErrors=false Xero answers 400, but be safe).
        if isinstance(body, dict) and body.get("Type") == "ValidationException":
            raise self.decode_error(response)

    # ----- reads ---------------------------------------------------------------------------------------------------

    def get_page(
        self,
        collection: str,
        *,
        page: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        where: str | None = None,
        order: str | None = None,
        modified_since: datetime | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> XeroPage:
        """One list answer. `page` (1-based) only for paged collections; `where` is Xero's filter expression,
        `modified_since` becomes the If-Modified-Since header (rows whose UpdatedDateUTC is later)."""
        collection = _collection(collection)
        query: dict[str, Any] = dict(params or {})
        if page is not None:
            if collection not in PAGED:
                raise ValueError(f"{collection} is not paged: read it whole")
            if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
                raise ValueError(f"page is 1-based and pageSize is 1..{MAX_PAGE_SIZE}")
            query.update(page=page, pageSize=page_size)
        if where:
            query["where"] = where
        if order:
            query["order"] = order
        headers = {"If-Modified-Since": format_if_modified_since(modified_since)} if modified_since else None
        key = ENVELOPE_KEYS.get(collection, collection)

        def parse(response: httpx.Response) -> XeroPage:
            body = self.parse_json(response)
            records = body.get(key, [])
            if records is None:
                records = []
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise self.bad_response(response, f"expected {key} to be a list of objects")
            pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else None
            try:
                server_time = parse_dotnet_date(body.get("DateTimeUTC"))
            except ValueError:
                server_time = None
            return XeroPage(records, page or 1, pagination, server_time)

        return self.send_parsed("GET", collection, parse, params=query, headers=headers)

    def iter_pages(
        self,
        collection: str,
        *,
        where: str | None = None,
        order: str | None = None,
        modified_since: datetime | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[XeroPage]:
        """Every answer of a list, in order: pages 1..n of a paged collection (until a short page or the last
        `pageCount`), or the single answer of an unpaged one. The iteration ending normally means the read
        completed. Order paged reads by a field that updates do not move (the default, the id), so a row
        changed mid-read cannot shift another past the pages already read."""
        collection = _collection(collection)
        if collection not in PAGED:
            yield self.get_page(collection, where=where, order=order, modified_since=modified_since, params=params)
            return
        if order is None and collection in ID_FIELDS:
            order = f"{ID_FIELDS[collection]} ASC"
        page = 1
        while True:
            answer = self.get_page(collection, page=page, page_size=page_size, where=where, order=order,
                                   modified_since=modified_since, params=params)
            yield answer
            count = (answer.pagination or {}).get("pageCount")
            if len(answer.records) < page_size or (isinstance(count, int) and page >= count):
                return
            page += 1

    def changed_since(self, instant: datetime) -> datetime | None:
        """The cheap change signal the near-real-time sensor polls (pipelines/sensors.py): per paged collection
        extraction reads, page 1 of size 1 with If-Modified-Since `instant`, newest UpdatedDateUTC first. The
        newest UpdatedDateUTC later than `instant`, or None. (Unpaged lists, e.g. items, wait for the schedule.)"""
        newest: datetime | None = None
        for collection in CHANGE_SIGNAL_COLLECTIONS:
            answer = self.get_page(collection, page=1, page_size=1, modified_since=instant,
                                   order="UpdatedDateUTC DESC")
            for record in answer.records:
                try:
                    stamp = parse_dotnet_date(record.get("UpdatedDateUTC"))
                except ValueError:
                    stamp = None
                if stamp is not None and stamp > instant and (newest is None or stamp > newest):
                    newest = stamp
        return newest

    def iter_records(self, collection: str, **kw: Any) -> Iterator[dict]:
        for answer in self.iter_pages(collection, **kw):
            yield from answer.records

    def get(self, collection: str, element_id: str) -> dict:
        """One record by id (or by number where Xero allows, e.g. /Invoices/INV-0042)."""
        collection = _collection(collection)
        key = ENVELOPE_KEYS.get(collection, collection)

        def parse(response: httpx.Response) -> dict:
            records = self.parse_json(response).get(key)
            if not isinstance(records, list) or not records or not isinstance(records[0], dict):
                raise self.bad_response(response, f"expected one record in {key}")
            return records[0]

        return self.send_parsed("GET", f"{collection}/{_path_id(element_id)}", parse)

    def organisation(self) -> dict:
        return self.get_page("Organisation").records[0]

    def connections(self) -> list[dict]:
        """The organisations this token may reach (`GET /connections`, outside api.xro/2.0): their tenantId is
        the xero-tenant-id."""
        return self.request_json("GET", f"{self.root_url}/connections", expect=list)

    # ----- writes (each carries an Idempotency-Key: Xero replays its first answer to a repeat) -----------------------

    def create_many(self, collection: str, elements: Sequence[Mapping[str, Any]], *,
                    idempotency_key: str) -> list[ElementResult]:
        """PUT: creates every element (fails per element if e.g. the number or name exists)."""
        return self._write_many("PUT", collection, elements, idempotency_key)

    def upsert_many(self, collection: str, elements: Sequence[Mapping[str, Any]], *,
                    idempotency_key: str) -> list[ElementResult]:
        """POST: updates elements that carry their id (or match, e.g. a contact by name) and creates the rest."""
        return self._write_many("POST", collection, elements, idempotency_key)

    def update(self, collection: str, element_id: str, fields: Mapping[str, Any], *, idempotency_key: str) -> dict:
        """POST /<Collection>/<id> with the changed fields; returns the record as Xero now holds it, or raises
        the element's ValidationFailed."""
        collection = _collection(collection)
        return self._write_one("POST", collection, element_id, {collection: [dict(fields)]}, idempotency_key)

    def void(self, collection: str, element_id: str, *, idempotency_key: str) -> dict:
        """Voids an AUTHORISED invoice or credit note that has no payments (Xero refuses otherwise)."""
        collection = _collection(collection)
        if collection not in ("Invoices", "CreditNotes"):
            raise ValueError("only Invoices and CreditNotes are voided")
        body = {collection: [{ID_FIELDS[collection]: str(element_id), "Status": "VOIDED"}]}
        return self._write_one("POST", collection, element_id, body, idempotency_key)

    def delete(self, collection: str, element_id: str, *, idempotency_key: str) -> dict | None:
        """Deletes the Xero way: a DRAFT/SUBMITTED invoice or credit note, or a payment, becomes Status DELETED
        (returned); an item or account is removed with HTTP DELETE (returns None)."""
        collection = _collection(collection)
        if collection in _STATUS_DELETES:
            record = {"Status": "DELETED"}
            if collection != "Payments":
                record = {ID_FIELDS[collection]: str(element_id), **record}
            body = record if collection == "Payments" else {collection: [record]}
            return self._write_one("POST", collection, element_id, body, idempotency_key)
        if collection in _HTTP_DELETES:
            _check_idempotency_key(idempotency_key)
            self.request("DELETE", f"{collection}/{_path_id(element_id)}",
                         headers={"Idempotency-Key": idempotency_key})
            return None
        raise ValueError(f"Xero has no delete for {collection}")

    def error_of(self, result: ElementResult) -> ValidationFailed | None:
        """The element's failure as an error (None if it succeeded), to handle failures one by one."""
        if result.ok:
            return None
        return ValidationFailed(self.app, "; ".join(result.errors) or "element failed", code="ValidationException",
                                status=200, method="POST", url=self.base_url)

    # ----- internals ---------------------------------------------------------------------------------------------

    def _write_many(self, method: str, collection: str, elements: Sequence[Mapping[str, Any]],
                    idempotency_key: str) -> list[ElementResult]:
        collection = _collection(collection)
        _check_idempotency_key(idempotency_key)
        elements = [dict(e) for e in elements]
        limit = MAX_ELEMENTS_BY_COLLECTION.get(collection, MAX_ELEMENTS)
        if not elements:
            raise ValueError("a write needs at least one element")
        if len(elements) > limit:
            raise ValueError(f"at most {limit} {collection} per request, got {len(elements)}; split them "
                             "(each request with its own Idempotency-Key)")
        key = ENVELOPE_KEYS.get(collection, collection)

        def parse(response: httpx.Response) -> list[ElementResult]:
            records = self.parse_json(response).get(key)
            if not isinstance(records, list) or len(records) != len(elements):
                raise self.bad_response(response, f"expected {len(elements)} {key} results, one per element")
            return [_element_result(i, r, ID_FIELDS.get(collection)) for i, r in enumerate(records)]

        return self.send_parsed(method, collection, parse, params={"summarizeErrors": "false"},
                                json={collection: elements}, headers={"Idempotency-Key": idempotency_key})

    def _write_one(self, method: str, collection: str, element_id: str, body: Any, idempotency_key: str) -> dict:
        _check_idempotency_key(idempotency_key)
        key = ENVELOPE_KEYS.get(collection, collection)

        def parse(response: httpx.Response) -> dict:
            records = self.parse_json(response).get(key)
            if not isinstance(records, list) or not records or not isinstance(records[0], dict):
                raise self.bad_response(response, f"expected the written record in {key}")
            record = records[0]
            result = _element_result(0, record, ID_FIELDS.get(collection))
            if not result.ok:
                raise ValidationFailed(self.app, "; ".join(result.errors), code="ValidationException",
                                       status=response.status_code, method=method, url=response.request.url)
            return record

        return self.send_parsed(method, f"{collection}/{_path_id(element_id)}", parse, json=body,
                                headers={"Idempotency-Key": idempotency_key})


def element_errors(body: Mapping[str, Any]) -> list[str]:
    """Every ValidationErrors message of an error body's Elements (and of their line items), in order."""
    messages: list[str] = []
    for element in body.get("Elements") or []:
        if isinstance(element, dict):
            messages.extend(_messages(element.get("ValidationErrors")))
            for line in element.get("LineItems") or []:
                if isinstance(line, dict):
                    messages.extend(_messages(line.get("ValidationErrors")))
    return messages


def _messages(errors: Any) -> list[str]:
    return [str(e.get("Message")) for e in errors or [] if isinstance(e, dict) and e.get("Message")]


def _element_result(index: int, record: dict, id_field: str | None) -> ElementResult:
    errors = _messages(record.get("ValidationErrors"))
    for line in record.get("LineItems") or []:
        if isinstance(line, dict):
            errors.extend(_messages(line.get("ValidationErrors")))
    status = str(record.get("StatusAttributeString") or ("ERROR" if errors or record.get("HasErrors") else "OK"))
    if status == "ERROR" and not errors:
        errors = ["element failed without a message"]
    element_id = record.get(id_field) if id_field else None
    if element_id == "00000000-0000-0000-0000-000000000000":  # Xero's placeholder on a failed create
        element_id = None
    return ElementResult(index, record, status.upper(), tuple(errors), tuple(_messages(record.get("Warnings"))),
                         str(element_id) if element_id else None)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _collection(name: str) -> str:
    if not isinstance(name, str) or not _COLLECTION.match(name):
        raise ValueError(f"not a Xero collection: {name!r} (use the API's path, e.g. 'Invoices')")
    return name


def _path_id(value: str) -> str:
    value = str(value)
    if not value or "/" in value or "?" in value or "#" in value:
        raise ValueError(f"not a usable Xero id: {value!r}")
    return value


def _check_idempotency_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValueError(f"every Xero write needs an Idempotency-Key of 1..{MAX_IDEMPOTENCY_KEY} printable "
                         "characters, derived deterministically from what is written")


__all__ = [
    "ElementResult", "XeroClient", "XeroPage", "element_errors", "format_if_modified_since",
    "parse_dotnet_date", "quote_literal", "token_url_for",
]
