"""The one code location (workspace.yaml): every asset, resource, job, schedule and sensor."""

from dagster import Definitions, define_asset_job
from dagster_dlt import DagsterDltResource

from assets.extract.assets import RAW_ASSETS
from assets.quality.asset_checks import QUALITY_CHECKS
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.reports.assets import REPORT_ASSETS
from assets.resources import Ledgerlink
from assets.unified.assets import UNIFIED_ASSETS
from assets.writeback.assets import WRITEBACK_ASSETS
from pipelines.sensors import connection_partitions_sensor

EXTRACT_JOBS = [define_asset_job(f"extract_{app}", selection=[assets_def]) for app, assets_def in RAW_ASSETS.items()]

defs = Definitions(
    assets=[*RAW_ASSETS.values(), *UNIFIED_ASSETS, *RECONCILE_ASSETS, *REPORT_ASSETS, *WRITEBACK_ASSETS],
    asset_checks=QUALITY_CHECKS,
    jobs=EXTRACT_JOBS,
    sensors=[connection_partitions_sensor],
    resources={"dlt": DagsterDltResource(), "ledgerlink": Ledgerlink()},
)
