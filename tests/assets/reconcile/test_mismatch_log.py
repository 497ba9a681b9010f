"""reconcile.mismatch_log: each mismatch with the interval it was seen in, so that "what disagreed as of a
moment" and "when did this record start to differ" are SQL over the warehouse."""

from datetime import UTC, datetime

import duckdb
import polars as pl

from assets.reconcile.assets import LOG_SCHEMA, advance_log
from assets.reconcile.links import MISMATCH_SCHEMA

MON, TUE, WED = (datetime(2026, 11, d, 9, tzinfo=UTC) for d in (16, 17, 18))


def mismatch(sequence_id: str, field: str, app_value: str | None, app_id: str | None = "100") -> dict:
    return {"tenant": "t1", "app": "quickbooks", "entity": "invoice", "sequence_id": sequence_id, "app_id": app_id,
            "kind": "field_differs", "field": field, "sequence_value": "x", "app_value": app_value,
            "proposed_action": "update_in_app", "reason": f"{sequence_id} {field} differs"}


def frame(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=MISMATCH_SCHEMA)


def test_intervals_open_close_and_survive_unchanged_runs():
    log = advance_log(pl.DataFrame(schema=LOG_SCHEMA), frame(mismatch("inv1", "memo", "a"),
                                                             mismatch("inv2", "memo", None, app_id=None)), MON)
    # same mismatches again (nulls included): nothing changes, valid_from stays Monday
    log = advance_log(log, frame(mismatch("inv1", "memo", "a"), mismatch("inv2", "memo", None, app_id=None)), TUE)
    assert log.height == 2 and set(log["valid_from"]) == {MON} and log["valid_to"].null_count() == 2
    # Wednesday: inv1's app value changed (a new interval), inv2 was fixed (closed)
    log = advance_log(log, frame(mismatch("inv1", "memo", "b")), WED)
    rows = {(r["sequence_id"], r["app_value"]): (r["valid_from"], r["valid_to"]) for r in log.to_dicts()}
    assert rows == {("inv1", "a"): (MON, WED), ("inv2", None): (MON, WED), ("inv1", "b"): (WED, None)}


def test_as_of_and_since_when_are_plain_sql(tmp_path):
    log = pl.DataFrame(schema=LOG_SCHEMA)
    for at, found in ((MON, [mismatch("inv1", "memo", "a")]),
                      (TUE, [mismatch("inv1", "memo", "a"), mismatch("inv2", "due_date", "2026-01-01")]),
                      (WED, [mismatch("inv2", "due_date", "2026-01-01")])):
        log = advance_log(log, frame(*found), at)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        con.execute("create schema reconcile")
        con.register("log_frame", log.to_arrow())
        con.execute("create table reconcile.mismatch_log as select * from log_frame")
        as_of = """select sequence_id, field from reconcile.mismatch_log
                   where valid_from <= ? and (valid_to is null or valid_to > ?) order by 1"""
        assert con.execute(as_of, [TUE, TUE]).fetchall() == [("inv1", "memo"), ("inv2", "due_date")]
        assert con.execute(as_of, [WED, WED]).fetchall() == [("inv2", "due_date")]
        since = "select min(valid_from) from reconcile.mismatch_log where sequence_id = 'inv2'"
        assert con.execute(since).fetchone()[0] == TUE
