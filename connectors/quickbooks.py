"""QuickBooks Online Accounting API v3 client: OAuth 2 bearer, the SQL-ish query endpoint with STARTPOSITION
paging, change data capture, and writes that always carry a `requestid` so a re-sent write is replayed by
QuickBooks instead of applied twice.
"""

from __future__ import annotations

import contextlib
import math
import re
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import httpx

from connectors.auth import OAuth2RefreshAuth
from connectors.errors import (
    AppError,
    AuthenticationError,
    BadResponse,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from connectors.http import AppClient, RateLimiter, RetryPolicy

P = TypeVar("P")

PRODUCTION_BASE_URL = "https://quickbooks.api.intuit.com"
SANDBOX_BASE_URL = "https://sandbox-quickbooks.api.intuit.com"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"

MAX_PAGE_SIZE = 1000
MAX_BATCH_ITEMS = 30
CDC_OBJECT_CAP = 1000
# what the change probe asks CDC about: the entities extraction reads by CDC (assets/extract/quickbooks.py)
CHANGE_SIGNAL_ENTITIES = ("Customer", "Invoice", "CreditMemo", "Payment", "Item", "Account")
MAX_REQUEST_ID = 50
MAX_BATCH_REQUEST_ID = 36
MAX_BATCH_ITEM_ID = 10

# Intuit's limits per app and realm: 500 requests/min (every batch item counts), 10 in flight, 40 batch calls/min.
REQUESTS_PER_MINUTE = 500
MAX_CONCURRENT = 10
BATCH_CALLS_PER_MINUTE = 40
# Our window is a little longer than QuickBooks' minute: the server stamps a request (and a batch's items, only
# once it has read the body) a few ms to a second after we counted it, so a window exactly as long as the
# server's lets the next burst arrive just before the server forgets the last one (a 429).
WINDOW_SECONDS = 61.0
# Requests QuickBooks counts that our limiter does not see (the OAuth refresh goes through the auth flow, not the
# limiter): without room for them a full window gets a 429. 490 still fits 16 full batches (480 items) a minute.
HEADROOM = 10
# A 429 (Fault 3001) comes without Retry-After: wait out the minute, with jitter, as Intuit advises. Six
# attempts give a throttled request about five minutes before it is reported.
RETRY = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=66.0, throttle_delay=60.0)

_ENTITY_NAME = re.compile(r"^[A-Z][A-Za-z]*$")

# Fault codes that mean something more specific than their HTTP status (codes are strings, sometimes zero-padded).
_FAULT_CLASSES: dict[int, type[AppError]] = {
    5010: Conflict,  # stale SyncToken
    610: NotFound,  # object not found (answered as 400)
    3200: AuthenticationError,
    3100: PermissionDenied,
    3001: RateLimited,  # ThrottleExceeded
}


def token_url_for(base_url: str) -> str:
    """The OAuth token endpoint that goes with an API base URL: Intuit's own for Intuit hosts, and
    `<base>/oauth2/v1/tokens/bearer` for the sandbox emulator (which serves both on one server)."""
    host = httpx.URL(base_url).host
    if host == "intuit.com" or host.endswith(".intuit.com"):
        return INTUIT_TOKEN_URL
    return base_url.rstrip("/") + "/oauth2/v1/tokens/bearer"


def quote_literal(value: str) -> str:
    """A string literal for a query's WHERE clause: single-quoted, with backslashes and quotes escaped."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_datetime(value: datetime) -> str:
    """A timezone-aware datetime as QuickBooks expects it in queries and CDC (ISO-8601 with offset)."""
    if value.tzinfo is None:
        raise ValueError("datetimes sent to QuickBooks must be timezone-aware")
    return value.isoformat(timespec="seconds")


@dataclass(frozen=True)
class CdcResult:
    """What changed: entity name -> records (deletions are stubs with `status: "Deleted"`), and the server `time`
    of the answer (the next `changed_since`, less a small overlap)."""

    records: dict[str, list[dict]]
    time: str


class CdcLimitExceeded(AppError):
    """A CDC answer reached QuickBooks' 1,000-object cap, so it may be incomplete: ask again for a shorter window."""


