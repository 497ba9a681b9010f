"""Per-tenant partitions end to end, with the real definitions over the emulators: two tenants (Sequence and
QuickBooks each) extracted, then reconciled and written back one tenant per run, as `reconcile_after_sync` asks.

- A run of tenant B replaces only B's rows of the shared tables (unified, reconcile, mismatch history and log,
  outbox): tenant A's rows are untouched, byte for byte.
- Tenant A's unified build fails (its settings name a column the model does not have: a MappingError), and after
  a sync the sensor asks for one run per tenant: A's run fails at its unified step, B's run materializes its
  unified model, reconciliation, plan and apply, and B's rows land.
- A single run over every tenant (a partition range) writes B and fails at the end naming A.
- The connection -> tenant partition mapping, as Dagster's asset graph applies it."""

import uuid

import duckdb
import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_sensor_context,
)

from assets.partitions import (
    CONNECTION_PARTITIONS,
    TENANT_OF_CONNECTION,
    TENANT_PARTITIONS,
    materialize_tenants,
    tenant_of,
)
from assets.unified.assets import UNIFIED_ASSETS
from connectors.sandbox.demo_data import generate
from pipelines.definitions import defs
from pipelines.schedules import RECONCILE_JOB, follow_up, reconcile_after_sync
from tests.pipelines._world import QUIET, REPO, run_job, synced_instance

# every table a tenant's run writes, and how to read one tenant's rows of it in a stable order
TABLES = ("unified.invoices", "unified.customers", "unified.quarantine", "reconcile.links", "reconcile.mismatches",
          "reconcile.mismatch_history", "reconcile.mismatch_log", "writeback.outbox")
BAD_SETTINGS = {"field_mappings": {"quickbooks": {"invoice": {"no_such_column": "doc_number"}}}}


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    generate(root, invoices=16, seed=11, tenants=2, discrepancies=True, xero=False, hubspot=False,
             salesforce=False, attio=False)
    return root


execute = run_job


@pytest.fixture(scope="module")
def world(extraction):
    """Both tenants extracted and reconciled (one run each), the definitions' resource pointed at the sandbox."""
    with synced_instance(extraction) as instance:
        yield extraction, instance


def rows(ext, tenant: str) -> dict[str, list[tuple]]:
    with duckdb.connect(str(ext.warehouse), read_only=True) as con:
        return {table: sorted(con.execute(f"select * from {table} where tenant = ?", [tenant]).fetchall(), key=repr)
                for table in TABLES}


@pytest.fixture
def broken(world):
    """Tenant A's settings break its unified build (restored afterwards)."""
    ext, _ = world
    a = ext.registry.tenants[0]
    before = ext.registry_path.read_text()
    document = yaml.safe_load(before)
    document["tenants"][a].setdefault("settings", {}).update(BAD_SETTINGS)
    ext.registry_path.write_text(yaml.safe_dump(document))
    try:
        yield a
    finally:
        ext.registry_path.write_text(before)


def materialized(result) -> set[str]:
    return {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in result.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION}


def test_a_tenants_run_replaces_its_own_rows_only(world):
    ext, instance = world
    a, b = ext.registry.tenants
    before_a, before_b = rows(ext, a), rows(ext, b)
    assert all(before_a[t] for t in ("unified.invoices", "reconcile.links", "reconcile.mismatches",
                                      "reconcile.mismatch_history", "writeback.outbox"))
    assert execute(instance, RECONCILE_JOB.name, partition_key=b).success
    after_a, after_b = rows(ext, a), rows(ext, b)
    assert after_a == before_a  # not one row of A changed
    # B's run appended this run's counts to its history (every app and kind, zeros included), rebuilt the same
    # unified rows from the same raw rows, and kept the log's intervals it had (closed ones never change)
    assert len(after_b["reconcile.mismatch_history"]) == 2 * len(before_b["reconcile.mismatch_history"])
    assert after_b["unified.invoices"] == before_b["unified.invoices"]
    closed = [r for r in before_b["reconcile.mismatch_log"] if r[-1] is not None]
    assert set(closed) <= set(after_b["reconcile.mismatch_log"])


