"""Window re-reads (assets/extract/window.py) against the emulators over HTTP, through a real Dagster run over a
partition range: every app's record changed inside the window comes back, one changed outside it (or exactly at
its end) does not, the reads use the app's own filter, rows merge, and the incremental cursors do not move."""

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import duckdb
import orjson
import pytest
from dagster import AssetKey, materialize

from assets.extract.flatten import column_name
from assets.extract.loading import Window
from assets.extract.window import (
    TENANTS_TAG,
    WINDOW_ASSETS,
    WINDOW_JOB_NAME,
    selected_connections,
    window_key,
    window_tenants,
)
import connectors.quickbooks as quickbooks_client
from assets.partitions import RANGE_END, RANGE_START
from connectors.sandbox.demo_data import generate

IN, OUT = datetime(2026, 3, 15, 10, 30, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)  # OUT: the window's end
FIRST_DAY, LAST_DAY = "2026-03-01", "2026-03-31"
UK, US = "acme-uk", "globex-us"

# app -> (tenant, fixture collection, raw table, id field)
PLANTS = {
    "quickbooks": (UK, "invoice", "invoice", "Id"),
    "xero": (UK, "invoices", "invoices", "InvoiceID"),
    "hubspot": (UK, "deals", "deals", "id"),
    "salesforce": (US, "Account", "account", "Id"),
    "sequence": (UK, "invoices", "invoices", "id"),
    "attio": (UK, "companies", "companies", None),
}


def _ms(at: datetime) -> str:
    return f"/Date({int(at.timestamp() * 1000)}+0000)/"


