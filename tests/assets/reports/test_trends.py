"""Trends over runs: the history shaped into series per reason and per app, thinned when runs are many; what
changed since the previous run and since when; since when each open difference exists (the mismatch log);
syncs per connection; apps that are connected but not reconciled; and the numbers the Dagster UI plots."""

from datetime import datetime, timedelta, timezone

import polars as pl

from assets.reconcile.assets import mismatches_metadata
from assets.reconcile.links import MISMATCH_SCHEMA
from assets.reports.assets import read_inputs
from assets.reports.charts import syncs_chart, trend_apps_chart, trend_chart
from assets.reports.report import (
    HISTORY_COLUMNS,
    SYNC_COLUMNS,
    Inputs,
    build_report,
    changes_table,
    conform,
    sync_days,
    sync_summary,
    thin_runs,
    trend_series,
    with_since,
)
from assets.warehouse import replace_tables

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)


def history(rows: list[tuple[str, str, str, list[int]]], step: timedelta = timedelta(days=1)) -> pl.DataFrame:
    """(tenant, app, kind, counts per run) -> reconcile.mismatch_history rows, run i at T0 + i * step."""
    return conform(pl.DataFrame([{"tenant": t, "app": a, "kind": k, "count": n, "at": T0 + i * step}
                                 for t, a, k, counts in rows for i, n in enumerate(counts)]), HISTORY_COLUMNS)


HISTORY = history([
    ("acme", "quickbooks", "field_differs", [5, 4, 0, 2, 3]),
    ("acme", "xero", "field_differs", [1, 1, 1, 1, 1]),
    ("acme", "xero", "missing_in_app", [0, 2, 2, 2, 0]),
    ("acme", "xero", "invalid", [0, 0, 0, 0, 0]),
    ("globex", "quickbooks", "field_differs", [9, 9, 9, 9, 9]),
])


def series(frame: pl.DataFrame) -> dict[str, list[int]]:
    return {s: frame.filter(pl.col("series") == s).sort("at")["count"].to_list() for s in frame["series"].unique()}


def test_series_per_reason_sum_the_apps_and_series_per_app_sum_the_reasons():
    assert series(trend_series(HISTORY, "kind", tenant="acme")) == {
        "field_differs": [6, 5, 1, 3, 4], "missing_in_app": [0, 2, 2, 2, 0]}  # `invalid` stayed at zero: left out
    assert series(trend_series(HISTORY, "app", tenant="acme")) == {"quickbooks": [5, 4, 0, 2, 3],
                                                                   "xero": [1, 3, 3, 3, 1]}
    assert series(trend_series(HISTORY, "app")) == {"quickbooks": [14, 13, 9, 11, 12], "xero": [1, 3, 3, 3, 1]}


def test_the_all_tenant_series_carries_each_tenant_s_last_counts_to_runs_it_was_not_in():
    # acme runs at 08:00 each day, globex one hour later: each point is the sum of both tenants' latest counts
    staggered = pl.concat([
        history([("acme", "quickbooks", "field_differs", [5, 3])]),
        history([("globex", "quickbooks", "field_differs", [10, 20])]).with_columns(
            pl.col("at") + timedelta(hours=1)),
    ])
    trend = trend_series(staggered, "app").sort("at")
    assert trend["count"].to_list() == [5, 15, 13, 23]  # not 5, 10, 3, 20


def test_many_runs_are_thinned_to_each_days_last_run():
    frequent = history([("acme", "xero", "field_differs", list(range(96)))], step=timedelta(hours=1))
    thinned = trend_series(frequent, "kind", max_runs=60)
    # 96 hourly runs from 08:00 on 1 June: the last of each of the five days
    assert thinned["at"].dt.hour().to_list() == [23, 23, 23, 23, 7]
    assert thinned["count"].to_list() == [15, 39, 63, 87, 95]
    assert thin_runs(frequent.head(10)).height == 10  # few runs stay as they are


def test_changes_say_last_run_run_before_and_since_when_without_a_break():
    changes = {(r["app"], r["kind"]): (r["latest"], r["previous"], r["since"])
               for r in changes_table(HISTORY, "acme").iter_rows(named=True)}
    assert changes == {
        ("quickbooks", "field_differs"): (3, 2, T0 + timedelta(days=3)),  # back after being fixed on day 2
        ("xero", "field_differs"): (1, 1, T0),
        ("xero", "missing_in_app"): (0, 2, None),  # fixed at the last run: listed, no longer open
    }
    assert changes_table(HISTORY, "nobody").is_empty()


def test_since_comes_from_the_open_interval_of_the_same_mismatch_in_the_log():
    base = {c: None for c in MISMATCH_SCHEMA} | {"tenant": "acme", "app": "xero", "entity": "invoice",
                                                 "kind": "field_differs", "sequence_id": "s1", "field": "due_date",
                                                 "sequence_value": "2025-08-01", "app_value": "2025-08-10"}
    mismatches = pl.DataFrame([base, base | {"sequence_id": "s2"}], schema=MISMATCH_SCHEMA)
    log = pl.DataFrame([base | {"valid_from": T0, "valid_to": T0 + timedelta(days=1)},  # closed: fixed once
                        base | {"valid_from": T0 + timedelta(days=5), "valid_to": None}],
                       schema={**MISMATCH_SCHEMA, "valid_from": pl.Datetime("us", "UTC"),
                               "valid_to": pl.Datetime("us", "UTC")})
    since = with_since(mismatches, log)["since"].to_list()
    assert since == [T0 + timedelta(days=5), None]  # identity treats the null app_id as a value
    assert with_since(mismatches, None)["since"].to_list() == [None, None]


