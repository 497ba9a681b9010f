"""When Ledgerlink runs by itself: the jobs, the two schedules and the sensor that chains reconciliation.

- `incremental_sync_<app>` (every 15 minutes): one run of `extract_<app>` per connection partition of the app, each
  reading only what changed since its cursor (CDC, If-Modified-Since, search, SystemModstamp; Sequence and Attio
  sweep). A tenant's failure is its own run's failure: the other partitions' runs go on.
- `complete_sweep_<app>` (nightly, 02:00 UTC): the same runs tagged `ledgerlink/sweep=complete`; each source then
  reads everything (`full=True`, assets/extract/assets.py), the read that may detect deletes an incremental read cannot
  (QuickBooks ids gone from a sweep, Salesforce's recycle bin via queryAll, Attio and Sequence records missing).
- `reconcile_after_sync` (sensor, each loop of the daemon, ~5 s: it only reads the run history), in two steps:
  1. per tenant: once that tenant's extraction runs have finished and none of its own is still queued or in
     progress, one run of `reconcile_and_write_back` for that tenant's partition (`tenants`: unified -> reconcile
     -> write-back plan and apply), run key `reconcile:<tenant>:<its newest finished sync>`; after a change's
     extraction, at the change's priority (CHANGE_PRIORITY: ahead of scheduled runs in the queue and the pool),
     waiting only for that tenant's other changes in flight (its scheduled extractions reconcile after them). A
     tenant whose extraction hangs, or whose reconciliation fails, holds back no other tenant: each has its own runs.
  2. once no extraction nor reconciliation run is queued or in progress and none finished in the last
     REPORT_SETTLE (or REPORT_MAX_WAIT after the first reconciliation not reported yet, whatever scheduled runs
     are in flight, but not a change's), and some reconciliation finished (succeeded or failed) since the last
     report: one run of `data_quality_report` (every tenant) and one of `quality_checks`, at a low priority: they
     hold the `warehouse` pool, and a change arriving meanwhile would wait for them.

Why a chaining sensor rather than the alternatives:
- Declarative automation (`AutomationCondition.eager()`) would need conditions on every downstream asset (the
  write-back assets are not this module's), fires on each upstream partition's update (a 15-minute round of N
  connections of one tenant would launch up to N reconciliations of it unless tuned), cannot see the
  connection -> tenant mapping (assets/partitions.py: the daemon drops custom partition mappings), and its
  blocking asset checks would hold reconciliation back when a tenant has a bad row.
- A `run_status_sensor` on success of the extraction jobs fires once per finished run: N runs, N reconciliations.
- This sensor debounces per tenant: it asks for one reconciliation of a tenant for everything of that tenant that
  finished since its cursor, whether the extraction came from a schedule, the change sensor (pipelines/sensors.py)
  or a backfill launched in the UI. Its run keys make a repeated tick harmless. The report and the quality checks
  run in runs of their own (as `ledgerlink demo` does): the checks' failures are findings for the report, not a
  reason to stop any tenant's reconciliation.

Backfills from the UI over `tenants` (the reconcile job or its assets): one run per tenant (Dagster's default
policy for dynamic partitions), so a failing tenant fails only its own run there too; the assets accept a
partition range as well (each tenant in its own transaction) should a single-run policy be chosen.

Concurrency: every step that touches the warehouse takes the `warehouse` pool (limit 1 in dagster.yaml, written
by pipelines/runtime.dagster_home), so the runs these schedules launch together queue rather than collide on the
single DuckDB writer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    schedule,
    sensor,
)

from assets.extract.assets import COMPLETE_SWEEP, RAW_ASSETS, SWEEP_TAG
from assets.extract.window import window_tenants
from assets.partitions import CONNECTION_PARTITIONS, TENANT_PARTITIONS, tenant_of
from assets.quality.asset_checks import QUALITY_CHECKS
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.reports.assets import REPORT_ASSETS
from assets.unified.assets import UNIFIED_ASSETS
from assets.writeback.assets import WRITEBACK_ASSETS

TRIGGER_TAG = "ledgerlink/trigger"  # schedule | sweep | change: why an extraction run was asked for
# Dagster's run priority (higher first, default 0), used by the run queue and by the pools' waiting steps
PRIORITY_TAG = "dagster/priority"
CHANGE_PRIORITY = "10"  # a change's extraction and its tenant's reconciliation: the near-real-time loop
REPORT_PRIORITY = "-10"  # the report and the checks: nobody waits for them
# The report waits for a quiet moment: nothing extracting or reconciling, and the last reconciliation REPORT_SETTLE
# ago (a write-back's own writes come back as a change within a probe period, and reconcile again). REPORT_MAX_WAIT
# after the first reconciliation it has not reported, it no longer waits for scheduled runs, only for a change's
# runs in flight (they would queue behind it); REPORT_MAX_WAIT_CHANGES after, for nothing.
REPORT_SETTLE = timedelta(seconds=30)
REPORT_MAX_WAIT = timedelta(minutes=5)
REPORT_MAX_WAIT_CHANGES = timedelta(minutes=15)
CHAIN_INTERVAL_SECONDS = 1  # every daemon loop (~5 s): a 5 s minimum would skip every other loop on jitter
INCREMENTAL_CRON = "*/15 * * * *"
SWEEP_CRON = "0 2 * * *"

# In-process executor: the steps run one at a time anyway (the `warehouse` pool), and a step subprocess would
# import Dagster, dlt and Polars a second time per run (seconds, most of a near-real-time run's latency).
EXTRACT_JOBS = {app: define_asset_job(f"extract_{app}", selection=[assets_def], executor_def=in_process_executor)
                for app, assets_def in RAW_ASSETS.items()}
RECONCILE_JOB = define_asset_job(
    "reconcile_and_write_back",
    selection=AssetSelection.assets(*UNIFIED_ASSETS, *RECONCILE_ASSETS, *WRITEBACK_ASSETS).without_checks(),
    partitions_def=TENANT_PARTITIONS,
    executor_def=in_process_executor,
    description="One tenant (partition): its unified model, its reconciliation and its write-back (plan, then "
                "apply: the sandbox is written to, other apps only with allow_writes).",
)
REPORT_JOB = define_asset_job("data_quality_report", selection=AssetSelection.assets(*REPORT_ASSETS),
                              executor_def=in_process_executor,
                              description="The data-quality report over every tenant and app.")
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
_TENANT_KEYS = frozenset(key for assets_def in (*UNIFIED_ASSETS, *RECONCILE_ASSETS, *WRITEBACK_ASSETS)
                         for key in assets_def.keys)
ANY_TENANT = "*"  # an extraction run that names no connection concerns every tenant


def is_extraction(run) -> bool:
    """An extraction run, whoever launched it: our jobs, or an asset run / UI backfill of raw assets, or a window
    re-read (assets/extract/window.py)."""
    return run.job_name.startswith("extract_") or bool(set(run.asset_selection or ()) & _RAW_KEYS) \
        or window_tenants(run) is not None


def is_change(run) -> bool:
    """A run of the near-real-time loop: a change's extraction (pipelines/sensors.py) or what followed it."""
    return run.tags.get(PRIORITY_TAG) == CHANGE_PRIORITY


