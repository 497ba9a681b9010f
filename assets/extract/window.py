"""Window re-reads: "re-read everything the apps changed between 2026-03-01 and 2026-03-31", for every tenant of
one app (or all apps, or a few tenants), launched as a backfill from the Dagster UI, without resetting the
incremental cursors and without re-reading everything. Reconciliation follows as after any extraction.

Design: one time-partitioned asset per app, `window_<app>` (group `window_backfill`, job `window_backfill`),
daily partitions (UTC) and `BackfillPolicy.single_run()`. The operator picks the date range in the UI's partition
picker (e.g. `[2026-03-01...2026-03-31]`); the backfill is ONE run over that partition range, whose step reads the
window [first day 00:00, day after the last 00:00) once per connection of the app, into the same raw_<app> tables,
merged on (tenant, id) like every extraction (rejected records to raw_<app>.rejected_records as usual). The tag
`ledgerlink/tenants=acme,globex` (the launch dialog's "Add tags") narrows it to those tenants.

Why this and not the alternatives:
- A multi-partition (day x connection) asset would show a grid of days x connections, turn a one-month re-read of N
  connections into 31*N partitions, and repeat the connection partitions the registry sensor already keeps (and
  the raw assets cannot change their partitioning without breaking the schedules, sensors and tenant mapping).
- A run tag on the existing `raw_<app>/*` backfill needs the dates typed by hand (no picker, no validation, no
  record in the asset's partition history), and would mix window reads into the assets whose partitions mean
  "this connection's latest sync".
- Here a day is materialized when a window covering it was re-read, so the asset's partition bar shows which days
  were re-read; single_run keeps a month to one bounded read per connection (not 31); and the connection's own
  partitions, schedules and cursors are untouched.

Bounded, stateless reads, the dlt way (`dlt.sources.incremental(..., end_value=...)` reads a closed range against
"a mock state ... discarded after extract step", dlt/extract/incremental): each source takes
`window=Window(start, end)` and then uses the app's own server-side filter: QuickBooks a query on
MetaData.LastUpdatedTime, Xero If-Modified-Since plus `where UpdatedDateUTC >= / < DateTime(...)`, HubSpot a search
on the modification date between the bounds, Salesforce `SystemModstamp >= … AND < …` in SOQL (queryAll: the
window's deletes too). Sequence and Attio have no such filter:
their lists are swept and filtered here (Sequence on `updatedAt`; Attio on `created_at` and the values'
`active_from`, Attio having no record modification date at all). Collections without any modification date are
left out (each source's docstring says which; they are read whole by every run or reloaded by the nightly sweep).
The run goes through a second dlt pipeline of the connection (`<app>__<tenant>__window`, assets/extract/loading.py
make_pipeline): its state is its own, so whatever a source did, the incremental pipeline's cursors cannot move.
A window re-read never deletes from a read that is not complete; only the apps' own delete signals inside the
window (Salesforce's recycle bin, HubSpot's archive) become tombstones.

Every connection read is one row of ops.sync_runs with its window (window_start, window_end). One connection's
failure is recorded and the others go on; the run then fails naming it. The chaining sensor
(pipelines/schedules.py reconcile_after_sync) sees these runs as extractions of the tenants they name
(`window_tenants`): every tenant, or those of the tag.
"""

import warnings
from collections.abc import Callable, Mapping
from datetime import UTC

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
    in_process_executor,
)

from assets.extract.assets import SOURCES
from assets.extract.loading import Window, make_pipeline
from assets.partitions import TenantsFailed
from assets.resources import Ledgerlink
from assets.runs import recorded_sync, rows_loaded
from assets.warehouse import WAREHOUSE_POOL
from connectors.registry import Connection, Registry

# The first day a window can start: earlier changes are the complete sweep's business. Days end at midnight UTC;
# end_offset=1 lets a window include today (what changed so far).
WINDOW_FIRST_DAY = "2024-01-01"
WINDOW_PARTITIONS = DailyPartitionsDefinition(start_date=WINDOW_FIRST_DAY, end_offset=1, timezone="UTC")
TENANTS_TAG = "ledgerlink/tenants"  # optional, comma-separated: re-read only these tenants' connections
WINDOW_GROUP = WINDOW_JOB_NAME = "window_backfill"


def window_key(app: str) -> AssetKey:
    return AssetKey(f"window_{app}")


def tenants_from_tags(tags: Mapping[str, str]) -> list[str]:
    """The tenants a run's tag names ([] = every tenant)."""
    return sorted({t.strip() for t in (tags.get(TENANTS_TAG) or "").split(",") if t.strip()})


