"""Thin Dagster wrapper: one multi-asset writing every `unified.<table>` and `unified.quarantine` (assets
`unified/<table>`, group "unified"). The logic is in build.py (validate + quarantine), mapping.py (field maps)
and the per-app modules.

Unpartitioned on purpose: the unified tables are one cross-app view (a Sequence customer and its QuickBooks
twin sit side by side for reconcile), rebuilt from raw for every tenant in one pass and replaced in one
transaction, so readers never see one app's rows refreshed and the other's stale. Raw is partitioned per
connection (`<tenant>.<app>`); mapping all of it takes seconds (100k invoices a tenant included), far less than
extracting one connection, so per-connection partitions would only add bookkeeping.
"""

from collections import Counter
from datetime import UTC, datetime

from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from assets.resources import Ledgerlink
from assets.unified.build import APPS, QUARANTINE_TABLE, TABLES, build
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, replace_tables

GROUP = "unified"
REJECTED_TABLE = "rejected_records"


def raw_key(app: str, table: str) -> AssetKey:
    """The extraction asset that writes a raw table (a child table `<table>__<field>` comes with its parent)."""
    return AssetKey([f"raw_{app}", table.split("__")[0]])


def _deps(table: str) -> list[AssetKey]:
    keys = {raw_key(app, raw) for app, module in APPS.items() for raw in module.SOURCES.get(table, ())}
    return sorted(keys, key=lambda key: key.to_user_string())


def _all_raw_keys() -> list[AssetKey]:
    keys = {raw_key(app, raw) for app, module in APPS.items() for raw in module.RAW}
    return sorted(keys, key=lambda key: key.to_user_string())


SPECS = [
    *(AssetSpec(AssetKey([GROUP, table]), deps=_deps(table), group_name=GROUP, kinds={"polars", "duckdb"},
                description=f"unified.{table}: every tenant's and app's rows in one model (checks/unified.py), "
                            f"validated; rows that fail are in unified.quarantine.")
      for table in TABLES),
    AssetSpec(AssetKey([GROUP, QUARANTINE_TABLE]), deps=_all_raw_keys(), group_name=GROUP, kinds={"polars", "duckdb"},
              description="unified.quarantine: records kept out of the unified model, one row per record and "
                          "failed check (tenant, app, entity, id, check, field, reason, detected_at)."),
]


def _tenant_table(counts: dict[str, dict[str, int]]) -> MetadataValue:
    apps = sorted({app for per_app in counts.values() for app in per_app})
    lines = ["| tenant | " + " | ".join(apps) + " |", "|---" * (len(apps) + 1) + "|"]
    lines += [f"| {tenant} | " + " | ".join(str(per_app.get(app, 0)) for app in apps) + " |"
              for tenant, per_app in counts.items()]
    return MetadataValue.md("\n".join(lines))


@multi_asset(specs=SPECS, name="unified", pool=WAREHOUSE_POOL, can_subset=False)
def unified(context: AssetExecutionContext, ledgerlink: Ledgerlink):
    warehouse = ledgerlink.warehouse
    with connect(warehouse, read_only=True) as con:
        raw = {app: {table: read_table(con, f"raw_{app}.{table}") for table in [*module.RAW, REJECTED_TABLE]}
               for app, module in APPS.items()}
    registry = ledgerlink.registry()
    # each app maps with its own connection's settings (its tax codes, its custom fields)
    app_settings = {app: {c.tenant: c.settings for c in registry.for_app(app)} for app in APPS}
    result = build(raw, registry.tenant_settings, detected_at=datetime.now(UTC), app_settings=app_settings)
    frames = {f"unified.{table}": frame for table, frame in result.tables.items()}
    frames[f"unified.{QUARANTINE_TABLE}"] = result.quarantine
    replace_tables(warehouse, frames)

    quarantine = result.quarantine
    for table in TABLES:
        rows, held = result.tables[table].height, result.quarantined(table)
        metadata = {
            "rows": MetadataValue.int(rows),
            "rows_by_tenant": _tenant_table(result.counts(table)),
            "quarantined": MetadataValue.int(held),
        }
        context.log.info(f"unified.{table}: {rows} rows, {held} quarantined")
        yield MaterializeResult(asset_key=AssetKey([GROUP, table]), metadata=metadata)
    by_check = Counter(quarantine.get_column("check").to_list())
    by_tenant: dict[str, dict[str, int]] = {}
    for tenant, app, rows in quarantine.group_by("tenant", "app").len().sort("tenant", "app").iter_rows():
        by_tenant.setdefault(tenant or "(none)", {})[app] = rows
    yield MaterializeResult(asset_key=AssetKey([GROUP, QUARANTINE_TABLE]), metadata={
        "rows": MetadataValue.int(quarantine.height),
        "rows_by_check": MetadataValue.json(dict(sorted(by_check.items()))),
        "rows_by_tenant": _tenant_table(by_tenant),
    })


UNIFIED_ASSETS = [unified]
