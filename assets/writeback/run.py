"""The write-back's plain functions, free of Dagster and dlt: plan from the warehouse into writeback.outbox, apply
the outbox to the apps, re-sync one invoice. The assets (assets.py) and the CLI run them; `ledgerlink apply`
imports only this module's world (polars, duckdb, pandera, httpx), so a run starts in about half the time (the
SIGKILL test starts dozens)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from assets.warehouse import connect
from assets.writeback import outbox
from assets.writeback.apply import ApplyResult, apply
from assets.writeback.inputs import read_inputs
from assets.writeback.plan import build_plan
from assets.writeback.writers import SEQUENCE, WRITERS
from connectors.auth import TokenStore
from connectors.registry import Registry, load_registry

# The same defaults as assets.resources (which imports Dagster and dlt); tests/assets/writeback keep them equal.
DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_REGISTRY = "data/connections.yaml"
DEFAULT_STATE_DIR = "data/state"


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
        plan = build_plan(read_inputs(con, registry, tenants=tenants), tenants=tenants, invoice=invoice)
        merge = None
        if record:
            # every tenant some writer plans for (a CRM-only tenant's stale rows are withdrawn too)
            planned_tenants = tenants if tenants is not None else sorted(
                {c.tenant for app in WRITERS if app != SEQUENCE for c in registry.for_app(app)})
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


def environment() -> tuple[Path, Path, TokenStore]:
    """(warehouse, registry file, token store) from LEDGERLINK_* variables, as the Ledgerlink resource reads them."""
    state = Path(os.environ.get("LEDGERLINK_STATE_DIR") or DEFAULT_STATE_DIR)
    state.mkdir(parents=True, exist_ok=True)
    return (Path(os.environ.get("LEDGERLINK_WAREHOUSE") or DEFAULT_WAREHOUSE),
            Path(os.environ.get("LEDGERLINK_REGISTRY") or DEFAULT_REGISTRY), TokenStore(state / "tokens.json"))


def apply_from_environment(*, tenant: str | None = None, write: bool = False,
                           echo: Callable[[str], None] = print) -> ApplyResult:
    """`ledgerlink apply`: plans into writeback.outbox, then sends what is pending (dry run outside the sandbox
    unless `write`). Safe to kill and run again: nothing is written twice."""
    warehouse, registry_path, token_store = environment()
    registry = load_registry(registry_path)
    tenants = [tenant] if tenant else None
    planned = plan_writes(warehouse, registry, tenants=tenants)
    echo(f"[plan] {planned.plan.height} writes ({planned.merge.summary()})")
    result = apply_writes(warehouse, registry, token_store, allow_writes=write, tenants=tenants,
                          registry_path=registry_path, echo=echo)
    echo(f"[apply] {result.summary()}")
    return result
