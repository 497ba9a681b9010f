"""QuickBooks Online -> raw_quickbooks: a dlt source over QuickBooksClient.

First run: a complete sweep of each entity by query pages. Later runs: CDC since the last cursor (deletes
arrive as CDC tombstones, the app's own signal); an entity whose CDC answer hits the 1,000-object cap, or a
cursor older than CDC's 30-day window, falls back to a query on MetaData.LastUpdatedTime (which cannot see
deletes, so it says so). Tax codes and rates are not CDC-able: they are swept whole each run (small).
`full=True` (the nightly complete sweep) sweeps every entity instead of CDC, and an id we hold that a completed
sweep of a CDC-able entity did not return was deleted (the cursor still moves: the sweep saw everything).
`window=` (a window re-read, assets/extract/window.py) reads each CDC-able entity by a query on
MetaData.LastUpdatedTime within [start, end), QuickBooks' own filter, and leaves the cursors alone; the reference
entities (tax codes and rates, company info, preferences, exchange rates) are read whole by every run anyway.
A query cannot see deletes: a window re-read deletes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dlt
import polars as pl

from dlt.destinations.exceptions import DatabaseUndefinedRelation

from assets.extract.flatten import (PageTables, RecordRules, TableShape, frame_to_tables, read_records, records_frame,
                                    table_name)
from assets.extract.loading import CURRENCIES, Progress, Window, emit, log, resource_hints, tombstones
from connectors.quickbooks import CdcLimitExceeded, QuickBooksClient, format_datetime

APP = "quickbooks"
CDC_WINDOW = timedelta(days=30)
# Re-read a little before the cursor: the server's clock and ours may disagree; merging makes overlap harmless.
CURSOR_OVERLAP = timedelta(minutes=5)


@dataclass(frozen=True)
class Collection:
    entity: str  # QuickBooks entity name, as in queries
    shape: TableShape
    cdc: bool = True
    # name lists hide deactivated rows from plain queries; a deactivation is how QuickBooks "deletes" them
    name_list: bool = False
    sweep_concurrency: int = 4  # pages fetched ahead; QuickBooks allows 10 in flight per realm


def _shape(table: str, *, children: tuple[str, ...] = (), rules: RecordRules | None = None,
           id_field: str = "Id") -> TableShape:
    return TableShape(table, id_field=id_field, children=children,
                      integers=frozenset({"LineNum", "TaxOrder", "FiscalYearStartMonth"}),
                      rules=rules or RecordRules(required=(id_field,)))


_TXN_RULES = RecordRules(required=("Id",), numeric=("TotalAmt", "Balance"), currency=("CurrencyRef.value",),
                         dates=("TxnDate",))

COLLECTIONS: dict[str, Collection] = {
    "customer": Collection("Customer", _shape("customer", rules=RecordRules(
        required=("Id",), numeric=("Balance",), currency=("CurrencyRef.value",))), name_list=True),
    "invoice": Collection("Invoice", _shape("invoice", children=("Line", "LinkedTxn"), rules=_TXN_RULES)),
    "creditmemo": Collection("CreditMemo", _shape("creditmemo", children=("Line",), rules=_TXN_RULES)),
    "payment": Collection("Payment", _shape("payment", children=("Line",), rules=RecordRules(
        required=("Id",), numeric=("TotalAmt",), currency=("CurrencyRef.value",), dates=("TxnDate",)))),
    "item": Collection("Item", _shape("item"), name_list=True),
    "account": Collection("Account", _shape("account"), name_list=True),
    "taxcode": Collection("TaxCode", _shape("taxcode"), cdc=False, name_list=True),
    "taxrate": Collection("TaxRate", _shape("taxrate"), cdc=False),
    "companyinfo": Collection("CompanyInfo", _shape("companyinfo"), cdc=False),
    "preferences": Collection("Preferences", _shape("preferences"), cdc=False),
    "exchangerate": Collection("ExchangeRate", _shape("exchangerate", id_field="SourceCurrencyCode", rules=RecordRules(
        required=("SourceCurrencyCode", "AsOfDate"), numeric=("Rate",))), cdc=False),
}


def _read_collection(client: QuickBooksClient | None, tenant: str, name: str, progress: Progress,
                     full: bool = False) -> Iterator:
    if client is None:  # the template source that only describes the assets
        return
    spec = COLLECTIONS[name]
    state = dlt.current.resource_state()
    started = datetime.now(UTC)
    since = _parse(state.get("changed_since"))
    loaded = 0
    if spec.cdc and not full and since is not None and started - since < CDC_WINDOW:
        try:
            changes = client.cdc([spec.entity], since).records.get(spec.entity, [])
            deleted = [str(r.get("Id")) for r in changes if r.get("status") == "Deleted"]
            upserts = [r for r in changes if r.get("status") != "Deleted"]
            yield from tombstones(spec.shape, tenant, deleted)
            page = frame_to_tables(records_frame(upserts), spec.shape, tenant, CURRENCIES)
            yield from emit(page, spec.shape, app=APP, tenant=tenant, collection=name)
            loaded = page.rows
            progress(f"{APP} {tenant} {name}: {loaded} changed, {len(deleted)} deleted (CDC since {since:%Y-%m-%d %H:%M})")
        except CdcLimitExceeded:
            log.warning("%s %s %s: CDC cap reached; reading changes by LastUpdatedTime (deletes wait for the "
                        "next complete sweep)", APP, tenant, name)
            loaded = yield from _sweep(client, tenant, name, progress,
                                       where=f"MetaData.LastUpdatedTime > '{format_datetime(since)}'")
    elif full and spec.cdc:
        seen: set[str] = set()
        loaded = yield from _sweep(client, tenant, name, progress, seen=seen)
        # reached only when every page was read: an id we hold that the sweep lacks is gone from QuickBooks
        deleted = sorted(_loaded_ids(spec.shape.table, tenant) - seen)
        yield from tombstones(spec.shape, tenant, deleted)
        progress(f"{APP} {tenant} {name}: complete sweep, {len(deleted)} deleted")
    else:
        loaded = yield from _sweep(client, tenant, name, progress)
    state["changed_since"] = (started - CURSOR_OVERLAP).isoformat()
    state["last_rows"] = loaded


def _read_window(client: QuickBooksClient | None, tenant: str, name: str, progress: Progress,
                 window: Window) -> Iterator:
    """The entity's records last updated within the window (no dlt state read or written)."""
    if client is None:
        return
    where = (f"MetaData.LastUpdatedTime >= '{format_datetime(window.start)}' "
             f"AND MetaData.LastUpdatedTime < '{format_datetime(window.end)}'")
    yield from _sweep(client, tenant, name, progress, where=where)


