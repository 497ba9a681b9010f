"""reconcile.quarantine: the rows that failed a data-quality check, with the check and the reason.

Each check owns its rows: a run deletes that check's rows and inserts its current failures in one
transaction, so the table always holds the latest verdict of every check and checks never erase each other.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from assets.warehouse import connect

QUARANTINE = "reconcile.quarantine"
COLUMNS: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "app": pl.String(),
    "entity": pl.String(),
    "id": pl.String(),
    "check": pl.String(),
    "field": pl.String(),
    "reason": pl.String(),
    "detected_at": pl.Datetime("us", "UTC"),
}
# Declared up front so the table has its types even before the first failure. `check` is an SQL keyword.
_DDL = f"""
create table if not exists {QUARANTINE} (
    tenant varchar, app varchar, entity varchar, id varchar, "check" varchar, field varchar, reason varchar,
    detected_at timestamptz
)"""


def quarantine_rows(failures: pl.DataFrame, check: str, detected_at: datetime) -> pl.DataFrame:
    """Rule failures (checks.rules.FAILURES) as quarantine rows of one check."""
    return failures.select(
        "tenant", "app", "entity", "id", pl.lit(check).alias("check"), "field", "reason",
        pl.lit(detected_at).cast(COLUMNS["detected_at"]).alias("detected_at"),
    ).cast(COLUMNS)


def replace_check_rows(warehouse: Path, check: str, rows: pl.DataFrame) -> int:
    """Replaces the quarantine rows of one check (delete where check = it, then insert) in one transaction."""
    frame = rows.select(list(COLUMNS)).cast(COLUMNS)
    with connect(warehouse) as con:
        con.execute("begin")
        try:
            con.execute("create schema if not exists reconcile")
            con.execute(_DDL)
            con.execute(f'delete from {QUARANTINE} where "check" = ?', [check])
            con.register("_ledgerlink_quarantine", frame.to_arrow())
            try:
                con.execute(f"insert into {QUARANTINE} by name select * from _ledgerlink_quarantine")
            finally:
                con.unregister("_ledgerlink_quarantine")
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    return frame.height