def test_a_failing_tenant_fails_its_own_run_and_the_other_is_reconciled_and_written_back(world, broken):
    ext, instance = world
    a = broken
    (b,) = [t for t in ext.registry.tenants if t != a]
    before_a = rows(ext, a)
    with duckdb.connect(str(ext.warehouse)) as con:  # B's rows must come back from its own run
        for table in ("unified.invoices", "reconcile.mismatches", "reconcile.links"):
            con.execute(f"delete from {table} where tenant = ?", [b])
    cursor = follow_up(instance, None)[1]  # the baseline's syncs are behind us
    # a sync of every connection (the sensor reads only the run history: recorded, not run, to keep this fast)
    for key in ext.registry.keys():
        instance.add_run(DagsterRun(job_name=f"extract_{key.rsplit('.', 1)[1]}", run_id=str(uuid.uuid4()),
                                    status=DagsterRunStatus.SUCCESS, tags={"ledgerlink/connection": key}))
    # ... then the sensor, as the daemon ticks it
    tick = reconcile_after_sync.evaluate_tick(build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), repository_def=REPO, cursor=cursor))
    requests = sorted(tick.run_requests, key=lambda r: r.partition_key)
    assert [(r.job_name, r.partition_key) for r in requests] == [(RECONCILE_JOB.name, t) for t in sorted((a, b))]
    assert len({r.run_key for r in requests}) == 2
    results = {r.partition_key: execute(instance, r.job_name, partition_key=r.partition_key, tags=r.tags)
               for r in requests}
    assert not results[a].success
    (failure,) = results[a].get_step_failure_events()
    assert failure.step_key == "unified" and "no_such_column" in failure.step_failure_data.error.to_string()
    assert materialized(results[a]) == set()  # its reconciliation and write-back did not run on stale rows
    assert results[b].success
    assert {"unified/invoices", "reconcile/links", "reconcile/mismatches", "writeback/plan",
            "writeback/apply"} <= materialized(results[b])
    after_a, after_b = rows(ext, a), rows(ext, b)
    assert after_a == before_a
    assert after_b["unified.invoices"] and after_b["reconcile.mismatches"] and after_b["reconcile.links"]

    # one run over every tenant (a range, as a single-run backfill would): B is written, the run names A
    with duckdb.connect(str(ext.warehouse)) as con:
        con.execute("delete from unified.invoices where tenant = ?", [b])
    result = materialize_tenants(UNIFIED_ASSETS, instance=instance, resources=defs.resources, raise_on_error=False,
                                 run_config=QUIET)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert f"tenant {a}: MappingError" in failure.step_failure_data.error.to_string()
    assert rows(ext, b)["unified.invoices"] == after_b["unified.invoices"] and rows(ext, a) == before_a


def test_a_connection_partition_maps_to_its_tenants_partition(world):
    ext, instance = world
    a, b = ext.registry.tenants
    assert tenant_of(f"{a}.quickbooks") == a and tenant_of("acme.uk.xero") == "acme.uk"
    graph = defs.resolve_asset_graph()
    raw, unified = AssetKey(["raw_quickbooks", "invoice"]), AssetKey(["unified", "invoices"])
    assert graph.get(unified).partitions_def == TENANT_PARTITIONS
    assert graph.get(unified).partition_mappings[raw] == TENANT_OF_CONNECTION
    quickbooks = CONNECTION_PARTITIONS["quickbooks"]
    down = TENANT_OF_CONNECTION.get_downstream_partitions_for_partitions(
        quickbooks.empty_subset().with_partition_keys([f"{a}.quickbooks"]), quickbooks, TENANT_PARTITIONS,
        dynamic_partitions_store=instance)
    assert set(down.get_partition_keys()) == {a}
    up = TENANT_OF_CONNECTION.get_upstream_mapped_partitions_result_for_partitions(
        TENANT_PARTITIONS.empty_subset().with_partition_keys([b]), TENANT_PARTITIONS, quickbooks,
        dynamic_partitions_store=instance)
    assert set(up.partitions_subset.get_partition_keys()) == {f"{b}.quickbooks"}
    assert up.required_but_nonexistent_partition_keys == []
    # the report stays one asset over every tenant
    assert graph.get(AssetKey(["reports", "data_quality_report"])).partitions_def is None
    assert isinstance(instance, DagsterInstance)
