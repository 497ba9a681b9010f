"""The data-quality report as a Dagster asset (`reports/data_quality_report`), and the plain function behind it
that `ledgerlink report` calls too: read the warehouse (read-only: reconcile.*, unified counts, ops.sync_runs) and
the registry (connected apps, where their records open), build the model, write one HTML file. The asset's
numeric metadata (per kind, per app, per app and kind, zeros included) is what the Dagster UI plots over runs."""

# No `from __future__ import annotations`: Dagster reads the asset's annotations as real types.
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from assets.reports.report import (
    AppTarget,
    Inputs,
    Report,
    build_report,
    render_html,
    summary_markdown,
)
from assets.resources import Ledgerlink
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, table_exists
from connectors.registry import Registry, RegistryError

REPORT_NAME = "data_quality.html"
# unified table -> entity (the manifest's words)
COUNTED = {"customers": "customer", "invoices": "invoice", "credit_notes": "credit_note", "products": "product",
           "tax_codes": "tax_category"}
_TIME_COLUMNS = ("at", "run_at", "recorded_at", "snapshot_at", "detected_at", "as_of", "reconciled_at")
_COUNT_COLUMNS = ("count", "mismatches", "n", "rows")


def default_report_path(warehouse: Path) -> Path:
    """data/reports/data_quality.html for data/warehouse.duckdb: beside the warehouse, in reports/."""
    return Path(warehouse).parent / "reports" / REPORT_NAME


def _counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    parts = [con.sql(f"select tenant, app, '{entity}' as entity, count(*) as records from unified.{table} "
                     "group by all").pl()
             for table, entity in COUNTED.items() if table_exists(con, f"unified.{table}")]
    return pl.concat(parts) if parts else pl.DataFrame()