class QuickBooksClient(AppClient):
    app = "quickbooks"
    # QuickBooks does not promise that a throttled write did nothing; only a write carrying its requestid is
    # re-sent after a 429 (a repeat of a requestid is replayed, never applied twice). See `_write`, `batch`.
    throttled_writes_not_applied = False

    def __init__(
        self,
        base_url: str,
        realm_id: str,
        auth: OAuth2RefreshAuth,
        *,
        minor_version: int = 75,
        **kw: Any,
    ):
        if not str(realm_id).isdigit():
            raise ValueError("realm_id must be the company's digit-string id")
        kw.setdefault("limiter", RateLimiter(per_minute=REQUESTS_PER_MINUTE - HEADROOM, max_concurrent=MAX_CONCURRENT,
                                             period=WINDOW_SECONDS))
        kw.setdefault("retry", RETRY)
        # A limit of its own for the batch endpoint (40 calls/min), on top of the per-item count.
        self.batch_limiter = RateLimiter(per_minute=BATCH_CALLS_PER_MINUTE, period=WINDOW_SECONDS)
        self.realm_id = str(realm_id)
        self.minor_version = minor_version
        super().__init__(
            f"{base_url.rstrip('/')}/v3/company/{self.realm_id}/",
            auth=auth,
            params={"minorversion": minor_version},
            **kw,
        )

    # ----- errors ------------------------------------------------------------------------------------------------

    def decode_error(self, response: httpx.Response) -> AppError:
        fault = _parse_fault(response)
        if fault is None:
            return super().decode_error(response)
        cls, message, code, detail = _describe_fault(*fault)
        if cls is None and response.status_code < 400:  # a Fault inside a 2xx answer
            cls = ServerError if fault[0] == "SystemFault" else ValidationFailed
        return self.make_error(response, message or f"HTTP {response.status_code}", code=code, detail=detail,
                               cls=cls)

    def check_body(self, response: httpx.Response, body: Any) -> None:
        # Some failures come back as 200 with a Fault body.
        if isinstance(body, dict) and ("Fault" in body or "fault" in body):
            raise self.decode_error(response)

    def fault_of(self, item: Mapping[str, Any]) -> AppError | None:
        """The error a batch item answered with, decoded like a whole response's Fault; None if it succeeded."""
        fault = _fault_parts(item)
        if fault is None:
            return None
        cls, message, code, detail = _describe_fault(*fault)
        cls = cls or (ServerError if fault[0] == "SystemFault" else ValidationFailed)
        return cls(self.app, message or "batch item failed", code=code, detail=detail, method="POST",
                   url=self._http.base_url.join("batch"))

    # ----- queries -----------------------------------------------------------------------------------------------

    def query(self, statement: str) -> dict:
        """Runs one query statement; returns its QueryResponse (`{}` when nothing matched)."""
        return self._query(statement)[0]

    def count(self, entity: str, where: str | None = None) -> int:
        return self._query(_statement(entity, where=where, count=True), count=True)[0]

    def iter_query(
        self,
        entity: str,
        *,
        where: str | None = None,
        order_by: str | None = "Id",
        page_size: int = MAX_PAGE_SIZE,
        concurrency: int = 1,
    ) -> Iterator[list[dict]]:
        """Every row of `select * from <entity> [where …]`, one page (list of records) at a time, in order.

        Pages by STARTPOSITION until a short page. With `concurrency` > 1 it counts first, fetches the counted
        pages on a thread pool (never more than `concurrency` ahead of the consumer) and still yields in order;
        rows added meanwhile (new, higher Ids) are picked up after the counted pages.

        STARTPOSITION paging is not a snapshot: a row deleted mid-sweep shifts later pages, so another row can be
        missed. Never infer a delete from a row's absence in a sweep (deletes come from CDC). With concurrency, a
        counted page that comes back short (the clearest sign of such a shift) raises BadResponse.
        """

        def rows(statement: str) -> tuple[list[dict], int]:
            _, page = self._query(statement, entity=entity)
            return page, len(page)

        return self._pages(entity, where, order_by, page_size, concurrency, rows)

    def iter_query_raw(
        self,
        entity: str,
        *,
        where: str | None = None,
        order_by: str | None = "Id",
        page_size: int = MAX_PAGE_SIZE,
        concurrency: int = 1,
    ) -> Iterator[bytes]:
        """Like `iter_query`, but yields each page's raw JSON response body (`{"QueryResponse": {"<entity>": [...],
        …}, "time": …}`). Each body has been checked to parse, so a page damaged in transit is fetched again."""

        def raw(statement: str) -> tuple[bytes, int]:
            response, page = self._query(statement, entity=entity, keep_response=True)
            return response, len(page)

        return self._pages(entity, where, order_by, page_size, concurrency, raw)

    def iter_query_decoded(
        self,
        entity: str,
        decode: Callable[[bytes], tuple[P, int]],
        *,
        where: str | None = None,
        order_by: str | None = "Id",
        page_size: int = MAX_PAGE_SIZE,
        concurrency: int = 1,
    ) -> Iterator[P]:
        """Like `iter_query_raw`, but each body goes through `decode(body) -> (page, rows on the page)` on the
        thread that fetched it, inside the retry loop: the page is parsed once (e.g. straight into Arrow, off the
        GIL), and a body `decode` cannot read (it raises ValueError) is fetched again, then reported."""

        def decoded(statement: str) -> tuple[P, int]:
            def parse(response: httpx.Response) -> tuple[P, int]:
                try:
                    return decode(response.content)
                except ValueError as exc:
                    raise self.bad_response(response, f"a {entity} query page that could not be read ({exc})",
                                            retriable=True) from None

            return self.send_parsed("POST", "query", parse, content=statement.encode(),
                                    headers={"Content-Type": "application/text"}, idempotent=True)

        return self._pages(entity, where, order_by, page_size, concurrency, decoded)

    def cdc(self, entities: Iterable[str], changed_since: datetime) -> CdcResult:
        """Records of `entities` changed since `changed_since` (≤ 30 days back). Raises CdcLimitExceeded when the
        answer reaches the 1,000-object cap, since it may then be missing changes."""
        names = [_entity(e) for e in entities]
        if not names:
            raise ValueError("cdc needs at least one entity")
        params = {"entities": ",".join(names), "changedSince": format_datetime(changed_since)}

        def parse(response: httpx.Response) -> tuple[dict[str, list[dict]], str, httpx.Response]:
            body = self.parse_json(response)
            records: dict[str, list[dict]] = {name: [] for name in names}
            try:
                for block in body["CDCResponse"]:
                    for part in block.get("QueryResponse") or []:
                        for key, value in part.items():
                            if isinstance(value, list):
                                records.setdefault(key, []).extend(value)
            except (KeyError, TypeError, AttributeError):
                raise self.bad_response(response, "expected CDCResponse[].QueryResponse[] lists") from None
            return records, str(body.get("time", "")), response

        records, server_time, response = self.send_parsed("GET", "cdc", parse, params=params)
        full = [name for name, rows in records.items() if len(rows) >= CDC_OBJECT_CAP]
        total = sum(len(rows) for rows in records.values())
        if full or total >= CDC_OBJECT_CAP:
            raise CdcLimitExceeded(
                self.app,
                f"CDC since {params['changedSince']} returned {total} objects "
                f"({', '.join(f'{n}: {len(records[n])}' for n in records)}), reaching the {CDC_OBJECT_CAP}-object "
                "cap; ask again with a shorter window",
                status=response.status_code, method="GET", url=response.request.url,
            )
        return CdcResult(records=records, time=server_time)

    def changed_since(self, instant: datetime) -> datetime | None:
        """The cheap change signal the near-real-time sensor polls (pipelines/sensors.py): one CDC call over the
        entities extraction reads by CDC (deletes included: their stubs carry a LastUpdatedTime). QuickBooks stamps
        whole seconds, so the answer is the start of the second AFTER the newest change at or after `instant`'s
        second, or None: asked again from it, that change is not news. (A change made later within that same
        second is not seen here: it waits for the schedule. One made earlier in `instant`'s own second counts as
        news: a spare run, never a lost change.)"""
        second = instant.replace(microsecond=0)
        try:
            result = self.cdc(CHANGE_SIGNAL_ENTITIES, second)
        except CdcLimitExceeded:
            return datetime.now(instant.tzinfo).replace(microsecond=0)  # over a thousand changes: certainly changed
        stamps = [_meta_instant(r) for rows in result.records.values() for r in rows]
        newest = max((s for s in stamps if s is not None), default=None)
        return newest + timedelta(seconds=1) if newest is not None and newest >= second else None

    # ----- single reads ---------------------------------------------------------------------------------------------

    def read(self, entity: str, entity_id: str) -> dict:
        entity = _entity(entity)
        return self._entity_request("GET", entity, f"{entity.lower()}/{_id(entity_id)}")

    def company_info(self) -> dict:
        return self._entity_request("GET", "CompanyInfo", f"companyinfo/{self.realm_id}")

    def preferences(self) -> dict:
        return self._entity_request("GET", "Preferences", "preferences")

    def exchange_rate(self, currency: str, as_of: date) -> dict:
        params = {"sourcecurrencycode": currency.upper(), "asofdate": as_of.isoformat()}
        return self._entity_request("GET", "ExchangeRate", "exchangerate", params=params)

    # ----- writes (each carries a requestid: QuickBooks replays the first answer to a repeat) -------------------------

    def create(self, entity: str, body: Mapping[str, Any], *, request_id: str) -> dict:
        if "Id" in body:
            raise ValueError(f"a {entity} to create must not carry an Id (use update)")
        return self._write(entity, body, request_id=request_id)

    def update(self, entity: str, body: Mapping[str, Any], *, request_id: str, sparse: bool = True) -> dict:
        """Updates a record. Sparse (the default) changes only the fields sent; a full update clears omitted
        writable fields. `body` needs the record's Id and current SyncToken (stale → Conflict, code 5010)."""
        _require_version(entity, body)
        return self._write(entity, {**body, "sparse": sparse}, request_id=request_id)

    def void_invoice(self, invoice_id: str, sync_token: str, *, request_id: str) -> dict:
        body = {"Id": _id(invoice_id), "SyncToken": str(sync_token)}
        return self._write("Invoice", body, request_id=request_id, operation="void")

    def delete(self, entity: str, entity_id: str, sync_token: str, *, request_id: str) -> dict:
        """Deletes a transaction (Invoice, Payment, CreditMemo…); returns the `status: "Deleted"` stub."""
        body = {"Id": _id(entity_id), "SyncToken": str(sync_token)}
        return self._write(entity, body, request_id=request_id, operation="delete")

    def batch(self, items: list[dict], *, request_id: str) -> list[dict]:
        """Sends up to 30 batch items (`{"bId", "operation", "<Entity>": {...}}` or `{"bId", "Query"}`) and returns
        the BatchItemResponse list. Items fail one by one: check each with `fault_of`."""
        if not items:
            raise ValueError("a batch needs at least one item")
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}; split it")
        _check_request_id(request_id, MAX_BATCH_REQUEST_ID)
        ids = [item.get("bId") for item in items]
        if any(not isinstance(b, str) or not b or len(b) > MAX_BATCH_ITEM_ID for b in ids):
            raise ValueError(f"every batch item needs a bId of 1..{MAX_BATCH_ITEM_ID} characters")
        if len(set(ids)) != len(ids):
            raise ValueError("batch item bIds must be unique")

        def answers(response: httpx.Response) -> list[dict]:
            listed = self.parse_json(response).get("BatchItemResponse")
            if not isinstance(listed, list):
                raise self.bad_response(response, "expected a BatchItemResponse list")
            return listed

        # Every item counts against the per-minute limit, on every attempt (cost); with the requestid a resend is a
        # replay of the first answer, never a second execution (idempotent, so a 429 or 5xx is retried).
        return self.send_parsed("POST", "batch", answers, params={"requestid": request_id},
                                json={"BatchItemRequest": items}, idempotent=True, cost=len(items),
                                limiters=(self.batch_limiter,))

    # ----- internals ---------------------------------------------------------------------------------------------

    def _write(self, entity: str, body: Mapping[str, Any], *, request_id: str, operation: str | None = None) -> dict:
        entity = _entity(entity)
        _check_request_id(request_id, MAX_REQUEST_ID)
        params = {"requestid": request_id, **({"operation": operation} if operation else {})}
        # idempotent: the requestid makes a re-send after a timeout, reset or 429 a replay, not a second write.
        return self._entity_request("POST", entity, entity.lower(), params=params, json=dict(body),
                                    idempotent=bool(params["requestid"]))

    def _entity_request(self, method: str, entity: str, path: str, **kw: Any) -> dict:
        """A request answering `{"<entity>": {...}, "time": …}`; returns the inner record."""

        def unwrap(response: httpx.Response) -> dict:
            record = self.parse_json(response).get(entity)
            if not isinstance(record, dict):
                raise self.bad_response(response, f"expected a {entity!r} object in the answer")
            return record

        return self.send_parsed(method, path, unwrap, **kw)

    def _query(
        self, statement: str, *, entity: str | None = None, keep_response: bool = False, count: bool = False
    ) -> tuple[Any, list]:
        """(QueryResponse, raw body or totalCount; rows of `entity`) for one statement, parsed inside the retry
        loop so that a damaged page is fetched again."""

        def parse(response: httpx.Response) -> tuple[Any, list]:
            body = self.parse_json(response)
            answer = body.get("QueryResponse")
            if not isinstance(answer, dict):
                raise self.bad_response(response, "expected a QueryResponse object")
            if count:
                total = answer.get("totalCount")
                if not isinstance(total, int):
                    raise self.bad_response(response, "expected an integer QueryResponse.totalCount")
                return total, []
            rows = answer.get(entity, []) if entity else []
            if not isinstance(rows, list):
                raise self.bad_response(response, f"expected QueryResponse.{entity} to be a list")
            return (response.content if keep_response else answer), rows

        # POST with a text body: long WHERE … IN (…) statements would not fit in a URL.
        return self.send_parsed("POST", "query", parse, content=statement.encode(),
                                headers={"Content-Type": "application/text"}, idempotent=True)

    def _pages(
        self,
        entity: str,
        where: str | None,
        order_by: str | None,
        page_size: int,
        concurrency: int,
        fetch: Callable[[str], tuple[P, int]],
    ) -> Iterator[P]:
        entity = _entity(entity)
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")

        def page_at(start: int) -> tuple[P, int]:
            return fetch(_statement(entity, where=where, order_by=order_by, start=start, size=page_size))

        start = 1
        if concurrency > 1:
            expected_pages = max(1, math.ceil(self.count(entity, where) / page_size))
            with contextlib.closing(_in_order(page_at, expected_pages, page_size, concurrency)) as pages:
                for index, (payload, n) in enumerate(pages):
                    if n < page_size and index < expected_pages - 1:
                        # Rows vanished between the count and this page, so later pages shifted: rows were skipped.
                        raise BadResponse(
                            self.app,
                            f"{entity} changed during a concurrent sweep (page {index + 1} of {expected_pages} "
                            f"had {n} rows); the sweep is incomplete: run it again",
                        )
                    if n:
                        yield payload
                    if n < page_size:
                        return
            start = expected_pages * page_size + 1  # rows were added since the count: carry on one by one
        while True:
            payload, n = page_at(start)
            if n:
                yield payload
            if n < page_size:
                return
            start += page_size


