"""When Ledgerlink runs by itself: the jobs, the two schedules and the sensor that chains reconciliation.

- `incremental_sync_<app>` (every 15 minutes): one run of `extract_<app>` per connection partition of the app, each
  reading only what changed since its cursor (CDC, If-Modified-Since, search, SystemModstamp; Sequence and Attio
  sweep). A tenant's failure is its own run's failure: the other partitions' runs go on.
- `complete_sweep_<app>` (nightly, 02:00 UTC): the same runs tagged `ledgerlink/sweep=complete`; each source then
  reads everything (`full=True`, assets/extract/assets.py), the read that may detect deletes an incremental read cannot
  (QuickBooks ids gone from a sweep, Salesforce's recycle bin via queryAll, Attio and Sequence records missing).
- `reconcile_after_sync` (sensor, every 5 s: it only reads the run history): once extraction runs have
  finished and none is still queued or in progress, one run of `reconcile_and_write_back` (unified -> reconcile
  -> write-back plan and apply -> report), then one of `quality_checks`.

Why a chaining sensor rather than the alternatives:
- Declarative automation (`AutomationCondition.eager()` on the unpartitioned unified/reconcile assets) does see
  the dynamic partitions upstream, but it needs conditions on every downstream asset (the write-back assets are
  not this module's), it fires on each upstream partition's update (a 15-minute round of N connections would
  launch up to N reconciliations unless tuned with `any_deps_in_progress`), and its blocking asset checks would
  hold reconciliation back for every tenant when one tenant has a bad row.
- A `run_status_sensor` on success of the extraction jobs fires once per finished run: N runs, N reconciliations.
- This sensor debounces: it waits until no extraction is queued or running, then asks for one reconciliation for
  everything that finished since its cursor (the newest finished run's update time), whether the extraction came
  from a schedule, the change sensor (pipelines/sensors.py) or a backfill launched in the UI. Its run key makes a
  repeated tick harmless. The quality checks run in a run of their own (as `ledgerlink demo` does): their failures
  are findings for the report, not a reason to stop every tenant's reconciliation.

Concurrency: every step that touches the warehouse takes the `warehouse` pool (limit 1 in dagster.yaml, written
by pipelines/runtime.dagster_home), so the runs these schedules launch together queue rather than collide on the
single DuckDB writer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
    sensor,
)

from assets.extract.assets import COMPLETE_SWEEP, RAW_ASSETS, SWEEP_TAG
from assets.partitions import CONNECTION_PARTITIONS
from assets.quality.asset_checks import QUALITY_CHECKS
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.reports.assets import REPORT_ASSETS
from assets.unified.assets import UNIFIED_ASSETS
from assets.writeback.assets import WRITEBACK_ASSETS

TRIGGER_TAG = "ledgerlink/trigger"  # schedule | sweep | change: why an extraction run was asked for
INCREMENTAL_CRON = "*/15 * * * *"
SWEEP_CRON = "0 2 * * *"

# In-process executor: the steps run one at a time anyway (the `warehouse` pool), and a step subprocess would
# import Dagster, dlt and Polars a second time per run (seconds, most of a near-real-time run's latency).
EXTRACT_JOBS = {app: define_asset_job(f"extract_{app}", selection=[assets_def], executor_def=in_process_executor)
                for app, assets_def in RAW_ASSETS.items()}
RECONCILE_JOB = define_asset_job(
    "reconcile_and_write_back",
    selection=AssetSelection.assets(*UNIFIED_ASSETS, *RECONCILE_ASSETS, *WRITEBACK_ASSETS, *REPORT_ASSETS)
    .without_checks(),
    executor_def=in_process_executor,
    description="Every tenant: the unified model, the reconciliation, the write-back (plan, then apply: the sandbox "
                "is written to, other apps only with allow_writes) and the data-quality report.",
)
CHECKS_JOB = define_asset_job("quality_checks", selection=AssetSelection.checks(*QUALITY_CHECKS),
                              executor_def=in_process_executor,
                              description="The data-quality checks of the unified tables (findings go to "
                                          "reconcile.quarantine and the report).")


def extraction_requests(context: ScheduleEvaluationContext | SensorEvaluationContext, app: str, *, trigger: str,
                        tags: dict[str, str] | None = None) -> list[RunRequest]:
    """One run of the app's extraction job per connection partition (the partitions the registry sensor keeps)."""
    stamp = (getattr(context, "scheduled_execution_time", None) or datetime.now(UTC)).isoformat()
    return [RunRequest(partition_key=key, run_key=f"{trigger}:{key}:{stamp}",
                       tags={TRIGGER_TAG: trigger, "ledgerlink/connection": key, **(tags or {})})
            for key in context.instance.get_dynamic_partitions(CONNECTION_PARTITIONS[app].name)]


