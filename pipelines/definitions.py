"""The one code location (workspace.yaml): every asset, resource, job, schedule and sensor."""

from dagster import Definitions
from dagster_dlt import DagsterDltResource

from assets.extract.assets import RAW_ASSETS
from assets.extract.window import WINDOW_ASSETS, WINDOW_JOB
from assets.quality.asset_checks import QUALITY_CHECKS
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.reports.assets import REPORT_ASSETS
from assets.resources import Ledgerlink
from assets.unified.assets import UNIFIED_ASSETS
from assets.unified.crm import CRM_ASSETS
from assets.writeback.assets import WRITEBACK_ASSETS
from pipelines.retire import RETIRE_JOB
from pipelines.schedules import CHECKS_JOB, RECONCILE_JOB, REPORT_JOB, SCHEDULES, reconcile_after_sync
from pipelines.schedules import EXTRACT_JOBS as EXTRACT_JOBS_BY_APP
from pipelines.sensors import connection_changes, connection_partitions_sensor

EXTRACT_JOBS = list(EXTRACT_JOBS_BY_APP.values())

defs = Definitions(
    assets=[*RAW_ASSETS.values(), *WINDOW_ASSETS.values(), *UNIFIED_ASSETS, *CRM_ASSETS, *RECONCILE_ASSETS,
            *REPORT_ASSETS, *WRITEBACK_ASSETS],
    asset_checks=QUALITY_CHECKS,
    jobs=[*EXTRACT_JOBS, RECONCILE_JOB, REPORT_JOB, CHECKS_JOB, RETIRE_JOB, WINDOW_JOB],
    schedules=SCHEDULES,
    sensors=[connection_partitions_sensor, connection_changes, reconcile_after_sync],
    resources={"dlt": DagsterDltResource(), "ledgerlink": Ledgerlink()},
)
