"""What every app's dlt source shares: table hints, the rejected-records table, tombstones, progress, and
the per-connection dlt pipeline."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dlt
import pyarrow as pa
import pycountry

from assets.extract.flatten import PageTables, TableShape, column_name, table_name

REJECTED_TABLE = "rejected_records"
DELETED_COLUMN = "_deleted"
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)

Progress = Callable[[str], None]
log = logging.getLogger("ledgerlink.extract")


def resource_hints(shape: TableShape) -> dict:
    """merge on (tenant, id); a row with _deleted = true is removed (the app's own delete signal)."""
    return {
        "primary_key": ["tenant", column_name(shape.id_field)],
        "write_disposition": {"disposition": "merge", "strategy": "delete-insert"},
        "columns": {DELETED_COLUMN: {"data_type": "bool", "hard_delete": True, "nullable": True}},
    }


def child_hints(shape: TableShape, child: str) -> dict:
    """A child table is replaced per parent: its rows are deleted by (tenant, parent id) and inserted anew."""
    return dlt.mark.make_hints(
        table_name=shape.child_table(child),
        primary_key=["tenant", shape.parent_key, "_index"],
        merge_key=["tenant", shape.parent_key],
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        columns={DELETED_COLUMN: {"data_type": "bool", "hard_delete": True, "nullable": True}},
    )


def emit(page: PageTables, shape: TableShape, *, app: str, tenant: str, collection: str) -> Iterator:
    """Yields a page's tables to dlt (children to their own tables) and its rejected records."""
    for name, table in page.tables.items():
        if name == table_name(shape.table):
            yield table
        else:
            child = next(c for c in shape.children if shape.child_table(c) == name)
            yield dlt.mark.with_hints(table, child_hints(shape, child), create_table_variant=True)
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
    return dlt.mark.with_hints(
        pa.Table.from_pylist(rows),
        dlt.mark.make_hints(table_name=REJECTED_TABLE, write_disposition="append"),
        create_table_variant=True,
    )


def tombstones(shape: TableShape, tenant: str, ids: list[str]) -> Iterator:
    """Rows that delete a record and its child rows (only ever from the app's own delete signal)."""
    if not ids:
        return
    yield pa.table({"tenant": [tenant] * len(ids), column_name(shape.id_field): ids, DELETED_COLUMN: [True] * len(ids)})
    for child in shape.children:
        rows = pa.table({"tenant": [tenant] * len(ids), shape.parent_key: ids, "_index": [-1] * len(ids),
                         DELETED_COLUMN: [True] * len(ids)})
        yield dlt.mark.with_hints(rows, child_hints(shape, child), create_table_variant=True)


def make_pipeline(app: str, tenant: str, warehouse: Path, state_dir: Path, *, dev_mode: bool = False) -> dlt.Pipeline:
    """One dlt pipeline per connection: its own incremental state, the shared raw_<app> dataset."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    # Resources run one after another, in order: Sequence's detail resources read what their parents found.
    os.environ["EXTRACT__NEXT_ITEM_MODE"] = "fifo"
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=f"{app}__{tenant.replace('-', '_')}",
        destination=dlt.destinations.duckdb(str(warehouse)),
        dataset_name=f"raw_{app}",
        pipelines_dir=str(state_dir / "dlt"),
        dev_mode=dev_mode,
    )
