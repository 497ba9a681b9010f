"""Xero -> raw_xero: a dlt source over XeroClient.

Paged collections (contacts, invoices, credit notes, payments) are read whole on the first run, then only what
changed: `If-Modified-Since` the server time (`DateTimeUTC`) of the previous run's first answer, less an
overlap; the cursor lives in dlt state and moves only when the load lands. Invoices and credit notes are the
sales side only (`Type=="ACCREC"` / `"ACCRECCREDIT"`); contacts and invoices are read with `includeArchived`.

Deletes follow Xero's own rules: documents are never removed but change state (DELETED drafts, VOIDED,
DELETED payments, ARCHIVED contacts), so they arrive as ordinary updates and stay as rows. Items are
hard-deleted in Xero: an item missing from a complete read of the (unpaged) list is deleted here. The
unpaged lists (items, accounts, tax rates, currencies, organisation) are read whole every run, and only
records whose fingerprint changed are loaded.

`/Date(ms+0000)/` values become UTC timestamps (TableShape.dotnet_dates); a record whose date does not read
goes to raw_xero.rejected_records with the field, like any other contract breach.

`full=True` (the nightly complete sweep) reads the paged collections whole (no If-Modified-Since) and loads
every record of the unpaged lists, fingerprint unchanged or not.
`window=` (a window re-read, assets/extract/window.py) reads the collections that carry UpdatedDateUTC (the paged
ones, items, accounts) with Xero's own filters, `If-Modified-Since: <start>` and `where UpdatedDateUTC <
DateTime(<end>)`, and leaves the cursors and fingerprints alone. Tax rates, currencies and the organisation have no
modification date (Xero accepts no If-Modified-Since there) and are read whole by every run anyway. Nothing is
deleted: a filtered read cannot tell a vanished item.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dlt
import orjson

from assets.extract.flatten import PageTables, RecordRules, Rejected, TableShape, frame_to_tables, records_frame
from assets.extract.loading import CURRENCIES, Progress, Window, emit, log, resource_hints, tombstones
from connectors.xero import XeroClient

APP = "xero"
PAGE_SIZE = 1000  # Xero's largest page: fewer calls against the 60/min limit
# Re-read a little before the cursor: a write that began before the previous read may commit after it.
CURSOR_OVERLAP = timedelta(minutes=5)
_DATE = re.compile(r"^/Date\(-?\d+([+-]\d{4})?\)/$")
_MONEY = ("SubTotal", "TotalTax", "Total", "AmountDue", "AmountPaid", "AmountCredited", "CurrencyRate")


@dataclass(frozen=True)
class Collection:
    api: str  # the API path, e.g. "CreditNotes"
    shape: TableShape
    paged: bool = True
    where: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    dates: tuple[str, ...] = ("UpdatedDateUTC",)  # top-level fields that must read as .NET dates when present
    vanish_deletes: bool = False  # Xero hard-deletes these: gone from a complete read = deleted


def _shape(table: str, id_field: str, *, children: tuple[str, ...] = (),
           rules: RecordRules | None = None) -> TableShape:
    return TableShape(table, id_field=id_field, children=children, dotnet_dates=True,
                      integers=frozenset({"FinancialYearEndDay", "FinancialYearEndMonth", "Day"}),
                      rules=rules or RecordRules(required=(id_field,)))


COLLECTIONS: dict[str, Collection] = {
    "contacts": Collection("Contacts", _shape(
        "contacts", "ContactID", children=("Addresses", "Phones", "ContactPersons"),
        rules=RecordRules(required=("ContactID", "Name"), currency=("DefaultCurrency",))),
        params={"includeArchived": "true"}),
    "invoices": Collection("Invoices", _shape("invoices", "InvoiceID", children=("LineItems",), rules=RecordRules(
        required=("InvoiceID", "Type", "Status"), numeric=_MONEY, currency=("CurrencyCode",))),
        where='Type=="ACCREC"', params={"includeArchived": "true"},
        dates=("Date", "DueDate", "FullyPaidOnDate", "UpdatedDateUTC")),
    "credit_notes": Collection("CreditNotes", _shape(
        "credit_notes", "CreditNoteID", children=("LineItems", "Allocations"),
        rules=RecordRules(required=("CreditNoteID", "Type", "Status"), numeric=(*_MONEY, "RemainingCredit"),
                          currency=("CurrencyCode",))),
        where='Type=="ACCRECCREDIT"', dates=("Date", "UpdatedDateUTC")),
    "payments": Collection("Payments", _shape("payments", "PaymentID", rules=RecordRules(
        required=("PaymentID",), numeric=("Amount", "BankAmount", "CurrencyRate"))), dates=("Date", "UpdatedDateUTC")),
    "items": Collection("Items", _shape("items", "ItemID", rules=RecordRules(required=("ItemID", "Code"))),
                        paged=False, vanish_deletes=True),
    "accounts": Collection("Accounts", _shape("accounts", "AccountID"), paged=False),
    "tax_rates": Collection("TaxRates", _shape("tax_rates", "TaxType", children=("TaxComponents",)), paged=False,
                            dates=()),
    "currencies": Collection("Currencies", _shape("currencies", "Code", rules=RecordRules(
        required=("Code",), currency=("Code",))), paged=False, dates=()),
    "organisation": Collection("Organisation", _shape("organisation", "OrganisationID", rules=RecordRules(
        required=("OrganisationID",), currency=("BaseCurrency",))), paged=False, dates=("CreatedDateUTC",)),
}


def _fingerprint(record: dict) -> str:
    return hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def _page_tables(records: list[dict], spec: Collection, tenant: str) -> PageTables:
    """Records -> tables; records whose dates do not read as `/Date(…)/` are rejected first (the flattener
    would otherwise turn them into nulls)."""
    good, rejected = [], []
    for record in records:
        bad = next((f for f in spec.dates if record.get(f) is not None and not _DATE.match(str(record[f]))), None)
        if bad is None:
            good.append(record)
            continue
        record_id = record.get(spec.shape.id_field)
        rejected.append(Rejected(str(record_id) if record_id is not None else None, bad,
                                 f"{bad} is not a Xero date (/Date(ms+0000)/)",
                                 orjson.dumps(record).decode()))
    page = frame_to_tables(records_frame(good), spec.shape, tenant, CURRENCIES)
    page.rejected[:0] = rejected
    # a page whose records were all rejected leaves empty tables whose dates were never recognised (text):
    # they would fix the column type in dlt's schema
    page.tables = {name: table for name, table in page.tables.items() if table.num_rows}
    return page


def _read_paged(client: XeroClient, tenant: str, name: str, progress: Progress, full: bool = False) -> Iterator:
    spec = COLLECTIONS[name]
    state = dlt.current.resource_state()
    started = datetime.now(UTC)
    since = datetime.fromisoformat(state["modified_since"]) if state.get("modified_since") and not full else None
    server_time: datetime | None = None
    rows = pages = 0
    for answer in client.iter_pages(spec.api, where=spec.where, modified_since=since, page_size=PAGE_SIZE,
                                    params=spec.params):
        server_time = server_time or answer.server_time
        page = _page_tables(answer.records, spec, tenant)
        yield from emit(page, spec.shape, app=APP, tenant=tenant, collection=name)
        rows += page.rows
        pages += 1
    # reached only when the read completed; the server's clock, so our clock's skew cannot lose changes
    state["modified_since"] = ((server_time or started) - CURSOR_OVERLAP).isoformat()
    state["last_rows"] = rows
    how = f"modified since {since:%Y-%m-%d %H:%M:%S}" if since else "complete read"
    progress(f"{APP} {tenant} {name}: {rows} rows in {pages} pages ({how})")


def _read_whole(client: XeroClient, tenant: str, name: str, progress: Progress, full: bool = False) -> Iterator:
    spec = COLLECTIONS[name]
    state = dlt.current.resource_state()
    known: dict[str, str] = state.setdefault("fingerprints", {})
    records = [r for answer in client.iter_pages(spec.api, params=spec.params) for r in answer.records]
    # The list came back whole (one answer, no error): anything we hold that it lacks is gone from Xero.
    seen: set[str] = set()
    changed = []
    for record in records:
        key = record.get(spec.shape.id_field)
        print_ = _fingerprint(record)
        if key is None:
            changed.append(record)  # rejected by the rules below, with its reason
            continue
        seen.add(str(key))
        if full or known.get(str(key)) != print_:
            changed.append(record)
            known[str(key)] = print_
    page = _page_tables(changed, spec, tenant)
    yield from emit(page, spec.shape, app=APP, tenant=tenant, collection=name)
    gone = sorted(set(known) - seen)
    for key in gone:
        del known[key]
    if spec.vanish_deletes and gone:
        yield from tombstones(spec.shape, tenant, gone)
    state["last_rows"] = page.rows
    progress(f"{APP} {tenant} {name}: {len(records)} read, {page.rows} changed"
             + (f", {len(gone)} deleted" if spec.vanish_deletes and gone else ""))


# the collections a window re-read covers: those with UpdatedDateUTC, which Xero filters on
WINDOWED = ("contacts", "invoices", "credit_notes", "payments", "items", "accounts")


def _xero_datetime(moment: datetime) -> str:
    at = moment.astimezone(UTC)
    return f"DateTime({at.year}, {at.month:02d}, {at.day:02d}, {at.hour:02d}, {at.minute:02d}, {at.second:02d})"


def _read_window(client: XeroClient | None, tenant: str, name: str, progress: Progress, window: Window) -> Iterator:
    """The collection's records updated within the window (no dlt state read or written)."""
    if client is None:
        return
    spec = COLLECTIONS[name]
    # If-Modified-Since narrows the read on Xero's side ("later than": a second early keeps a change made at the
    # start); `where` states both bounds exactly
    where = " AND ".join(filter(None, [spec.where, f"UpdatedDateUTC >= {_xero_datetime(window.start)}",
                                       f"UpdatedDateUTC < {_xero_datetime(window.end)}"]))
    rows = pages = 0
    for answer in client.iter_pages(spec.api, where=where, modified_since=window.start - timedelta(seconds=1),
                                    page_size=PAGE_SIZE,
                                    params=spec.params):
        page = _page_tables(answer.records, spec, tenant)
        yield from emit(page, spec.shape, app=APP, tenant=tenant, collection=name)
        rows += page.rows
        pages += 1
    progress(f"{APP} {tenant} {name}: {rows} rows in {pages} pages (window {window})")


def _read_collection(client: XeroClient | None, tenant: str, name: str, progress: Progress,
                     full: bool = False) -> Iterator:
    if client is None:  # the template source that only describes the assets
        return
    reader = _read_paged if COLLECTIONS[name].paged else _read_whole
    yield from reader(client, tenant, name, progress, full)


@dlt.source(name=APP, max_table_nesting=0)
def xero_source(client: XeroClient | None = None, tenant: str = "", progress: Progress | None = None,
                full: bool = False, window: Window | None = None):
    """One connection's Xero organisation. Called without a client it only describes the resources;
    `full` reads everything whole (no If-Modified-Since); `window` reads only what changed in it."""
    report = progress or (lambda message: log.info(message))
    if window is not None:
        for name in WINDOWED:
            yield dlt.resource(_read_window(client, tenant, name, report, window), name=name,
                               **resource_hints(COLLECTIONS[name].shape))
        return
    for name, spec in COLLECTIONS.items():
        yield dlt.resource(_read_collection(client, tenant, name, report, full), name=name, **resource_hints(spec.shape))
