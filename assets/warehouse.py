"""The one place that reads and writes the DuckDB warehouse from Polars.

DuckDB allows one writing process per file: writers open the file only for the duration of a write, and every
asset that writes takes the `warehouse` Dagster pool (limit 1). Polars cannot write into a DuckDB connection
(STACK.md), so DuckDB reads the frame through Arrow instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb
import polars as pl

WAREHOUSE_POOL = "warehouse"


@contextlib.contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    if read_only and not Path(path).exists():
        raise FileNotFoundError(f"warehouse {path} does not exist; run the extraction first (make demo)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    # instants come back as UTC whatever the machine's zone (the unified model is UTC throughout)
    con.execute("set TimeZone = 'UTC'")
    try:
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    schema, table = qualified.split(".")
    return bool(con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchall()[0][0])


def read_table(con: duckdb.DuckDBPyConnection, qualified: str, *, tenants: list[str] | None = None) -> pl.DataFrame:
    """A warehouse table as a Polars frame (empty frame if it does not exist yet), optionally for some tenants."""
    if not table_exists(con, qualified):
        return pl.DataFrame()
    sql = f"select * from {qualified}"
    if tenants is not None:
        sql += " where tenant in (select unnest(?))"
        return con.sql(sql, params=[tenants]).pl()
    return con.sql(sql).pl()


def replace_table(con: duckdb.DuckDBPyConnection, qualified: str, frame: pl.DataFrame) -> int:
    """Replaces a table whole with the frame's rows and types; returns the row count."""
    schema, _ = qualified.split(".")
    con.execute(f"create schema if not exists {schema}")
    arrow = frame.to_arrow()
    con.register("_ledgerlink_frame", arrow)
    try:
        con.execute(f"create or replace table {qualified} as select * from _ledgerlink_frame")
    finally:
        con.unregister("_ledgerlink_frame")
    return frame.height


def replace_tables(path: Path, frames: Mapping[str, pl.DataFrame]) -> dict[str, int]:
    """Replaces several tables in one transaction: readers see all of them change, or none."""
    with connect(path) as con:
        con.execute("begin")
        try:
            counts = {name: replace_table(con, name, frame) for name, frame in frames.items()}
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    return counts