def _in_order(page_at: Callable[[int], P], pages: int, page_size: int, concurrency: int) -> Iterator[P]:
    """page_at(start) for the first `pages` pages, on a pool, yielded in order, at most `concurrency` ahead."""
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="quickbooks-page") as pool:
        pending: deque[Future] = deque()
        submitted = 0
        try:
            while submitted < pages or pending:
                while submitted < pages and len(pending) < concurrency:
                    pending.append(pool.submit(page_at, 1 + submitted * page_size))
                    submitted += 1
                yield pending.popleft().result()
        finally:
            for future in pending:  # the consumer stopped early or a page failed: do not fetch the rest
                future.cancel()


def _statement(
    entity: str,
    *,
    where: str | None = None,
    order_by: str | None = None,
    start: int | None = None,
    size: int | None = None,
    count: bool = False,
) -> str:
    parts = [f"SELECT {'COUNT(*)' if count else '*'} FROM {_entity(entity)}"]
    if where:
        parts.append(f"WHERE {where}")
    if order_by and not count:
        parts.append(f"ORDERBY {order_by}")
    if start is not None:
        parts.append(f"STARTPOSITION {start} MAXRESULTS {size}")
    return " ".join(parts)


def _meta_instant(record: Mapping[str, Any]) -> datetime | None:
    stamp = (record.get("MetaData") or {}).get("LastUpdatedTime")
    try:
        return datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        return None


