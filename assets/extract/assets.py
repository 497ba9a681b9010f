"""Thin Dagster wrappers: one multi-asset per app, one asset per dlt resource (`raw_<app>/<table>`),
partitioned per connection. The dlt sources hold the logic."""


from collections.abc import Callable
from pathlib import Path

import dlt
from dagster import AssetExecutionContext, AssetKey, AssetSpec, AssetsDefinition
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from assets.extract.attio import attio_source
from assets.extract.hubspot import hubspot_source
from assets.extract.quickbooks import quickbooks_source
from assets.extract.salesforce import salesforce_source
from assets.extract.sequence import sequence_source
from assets.extract.xero import xero_source
from assets.partitions import CONNECTION_PARTITIONS
from assets.runs import recorded_sync
from assets.resources import Ledgerlink

from assets.warehouse import WAREHOUSE_POOL

# A run tagged so reads each source whole (the nightly complete sweep, pipelines/schedules.py): no CDC or
# modified-since cursor, and the sources that can tell deletes from a complete read do so.
SWEEP_TAG = "ledgerlink/sweep"
COMPLETE_SWEEP = "complete"


class RawTranslator(DagsterDltTranslator):
    def __init__(self, app: str):
        self.app = app

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        spec = super().get_asset_spec(data)
        table = str(data.resource.table_name)
        return spec.replace_attributes(
            key=AssetKey([f"raw_{self.app}", table.replace("-", "_")]),
            deps=[],
            group_name="extract",
            description=f"{self.app} `{table}` as the app returns it, one row per record and tenant "
                        f"(DuckDB raw_{self.app}.{table}).",
            kinds={"dlt", "duckdb"},
        )


def _template_pipeline(app: str) -> dlt.Pipeline:
    # Only describes the destination to dagster-dlt; each run uses its connection's own pipeline.
    return dlt.pipeline(pipeline_name=f"{app}__template", destination="duckdb", dataset_name=f"raw_{app}",
                        pipelines_dir=str(Path("data/state/dlt-template")))


def _raw_assets(app: str, source: Callable) -> AssetsDefinition:
    @dlt_assets(
        dlt_source=source(),
        dlt_pipeline=_template_pipeline(app),
        name=f"raw_{app}",
        partitions_def=CONNECTION_PARTITIONS[app],
        dagster_dlt_translator=RawTranslator(app),
        pool=WAREHOUSE_POOL,
    )
    def _extract(context: AssetExecutionContext, dlt: DagsterDltResource, ledgerlink: Ledgerlink):
        connection = ledgerlink.registry().get(context.partition_key)
        if connection.app != app:
            raise ValueError(f"partition {context.partition_key} is not a {app} connection")
        full = context.run.tags.get(SWEEP_TAG) == COMPLETE_SWEEP
        context.log.info(f"extracting {connection.key} from {connection.base_url}"
                         + (" (complete sweep)" if full else ""))
        pipeline = ledgerlink.pipeline(connection)
        with recorded_sync(ledgerlink.warehouse, pipeline, run_id=context.run_id, tenant=connection.tenant, app=app), \
                ledgerlink.client(connection) as client:
            yield from dlt.run(
                context=context,
                dlt_source=source(client, connection.tenant, progress=context.log.info, full=full),
                dlt_pipeline=pipeline,
            )

    return _extract


# app -> its dlt source; a new app adds one line here (and its entries in connectors/registry.py)
SOURCES: dict[str, Callable] = {"sequence": sequence_source, "quickbooks": quickbooks_source, "xero": xero_source,
                                "hubspot": hubspot_source}
SOURCES["salesforce"] = salesforce_source
SOURCES["attio"] = attio_source
RAW_ASSETS: dict[str, AssetsDefinition] = {app: _raw_assets(app, source) for app, source in SOURCES.items()}
raw_sequence = RAW_ASSETS["sequence"]
raw_quickbooks = RAW_ASSETS["quickbooks"]
