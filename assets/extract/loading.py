"""What every app's dlt source shares: table hints, the rejected-records table, tombstones, progress, and
the per-connection dlt pipeline."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dlt
import polars as pl
import pyarrow as pa
import pycountry
from dlt.common.configuration import configspec
from dlt.destinations.impl.duckdb.configuration import (
    DuckDbClientConfiguration,
    DuckDbConnectionPool,
    DuckDbCredentials,
)

from assets.extract.flatten import PageTables, TableShape, column_name, table_name
from assets.warehouse import wait_for_warehouse

REJECTED_TABLE = "rejected_records"
DELETED_COLUMN = "_deleted"
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)

Progress = Callable[[str], None]
log = logging.getLogger("ledgerlink.extract")


MERGE = {"disposition": "merge", "strategy": "delete-insert"}
_DELETED = {DELETED_COLUMN: {"data_type": "bool", "hard_delete": True, "nullable": True}}


def resource_hints(shape: TableShape) -> dict:
    """The resource itself carries only its table and disposition: dlt seeds every table variant from the
    resource's hints, so keys and columns are declared per table (`table_hints`, `child_hints`) instead."""
    return {"table_name": table_name(shape.table), "write_disposition": MERGE}


def table_hints(shape: TableShape, merge_key: str | None = None):
    """merge on (tenant, id); a row with _deleted = true is removed (the app's own delete signal). With a
    merge_key, the rows of each incoming key are replaced whole (a document's lines)."""
    return dlt.mark.make_hints(
        table_name=table_name(shape.table),
        primary_key=["tenant", column_name(shape.id_field)],
        merge_key=["tenant", merge_key] if merge_key else None,
        write_disposition=MERGE,
        columns=_DELETED,
    )


def child_hints(shape: TableShape, child: str):
    """A child table is replaced per parent: its rows are deleted by (tenant, parent id) and inserted anew."""
    return dlt.mark.make_hints(
        table_name=shape.child_table(child),
        primary_key=["tenant", shape.parent_key, "_index"],
        merge_key=["tenant", shape.parent_key],
        write_disposition=MERGE,
        columns=_DELETED,
    )


def _mark(item, hints):
    return dlt.mark.with_hints(item, hints, create_table_variant=True)


def emit(page: PageTables, shape: TableShape, *, app: str, tenant: str, collection: str,
         merge_key: str | None = None) -> Iterator:
    """Yields a page's tables to dlt (children to their own tables) and its rejected records."""
    for name, table in page.tables.items():
        if name == table_name(shape.table):
            yield _mark(table, table_hints(shape, merge_key))
        else:
            child = next(c for c in shape.children if shape.child_table(c) == name)
            yield _mark(table, child_hints(shape, child))
    if page.rejected:
        yield rejected_rows(page, app=app, tenant=tenant, collection=collection)


def rejected_rows(page: PageTables, *, app: str, tenant: str, collection: str):
    now = datetime.now(UTC)
    rows = []
    for bad in page.rejected:
        message = f"{app} {tenant} {collection} {bad.record_id or '(no id)'}: {bad.reason} (field {bad.field})"
        log.warning("rejected record: %s", message)
        rows.append({"tenant": tenant, "app": app, "collection": collection, "record_id": bad.record_id,
                     "field": bad.field, "reason": bad.reason, "record": bad.record_json, "rejected_at": now})
    table = pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA)
    return _mark(table, dlt.mark.make_hints(table_name=REJECTED_TABLE, write_disposition="append"))


REJECTED_SCHEMA = pa.schema([
    ("tenant", pa.string()), ("app", pa.string()), ("collection", pa.string()), ("record_id", pa.string()),
    ("field", pa.string()), ("reason", pa.string()), ("record", pa.string()),
    ("rejected_at", pa.timestamp("us", tz="UTC")),
])


