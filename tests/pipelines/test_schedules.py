"""The schedules (pipelines/schedules.py): what they are, what a tick asks for, the chaining sensor's decisions,
the complete sweep's switch reaching a source (QuickBooks: a sweep instead of CDC that sees a delete), and the
instance config that makes concurrent runs queue on the single DuckDB writer."""

import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    build_schedule_context,
    instance_for_test,
    materialize,
)
from dagster_dlt import DagsterDltResource

from assets.extract.assets import COMPLETE_SWEEP, RAW_ASSETS, SWEEP_TAG
from assets.partitions import CONNECTION_PARTITIONS, TENANT_PARTITIONS
from assets.quality.asset_checks import QUALITY_CHECKS
from pipelines import runtime
from pipelines.definitions import defs
from pipelines.schedules import (
    CHAIN_INTERVAL_SECONDS,
    CHANGE_PRIORITY,
    CHECKS_JOB,
    PRIORITY_TAG,
    RECONCILE_JOB,
    REPORT_JOB,
    REPORT_MAX_WAIT,
    REPORT_MAX_WAIT_CHANGES,
    REPORT_PRIORITY,
    REPORT_SETTLE,
    SCHEDULES,
    TRIGGER_TAG,
    follow_up,
    reconcile_after_sync,
)
from pipelines.sensors import CHANGE_INTERVAL_SECONDS

REPO = defs.get_repository_def()


def test_each_app_has_an_incremental_and_a_nightly_sweep_schedule_switched_on():
    names = {s.name: s for s in REPO.schedule_defs}
    for app in RAW_ASSETS:
        incremental, sweep = names[f"incremental_sync_{app}"], names[f"complete_sweep_{app}"]
        assert incremental.cron_schedule == "*/15 * * * *" and sweep.cron_schedule == "0 2 * * *"
        assert incremental.job_name == sweep.job_name == f"extract_{app}"
        assert incremental.default_status == sweep.default_status == DefaultScheduleStatus.RUNNING
    assert len(SCHEDULES) == 2 * len(RAW_ASSETS)
    assert reconcile_after_sync.default_status == DefaultSensorStatus.RUNNING
    # the near-real-time sensors tick on every daemon loop (~5 s); each app's probes keep their own period
    sensors = {s.name: s for s in REPO.sensor_defs}
    assert sensors["reconcile_after_sync"].minimum_interval_seconds == CHAIN_INTERVAL_SECONDS <= 5
    assert sensors["connection_changes"].minimum_interval_seconds == CHANGE_INTERVAL_SECONDS <= 5
    assert {RECONCILE_JOB.name, CHECKS_JOB.name} <= {j.name for j in REPO.get_all_jobs()}


def test_reconcile_job_runs_one_tenant_from_unified_to_write_back_and_the_report_runs_apart():
    job = REPO.get_job(RECONCILE_JOB.name)
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"unified/invoices", "reconcile/mismatches", "writeback/plan", "writeback/apply"} <= keys
    assert not any(k.startswith("raw_") for k in keys) and "reports/data_quality_report" not in keys
    assert job.partitions_def == TENANT_PARTITIONS
    check_ops = {c.node_def.name for c in QUALITY_CHECKS}
    assert check_ops and not check_ops & {node.name for node in job.nodes}
    report = REPO.get_job(REPORT_JOB.name)
    assert {k.to_user_string() for k in report.asset_layer.selected_asset_keys} == {"reports/data_quality_report"}


@pytest.fixture
def instance():
    with instance_for_test() as inst:  # persistent (a temp dir): schedule contexts need an instance ref
        inst.add_dynamic_partitions(CONNECTION_PARTITIONS["quickbooks"].name, ["acme.quickbooks", "globex.quickbooks"])
        inst.add_dynamic_partitions(CONNECTION_PARTITIONS["sequence"].name, ["acme.sequence"])
        inst.add_dynamic_partitions(TENANT_PARTITIONS.name, ["acme", "globex"])
        yield inst


def tick(name: str, instance):
    context = build_schedule_context(instance=instance, repository_def=REPO,
                                     scheduled_execution_time=datetime(2025, 3, 5, 2, 0, tzinfo=UTC))
    return REPO.get_schedule_def(name).evaluate_tick(context).run_requests


