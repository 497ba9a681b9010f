"""Thin Dagster assets `writeback/plan` and `writeback/apply` (group "writeback") around the plain functions of
run.py (which the CLI runs too): plan from the warehouse into writeback.outbox, apply the outbox to the apps.

Partitioned per tenant (`tenants`) like reconciliation: a tenant's plan puts that tenant's writes into the outbox
and withdraws only that tenant's unsent rows the plan no longer asks for; its apply sends only that tenant's
pending writes. A tenant whose plan fails, or whose app is unreachable, fails its own run only. A run over several
tenants (a partition range) plans (or applies) them one after another and fails at the end naming the tenants
that failed. Both assets take the `warehouse` pool: they write the outbox (and apply writes
reconcile.links) while they run.
"""


import os
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from assets.partitions import TENANT_PARTITIONS, TenantsFailed, each_tenant, run_tenants
from assets.reconcile.assets import LINKS_KEY, MISMATCHES_KEY
from assets.resources import DEFAULT_REGISTRY, Ledgerlink
from assets.warehouse import WAREHOUSE_POOL
from assets.writeback import outbox
from assets.writeback.apply import ApplyResult
# the plain functions live in run.py, free of Dagster, so that `ledgerlink apply` starts fast; re-exported here
from assets.writeback.run import Planned, apply_writes, plan_lines, plan_writes, resync  # noqa: F401

GROUP = "writeback"
PLAN_KEY = AssetKey([GROUP, "plan"])
APPLY_KEY = AssetKey([GROUP, "apply"])


# ----------------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------------


def registry_file(ledgerlink: Ledgerlink) -> Path:
    return Path(ledgerlink.registry_path or os.environ.get("LEDGERLINK_REGISTRY") or DEFAULT_REGISTRY)


def _markdown(frame: pl.DataFrame, keys: list[str]) -> str:
    counts = frame.group_by(keys).len("writes").sort(keys)
    if counts.height == 0:
        return "_no writes_"
    lines = ["| " + " | ".join([*keys, "writes"]) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in counts.iter_rows()]
    return "\n".join(lines)


def plan_metadata(planned: Planned) -> dict[str, Any]:
    plan = planned.plan
    meta: dict[str, Any] = {
        "writes_total": MetadataValue.int(plan.height),
        "writes_planned": MetadataValue.int(plan.filter(pl.col("state") == "planned").height),
        "writes_skipped": MetadataValue.int(plan.filter(pl.col("state") == "skipped").height),
        "plan": MetadataValue.md(_markdown(plan, ["tenant", "app", "operation", "state"])),
    }
    for app, operation, n in plan.group_by("app", "operation").len().sort("app", "operation").iter_rows():
        meta[f"writes_{app}_{operation}"] = MetadataValue.int(n)
    for tenant, n in plan.group_by("tenant").len().sort("tenant").iter_rows():
        meta[f"writes_tenant_{tenant}"] = MetadataValue.int(n)
    if planned.merge is not None:
        m = planned.merge
        meta.update({"outbox_new": MetadataValue.int(m.inserted), "outbox_refreshed": MetadataValue.int(m.refreshed),
                     "outbox_superseded": MetadataValue.int(m.superseded),
                     "outbox_withdrawn": MetadataValue.int(m.withdrawn),
                     "outbox_waiting": MetadataValue.int(len(m.waiting))})
    return meta


def apply_metadata(result: ApplyResult) -> dict[str, Any]:
    meta: dict[str, Any] = {name: MetadataValue.int(result.counts.get(name, 0))
                            for name in ("sent", "confirmed", "failed", "skipped")}
    meta["waiting"] = MetadataValue.int(len(result.waiting))
    meta["dry_run_writes"] = MetadataValue.int(len(result.dry_run))
    meta["requests_total"] = MetadataValue.int(sum(result.requests.values()))
    meta.update({f"requests_{key}": MetadataValue.int(n) for key, n in sorted(result.requests.items())})
    if result.dry_run:
        meta["dry_run"] = MetadataValue.md("\n".join(f"- `{line[:300]}`" for line in result.dry_run[:50]))
    return meta