def tombstones(shape: TableShape, tenant: str, ids: list[str]) -> Iterator:
    """Rows that delete a record and its child rows (only ever from the app's own delete signal). Built with
    Polars so their Arrow types match the pages' (dlt writes both into one file)."""
    if not ids:
        return
    yield _mark(pl.DataFrame({"tenant": [tenant] * len(ids), column_name(shape.id_field): ids,
                              DELETED_COLUMN: [True] * len(ids)}).to_arrow(), table_hints(shape))
    for child in shape.children:
        rows = pl.DataFrame({"tenant": [tenant] * len(ids), shape.parent_key: ids, "_index": [-1] * len(ids),
                             DELETED_COLUMN: [True] * len(ids)})
        yield _mark(rows.to_arrow(), child_hints(shape, child))


class _WaitingPool(DuckDbConnectionPool):
    """Every dlt sql client (state sync, Attio's id read, the load) opens the file through this pool: when another
    process holds the warehouse (e.g. a `ledgerlink sql` reader) it waits for the lock like every other writer
    (assets/warehouse.py wait_for_warehouse) instead of failing the load. A failed open changes no pool state, so
    retrying the whole borrow is safe."""

    def borrow_conn(self, *args, **kwargs):
        return wait_for_warehouse(lambda: super(_WaitingPool, self).borrow_conn(*args, **kwargs),
                                  self.credentials.database, read_only=bool(self.credentials.read_only))


@configspec(init=False)
class _WaitingCredentials(DuckDbCredentials):
    def on_resolved(self) -> None:
        super().on_resolved()
        self.conn_pool = _WaitingPool(self)


@configspec(init=False)
class _WaitingDuckDbConfiguration(DuckDbClientConfiguration):
    credentials: _WaitingCredentials = None  # type: ignore[assignment]


class warehouse_destination(dlt.destinations.duckdb):  # noqa: N801 (dlt names destination factories so)
    """dlt's duckdb destination whose connections wait for the warehouse's lock. It keeps the stock destination's
    type, so dlt state, config sections and dagster-dlt see plain `duckdb`."""

    spec = _WaitingDuckDbConfiguration

    @property
    def destination_type(self) -> str:
        return "dlt.destinations.duckdb"


@dataclass(frozen=True)
class Window:
    """A date window of a window re-read (assets/extract/window.py): records the app changed in [start, end), both
    timezone-aware. A source given one reads only that window, with the app's own filter where it has one, and
    neither reads nor writes its incremental cursors."""

    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.tzinfo is None or self.end.tzinfo is None or not self.start < self.end:
            raise ValueError(f"a window needs timezone-aware start < end, not {self.start!r}, {self.end!r}")

    def holds(self, moment: datetime | None) -> bool:
        return moment is not None and self.start <= moment < self.end

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def make_pipeline(app: str, tenant: str, warehouse: Path, state_dir: Path, *, dev_mode: bool = False,
                  purpose: str | None = None) -> dlt.Pipeline:
    """One dlt pipeline per connection: its own incremental state, the shared raw_<app> dataset. `purpose`
    (e.g. "window") names a second pipeline of the connection with a state of its own, so its runs can never
    move the incremental pipeline's cursors."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    # Resources run one after another, in order: Sequence's detail resources read what their parents found.
    os.environ["EXTRACT__NEXT_ITEM_MODE"] = "fifo"
    # Pages differ in which optional fields they carry: let dlt merge their Arrow schemas losslessly.
    os.environ["DATA_WRITER__ARROW_CONCAT_PROMOTE_OPTIONS"] = "default"
    # merge stages rows in raw_<app>_staging; empty it after each load so the data lives in one place
    os.environ["LOAD__TRUNCATE_STAGING_DATASET"] = "true"
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=f"{app}__{tenant.replace('-', '_')}" + (f"__{purpose}" if purpose else ""),
        destination=warehouse_destination(str(warehouse)),
        dataset_name=f"raw_{app}",
        pipelines_dir=str(state_dir / "dlt"),
        dev_mode=dev_mode,
    )
