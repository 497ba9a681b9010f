"""Thin Dagster assets `reconcile/links` and `reconcile/mismatches` (group "reconcile"): read the unified tables
and the tenants' settings, run links.py / mismatches.py, replace the reconcile tables, and report counts as
metadata (a markdown table, and numbers per kind that the Dagster UI plots over runs).

Partitioned per tenant (`tenants`) like the unified model they read: reconciliation needs every app's rows of
one tenant side by side, never another tenant's. A tenant's run reads only that tenant's rows and settings and
replaces only that tenant's rows of reconcile.links and reconcile.mismatches, appends its counts to
reconcile.mismatch_history and advances its own intervals of reconcile.mismatch_log, in one transaction; a tenant
whose data or settings make reconciliation fail fails its own run only. A run over several tenants (a partition
range) reconciles them one after another (each in its own transaction), drops the links and mismatches of tenants
the registry no longer holds when it covers every tenant, and fails at the end naming the tenants that failed.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from assets.reconcile.crm import CRM_SPECS, find_crm_mismatches
from assets.reconcile.links import LINKS_SCHEMA, METHODS, MISMATCH_SCHEMA, build_links
from assets.reconcile.mismatches import ACTIONABLE_KINDS, KINDS, empty_mismatches, find_mismatches, invalid_records
from assets.reconcile.quickbooks import QUICKBOOKS
from assets.reconcile.xero import XERO
from assets.reconcile.rules import settings_frames
from assets.partitions import TENANT_PARTITIONS, TenantsFailed, each_tenant, run_tenants
from assets.resources import Ledgerlink
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, replace_tenant_rows, retire_tenants, table_exists
from checks.unified import MODEL, empty
from connectors.registry import Registry

GROUP = "reconcile"
LINKS_TABLE = "reconcile.links"
MISMATCHES_TABLE = "reconcile.mismatches"
HISTORY_TABLE = "reconcile.mismatch_history"  # counts per run: tenant, app, kind, count, at
# every mismatch with the interval it was seen in (valid_from, valid_to; null = still open): "what disagreed
# as of last Tuesday" and "when did this invoice start to differ" are plain SQL over it
LOG_TABLE = "reconcile.mismatch_log"
OUTBOX_TABLE = "writeback.outbox"
QUARANTINE_TABLES = ("unified.quarantine", "reconcile.quarantine")
UNIFIED_INPUTS = ("customers", "invoices", "invoice_lines", "credit_notes", "credit_note_lines", "products",
                  "accounts", "tax_codes", "companies", "contacts", "deals", "deal_companies", "custom_fields")
LINKS_KEY = AssetKey([GROUP, "links"])
MISMATCHES_KEY = AssetKey([GROUP, "mismatches"])
# the apps Sequence is reconciled against: an accounting system adds its AppSpec here
APP_SPECS = {spec.app: spec for spec in (QUICKBOOKS, XERO)}
# ... and the CRMs Sequence customers are reconciled against (their companies: crm.py)
RECONCILED_APPS = (*APP_SPECS, *CRM_SPECS)
HISTORY_SCHEMA = {"tenant": pl.String(), "app": pl.String(), "kind": pl.String(), "count": pl.Int64(),
                  "at": pl.Datetime("us", "UTC")}
LOG_SCHEMA = {**MISMATCH_SCHEMA, "valid_from": pl.Datetime("us", "UTC"), "valid_to": pl.Datetime("us", "UTC")}
# A mismatch is the same one across runs while these agree; new values (or a new reason) open a new interval.
LOG_IDENTITY = ("tenant", "app", "entity", "sequence_id", "app_id", "kind", "field", "sequence_value", "app_value")


# ----------------------------------------------------------------------------------------------------------
# Plain functions (the assets are wrappers around these)
# ----------------------------------------------------------------------------------------------------------


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """A unified table with exactly its contract's columns and types (absent table -> no rows; a column the
    warehouse does not have yet -> nulls), so the reconciliation never depends on what happened to be written."""
    if frame.width == 0:
        return empty(table)
    columns = {name: column.dtype.type for name, column in MODEL[table].columns.items()}
    return frame.select([pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
                         for name, dtype in columns.items()])


def read_unified(con: duckdb.DuckDBPyConnection, tenants: list[str] | None = None) -> dict[str, pl.LazyFrame]:
    return {table: conform(table, read_table(con, f"unified.{table}", tenants=tenants)).lazy()
            for table in UNIFIED_INPUTS}


def read_optional(con: duckdb.DuckDBPyConnection, qualified: str,
                  tenants: list[str] | None = None) -> pl.LazyFrame | None:
    return read_table(con, qualified, tenants=tenants).lazy() if table_exists(con, qualified) else None


def app_settings(registry: Registry) -> dict[str, dict[str, Mapping[str, Any]]]:
    """app -> tenant -> that connection's integration settings, for the apps reconciliation knows."""
    return {app: {c.tenant: dict(c.settings) for c in registry.for_app(app)}
            for app in RECONCILED_APPS if registry.for_app(app)}