def test_a_tick_asks_one_run_per_connection_partition_and_the_sweep_tags_them_complete(instance):
    incremental = tick("incremental_sync_quickbooks", instance)
    assert sorted(r.partition_key for r in incremental) == ["acme.quickbooks", "globex.quickbooks"]
    assert all(r.tags[TRIGGER_TAG] == "schedule" and SWEEP_TAG not in r.tags for r in incremental)
    sweep = tick("complete_sweep_quickbooks", instance)
    assert sorted(r.partition_key for r in sweep) == ["acme.quickbooks", "globex.quickbooks"]
    assert all(r.tags[SWEEP_TAG] == COMPLETE_SWEEP for r in sweep)
    assert len({r.run_key for r in incremental + sweep}) == 4
    assert [r.partition_key for r in tick("incremental_sync_sequence", instance)] == ["acme.sequence"]
    assert tick("incremental_sync_xero", instance) == []  # no xero connection: a skip, not an error


def add_run(instance, job: str, status: DagsterRunStatus, **tags) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name=job, run_id=run_id, status=status, tags=tags))
    return run_id


def asked(requests) -> list[tuple[str, str | None]]:
    return [(r.job_name, r.partition_key) for r in requests]


def test_each_tenant_reconciles_once_its_own_extractions_have_finished(instance):
    assert follow_up(instance, None)[0] == []
    add_run(instance, "extract_quickbooks", DagsterRunStatus.SUCCESS, **{"ledgerlink/connection": "acme.quickbooks"})
    add_run(instance, "extract_quickbooks", DagsterRunStatus.SUCCESS, **{"ledgerlink/connection": "globex.quickbooks"})
    busy = add_run(instance, "extract_sequence", DagsterRunStatus.STARTED, **{"ledgerlink/connection": "acme.sequence"})
    requests, cursor, why, add = follow_up(instance, None)
    # acme waits for its Sequence extraction; globex does not wait for acme
    assert asked(requests) == [(RECONCILE_JOB.name, "globex")] and add == [] and "acme: extraction still" in why
    assert requests[0].tags["ledgerlink/after"] == "globex.quickbooks"
    assert follow_up(instance, cursor)[0] == []  # nothing new for globex; acme still busy
    instance.delete_run(busy)  # ... which then fails: acme's QuickBooks sync is still worth reconciling
    add_run(instance, "extract_sequence", DagsterRunStatus.FAILURE, **{"ledgerlink/connection": "acme.sequence"})
    requests, cursor, _, _ = follow_up(instance, cursor)
    assert asked(requests) == [(RECONCILE_JOB.name, "acme")]
    assert "acme.quickbooks" in requests[0].tags["ledgerlink/after"]
    assert follow_up(instance, cursor)[0] == []  # nothing new since: no second reconciliation
    # the two reconciliations run (one fails: a tenant's failure is its own) -> then the report and the checks
    run = add_run(instance, RECONCILE_JOB.name, DagsterRunStatus.STARTED, **{"dagster/partition": "acme"})
    assert follow_up(instance, cursor)[0] == []  # the report waits for every reconciliation in progress
    instance.delete_run(run)
    add_run(instance, RECONCILE_JOB.name, DagsterRunStatus.FAILURE, **{"dagster/partition": "acme"})
    add_run(instance, RECONCILE_JOB.name, DagsterRunStatus.SUCCESS, **{"dagster/partition": "globex"})
    assert follow_up(instance, cursor)[0] == []  # ... and lets them settle (a write-back's echo reconciles again)
    settled = datetime.now(UTC) + REPORT_SETTLE + timedelta(seconds=2)
    requests, cursor, _, _ = follow_up(instance, cursor, now=settled)
    assert asked(requests) == [(REPORT_JOB.name, None), (CHECKS_JOB.name, None)]
    assert requests[0].tags["ledgerlink/after"] == "acme,globex"
    assert follow_up(instance, cursor, now=settled)[0] == []  # a report is not a reconciliation
    # a new tenant's first sync: its partition is asked for with its run (the registry sensor may be behind)
    add_run(instance, "extract_xero", DagsterRunStatus.SUCCESS, **{"ledgerlink/connection": "initech.xero"})
    requests, cursor, _, add = follow_up(instance, cursor)
    assert asked(requests) == [(RECONCILE_JOB.name, "initech")] and add == ["initech"]
    assert follow_up(instance, "2020-01-01T00:00:00+00:00")[0]  # an older cursor (one instant) still reads
    # the run history keeps whole seconds: a sync finishing in the second of the last one is not missed
    add_run(instance, "extract_xero", DagsterRunStatus.SUCCESS, **{"ledgerlink/connection": "initech.xero"})
    requests, cursor, _, _ = follow_up(instance, cursor)
    assert asked(requests) == [(RECONCILE_JOB.name, "initech")] and follow_up(instance, cursor)[0] == []


