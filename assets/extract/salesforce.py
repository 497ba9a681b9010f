"""Salesforce -> raw_salesforce: a dlt source over SalesforceClient (vendor notes shared/vendors/salesforce.md §3).

Tables: account, contact, opportunity, one row per record and tenant. Which fields: every field the org's
`describe` lists for the object, read each run, so a custom `__c` field becomes a column (`external_id_c`)
without a code change. Compound addresses are selected whole and flattened (`billing_address__city`, …);
their component fields (BillingCity, …) are not selected twice. The `attributes` block is dropped.

First run: a complete `query` sweep (live rows only). Later runs: `queryAll … WHERE SystemModstamp > cursor`
(less an overlap; merging on (tenant, id) makes re-reads harmless): changed rows are upserted and rows with
IsDeleted true (the recycle bin) become tombstones, the app's own delete signal. The cursor is the newest
SystemModstamp seen, kept in dlt state. Rows purged from the recycle bin (hard deletes, ~15 days later) are not
seen: a connection not extracted for that long keeps them until its state is reset.
`full=True` (the nightly complete sweep) reads every row with `queryAll` (no cursor filter): live rows are
upserted, recycle-bin rows become tombstones.
`window=` (a window re-read, assets/extract/window.py) reads `queryAll … WHERE SystemModstamp >= start AND
SystemModstamp < end` (Salesforce's own filter): rows changed within the window are upserted, rows deleted within it
(recycle bin) become tombstones; the cursor is neither read nor moved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import dlt
import polars as pl

from assets.extract.flatten import RecordRules, TableShape, frame_to_tables, read_records
from assets.extract.loading import CURRENCIES, Progress, Window, emit, log, resource_hints, tombstones
from connectors.salesforce import SalesforceClient, format_datetime, parse_datetime

APP = "salesforce"
# SystemModstamp is set at commit; a transaction still open when we read may land just before the cursor.
CURSOR_OVERLAP = timedelta(minutes=5)
CURSOR_FIELD = "SystemModstamp"


@dataclass(frozen=True)
class SObject:
    name: str  # the API name, as in SOQL
    shape: TableShape


def _shape(table: str, **rules: tuple[str, ...]) -> TableShape:
    return TableShape(table, id_field="Id", integers=frozenset({"NumberOfEmployees"}),
                      rules=RecordRules(required=("Id",), currency=("CurrencyIsoCode",), **rules))


OBJECTS: dict[str, SObject] = {
    "account": SObject("Account", _shape("account", numeric=("AnnualRevenue",))),
    "contact": SObject("Contact", _shape("contact")),
    "opportunity": SObject("Opportunity", _shape("opportunity", numeric=("Amount",), dates=("CloseDate",))),
}


def select_fields(client: SalesforceClient, sobject: str) -> list[str]:
    """Every field of the object (custom ones included), compounds instead of their components."""
    fields = client.describe(sobject)["fields"]
    names = [f["name"] for f in fields if not f.get("compoundFieldName")]
    for required in ("Id", "IsDeleted", CURSOR_FIELD):
        if required not in names:
            names.append(required)
    return names


def _read(client: SalesforceClient | None, tenant: str, name: str, progress: Progress, full: bool = False,
          window: Window | None = None) -> Iterator:
    if client is None:  # the template source that only describes the assets
        return
    spec = OBJECTS[name]
    # a window re-read keeps away from dlt state: the cursor is neither read nor moved
    state = dlt.current.resource_state() if window is None else {}
    cursor = state.get("cursor")
    soql = f"SELECT {', '.join(select_fields(client, spec.name))} FROM {spec.name}"
    if window is not None:
        soql += (f" WHERE {CURSOR_FIELD} >= {format_datetime(window.start)}"
                 f" AND {CURSOR_FIELD} < {format_datetime(window.end)}")
        how, full = f"window {window}", True  # full: queryAll, so the window's deletes come as tombstones
    elif cursor and not full:
        since = parse_datetime(cursor) - CURSOR_OVERLAP
        soql += f" WHERE {CURSOR_FIELD} > {format_datetime(since)}"
        how = f"changed since {since:%Y-%m-%d %H:%M}"
    else:
        how = "complete sweep" + (" (queryAll)" if full else "")
    newest = parse_datetime(cursor) if cursor else None
    rows = deleted = pages = 0
    # queryAll on incremental runs: the recycle bin's rows carry the deletes
    for page in client.query_pages(soql, include_deleted=bool(cursor) or full):
        pages += 1
        stamps = [parse_datetime(r[CURSOR_FIELD]) for r in page.records if r.get(CURSOR_FIELD)]
        if stamps and (newest is None or max(stamps) > newest):
            newest = max(stamps)
        frame = read_records(page.body, ("records",))
        if frame.height == 0:
            continue
        frame = frame.drop("attributes", strict=False)
        if "IsDeleted" in frame.columns:
            gone = frame.filter(pl.col("IsDeleted").fill_null(False))
            if gone.height:
                ids = gone.get_column("Id").cast(pl.String).to_list()
                yield from tombstones(spec.shape, tenant, ids)
                deleted += len(ids)
                frame = frame.filter(~pl.col("IsDeleted").fill_null(False))
        tables = frame_to_tables(frame, spec.shape, tenant, CURRENCIES)
        yield from emit(tables, spec.shape, app=APP, tenant=tenant, collection=name)
        rows += tables.rows
    if newest is not None:
        state["cursor"] = newest.isoformat()
    state["last_rows"] = rows
    progress(f"{APP} {tenant} {name}: {rows} rows, {deleted} deleted in {pages} pages ({how})")


@dlt.source(name=APP, max_table_nesting=0)
def salesforce_source(client: SalesforceClient | None = None, tenant: str = "", progress: Progress | None = None,
                      full: bool = False, window: Window | None = None):
    """One connection's Salesforce org. Called without a client it only describes the resources; `full` reads
    every row with queryAll; `window` only the rows changed in it."""
    report = progress or (lambda message: log.info(message))
    for name, spec in OBJECTS.items():
        yield dlt.resource(_read(client, tenant, name, report, full, window), name=name,
                           **resource_hints(spec.shape))