def stamp(app: str, record: dict, at: datetime) -> None:
    """Marks a fixture record as last changed at `at`, in the app's own field."""
    if app == "quickbooks":
        record["MetaData"]["LastUpdatedTime"] = at.isoformat()
    elif app == "xero":
        record["UpdatedDateUTC"] = _ms(at)
    elif app == "hubspot":
        record["updatedAt"] = record["properties"]["hs_lastmodifieddate"] = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    elif app == "salesforce":
        record["SystemModstamp"] = record["LastModifiedDate"] = at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    elif app == "sequence":
        record["updatedAt"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:  # attio: a value that became active then
        values = next(iter(record["values"].values()))
        values[0]["active_from"] = at.strftime("%Y-%m-%dT%H:%M:%S.000000000Z")


PLANTED: dict = {}  # app -> (id changed inside, id changed outside), filled by `fixture_dir`


def record_id(app: str, record: dict) -> str:
    return record["id"]["record_id"] if app == "attio" else str(record[PLANTS[app][3]])


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    """Two tenants (UK: QuickBooks, Xero, HubSpot, Sequence, Attio; US: Salesforce too), every record changed in
    2024-2025, but per app one record changed inside March 2026, one at 2026-04-01 00:00 (outside), and a
    QuickBooks invoice inside the window that breaks the contract."""
    root = tmp_path_factory.mktemp("fixtures")
    generate(root, invoices=8, seed=3, tenants=2, discrepancies=False)
    plants = {}
    for app, (tenant, collection, _, _) in PLANTS.items():
        path = root / tenant / app / f"{collection}.json"
        records = orjson.loads(path.read_bytes())
        assert len(records) >= 3, (app, len(records))
        stamp(app, records[0], IN)
        stamp(app, records[1], OUT)
        plants[app] = (record_id(app, records[0]), record_id(app, records[1]))
        if app == "quickbooks":
            stamp(app, records[2], IN)
            records[2]["TotalAmt"] = "twelve"
            plants["quickbooks_bad"] = record_id(app, records[2])
        path.write_bytes(orjson.dumps(records))
    PLANTED.update(plants)
    return root


def query(warehouse: Path, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def id_column(app: str) -> str:
    return "id" if PLANTS[app][3] is None else column_name(PLANTS[app][3])


def ids(warehouse: Path, app: str) -> set[str]:
    tenant, _, table, _ = PLANTS[app]
    return {r[0] for r in query(warehouse, f"select {id_column(app)} from raw_{app}.{table} where tenant = ?",
                                [tenant])}


def cursors(state_dir: Path) -> dict[str, dict]:
    """Every incremental pipeline's dlt state as stored locally (sources: the cursors and fingerprints)."""
    found = {}
    for path in sorted((state_dir / "dlt").glob("*/state.json")):
        if not path.parent.name.endswith("__window"):
            found[path.parent.name] = orjson.loads(path.read_bytes()).get("sources")
    return found


@pytest.fixture(scope="module")
def reread(extraction):
    """The incremental first run of each planted connection, then the planted rows lost from the warehouse (the
    "bug"), then one window run over March 2026 for every app and every connection."""
    ext = extraction
    plants = PLANTED
    for app, (tenant, *_) in PLANTS.items():
        assert ext.run(f"{tenant}.{app}").success, app
    before = {"cursors": cursors(Path(ext.resource.state_dir))}
    with duckdb.connect(str(ext.warehouse)) as con:
        for app, (tenant, _, table, _) in PLANTS.items():
            con.execute(f"delete from raw_{app}.{table} where tenant = ? and {id_column(app)} in (?, ?)",
                        [tenant, *plants[app]])
    before["counts"] = {app: len(ids(ext.warehouse, app)) for app in PLANTS}
    for app in PLANTS:
        ext.box.emulator(app).request_log.clear()
    statements: list[str] = []  # QuickBooks queries travel in the body, which the request log does not keep
    original = quickbooks_client._statement
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quickbooks_client, "_statement", lambda *a, **kw: statements.append(original(*a, **kw))
                      or statements[-1])
        result = materialize(list(WINDOW_ASSETS.values()), instance=ext.instance,
                             resources={"ledgerlink": ext.resource},
                             tags={RANGE_START: FIRST_DAY, RANGE_END: LAST_DAY})
    assert result.success
    return SimpleNamespace(ext=ext, plants=plants, before=before, result=result, statements=statements)


@pytest.mark.parametrize("app", list(PLANTS))
def test_a_record_changed_inside_the_window_is_reread_and_one_outside_is_not(reread, app):
    inside, outside = reread.plants[app]
    found = ids(reread.ext.warehouse, app)
    assert inside in found
    assert outside not in found  # changed at the window's end: outside [start, end)
    # merged, not replaced: every row the incremental run loaded is still there, plus the one re-read
    assert len(found) == reread.before["counts"][app] + 1


def test_reads_use_each_apps_own_server_side_filter(reread):
    box = reread.ext.box

    def log(app):
        return box.emulator(app).request_log

    invoice = [q for q in reread.statements if "FROM Invoice" in q]
    assert invoice and all("MetaData.LastUpdatedTime >= '2026-03-01T00:00:00+00:00' AND MetaData.LastUpdatedTime < "
                           "'2026-04-01T00:00:00+00:00'" in q for q in invoice), invoice
    assert not any(r["path"].endswith("/cdc") for r in log("quickbooks"))
    xero = [r["query"] for r in log("xero") if r["path"].endswith("/Invoices")]
    assert xero and all("UpdatedDateUTC" in q for q in xero)
    assert any(r["path"].endswith("/deals/search") for r in log("hubspot"))
    # the live listing is not swept (only the archived one, which has no date filter)
    assert not any(r["path"].endswith("/objects/deals") and "archived=true" not in r["query"] for r in log("hubspot"))
    soql = [r for r in log("salesforce") if "/queryAll" in r["path"]]
    assert soql and all("SystemModstamp" in r["query"] for r in soql)


def test_incremental_cursors_do_not_move(reread):
    ext = reread.ext
    assert cursors(Path(ext.resource.state_dir)) == reread.before["cursors"]
    assert set(reread.before["cursors"]) >= {f"{app}__{PLANTS[app][0].replace('-', '_')}" for app in PLANTS}
    # the window ran in pipelines of its own
    names = {r[0] for r in query(ext.warehouse,
                                 "select distinct pipeline_name from raw_quickbooks._dlt_pipeline_state")}
    assert "quickbooks__acme_uk__window" in names


def test_a_bad_record_in_the_window_goes_to_rejected_records(reread):
    bad = reread.plants["quickbooks_bad"]
    rows = query(reread.ext.warehouse, "select tenant, collection, field from raw_quickbooks.rejected_records "
                                       "where record_id = ?", [bad])
    assert len(rows) == 2  # the incremental run's, and the window's
    assert set(rows) == {(UK, "invoice", "TotalAmt")}
    assert bad not in ids(reread.ext.warehouse, "quickbooks")


def test_sync_history_records_each_connection_with_its_window(reread):
    ext = reread.ext
    rows = query(ext.warehouse, "select connection, status, window_start, window_end, rows_loaded from ops.sync_runs "
                                "where run_id = ?", [reread.result.run_id])
    assert {r[0] for r in rows} == set(ext.registry.keys())  # every connection of every app
    for connection, status, start, end, _ in rows:
        assert status == "success", connection
        assert (start, end) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)), connection
    loaded = {r[0]: r[4] for r in rows}
    assert all(loaded[f"{tenant}.{app}"] >= 1 for app, (tenant, *_) in PLANTS.items())
    # the incremental runs' rows carry no window
    plain = query(ext.warehouse, "select count(*) from ops.sync_runs where window_start is null")[0][0]
    assert plain == len(PLANTS)
    materialized = {e.event_specific_data.materialization.asset_key for e in
                    reread.result.get_asset_materialization_events()}
    assert materialized >= {window_key(app) for app in PLANTS}