def is_reconciliation(run) -> bool:
    """A run of a tenant's reconciliation: our job, or an asset run / UI backfill of the per-tenant assets."""
    return run.job_name == RECONCILE_JOB.name or bool(set(run.asset_selection or ()) & _TENANT_KEYS)


def run_tenant(run) -> str:
    """The tenant an extraction run concerns (`<tenant>.<app>` -> `<tenant>`), ANY_TENANT when it names none."""
    if (window := window_tenants(run)) is not None:  # a window re-read's partitions are days, not connections
        return window[0] if len(window) == 1 else ANY_TENANT
    key = run.tags.get("ledgerlink/connection") or run.tags.get("dagster/partition")
    return tenant_of(key) if key else ANY_TENANT


# The run storage keeps update times in whole seconds: every query reads one second back, and the runs already
# dealt with in that second are known by id (a run finishing in the second of the last one is not missed).
OVERLAP = timedelta(seconds=1)


def read_cursor(cursor: str | None) -> dict:
    """{"floor": instant, "done": {run id: its update time}, "reported": instant, "reported_ids": {...}}; an older
    cursor (one instant) is both instants."""
    state = {"floor": None, "done": {}, "reported": None, "reported_ids": {}}
    if not cursor:
        return state
    if not cursor.startswith("{"):
        return {**state, "floor": cursor, "reported": cursor}
    return {**state, **orjson.loads(cursor)}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _since(instance, statuses: list, after: str | None, done: dict[str, str], wanted) -> list:
    """Run records of these statuses updated from `after` (one second back) on, that `wanted` accepts and that are
    not among `done`."""
    start = datetime.fromisoformat(after) - OVERLAP if after else None
    return [r for r in instance.get_run_records(RunsFilter(statuses=statuses, updated_after=start))
            if wanted(r.dagster_run) and r.dagster_run.run_id not in set(done)]


