"""Sequence -> raw_sequence: a dlt source over SequenceClient.

Sequence has no "changed since" filter, so every run sweeps the lists; only what changed is loaded:
invoices and credit notes by `updatedAt` (their lines, groups and payment settings are re-read only for
those), customers and tax categories (no `updatedAt`) by a fingerprint of the record kept in dlt state.
Deletes come only from Sequence's own signals: `VOIDED` status and `archivedAt` arrive as ordinary updates.
`full=True` (the nightly complete sweep) loads every record swept, changed or not (the sweep is the same).
`window=` (a window re-read, assets/extract/window.py): Sequence has no server-side modification filter, so the
lists of invoices, credit notes and products are swept and the records whose `updatedAt` lies in the window are
kept here (client side), with the details of those documents; customers and tax categories carry no `updatedAt`
and are left out (the nightly complete sweep reloads them). No dlt state is read or written, nothing is deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dlt
import orjson
import polars as pl
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from assets.extract.flatten import RecordRules, TableShape, column_name, frame_to_tables, records_frame
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
from connectors.sequence import SequenceClient

APP = "sequence"
CURSOR_OVERLAP = timedelta(minutes=5)
DETAIL_WORKERS = 4

_MONEY = ("netTotal", "totalTax", "grossTotal")
_LINE_RULES = RecordRules(required=("id",), numeric=("quantity", "rate", "taxRate", *_MONEY))


@dataclass(frozen=True)
class Collection:
    shape: TableShape
    changed_by: str  # "updatedAt" (the app's own timestamp) or "fingerprint" (the record has none)


COLLECTIONS: dict[str, Collection] = {
    "customers": Collection(TableShape("customers", children=("contacts", "integrationIds"),
                                       rules=RecordRules(required=("id", "legalName"))), "fingerprint"),
    "invoices": Collection(TableShape("invoices", rules=RecordRules(
        required=("id", "customerId", "currency", "status"), numeric=(*_MONEY, "balance"), currency=("currency",),
        dates=("dueDate", "issueDate", "accountingDate"))), "updatedAt"),
    "credit-notes": Collection(TableShape("credit_notes", rules=RecordRules(
        required=("id", "customerId", "currency", "status"), numeric=_MONEY, currency=("currency",))), "updatedAt"),
    "products": Collection(TableShape("products", rules=RecordRules(required=("id", "name"))), "updatedAt"),
    "tax-categories": Collection(TableShape("tax_categories", rules=RecordRules(required=("id",))), "fingerprint"),
}
# Read per parent document, only for documents that changed; each row carries its document's id natively.
DETAILS: dict[str, tuple[str, str, TableShape]] = {
    # name: (parent collection, parent id field in the row, shape)
    "line-items": ("invoices", "invoiceId", TableShape("line_items", rules=_LINE_RULES)),
    "line-item-groups": ("invoices", "invoiceId", TableShape("line_item_groups", rules=RecordRules(
        required=("id",), numeric=_MONEY))),
    "invoice-payment-settings": ("invoices", "invoiceId", TableShape("invoice_payment_settings",
                                                                      rules=RecordRules(required=("id",)))),
    "credit-note-line-items": ("credit-notes", "creditNoteId", TableShape("credit_note_line_items", rules=_LINE_RULES)),
    "credit-note-line-item-groups": ("credit-notes", "creditNoteId", TableShape(
        "credit_note_line_item_groups", rules=RecordRules(required=("id",), numeric=_MONEY))),
}


def _fingerprint(record: dict) -> str:
    return hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def _changed(pages: Iterable[list[dict]], collection: Collection, state: dict,
             seen: set[str] | None = None, full: bool = False) -> Iterator[list[dict]]:
    """Keeps the records that changed since the last run, by updatedAt or by fingerprint; every id swept is
    added to `seen`."""
    if seen is not None:
        pages = _noting_ids(pages, seen)
    if collection.changed_by == "updatedAt":
        since = None if full else state.get("updated_since")
        for page in pages:
            yield page if since is None else [r for r in page if str(r.get("updatedAt") or "") >= since]
        return
    seen: dict[str, str] = state.setdefault("fingerprints", {})
    for page in pages:
        fresh = []
        for record in page:
            key, print_ = str(record.get("id")), _fingerprint(record)
            if full or seen.get(key) != print_:
                fresh.append(record)
                seen[key] = print_
        yield fresh


def _noting_ids(pages: Iterable[list[dict]], seen: set[str]) -> Iterator[list[dict]]:
    for page in pages:
        seen.update(str(r["id"]) for r in page if r.get("id"))
        yield page


# Documents Sequence deletes outright (drafts): they can only be seen gone by a sweep that ran to its end.
SWEPT_FOR_DELETES = ("invoices", "credit-notes")


class SequenceReader:
    """Sweeps one Sequence account, remembering which documents changed so their details can be read."""

    def __init__(self, client: SequenceClient | None, tenant: str, progress: Progress, full: bool = False,
                 window: Window | None = None):
        self.client = client
        self.window = window
        self.full = full
        self.tenant = tenant
        self.progress = progress
        self.changed_ids: dict[str, list[str]] = {"invoices": [], "credit-notes": []}
        self.deleted_ids: dict[str, list[str]] = {"invoices": [], "credit-notes": []}

    def _pages(self, name: str) -> Iterable[list[dict]]:
        client = self.client
        return {
            "customers": client.iter_customers,
            "invoices": client.iter_invoices,
            "credit-notes": client.iter_credit_notes,
            "products": client.iter_products,
            "tax-categories": client.iter_tax_categories,
        }[name]()

    def collection(self, name: str) -> Iterator:
        if self.client is None:
            return
        spec = COLLECTIONS[name]
        if self.window is not None:
            yield from self._window(name, spec)
            return
        state = dlt.current.resource_state()
        started = datetime.now(UTC)
        rows = 0
        swept: set[str] = set()
        for records in _changed(self._pages(name), spec, state, swept, self.full):
            if not records:
                continue
            rows += yield from self._load(name, spec, records)
        if name in SWEPT_FOR_DELETES:
            # reached only when every page was read: a complete sweep, so an id we hold and it lacks was deleted
            deleted = sorted(_loaded_ids(spec.shape.table, self.tenant) - swept)
            self.deleted_ids[name] = deleted
            yield from tombstones(spec.shape, self.tenant, deleted)
        if spec.changed_by == "updatedAt":
            state["updated_since"] = (started - CURSOR_OVERLAP).strftime("%Y-%m-%dT%H:%M:%S")
        self.progress(f"{APP} {self.tenant} {name}: {rows} changed rows"
                      + (f", {len(self.deleted_ids[name])} deleted" if self.deleted_ids.get(name) else ""))

    def _load(self, name: str, spec: Collection, records: list[dict]) -> Iterator:
        """One page of records to dlt (their ids kept where details follow); returns its row count."""
        if name in self.changed_ids:
            self.changed_ids[name].extend(str(r["id"]) for r in records if r.get("id"))
        page = frame_to_tables(records_frame(records), spec.shape, self.tenant, CURRENCIES)
        yield from emit(page, spec.shape, app=APP, tenant=self.tenant, collection=name)
        return page.rows

    def _window(self, name: str, spec: Collection) -> Iterator:
        """The swept records whose updatedAt lies in the window (no dlt state read or written, no deletes)."""
        rows = swept = 0
        for records in self._pages(name):
            swept += len(records)
            records = [r for r in records if self.window.holds(_instant(r.get("updatedAt")))]
            if not records:
                continue
            rows += yield from self._load(name, spec, records)
        self.progress(f"{APP} {self.tenant} {name}: {rows} rows of {swept} swept (window {self.window})")

    def details(self, name: str) -> Iterator:
        if self.client is None:
            return
        parent, parent_field, shape = DETAILS[name]
        ids = self.changed_ids[parent]
        read = self._detail_reader(name)
        rows = 0
        with ThreadPoolExecutor(max_workers=DETAIL_WORKERS, thread_name_prefix=f"sequence-{name}") as pool:
            for start in range(0, len(ids), 100):
                chunk = ids[start:start + 100]
                records = [r for batch in pool.map(read, chunk) for r in batch]
                if records:
                    page = frame_to_tables(records_frame(records), shape, self.tenant, CURRENCIES)
                    # a changed document's details replace its earlier ones whole (a removed line goes too)
                    yield from emit(page, shape, app=APP, tenant=self.tenant, collection=name,
                                    merge_key=column_name(parent_field))
                    rows += page.rows
        gone = self.deleted_ids[parent]
        if gone:  # the details of a deleted document go with it
            parent_column = column_name(parent_field)
            yield _detail_tombstones(shape, parent_column, self.tenant, gone)
        self.progress(f"{APP} {self.tenant} {name}: {rows} rows for {len(ids)} changed {parent}")

    def _detail_reader(self, name: str) -> Callable[[str], list[dict]]:
        client = self.client

        def payment_settings(invoice_id: str) -> list[dict]:
            found = client.get_invoice_payment_settings(invoice_id)
            return [found] if found else []

        return {
            "line-items": client.list_invoice_lines,
            "line-item-groups": client.list_invoice_groups,
            "invoice-payment-settings": payment_settings,
            "credit-note-line-items": client.list_credit_note_lines,
            "credit-note-line-item-groups": client.list_credit_note_groups,
        }[name]


def _instant(value: object) -> datetime | None:
    """Sequence's ISO-8601 `updatedAt` (`Z` or an offset) as an aware instant; None when absent or unreadable (such a
    record is in no window)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _loaded_ids(table: str, tenant: str) -> set[str]:
    """The ids of a table already in the warehouse for this tenant (none on a first run)."""
    try:
        with dlt.current.pipeline().sql_client() as client:
            rows = client.execute_sql(f"select id from {client.make_qualified_table_name(table)} where tenant = %s",
                                      tenant)
    except DatabaseUndefinedRelation:
        return set()
    return {str(row[0]) for row in rows or ()}