def selected_connections(registry: Registry, app: str, tags: Mapping[str, str]) -> list[Connection]:
    """The app's connections a window run covers: every one, or those of the tenants the tag names (a tenant the
    registry does not know is an error: a typo must not silently re-read nothing)."""
    wanted = tenants_from_tags(tags)
    if unknown := sorted(set(wanted) - set(registry.tenants)):
        raise ValueError(f"{TENANTS_TAG} names tenants the registry does not know: {', '.join(unknown)}")
    return [c for c in registry.for_app(app) if not wanted or c.tenant in wanted]


def reread_window(ledgerlink: Ledgerlink, app: str, window: Window, connections: list[Connection], *,
                  run_id: str, log: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Re-reads the window for each connection (its own window pipeline), records each in ops.sync_runs, and returns
    connection -> rows per table. Raises TenantsFailed at the end when some failed (the others were loaded)."""
    source = SOURCES[app]
    loaded: dict[str, dict[str, int]] = {}
    failed: dict[str, BaseException] = {}
    for connection in connections:
        pipeline = make_pipeline(app, connection.tenant, ledgerlink.warehouse, ledgerlink.state, purpose="window")
        log(f"re-reading {connection.key} for the window {window}")
        try:
            with recorded_sync(ledgerlink.warehouse, pipeline, run_id=run_id, tenant=connection.tenant, app=app,
                               window=(window.start, window.end)), ledgerlink.client(connection) as client:
                pipeline.run(source(client, connection.tenant, progress=log, window=window))
        except Exception as exc:  # one connection's outage never stops another's re-read
            failed[connection.tenant] = exc
            continue
        loaded[connection.key] = rows_loaded(pipeline)
    if failed:
        raise TenantsFailed(failed)
    return loaded


def _window_asset(app: str) -> AssetsDefinition:
    @asset(
        key=window_key(app),
        partitions_def=WINDOW_PARTITIONS,
        backfill_policy=BackfillPolicy.single_run(),
        group_name=WINDOW_GROUP,
        pool=WAREHOUSE_POOL,
        kinds={"dlt", "duckdb"},
        description=f"Re-reads what {app} changed in a date window (the partition range of a backfill: one run, one "
                    f"bounded read per connection) into raw_{app}, merged; incremental cursors untouched. Tag "
                    f"`{TENANTS_TAG}=a,b` to limit it to some tenants. Reconciliation follows.",
    )
    def _reread(context: AssetExecutionContext, ledgerlink: Ledgerlink) -> MaterializeResult:
        span = context.partition_time_window
        window = Window(span.start.astimezone(UTC), span.end.astimezone(UTC))
        connections = selected_connections(ledgerlink.registry(), app, context.run.tags)
        context.log.info(f"{app}: window {window}, {len(connections)} connections")
        loaded = reread_window(ledgerlink, app, window, connections, run_id=context.run_id, log=context.log.info)
        return MaterializeResult(metadata={
            "window_start": MetadataValue.text(window.start.isoformat()),
            "window_end": MetadataValue.text(window.end.isoformat()),
            "connections": MetadataValue.text(", ".join(loaded) or "(none)"),
            "rows_loaded": MetadataValue.int(sum(sum(t.values()) for t in loaded.values())),
            "tables": MetadataValue.json(loaded),
        })

    return _reread


with warnings.catch_warnings():  # backfill_policy is "beta" in Dagster 1.13: known, and this is its intended use
    warnings.simplefilter("ignore", BetaWarning)
    WINDOW_ASSETS: dict[str, AssetsDefinition] = {app: _window_asset(app) for app in SOURCES}
WINDOW_KEYS = frozenset(window_key(app) for app in WINDOW_ASSETS)
# Every app's window asset in one job: "Materialize all" on its graph re-reads the window for all apps (one run).
WINDOW_JOB = define_asset_job(
    WINDOW_JOB_NAME, selection=AssetSelection.assets(*WINDOW_ASSETS.values()), partitions_def=WINDOW_PARTITIONS,
    executor_def=in_process_executor,
    description="Re-read a date window (choose a partition range) for every app, or select one app's asset.")


def window_tenants(run) -> list[str] | None:
    """For the chaining sensor: None when the run is no window re-read, else the tenants it re-read (the tag's;
    [] = every tenant)."""
    if getattr(run, "job_name", None) != WINDOW_JOB_NAME and \
            not set(getattr(run, "asset_selection", None) or ()) & WINDOW_KEYS:
        return None
    return tenants_from_tags(run.tags)
