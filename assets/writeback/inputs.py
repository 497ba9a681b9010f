"""What planning reads from the warehouse: the unified tables, reconcile.links and reconcile.mismatches, the
outbox, and the few QuickBooks facts the unified model does not carry (SyncTokens, exchange rates, the
company's currency preferences, customers' default tax codes) from raw_quickbooks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import polars as pl

from assets.reconcile.links import LINKS_SCHEMA, MISMATCH_SCHEMA
from assets.warehouse import read_table, table_columns, table_exists
from assets.writeback import outbox
from checks.unified import MODEL, empty
from assets.writeback.plan import QUICKBOOKS, PlanInputs
from assets.writeback.quickbooks import QuickBooksState
from assets.writeback.writers import CRMS
from connectors.registry import Registry

# Read here rather than through assets.reconcile.assets (which imports Dagster): `ledgerlink apply` plans first,
# and its start-up time is paid on every run. The names are reconciliation's (tests keep them equal).
LINKS_TABLE = "reconcile.links"
MISMATCHES_TABLE = "reconcile.mismatches"
PLAN_TABLES = ("customers", "invoices", "invoice_lines", "credit_notes", "credit_note_lines", "products",
               "accounts", "tax_codes", "companies", "contacts")  # the unified tables the plan reads


def read_unified(con: duckdb.DuckDBPyConnection, tenants: list[str] | None = None) -> dict[str, pl.LazyFrame]:
    """The unified tables the plan reads (of some tenants, or all), each with exactly its contract's columns and
    types (as reconciliation conforms them: an absent table has no rows, an absent column is nulls)."""
    frames = {}
    for table in PLAN_TABLES:
        frame = read_table(con, f"unified.{table}", tenants=tenants)
        if frame.width == 0:
            frames[table] = empty(table).lazy()
            continue
        columns = {name: column.dtype.type for name, column in MODEL[table].columns.items()}
        frames[table] = frame.select([pl.col(n).cast(t) if n in frame.columns else pl.lit(None, t).alias(n)
                                      for n, t in columns.items()]).lazy()
    return frames


# raw_quickbooks table -> unified entity (the records whose SyncToken an update needs)
VERSIONED = {"customer": "customer", "invoice": "invoice", "creditmemo": "credit_note", "item": "product"}


def _select(con: duckdb.DuckDBPyConnection, qualified: str, columns: Mapping[str, str],
            schema: Mapping[str, pl.DataType], tenants: list[str] | None = None) -> pl.LazyFrame:
    """`select <raw column> as <name>, ...` (of some tenants, or all) when the table has every raw column; no rows
    otherwise. Rows dlt marked deleted are left out."""
    present = set(table_columns(con, qualified)) if table_exists(con, qualified) else set()
    if not present or not set(columns.values()) <= present:
        return pl.LazyFrame(schema=dict(schema))
    where = " where _deleted is not true" if "_deleted" in present else " where true"
    if tenants is not None:
        where += " and tenant in (select unnest(?))"
    sql = f"select {', '.join(f'{raw} as {name}' for name, raw in columns.items())} from {qualified}{where}"
    return con.sql(sql, params=None if tenants is None else [tenants]).pl().lazy().cast(dict(schema))


def read_quickbooks_state(con: duckdb.DuckDBPyConnection, tenants: list[str] | None = None) -> QuickBooksState:
    empty = QuickBooksState.empty()
    versions = [
        _select(con, f"raw_quickbooks.{table}", {"tenant": "tenant", "id": "id", "sync_token": "sync_token"},
                {"tenant": pl.String, "id": pl.String, "sync_token": pl.String}, tenants)
        .with_columns(entity=pl.lit(entity)).select("tenant", "entity", "id", "sync_token")
        for table, entity in VERSIONED.items()]
    rates = _select(con, "raw_quickbooks.exchangerate",
                    {"tenant": "tenant", "currency": "source_currency_code", "home_currency": "target_currency_code",
                     "rate": "rate", "as_of": "as_of_date"},
                    {"tenant": pl.String, "currency": pl.String, "home_currency": pl.String,
                     "rate": pl.Decimal(38, 9), "as_of": pl.String}, tenants)
    companies = _select(con, "raw_quickbooks.preferences",
                        {"tenant": "tenant", "home_currency": "currency_prefs__home_currency__value",
                         "multi_currency": "currency_prefs__multi_currency_enabled"},
                        {"tenant": pl.String, "home_currency": pl.String, "multi_currency": pl.Boolean}, tenants)
    tax_codes = _select(con, "raw_quickbooks.customer",
                        {"tenant": "tenant", "id": "id", "default_tax_code": "default_tax_code_ref__value"},
                        {"tenant": pl.String, "id": pl.String, "default_tax_code": pl.String}, tenants)
    return QuickBooksState(
        versions=pl.concat(versions, how="vertical").unique(subset=["tenant", "entity", "id"], keep="last"),
        exchange_rates=rates.with_columns(pl.col("as_of").str.to_date(strict=False)).cast(
            empty.exchange_rates.collect_schema()),
        companies=companies.unique(subset=["tenant"], keep="last"),
        customer_tax_codes=tax_codes)


def app_settings(registry: Registry) -> dict[str, Mapping[str, Any]]:
    """tenant -> the integration settings of its QuickBooks connection."""
    return {c.tenant: dict(c.settings) for c in registry.for_app(QUICKBOOKS)}


def read_inputs(con: duckdb.DuckDBPyConnection, registry: Registry, *,
                tenants: Iterable[str] | None = None) -> PlanInputs:
    """What the plan reads, of some tenants (a tenant's write-back run reads only its own rows) or all."""
    chosen = None if tenants is None else list(tenants)

    def table(name: str, schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
        if not table_exists(con, name):
            return pl.LazyFrame(schema=dict(schema))
        return read_table(con, name, tenants=chosen).lazy().select(list(schema)).cast(dict(schema))

    return PlanInputs(
        unified=read_unified(con, chosen),
        links=table(LINKS_TABLE, LINKS_SCHEMA),
        mismatches=table(MISMATCHES_TABLE, MISMATCH_SCHEMA),
        settings=app_settings(registry),
        quickbooks=read_quickbooks_state(con, chosen),
        outbox=outbox.read(con, tenants=chosen).lazy(),
        xero_settings={c.tenant: dict(c.settings) for c in registry.for_app("xero")},
        crm_settings={app: {c.tenant: dict(c.settings) for c in registry.for_app(app)}
                      for app in CRMS if registry.for_app(app)},
    )
