"""Salesforce REST API client (vendor notes: shared/vendors/salesforce.md): OAuth 2 refresh-token grant whose
answer names the org's `instance_url` (every data call goes there, §1), SOQL `query`/`queryAll` following
relative `nextRecordsUrl`s (§3), sObject CRUD, upsert by external id (the idempotent write, §4), and sObject
Collections in chunks of 200 with per-record results (§4).

Errors are JSON arrays [{"message","errorCode"}] (§5), decoded into typed AppErrors:
- 401 INVALID_SESSION_ID: `OAuth2RefreshAuth` refreshes and re-sends once; a second 401 is AuthenticationError.
- 403 REQUEST_LIMIT_EXCEEDED (§6; Salesforce sends no 429 and no Retry-After): `RequestLimitExceeded`, a
  RateLimited that is NOT retried when the daily allocation is spent (waiting seconds cannot cure it); the
  concurrency variant (ConcurrentPerOrgLongTxn) is retried after a few seconds.
- UNABLE_TO_LOCK_ROW and 503 are retried with jitter; NOT_FOUND / ENTITY_IS_DELETED are NotFound; a 300 on an
  upsert is `MultipleMatches`.

The refresh-token grant sends the client id/secret as HTTP Basic (OAuth2RefreshAuth's way); refresh tokens are
not rotated by Salesforce by default, and a rotated one is persisted anyway. The token answer has no
expires_in: a session is used until it is refused (401), then refreshed.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from connectors.auth import OAuth2RefreshAuth
from connectors.errors import (
    AppError,
    AuthenticationError,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from connectors.http import AppClient, RateLimiter

LOGIN_URL = "https://login.salesforce.com"
TEST_LOGIN_URL = "https://test.salesforce.com"
API_VERSION = "v62.0"
COLLECTION_MAX = 200
CHANGE_SIGNAL_OBJECTS = ("Account", "Contact", "Opportunity")  # what extraction reads
DEFAULT_BATCH_SIZE = 2000
CONCURRENCY_RETRY_AFTER = 5.0  # seconds; Salesforce gives no hint, concurrency frees up quickly

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def token_url_for(base_url: str) -> str:
    """The token endpoint of a login host (login.salesforce.com, test.salesforce.com, My Domain, or the sandbox
    emulator, which serves login and API on one server)."""
    return base_url.rstrip("/") + "/services/oauth2/token"


def soql_literal(value: Any) -> str:
    """A SOQL literal: quoted, escaped strings; unquoted numbers, booleans, null and datetimes (UTC, Z)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{text}'"


def format_datetime(value: datetime) -> str:
    """A timezone-aware datetime as an unquoted SOQL datetime literal (§3)."""
    if value.tzinfo is None:
        raise ValueError("datetimes sent to Salesforce must be timezone-aware")
    moment = value.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_datetime(value: str) -> datetime:
    """A Salesforce wire datetime (`2025-03-05T10:39:50.000+0000`) as an aware datetime."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text)


# ----- errors and results -------------------------------------------------------------------------------------------

class RequestLimitExceeded(RateLimited):
    """403 REQUEST_LIMIT_EXCEEDED: the org's daily API allocation is spent (not retriable within a run) or too many
    long-running requests are in flight (retriable after a few seconds)."""


class MultipleMatches(Conflict):
    """300: an upsert's external id matches several records; fix the data (the field should be Unique)."""


class RowLocked(AppError):
    """UNABLE_TO_LOCK_ROW: another transaction holds the record; retry with jitter."""

    retriable_by_default = True


_CODE_CLASSES: dict[str, type[AppError]] = {
    "INVALID_SESSION_ID": AuthenticationError,
    "NOT_FOUND": NotFound,
    "ENTITY_IS_DELETED": NotFound,
    "INSUFFICIENT_ACCESS": PermissionDenied,
    "INSUFFICIENT_ACCESS_OR_READONLY": PermissionDenied,
    "UNABLE_TO_LOCK_ROW": RowLocked,
    "SERVER_UNAVAILABLE": ServerError,
}


@dataclass(frozen=True)
class SaveError:
    code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class SaveResult:
    """One record's outcome in a collection call (or a single upsert), in request order."""

    id: str | None
    success: bool
    errors: tuple[SaveError, ...] = ()
    created: bool | None = None  # upserts only

    @property
    def rolled_back(self) -> bool:
        return any(e.code == "ALL_OR_NONE_OPERATION_ROLLED_BACK" for e in self.errors)