def test_report_and_checks_wait_for_a_quiet_moment_but_not_forever_and_a_change_keeps_its_priority(instance):
    now = datetime.now(UTC)
    change = {"ledgerlink/connection": "acme.quickbooks", PRIORITY_TAG: CHANGE_PRIORITY}
    other_change = add_run(instance, "extract_sequence", DagsterRunStatus.STARTED,
                           **{"ledgerlink/connection": "acme.sequence", PRIORITY_TAG: CHANGE_PRIORITY})
    add_run(instance, "extract_quickbooks", DagsterRunStatus.SUCCESS, **change)
    add_run(instance, "extract_quickbooks", DagsterRunStatus.SUCCESS, **{"ledgerlink/connection": "globex.quickbooks"})
    requests, cursor, why, _ = follow_up(instance, None, now=now)
    assert asked(requests) == [(RECONCILE_JOB.name, "globex")] and "acme: extraction still" in why
    # acme's other change in flight is done; its 15-minute round has started meanwhile: the change's
    # reconciliation does not wait for that round (it reconciles again after it), and goes ahead in the queue
    instance.delete_run(other_change)
    add_run(instance, "extract_sequence", DagsterRunStatus.SUCCESS,
            **{"ledgerlink/connection": "acme.sequence", PRIORITY_TAG: CHANGE_PRIORITY})
    round_ = add_run(instance, "extract_quickbooks", DagsterRunStatus.STARTED,
                     **{"ledgerlink/connection": "acme.quickbooks", TRIGGER_TAG: "schedule"})
    requests, cursor, _, _ = follow_up(instance, cursor, now=now)
    assert asked(requests) == [(RECONCILE_JOB.name, "acme")] and requests[0].tags[PRIORITY_TAG] == CHANGE_PRIORITY
    assert requests[0].tags["ledgerlink/after"] == "acme.quickbooks,acme.sequence"
    instance.delete_run(round_)
    add_run(instance, "extract_quickbooks", DagsterRunStatus.SUCCESS,
            **{"ledgerlink/connection": "acme.quickbooks", TRIGGER_TAG: "schedule"})
    requests, cursor, _, _ = follow_up(instance, cursor, now=now)
    assert asked(requests) == [(RECONCILE_JOB.name, "acme")] and PRIORITY_TAG not in requests[0].tags
    add_run(instance, RECONCILE_JOB.name, DagsterRunStatus.SUCCESS, **{"dagster/partition": "acme"})
    add_run(instance, RECONCILE_JOB.name, DagsterRunStatus.SUCCESS, **{"dagster/partition": "globex"})
    # a scheduled extraction is under way: the report (which holds the pool) waits for a quiet moment ...
    scheduled = add_run(instance, "extract_sequence", DagsterRunStatus.STARTED,
                        **{"ledgerlink/connection": "acme.sequence"})
    requests, waited, why, _ = follow_up(instance, cursor, now=now)
    assert requests == [] and "quiet moment" in why
    # ... but not longer than REPORT_MAX_WAIT after the first reconciliation it has not reported
    late = follow_up(instance, cursor, now=now + REPORT_MAX_WAIT + timedelta(seconds=5))[0]
    assert asked(late) == [(REPORT_JOB.name, None), (CHECKS_JOB.name, None)]
    assert {r.tags[PRIORITY_TAG] for r in late} == {REPORT_PRIORITY}
    # a change's run in flight: the report would delay its chain; it waits for it up to REPORT_MAX_WAIT_CHANGES
    change = add_run(instance, "extract_quickbooks", DagsterRunStatus.STARTING,
                     **{"ledgerlink/connection": "globex.quickbooks", PRIORITY_TAG: CHANGE_PRIORITY})
    assert follow_up(instance, cursor, now=now + REPORT_MAX_WAIT + timedelta(seconds=5))[0] == []
    assert asked(follow_up(instance, cursor, now=now + REPORT_MAX_WAIT_CHANGES + timedelta(seconds=5))[0]) == [
        (REPORT_JOB.name, None), (CHECKS_JOB.name, None)]
    instance.delete_run(scheduled)  # quiet again, once settled: the report and the checks follow
    instance.delete_run(change)
    assert follow_up(instance, waited, now=now)[0] == []
    settled = now + REPORT_SETTLE + timedelta(seconds=2)
    requests, cursor, _, _ = follow_up(instance, waited, now=settled)
    assert asked(requests) == [(REPORT_JOB.name, None), (CHECKS_JOB.name, None)]
    assert requests[0].tags["ledgerlink/after"] == "acme,globex" and follow_up(instance, cursor, now=settled)[0] == []


