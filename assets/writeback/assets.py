"""Thin Dagster assets `writeback/plan` and `writeback/apply` (group "writeback"), and the plain functions they
(and the CLI) run: plan from the warehouse into writeback.outbox, apply the outbox to the apps.

Unpartitioned like reconciliation: a plan needs every app's rows of a tenant side by side. Both assets take the
`warehouse` pool: they write the outbox (and apply writes reconcile.links) while they run.
"""


import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from assets.reconcile.assets import LINKS_KEY, MISMATCHES_KEY
from assets.resources import DEFAULT_REGISTRY, Ledgerlink
from assets.warehouse import WAREHOUSE_POOL, connect
from assets.writeback import outbox
from assets.writeback.apply import ApplyResult, apply
from assets.writeback.inputs import read_inputs
from assets.writeback.plan import build_plan
from connectors.auth import TokenStore
from connectors.registry import Registry

GROUP = "writeback"
PLAN_KEY = AssetKey([GROUP, "plan"])
APPLY_KEY = AssetKey([GROUP, "apply"])


# ----------------------------------------------------------------------------------------------------------
# Plain functions
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Planned:
    plan: pl.DataFrame  # plan.PLAN_SCHEMA
    merge: "outbox.Merge | None"  # None: the plan was only shown
    states: pl.DataFrame  # idempotency_key -> the state its row has in the outbox (after the merge)


def plan_writes(warehouse: Path, registry: Registry, *, tenants: Iterable[str] | None = None,
                invoice: str | None = None, record: bool = True) -> Planned:
    """Plans from the warehouse; with `record`, puts the plan into writeback.outbox (a full plan withdraws the
    unsent rows it no longer contains; a one-invoice plan withdraws nothing)."""
    tenants = list(tenants) if tenants is not None else None
    with connect(warehouse, read_only=not record) as con:
        plan = build_plan(read_inputs(con, registry), tenants=tenants, invoice=invoice)
        merge = None
        if record:
            planned_tenants = tenants if tenants is not None else [c.tenant for c in registry.for_app("quickbooks")]
            merge = outbox.merge_plan(con, plan, withdraw_tenants=None if invoice else planned_tenants)
        rows = outbox.read(con, keys=plan["idempotency_key"].to_list())
    states = rows.select("idempotency_key", pl.col("state").alias("outbox_state"), "attempts",
                         pl.col("error").alias("outbox_error"))
    return Planned(plan, merge, states)


def apply_writes(warehouse: Path, registry: Registry, token_store: TokenStore, *, allow_writes: bool = False,
                 tenants: Iterable[str] | None = None, keys: Iterable[str] | None = None,
                 registry_path: Path | None = None, echo: Callable[[str], None] = print) -> ApplyResult:
    with connect(warehouse) as con:
        return apply(con, registry, token_store, tenants=tenants, keys=keys, allow_writes=allow_writes, echo=echo,
                     registry_path=registry_path)


def resync(warehouse: Path, registry: Registry, token_store: TokenStore, invoice: str, *, allow_writes: bool = False,
           registry_path: Path | None = None, echo: Callable[[str], None] = print) -> tuple[Planned, ApplyResult]:
    """Re-plans one Sequence invoice and re-sends it (as Sequence's dashboard does for a failed sync): its writes
    and what they wait for; failed ones are tried again under the requestid they were first sent with."""
    planned = plan_writes(warehouse, registry, invoice=invoice)
    keys = planned.plan["idempotency_key"].to_list()
    with connect(warehouse) as con:
        earlier = outbox.read(con).filter((pl.col("entity") == "invoice") & (pl.col("sequence_id") == invoice)
                                          & (pl.col("state") == "failed"))
        keys += earlier["idempotency_key"].to_list()
        outbox.reset_for_resend(con, keys)
    result = apply_writes(warehouse, registry, token_store, allow_writes=allow_writes, keys=keys,
                          registry_path=registry_path, echo=echo)
    return planned, result


def registry_file(ledgerlink: Ledgerlink) -> Path:
    return Path(ledgerlink.registry_path or os.environ.get("LEDGERLINK_REGISTRY") or DEFAULT_REGISTRY)


def plan_lines(planned: Planned) -> list[str]:
    """The plan per tenant, one line per write with its reason, for people."""
    frame = planned.plan.join(planned.states, on="idempotency_key", how="left")
    if frame.height == 0:
        return ["nothing to write: Sequence and the connected apps agree (or the rest needs a person)"]
    lines = []
    for (tenant,), rows in frame.partition_by("tenant", as_dict=True, maintain_order=True).items():
        counts = rows.group_by("state").len().sort("state")
        lines.append(f"{tenant}: {rows.height} writes (" + ", ".join(f"{n} {s}" for s, n in counts.iter_rows()) + ")")
        for r in rows.to_dicts():
            record = r["sequence_id"] or f"{r['counterpart_app']} {r['app_id']}"
            where = f" -> {r['app_id']}" if r["sequence_id"] and r["app_id"] else ""
            state = r["outbox_state"] or r["state"]
            lines.append(f"  [{state}] {r['app']} {r['operation']} {r['entity']} {record}{where}: {r['reason']}")
            if r["error"] or (state in ("failed", "skipped") and r["outbox_error"]):
                lines.append(f"      {r['error'] or r['outbox_error']}")
    return lines


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


@asset(key=PLAN_KEY, group_name=GROUP, pool=WAREHOUSE_POOL, deps=[MISMATCHES_KEY, LINKS_KEY],
       kinds={"polars", "duckdb"},
       description="The write-back plan: every write that brings Sequence and QuickBooks into agreement, with its "
                   "reason, put into writeback.outbox under a deterministic idempotency key (planned, or skipped "
                   "with the record, field and reason when its payload breaks a contract). Nothing is sent.")
def writeback_plan(context: AssetExecutionContext, ledgerlink: Ledgerlink) -> MaterializeResult:
    planned = plan_writes(ledgerlink.warehouse, ledgerlink.registry())
    context.log.info(f"{outbox.OUTBOX_TABLE}: {planned.plan.height} writes planned ({planned.merge.summary()})")
    return MaterializeResult(metadata=plan_metadata(planned))


class ApplyConfig(Config):
    allow_writes: bool = False  # write to apps that are not the sandbox (loopback) too


@asset(key=APPLY_KEY, group_name=GROUP, pool=WAREHOUSE_POOL, deps=[PLAN_KEY], kinds={"duckdb"},
       description="Sends the outbox's pending writes (QuickBooks requestid = idempotency key, batch endpoint, "
                   "dependency waves; Sequence look-up before create), records each answer and the twins it made "
                   "in reconcile.links. Dry run outside the sandbox unless allow_writes is set.")
def writeback_apply(context: AssetExecutionContext, config: ApplyConfig, ledgerlink: Ledgerlink) -> MaterializeResult:
    result = apply_writes(ledgerlink.warehouse, ledgerlink.registry(), ledgerlink.token_store(),
                          allow_writes=config.allow_writes, registry_path=registry_file(ledgerlink),
                          echo=context.log.info)
    context.log.info(f"write-back: {result.summary()}")
    return MaterializeResult(metadata=apply_metadata(result))


WRITEBACK_ASSETS = [writeback_plan, writeback_apply]
