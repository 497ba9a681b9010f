"""Attio REST API v2 client: a bearer token, records queried with limit/offset (no paging metadata), assert
(upsert) by a unique matching attribute, `{"status_code", "type", "code", "message"}` errors, and 429s whose
`Retry-After` is an HTTP date (decoded by the shared retry policy in connectors.http).

Paging: `iter_query` asks for `limit` rows at `offset += limit` until a page comes back short; Attio gives no
total and no cursor, so a short page is the only end signal.

A complete sweep (`sweep`): Attio records carry only `created_at`, so extraction re-reads everything. Offset
paging drifts when records are deleted (later rows shift back and one would be skipped). The rule that makes a
sweep known to be complete:
  * read sorted by `created_at` ascending, so records created during the sweep land after everything already read
    (they never shift earlier rows);
  * every page after the first starts one row early (`offset = previous offset + limit - 1`): its first row must
    be the last row of the previous page (the anchor). If it is not, rows moved under us (a deletion before the
    anchor, or the anchor itself deleted) and the pass restarts from offset 0;
  * a pass that reaches a short page with every anchor in place is complete: `Sweep.ids` is then every record
    that existed throughout it. After `max_restarts` drifting passes `SweepIncomplete` is raised; callers must
    then not infer deletes.
Records already yielded in an earlier (drifted) pass are not yielded again, so a restart costs requests but never
duplicates rows.

Rate limits: 100 reads/s and 25 writes/s per workspace; queries count as reads. The client paces reads with the
base limiter and writes, in addition, with their own `write_limiter`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from connectors.errors import AppError, Conflict, NotFound, ValidationFailed
from connectors.http import AppClient, RateLimiter

PRODUCTION_BASE_URL = "https://api.attio.com"
DEFAULT_PAGE_SIZE = 500  # Attio's own default for query `limit`
READS_PER_SECOND = 100
WRITES_PER_SECOND = 25
CREATED_AT_ASC = ({"direction": "asc", "attribute": "created_at"},)
_VALIDATION_CODES = frozenset({"filter_error", "value_not_found", "missing_value", "validation_type",
                               "immutable_value"})


class SweepIncomplete(AppError):
    """Offset positions kept shifting during a sweep (records deleted under it): nothing can be said about
    which records are gone. Sweeping again later usually succeeds."""


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str):
        if not token:
            raise ValueError("an Attio access token is required")
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:  # never show the token
        return "_BearerAuth(<redacted>)"


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an object slug or record id must not be empty")
    return quote(str(value), safe="")


def record_id(record: Mapping[str, Any]) -> str | None:
    rid = record.get("id")
    return str(rid["record_id"]) if isinstance(rid, Mapping) and rid.get("record_id") else None


def _anchor_key(record: Mapping[str, Any]) -> str:
    """What identifies a row across two pages: its record id, or the whole record if it has none."""
    return record_id(record) or orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()


class AttioClient(AppClient):
    app = "attio"

    def __init__(self, base_url: str, access_token: str, *, write_limiter: RateLimiter | None = None, **kw: Any):
        kw.setdefault("limiter", RateLimiter(per_minute=READS_PER_SECOND, period=1.0))
        super().__init__(base_url, auth=_BearerAuth(access_token), **kw)
        self.write_limiter = write_limiter or RateLimiter(per_minute=WRITES_PER_SECOND, period=1.0)

    # ----- errors --------------------------------------------------------------------------------------------------
    def decode_error(self, response: httpx.Response) -> AppError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return super().decode_error(response)
        code = body.get("code") if isinstance(body.get("code"), str) else None
        cls: type[AppError] | None = None
        if code == "uniqueness_conflict":
            cls = Conflict
        elif code == "not_found":
            cls = NotFound
        elif code in _VALIDATION_CODES and response.status_code == 400:
            cls = ValidationFailed
        return self.make_error(response, body["message"], code=code, cls=cls)

    def _data(self, response: httpx.Response, expect: type) -> Any:
        body = self.parse_json(response)
        data = body.get("data")
        if not isinstance(data, expect):
            raise self.bad_response(response, f"expected `data` to be a JSON {expect.__name__}")
        return data

    # ----- reads ---------------------------------------------------------------------------------------------------
    def whoami(self) -> dict:
        return self.get_json("/v2/self")

    def list_objects(self) -> list[dict]:
        return self.send_parsed("GET", "/v2/objects", lambda r: self._data(r, list))

    def list_attributes(self, obj: str) -> list[dict]:
        """Every attribute of an object, standard and custom (slug, type, is_multiselect, is_unique...)."""
        return self.send_parsed("GET", f"/v2/objects/{_segment(obj)}/attributes", lambda r: self._data(r, list))

    def query(self, obj: str, *, filter: Mapping[str, Any] | None = None,
              sorts: Sequence[Mapping[str, Any]] | None = None, limit: int = DEFAULT_PAGE_SIZE,
              offset: int = 0) -> list[dict]:
        """One page of records. A query changes nothing, so it is safe to re-send although it is a POST."""
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        body: dict[str, Any] = {"limit": limit, "offset": offset}
        if filter is not None:
            body["filter"] = dict(filter)
        if sorts is not None:
            body["sorts"] = [dict(s) for s in sorts]
        return self.send_parsed("POST", f"/v2/objects/{_segment(obj)}/records/query", lambda r: self._data(r, list),
                                json=body, idempotent=True)

    def iter_query(self, obj: str, *, filter: Mapping[str, Any] | None = None,
                   sorts: Sequence[Mapping[str, Any]] | None = None,
                   page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[list[dict]]:
        """Pages of records at offset += page_size until a short page (Attio gives no total and no cursor)."""
        offset = 0
        while True:
            page = self.query(obj, filter=filter, sorts=sorts, limit=page_size, offset=offset)
            if page:
                yield page
            if len(page) < page_size:
                return
            offset += page_size

    def sweep(self, obj: str, *, page_size: int = DEFAULT_PAGE_SIZE, max_restarts: int = 3) -> Sweep:
        """Every record of an object, in a pass known to be complete (see the module docstring)."""
        return Sweep(self, obj, page_size=page_size, max_restarts=max_restarts)

    def get_record(self, obj: str, rid: str) -> dict:
        return self.send_parsed("GET", f"/v2/objects/{_segment(obj)}/records/{_segment(rid)}",
                                lambda r: self._data(r, dict))

    # ----- writes --------------------------------------------------------------------------------------------------
    # values: {attribute slug: value or list of values}, in any form Attio accepts ("Nordwind GmbH",
    # ["nordwind.example"], {"currency_value": 1440, "currency_code": "EUR"}, ...).

    def create_record(self, obj: str, values: Mapping[str, Any]) -> dict:
        """A plain create has no idempotency: it is re-sent only if it provably never arrived. Prefer
        `assert_record` with a unique attribute."""
        return self.send_parsed("POST", f"/v2/objects/{_segment(obj)}/records", lambda r: self._data(r, dict),
                                json={"data": {"values": dict(values)}}, limiters=(self.write_limiter,))

    def assert_record(self, obj: str, matching_attribute: str, values: Mapping[str, Any]) -> dict:
        """Creates the record, or updates the one whose unique `matching_attribute` matches: safe to re-send."""
        if matching_attribute not in values:
            raise ValueError(f"values must carry the matching attribute {matching_attribute!r}")
        return self.send_parsed("PUT", f"/v2/objects/{_segment(obj)}/records", lambda r: self._data(r, dict),
                                params={"matching_attribute": matching_attribute},
                                json={"data": {"values": dict(values)}}, idempotent=True,
                                limiters=(self.write_limiter,))

    def update_record(self, obj: str, rid: str, values: Mapping[str, Any], *,
                      replace_multiselect: bool = False) -> dict:
        """PATCH adds multiselect values; with replace_multiselect, PUT overwrites them (and is safe to re-send)."""
        method = "PUT" if replace_multiselect else "PATCH"
        return self.send_parsed(method, f"/v2/objects/{_segment(obj)}/records/{_segment(rid)}",
                                lambda r: self._data(r, dict), json={"data": {"values": dict(values)}},
                                limiters=(self.write_limiter,))

    def delete_record(self, obj: str, rid: str, *, missing_ok: bool = True) -> bool:
        """Hard delete. True if this call deleted it; False if it was already gone (and missing_ok)."""
        try:
            self.send_parsed("DELETE", f"/v2/objects/{_segment(obj)}/records/{_segment(rid)}", lambda r: None,
                             limiters=(self.write_limiter,))
        except NotFound:
            if not missing_ok:
                raise
            return False
        return True


class Sweep:
    """Iterate for pages of records not seen before; once exhausted, `complete` is True and `ids` holds the
    record ids of the pass that completed. `restarts` counts passes abandoned because positions moved."""

    def __init__(self, client: AttioClient, obj: str, *, page_size: int, max_restarts: int):
        if page_size < 2:
            raise ValueError("a sweep needs pages of at least 2 rows (one overlaps the previous page)")
        self.client, self.obj, self.page_size, self.max_restarts = client, obj, page_size, max_restarts
        self.complete = False
        self.ids: set[str] = set()
        self.restarts = 0
        self.requests = 0

    def __iter__(self) -> Iterator[list[dict]]:
        yielded: set[str] = set()
        for attempt in range(self.max_restarts + 1):
            self.restarts = attempt
            ids: set[str] = set()
            anchor: str | None = None
            offset = 0
            while True:
                page = self.client.query(self.obj, sorts=CREATED_AT_ASC, limit=self.page_size, offset=offset)
                self.requests += 1
                if anchor is not None:
                    if not page or _anchor_key(page[0]) != anchor:
                        break  # rows shifted under us: this pass cannot vouch for completeness
                    rows = page[1:]
                else:
                    rows = page
                ids.update(rid for rid in map(record_id, rows) if rid)
                fresh = [r for r in rows if record_id(r) not in yielded]
                yielded.update(rid for rid in map(record_id, fresh) if rid)
                if fresh:
                    yield fresh
                if len(page) < self.page_size:
                    self.ids, self.complete = ids, True
                    return
                anchor = _anchor_key(page[-1])
                offset += self.page_size - 1
        raise SweepIncomplete(
            "attio", f"{self.obj}: records moved during {self.max_restarts + 1} sweeps (deleted while paging); "
                     "the sweep is not known to be complete", retriable=True)
