"""HubSpot CRM API client (objects v3, search, batch, associations v4, properties): private-app bearer token,
`after` cursor paging, search-based incremental reads that work around the 10,000-result cap, batches of 100
with 207 partial failures surfaced, and HubSpot's rolling 10-second limit.

Incremental reads (`iter_modified_since`) search on the modification date (`hs_lastmodifieddate`; contacts:
`lastmodifieddate`, the one HubSpot keeps current) sorted ascending. Search never pages past 10,000 results, so
before reaching the cap the client re-issues the query with the last seen modification time as the new lower
bound (GTE, skipping the rows it already gave at that instant). If 10,000 rows share one instant that cannot
make progress, it falls back to the full listing, filtered on our side. Search never returns archived records:
deletes are read from the `archived=true` listing (`iter_archived`).

Writes: HubSpot has no idempotency key. Updates and upserts (by a unique `idProperty`) set values, so re-sending
them is harmless and they are retried like idempotent requests; creates are re-sent only if they provably never
arrived (use `batch_upsert` with a unique property for exactly-once creation).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from connectors.errors import (
    AppError,
    AuthenticationError,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from connectors.http import AppClient, RateLimiter

OBJECT_TYPES = ("companies", "contacts", "deals")
MODIFIED_PROPERTY = {"companies": "hs_lastmodifieddate", "contacts": "lastmodifieddate", "deals": "hs_lastmodifieddate"}
MAX_PAGE_SIZE = 100
MAX_SEARCH_PAGE = 200
SEARCH_CAP = 10_000
MAX_BATCH = 100
MAX_ASSOCIATION_BATCH = 1000
# deal -> company association type ids (HUBSPOT_DEFINED): unlabelled and primary
DEAL_TO_COMPANY = 341
DEAL_TO_COMPANY_PRIMARY = 5
# 100 requests per rolling 10 s per account; stay a little under so a burst never meets a 429.
REQUESTS_PER_WINDOW = 95
WINDOW_SECONDS = 10.0
# search has its own, lower limit (about 4-5 requests per second per token)
SEARCHES_PER_SECOND = 4
# How long a 429 asks us to wait, by HubSpot's policyName (no Retry-After is sent): the rolling window.
_POLICY_WAIT = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0}
_CATEGORY_CLASS: dict[str, type[AppError]] = {
    "VALIDATION_ERROR": ValidationFailed, "OBJECT_NOT_FOUND": NotFound, "CONFLICT": Conflict,
    "OBJECT_ALREADY_EXISTS": Conflict, "INVALID_AUTHENTICATION": AuthenticationError,
    "EXPIRED_AUTHENTICATION": AuthenticationError, "MISSING_SCOPES": PermissionDenied, "RATE_LIMITS": RateLimited,
}


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id or name must not be empty")
    return quote(str(value), safe="")


def _object_type(name: str) -> str:
    if name not in OBJECT_TYPES:
        raise ValueError(f"object type must be one of {', '.join(OBJECT_TYPES)}, not {name!r}")
    return name


def epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return int(round(moment.timestamp() * 1000))


def parse_timestamp(value: Any) -> datetime | None:
    """A HubSpot date-time property (ISO 8601 or epoch ms) as an aware datetime; None if unset or unreadable."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class BatchResult:
    """The merged answer of one or more batch calls: records that went through and HubSpot's per-input errors
    (StandardError objects; a 207 multi-status). `missing_ids` are the inputs HubSpot could not find."""

    results: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def missing_ids(self) -> list[str]:
        return [str(i) for e in self.errors if e.get("category") == "OBJECT_NOT_FOUND"
                for i in (e.get("context") or {}).get("ids", [])]

    @property
    def ok(self) -> bool:
        return not self.errors


