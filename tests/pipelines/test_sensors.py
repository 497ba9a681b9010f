"""The sensors with the real definitions, in-process: the registry sensor's partition requests, and the
near-real-time loop end to end over the emulators: a QuickBooks invoice changed through the emulator's API ->
`connection_changes` asks for that one connection's extraction -> the run -> `reconcile_after_sync` asks for that
tenant's reconciliation (its `tenants` partition) -> reconcile.mismatches shows the change -> the write-back puts
QuickBooks right again -> the sensor then asks for the report and the checks once things have settled. Also each
app's probe period (its API limits) in `connection_changes`' decisions."""

import os
from datetime import UTC, date, datetime, timedelta

import duckdb
import orjson
import pytest
from dagster import DagsterRunStatus, RunsFilter, build_sensor_context, instance_for_test

from assets.partitions import CONNECTION_PARTITIONS, TENANT_PARTITIONS
from assets.reconcile.assets import RECONCILE_ASSETS
from connectors.sandbox.demo_data import generate
from assets.resources import Ledgerlink
from assets.unified.assets import UNIFIED_ASSETS
from pipelines.definitions import defs
from pipelines import sensors
from pipelines.schedules import (
    CHANGE_PRIORITY,
    PRIORITY_TAG,
    RECONCILE_JOB,
    REPORT_SETTLE,
    TRIGGER_TAG,
    follow_up,
    reconcile_after_sync,
)
from pipelines.sensors import (
    PROBE_PERIODS,
    PROBED_APPS,
    changed_connections,
    connection_changes,
    partition_requests,
    read_change_cursor,
)

REPO = defs.get_repository_def()


def test_partition_requests_add_and_delete_to_match_the_registry():
    requests = partition_requests({"xero": {"a.xero", "b.xero"}}, {"xero": {"b.xero", "c.xero"}})
    assert [(type(r).__name__, r.partitions_def_name, list(r.partition_keys)) for r in requests] == [
        ("AddDynamicPartitionsRequest", "xero_connections", ["a.xero"]),
        ("DeleteDynamicPartitionsRequest", "xero_connections", ["c.xero"])]
    # the tenant partitions follow the registry's tenants the same way
    requests = partition_requests({}, {}, {"a", "b"}, {"b", "gone"})
    assert [(type(r).__name__, r.partitions_def_name, list(r.partition_keys)) for r in requests] == [
        ("AddDynamicPartitionsRequest", "tenants", ["a"]), ("DeleteDynamicPartitionsRequest", "tenants", ["gone"])]


class _Registry:
    def get(self, key):
        return key


class _Ledgerlink:
    def registry(self):
        return _Registry()