def test_tenants_tag_selects_connections_and_an_unknown_tenant_is_refused(extraction):
    registry = extraction.registry
    assert [c.key for c in selected_connections(registry, "quickbooks", {})] == registry.keys("quickbooks")
    assert [c.key for c in selected_connections(registry, "quickbooks", {TENANTS_TAG: f" {US} "})] == \
        [f"{US}.quickbooks"]
    with pytest.raises(ValueError, match="nobody"):
        selected_connections(registry, "quickbooks", {TENANTS_TAG: f"{US},nobody"})


def test_the_chaining_sensor_sees_window_runs_as_extractions_of_their_tenants():
    from pipelines.schedules import ANY_TENANT, is_extraction, run_tenant

    def run(job: str, selection=(), **tags):
        return SimpleNamespace(job_name=job, asset_selection=frozenset(selection), tags=tags)

    everyone = run(WINDOW_JOB_NAME, [window_key("quickbooks")], **{RANGE_START: FIRST_DAY, RANGE_END: LAST_DAY})
    one_day = run("__ASSET_JOB", [window_key("xero")], **{"dagster/partition": "2026-03-02", TENANTS_TAG: UK})
    two = run("__ASSET_JOB", [window_key("xero")], **{TENANTS_TAG: f"{UK},{US}"})
    assert all(is_extraction(r) for r in (everyone, one_day, two))
    assert window_tenants(everyone) == [] and run_tenant(everyone) == ANY_TENANT
    assert run_tenant(one_day) == UK  # not the day "2026-03-02"
    assert run_tenant(two) == ANY_TENANT
    assert window_tenants(run("extract_xero", [AssetKey(["raw_xero", "invoices"])])) is None


def test_window_bounds_are_half_open_and_aware():
    window = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert window.holds(datetime(2026, 3, 1, tzinfo=UTC)) and not window.holds(OUT) and not window.holds(None)
    with pytest.raises(ValueError):
        Window(datetime(2026, 3, 1), datetime(2026, 4, 1))