def _detail_tombstones(shape: TableShape, parent_column: str, tenant: str, parent_ids: list[str]):
    """Rows that remove every detail row of the given documents: delete-insert on (tenant, parent id)
    deletes them all, and a hard-deleted row is never inserted."""
    frame = pl.DataFrame({"tenant": [tenant] * len(parent_ids), parent_column: parent_ids,
                          "id": [f"deleted:{p}" for p in parent_ids], DELETED_COLUMN: [True] * len(parent_ids)})
    return dlt.mark.with_hints(frame.to_arrow(), table_hints(shape, parent_column), create_table_variant=True)


@dlt.source(name=APP, max_table_nesting=0)
def sequence_source(client: SequenceClient | None = None, tenant: str = "", progress: Progress | None = None,
                    full: bool = False, window: Window | None = None):
    """One connection's Sequence account. Called without a client it only describes the resources;
    `full` loads every record swept, not only the changed ones; `window` only those updated in it."""
    reader = SequenceReader(client, tenant, progress or (lambda message: log.info(message)), full, window)
    for name, spec in COLLECTIONS.items():
        if window is not None and spec.changed_by != "updatedAt":
            continue  # no modification date: no way to tell whether it changed in the window
        yield dlt.resource(reader.collection(name), name=name, **resource_hints(spec.shape))
    # Details read the ids their parents found: make_pipeline sets dlt to evaluate resources in order (fifo).
    for name, (_, _, shape) in DETAILS.items():
        yield dlt.resource(reader.details(name), name=name, **resource_hints(shape))