def test_each_app_is_probed_at_its_own_period_and_a_failed_probe_waits_its_period_too(monkeypatch):
    asked, answers = [], {}

    def fake_probe(ledgerlink, connection, since):
        asked.append(connection)
        answer = answers.get(connection)
        if isinstance(answer, Exception):
            raise answer
        return answer if answer is not None and answer > since else None  # as changed_since answers

    monkeypatch.setattr(sensors, "probe", fake_probe)
    keys = {"quickbooks": ["a.quickbooks"], "sequence": ["a.sequence"], "xero": ["a.xero", "b.xero"]}
    t0 = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
    requests, cursor = changed_connections(_Ledgerlink(), keys, read_change_cursor(None), t0)
    assert requests == [] and asked == []  # first sight: remembered from now, nothing asked
    assert set(cursor["signal"]) == set(cursor["probed"]) == {"a.quickbooks", "a.sequence", "a.xero", "b.xero"}

    # one daemon loop later: QuickBooks is due (5 s, within the loop's jitter), Sequence (10 s) and Xero are not
    changed = t0 + timedelta(seconds=2)
    answers.update({"a.quickbooks": changed, "b.xero": RuntimeError("app down")})
    requests, cursor = changed_connections(_Ledgerlink(), keys, cursor, t0 + timedelta(seconds=4.5))
    assert asked == ["a.quickbooks"]
    assert [(r.job_name, r.partition_key) for r in requests] == [("extract_quickbooks", "a.quickbooks")]
    assert requests[0].tags[PRIORITY_TAG] == CHANGE_PRIORITY and requests[0].tags[TRIGGER_TAG] == "change"
    assert cursor["signal"]["a.quickbooks"] == changed.isoformat()
    asked.clear()
    requests, cursor = changed_connections(_Ledgerlink(), keys, cursor, t0 + timedelta(seconds=10))
    assert sorted(asked) == ["a.quickbooks", "a.sequence"] and requests == []  # QuickBooks' signal is not news
    asked.clear()
    # Xero's period (its daily allowance): both asked; b's probe fails, logged, and is asked again only a period later
    warnings = []
    log = type("Log", (), {"warning": lambda self, message: warnings.append(message)})()
    at = t0 + timedelta(seconds=PROBE_PERIODS["xero"])
    requests, cursor = changed_connections(_Ledgerlink(), keys, cursor, at, log)
    assert {"a.xero", "b.xero"} <= set(asked) and requests == [] and "b.xero: change probe failed" in warnings[0]
    assert cursor["signal"]["b.xero"] == t0.isoformat()  # its signal stays: the change is not lost
    asked.clear()
    changed_connections(_Ledgerlink(), keys, cursor, at + timedelta(seconds=30))
    assert "b.xero" not in asked and "a.quickbooks" in asked
    # a cursor from before the periods (connection -> signal) still reads: every connection is due
    assert read_change_cursor(orjson.dumps({"a.xero": t0.isoformat()}).decode()) == {
        "signal": {"a.xero": t0.isoformat()}, "probed": {}}


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    """Smaller than the shared one and clean (both sides agree), so the one change made here stands out and the
    baseline write-back has nothing to write."""
    root = tmp_path_factory.mktemp("fixtures")
    generate(root, invoices=24, seed=5, tenants=1, discrepancies=False)
    return root


@pytest.fixture(scope="module")
def world(extraction):
    """The extraction sandbox with the real definitions' resource pointed at its registry and warehouse (as
    `ledgerlink dev` points it with LEDGERLINK_* variables), and one tenant extracted and reconciled."""
    saved = dict(os.environ)
    os.environ.update(LEDGERLINK_REGISTRY=str(extraction.registry_path), LEDGERLINK_WAREHOUSE=str(extraction.warehouse),
                      LEDGERLINK_STATE_DIR=str(extraction.resource.state_dir))
    tenant = extraction.registry.tenants[0]
    try:
        # a persistent (temporary) instance, as under `dagster dev`: sensor ticks resolve partitions through it
        with instance_for_test() as instance:
            for app, partitions in CONNECTION_PARTITIONS.items():
                instance.add_dynamic_partitions(partitions.name, extraction.registry.keys(app))
            instance.add_dynamic_partitions(TENANT_PARTITIONS.name, extraction.registry.tenants)
            for app in ("sequence", "quickbooks"):
                assert execute(instance, f"extract_{app}", partition_key=f"{tenant}.{app}").success
            # the baseline needs the links only: no write-back (nothing to write) nor report, to keep this fast
            assert execute(instance, RECONCILE_JOB.name, partition_key=tenant, asset_selection=[
                key for assets_def in (*UNIFIED_ASSETS, *RECONCILE_ASSETS) for key in assets_def.keys]).success
            yield extraction, instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execute(instance, job_name: str, *, partition_key: str | None = None, tags: dict | None = None,
            asset_selection=None):
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    return REPO.get_job(job_name).execute_in_process(instance=instance, partition_key=partition_key, tags=tags,
                                                    run_config=quiet, raise_on_error=False,
                                                    asset_selection=asset_selection)


def changes_tick(instance, cursor: str | None):
    # with the instance's ref too, as the daemon builds it: partitioned run requests resolve through it
    context = build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                   repository_def=REPO, resources={"ledgerlink": Ledgerlink()})
    data = connection_changes.evaluate_tick(context)
    return data.run_requests or [], data.cursor


def due(cursor: str) -> str:
    """The cursor as a tick one period later sees it: every connection due for a probe again."""
    state = orjson.loads(cursor)
    state["probed"] = {k: "2000-01-01T00:00:00+00:00" for k in state["probed"]}
    return orjson.dumps(state).decode()