def compute_links(unified: Mapping[str, pl.LazyFrame], settings: Mapping[str, Mapping[str, Mapping[str, Any]]], *,
                  outbox: pl.LazyFrame | None = None, linked_at: datetime) -> pl.DataFrame:
    # a CRM connection's settings inherit the tenant's product and tax mappings: those are the accounting apps'
    frames = {app: settings_frames(by_tenant) for app, by_tenant in settings.items() if app in APP_SPECS}
    links = build_links(unified, settings=frames, outbox=outbox, linked_at=linked_at)
    return (links.join(connected_apps(settings).lazy(), on=["tenant", "app"], how="semi")
            .sort("tenant", "app", "entity", "sequence_id", "app_id").collect())


def compute_mismatches(unified: Mapping[str, pl.LazyFrame], links: pl.LazyFrame,
                       settings: Mapping[str, Mapping[str, Mapping[str, Any]]], *,
                       quarantine: pl.LazyFrame | None = None, outbox: pl.LazyFrame | None = None) -> pl.DataFrame:
    """Every app's mismatches plus the records that failed a contract, in a stable order. `outbox`
    (writeback.outbox) tells which items write-back created, and when (see `mapped_after_sync`)."""
    parts = [find_mismatches(unified, links, settings_frames(by_tenant), APP_SPECS[app]) if app in APP_SPECS
             else find_crm_mismatches(unified, links, by_tenant, CRM_SPECS[app])
             for app, by_tenant in settings.items()]
    if quarantine is not None:
        parts.append(invalid_records(quarantine))
    frame = pl.concat(parts, how="vertical") if parts else empty_mismatches()
    if outbox is not None:
        frame = mapped_after_sync(frame, unified, outbox)
    return (frame.select(list(MISMATCH_SCHEMA)).cast(MISMATCH_SCHEMA)
            .sort("tenant", "app", "entity", "kind", "sequence_id", "app_id", "field", nulls_last=True)
            .collect())


def mapped_after_sync(mismatches: pl.LazyFrame, unified: Mapping[str, pl.LazyFrame],
                      outbox: pl.LazyFrame) -> pl.LazyFrame:
    """A product's item created by write-back applies to documents synced after it (the seed: documents sync
    when finalised or sent; linking a product creates an item so that synced lines are categorised). A line of
    a document the app already had, still on the old item, is a difference to know about, not a write to make:
    its action becomes `none` and its reason says why (the plan skips the same rows, assets/writeback/plan.py)."""
    if "operation" not in outbox.collect_schema().names():
        return mismatches
    created = (outbox.filter((pl.col("operation") == "create_item") & (pl.col("state") == "confirmed")
                             & pl.col("app_id").is_not_null())
               .select("tenant", "app", pl.col("app_id").alias("sequence_value"),
                       pl.col("confirmed_at").cast(pl.Datetime("us", "UTC")).alias("_mapped_at"))
               .unique(subset=["tenant", "app", "sequence_value"], keep="first"))
    synced = pl.concat([unified[table].filter(pl.col("app") != "sequence").select(
        "tenant", "app", pl.lit(entity).alias("entity"), pl.col("id").alias("app_id"),
        pl.col("created_at").alias("_synced_at")) for entity, table in (("invoice", "invoices"),
                                                                       ("credit_note", "credit_notes"))])
    later = ((pl.col("field") == "line.item") & (pl.col("proposed_action") == "update_in_app")
             & pl.col("_mapped_at").is_not_null()
             # no creation time: the document was in the app before the mapping (its line is elsewhere)
             & (pl.col("_synced_at").is_null() | (pl.col("_synced_at") < pl.col("_mapped_at"))))
    return (mismatches.lazy()
            .join(created, on=["tenant", "app", "sequence_value"], how="left")
            .join(synced, on=["tenant", "app", "entity", "app_id"], how="left")
            .with_columns(proposed_action=pl.when(later).then(pl.lit("none")).otherwise("proposed_action"),
                          reason=pl.when(later).then(pl.concat_str([
                              pl.col("reason"), pl.lit(" The product's item was created after this document was "
                                                       "synced: a mapping applies to documents synced after it, so "
                                                       "nothing is written (re-sync the document to move it).")]))
                          .otherwise("reason"))
            .drop("_mapped_at", "_synced_at"))


