"""Attio -> raw_attio: a dlt source over AttioClient, one table per object (companies, people, deals).

Each record becomes one row: `id` (the record id), `created_at`, `web_url`, and its CURRENT attribute values
(value objects whose `active_until` is null) flattened to columns by attribute type:
  text, date, timestamp, checkbox, number, rating -> `<slug>` (numbers as DECIMAL(38, 9))
  currency         -> `<slug>` (DECIMAL(38, 9)) and `<slug>__currency_code`
  domain / email-address / phone-number -> `<slug>` (domain / email_address / phone_number)
  personal-name    -> `<slug>` (full name), `<slug>__first_name`, `<slug>__last_name`
  location         -> `<slug>__line_1` ... `<slug>__country_code`, `<slug>__latitude`, `<slug>__longitude`
  record-reference -> `<slug>` (target record id) and `<slug>__target_object`
  select / status  -> `<slug>` (the option's or status' title)
  actor-reference  -> `<slug>` (actor id) and `<slug>__actor_type`;  interaction -> `<slug>` (interacted_at)
A multiselect attribute (per the object's attribute definitions, custom ones included) keeps the main field of
each value as a JSON array text in `<slug>`. The `record_id` and `created_at` attributes repeat `id` and
`created_at` and are not repeated as columns.

Runs: Attio has no `updated_at` and no changed-since filter, so every run makes a COMPLETE sweep of each object
(AttioClient.sweep: sorted by created_at, each page overlapping the previous by one anchor row, restarted when
rows shift under it). Only records whose fingerprint changed since the last run are loaded. Deletes in Attio are
hard (the record just stops appearing), so a record is deleted from raw_attio only when a sweep that is known to
be complete did not see it. A sweep that fails midway loads nothing and deletes nothing (the run fails); a sweep
whose positions kept shifting (SweepIncomplete) loads the records it saw and deletes nothing, with a warning.

Window re-reads (`window=`, assets/extract/window.py): Attio has NO server-side modification filter (no
`updated_at`, and the query endpoint's filters cannot ask for "changed since"), so a window re-read sweeps each
object whole and keeps, client side, the records created within the window or holding a current value that became
active within it (`active_from`). A change that only ended a value (a cleared attribute) leaves no current value
with that date and is not seen: the next regular sweep's fingerprint catches it. No dlt state (fingerprints) is read
or written, and nothing is deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import dlt
import orjson
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from assets.extract.flatten import _SEP as PATH_SEP  # flatten's key-path separator: `a<SEP>b` -> column a__b
from assets.extract.flatten import RecordRules, TableShape, frame_to_tables, records_frame
from assets.extract.loading import CURRENCIES, Progress, Window, emit, log, resource_hints, tombstones
from connectors.attio import AttioClient, SweepIncomplete, record_id

APP = "attio"
OBJECTS = ("companies", "people", "deals")
PAGE_SIZE = 500
# Attio's currency list has one code outside ISO 4217 (NTD, the New Taiwan dollar).
ATTIO_CURRENCIES = CURRENCIES | {"NTD"}
_SKIPPED = frozenset({"record_id", "created_at"})
_MAIN = {"currency": "currency_value", "domain": "domain", "email-address": "email_address",
         "personal-name": "full_name", "phone-number": "phone_number", "record-reference": "target_record_id",
         "actor-reference": "referenced_actor_id", "interaction": "interacted_at", "location": "locality"}
_NUMERIC = frozenset({"number", "rating", "currency"})


def _col(slug: str, sub: str | None = None) -> str:
    return slug if sub is None else f"{slug}{PATH_SEP}{sub}"


def _main(value: dict, kind: str) -> Any:
    if kind == "select":
        return (value.get("option") or {}).get("title")
    if kind == "status":
        return (value.get("status") or {}).get("title")
    found = value.get(_MAIN.get(kind, "value"))
    # numbers travel as text so that the warehouse reads the exact digits Attio sent, never a float
    return str(found) if kind in _NUMERIC and isinstance(found, (int, float)) and not isinstance(found, bool) \
        else found


def flatten_record(record: Mapping[str, Any], attributes: Mapping[str, dict]) -> dict:
    """One record as a flat row of its active values (see the module docstring for the columns)."""
    row: dict[str, Any] = {"id": record_id(record), "created_at": record.get("created_at"),
                           "web_url": record.get("web_url")}
    values = record.get("values") if isinstance(record.get("values"), Mapping) else {}
    for slug, items in values.items():
        if slug in _SKIPPED or not isinstance(items, list):
            continue
        active = [v for v in items if isinstance(v, dict) and v.get("active_until") is None]
        definition = attributes.get(slug) or {}
        kind = definition.get("type") or (active[0].get("attribute_type") if active else None)
        # an attribute without a definition is read as multiselect: a stable column type whatever its count
        if definition.get("is_multiselect", not definition):
            row[slug] = [_main(v, kind) for v in active] or None
            continue
        value = active[0] if active else {}
        if kind != "location":  # a location has no main field: only its parts
            row[slug] = _main(value, kind) if value else None
        if kind == "currency":
            row[_col(slug, "currency_code")] = value.get("currency_code")
        elif kind == "personal-name":
            row[_col(slug, "first_name")] = value.get("first_name")
            row[_col(slug, "last_name")] = value.get("last_name")
        elif kind == "location":
            for sub in ("line_1", "line_2", "line_3", "line_4", "locality", "region", "postcode", "country_code",
                        "latitude", "longitude"):
                row[_col(slug, sub)] = value.get(sub)
        elif kind == "record-reference":
            row[_col(slug, "target_object")] = value.get("target_object")
        elif kind == "actor-reference":
            row[_col(slug, "actor_type")] = value.get("referenced_actor_type")
        elif kind == "interaction":
            row[_col(slug, "interaction_type")] = value.get("interaction_type")
    return row


def object_shape(obj: str, attributes: Mapping[str, dict]) -> TableShape:
    """The table of an object, with its number and currency columns checked (a run's attribute definitions)."""
    single = {slug: a for slug, a in attributes.items() if not a.get("is_multiselect") and slug not in _SKIPPED}
    numeric = tuple(slug for slug, a in single.items() if a.get("type") in _NUMERIC)
    currency = tuple(_col(slug, "currency_code") for slug, a in single.items() if a.get("type") == "currency")
    return TableShape(obj, rules=RecordRules(required=("id",), numeric=numeric, currency=currency))


def _fingerprint(record: Mapping[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def _loaded_ids(table: str, tenant: str) -> set[str]:
    """The ids of a table already in the warehouse for this tenant (none on a first run)."""
    try:
        with dlt.current.pipeline().sql_client() as client:
            rows = client.execute_sql(f"select id from {client.make_qualified_table_name(table)} where tenant = %s",
                                      tenant)
    except DatabaseUndefinedRelation:
        return set()
    return {str(row[0]) for row in rows or ()}


def _read_object(client: AttioClient | None, tenant: str, obj: str, progress: Progress,
                 page_size: int) -> Iterator:
    if client is None:  # the template source that only describes the assets
        return
    state = dlt.current.resource_state()
    prints: dict[str, str] = state.setdefault("fingerprints", {})
    attributes = {a["api_slug"]: a for a in client.list_attributes(obj) if isinstance(a, dict) and a.get("api_slug")}
    shape = object_shape(obj, attributes)
    sweep = client.sweep(obj, page_size=page_size)
    swept = changed = 0
    try:
        for page in sweep:
            swept += len(page)
            fresh = []
            for record in page:
                key, print_ = record_id(record), _fingerprint(record)
                if key is None or prints.get(key) != print_:
                    fresh.append(flatten_record(record, attributes))
                    if key is not None:
                        prints[key] = print_
            if fresh:
                tables = frame_to_tables(records_frame(fresh), shape, tenant, ATTIO_CURRENCIES)
                yield from emit(tables, shape, app=APP, tenant=tenant, collection=obj)
                changed += tables.rows
    except SweepIncomplete as exc:
        log.warning("%s %s %s: %s; nothing is deleted this run", APP, tenant, obj, exc)
        progress(f"{APP} {tenant} {obj}: {changed} changed of {swept} swept; sweep not complete, no deletes")
        return
    # only here is the sweep known complete: a record we hold that it did not see was deleted in Attio
    deleted = sorted(_loaded_ids(shape.table, tenant) - sweep.ids)
    yield from tombstones(shape, tenant, deleted)
    for key in deleted:
        prints.pop(key, None)
    progress(f"{APP} {tenant} {obj}: {changed} changed of {swept} swept in {sweep.requests} pages"
             f"{f' ({sweep.restarts} restarts)' if sweep.restarts else ''}, {len(deleted)} deleted")


def _instant(value: object) -> datetime | None:
    """Attio's nanosecond timestamps (`2025-03-02T09:14:11.061281000Z`) as aware instants (to the microsecond)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python reads at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def changed_within(record: Mapping[str, Any], window: Window) -> bool:
    """Created within the window, or one of its current values became active within it."""
    if window.holds(_instant(record.get("created_at"))):
        return True
    values = record.get("values") if isinstance(record.get("values"), Mapping) else {}
    return any(isinstance(v, dict) and v.get("active_until") is None and window.holds(_instant(v.get("active_from")))
               for items in values.values() if isinstance(items, list) for v in items)


def _read_window(client: AttioClient | None, tenant: str, obj: str, progress: Progress, page_size: int,
                 window: Window) -> Iterator:
    if client is None:
        return
    attributes = {a["api_slug"]: a for a in client.list_attributes(obj) if isinstance(a, dict) and a.get("api_slug")}
    shape = object_shape(obj, attributes)
    swept = changed = 0
    try:
        for page in client.sweep(obj, page_size=page_size):
            swept += len(page)
            fresh = [flatten_record(r, attributes) for r in page if changed_within(r, window)]
            if fresh:
                tables = frame_to_tables(records_frame(fresh), shape, tenant, ATTIO_CURRENCIES)
                yield from emit(tables, shape, app=APP, tenant=tenant, collection=obj)
                changed += tables.rows
    except SweepIncomplete as exc:  # what it saw is loaded; nothing is deleted by a window re-read anyway
        log.warning("%s %s %s: %s", APP, tenant, obj, exc)
    progress(f"{APP} {tenant} {obj}: {changed} changed within the window of {swept} swept (window {window}; "
             "filtered client side: Attio has no modification filter)")


@dlt.source(name=APP, max_table_nesting=0)
def attio_source(client: AttioClient | None = None, tenant: str = "", progress: Progress | None = None,
                 page_size: int | None = None, full: bool = False, window: Window | None = None):
    """One connection's Attio workspace. Called without a client it only describes the resources. Every run is
    a complete sweep, so `full` changes nothing (accepted so every source takes the same switch); `window` keeps
    only the records changed in it (client side)."""
    report = progress or (lambda message: log.info(message))
    if window is not None:
        for obj in OBJECTS:
            yield dlt.resource(_read_window(client, tenant, obj, report, page_size or PAGE_SIZE, window), name=obj,
                               **resource_hints(TableShape(obj)))
        return
    for obj in OBJECTS:
        yield dlt.resource(_read_object(client, tenant, obj, report, page_size or PAGE_SIZE), name=obj,
                           **resource_hints(TableShape(obj)))