@dataclass
class QueryPage:
    """One page of a query: the raw body (for fast columnar parsing), its records, and where it stands."""

    body: bytes
    records: list[dict]
    total_size: int
    done: bool
    next_records_url: str | None = None


@dataclass
class ApiUsage:
    used: int | None = None
    limit: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


# ----- the client ---------------------------------------------------------------------------------------------------

class SalesforceClient(AppClient):
    app = "salesforce"

    def __init__(self, login_url: str, auth: OAuth2RefreshAuth, *, api_version: str = API_VERSION, **kw: Any):
        if not re.match(r"^v\d{2}\.\d$", api_version):
            raise ValueError("api_version looks like 'v62.0'")
        # Salesforce has no per-minute limit; long requests are capped per org (25 in production, 5 in
        # Developer orgs), so stay well inside.
        kw.setdefault("limiter", RateLimiter(max_concurrent=5))
        self.auth = auth
        self.api_version = api_version
        self.usage = ApiUsage()
        super().__init__(login_url.rstrip("/"), auth=auth, **kw)
        self._http.event_hooks["response"].append(self._note_usage)

    # ----- where the org lives ----------------------------------------------------------------------------------

    @property
    def instance_url(self) -> str:
        """The org's API host from the token answer; refreshes first if no session was ever established."""
        tokens = self.auth._tokens or self.auth.store.get(self.auth.key)
        if not tokens or not tokens.get("instance_url"):
            tokens = self._establish_session()
        url = tokens.get("instance_url")
        if not url:
            raise AuthenticationError(self.app, "the token endpoint answered without an instance_url")
        return str(url).rstrip("/")

    def _establish_session(self) -> dict:
        """Runs the auth's refresh flow outside a data request, so the first call already knows its host; a
        retriable failure of the token endpoint (5xx, a reset) is retried like any request."""
        retrying = self.retry.retrying(lambda exc: isinstance(exc, AppError) and exc.retriable, sleep=self._sleep)
        return retrying(self._refresh_once)

    def _refresh_once(self) -> dict:
        flow = self.auth._usable_access_token(rejected=None)
        try:
            request = next(flow)
            while True:
                try:
                    response = self._http.send(request, auth=None)
                except httpx.RequestError as exc:
                    raise self._transport_failure(request, exc) from exc
                response.read()
                request = flow.send(response)
        except StopIteration:
            pass
        return self.auth._tokens or {}

    def api_url(self, path: str) -> str:
        """An absolute URL: `{instance_url}/services/data/vXX.X/<path>`, or a server-relative path as given
        (nextRecordsUrl and attributes.url are relative to the instance)."""
        if path.startswith("/services/"):
            return f"{self.instance_url}{path}"
        return f"{self.instance_url}/services/data/{self.api_version}/{path.lstrip('/')}"

    def _note_usage(self, response: httpx.Response) -> None:
        header = response.headers.get("Sforce-Limit-Info")
        if not header:
            return
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name == "api-usage":
                used, _, limit = value.partition("/")
                if used.isdigit() and limit.isdigit():
                    self.usage.used, self.usage.limit = int(used), int(limit)
            elif name:
                self.usage.extra[name] = value

    # ----- errors -----------------------------------------------------------------------------------------------

    def decode_error(self, response: httpx.Response) -> AppError:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else None
        if first is None and isinstance(body, dict) and "errorCode" in body:
            first = body
        if first is None:
            return super().decode_error(response)
        code = str(first.get("errorCode") or "") or None
        message = str(first.get("message") or f"HTTP {response.status_code}")
        fields = first.get("fields") or []
        detail = f"fields: {', '.join(map(str, fields))}" if fields else None
        if code == "REQUEST_LIMIT_EXCEEDED":
            concurrent = "concurrent" in message.lower()
            return RequestLimitExceeded(
                self.app, message, status=response.status_code, code=code, detail=detail,
                method=response.request.method, url=response.request.url, retriable=concurrent,
                retry_after=CONCURRENCY_RETRY_AFTER if concurrent else None)
        cls = _CODE_CLASSES.get(code or "")
        if cls is None and response.status_code in (400, 422):
            cls = ValidationFailed
        return self.make_error(response, message, code=code, detail=detail, cls=cls)

    # ----- queries ----------------------------------------------------------------------------------------------

    def query_pages(self, soql: str, *, include_deleted: bool = False,
                    batch_size: int | None = None) -> Iterator[QueryPage]:
        """Every page of a SOQL query (queryAll with include_deleted), following nextRecordsUrl until done."""
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else None
        page = self._query_page(self.api_url("queryAll" if include_deleted else "query"), {"q": soql}, headers)
        yield page
        while not page.done:
            if not page.next_records_url:
                raise self._bad_page("a page with done=false has no nextRecordsUrl")
            page = self._query_page(self.api_url(page.next_records_url), None, headers)
            yield page

    def query(self, soql: str, *, include_deleted: bool = False, batch_size: int | None = None) -> Iterator[dict]:
        """The records of a SOQL query, page after page."""
        for page in self.query_pages(soql, include_deleted=include_deleted, batch_size=batch_size):
            yield from page.records

    def query_all(self, soql: str, **kw: Any) -> Iterator[dict]:
        """queryAll: also soft-deleted (recycle bin) and archived rows, with IsDeleted true."""
        return self.query(soql, include_deleted=True, **kw)

    def count(self, sobject: str, where: str | None = None) -> int:
        soql = f"SELECT COUNT() FROM {_ident(sobject)}" + (f" WHERE {where}" if where else "")
        return next(self.query_pages(soql)).total_size

    def changed_since(self, instant: datetime) -> datetime | None:
        """The cheap change signal the near-real-time sensor polls (pipelines/sensors.py): per object extraction
        reads, `queryAll SELECT SystemModstamp … WHERE SystemModstamp > instant ORDER BY SystemModstamp DESC
        LIMIT 1` (queryAll, so a delete to the recycle bin counts). The newest SystemModstamp, or None."""
        newest: datetime | None = None
        for sobject in CHANGE_SIGNAL_OBJECTS:
            soql = (f"SELECT SystemModstamp FROM {sobject} WHERE SystemModstamp > {format_datetime(instant)} "
                    "ORDER BY SystemModstamp DESC LIMIT 1")
            for record in self.query_all(soql):
                stamp = parse_datetime(record["SystemModstamp"]) if record.get("SystemModstamp") else None
                if stamp is not None and stamp > instant and (newest is None or stamp > newest):
                    newest = stamp
        return newest

    def _query_page(self, url: str, params: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> QueryPage:
        def parse(response: httpx.Response) -> QueryPage:
            body = self.parse_json(response)
            records = body.get("records")
            if not isinstance(records, list) or not isinstance(body.get("done"), bool):
                raise self.bad_response(response, "a query answer without records/done")
            return QueryPage(response.content, records, int(body.get("totalSize") or 0), body["done"],
                             body.get("nextRecordsUrl"))

        return self.send_parsed("GET", url, parse, params=params, headers=headers)

    def _bad_page(self, problem: str) -> AppError:
        return AppError(self.app, problem)

    # ----- single records ---------------------------------------------------------------------------------------

    def get(self, sobject: str, record_id: str, fields: Sequence[str] | None = None) -> dict:
        params = {"fields": ",".join(fields)} if fields else None
        return self.get_json(self.api_url(f"sobjects/{_ident(sobject)}/{record_id}"), params=params)

    def create(self, sobject: str, values: Mapping[str, Any]) -> str:
        """POST a record; returns its id. Not idempotent: prefer `upsert` on an external id."""
        body = self.request_json("POST", self.api_url(f"sobjects/{_ident(sobject)}"), json=dict(values))
        return str(body["id"])

    def update(self, sobject: str, record_id: str, values: Mapping[str, Any]) -> None:
        # re-sending the same field values is harmless, so an unclear outcome may be retried
        self.request("PATCH", self.api_url(f"sobjects/{_ident(sobject)}/{record_id}"), json=dict(values),
                     idempotent=True)

    def delete(self, sobject: str, record_id: str) -> bool:
        """Moves a record to the recycle bin; False if it was already deleted."""
        try:
            self.request("DELETE", self.api_url(f"sobjects/{_ident(sobject)}/{record_id}"))
        except NotFound as exc:
            if exc.code == "ENTITY_IS_DELETED":
                return False
            raise
        return True

    def upsert(self, sobject: str, external_field: str, external_id: str, values: Mapping[str, Any]) -> SaveResult:
        """Creates or updates the record whose external id field has this value (201 created, 200/204 updated);
        idempotent, so safe to re-send. Raises MultipleMatches (300) if several records share the value."""
        value = urllib.parse.quote(str(external_id), safe="")
        url = self.api_url(f"sobjects/{_ident(sobject)}/{_ident(external_field)}/{value}")
        body = {k: v for k, v in values.items() if k.lower() != external_field.lower()}
        response = self.request("PATCH", url, json=body, idempotent=True)
        if response.status_code == 300:
            raise MultipleMatches(self.app, f"{external_field}={external_id!r} matches several {sobject} records",
                                  status=300, method="PATCH", url=response.request.url)
        if response.status_code == 204:  # older API versions answer an update with no body
            return SaveResult(None, True, (), False)
        data = self.parse_json(response)
        return SaveResult(data.get("id"), bool(data.get("success", True)), (),
                          response.status_code == 201 if data.get("created") is None else bool(data["created"]))

    def describe(self, sobject: str) -> dict:
        return self.get_json(self.api_url(f"sobjects/{_ident(sobject)}/describe"))

    def limits(self) -> dict:
        return self.get_json(self.api_url("limits"))

    # ----- sObject Collections (≤200 per call) ------------------------------------------------------------------

    def create_many(self, records: Iterable[Mapping[str, Any]], *, sobject: str | None = None,
                    all_or_none: bool = False) -> list[SaveResult]:
        """Creates records 200 per call. Each needs attributes.type unless `sobject` is given. Not idempotent."""
        return self._collections("POST", "composite/sobjects", _typed(records, sobject), all_or_none,
                                 idempotent=False)

    def update_many(self, records: Iterable[Mapping[str, Any]], *, sobject: str | None = None,
                    all_or_none: bool = False) -> list[SaveResult]:
        """Updates records (each with `id`) 200 per call."""
        return self._collections("PATCH", "composite/sobjects", _typed(records, sobject), all_or_none,
                                 idempotent=True)

    def upsert_many(self, sobject: str, external_field: str, records: Iterable[Mapping[str, Any]], *,
                    all_or_none: bool = False) -> list[SaveResult]:
        """Upserts records of one type on an external id field, 200 per call; idempotent."""
        path = f"composite/sobjects/{_ident(sobject)}/{_ident(external_field)}"
        return self._collections("PATCH", path, _typed(records, sobject), all_or_none, idempotent=True)

    def delete_many(self, ids: Sequence[str], *, all_or_none: bool = False) -> list[SaveResult]:
        results: list[SaveResult] = []
        for start in range(0, len(ids), COLLECTION_MAX):
            chunk = ids[start:start + COLLECTION_MAX]
            body = self.request_json("DELETE", self.api_url("composite/sobjects"),
                                     params={"ids": ",".join(chunk), "allOrNone": str(all_or_none).lower()},
                                     expect=list)
            results += [_save_result(item) for item in body]
        return results

    def _collections(self, method: str, path: str, records: list[dict], all_or_none: bool, *,
                     idempotent: bool) -> list[SaveResult]:
        results: list[SaveResult] = []
        for start in range(0, len(records), COLLECTION_MAX):
            chunk = records[start:start + COLLECTION_MAX]
            body = self.request_json(method, self.api_url(path), json={"allOrNone": all_or_none, "records": chunk},
                                     idempotent=idempotent, expect=list)
            if len(body) != len(chunk):
                raise AppError(self.app, f"a collection answer has {len(body)} results for {len(chunk)} records")
            results += [_save_result(item) for item in body]
        return results


def _ident(name: str) -> str:
    """Object and field names go into URLs and SOQL: refuse anything that is not an identifier."""
    if not _IDENT.match(name):
        raise ValueError(f"not a Salesforce object or field name: {name!r}")
    return name


def _typed(records: Iterable[Mapping[str, Any]], sobject: str | None) -> list[dict]:
    out = []
    for record in records:
        item = dict(record)
        if sobject is not None:
            item["attributes"] = {**(item.get("attributes") or {}), "type": sobject}
        elif not (item.get("attributes") or {}).get("type"):
            raise ValueError("every record needs attributes.type (or pass sobject=)")
        out.append(item)
    return out


def _save_result(item: Mapping[str, Any]) -> SaveResult:
    errors = tuple(SaveError(str(e.get("statusCode") or e.get("errorCode") or ""), str(e.get("message") or ""),
                             tuple(e.get("fields") or ())) for e in item.get("errors") or ())
    created = item.get("created")
    return SaveResult(item.get("id"), bool(item.get("success")), errors,
                      None if created is None else bool(created))