def _quarantine(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Rows held back: by the data-quality checks (reconcile.quarantine) and by the unified mappings'
    contracts (unified.quarantine), whichever exist."""
    parts = []
    for qualified, source in (("reconcile.quarantine", "data check"), ("unified.quarantine", "contract")):
        frame = read_table(con, qualified)
        if frame.width:
            parts.append(frame.with_columns(pl.lit(source).alias("source")))
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def _history(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """reconcile.mismatch_history as (tenant, app, kind, count, at), when it exists and has a time column (an
    older history without `app` keeps its rows, app null)."""
    frame = read_table(con, "reconcile.mismatch_history")
    if not frame.width or not {"tenant", "kind"} <= set(frame.columns):
        return None
    at = next((c for c in _TIME_COLUMNS if c in frame.columns), None)
    if at is None:
        return None
    count = next((c for c in _COUNT_COLUMNS if c in frame.columns and frame.schema[c].is_numeric()), None)
    value = pl.col(count).sum() if count else pl.len()
    app = pl.col("app") if "app" in frame.columns else pl.lit(None, pl.String).alias("app")
    return (frame.group_by("tenant", app, pl.col(at).alias("at"), "kind").agg(value.cast(pl.Int64).alias("count"))
            .with_columns(pl.col("at").cast(pl.Datetime("us", "UTC"))))


def _optional(con: duckdb.DuckDBPyConnection, qualified: str) -> pl.DataFrame | None:
    frame = read_table(con, qualified)
    return frame if frame.width else None


def connected(registry: Registry) -> pl.DataFrame:
    """(tenant, app) of every connection the registry holds."""
    return pl.DataFrame([(c.tenant, c.app) for c in registry.connections], schema={"tenant": pl.String,
                                                                                   "app": pl.String}, orient="row")


def read_inputs(warehouse: Path, targets: Mapping[tuple[str, str], AppTarget] | None = None,
                connections: pl.DataFrame | None = None) -> Inputs:
    with connect(warehouse, read_only=True) as con:
        return Inputs(mismatches=read_table(con, "reconcile.mismatches"), links=read_table(con, "reconcile.links"),
                      counts=_counts(con), quarantine=_quarantine(con), history=_history(con),
                      targets=targets or {}, warehouse=str(warehouse),
                      reconciled=table_exists(con, "reconcile.mismatches"),
                      log=_optional(con, "reconcile.mismatch_log"), sync_runs=_optional(con, "ops.sync_runs"),
                      connections=connections)


def _option(connection, name: str) -> str | None:
    return str(connection.options.get(name) or "") or None


def link_targets(registry: Registry) -> dict[tuple[str, str], AppTarget]:
    """Sandbox connections link to their emulator; real ones to the vendor's web app (a Xero organisation by its
    `short_code`, a Salesforce org by its own host; any app by a `record_url` template the connection sets)."""
    return {(c.tenant, c.app): AppTarget(c.base_url, _option(c, "realm_id"), record_url=_option(c, "record_url"))
            if c.is_loopback else
            AppTarget(None, _option(c, "realm_id"), _option(c, "short_code"), c.base_url, _option(c, "record_url"))
            for c in registry.connections}


@dataclass(frozen=True)
class Built:
    path: Path
    report: Report
    seconds: float


def write_report(warehouse: Path, out: Path | None = None, *, registry: Registry | None = None,
                 now: datetime | None = None, examples_per_kind: int = 5) -> Built:
    """Builds the report from the warehouse and writes it (default: <warehouse folder>/reports/data_quality.html)."""
    started = time.perf_counter()
    out = Path(out) if out else default_report_path(warehouse)
    inputs = read_inputs(Path(warehouse), link_targets(registry) if registry else None,
                         connected(registry) if registry else None)
    report = build_report(inputs, generated_at=now or datetime.now(timezone.utc), examples_per_kind=examples_per_kind)
    # altair is imported here, not at module load: every run process loads the definitions (~0.7 s saved each)
    from assets.reports.charts import draw_charts

    charts = draw_charts(report)
    html = render_html(report, charts=charts, build_seconds=time.perf_counter() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)  # readers never see half a page
    return Built(out, report, time.perf_counter() - started)


def report_metadata(built: Built) -> dict:
    report = built.report
    metadata: dict = {
        "path": MetadataValue.path(str(built.path.resolve())),
        "summary": MetadataValue.md(summary_markdown(report)),
        "mismatches_total": report.mismatch_rows,
        "records_compared": report.compared,
        "records_agree": report.agree,
        "records_need_attention": report.disagree,
        "quarantined_rows": report.quarantine_total,
        "tenants": len(report.tenants),
    }
    # one numeric entry per kind, zeros included, so the UI plots each kind's history
    metadata.update({f"mismatches_{kind}": n for kind, n in sorted(report.kind_counts.items())})
    # and per app: its total, what needs attention, and each kind (zeros included for every connected app)
    for app, kinds in sorted(report.app_kind_counts.items()):
        metadata[f"mismatches_app_{app}"] = sum(kinds.values())
        if app != "sequence":  # Sequence's own rows are only ever `invalid`, counted above
            metadata.update({f"mismatches_{app}_{kind}": n for kind, n in sorted(kinds.items())})
    attention: dict[str, int] = {}
    for tenant in report.tenants:
        for status in tenant.apps:
            attention[status.app] = attention.get(status.app, 0) + status.disagree
    metadata.update({f"records_need_attention_{app}": n for app, n in sorted(attention.items())})
    if report.has_sync_runs:
        metadata["sync_failures"] = sum(s.failed for t in report.tenants for s in t.syncs)
        metadata["sync_connections_failing"] = sum(1 for t in report.tenants for s in t.syncs
                                                   if s.last_status not in (None, "success"))
    return metadata


class ReportConfig(Config):
    path: str | None = None  # default: <warehouse folder>/reports/data_quality.html
    examples_per_kind: int = 5


@asset(
    key=AssetKey(["reports", "data_quality_report"]),
    group_name="reports",
    deps=[AssetKey(["reconcile", "mismatches"]), AssetKey(["reconcile", "links"])],
    description="The data-quality report: per tenant, connected app and entity, how many records agree, how many "
                "disagree and why, examples with links to the records and since when they differ, trends over "
                "the reconciliation runs per reason and per app, syncs per connection (rows loaded, failures), "
                "quarantined rows. One HTML page with inline charts; counts per app and kind as metadata.",
    kinds={"html"},
    # reads only, but DuckDB refuses a reader while another process writes: take the writers' pool
    pool=WAREHOUSE_POOL,
)
def data_quality_report(context: AssetExecutionContext, config: ReportConfig, ledgerlink: Ledgerlink
                        ) -> MaterializeResult:
    try:
        registry = ledgerlink.registry()
    except RegistryError as exc:
        context.log.warning(f"no registry ({exc}); record links point at the vendors' web apps")
        registry = None
    built = write_report(ledgerlink.warehouse, Path(config.path) if config.path else None, registry=registry,
                         examples_per_kind=config.examples_per_kind)
    context.log.info(f"data-quality report: {built.path} ({built.seconds:.1f} s)")
    return MaterializeResult(metadata=report_metadata(built))


REPORT_ASSETS = [data_quality_report]