def history_rows(mismatches: pl.DataFrame, connected: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """This run's counts per (tenant, app, kind) for every connected tenant and every kind, zeros included, so a
    run that found nothing still shows in the history."""
    grid = connected.join(pl.DataFrame({"kind": list(KINDS)}), how="cross")
    counts = mismatches.group_by("tenant", "app", "kind").len("count")
    return (pl.concat([grid, counts.select("tenant", "app", "kind")], how="vertical").unique()
            .join(counts, on=["tenant", "app", "kind"], how="left", validate="1:1")
            .select("tenant", "app", "kind", pl.col("count").fill_null(0).cast(pl.Int64),
                    pl.lit(at, HISTORY_SCHEMA["at"]).alias("at"))
            .sort("tenant", "app", "kind"))


def advance_log(log: pl.DataFrame, mismatches: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """The mismatch log after a run at `at`: open intervals no longer found close at `at`, mismatches not open yet
    open at `at`, closed intervals stay as they were. Identity compares nulls as equal (a missing app_id is one
    value), so an unchanged mismatch keeps its first valid_from however many runs see it."""
    log = log.select(list(LOG_SCHEMA)).cast(LOG_SCHEMA)
    current = mismatches.select(list(MISMATCH_SCHEMA)).cast(MISMATCH_SCHEMA).unique(subset=list(LOG_IDENTITY),
                                                                                      keep="first")
    is_open = log.filter(pl.col("valid_to").is_null())
    still = is_open.join(current, on=list(LOG_IDENTITY), how="semi", nulls_equal=True)
    gone = (is_open.join(current, on=list(LOG_IDENTITY), how="anti", nulls_equal=True)
            .with_columns(valid_to=pl.lit(at, LOG_SCHEMA["valid_to"])))
    new = (current.join(is_open, on=list(LOG_IDENTITY), how="anti", nulls_equal=True)
           .with_columns(valid_from=pl.lit(at, LOG_SCHEMA["valid_from"]), valid_to=pl.lit(None, LOG_SCHEMA["valid_to"])))
    return (pl.concat([log.filter(pl.col("valid_to").is_not_null()), still, gone, new.select(list(LOG_SCHEMA))],
                      how="vertical")
            .sort("valid_from", "tenant", "app", "entity", "kind", "sequence_id", "app_id", "field", nulls_last=True))


def of_tenant(settings: Mapping[str, Mapping[str, Mapping[str, Any]]],
              tenant: str) -> dict[str, dict[str, Mapping[str, Any]]]:
    """app -> {tenant: settings} for one tenant's connections only."""
    return {app: {tenant: by_tenant[tenant]} for app, by_tenant in settings.items() if tenant in by_tenant}


def connected_apps(settings: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pl.DataFrame:
    return pl.DataFrame([(tenant, app) for app, by_tenant in settings.items() for tenant in by_tenant],
                        schema={"tenant": pl.String, "app": pl.String}, orient="row")


def _markdown(frame: pl.DataFrame, keys: list[str]) -> str:
    counts = frame.group_by(keys).len("rows").sort(keys)
    if counts.height == 0:
        return "_no rows_"
    lines = ["| " + " | ".join([*keys, "rows"]) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in counts.iter_rows()]
    return "\n".join(lines)


def _by(frame: pl.DataFrame, column: str) -> dict[str, int]:
    return dict(frame.group_by(column).len().iter_rows()) if frame.height else {}


def links_metadata(links: pl.DataFrame) -> dict[str, Any]:
    by_method, by_entity = _by(links, "method"), _by(links, "entity")
    metadata: dict[str, Any] = {
        "links_total": MetadataValue.int(links.height),
        "links": MetadataValue.md(_markdown(links, ["tenant", "app", "entity", "method"])),
    }
    metadata.update({f"links_{m}": MetadataValue.int(by_method.get(m, 0)) for m in METHODS})
    metadata.update({f"links_{e}": MetadataValue.int(n) for e, n in sorted(by_entity.items())})
    return metadata


def mismatches_metadata(mismatches: pl.DataFrame) -> dict[str, Any]:
    by_kind, by_tenant = _by(mismatches, "kind"), _by(mismatches, "tenant")
    actionable = mismatches.filter(pl.col("kind").is_in(sorted(ACTIONABLE_KINDS))
                                   & (pl.col("proposed_action") != "none")).height
    metadata: dict[str, Any] = {
        "mismatches_total": MetadataValue.int(mismatches.height),
        "mismatches_actionable": MetadataValue.int(actionable),
        "mismatches": MetadataValue.md(_markdown(mismatches, ["tenant", "app", "entity", "kind"])),
    }
    # every kind, zeros included, so each has a continuous history in the UI
    metadata.update({f"mismatches_{k}": MetadataValue.int(by_kind.get(k, 0)) for k in KINDS})
    metadata.update({f"mismatches_{k}": MetadataValue.int(n) for k, n in by_kind.items() if k not in KINDS})
    metadata.update({f"mismatches_tenant_{t}": MetadataValue.int(n) for t, n in sorted(by_tenant.items())})
    # per app, and per app and kind, zeros included for every reconciled app, so the UI plots each over runs
    by_app, by_app_kind = _by(mismatches, "app"), (
        {(a, k): n for a, k, n in mismatches.group_by("app", "kind").len().iter_rows()} if mismatches.height else {})
    for app in sorted(set(RECONCILED_APPS) | {a for a in by_app if a}):
        metadata[f"mismatches_app_{app}"] = MetadataValue.int(by_app.get(app, 0))
        if app != "sequence":  # Sequence's own rows are only `invalid`, counted above
            metadata.update({f"mismatches_{app}_{k}": MetadataValue.int(by_app_kind.get((app, k), 0))
                             for k in KINDS})
    return metadata


# ----------------------------------------------------------------------------------------------------------
# Assets
# ----------------------------------------------------------------------------------------------------------

_UNIFIED_DEPS = [AssetKey(["unified", table]) for table in UNIFIED_INPUTS]


def reconcile_links_of(warehouse: Path, settings: Mapping[str, Mapping[str, Mapping[str, Any]]],
                       tenant: str) -> pl.DataFrame:
    """One tenant's links, from that tenant's rows only, written over that tenant's rows of reconcile.links."""
    mine = of_tenant(settings, tenant)
    with connect(warehouse, read_only=True) as con:
        links = compute_links(read_unified(con, [tenant]), mine, outbox=read_optional(con, OUTBOX_TABLE, [tenant]),
                              linked_at=datetime.now(UTC))
    replace_tenant_rows(warehouse, {LINKS_TABLE: links}, [tenant])
    return links


def reconcile_mismatches_of(warehouse: Path, settings: Mapping[str, Mapping[str, Mapping[str, Any]]],
                            tenant: str, at: datetime) -> pl.DataFrame:
    """One tenant's mismatches, history counts and log intervals, written over that tenant's rows only."""
    mine, only = of_tenant(settings, tenant), [tenant]
    with connect(warehouse, read_only=True) as con:
        unified = read_unified(con, only)
        links = read_table(con, LINKS_TABLE, tenants=only)
        links = (links if links.width else pl.DataFrame(schema=LINKS_SCHEMA)).lazy()
        quarantines = [q for q in (read_optional(con, name, only) for name in QUARANTINE_TABLES) if q is not None]
        quarantine = pl.concat([q.select("tenant", "app", "entity", "id", "check", "field", "reason")
                                for q in quarantines], how="vertical_relaxed") if quarantines else None
        mismatches = compute_mismatches(unified, links, mine, quarantine=quarantine,
                                        outbox=read_optional(con, OUTBOX_TABLE, only))
        log = read_table(con, LOG_TABLE, tenants=only)
    history = history_rows(mismatches, connected_apps(mine), at)
    log = advance_log(log if set(LOG_SCHEMA) <= set(log.columns) else pl.DataFrame(schema=LOG_SCHEMA), mismatches, at)
    # the history only grows: this run's counts are appended (replacing no tenant's rows)
    replace_tenant_rows(warehouse, {MISMATCHES_TABLE: mismatches, LOG_TABLE: log}, only,
                        append={HISTORY_TABLE: history})
    return mismatches


def _finish(built: dict, failed: dict, every: bool, warehouse: Path, tables: list[str], registry: Registry) -> None:
    if every:
        retire_tenants(warehouse, tables, registry.tenants)
    if failed and not built and len(failed) == 1:
        raise next(iter(failed.values()))
    if failed:  # every other tenant's rows are written: the run fails for the ones that did not make it
        raise TenantsFailed(failed)


@asset(key=LINKS_KEY, group_name=GROUP, pool=WAREHOUSE_POOL, deps=_UNIFIED_DEPS, kinds={"polars", "duckdb"},
       partitions_def=TENANT_PARTITIONS,
       description="reconcile.links: each Sequence record and its twin in a connected app (tenant, app, entity, "
                   "sequence_id, app_id, method, linked_at), from what Sequence stores, the settings' mappings, "
                   "confirmed write-backs and the CRM companies' Sequence customer id fields. Match candidates are "
                   "proposed in reconcile.mismatches, never linked here. One partition per tenant.")
def reconcile_links(context: AssetExecutionContext, ledgerlink: Ledgerlink) -> MaterializeResult:
    registry = ledgerlink.registry()
    settings = app_settings(registry)
    tenants, every = run_tenants(context, registry.tenants)
    built, failed = each_tenant(tenants, lambda t: reconcile_links_of(ledgerlink.warehouse, settings, t), context.log)
    links = pl.concat(list(built.values()), how="vertical") if built else pl.DataFrame(schema=LINKS_SCHEMA)
    context.log.info(f"{LINKS_TABLE}: {links.height} links ({', '.join(built) or 'no tenant'})")
    _finish(built, failed, every, ledgerlink.warehouse, [LINKS_TABLE], registry)
    return MaterializeResult(metadata=links_metadata(links))


@asset(key=MISMATCHES_KEY, group_name=GROUP, pool=WAREHOUSE_POOL, deps=[LINKS_KEY, *_UNIFIED_DEPS],
       kinds={"polars", "duckdb"}, partitions_def=TENANT_PARTITIONS,
       description="reconcile.mismatches: one row per disagreement between Sequence and a connected app (tenant, "
                   "app, entity, sequence_id, app_id, kind, field, sequence_value, app_value, proposed_action, "
                   "reason), following the seed's field table and rules; counts per run in "
                   "reconcile.mismatch_history, and every mismatch with when it was first and last seen in "
                   "reconcile.mismatch_log (valid_from, valid_to). One partition per tenant.")
def reconcile_mismatches(context: AssetExecutionContext, ledgerlink: Ledgerlink) -> MaterializeResult:
    registry = ledgerlink.registry()
    settings = app_settings(registry)
    tenants, every = run_tenants(context, registry.tenants)
    at = datetime.now(UTC)
    built, failed = each_tenant(tenants, lambda t: reconcile_mismatches_of(ledgerlink.warehouse, settings, t, at),
                                context.log)
    mismatches = (pl.concat(list(built.values()), how="vertical") if built
                  else pl.DataFrame(schema=MISMATCH_SCHEMA))
    context.log.info(f"{MISMATCHES_TABLE}: {mismatches.height} mismatches ({', '.join(built) or 'no tenant'})")
    _finish(built, failed, every, ledgerlink.warehouse, [MISMATCHES_TABLE], registry)
    return MaterializeResult(metadata=mismatches_metadata(mismatches))


RECONCILE_ASSETS = [reconcile_links, reconcile_mismatches]