def _remember(done: dict[str, str], records: list, ids: set[str], floor: datetime | None) -> dict[str, str]:
    """The runs dealt with (`done` and those of `records` in `ids`) that the next query, from `floor` one second
    back, still reads."""
    merged = {**done, **{r.dagster_run.run_id: _iso(r.update_timestamp) for r in records
                         if r.dagster_run.run_id in ids}}
    return {i: at for i, at in sorted(merged.items())
            if floor is None or datetime.fromisoformat(at) >= floor - OVERLAP}


def follow_up(instance, cursor: str | None, tenants: list[str] | None = None, now: datetime | None = None
              ) -> tuple[list[RunRequest], str | None, str, list[str]]:
    """The chaining decision, separated from the sensor for tests: (requests, new cursor, why, tenant partitions
    to add first). `tenants`: the tenant partitions that exist (default: the instance's)."""
    state = read_cursor(cursor)
    known = list(instance.get_dynamic_partitions(TENANT_PARTITIONS.name)) if tenants is None else list(tenants)
    in_progress = instance.get_runs(RunsFilter(statuses=IN_PROGRESS))
    busy = {run_tenant(r) for r in in_progress if is_extraction(r)}
    # a change's extraction waits only for the tenant's other changes in flight: its scheduled runs reconcile after
    busy_changes = {run_tenant(r) for r in in_progress if is_extraction(r) and is_change(r)}
    finished = _since(instance, [DagsterRunStatus.SUCCESS], state["floor"], state["done"], is_extraction)
    by_tenant: dict[str, list] = {}
    for record in finished:
        tenant = run_tenant(record.dagster_run)
        # a run that names no connection (an unpartitioned asset run): every tenant reconciles after it
        for each in (known if tenant == ANY_TENANT else [tenant]):
            by_tenant.setdefault(each, []).append(record)
    requests, reasons, held, add, consumed, held_tenants = [], [], [], [], set(), set()
    for tenant in sorted(by_tenant):
        records = by_tenant[tenant]
        blocking = busy_changes if any(is_change(r.dagster_run) for r in records) else busy
        if tenant in blocking or ANY_TENANT in blocking or (blocking and any(run_tenant(r.dagster_run) == ANY_TENANT
                                                                             for r in records)):
            held += [r.update_timestamp for r in records]
            held_tenants.add(tenant)
            reasons.append(f"{tenant}: extraction still queued or running")
            continue
        newest = max(records, key=lambda r: r.update_timestamp)
        consumed |= {r.dagster_run.run_id for r in records}
        if tenant not in known:
            add.append(tenant)  # the registry sensor adds it too; asked here so this run can start now
        connections = sorted({r.dagster_run.tags.get("ledgerlink/connection")
                              or r.dagster_run.tags.get("dagster/partition", "?") for r in records})
        # after a change's extraction, the reconciliation keeps the change's place ahead of the queue
        priority = max((int(r.dagster_run.tags.get(PRIORITY_TAG, "0") or 0) for r in records), default=0)
        requests.append(RunRequest(
            job_name=RECONCILE_JOB.name, partition_key=tenant,
            run_key=f"reconcile:{tenant}:{_iso(newest.update_timestamp)}:{newest.dagster_run.run_id}",
            tags={TRIGGER_TAG: "sync", "ledgerlink/tenant": tenant, "ledgerlink/after": ",".join(connections)[:200],
                  **({PRIORITY_TAG: str(priority)} if priority else {})}))
        reasons.append(f"{tenant} after {len(records)} extraction runs ({', '.join(connections)})")
    consumed -= {r.dagster_run.run_id for t, records in by_tenant.items() if t in held_tenants for r in records}
    stamps = [r.update_timestamp for r in finished]
    old_floor = datetime.fromisoformat(state["floor"]) if state["floor"] else None
    # the next query starts at the oldest run still held back (it must be seen again), else at the newest seen
    floor = min(held) if held else (max(stamps) if stamps else old_floor)
    state.update(floor=_iso(floor) if floor else None, done=_remember(state["done"], finished, consumed, floor))

    # 2. the report and the checks, once every extraction and reconciliation has finished (or waited too long)
    done = _since(instance, [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE], state["reported"],
                  state["reported_ids"], is_reconciliation)
    now = now or datetime.now(UTC)
    quiet = bool(done) and not requests and not any(is_extraction(r) or is_reconciliation(r) for r in in_progress) \
        and now - max(r.update_timestamp for r in done) >= REPORT_SETTLE
    changing = any(is_change(r) for r in [*in_progress, *requests])
    waited = now - min(r.update_timestamp for r in done) if done else timedelta(0)
    overdue = waited >= (REPORT_MAX_WAIT_CHANGES if changing else REPORT_MAX_WAIT)
    if done and not quiet and not overdue:
        reasons.append(f"report and checks wait for a quiet moment ({len(done)} reconciliations to report)")
    elif done:
        newest = max(r.update_timestamp for r in done)
        tenants_done = sorted({r.dagster_run.tags.get("dagster/partition") or "all" for r in done})
        tags = {TRIGGER_TAG: "reconciliation", "ledgerlink/after": ",".join(tenants_done)[:200],
                PRIORITY_TAG: REPORT_PRIORITY}
        key = f"{_iso(newest)}:{max(r.dagster_run.run_id for r in done)}"
        requests += [RunRequest(job_name=REPORT_JOB.name, run_key=f"report:{key}", tags=tags),
                     RunRequest(job_name=CHECKS_JOB.name, run_key=f"checks:{key}", tags=tags)]
        reasons.append(f"report and checks after {len(done)} reconciliation runs ({', '.join(tenants_done)})")
        state.update(reported=_iso(newest), reported_ids=_remember(
            state["reported_ids"], done, {r.dagster_run.run_id for r in done}, newest))
    why = "; ".join(reasons) or "no extraction nor reconciliation finished since the last tick"
    return requests, orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode(), why, add


@sensor(minimum_interval_seconds=CHAIN_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
        jobs=[RECONCILE_JOB, REPORT_JOB, CHECKS_JOB], name="reconcile_after_sync",
        description="Per tenant, once its extraction runs have finished (and none of its own is queued or "
                    "running): one reconciliation and write-back run of that tenant; once those have finished, the "
                    "data-quality report and the quality checks.")
def reconcile_after_sync(context: SensorEvaluationContext):
    requests, cursor, why, add = follow_up(context.instance, context.cursor)
    if cursor != context.cursor:
        context.update_cursor(cursor)
    if not requests:
        return SkipReason(why)
    context.log.info(f"requested: {why}")
    return SensorResult(run_requests=requests,
                        dynamic_partitions_requests=[TENANT_PARTITIONS.build_add_request(add)] if add else None)