def test_the_dagster_home_written_for_dev_limits_the_warehouse_pool_to_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    home = runtime.dagster_home()
    assert home == (tmp_path / "dagster").resolve() and (home / "dagster.yaml").exists()
    with DagsterInstance.from_config(str(home)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "op"
        assert pools.op_granularity_run_buffer == 1  # the next run's process starts while one holds the pool
        assert instance.run_coordinator.dequeue_interval_seconds == 1 and instance.run_coordinator.dequeue_use_threads
        assert instance.get_settings("sensors")["use_threads"]  # slow probes never delay the chaining sensor
        assert instance.is_persistent
    # a dagster.yaml an older version wrote is brought up to date; one a person edited is left alone
    (home / "dagster.yaml").write_text(runtime._OLD_DAGSTER_YAMLS[0])
    runtime.dagster_home()
    assert (home / "dagster.yaml").read_text() == runtime.DAGSTER_YAML
    (home / "dagster.yaml").write_text(runtime._OLD_DAGSTER_YAMLS[0] + "# mine\n")
    runtime.dagster_home()
    assert (home / "dagster.yaml").read_text().endswith("# mine\n")


def test_the_complete_sweep_tag_makes_quickbooks_sweep_and_see_a_delete(extraction):
    key = f"{extraction.registry.tenants[0]}.quickbooks"
    resources = {"dlt": DagsterDltResource(), "ledgerlink": extraction.resource}

    def run(**tags):
        result = materialize([RAW_ASSETS["quickbooks"]], instance=extraction.instance, partition_key=key,
                             resources=resources, tags=tags)
        return {e.materialization.asset_key.path[-1]: e.materialization.metadata["rows_loaded"].value
                for e in result.get_asset_materialization_events() if "rows_loaded" in e.materialization.metadata}

    first = run()
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        gone = con.execute("select id from raw_quickbooks.invoice where tenant = ? and id not in (select _invoice_id "
                           "from raw_quickbooks.invoice__linked_txn) order by id limit 1",
                           [key.split(".")[0]]).fetchall()[0][0]
    with extraction.resource.client(extraction.registry.get(key)) as client:
        invoice = client.read("Invoice", gone)
        client.delete("Invoice", invoice["Id"], invoice["SyncToken"], request_id="sweep-del-1")
    swept = run(**{SWEEP_TAG: COMPLETE_SWEEP})
    # a sweep reads every invoice again (CDC would read one), and the one deleted goes
    assert swept["invoice"] >= first["invoice"] - 1 > 1
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from raw_quickbooks.invoice where tenant = ? and id = ?",
                           [key.split(".")[0], gone]).fetchall() == [(0,)]
    # the cursor moved on: the next run is CDC again (at most the delete's stub, inside the cursor's overlap)
    assert run()["invoice"] <= 1
