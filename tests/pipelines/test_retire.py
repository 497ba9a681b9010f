"""Retiring what connections.yaml no longer holds (pipelines/retire.py), with the real definitions, a real Dagster
instance and a real DuckDB warehouse over the emulators: two tenants (Sequence and QuickBooks each) extracted,
reconciled and planned (not applied, so the outbox holds planned writes); then tenant A is removed from the
registry and tenant B loses its QuickBooks connection. The registry sensor asks for one retire run (and B's
reconciliation); the run deletes their current rows, closes their open mismatch intervals at the removal time
saying why, withdraws their unsent writes and leaves in-flight ones, and keeps the raw data and the history."""

from datetime import UTC, datetime

import duckdb
import pytest
import yaml
from dagster import build_sensor_context

from assets.resources import Ledgerlink
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.reports.assets import connected, read_inputs
from assets.reports.report import build_report
from assets.unified.assets import UNIFIED_ASSETS
from assets.writeback.assets import writeback_plan
from connectors.sandbox.demo_data import generate
from pipelines.retire import REMOVED_TAG, RETIRE_JOB_NAME, retire_requests
from pipelines.schedules import RECONCILE_JOB
from pipelines.sensors import connection_partitions_sensor
from tests.pipelines._world import REPO, run_job, synced_instance

CURRENT = ("unified.invoices", "unified.customers", "unified.quarantine", "reconcile.links", "reconcile.mismatches")
# the reconcile job without its apply step: the outbox keeps planned writes
NOT_APPLY = [key for d in (*UNIFIED_ASSETS, *RECONCILE_ASSETS, writeback_plan) for key in d.keys]


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    generate(root, invoices=12, seed=11, tenants=2, discrepancies=True, xero=False, hubspot=False,
             salesforce=False, attio=False)
    return root


def execute(instance, job_name: str, **kwargs):
    result = run_job(instance, job_name, **kwargs)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


@pytest.fixture(scope="module")
def world(extraction):
    """Both tenants extracted, reconciled and planned (not applied: the outbox keeps planned writes)."""
    with synced_instance(extraction, reconcile=NOT_APPLY) as instance:
        yield extraction, instance


def query(ext, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(ext.warehouse), read_only=True) as con:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql, list(params)).fetchall()


def count(ext, table: str, where: str, params=()) -> int:
    return query(ext, f"select count(*) from {table} where {where}", params)[0][0]


def sensor_tick(instance):
    context = build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=REPO,
                                   resources={"ledgerlink": Ledgerlink()})
    return connection_partitions_sensor.evaluate_tick(context)


def test_no_removal_asks_for_no_retire_run():
    at = datetime(2026, 1, 6, tzinfo=UTC)
    assert retire_requests({"xero": {"a.xero"}}, {"xero": {"a.xero"}}, {"a"}, {"a"}, at, "r") == []
    assert retire_requests({"xero": {"a.xero", "b.xero"}}, {"xero": {"a.xero"}}, {"a", "b"}, {"a"}, at, "r") == []