class HubSpotClient(AppClient):
    app = "hubspot"

    def __init__(self, base_url: str, access_token: str, **kw: Any):
        if not access_token:
            raise ValueError("a HubSpot access token is required")
        kw.setdefault("limiter", RateLimiter(per_minute=REQUESTS_PER_WINDOW, period=WINDOW_SECONDS))
        self.search_limiter = RateLimiter(per_minute=SEARCHES_PER_SECOND, period=1.0)
        headers = {"Authorization": f"Bearer {access_token}", **(kw.pop("headers", None) or {})}
        super().__init__(base_url.rstrip("/"), headers=headers, **kw)

    # ----- errors ------------------------------------------------------------------------------------------------
    def decode_error(self, response: httpx.Response) -> AppError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            return super().decode_error(response)
        category = body.get("category") or body.get("errorType")
        cls = _CATEGORY_CLASS.get(str(category)) if response.status_code < 500 else None
        if response.status_code == 429:
            cls = RateLimited
        details = [str(e.get("message")) for e in body.get("errors") or [] if isinstance(e, dict) and e.get("message")]
        detail = "; ".join(d for d in details if d != body["message"]) or None
        error = self.make_error(response, body["message"], code=str(category) if category else None,
                                detail=detail, cls=cls)
        if isinstance(error, RateLimited):
            policy = str(body.get("policyName") or "")
            if policy == "DAILY":  # the daily cap resets at midnight: not worth waiting for within a run
                error.retriable = False
            elif error.retry_after is None:
                error.retry_after = _POLICY_WAIT.get(policy, WINDOW_SECONDS)
        return error

    # ----- listing -----------------------------------------------------------------------------------------------
    def iter_pages(self, object_type: str, *, properties: Sequence[str] = (), archived: bool = False,
                   associations: Sequence[str] = (), limit: int = MAX_PAGE_SIZE) -> Iterator[list[dict]]:
        """Every page of `GET /crm/v3/objects/{type}`, following `paging.next.after` until it is absent.
        With archived=True HubSpot lists ONLY archived records (each with `archivedAt`)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}")
        params: dict[str, Any] = {"limit": limit, "archived": "true" if archived else "false"}
        if properties:
            params["properties"] = ",".join(properties)
        if associations:
            params["associations"] = ",".join(associations)
        path = f"/crm/v3/objects/{_object_type(object_type)}"
        seen: set[str] = set()
        while True:
            results, after, response = self.send_parsed("GET", path, self._parse_page, params=params)
            yield results
            if not after:
                return
            if after in seen:
                raise self.bad_response(response, f"pagination cursor loop: 'after' repeats after {len(seen)} pages")
            seen.add(after)
            params["after"] = after

    def iter_archived(self, object_type: str, *, properties: Sequence[str] = ()) -> Iterator[list[dict]]:
        """Archived (deleted) records: HubSpot's own delete signal for polling."""
        return self.iter_pages(object_type, properties=properties, archived=True)

    def _parse_page(self, response: httpx.Response) -> tuple[list[dict], str | None, httpx.Response]:
        body = self.parse_json(response)
        results = body.get("results")
        if not isinstance(results, list):
            raise self.bad_response(response, "expected a page with a 'results' array")
        paging = body.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        after = following.get("after") if isinstance(following, dict) else None
        return results, str(after) if after else None, response

    def get(self, object_type: str, object_id: str, *, properties: Sequence[str] = (),
            id_property: str | None = None, associations: Sequence[str] = ()) -> dict | None:
        """One record, or None if it does not exist (or is archived)."""
        params: dict[str, Any] = {}
        if properties:
            params["properties"] = ",".join(properties)
        if id_property:
            params["idProperty"] = id_property
        if associations:
            params["associations"] = ",".join(associations)
        try:
            return self.get_json(f"/crm/v3/objects/{_object_type(object_type)}/{_segment(object_id)}", params=params)
        except NotFound:
            return None

    # ----- search ------------------------------------------------------------------------------------------------
    def search(self, object_type: str, body: Mapping[str, Any]) -> dict:
        """One `POST /crm/v3/objects/{type}/search` call (searches are read-only: safe to retry)."""
        with self.search_limiter:
            return self.request_json("POST", f"/crm/v3/objects/{_object_type(object_type)}/search", json=dict(body),
                                     idempotent=True)

    def iter_search(self, object_type: str, *, filter_groups: Sequence[Mapping] = (), sorts: Sequence[Any] = (),
                    properties: Sequence[str] = (), limit: int = MAX_SEARCH_PAGE) -> Iterator[list[dict]]:
        """Pages of one search, stopping before HubSpot's 10,000-result cap (`SearchCapReached` past it)."""
        if not 1 <= limit <= MAX_SEARCH_PAGE:
            raise ValueError(f"limit must be 1..{MAX_SEARCH_PAGE}")
        body: dict[str, Any] = {"filterGroups": list(filter_groups), "sorts": list(sorts),
                                "properties": list(properties), "limit": limit}
        offset = 0
        while True:
            answer = self.search(object_type, {**body, "after": str(offset)} if offset else body)
            results = answer.get("results")
            if not isinstance(results, list):
                raise ValidationFailed(self.app, "search answer without a 'results' array")
            yield results
            following = (answer.get("paging") or {}).get("next") or {}
            if not following.get("after"):
                return
            offset = int(following["after"])
            if offset >= SEARCH_CAP:
                raise SearchCapReached(self.app, f"search on {object_type} has more than {SEARCH_CAP} results",
                                       total=int(answer.get("total") or 0))

    def iter_modified_since(self, object_type: str, since: datetime, *, properties: Sequence[str] = (),
                            until: datetime | None = None, limit: int = MAX_SEARCH_PAGE) -> Iterator[list[dict]]:
        """Pages of records modified at or after `since` (and at or before `until`), oldest first, whatever
        their number: the 10,000 cap is stepped over by moving the lower bound (see the module docstring)."""
        modified = MODIFIED_PROPERTY[_object_type(object_type)]
        names = list(dict.fromkeys([*properties, modified]))
        lower = epoch_ms(since)
        upper = epoch_ms(until) if until is not None else None
        at_lower: set[str] = set()  # ids already given whose modification time equals `lower`
        while True:
            filters = [{"propertyName": modified, "operator": "GTE", "value": str(lower)}]
            if upper is not None:
                filters.append({"propertyName": modified, "operator": "LTE", "value": str(upper)})
            last: int | None = None
            last_ids: set[str] = set()
            try:
                for page in self.iter_search(object_type, filter_groups=[{"filters": filters}],
                                             sorts=[{"propertyName": modified, "direction": "ASCENDING"}],
                                             properties=names, limit=limit):
                    fresh = []
                    for record in page:
                        stamp = parse_timestamp((record.get("properties") or {}).get(modified))
                        ms = epoch_ms(stamp) if stamp else lower
                        if ms != last:
                            last, last_ids = ms, set()
                        last_ids.add(str(record.get("id")))
                        if not (ms == lower and str(record.get("id")) in at_lower):
                            fresh.append(record)
                    if fresh:
                        yield fresh
                return
            except SearchCapReached:
                if last is None or last == lower:
                    # 10,000 rows at one instant: moving the bound cannot progress; read everything instead
                    yield from self._listing_modified_since(object_type, names, modified, lower, upper)
                    return
                at_lower, lower = last_ids, last

    def changed_since(self, instant: datetime) -> datetime | None:
        """The cheap change signal the near-real-time sensor polls (pipelines/sensors.py): per object type, one
        search on the modification date after `instant`, newest first, limit 1. The newest modification later than
        `instant`, or None. Archivals are not searchable: they wait for the schedule (as does a change still
        inside search's indexing delay when its stamp is older than the previous signal)."""
        newest: datetime | None = None
        for object_type in OBJECT_TYPES:
            modified = MODIFIED_PROPERTY[object_type]
            answer = self.search(object_type, {
                "filterGroups": [{"filters": [{"propertyName": modified, "operator": "GT",
                                               "value": str(epoch_ms(instant))}]}],
                "sorts": [{"propertyName": modified, "direction": "DESCENDING"}],
                "properties": [modified], "limit": 1})
            for record in answer.get("results") or []:
                stamp = parse_timestamp((record.get("properties") or {}).get(modified))
                if stamp is not None and stamp > instant and (newest is None or stamp > newest):
                    newest = stamp
        return newest

    def _listing_modified_since(self, object_type: str, names: list[str], modified: str, lower: int,
                                upper: int | None) -> Iterator[list[dict]]:
        for page in self.iter_pages(object_type, properties=names):
            kept = []
            for record in page:
                stamp = parse_timestamp((record.get("properties") or {}).get(modified))
                ms = epoch_ms(stamp) if stamp else None
                if ms is None or (ms >= lower and (upper is None or ms <= upper)):
                    kept.append(record)  # no timestamp: keep it rather than silently drop a changed row
            if kept:
                yield kept

    # ----- batch -----------------------------------------------------------------------------------------------------
    def _batch(self, object_type: str, op: str, inputs: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] = {},
               *, idempotent: bool, params: Mapping[str, Any] | None = None, size: int = MAX_BATCH) -> BatchResult:
        merged = BatchResult()
        path = f"/crm/v3/objects/{_object_type(object_type)}/batch/{op}"
        for start in range(0, len(inputs), size):
            chunk = [dict(i) for i in inputs[start:start + size]]
            body = self.request_json("POST", path, json={**extra, "inputs": chunk}, params=params,
                                     idempotent=idempotent)
            merged.results.extend(body.get("results") or [])
            merged.errors.extend(body.get("errors") or [])
        return merged

    def batch_read(self, object_type: str, ids: Iterable[str], *, properties: Sequence[str] = (),
                   id_property: str | None = None, archived: bool = False) -> BatchResult:
        """Records by id (or by a unique `id_property`), 100 per call; ids HubSpot cannot find are in
        `missing_ids` (a 207, not an exception)."""
        unique = list(dict.fromkeys(str(i) for i in ids))
        extra: dict[str, Any] = {"properties": list(properties), "propertiesWithHistory": []}
        if id_property:
            extra["idProperty"] = id_property
        return self._batch(object_type, "read", [{"id": i} for i in unique], extra, idempotent=True,
                           params={"archived": "true" if archived else "false"})

    def batch_create(self, object_type: str, inputs: Sequence[Mapping[str, Any]]) -> BatchResult:
        """Creates `{"properties": {...}, "associations": [...]}` inputs, 100 per call. Not idempotent: prefer
        `batch_upsert` with a unique property when a create may be repeated."""
        return self._batch(object_type, "create", [{"associations": [], **i} for i in inputs], idempotent=False)

    def batch_update(self, object_type: str, inputs: Sequence[Mapping[str, Any]]) -> BatchResult:
        """Updates `{"id", "properties"[, "idProperty"]}` inputs, 100 per call; unknown ids come back in `errors`."""
        return self._batch(object_type, "update", inputs, idempotent=True)

    def batch_upsert(self, object_type: str, inputs: Sequence[Mapping[str, Any]], *,
                     id_property: str | None = None) -> BatchResult:
        """Creates or updates by a unique property (`{"id": <value>, "properties"}`; `id_property` fills each
        input's `idProperty`), 100 per call. Safe to repeat: the second call updates what the first created."""
        rows = [{**({"idProperty": id_property} if id_property else {}), **i} for i in inputs]
        if any(not r.get("idProperty") for r in rows):
            raise ValueError("every upsert input needs an idProperty (a property with unique values)")
        return self._batch(object_type, "upsert", rows, idempotent=True)

    def batch_archive(self, object_type: str, ids: Iterable[str]) -> None:
        path = f"/crm/v3/objects/{_object_type(object_type)}/batch/archive"
        unique = list(dict.fromkeys(str(i) for i in ids))
        for start in range(0, len(unique), MAX_BATCH):
            self.request("POST", path, json={"inputs": [{"id": i} for i in unique[start:start + MAX_BATCH]]},
                         idempotent=True)

    # ----- single writes ---------------------------------------------------------------------------------------------
    def create(self, object_type: str, properties: Mapping[str, Any],
               associations: Sequence[Mapping[str, Any]] = ()) -> dict:
        return self.request_json("POST", f"/crm/v3/objects/{_object_type(object_type)}",
                                 json={"properties": dict(properties), "associations": list(associations)})

    def update(self, object_type: str, object_id: str, properties: Mapping[str, Any], *,
               id_property: str | None = None) -> dict:
        """PATCH: only the given properties change (an empty string clears one). Idempotent."""
        return self.request_json("PATCH", f"/crm/v3/objects/{_object_type(object_type)}/{_segment(object_id)}",
                                 json={"properties": dict(properties)},
                                 params={"idProperty": id_property} if id_property else None, idempotent=True)

    def archive(self, object_type: str, object_id: str) -> None:
        self.request("DELETE", f"/crm/v3/objects/{_object_type(object_type)}/{_segment(object_id)}")

    # ----- associations v4 --------------------------------------------------------------------------------------------
    def batch_read_associations(self, from_type: str, to_type: str, ids: Iterable[str]) -> dict[str, list[dict]]:
        """from id -> its links `[{"toObjectId", "associationTypes": [...]}]`. HubSpot answers an object without
        links (or unknown) as a per-input error; those map to an empty list."""
        unique = list(dict.fromkeys(str(i) for i in ids))
        out: dict[str, list[dict]] = {i: [] for i in unique}
        path = f"/crm/v4/associations/{_object_type(from_type)}/{_object_type(to_type)}/batch/read"
        for start in range(0, len(unique), MAX_ASSOCIATION_BATCH):
            chunk = unique[start:start + MAX_ASSOCIATION_BATCH]
            body = self.request_json("POST", path, json={"inputs": [{"id": i} for i in chunk]}, idempotent=True)
            for row in body.get("results") or []:
                out.setdefault(str(row["from"]["id"]), []).extend(row.get("to") or [])
        return out

    def list_associations(self, from_type: str, object_id: str, to_type: str) -> list[dict]:
        path = f"/crm/v4/objects/{_object_type(from_type)}/{_segment(object_id)}/associations/{_object_type(to_type)}"
        params: dict[str, Any] = {"limit": 500}
        links: list[dict] = []
        while True:
            results, after, _ = self.send_parsed("GET", path, self._parse_page, params=params)
            links.extend(results)
            if not after or after == params.get("after"):
                return links
            params["after"] = after

    def associate(self, from_type: str, from_id: str, to_type: str, to_id: str,
                  type_ids: Sequence[int] = ()) -> dict:
        """A link with the given HUBSPOT_DEFINED type ids (e.g. deal→company 341, primary 5); without type ids,
        the default (unlabelled) link. PUT: safe to repeat."""
        base = f"/crm/v4/objects/{_object_type(from_type)}/{_segment(from_id)}/associations"
        if not type_ids:
            return self.request_json("PUT", f"{base}/default/{_object_type(to_type)}/{_segment(to_id)}")
        body = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": t} for t in type_ids]
        return self.request_json("PUT", f"{base}/{_object_type(to_type)}/{_segment(to_id)}", json=body)

    def batch_associate(self, from_type: str, to_type: str, pairs: Iterable[tuple[str, str]],
                        type_id: int) -> BatchResult:
        """Links (from id, to id) pairs with one type id, 100 per call (creating a link twice is harmless)."""
        rows = [{"from": {"id": str(a)}, "to": {"id": str(b)},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]}
                for a, b in pairs]
        merged = BatchResult()
        path = f"/crm/v4/associations/{_object_type(from_type)}/{_object_type(to_type)}/batch/create"
        for start in range(0, len(rows), MAX_BATCH):
            body = self.request_json("POST", path, json={"inputs": rows[start:start + MAX_BATCH]}, idempotent=True)
            merged.results.extend(body.get("results") or [])
            merged.errors.extend(body.get("errors") or [])
        return merged

    def dissociate(self, from_type: str, from_id: str, to_type: str, to_id: str) -> None:
        self.request("DELETE", f"/crm/v4/objects/{_object_type(from_type)}/{_segment(from_id)}/associations/"
                               f"{_object_type(to_type)}/{_segment(to_id)}")

    # ----- properties ----------------------------------------------------------------------------------------------
    def list_properties(self, object_type: str) -> list[dict]:
        body = self.get_json(f"/crm/v3/properties/{_object_type(object_type)}")
        return list(body.get("results") or [])

    def get_property(self, object_type: str, name: str) -> dict | None:
        try:
            return self.get_json(f"/crm/v3/properties/{_object_type(object_type)}/{_segment(name)}")
        except NotFound:
            return None

    def create_property(self, object_type: str, definition: Mapping[str, Any]) -> dict:
        """Creates a custom property (name, label, type, fieldType, groupName[, options, hasUniqueValue])."""
        return self.request_json("POST", f"/crm/v3/properties/{_object_type(object_type)}", json=dict(definition))

    def ensure_property(self, object_type: str, definition: Mapping[str, Any]) -> dict:
        """The property, created if missing (a create that lost a race to another writer is fine too)."""
        existing = self.get_property(object_type, str(definition["name"]))
        if existing is not None:
            return existing
        try:
            return self.create_property(object_type, definition)
        except Conflict:
            found = self.get_property(object_type, str(definition["name"]))
            if found is None:
                raise
            return found

    def update_property(self, object_type: str, name: str, changes: Mapping[str, Any]) -> dict:
        return self.request_json("PATCH", f"/crm/v3/properties/{_object_type(object_type)}/{_segment(name)}",
                                 json=dict(changes), idempotent=True)


class SearchCapReached(ValidationFailed):
    """A search has more results than HubSpot lets one query page through (10,000): narrow the filters."""

    def __init__(self, app: str, message: str, *, total: int = 0, **kw: Any):
        self.total = total
        super().__init__(app, message, **kw)