def _entity(name: str) -> str:
    if not isinstance(name, str) or not _ENTITY_NAME.match(name):
        raise ValueError(f"not a QuickBooks entity name: {name!r} (use the API's spelling, e.g. 'Invoice')")
    return name


def _id(value: str) -> str:
    value = str(value)
    if not value.isdigit():
        raise ValueError(f"QuickBooks ids are digit strings, got {value!r}")
    return value


def _check_request_id(request_id: str, limit: int) -> None:
    if not isinstance(request_id, str) or not request_id or len(request_id) > limit:
        raise ValueError(f"every QuickBooks write needs a requestid of 1..{limit} characters")


def _require_version(entity: str, body: Mapping[str, Any]) -> None:
    if not body.get("Id") or body.get("SyncToken") is None:
        raise ValueError(f"updating a {entity} needs its Id and current SyncToken")


def _lower_keys(error: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in error.items()}


def _parse_fault(response: httpx.Response) -> tuple[str | None, list[dict[str, str]]] | None:
    """(fault type, [{code, message, detail, element}]) from a JSON Fault (either key case) or the XML
    IntuitResponse some throttles answer with; None when the body is neither."""
    content = response.content.strip()
    if content.startswith(b"<"):
        return _parse_xml_fault(content)
    try:
        body = response.json()
    except ValueError:
        return None
    return _fault_parts(body) if isinstance(body, dict) else None