def _sweep(client: QuickBooksClient, tenant: str, name: str, progress: Progress, *, where: str | None = None,
           seen: set[str] | None = None):
    spec = COLLECTIONS[name]
    rows = pages = 0
    if spec.name_list:
        where = " AND ".join(filter(None, ["Active IN (true, false)", where]))

    def decode(body: bytes) -> tuple[PageTables, int]:
        # runs on the fetching thread: Polars parses off the GIL while the next pages are in flight
        try:
            page = frame_to_tables(read_records(body, ("QueryResponse", spec.entity)), spec.shape, tenant, CURRENCIES)
        except pl.exceptions.PolarsError as exc:
            raise ValueError(str(exc)) from exc
        return page, page.rows + len(page.rejected)

    for page in client.iter_query_decoded(spec.entity, decode, where=where, concurrency=spec.sweep_concurrency):
        yield from emit(page, spec.shape, app=APP, tenant=tenant, collection=name)
        if seen is not None and table_name(spec.shape.table) in page.tables:
            seen.update(str(i) for i in page.tables[table_name(spec.shape.table)].column("id").to_pylist())
        rows += page.rows
        pages += 1
        if pages % 10 == 0:
            progress(f"{APP} {tenant} {name}: {pages} pages, {rows} rows")
    progress(f"{APP} {tenant} {name}: {rows} rows in {pages} pages")
    return rows


def _loaded_ids(table: str, tenant: str) -> set[str]:
    """The ids of a table already in the warehouse for this tenant (none on a first run)."""
    try:
        with dlt.current.pipeline().sql_client() as sql:
            rows = sql.execute_sql(f"select id from {sql.make_qualified_table_name(table)} where tenant = %s", tenant)
    except DatabaseUndefinedRelation:
        return set()
    return {str(row[0]) for row in rows or ()}


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dlt.source(name=APP, max_table_nesting=0)
def quickbooks_source(client: QuickBooksClient | None = None, tenant: str = "", progress: Progress | None = None,
                      full: bool = False, window: Window | None = None):
    """One connection's QuickBooks company. Called without a client it only describes the resources;
    `full` sweeps instead of CDC (the nightly complete sweep); `window` reads only what changed in it."""
    report = progress or (lambda message: log.info(message))
    if window is not None:
        for name, spec in COLLECTIONS.items():
            if spec.cdc:
                yield dlt.resource(_read_window(client, tenant, name, report, window), name=name,
                                   **resource_hints(spec.shape))
        return
    for name, spec in COLLECTIONS.items():
        yield dlt.resource(
            _read_collection(client, tenant, name, report, full), name=name, **resource_hints(spec.shape)
        )