# ----------------------------------------------------------------------------------------------------------
# Assets
# ----------------------------------------------------------------------------------------------------------


def _raise(built: dict, failed: dict) -> None:
    if failed and not built and len(failed) == 1:
        raise next(iter(failed.values()))
    if failed:  # every other tenant's writes are done: the run fails for the ones that did not make it
        raise TenantsFailed(failed)


def combined_plans(plans: list[Planned]) -> Planned:
    """Several tenants' plans as one (for the metadata of a run that planned them one after another)."""
    merges = [p.merge for p in plans if p.merge is not None]
    merge = outbox.Merge(inserted=sum(m.inserted for m in merges), refreshed=sum(m.refreshed for m in merges),
                         superseded=sum(m.superseded for m in merges), withdrawn=sum(m.withdrawn for m in merges),
                         waiting=[k for m in merges for k in m.waiting])
    return Planned(pl.concat([p.plan for p in plans], how="vertical"), merge,
                   pl.concat([p.states for p in plans], how="vertical"))


def combined_results(results: list[ApplyResult]) -> ApplyResult:
    out = ApplyResult(counts=Counter())
    for result in results:
        out.counts.update(result.counts)
        out.requests.update(result.requests)
        out.dry_run += result.dry_run
        out.waiting += result.waiting
    return out


@asset(key=PLAN_KEY, group_name=GROUP, pool=WAREHOUSE_POOL, deps=[MISMATCHES_KEY, LINKS_KEY],
       kinds={"polars", "duckdb"}, partitions_def=TENANT_PARTITIONS,
       description="The write-back plan: every write that brings Sequence and QuickBooks / Xero into agreement, "
                   "with its reason, put into writeback.outbox under a deterministic idempotency key (planned, or "
                   "skipped with the record, field and reason when its payload breaks a contract). Nothing is sent. "
                   "One partition per tenant.")
def writeback_plan(context: AssetExecutionContext, ledgerlink: Ledgerlink) -> MaterializeResult:
    registry = ledgerlink.registry()
    tenants, _ = run_tenants(context, registry.tenants)
    built, failed = each_tenant(tenants, lambda t: plan_writes(ledgerlink.warehouse, registry, tenants=[t]),
                                context.log)
    if built:
        planned = combined_plans(list(built.values()))
        context.log.info(f"{outbox.OUTBOX_TABLE}: {planned.plan.height} writes planned ({planned.merge.summary()})")
    _raise(built, failed)
    if not built:
        return MaterializeResult(metadata={"writes_total": MetadataValue.int(0)})
    return MaterializeResult(metadata=plan_metadata(planned))


class ApplyConfig(Config):
    allow_writes: bool = False  # write to apps that are not the sandbox (loopback) too


@asset(key=APPLY_KEY, group_name=GROUP, pool=WAREHOUSE_POOL, deps=[PLAN_KEY], kinds={"duckdb"},
       partitions_def=TENANT_PARTITIONS,
       description="Sends the outbox's pending writes (QuickBooks requestid = idempotency key, batch endpoint; Xero "
                   "many elements per request under one Idempotency-Key; dependency waves; Sequence look-up before "
                   "create), records each answer and the twins it made "
                   "in reconcile.links. Dry run outside the sandbox unless allow_writes is set. One partition per "
                   "tenant.")
def writeback_apply(context: AssetExecutionContext, config: ApplyConfig, ledgerlink: Ledgerlink) -> MaterializeResult:
    registry = ledgerlink.registry()
    tenants, _ = run_tenants(context, registry.tenants)

    def one(tenant: str) -> ApplyResult:
        return apply_writes(ledgerlink.warehouse, registry, ledgerlink.token_store(), tenants=[tenant],
                            allow_writes=config.allow_writes, registry_path=registry_file(ledgerlink),
                            echo=context.log.info)

    built, failed = each_tenant(tenants, one, context.log)
    result = combined_results(list(built.values()))
    context.log.info(f"write-back: {result.summary()}")
    _raise(built, failed)
    return MaterializeResult(metadata=apply_metadata(result))


WRITEBACK_ASSETS = [writeback_plan, writeback_apply]