def _schedules(app: str) -> list:
    # A schedule resolves its partitioned run requests against ONE job, and each app's raw assets have their own
    # partition set, so each app has its own pair; they fire together and their runs queue on the pool.
    job = EXTRACT_JOBS[app]

    @schedule(cron_schedule=INCREMENTAL_CRON, job=job, execution_timezone="UTC", name=f"incremental_sync_{app}",
              default_status=DefaultScheduleStatus.RUNNING,
              description=f"Every 15 minutes: an incremental {app} extraction run per connection; reconciliation and "
                          "write-back follow (sensor reconcile_after_sync).")
    def incremental(context: ScheduleEvaluationContext):
        return extraction_requests(context, app, trigger="schedule") or SkipReason(f"no {app} connections")

    @schedule(cron_schedule=SWEEP_CRON, job=job, execution_timezone="UTC", name=f"complete_sweep_{app}",
              default_status=DefaultScheduleStatus.RUNNING,
              description=f"Nightly: every {app} connection read whole (tag {SWEEP_TAG}={COMPLETE_SWEEP}), the read "
                          "that detects deletes; reconciliation and write-back follow.")
    def sweep(context: ScheduleEvaluationContext):
        return (extraction_requests(context, app, trigger="sweep", tags={SWEEP_TAG: COMPLETE_SWEEP})
                or SkipReason(f"no {app} connections"))

    return [incremental, sweep]


SCHEDULES = [s for app in RAW_ASSETS for s in _schedules(app)]
INCREMENTAL_SCHEDULES = {app: f"incremental_sync_{app}" for app in RAW_ASSETS}
SWEEP_SCHEDULES = {app: f"complete_sweep_{app}" for app in RAW_ASSETS}


IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
               DagsterRunStatus.STARTED]
_RAW_KEYS = frozenset(key for assets_def in RAW_ASSETS.values() for key in assets_def.keys)


def is_extraction(run) -> bool:
    """An extraction run, whoever launched it: our jobs, or an asset run / UI backfill of raw assets."""
    return run.job_name.startswith("extract_") or bool(set(run.asset_selection or ()) & _RAW_KEYS)


def follow_up(instance, cursor: str | None) -> tuple[list[RunRequest], str | None, str]:
    """The chaining decision, separated from the sensor for tests: (requests, new cursor, why)."""
    after = datetime.fromisoformat(cursor) if cursor else None
    busy = [r for r in instance.get_runs(RunsFilter(statuses=IN_PROGRESS)) if is_extraction(r)]
    if busy:
        return [], cursor, f"{len(busy)} extraction runs still queued or running"
    finished = [r for r in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS],
                                                               updated_after=after))
                if is_extraction(r.dagster_run)]
    if not finished:
        return [], cursor, "no extraction finished since the last reconciliation"
    newest = max(r.update_timestamp for r in finished).astimezone(UTC).isoformat()
    connections = sorted({r.dagster_run.tags.get("ledgerlink/connection") or r.dagster_run.tags.get(
        "dagster/partition", "?") for r in finished})
    tags = {TRIGGER_TAG: "sync", "ledgerlink/after": ",".join(connections)[:200]}
    return ([RunRequest(job_name=RECONCILE_JOB.name, run_key=f"reconcile:{newest}", tags=tags),
             RunRequest(job_name=CHECKS_JOB.name, run_key=f"checks:{newest}", tags=tags)],
            newest, f"after {len(finished)} extraction runs ({', '.join(connections)})")


@sensor(minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING, jobs=[RECONCILE_JOB, CHECKS_JOB],
        name="reconcile_after_sync",
        description="Once extraction runs have finished (and none is queued or running): one reconciliation and "
                    "write-back run for everything they loaded, then the quality checks.")
def reconcile_after_sync(context: SensorEvaluationContext):
    requests, cursor, why = follow_up(context.instance, context.cursor)
    if cursor != context.cursor:
        context.update_cursor(cursor)
    if not requests:
        return SkipReason(why)
    context.log.info(f"reconciling {why}")
    return requests

