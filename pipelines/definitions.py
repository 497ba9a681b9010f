"""The one code location (workspace.yaml): every asset, resource, job, schedule and sensor."""

from dagster import Definitions, define_asset_job
from dagster_dlt import DagsterDltResource

from assets.extract.assets import raw_quickbooks, raw_sequence
from assets.resources import Ledgerlink
from pipelines.sensors import connection_partitions_sensor

extract_sequence_job = define_asset_job("extract_sequence", selection=[raw_sequence])
extract_quickbooks_job = define_asset_job("extract_quickbooks", selection=[raw_quickbooks])

defs = Definitions(
    assets=[raw_sequence, raw_quickbooks],
    jobs=[extract_sequence_job, extract_quickbooks_job],
    sensors=[connection_partitions_sensor],
    resources={"dlt": DagsterDltResource(), "ledgerlink": Ledgerlink()},
)
