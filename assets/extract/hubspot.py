"""HubSpot CRM -> raw_hubspot: a dlt source over HubSpotClient.

Tables: companies, contacts, deals (one row per record; HubSpot's `properties` flattened to
`properties__<name>` columns, numeric properties as DECIMAL(38, 9), everything else as the text HubSpot sends)
and deal_companies (one row per deal→company link: deal_id, company_id, is_primary, type_ids).

Which properties: a standard set per object plus every custom property the portal defines (read from the
properties API each run), so a custom field appears as a column without a code change.

First run, and then at least once a day: a complete sweep of the listing (no search cap, sees everything).
Other runs: a search on the modification date (`hs_lastmodifieddate`, contacts `lastmodifieddate`) since the
last cursor minus an overlap that also covers search's indexing delay (`full=True`, the nightly sweep, always
sweeps); the client steps over the 10,000-result
cap. Deletes come only from HubSpot's own signal, the `archived=true` listing (archived since the last cursor,
or all of them on a sweep), as tombstones that also drop the deal's links. deal_companies is re-read for the
deals that changed (all deals on a sweep) and replaced whole per deal; a link changed without the deal
changing shows at the next sweep.
`window=` (a window re-read, assets/extract/window.py) searches the modification date BETWEEN the window's bounds
(GTE start, LTE end less 1 ms: HubSpot's own filter, stepping over the search cap the same way), re-reads those
deals' links, and tombstones the records archived within the window (the archived listing has no date filter: it
is read whole and filtered here). It neither reads nor moves the cursors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dlt
import orjson
import polars as pl

from assets.extract.flatten import (
    DECIMAL,
    PageTables,
    RecordRules,
    TableShape,
    column_name,
    frame_to_tables,
    records_frame,
    table_name,
)
from assets.extract.loading import (
    CURRENCIES,
    DELETED_COLUMN,
    Progress,
    Window,
    emit,
    log,
    resource_hints,
    table_hints,
    tombstones,
)
from connectors.hubspot import DEAL_TO_COMPANY_PRIMARY, HubSpotClient, parse_timestamp

APP = "hubspot"
CURSOR_OVERLAP = timedelta(minutes=5)
FULL_SWEEP_EVERY = timedelta(days=1)

STANDARD_PROPERTIES = {
    "companies": ("name", "domain", "website", "phone", "address", "city", "zip", "state", "country", "industry",
                  "annualrevenue", "numberofemployees", "lifecyclestage", "createdate", "hs_lastmodifieddate",
                  "hs_object_id"),
    "contacts": ("email", "firstname", "lastname", "company", "phone", "jobtitle", "lifecyclestage",
                 "associatedcompanyid", "createdate", "lastmodifieddate", "hs_object_id"),
    "deals": ("dealname", "amount", "dealstage", "pipeline", "closedate", "deal_currency_code", "description",
              "createdate", "hs_lastmodifieddate", "hs_object_id"),
}


@dataclass(frozen=True)
class Collection:
    object_type: str
    shape: TableShape


COLLECTIONS: dict[str, Collection] = {
    "companies": Collection("companies", TableShape("companies", rules=RecordRules(
        required=("id",), numeric=("properties.annualrevenue",)))),
    "contacts": Collection("contacts", TableShape("contacts", rules=RecordRules(required=("id",)))),
    "deals": Collection("deals", TableShape("deals", rules=RecordRules(
        required=("id",), numeric=("properties.amount",), currency=("properties.deal_currency_code",)))),
}
LINKS = TableShape("deal_companies")
LINKS_MERGE_KEY = "deal_id"


class _Reader:
    def __init__(self, client: HubSpotClient | None, tenant: str, progress: Progress, full: bool = False,
                 window: Window | None = None):
        self.client = client
        self.window = window
        self.full = full  # the nightly complete sweep: the listing, whatever the last sweep's age
        self.tenant = tenant
        self.progress = progress
        self.deal_ids: list[str] = []  # deals read this run: their links are re-read next (resources run in order)
        self.deleted_deals: list[str] = []
        self.swept_deals = False

    def _properties(self, object_type: str) -> tuple[list[str], set[str]]:
        """Property names to request (standard + custom) and which of them are numbers."""
        assert self.client is not None
        known = {d["name"]: d for d in self.client.list_properties(object_type) if not d.get("archived")}
        names = [n for n in STANDARD_PROPERTIES[object_type] if n in known]
        names += sorted(n for n, d in known.items() if not d.get("hubspotDefined") and n not in names)
        return names, {n for n in names if known[n].get("type") == "number"}

    def collection(self, name: str) -> Iterator:
        if self.client is None:  # the template source that only describes the assets
            return
        spec = COLLECTIONS[name]
        if self.window is not None:
            yield from self._window(name, spec)
            return
        state = dlt.current.resource_state()
        started = datetime.now(UTC)
        since = _parse(state.get("modified_since"))
        last_sweep = _parse(state.get("swept_at"))
        names, numbers = self._properties(spec.object_type)
        sweep = self.full or since is None or last_sweep is None or started - last_sweep >= FULL_SWEEP_EVERY
        if sweep:
            pages: Iterable[list[dict]] = self.client.iter_pages(spec.object_type, properties=names)
            how = "complete sweep"
        else:
            pages = self.client.iter_modified_since(spec.object_type, since, properties=names)
            how = f"modified since {since:%Y-%m-%d %H:%M}"
        rows = 0
        for page in pages:
            rows += yield from self._load(name, spec, page, numbers)
        archived_since = None if sweep else since
        deleted = [str(r["id"]) for page in self.client.iter_archived(spec.object_type) for r in page
                   if archived_since is None or _at_or_after(r.get("archivedAt"), archived_since)]
        yield from tombstones(spec.shape, self.tenant, deleted)
        if name == "deals":
            self.deleted_deals = deleted
            self.swept_deals = sweep
        self.progress(f"{APP} {self.tenant} {name}: {rows} rows, {len(deleted)} deleted ({how})")
        state["modified_since"] = (started - CURSOR_OVERLAP).isoformat()
        if sweep:
            state["swept_at"] = started.isoformat()
        state["last_rows"] = rows

    def _load(self, name: str, spec: Collection, page: list[dict], numbers: set[str]) -> Iterator:
        """One page of records to dlt (deal ids kept for their associations); returns its row count."""
        if name == "deals":
            self.deal_ids.extend(str(r.get("id")) for r in page if r.get("id") is not None)
        loaded = frame_to_tables(records_frame(page), spec.shape, self.tenant, CURRENCIES)
        _type_numbers(loaded, spec.shape, numbers)
        yield from emit(loaded, spec.shape, app=APP, tenant=self.tenant, collection=name)
        return loaded.rows

    def _window(self, name: str, spec: Collection) -> Iterator:
        """The records modified within the window, and those archived within it (no dlt state read or written)."""
        window = self.window
        names, numbers = self._properties(spec.object_type)
        rows = 0
        # the search's bounds are inclusive milliseconds: the window's end is not in the window
        for page in self.client.iter_modified_since(spec.object_type, window.start, properties=names,
                                                    until=window.end - timedelta(milliseconds=1)):
            rows += yield from self._load(name, spec, page, numbers)
        deleted = [str(r["id"]) for page in self.client.iter_archived(spec.object_type) for r in page
                   if window.holds(parse_timestamp(r.get("archivedAt")))]
        yield from tombstones(spec.shape, self.tenant, deleted)
        if name == "deals":
            self.deleted_deals = deleted
        self.progress(f"{APP} {self.tenant} {name}: {rows} rows, {len(deleted)} archived (window {window})")

    def deal_companies(self) -> Iterator:
        if self.client is None:
            return
        deal_ids = list(dict.fromkeys(self.deal_ids))
        links = self.client.batch_read_associations("deals", "companies", deal_ids) if deal_ids else {}
        rows = []
        for deal_id in deal_ids:
            for link in links.get(deal_id, []):
                type_ids = sorted(int(t["typeId"]) for t in link.get("associationTypes") or [])
                rows.append({"tenant": self.tenant, "id": f"{deal_id}:{link['toObjectId']}", "deal_id": deal_id,
                             "company_id": str(link["toObjectId"]), "is_primary": DEAL_TO_COMPANY_PRIMARY in type_ids,
                             "type_ids": orjson.dumps(type_ids).decode(), DELETED_COLUMN: False})
        # A deal read without links, or deleted, gets a tombstone on its key: its old links go
        linked = {r["deal_id"] for r in rows}
        for deal_id in [d for d in deal_ids if d not in linked] + self.deleted_deals:
            rows.append({"tenant": self.tenant, "id": f"{deal_id}:", "deal_id": deal_id, "company_id": None,
                         "is_primary": None, "type_ids": None, DELETED_COLUMN: True})
        if rows:
            schema = {"tenant": pl.String, "id": pl.String, "deal_id": pl.String, "company_id": pl.String,
                      "is_primary": pl.Boolean, "type_ids": pl.String, DELETED_COLUMN: pl.Boolean}
            table = pl.DataFrame(rows, schema=schema).to_arrow()
            yield dlt.mark.with_hints(table, table_hints(LINKS, LINKS_MERGE_KEY), create_table_variant=True)
        self.progress(f"{APP} {self.tenant} deal_companies: {len(linked)} deals with links, "
                      f"{len(rows) - len(linked)} link rows and tombstones")


def _type_numbers(loaded: PageTables, shape: TableShape, numbers: set[str]) -> None:
    """Numeric properties arrive as strings: store them as DECIMAL(38, 9) (money is never a float)."""
    table_key = table_name(shape.table)
    if table_key not in loaded.tables or not numbers:
        return
    frame = pl.from_arrow(loaded.tables[table_key])
    columns = {f"{column_name('properties')}__{column_name(n)}" for n in numbers} & set(frame.columns)
    casts = [pl.col(c).cast(pl.String).str.strip_chars().replace("", None).cast(DECIMAL, strict=False)
             for c in columns if frame.schema[c] != DECIMAL]
    if casts:
        loaded.tables[table_key] = frame.with_columns(casts).to_arrow()


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _at_or_after(value: object, since: datetime) -> bool:
    moment = parse_timestamp(value)
    return moment is None or moment >= since


@dlt.source(name=APP, max_table_nesting=0)
def hubspot_source(client: HubSpotClient | None = None, tenant: str = "", progress: Progress | None = None,
                   full: bool = False, window: Window | None = None):
    """One connection's HubSpot portal. Called without a client it only describes the resources; `window` reads
    only what changed in it."""
    report = progress or (lambda message: log.info(message))
    reader = _Reader(client, tenant, report, full, window)
    for name, spec in COLLECTIONS.items():
        yield dlt.resource(reader.collection(name), name=name, **resource_hints(spec.shape))
    # deal_companies reads the deal ids the deals resource found: make_pipeline runs resources in order (fifo)
    yield dlt.resource(reader.deal_companies(), name="deal_companies", **resource_hints(LINKS))
