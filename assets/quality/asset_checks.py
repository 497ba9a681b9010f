"""The data-quality rules (checks/rules.py) as Dagster asset checks on the unified assets.

Each check reads the tables its rule needs from the warehouse (read-only), runs the rule, replaces its rows in
reconcile.quarantine, and reports: passed when no row fails; otherwise the failing-row count and a table of
examples in metadata. Severity is ERROR where a failing row would be written to an app (totals, tax codes,
item names, addresses of customers a write-back would create) and WARN otherwise; those checks are declared
`blocking`, so in a run that also materializes what depends on the table, Dagster holds those downstream
steps back while every other step goes on.

The unified assets are a colleague's (assets/unified); the checks refer to them by key only, so this module
does not import them.
"""

# No `from __future__ import annotations`: Dagster reads the wrapper's annotations as real types.
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    AssetKey,
    MetadataValue,
    asset_check,
)

from assets.quality.quarantine import QUARANTINE, quarantine_rows, replace_check_rows
from assets.resources import Ledgerlink
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, table_exists
from checks import rules
from checks.unified import empty
from connectors.registry import RegistryError

EXAMPLES = 20


def unified_key(table: str) -> AssetKey:
    return AssetKey(["unified", table])


@dataclass(frozen=True)
class Inputs:
    """What a rule may look at: unified tables (lazy), the tenants' settings, the US tenants and, when it
    exists, reconcile.links."""

    tables: Mapping[str, pl.LazyFrame]
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    us: tuple[str, ...] = ()
    links: pl.LazyFrame | None = None

    def __getitem__(self, table: str) -> pl.LazyFrame:
        return self.tables[table]

    def to_create(self) -> pl.LazyFrame:
        return rules.customers_to_create(self["customers"], self.links)


@dataclass(frozen=True)
class QualityCheck:
    table: str  # the unified table (asset) the check is attached to
    name: str
    description: str
    blocking: bool  # a failing row would be written to an app
    rule: Callable[[Inputs], pl.LazyFrame]
    reads: tuple[str, ...] = ()  # other unified tables the rule needs
    needs_links: bool = False

    @property
    def check_id(self) -> str:
        """The check's name in reconcile.quarantine."""
        return f"{self.table}.{self.name}"

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table, *[t for t in self.reads if t != self.table])


def _emails(table: str, entity: str) -> QualityCheck:
    column = "email" if table == "customers" else "billing_email"
    required = (lambda i: i.to_create().filter(pl.col("app") != "sequence")) if table == "customers" else None
    return QualityCheck(
        table, "emails_valid", f"Emails on {table} are well-formed"
        + ("; app customers to be imported into Sequence have one." if required else "."),
        blocking=False, needs_links=table == "customers",
        rule=lambda i: rules.emails_valid(i[table], entity=entity, column=column,
                                          required=required(i) if required else None))


def _currencies(table: str, entity: str) -> QualityCheck:
    required = table not in ("customers", "payments")
    return QualityCheck(table, "currencies_iso4217", f"Currencies on {table} are ISO 4217 codes.", blocking=False,
                        rule=lambda i: rules.currencies_iso4217(i[table], entity=entity, required=required))


def _totals(table: str, lines: str, entity: str) -> QualityCheck:
    return QualityCheck(
        table, "totals_match_lines",
        f"Every non-void Sequence and QuickBooks {entity.replace('_', ' ')}'s net total equals the sum of its "
        "line amounts at the currency's minor units.",
        blocking=True, reads=(lines,), rule=lambda i: rules.totals_match_lines(i[table], i[lines], entity=entity))


def _line_tax_codes(table: str, entity: str) -> QualityCheck:
    return QualityCheck(
        table, "tax_codes_resolvable",
        "QuickBooks line tax codes exist in QuickBooks (TAX/NON for US companies); Sequence lines' tax categories "
        "map to existing, active QuickBooks tax codes.",
        blocking=True, reads=("tax_codes",),
        rule=lambda i: rules.line_tax_codes_resolvable(i[table], i["tax_codes"], settings=i.settings, us=i.us,
                                                       entity=entity))


CHECKS: tuple[QualityCheck, ...] = (
    QualityCheck(
        "customers", "addresses_complete",
        "Customer addresses have line 1, city, postal code and an ISO alpha-2 country (needed to import a "
        "customer into Sequence); ERROR for customers a write-back would create, WARN for the others.",
        blocking=True, needs_links=True,
        rule=lambda i: rules.addresses_complete(i["customers"], i.to_create())),
    _emails("customers", "customer"),
    _currencies("customers", "customer"),
    _totals("invoices", "invoice_lines", "invoice"),
    _emails("invoices", "invoice"),
    _currencies("invoices", "invoice"),
    _totals("credit_notes", "credit_note_lines", "credit_note"),
    _emails("credit_notes", "credit_note"),
    _currencies("credit_notes", "credit_note"),
    _line_tax_codes("invoice_lines", "invoice"),
    _line_tax_codes("credit_note_lines", "credit_note"),
    QualityCheck(
        "tax_codes", "tax_categories_mapped",
        "Every active Sequence tax category is mapped in the integration settings to an existing, active "
        "QuickBooks tax code.",
        blocking=True, rule=lambda i: rules.tax_categories_mapped(i["tax_codes"], settings=i.settings, us=i.us)),
    QualityCheck(
        "products", "item_names_unique",
        "QuickBooks item names stay unique per company: no unmapped Sequence product would create an item whose "
        "name is already taken.",
        blocking=True, rule=lambda i: rules.item_names_unique(i["products"], settings=i.settings)),
    _currencies("payments", "payment"),
)


