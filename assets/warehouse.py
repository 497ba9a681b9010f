"""The one place that reads and writes the DuckDB warehouse from Polars.

DuckDB allows one writing process per file: writers open the file only for the duration of a write, and every
asset that writes takes the `warehouse` Dagster pool (limit 1). Polars cannot write into a DuckDB connection
(STACK.md), so DuckDB reads the frame through Arrow instead.

Across processes DuckDB lets one process write a file or any number read it, never both, and a process that
finds the other kind holding the file's lock fails at once. So every open here waits for the lock (bounded:
`LEDGERLINK_WAREHOUSE_LOCK_WAIT` seconds, default 120) and, past the bound, raises WarehouseBusy naming the
process that holds it. dlt's loads wait the same way (assets/extract/loading.py), and `ledgerlink sql` holds
its read-only connection only for its query, waiting briefly for a writer (pipelines/cli.py).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import duckdb
import polars as pl
import tenacity

WAREHOUSE_POOL = "warehouse"
LOCK_WAIT_ENV = "LEDGERLINK_WAREHOUSE_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 120.0  # seconds: longer than any one load or table replace of the demo on a busy machine
_T = TypeVar("_T")


class WarehouseBusy(duckdb.IOException):
    """Another process held the warehouse's lock for longer than the wait allowed (a duckdb.Error, so every
    command that already turns DuckDB errors into one line does so for this too)."""


def is_lock_conflict(exc: BaseException) -> bool:
    """DuckDB's "Could not set lock on file ...: Conflicting lock is held in ... (PID n)" (an IOException)."""
    return isinstance(exc, duckdb.IOException) and not isinstance(exc, WarehouseBusy) \
        and "Could not set lock on file" in str(exc)


def lock_wait() -> float:
    return float(os.environ.get(LOCK_WAIT_ENV) or DEFAULT_LOCK_WAIT)


def lock_holder(exc: BaseException) -> str:
    """The process DuckDB names in a lock conflict, with its command line when this machine can tell it."""
    found = re.search(r"\(PID (\d+)\)", str(exc))
    if not found:
        return "another process"
    try:
        command = Path(f"/proc/{found[1]}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    return f"process {found[1]}" + (f" ({command.strip()[:160]})" if command.strip() else "")


def wait_for_warehouse(open_: Callable[[], _T], path: Path | str, *, read_only: bool = False,
                       wait: float | None = None) -> _T:
    """Calls `open_` (anything that opens the warehouse file) until no other process holds a conflicting lock,
    for at most `wait` seconds (default lock_wait()); then raises WarehouseBusy with what to do. Other errors
    pass through at once."""
    wait = lock_wait() if wait is None else wait
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_lock_conflict),
        stop=tenacity.stop_after_delay(wait),
        # a load usually lets go within a second or two: poll often at first, then at most once a second
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    )
    try:
        return retrying(open_)
    except duckdb.IOException as exc:
        if not is_lock_conflict(exc):
            raise
        holder = lock_holder(exc)
        if read_only:
            why = (f"the warehouse {path} is being written by {holder} (a load or materialization in progress) "
                   f"and stayed locked for {wait:g} s; try again when it has finished")
        else:
            why = (f"the warehouse {path} stayed locked by {holder} for {wait:g} s (DuckDB lets one process write "
                   f"a file or several read it, never both); let it finish or close its connection (a duckdb "
                   f"shell, a notebook, a long `ledgerlink sql`), or raise {LOCK_WAIT_ENV}, and run again")
        raise WarehouseBusy(why) from exc


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back (and re-raised) when it raises."""
    con.execute("begin")
    try:
        yield
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


@contextlib.contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    if read_only and not Path(path).exists():
        raise FileNotFoundError(f"warehouse {path} does not exist; run the extraction first (make demo)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = wait_for_warehouse(lambda: duckdb.connect(str(path), read_only=read_only), path, read_only=read_only)
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
    with connect(path) as con, transaction(con):
        return {name: replace_table(con, name, frame) for name, frame in frames.items()}


def table_columns(con: duckdb.DuckDBPyConnection, qualified: str) -> list[str]:
    schema, table = qualified.split(".")
    return [r[0] for r in con.execute("select column_name from information_schema.columns where table_schema = ? "
                                      "and table_name = ? order by ordinal_position", [schema, table]).fetchall()]


def replace_tenant_table(con: duckdb.DuckDBPyConnection, qualified: str, frame: pl.DataFrame,
                         tenants: list[str]) -> int:
    """Replaces the rows of `tenants` in a table shared by every tenant with the frame's rows (the other tenants'
    rows stay); a table that does not exist yet is created from the frame."""
    if not table_exists(con, qualified):
        return replace_table(con, qualified, frame)
    if frame.width == 0:
        con.execute(f"delete from {qualified} where tenant in (select unnest(?))", [tenants])
        return 0
    con.register("_ledgerlink_frame", frame.to_arrow())
    try:
        if set(frame.columns) <= set(table_columns(con, qualified)):
            con.execute(f"delete from {qualified} where tenant in (select unnest(?))", [tenants])
            con.execute(f"insert into {qualified} by name select * from _ledgerlink_frame")
        else:  # the model gained a column since the table was written: rewrite it with the new shape
            con.execute(f"create or replace table {qualified} as select * from {qualified} where tenant is null or "
                        "tenant not in (select unnest(?)) union all by name select * from _ledgerlink_frame",
                        [tenants])
    finally:
        con.unregister("_ledgerlink_frame")
    return frame.height


def replace_tenant_rows(path: Path, frames: Mapping[str, pl.DataFrame], tenants: list[str], *,
                        append: Mapping[str, pl.DataFrame] | None = None) -> dict[str, int]:
    """Replaces the rows of `tenants` in several shared tables in one transaction: readers see all of them change,
    or none, and the other tenants' rows are untouched. `append`: tables whose rows are added to (a history)."""
    with connect(path) as con, transaction(con):
        counts = {name: replace_tenant_table(con, name, frame, list(tenants)) for name, frame in frames.items()}
        # replacing no tenant's rows is appending
        counts.update({name: replace_tenant_table(con, name, frame, []) for name, frame in (append or {}).items()})
        return counts


def retire_tenants(path: Path, tables: list[str], keep: list[str]) -> None:
    """Deletes the rows of every tenant not in `keep` from the tables (a run over every tenant of the registry
    drops the tenants it no longer holds). The registry sensor's retire run (pipelines/retire.py) does it as soon
    as a tenant or a connection is removed, and also closes their mismatch intervals and withdraws unsent writes."""
    with connect(path) as con, transaction(con):
        for name in tables:
            if table_exists(con, name):
                con.execute(f"delete from {name} where tenant not in (select unnest(?))", [list(keep)])
