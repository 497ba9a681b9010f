"""Retiring what connections.yaml no longer holds: a tenant removed whole, or one connection of a tenant that stays.

The registry sensor (`connection_partitions_sensor`, pipelines/sensors.py) deletes the removed partitions and, in
the same tick, asks for one run of the `retire_removed_connections` job (run key `retire:<when>:<what>`, tags
naming what was removed), plus one `reconcile_and_write_back` run of each tenant that lost a connection but stays.
The job's one op takes the `warehouse` pool (the single DuckDB writer) and, in one transaction, makes the
warehouse match the registry as it is when the run starts (not as the sensor saw it: a connection put back in the
meantime is not retired). What a finance reader sees afterwards:

- current state leaves: the rows of a removed tenant, or of a removed connection's app for a tenant that stays,
  are deleted from every `unified.*` table, `reconcile.links`, `reconcile.mismatches` and `reconcile.quarantine`
  (the report, the checks and `ledgerlink sql` stop counting them). A removed Sequence connection takes the
  tenant's Sequence rows; its pairs with the other apps are redone by the tenant's reconciliation that follows.
- history stays true: each open `reconcile.mismatch_log` interval of what was removed is closed at the removal
  time (when the sensor saw it), its `reason` ending "Closed: ... removed from the registry (connections.yaml)."
  so "what disagreed as of last Tuesday" still answers; closed intervals and `reconcile.mismatch_history` (counts
  per run) are not touched.
- planned writes are withdrawn: each `writeback.outbox` row of what was removed that was never sent (planned, no
  requestid) becomes `skipped` with "withdrawn, never sent: ...". A write that may have reached the app (sent,
  failed retriably, or reset for a resend) is left as it is and counted: it tells what the app may hold, and it
  resumes if the connection comes back.
- the raw synced data (`raw_<app>.*`, dlt's state, `ops.sync_runs`) is kept: it is what the app said, history
  like the log. Because the unified build reads only the apps a tenant is connected to (assets/unified/assets.py),
  a kept raw table never brings a removed connection's rows back; re-adding the connection does, at its next run.

Idempotent: a second run finds nothing left to retire. The unified and reconcile assets still drop removed
tenants' rows when a run covers every tenant (`retire_tenants`, assets/warehouse.py); this job does it at once.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from dagster import Field, MetadataValue, OpExecutionContext, Out, Output, RunRequest, in_process_executor, job, op

from assets.reconcile.assets import LINKS_TABLE, LOG_TABLE, MISMATCHES_TABLE
from assets.resources import Ledgerlink
from assets.unified.assets import UNIFIED_TABLES
from assets.partitions import tenant_of
from assets.warehouse import WAREHOUSE_POOL, connect, table_columns, table_exists, transaction
from assets.writeback.outbox import OUTBOX_TABLE
from pipelines.schedules import PRIORITY_TAG

RETIRE_JOB_NAME = "retire_removed_connections"
REMOVED_TAG = "ledgerlink/removed"  # what the registry lost, as the sensor saw it
RETIRE_PRIORITY = "20"
# tables of current state: a removed tenant's or connection's rows leave them
CURRENT_TABLES = (*UNIFIED_TABLES, LINKS_TABLE, MISMATCHES_TABLE, "reconcile.quarantine")
REGISTRY = "removed from the registry (connections.yaml)"


def _gone(columns: Iterable[str]) -> str:
    """SQL: the row (alias t) belongs to a tenant the registry no longer holds, or one of `columns` names an app
    the row's tenant is no longer connected to (`_kept`: the registry's (tenant, app) pairs)."""
    parts = ["t.tenant not in (select tenant from _kept)"]
    parts += [f"(t.{c} is not null and not exists (select 1 from _kept k where k.tenant = t.tenant "
              f"and k.app = t.{c}))" for c in columns]
    return "t.tenant is not null and (" + " or ".join(parts) + ")"


def _why(prefix: str, app: str) -> str:
    """SQL: which removal a row is retired for, in words (`app`: the SQL of the app it names)."""
    return (f"case when t.tenant not in (select tenant from _kept) then '{prefix} the tenant was {REGISTRY}.' "
            f"else '{prefix} its ' || {app} || ' connection was {REGISTRY}.' end")


def retire(warehouse: Path, connections: Iterable[tuple[str, str]], at: datetime) -> dict[str, int]:
    """Makes the warehouse match the registry's (tenant, app) `connections` (see the module docstring), in one
    transaction; `at`: when the removal was seen. Returns the rows touched per table and action."""
    if not Path(warehouse).exists():
        return {}
    kept = pl.DataFrame(list(connections), schema={"tenant": pl.String, "app": pl.String}, orient="row")
    counts: dict[str, int] = {}
    with connect(warehouse) as con:
        con.register("_kept", kept.to_arrow())
        try:
            with transaction(con):
                for name in CURRENT_TABLES:
                    columns = set(table_columns(con, name)) if table_exists(con, name) else set()
                    if "tenant" in columns:
                        where = _gone(["app"] if "app" in columns else [])
                        deleted = con.execute(f"delete from {name} t where {where}").fetchall()
                        counts[f"{name} deleted"] = deleted[0][0]
                if table_exists(con, LOG_TABLE):
                    # closed at the removal, never before the interval opened (a run may have reopened it since)
                    counts[f"{LOG_TABLE} closed"] = con.execute(
                        f"update {LOG_TABLE} t set valid_to = greatest(t.valid_from, ?::timestamptz), "
                        f"reason = concat_ws(' ', t.reason, {_why('Closed:', 't.app')}) "
                        f"where t.valid_to is null and {_gone(['app'])}", [at]).fetchall()[0][0]
                if table_exists(con, OUTBOX_TABLE):
                    gone = _gone(["app", "counterpart_app"])
                    # the app of the pair that was removed: the write's own, else its counterpart
                    app = ("case when exists (select 1 from _kept k where k.tenant = t.tenant and k.app = t.app) "
                           "then t.counterpart_app else t.app end")
                    counts[f"{OUTBOX_TABLE} withdrawn"] = con.execute(
                        f"update {OUTBOX_TABLE} t set state = 'skipped', "
                        f"error = {_why('withdrawn, never sent:', app)} "
                        f"where t.state = 'planned' and t.request_id is null and {gone}").fetchall()[0][0]
                    # may have reached the app: left as they are (they resume if the connection comes back)
                    counts[f"{OUTBOX_TABLE} in flight, left"] = con.execute(
                        f"select count(*) from {OUTBOX_TABLE} t where (t.state = 'sent' or (t.state = 'failed' and "
                        f"coalesce(t.retriable, false)) or (t.state = 'planned' and t.request_id is not null)) "
                        f"and {gone}").fetchall()[0][0]
        finally:
            con.unregister("_kept")
    return counts


@op(pool=WAREHOUSE_POOL, out=Out(dict),
    config_schema={"removed_at": Field(str, is_required=False,
                                       description="When the removal was seen (ISO 8601); default: now. Open "
                                                   "mismatch intervals of what was removed close at this time.")},
    description="Deletes the current-state rows (unified, reconcile) of tenants and connections no longer in "
                "connections.yaml, closes their open mismatch_log intervals and withdraws their unsent outbox "
                "rows; keeps the raw synced data and the history.")
def retire_removed(context: OpExecutionContext, ledgerlink: Ledgerlink):
    at = context.op_config.get("removed_at")
    at = datetime.fromisoformat(at) if at else datetime.now(UTC)
    registry = ledgerlink.registry()
    counts = retire(ledgerlink.warehouse, [(c.tenant, c.app) for c in registry.connections], at)
    touched = {name: n for name, n in counts.items() if n}
    context.log.info(f"retired at {at.isoformat()}: "
                     + (", ".join(f"{name} {n}" for name, n in touched.items()) or "nothing left to retire"))
    if touched.get(f"{OUTBOX_TABLE} in flight, left"):
        context.log.warning(f"{touched[f'{OUTBOX_TABLE} in flight, left']} outbox rows of what was removed may "
                            "have reached the app (sent, not confirmed): left as they are")
    return Output(counts, metadata={"removed_at": MetadataValue.text(at.isoformat()),
                                    **{name.replace(" ", "_").replace(",", ""): MetadataValue.int(n)
                                       for name, n in counts.items()}})


@job(name=RETIRE_JOB_NAME, executor_def=in_process_executor,
     description="Retires what connections.yaml no longer holds (requested by connection_partitions_sensor).")
def retire_job():
    retire_removed()


RETIRE_JOB = retire_job


def retire_requests(wanted: Mapping[str, set[str]], have: Mapping[str, set[str]], tenants: set[str],
                    have_tenants: set[str], at: datetime, reconcile_job: str) -> list[RunRequest]:
    """The registry sensor's run requests when partitions are removed: one retire run, then one reconciliation
    of each tenant that stays but lost a connection (its mismatches and plan no longer involve that app)."""
    gone_keys = sorted(k for app, keys in have.items() for k in keys - wanted.get(app, set()))
    gone_tenants = sorted(have_tenants - tenants)
    if not gone_keys and not gone_tenants:
        return []
    removed = [*gone_tenants, *(k for k in gone_keys if tenant_of(k) not in gone_tenants)]
    when = at.astimezone(UTC).isoformat()
    what = ",".join(removed)
    requests = [RunRequest(job_name=RETIRE_JOB_NAME, run_key=f"retire:{when}:{what}",
                           run_config={"ops": {"retire_removed": {"config": {"removed_at": when}}}},
                           # ahead of every queued run, a change's too (pipelines/schedules.py CHANGE_PRIORITY):
                           # the retirement lands before a reconciliation of the same tenant, which would close
                           # the same intervals without saying why; it is one short op
                           tags={REMOVED_TAG: what[:4000], PRIORITY_TAG: RETIRE_PRIORITY})]
    staying = sorted({tenant_of(k) for k in gone_keys} & tenants)
    requests += [RunRequest(job_name=reconcile_job, partition_key=tenant, run_key=f"retire:{when}:{tenant}",
                            tags={REMOVED_TAG: ",".join(k for k in gone_keys if tenant_of(k) == tenant)})
                 for tenant in staying]
    return requests