# ----------------------------------------------------------------------------------------------------------
# Plain functions (the Dagster wrappers below only call these)
# ----------------------------------------------------------------------------------------------------------


def _unified(con, table: str) -> pl.DataFrame:
    frame = read_table(con, f"unified.{table}")
    # A table not written yet reads as the contract's empty frame, so every rule sees its columns.
    return empty(table) if frame.width == 0 else frame


def _company_countries(con) -> dict[str, str | None]:
    if not table_exists(con, "raw_quickbooks.companyinfo"):
        return {}
    columns = {row[0] for row in con.execute("describe raw_quickbooks.companyinfo").fetchall()}
    if not {"tenant", "country"} <= columns:
        return {}
    return dict(con.execute("select tenant, any_value(country) from raw_quickbooks.companyinfo group by 1")
                .fetchall())


def read_inputs(warehouse: Path, check: QualityCheck, settings: Mapping[str, Mapping[str, Any]]) -> Inputs:
    with connect(warehouse, read_only=True) as con:
        tables = {table: _unified(con, table).lazy() for table in check.tables}
        links = None
        if check.needs_links and table_exists(con, "reconcile.links"):
            links = read_table(con, "reconcile.links").lazy()
        countries = _company_countries(con)
    return Inputs(tables=tables, settings=settings, us=tuple(rules.us_tenants(settings, countries)), links=links)


def evaluate(check: QualityCheck, inputs: Inputs) -> pl.DataFrame:
    """The rule's failing rows, sorted with the blocking ones first."""
    return (check.rule(inputs).collect()
            .sort(["blocking", "tenant", "app", "entity", "id", "field"], descending=[True, False, False, False,
                                                                                      False, False]))


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def examples_markdown(failures: pl.DataFrame, limit: int = EXAMPLES) -> str:
    columns = ("tenant", "app", "id", "field", "reason")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in failures.head(limit).iter_rows(named=True):
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    if failures.height > limit:
        lines.append(f"\n…and {failures.height - limit} more in `{QUARANTINE}`.")
    return "\n".join(lines)


def result_for(check: QualityCheck, failures: pl.DataFrame, rows_checked: int) -> AssetCheckResult:
    blocking_rows = int(failures["blocking"].sum()) if failures.height else 0
    severity = AssetCheckSeverity.ERROR if check.blocking and blocking_rows else AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        "failing_rows": failures.height,
        "blocking_rows": blocking_rows,
        "rows_checked": rows_checked,
        "quarantine": MetadataValue.text(f'{QUARANTINE} where "check" = \'{check.check_id}\''),
    }
    if failures.height:
        metadata["examples"] = MetadataValue.md(examples_markdown(failures))
    if failures.height and blocking_rows < failures.height and check.blocking:
        metadata["note"] = MetadataValue.text(f"{blocking_rows} of {failures.height} failing rows would be "
                                              "written to an app; the others are warnings")
    return AssetCheckResult(passed=failures.is_empty(), severity=severity, metadata=metadata,
                            description=check.description)


def run_check(check: QualityCheck, warehouse: Path, settings: Mapping[str, Mapping[str, Any]], *,
              now: datetime | None = None) -> tuple[AssetCheckResult, pl.DataFrame]:
    """Reads, evaluates, quarantines; returns the Dagster result and the failing rows."""
    inputs = read_inputs(warehouse, check, settings)
    failures = evaluate(check, inputs)
    detected_at = now or datetime.now(timezone.utc)
    replace_check_rows(warehouse, check.check_id, quarantine_rows(failures, check.check_id, detected_at))
    rows_checked = inputs[check.table].select(pl.len()).collect().item()
    return result_for(check, failures, rows_checked), failures


def _settings(ledgerlink: Ledgerlink, log) -> Mapping[str, Mapping[str, Any]]:
    try:
        return ledgerlink.registry().tenant_settings
    except RegistryError as exc:
        # Without settings the setting-driven rules see no mapping; say so instead of failing the check.
        log.warning(f"no integration settings ({exc}); settings-based rules check nothing")
        return {}


# ----------------------------------------------------------------------------------------------------------
# Dagster
# ----------------------------------------------------------------------------------------------------------


def _asset_check(check: QualityCheck) -> AssetChecksDefinition:
    @asset_check(
        asset=unified_key(check.table),
        name=check.name,
        description=check.description,
        blocking=check.blocking,
        # No additional_deps on the other tables a rule reads: one multi-asset writes every unified table in
        # one transaction, so they are there; and a dependency would let one failing blocking check (say on
        # unified/tax_codes) hold back the checks of the tables it reads, when every check must run.
        # It writes reconcile.quarantine: one DuckDB writer at a time.
        pool=WAREHOUSE_POOL,
    )
    def _check(context: AssetCheckExecutionContext, ledgerlink: Ledgerlink) -> AssetCheckResult:
        result, failures = run_check(check, ledgerlink.warehouse, _settings(ledgerlink, context.log))
        if failures.height:
            context.log.warning(f"{check.check_id}: {failures.height} failing rows quarantined in {QUARANTINE}")
        return result

    return _check


QUALITY_CHECKS: list[AssetChecksDefinition] = [_asset_check(check) for check in CHECKS]