def test_removed_tenant_and_connection_leave_current_state_keep_history_and_withdraw_unsent_writes(world):
    ext, instance = world
    a, b = ext.registry.tenants
    # the state before: every table has both tenants' rows, QuickBooks' included
    for table in CURRENT:
        for tenant in (a, b):
            assert count(ext, table, "tenant = ? and app = 'quickbooks'", [tenant]) or table == "unified.quarantine"
    planned = {t: count(ext, "writeback.outbox", "tenant = ? and state = 'planned'", [t]) for t in (a, b)}
    assert planned[a] and count(ext, "writeback.outbox", "tenant = ? and state = 'planned' and "
                                "coalesce(counterpart_app, app) = 'quickbooks'", [b])
    assert count(ext, "reconcile.mismatch_log", "tenant = ? and valid_to is null", [a])
    raw = {t: count(ext, "raw_quickbooks.invoice", "tenant = ?", [t]) for t in (a, b)}
    history = count(ext, "reconcile.mismatch_history", "true")
    with duckdb.connect(str(ext.warehouse)) as con:
        # one of A's writes may have reached QuickBooks (sent, no answer), one was confirmed, one interval closed
        keys = [r[0] for r in con.execute("select idempotency_key from writeback.outbox where tenant = ? and "
                                          "state = 'planned' order by idempotency_key limit 2", [a]).fetchall()]
        con.execute("update writeback.outbox set state = 'sent', request_id = idempotency_key, attempts = 1 "
                    "where idempotency_key = ?", [keys[0]])
        con.execute("update writeback.outbox set state = 'confirmed', request_id = idempotency_key, "
                    "attempts = 1, confirmed_at = now() where idempotency_key = ?", [keys[1]])
        con.execute("insert into reconcile.mismatch_log select * replace (timestamptz '2026-01-01' as valid_from, "
                    "timestamptz '2026-01-02' as valid_to) from reconcile.mismatch_log where tenant = ? limit 1", [a])
        closed_before = con.execute("select * from reconcile.mismatch_log where valid_to is not null "
                                    "order by all").fetchall()
    b_sequence = query(ext, "select * from unified.invoices where tenant = ? and app = 'sequence' order by all", [b])

    # the registry loses tenant A, and tenant B its QuickBooks connection
    saved = ext.registry_path.read_text()
    document = yaml.safe_load(saved)
    del document["tenants"][a]
    del document["tenants"][b]["connections"]["quickbooks"]
    ext.registry_path.write_text(yaml.safe_dump(document))
    try:
        seen = datetime.now(UTC)
        tick = sensor_tick(instance)
        deleted = {(r.partitions_def_name, k) for r in tick.dynamic_partitions_requests
                   if type(r).__name__ == "DeleteDynamicPartitionsRequest" for k in r.partition_keys}
        assert deleted == {("tenants", a), ("sequence_connections", f"{a}.sequence"),
                           ("quickbooks_connections", f"{a}.quickbooks"), ("quickbooks_connections", f"{b}.quickbooks")}
        retire, reconcile = tick.run_requests
        assert retire.job_name == RETIRE_JOB_NAME and retire.run_key.startswith("retire:")
        assert retire.tags[REMOVED_TAG] == f"{a},{b}.quickbooks"
        assert (reconcile.job_name, reconcile.partition_key) == (RECONCILE_JOB.name, b)  # B reconciles again
        removed_at = datetime.fromisoformat(retire.run_config["ops"]["retire_removed"]["config"]["removed_at"])
        assert seen <= removed_at <= datetime.now(UTC)
        for request in tick.dynamic_partitions_requests:  # as the daemon applies them with the tick
            if type(request).__name__ == "DeleteDynamicPartitionsRequest":
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        assert sensor_tick(instance).run_requests in (None, [])  # partitions match: nothing more

        # the retire run, as the daemon would run it
        result = execute(instance, retire.job_name, tags=retire.tags, run_config=retire.run_config)
        assert result.success

        # A's current rows are gone everywhere, and B's QuickBooks rows; B's Sequence rows untouched
        for table in CURRENT:
            assert count(ext, table, "tenant = ?", [a]) == 0, table
            assert count(ext, table, "tenant = ? and app = 'quickbooks'", [b]) == 0, table
        assert query(ext, "select * from unified.invoices where tenant = ? and app = 'sequence' order by all",
                     [b]) == b_sequence
        # every interval of what was removed is closed at the removal, saying why; closed ones never change
        assert count(ext, "reconcile.mismatch_log", "valid_to is null and (tenant = ? or app = 'quickbooks')",
                     [a]) == 0
        closed = query(ext, "select tenant, valid_to, reason from reconcile.mismatch_log where valid_to = ?",
                       [removed_at])
        assert {t for t, _, _ in closed} == {a, b}
        assert all(r.endswith("Closed: the tenant was removed from the registry (connections.yaml).")
                   for t, _, r in closed if t == a)
        assert all(r.endswith("Closed: its quickbooks connection was removed from the registry (connections.yaml).")
                   for t, _, r in closed if t == b)
        assert set(closed_before) <= set(query(ext, "select * from reconcile.mismatch_log order by all"))
        # "what disagreed as of just before the removal" still answers for A
        assert count(ext, "reconcile.mismatch_log", "tenant = ? and valid_from < ? and (valid_to is null or "
                     "valid_to > ?)", [a, removed_at, removed_at]) == 0
        assert count(ext, "reconcile.mismatch_log", "tenant = ? and valid_from <= ? and valid_to = ?",
                     [a, removed_at, removed_at]) > 0
        # unsent writes withdrawn, never sent; the sent one left (it may have reached QuickBooks), the confirmed kept
        assert count(ext, "writeback.outbox", "state = 'planned' and (tenant = ? or coalesce(counterpart_app, app) "
                     "= 'quickbooks')", [a]) == 0
        assert count(ext, "writeback.outbox", "tenant = ? and state = 'skipped' and error like 'withdrawn, never "
                     "sent: the tenant was removed%'", [a]) == planned[a] - 2
        assert count(ext, "writeback.outbox", "tenant = ? and error like 'withdrawn, never sent: its quickbooks "
                     "connection%'", [b]) > 0
        assert query(ext, "select state from writeback.outbox where idempotency_key in (?, ?) order by state",
                     keys) == [("confirmed",), ("sent",)]
        # the raw synced data and the counts history are kept
        assert {t: count(ext, "raw_quickbooks.invoice", "tenant = ?", [t]) for t in (a, b)} == raw
        assert count(ext, "reconcile.mismatch_history", "true") == history
        # the report stops showing A (its history stays in SQL) and B's QuickBooks
        registry = ext.resource.registry()
        report = build_report(read_inputs(ext.warehouse, None, connected(registry)), generated_at=datetime.now(UTC))
        assert [t.tenant for t in report.tenants] == [b]
        assert [a.app for a in report.tenants[0].agreement if a.app == "quickbooks"] == []
        metadata = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
        assert metadata.event_specific_data.metadata["writeback.outbox_in_flight_left"].value == 1

        # B reconciles again without QuickBooks: its raw QuickBooks rows do not come back into the model
        assert execute(instance, reconcile.job_name, partition_key=b, tags=reconcile.tags).success
        for table in CURRENT:
            assert count(ext, table, "tenant = ? and app = 'quickbooks'", [b]) == 0, table
        assert count(ext, "reconcile.mismatch_log", "tenant = ? and app = 'quickbooks' and valid_to is null",
                     [b]) == 0
        assert count(ext, "reconcile.mismatch_log", "valid_to = ?", [removed_at]) == len(closed)

        # a second retire run finds nothing left to retire
        again = execute(instance, retire.job_name, run_config=retire.run_config)
        assert again.success and not any(
            n for name, n in again.output_for_node("retire_removed").items() if "in flight" not in name)
    finally:
        ext.registry_path.write_text(saved)
