"""Raw -> the unified tables for every tenant and app, validated by their contracts (checks/unified.py), with
the rows that fail set aside in a quarantine table. Pure: frames in, frames out (assets.py writes them).

Row problems never stop the build: a value that cannot be read (mapping problem), a row that breaks its
contract (Pandera, validated on the collected frame with lazy=True so every failure is listed), the lines of a
quarantined document, and the records the extraction itself rejected (raw_<app>.rejected_records) each become
a quarantine row (tenant, app, entity, id, check, field, reason, detected_at), and the rest is written.
Errors of the mapping itself (a column of the wrong type, a missing column) raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType

import pandera.errors
import polars as pl

from assets.unified import attio, hubspot, mapping, quickbooks, salesforce, sequence, xero
from assets.unified.mapping import ENTITIES, PROBLEM_COLUMNS, PROBLEM_FIELD, PROBLEM_REASON, MappingError
from checks.unified import INSTANT, MODEL

# An app maps the tables its module's TABLES name (the CRMs have no invoices, the billing and accounting apps no
# deals): a table no app maps is written empty.
APPS: dict[str, ModuleType] = {"sequence": sequence, "quickbooks": quickbooks, "xero": xero, "hubspot": hubspot,
                               "salesforce": salesforce, "attio": attio}
TABLES = list(MODEL)

QUARANTINE_TABLE = "quarantine"
QUARANTINE: dict[str, pl.DataType] = {
    "tenant": pl.String(), "app": pl.String(), "entity": pl.String(), "id": pl.String(), "check": pl.String(),
    "field": pl.String(), "reason": pl.String(), "detected_at": INSTANT,
}
# child table -> (parent table, the child's columns naming the parent's id): a document goes whole or not at all
CHILDREN: dict[str, tuple[str, str]] = {
    "invoice_lines": ("invoices", "document_id"),
    "credit_note_lines": ("credit_notes", "document_id"),
    "payment_applications": ("payments", "payment_id"),
}
# What identifies a row in quarantine.id: its id, or its parent's and its own ("<invoice Id>-<Line.Id>", the
# form Sequence uses for QuickBooks line ids).
ROW_IDS: dict[str, pl.Expr] = {
    "invoice_lines": pl.concat_str("document_id", pl.lit("-"), "id"),
    "credit_note_lines": pl.concat_str("document_id", pl.lit("-"), "id"),
    "payment_applications": pl.concat_str("payment_id", pl.lit("-"), "document_id"),
    "deal_companies": pl.concat_str("deal_id", pl.lit("-"), "company_id"),
}
# Raw collections (as rejected_records names them) -> entity words
RAW_ENTITIES = {
    "customers": "customer", "invoices": "invoice", "credit-notes": "credit_note", "products": "product",
    "tax-categories": "tax_category", "line-items": "invoice_line", "credit-note-line-items": "credit_note_line",
    "customer": "customer", "invoice": "invoice", "creditmemo": "credit_note", "payment": "payment",
    "item": "product", "account": "account", "taxcode": "tax_category",
    "contacts": "customer", "credit_notes": "credit_note", "payments": "payment", "items": "product",
    "accounts": "account", "tax_rates": "tax_category",
}
REJECTED: mapping.RawSchema = {"app": pl.String(), "collection": pl.String(), "record_id": pl.String(),
                               "field": pl.String(), "reason": pl.String(), "record": pl.String(),
                               "rejected_at": INSTANT}

RawByApp = Mapping[str, mapping.RawFrames]  # app -> raw table -> frame


@dataclass
class Build:
    tables: dict[str, pl.DataFrame]  # unified table -> valid rows, contract columns and types
    quarantine: pl.DataFrame  # QUARANTINE columns
    held: dict[str, pl.DataFrame]  # unified table -> its quarantine rows (one per failed check)

    def quarantined(self, table: str) -> int:
        """Rows kept out of the table (a row failing two checks counts once)."""
        return self.held[table].select("tenant", "app", "id").unique().height

    def counts(self, table: str) -> dict[str, dict[str, int]]:
        """tenant -> app -> rows."""
        frame = self.tables[table]
        out: dict[str, dict[str, int]] = {}
        for tenant, app, rows in frame.group_by("tenant", "app").len().sort("tenant", "app").iter_rows():
            out.setdefault(tenant, {})[app] = rows
        return out


def map_all(module: ModuleType, raw: mapping.RawFrames, settings: mapping.Settings | None = None
            ) -> dict[str, pl.LazyFrame]:
    """Every unified table an app module maps (its TABLES: table -> function(raw, settings)), lazily."""
    return {table: function(raw, settings) for table, function in module.TABLES.items()}


def map_apps(raw: RawByApp, settings: mapping.Settings | None = None,
             app_settings: Mapping[str, mapping.Settings] | None = None) -> dict[str, pl.LazyFrame]:
    """Every unified table, the apps' rows one after another (lazy, with the problem columns). `app_settings`
    (app -> tenant -> its connection's settings) replaces the tenants' settings for the apps it names."""
    parts: dict[str, list[pl.LazyFrame]] = {table: [] for table in TABLES}
    for app, module in APPS.items():
        own = (app_settings or {}).get(app, settings)
        for table, frame in map_all(module, raw.get(app, {}), own).items():
            parts[table].append(frame)
    return {table: pl.concat(frames, how="vertical") if frames else with_problem_columns(table)
            for table, frames in parts.items()}


def with_problem_columns(table: str) -> pl.LazyFrame:
    return mapping.with_problems(pl.LazyFrame(schema={n: c.dtype.type for n, c in MODEL[table].columns.items()}))


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE)


def _quarantine_rows(table: str, frame: pl.DataFrame, failures: pl.DataFrame, detected_at: datetime) -> pl.DataFrame:
    """failures (index, check, field, reason) of `frame`'s rows -> quarantine rows."""
    rows = frame.with_row_index("_row").select(
        "_row", "tenant", "app", ROW_IDS.get(table, pl.col("id")).alias("id"),
        *(["entity"] if table == "custom_fields" else []))
    out = failures.join(rows, left_on="index", right_on="_row", how="left", validate="m:1")
    return out.select(
        "tenant", "app",
        (pl.col("entity") if table == "custom_fields" else pl.lit(ENTITIES[table])).alias("entity"),
        "id", "check", "field", "reason", pl.lit(detected_at, INSTANT).alias("detected_at"),
    ).cast(QUARANTINE)


_FAILURES = {"index": pl.Int64, "check": pl.String, "field": pl.String, "reason": pl.String}


def contract_failures(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of `frame` that break their contract: (index, check, field, reason), one per failure. A failure
    that is not about rows (a wrong type, a missing or extra column) is an error of the mapping: it raises."""
    schema = MODEL[table]
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pl.DataFrame(schema=_FAILURES)
    structural = cases.filter(pl.col("index").is_null())
    if structural.height:
        problems = "; ".join(f"{c}: {k} ({v})" for c, k, v in structural.select("column", "check", "failure_case")
                             .iter_rows())
        raise MappingError(f"unified.{table}: the mapping does not produce the contract: {problems}")
    unique = ", ".join(schema.unique or [])
    check, column = pl.col("check"), pl.col("column")
    duplicate = check == "multiple_fields_uniqueness"
    shown = pl.coalesce(pl.format("'{}'", pl.col("failure_case").str.slice(0, 80)), pl.lit("null"))
    return cases.select(
        pl.col("index").cast(pl.Int64),
        pl.when(duplicate).then(pl.lit("unique")).otherwise(check.str.split("(").list.first()).alias("check"),
        pl.when(duplicate).then(pl.lit(unique.replace(" ", ""))).otherwise(column).alias("field"),
        pl.when(duplicate).then(pl.lit(f"duplicate key ({unique})"))
        .when(check == "not_nullable").then(pl.format("{} is missing", column))
        .when(check.str.starts_with("isin")).then(
            pl.format("{} {} is not an allowed value (ISO code or the model's vocabulary)", column, shown))
        .when(check.str.starts_with("str_matches")).then(pl.format("{} {} is not well-formed", column, shown))
        .otherwise(pl.format("{} {} fails {}", column, shown, check.str.slice(0, 120))).alias("reason"),
    )


def validate(table: str, frame: pl.DataFrame, detected_at: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows without the problem columns, quarantine rows)."""
    frame = frame.with_columns(pl.lit(None, pl.String).alias(c) for c in PROBLEM_COLUMNS if c not in frame.columns)
    problems = frame.with_row_index("index").filter(pl.col(PROBLEM_FIELD).is_not_null()).select(
        pl.col("index").cast(pl.Int64), pl.lit("readable").alias("check"), pl.col(PROBLEM_FIELD).alias("field"),
        pl.col(PROBLEM_REASON).alias("reason"))
    body = frame.drop(PROBLEM_COLUMNS, strict=False)
    failures = pl.concat([problems, contract_failures(table, body)], how="vertical")
    if failures.height == 0:
        return body, empty_quarantine()
    bad = failures.get_column("index").unique().implode()
    kept = body.with_row_index("_row").filter(~pl.col("_row").is_in(bad)).drop("_row")
    return kept, _quarantine_rows(table, body, failures, detected_at)


def _cascade(table: str, frame: pl.DataFrame, dropped: pl.DataFrame, detected_at: datetime) -> tuple[pl.DataFrame,
                                                                                                       pl.DataFrame]:
    """Rows of a child table whose document was quarantined go too (a document is written whole or not)."""
    parent, column = CHILDREN[table]
    if dropped.height == 0:
        return frame, empty_quarantine()
    keys = dropped.select("tenant", "app", pl.col("id").alias(column)).unique()
    orphans = frame.join(keys, on=["tenant", "app", column], how="semi")
    if orphans.height == 0:
        return frame, empty_quarantine()
    kept = frame.join(keys, on=["tenant", "app", column], how="anti")
    failures = orphans.with_row_index("index").select(
        pl.col("index").cast(pl.Int64), pl.lit("document_quarantined").alias("check"), pl.lit(column).alias("field"),
        pl.format("its {} {} was quarantined", pl.lit(ENTITIES[parent]), pl.col(column)).alias("reason"))
    return kept, _quarantine_rows(table, orphans, failures, detected_at)


def rejected_records(raw: RawByApp, detected_at: datetime) -> pl.DataFrame:
    """What the extraction refused (raw_<app>.rejected_records, append-only): the latest rejection of each
    record, unless the record has loaded since."""
    frames = []
    for app in APPS:
        tables = raw.get(app, {})
        rejected = mapping.raw_table(tables, app, "rejected_records", REJECTED)
        if "rejected_records" not in tables:
            continue
        # one row per record and field, the latest (a record without an id is known by its text)
        latest = (rejected.with_columns(_record=pl.coalesce("record_id", "record")).sort("rejected_at")
                  .unique(subset=["tenant", "collection", "_record", "field"], keep="last", maintain_order=True))
        for collection in latest.select("collection").unique().collect().get_column("collection").to_list():
            table = (collection or "").replace("-", "_")
            if table in tables:  # loaded since: the rejection is history
                loaded = mapping.raw_table(tables, app, table, {"id": pl.String()}).select("tenant", "id")
                latest = latest.join(loaded, left_on=["tenant", "record_id"], right_on=["tenant", "id"], how="anti")
        frames.append(latest.select(
            "tenant", pl.lit(app).alias("app"),
            pl.col("collection").replace_strict({**RAW_ENTITIES, **getattr(APPS[app], "REJECTED_ENTITIES", {})},
                                                default=pl.col("collection")).alias("entity"),
            pl.col("record_id").alias("id"), pl.lit("extract").alias("check"), "field", "reason",
            pl.coalesce(pl.col("rejected_at"), pl.lit(detected_at, INSTANT)).alias("detected_at"),
        ).cast(QUARANTINE))
    return pl.concat(frames, how="vertical").collect() if frames else empty_quarantine()


def build(raw: RawByApp, settings: mapping.Settings | None, *, detected_at: datetime,
          app_settings: Mapping[str, mapping.Settings] | None = None) -> Build:
    """Maps, validates and quarantines every unified table (all tenants, all apps, one pass)."""
    lazy = map_apps(raw, settings, app_settings)
    collected = dict(zip(lazy, pl.collect_all(list(lazy.values())), strict=True))
    tables: dict[str, pl.DataFrame] = {}
    dropped: dict[str, pl.DataFrame] = {}
    held: dict[str, pl.DataFrame] = {}
    rejected = rejected_records(raw, detected_at)
    quarantined: list[pl.DataFrame] = [rejected]
    for table in TABLES:  # parents before their children (MODEL's order)
        kept, bad = validate(table, collected[table], detected_at)
        if table in CHILDREN:
            kept, orphans = _cascade(table, kept, dropped[CHILDREN[table][0]], detected_at)
            bad = pl.concat([bad, orphans], how="vertical")
        tables[table] = kept
        held[table] = bad
        # a document the extraction refused is gone too: its lines must not stand alone
        dropped[table] = pl.concat([bad, rejected.filter(pl.col("entity") == ENTITIES[table])], how="vertical")
        quarantined.append(bad)
    quarantine = pl.concat(quarantined, how="vertical").sort("tenant", "app", "entity", "id", nulls_last=True)
    return Build(tables, quarantine, held)