def _fault_parts(body: Mapping[str, Any]) -> tuple[str | None, list[dict[str, str]]] | None:
    fault = body.get("Fault") or body.get("fault")
    if not isinstance(fault, dict):
        return None
    fault = _lower_keys(fault)
    errors = []
    for raw in fault.get("error") or []:
        if isinstance(raw, dict):
            e = _lower_keys(raw)
            errors.append({k: str(e[k]) for k in ("code", "message", "detail", "element")
                           if e.get(k) not in (None, "")})
    return (str(fault["type"]) if fault.get("type") else None), errors


def _describe_fault(
    fault_type: str | None, errors: list[dict[str, str]]
) -> tuple[type[AppError] | None, str | None, str | None, str | None]:
    """(error class if the code says more than the status, message, code, detail) of a decoded Fault."""
    first = errors[0] if errors else {}
    code = first.get("code")
    details = [e["detail"] for e in errors if e.get("detail")]
    details += [f"element {e['element']}" for e in errors if e.get("element")]
    details += [e["message"] for e in errors[1:] if e.get("message")]
    cls = _FAULT_CLASSES.get(int(code)) if code and code.isdigit() else None
    return cls, first.get("message") or fault_type, code, "; ".join(details) or None


def _parse_xml_fault(content: bytes) -> tuple[str | None, list[dict[str, str]]] | None:
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    fault = next((el for el in root.iter() if local(el.tag) == "Fault"), None)
    if fault is None:
        return None
    errors = []
    for el in fault:
        if local(el.tag) != "Error":
            continue
        error = {"code": el.get("code", "")}
        for child in el:
            name = local(child.tag).lower()
            if name in ("message", "detail", "element") and child.text:
                error[name] = child.text.strip()
        errors.append({k: v for k, v in error.items() if v})
    return fault.get("type"), errors