def test_syncs_per_connection_and_per_day():
    runs = conform(pl.DataFrame([
        {"tenant": "acme", "app": "xero", "started_at": T0, "status": "success", "rows_loaded": 40},
        {"tenant": "acme", "app": "xero", "started_at": T0 + timedelta(hours=6), "status": "success",
         "rows_loaded": 2},
        {"tenant": "acme", "app": "xero", "started_at": T0 + timedelta(days=1), "status": "failed",
         "rows_loaded": 0, "error": "Xero answered 503"},
    ]), SYNC_COLUMNS)
    [summary] = sync_summary(runs).iter_rows(named=True)
    assert (summary["runs"], summary["failed"], summary["rows_loaded"], summary["last_status"],
            summary["last_error"], summary["last_success_at"]) == (3, 1, 42, "failed", "Xero answered 503",
                                                                   T0 + timedelta(hours=6))
    assert sync_days(runs).select("rows", "runs", "failed").rows() == [(42, 2, 0), (0, 1, 1)]


def inputs(**extra) -> Inputs:
    counts = pl.DataFrame({"tenant": ["acme"] * 3, "app": ["sequence", "quickbooks", "hubspot"],
                           "entity": ["customer"] * 3, "records": [4, 4, 4]})
    return Inputs(mismatches=pl.DataFrame(), links=pl.DataFrame(), counts=counts, quarantine=pl.DataFrame(),
                  **extra)


def test_an_app_never_reconciled_is_not_counted_as_agreeing_but_listed_as_connected():
    connections = pl.DataFrame({"tenant": ["acme"] * 3, "app": ["sequence", "quickbooks", "hubspot"]})
    report = build_report(inputs(history=HISTORY.filter(pl.col("app") == "quickbooks"), connections=connections),
                          generated_at=T0)
    [acme] = [t for t in report.tenants if t.tenant == "acme"]
    assert [(a.app, a.entity) for a in acme.agreement] == [("quickbooks", "customer")]
    assert [(a.app, a.reconciled) for a in acme.apps] == [("quickbooks", True), ("hubspot", False)]
    # without a history that names apps, every counted app stays (the older behaviour)
    assert {a.app for a in build_report(inputs(), generated_at=T0).tenants[0].agreement} == {"quickbooks", "hubspot"}


def test_trend_and_sync_charts_draw_one_line_per_series_with_readable_names():
    report = build_report(inputs(history=HISTORY), generated_at=T0)
    [acme] = [t for t in report.tenants if t.tenant == "acme"]
    assert {p.series for p in acme.trend} == {"Details differ", "Missing in the app"}
    assert {p.series for p in acme.trend_apps} == {"QuickBooks", "Xero"}
    by_reason, by_app = trend_chart(acme), trend_apps_chart(acme)
    assert by_reason.startswith("<svg") and "Details differ" in by_reason and "Missing in the app" in by_reason
    assert ">Xero<" in by_app and ">QuickBooks<" in by_app
    one_run = build_report(inputs(history=HISTORY.filter(pl.col("at") == T0)), generated_at=T0)
    assert trend_chart(one_run.tenants[0]) is None  # one point is not a trend
    assert syncs_chart(acme) is None  # no ops.sync_runs


def test_an_older_history_without_apps_is_still_read(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    replace_tables(warehouse, {"reconcile.mismatch_history": pl.DataFrame(
        {"tenant": ["acme", "acme"], "run_at": [T0, T0 + timedelta(days=1)], "kind": ["field_differs"] * 2,
         "mismatches": [3, 2]})})
    read = read_inputs(warehouse)
    assert read.history.sort("at")["count"].to_list() == [3, 2] and read.history["app"].null_count() == 2
    assert read.log is None and read.sync_runs is None and not read.reconciled


def test_the_reconcile_asset_reports_counts_per_app_and_kind_for_the_ui_to_plot():
    rows = [{"tenant": "acme", "app": app, "entity": "invoice", "kind": kind, "proposed_action": "update_in_app"}
            for app, kind in (("xero", "field_differs"), ("xero", "field_differs"), ("quickbooks", "missing_in_app"),
                              ("sequence", "invalid"))]
    metadata = mismatches_metadata(pl.DataFrame(rows).with_columns(
        [pl.lit(None, pl.String).alias(c) for c in MISMATCH_SCHEMA if c not in rows[0]]).cast(MISMATCH_SCHEMA))
    values = {key: value.value for key, value in metadata.items() if key.startswith("mismatches_")}
    assert (values["mismatches_app_xero"], values["mismatches_app_quickbooks"], values["mismatches_app_sequence"]) \
        == (2, 1, 1)
    assert values["mismatches_xero_field_differs"] == 2 and values["mismatches_xero_missing_in_app"] == 0
    assert values["mismatches_quickbooks_missing_in_app"] == 1
    assert not any(key.startswith("mismatches_sequence_") for key in values)
    empty = mismatches_metadata(pl.DataFrame(schema=MISMATCH_SCHEMA))
    assert empty["mismatches_app_xero"].value == 0 and empty["mismatches_quickbooks_field_differs"].value == 0
