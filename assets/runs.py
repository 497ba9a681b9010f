"""ops.sync_runs: one row per extraction run of a connection, success or failure, written into the warehouse
so that the SQL user sees the sync history next to the data (Dagster keeps its own run history in DAGSTER_HOME;
this is the part an analyst queries). The error text is our typed errors' message, which never holds a secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from assets.warehouse import connect

SYNC_RUNS_TABLE = "ops.sync_runs"
SYNC_RUNS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(), "tenant": pl.String(), "app": pl.String(), "connection": pl.String(),
    "started_at": pl.Datetime("us", "UTC"), "finished_at": pl.Datetime("us", "UTC"),
    "status": pl.String(),  # success | failed
    "rows_loaded": pl.Int64(), "tables": pl.String(),  # JSON: table -> rows loaded by this run
    "error": pl.String(),
    # a window re-read (assets/extract/window.py): the window [start, end) it re-read; null for other runs
    "window_start": pl.Datetime("us", "UTC"), "window_end": pl.Datetime("us", "UTC"),
}
_DDL = ("create table if not exists ops.sync_runs (run_id varchar, tenant varchar, app varchar, connection varchar, "
        "started_at timestamptz, finished_at timestamptz, status varchar, rows_loaded bigint, tables varchar, "
        "error varchar)")


def rows_loaded(pipeline: Any) -> dict[str, int]:
    """Rows per table the pipeline's last run normalised (dlt's own trace); empty when it did not get so far."""
    trace = getattr(pipeline, "last_trace", None)
    info = getattr(trace, "last_normalize_info", None) if trace is not None else None
    counts = getattr(info, "row_counts", None) or {}
    return {table: int(n) for table, n in sorted(counts.items()) if not table.startswith("_dlt")}


@contextlib.contextmanager
def recorded_sync(warehouse: Path, pipeline: Any, *, run_id: str, tenant: str, app: str,
                  window: tuple[datetime, datetime] | None = None) -> Iterator[None]:
    """The block is one sync of a connection by `pipeline`: recorded as success with the rows it loaded, or as
    failed with the error, which is then raised again."""
    started = datetime.now(UTC)
    try:
        yield
    except Exception as exc:
        record_sync_run(warehouse, run_id=run_id, tenant=tenant, app=app, started_at=started, status="failed",
                        tables=rows_loaded(pipeline), error=f"{type(exc).__name__}: {exc}"[:2000], window=window)
        raise
    record_sync_run(warehouse, run_id=run_id, tenant=tenant, app=app, started_at=started, status="success",
                    tables=rows_loaded(pipeline), window=window)


def record_sync_run(warehouse: Path, *, run_id: str, tenant: str, app: str, started_at: datetime,
                    status: str, tables: dict[str, int], error: str | None = None,
                    window: tuple[datetime, datetime] | None = None) -> None:
    row = (run_id, tenant, app, f"{tenant}.{app}", started_at, datetime.now(UTC), status, sum(tables.values()),
           orjson.dumps(tables).decode(), error, *(window or (None, None)))
    with connect(warehouse) as con:
        con.execute("create schema if not exists ops")
        con.execute(_DDL)
        # the window columns came later: a warehouse made before them gains them here
        con.execute("alter table ops.sync_runs add column if not exists window_start timestamptz")
        con.execute("alter table ops.sync_runs add column if not exists window_end timestamptz")
        con.execute("insert into ops.sync_runs (run_id, tenant, app, connection, started_at, finished_at, status, "
                    "rows_loaded, tables, error, window_start, window_end) "
                    "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(row))
