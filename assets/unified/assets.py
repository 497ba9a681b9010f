"""Thin Dagster wrapper: one multi-asset writing every `unified.<table>` and `unified.quarantine` (assets
`unified/<table>`, group "unified"). The logic is in build.py (validate + quarantine), mapping.py (field maps)
and the per-app modules.

Partitioned per tenant (`tenants`, assets/partitions.py): a tenant's run reads only that tenant's raw rows and
settings, builds its model, and replaces only that tenant's rows of every unified table in one transaction (so
readers never see one app's rows refreshed and the other's stale, and other tenants' rows stay as they were). A
tenant whose build fails (a mapping error in its settings, a record that breaks the mapping) fails its own run;
the others go on. Each tenant depends on its own connections' extraction partitions (`<tenant>.<app>`,
TenantOfConnection). A run over several tenants (a partition range: a single-run backfill, `materialize_tenants`)
builds them one after another, each in its own transaction, drops the rows of tenants the registry no longer
holds when it covers every tenant, and fails at the end naming the tenants that failed.
"""

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from dagster import AssetDep, AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from assets.partitions import TENANT_OF_CONNECTION, TENANT_PARTITIONS, TenantsFailed, each_tenant, quietly, run_tenants
from assets.resources import Ledgerlink
from assets.unified.build import APPS, QUARANTINE, QUARANTINE_TABLE, TABLES, Build, build
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, replace_tenant_rows, retire_tenants
from connectors.registry import Registry

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


def _on_connections(keys: list[AssetKey]) -> list[AssetDep]:
    """Each tenant partition reads its own connections' partitions of these raw assets."""
    return quietly(lambda: [AssetDep(key, partition_mapping=TENANT_OF_CONNECTION) for key in keys])


SPECS = [
    *(AssetSpec(AssetKey([GROUP, table]), deps=_on_connections(_deps(table)), group_name=GROUP,
                kinds={"polars", "duckdb"}, partitions_def=TENANT_PARTITIONS,
                description=f"unified.{table}: every tenant's and app's rows in one model (checks/unified.py), "
                            f"validated; rows that fail are in unified.quarantine. One partition per tenant.")
      for table in TABLES),
    AssetSpec(AssetKey([GROUP, QUARANTINE_TABLE]), deps=_on_connections(_all_raw_keys()), group_name=GROUP,
              kinds={"polars", "duckdb"}, partitions_def=TENANT_PARTITIONS,
              description="unified.quarantine: records kept out of the unified model, one row per record and "
                          "failed check (tenant, app, entity, id, check, field, reason, detected_at)."),
]
UNIFIED_TABLES = [*(f"unified.{table}" for table in TABLES), f"unified.{QUARANTINE_TABLE}"]


def _tenant_table(counts: dict[str, dict[str, int]]) -> MetadataValue:
    apps = sorted({app for per_app in counts.values() for app in per_app})
    lines = ["| tenant | " + " | ".join(apps) + " |", "|---" * (len(apps) + 1) + "|"]
    lines += [f"| {tenant} | " + " | ".join(str(per_app.get(app, 0)) for app in apps) + " |"
              for tenant, per_app in counts.items()]
    return MetadataValue.md("\n".join(lines))


def build_tenant(warehouse: Path, registry: Registry, tenant: str, detected_at: datetime) -> Build:
    """One tenant's unified model, from that tenant's raw rows and settings only, of the apps it is connected to
    (the raw rows of a connection removed from the registry are kept as history, never unified again)."""
    connected = {c.app for c in registry.connections if c.tenant == tenant}
    with connect(warehouse, read_only=True) as con:
        raw = {app: {table: read_table(con, f"raw_{app}.{table}", tenants=[tenant]) if app in connected
                     else pl.DataFrame() for table in [*module.RAW, REJECTED_TABLE]}
               for app, module in APPS.items()}
    # each app maps with its own connection's settings (its tax codes, its custom fields)
    app_settings = {app: {c.tenant: c.settings for c in registry.for_app(app) if c.tenant == tenant} for app in APPS}
    return build(raw, {tenant: registry.tenant_settings.get(tenant, {})}, detected_at=detected_at,
                 app_settings=app_settings)


def write_tenant(warehouse: Path, tenant: str, result: Build) -> None:
    frames = {f"unified.{table}": frame for table, frame in result.tables.items()}
    frames[f"unified.{QUARANTINE_TABLE}"] = result.quarantine
    replace_tenant_rows(warehouse, frames, [tenant])


@multi_asset(specs=SPECS, name="unified", pool=WAREHOUSE_POOL, can_subset=False, partitions_def=TENANT_PARTITIONS)
def unified(context: AssetExecutionContext, ledgerlink: Ledgerlink):
    warehouse, registry = ledgerlink.warehouse, ledgerlink.registry()
    tenants, every = run_tenants(context, registry.tenants)
    at = datetime.now(UTC)

    def one(tenant: str) -> Build:
        result = build_tenant(warehouse, registry, tenant, at)
        write_tenant(warehouse, tenant, result)
        return result

    built, failed = each_tenant(tenants, one, context.log)
    if every:
        retire_tenants(warehouse, UNIFIED_TABLES, registry.tenants)
    if failed and not built:
        raise next(iter(failed.values())) if len(failed) == 1 else TenantsFailed(failed)

    results = list(built.values())
    tables = {table: pl.concat([r.tables[table] for r in results], how="vertical") if results else pl.DataFrame()
              for table in TABLES}
    quarantine = (pl.concat([r.quarantine for r in results], how="vertical") if results
                  else pl.DataFrame(schema=QUARANTINE))
    for table in TABLES:
        rows, held = tables[table].height, sum(r.quarantined(table) for r in results)
        counts = {tenant: per_app for r in results for tenant, per_app in r.counts(table).items()}
        metadata = {
            "rows": MetadataValue.int(rows),
            "rows_by_tenant": _tenant_table(counts),
            "quarantined": MetadataValue.int(held),
        }
        context.log.info(f"unified.{table}: {rows} rows, {held} quarantined ({', '.join(built)})")
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
    if failed:  # every other tenant's rows are written: the run fails for the ones that did not make it
        raise TenantsFailed(failed)


UNIFIED_ASSETS = [unified]
