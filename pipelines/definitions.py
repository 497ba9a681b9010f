"""The one code location (workspace.yaml): every asset, resource, job, schedule and sensor."""

from dagster import Definitions, define_asset_job
from dagster_dlt import DagsterDltResource

from assets.extract.assets import raw_quickbooks, raw_sequence
from assets.quality.asset_checks import QUALITY_CHECKS
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.reports.assets import REPORT_ASSETS
from assets.resources import Ledgerlink
from assets.unified.assets import UNIFIED_ASSETS
from assets.writeback.assets import WRITEBACK_ASSETS
from pipelines.sensors import connection_partitions_sensor

extract_sequence_job = define_asset_job("extract_sequence", selection=[raw_sequence])
extract_quickbooks_job = define_asset_job("extract_quickbooks", selection=[raw_quickbooks])

defs = Definitions(
    assets=[raw_sequence, raw_quickbooks, *UNIFIED_ASSETS, *RECONCILE_ASSETS, *REPORT_ASSETS, *WRITEBACK_ASSETS],
    asset_checks=QUALITY_CHECKS,
    jobs=[extract_sequence_job, extract_quickbooks_job],
    sensors=[connection_partitions_sensor],
    resources={"dlt": DagsterDltResource(), "ledgerlink": Ledgerlink()},
)