def follow_tick(instance, cursor: str | None):
    data = reconcile_after_sync.evaluate_tick(build_sensor_context(instance=instance, instance_ref=instance.get_ref(),
                                                                   cursor=cursor, repository_def=REPO))
    return data.run_requests or [], data.cursor


def query(world, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(world.warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def test_a_change_in_one_app_runs_only_its_partition_then_reconciles_and_writes_back(world):
    world, instance = world
    tenant = world.registry.tenants[0]
    key = f"{tenant}.quickbooks"
    requests, cursor = changes_tick(instance, None)
    probed = {k for app in PROBED_APPS for k in instance.get_dynamic_partitions(CONNECTION_PARTITIONS[app].name)}
    assert requests == [] and set(read_change_cursor(cursor)["signal"]) == probed  # first sight: remembered
    assert changes_tick(instance, due(cursor))[0] == []  # nothing changed: nothing run
    _, follow_cursor = follow_tick(instance, None)  # the baseline's reconciliation is behind us

    # a linked QuickBooks invoice that agrees with Sequence today gets another due date in QuickBooks
    invoice_id = query(world, "select app_id from reconcile.links where tenant = ? and app = 'quickbooks' and "
                              "entity = 'invoice' and app_id not in (select app_id from reconcile.mismatches where "
                              "app_id is not null) order by app_id limit 1", [tenant])[0][0]
    with world.resource.client(world.registry.get(key)) as client:
        before = client.read("Invoice", invoice_id)
        moved = (date.fromisoformat(before["DueDate"]) + timedelta(days=9)).isoformat()
        client.update("Invoice", {"Id": invoice_id, "SyncToken": before["SyncToken"], "DueDate": moved},
                      request_id="sensor-test-due-1")

    requests, cursor = changes_tick(instance, due(cursor))
    assert [(r.job_name, r.partition_key) for r in requests] == [("extract_quickbooks", key)]  # that one only
    assert requests[0].tags[TRIGGER_TAG] == "change" and requests[0].tags[PRIORITY_TAG] == CHANGE_PRIORITY
    assert execute(instance, requests[0].job_name, partition_key=key, tags=requests[0].tags).success

    requests, follow_cursor = follow_tick(instance, follow_cursor)
    # that tenant's reconciliation only, in its partition
    assert [(r.job_name, r.partition_key) for r in requests] == [(RECONCILE_JOB.name, tenant)]
    assert key in requests[0].tags["ledgerlink/after"]
    assert requests[0].tags[PRIORITY_TAG] == CHANGE_PRIORITY  # the change's place in the queue is kept
    # the job as the daemon would run it
    assert execute(instance, RECONCILE_JOB.name, partition_key=tenant, tags=requests[0].tags).success
    assert query(world, "select field, app_value from reconcile.mismatches where tenant = ? and app = 'quickbooks' "
                        "and app_id = ?", [tenant, invoice_id]) == [("due_date", moved)]
    with world.resource.client(world.registry.get(key)) as client:  # the write-back put QuickBooks right
        assert client.read("Invoice", invoice_id)["DueDate"] == before["DueDate"]
    # once it has finished and settled (the write-back's echo may reconcile again): the report and the checks (not
    # run here: tested in tests/assets), then nothing
    assert follow_tick(instance, follow_cursor)[0] == []
    settled = datetime.now(UTC) + REPORT_SETTLE + timedelta(seconds=2)
    requests, follow_cursor, _, _ = follow_up(instance, follow_cursor, now=settled)
    assert [r.job_name for r in requests] == ["data_quality_report", "quality_checks"]
    assert follow_up(instance, follow_cursor, now=settled)[0] == []  # one reconciliation per round

    # the write-back's own write is a change too: the next tick extracts that connection again, and only it
    # (CRM write-back may have written the tenant's CRM too: that connection is extracted as well, no other tenant's)
    again = [r.partition_key for r in changes_tick(instance, due(cursor))[0]]
    assert key in again and {k.rsplit(".", 1)[0] for k in again} == {tenant}
    runs = instance.get_runs(RunsFilter(tags={TRIGGER_TAG: "change"}, statuses=[DagsterRunStatus.SUCCESS]))
    assert {r.tags["ledgerlink/connection"] for r in runs} == {key}
