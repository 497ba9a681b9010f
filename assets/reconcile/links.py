"""reconcile.links: the crosswalk between a Sequence record and its twin in a connected app.

Links come from what Sequence stores (customer integration ids, invoice and credit-note linkedServices, line
externalIds: the unified `links` column), from the tenant's settings (product -> item, tax category -> tax
code), from Ledgerlink's own confirmed creates (writeback.outbox), and from what a CRM stores (a company's
Sequence customer id field: unified companies' `links`, method app_field). Records that no link joins get match
candidates (email, then normalised legal name for customers; number for invoices and credit notes) which are
only ever *proposed*: a candidate unique both ways becomes an `unlinked_candidate` row with action `link`, an
ambiguous one a `review` row listing the candidates. Nothing is linked silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from assets.reconcile.rules import SEQUENCE, SettingsFrames, clean_text, folded_text, legal_name_key

LINKS_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "app": pl.String(),
    "entity": pl.String(),
    "sequence_id": pl.String(),
    "app_id": pl.String(),
    "method": pl.String(),  # integration_id | linked_service | external_id | settings | writeback | app_field
    "linked_at": pl.Datetime("us", "UTC"),
}
# app_field: the app's own record names its Sequence twin (a CRM company's Sequence customer id field)
METHODS = ("integration_id", "linked_service", "external_id", "settings", "writeback", "app_field")
# entity -> unified table whose app records name their Sequence twin in `links` (app "sequence")
APP_STORED = {"customer": "companies"}
# entity -> (unified table, how Sequence stores the link)
STORED = {
    "customer": ("customers", "integration_id"),
    "invoice": ("invoices", "linked_service"),
    "credit_note": ("credit_notes", "linked_service"),
    "invoice_line": ("invoice_lines", "external_id"),
    "credit_note_line": ("credit_note_lines", "external_id"),
}
# Vendor service names Sequence writes in its links -> the unified app id.
SERVICE_APPS = {"quickbooks_online": "quickbooks", "quickbooks": "quickbooks", "xero": "xero",
                "hubspot": "hubspot", "salesforce": "salesforce", "attio": "attio"}
MISMATCH_SCHEMA: dict[str, pl.DataType] = {
    name: pl.String() for name in ("tenant", "app", "entity", "sequence_id", "app_id", "kind", "field",
                                   "sequence_value", "app_value", "proposed_action", "reason")
}
APP_LABELS = {"sequence": "Sequence", "quickbooks": "QuickBooks", "xero": "Xero", "hubspot": "HubSpot",
              "salesforce": "Salesforce", "attio": "Attio"}


def app_label(app: pl.Expr) -> pl.Expr:
    return app.replace_strict(APP_LABELS, default=app, return_dtype=pl.String)


def empty_links() -> pl.LazyFrame:
    return pl.LazyFrame(schema=LINKS_SCHEMA)


def link_app(service: pl.Expr) -> pl.Expr:
    """The unified app id of a link's app or vendor service name (\"QuickBooks_Online\" -> \"quickbooks\")."""
    key = service.str.to_lowercase().str.strip_chars()
    return key.replace_strict(SERVICE_APPS, default=key, return_dtype=pl.String)


def stored_links(unified: Mapping[str, pl.LazyFrame], linked_at: datetime) -> pl.LazyFrame:
    """Links Sequence keeps on its own records (one row per Sequence record and twin)."""
    frames = []
    for entity, (table, method) in STORED.items():
        frame = unified.get(table)
        if frame is None:
            continue
        frames.append(
            frame.filter(pl.col("app") == SEQUENCE)
            .select("tenant", pl.col("id").alias("sequence_id"), "links")
            .explode("links")
            .filter(pl.col("links").is_not_null())
            .select("tenant", link_app(pl.col("links").struct.field("app")).alias("app"),
                    pl.lit(entity).alias("entity"), "sequence_id",
                    clean_text(pl.col("links").struct.field("app_id")).alias("app_id"), pl.lit(method).alias("method"),
                    pl.lit(linked_at, dtype=LINKS_SCHEMA["linked_at"]).alias("linked_at"))
            .filter(pl.col("app_id").is_not_null() & (pl.col("app") != SEQUENCE))
        )
    return pl.concat(frames, how="vertical") if frames else empty_links()


def app_field_links(unified: Mapping[str, pl.LazyFrame], linked_at: datetime) -> pl.LazyFrame:
    """Links an app keeps on its own records: a CRM company whose Sequence-id field (settings link_fields) names a
    Sequence customer."""
    frames = []
    for entity, table in APP_STORED.items():
        frame = unified.get(table)
        if frame is None:
            continue
        frames.append(
            frame.filter(pl.col("app") != SEQUENCE)
            .select("tenant", "app", pl.col("id").alias("app_id"), "links")
            .explode("links")
            .filter(pl.col("links").is_not_null()
                    & (link_app(pl.col("links").struct.field("app")) == SEQUENCE))
            .select("tenant", "app", pl.lit(entity).alias("entity"),
                    clean_text(pl.col("links").struct.field("app_id")).alias("sequence_id"), "app_id",
                    pl.lit("app_field").alias("method"),
                    pl.lit(linked_at, dtype=LINKS_SCHEMA["linked_at"]).alias("linked_at"))
            .filter(pl.col("sequence_id").is_not_null())
        )
    return pl.concat(frames, how="vertical") if frames else empty_links()


def settings_links(app: str, settings: SettingsFrames, linked_at: datetime) -> pl.LazyFrame:
    """The tenant's mappings as links: product -> item, tax category -> tax code."""
    stamp = pl.lit(linked_at, dtype=LINKS_SCHEMA["linked_at"]).alias("linked_at")
    items = settings.items.filter(pl.col("item_id").is_not_null()).select(
        "tenant", pl.lit(app).alias("app"), pl.lit("product").alias("entity"),
        pl.col("product_id").alias("sequence_id"), pl.col("item_id").alias("app_id"),
        pl.lit("settings").alias("method"), stamp)
    codes = settings.tax_codes.filter(pl.col("tax_code").is_not_null()).select(
        "tenant", pl.lit(app).alias("app"), pl.lit("tax_category").alias("entity"),
        pl.col("tax_category_id").alias("sequence_id"), pl.col("tax_code").alias("app_id"),
        pl.lit("settings").alias("method"), stamp)
    return pl.concat([items, codes], how="vertical")


# Confirmed write-back operations that make a twin (writeback/outbox.py's words, and reconcile's actions).
LINKING_OPERATIONS = ("create", "import", "link", "create_item", "create_in_app", "import_to_sequence")


def writeback_links(outbox: pl.LazyFrame | None, linked_at: datetime) -> pl.LazyFrame:
    """Twins Ledgerlink itself made and the app confirmed (writeback.outbox), when that table exists: confirmed
    creates, imports, links and item creations. Only tenant, app, entity, sequence_id and app_id are required;
    state, operation, counterpart_app (an import writes to Sequence: its twin is in the counterpart app) and
    confirmed_at are used when present."""
    if outbox is None:
        return empty_links()
    columns = outbox.collect_schema().names()
    if not {"tenant", "app", "entity", "sequence_id", "app_id"} <= set(columns):
        return empty_links()
    frame = outbox
    if "state" in columns:
        frame = frame.filter(pl.col("state").str.to_lowercase() == "confirmed")
    if "operation" in columns:
        frame = frame.filter(pl.col("operation").str.to_lowercase().is_in(LINKING_OPERATIONS))
    app = pl.coalesce("counterpart_app", "app") if "counterpart_app" in columns else pl.col("app")
    when = next((c for c in ("confirmed_at", "updated_at", "sent_at") if c in columns), None)
    stamp = (pl.col(when).cast(LINKS_SCHEMA["linked_at"], strict=False) if when else pl.lit(None)).fill_null(
        pl.lit(linked_at, dtype=LINKS_SCHEMA["linked_at"]))
    return frame.select(
        pl.col("tenant").cast(pl.String), app.cast(pl.String).alias("app"), pl.col("entity").cast(pl.String),
        clean_text(pl.col("sequence_id")).alias("sequence_id"), clean_text(pl.col("app_id")).alias("app_id"),
        pl.lit("writeback").alias("method"), stamp.alias("linked_at"),
    ).filter(pl.col("sequence_id").is_not_null() & pl.col("app_id").is_not_null() & (pl.col("app") != SEQUENCE))


def build_links(unified: Mapping[str, pl.LazyFrame], *, settings: Mapping[str, SettingsFrames] | None = None,
                outbox: pl.LazyFrame | None = None, linked_at: datetime) -> pl.LazyFrame:
    """Every known link, one row per (tenant, app, entity, sequence_id, app_id); when several sources know the same
    link, the first in METHODS order names it (what Sequence stores wins over our own write-back record).
    `settings`: app -> that app's connection settings as frames."""
    frames = [stored_links(unified, linked_at), writeback_links(outbox, linked_at),
              app_field_links(unified, linked_at)]
    frames += [settings_links(app, frames_, linked_at) for app, frames_ in (settings or {}).items()]
    rank = pl.col("method").replace_strict({m: i for i, m in enumerate(METHODS)}, default=len(METHODS),
                                           return_dtype=pl.Int64)
    key = ["tenant", "app", "entity", "sequence_id", "app_id"]
    return (pl.concat([f.select(list(LINKS_SCHEMA)) for f in frames], how="vertical")
            .sort([*key, rank])
            .unique(subset=key, keep="first", maintain_order=True)
            .select(list(LINKS_SCHEMA)))


# ----------------------------------------------------------------------------------------------------------
# Match candidates for unlinked records
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchRule:
    """One way two records may be the same: equal `sequence` and `app` keys (expressions on each side)."""

    basis: str  # said in the reason: "email", "legal name", "number"
    sequence: pl.Expr
    app: pl.Expr


CUSTOMER_MATCHES = (
    MatchRule("email", folded_text(pl.col("email")), folded_text(pl.col("email"))),
    MatchRule("legal name", legal_name_key(pl.col("name")), legal_name_key(pl.col("name"))),
)
DOCUMENT_MATCHES = (MatchRule("number", folded_text(pl.col("number")), folded_text(pl.col("number"))),)


@dataclass(frozen=True)
class Candidates:
    rows: pl.LazyFrame  # mismatch rows (kind unlinked_candidate)
    pairs: pl.LazyFrame  # tenant, app, entity, sequence_id, app_id: every candidate pair, ambiguous or not


def match_candidates(sequence: pl.LazyFrame, app: pl.LazyFrame, *, entity: str, rules: Sequence[MatchRule],
                     subject: pl.Expr, app_subject: pl.Expr) -> Candidates:
    """Proposes twins for unlinked records. `sequence`: the Sequence records without a link to the app (tenant, id
    and what the rules read); `app`: the app's records no Sequence record links (tenant, app, id, ...).
    Rules are tried in order; a record with a candidate under one rule is not matched by the later ones, and an
    app record that is anybody's candidate is not offered again."""
    seq = sequence.select("tenant", pl.col("id").alias("sequence_id"), subject.alias("_subject"),
                          *[r.sequence.alias(f"_k{i}") for i, r in enumerate(rules)])
    other = app.select("tenant", "app", pl.col("id").alias("app_id"), app_subject.alias("_app_subject"),
                       *[r.app.alias(f"_k{i}") for i, r in enumerate(rules)])
    found = []
    for i, rule in enumerate(rules):
        key = f"_k{i}"
        pairs = (seq.filter(pl.col(key).is_not_null()).select("tenant", "sequence_id", "_subject", key)
                 .join(other.filter(pl.col(key).is_not_null()).select("tenant", "app", "app_id", "_app_subject", key),
                       on=["tenant", key], how="inner")
                 .with_columns(pl.lit(rule.basis).alias("_basis"), pl.col(key).alias("_value")))
        pairs = pairs.drop(key).collect().lazy()  # each round feeds the next: compute it once
        found.append(pairs)
        seq = seq.join(pairs.select("tenant", "sequence_id").unique(), on=["tenant", "sequence_id"], how="anti")
        other = other.join(pairs.select("tenant", "app", "app_id").unique(), on=["tenant", "app", "app_id"], how="anti")
    pairs = pl.concat(found, how="vertical").with_columns(
        _n_app=pl.len().over("tenant", "app", "sequence_id"), _n_seq=pl.len().over("tenant", "app", "app_id"))
    rivals = pairs.group_by("tenant", "app", "app_id").agg(
        pl.col("_subject").sort().str.join(", ").alias("_rivals"))
    per_record = (pairs.join(rivals, on=["tenant", "app", "app_id"], how="left", validate="m:1")
                  .group_by("tenant", "app", "sequence_id")
                  .agg(pl.col("_subject").first(), pl.col("_basis").first(), pl.col("_value").first(),
                       pl.col("app_id").sort(), pl.col("_app_subject").sort_by("app_id"),
                       pl.col("_n_seq").max(), pl.col("_rivals").first()))
    label = app_label(pl.col("app"))
    unique = (pl.col("app_id").list.len() == 1) & (pl.col("_n_seq") == 1)
    reason = (
        pl.when(unique).then(pl.concat_str([
            pl.col("_subject"), pl.lit(" is not linked to "), label, pl.lit("; "), label, pl.lit(" "),
            pl.col("_app_subject").list.first(), pl.lit(" has the same "), pl.col("_basis"), pl.lit(" ("),
            pl.col("_value"), pl.lit("): link them after checking it is the same record.")]))
        .when(pl.col("app_id").list.len() > 1).then(pl.concat_str([
            pl.col("_subject"), pl.lit(" is not linked to "), label, pl.lit(" and several "), label,
            pl.lit(" records have the same "), pl.col("_basis"), pl.lit(" ("), pl.col("_value"), pl.lit("): "),
            pl.col("_app_subject").list.join(", "), pl.lit("; choose the right one.")]))
        .otherwise(pl.concat_str([
            pl.col("_subject"), pl.lit(" is not linked to "), label, pl.lit("; "), label, pl.lit(" "),
            pl.col("_app_subject").list.first(), pl.lit(" has the same "), pl.col("_basis"), pl.lit(" ("),
            pl.col("_value"), pl.lit(") but so do "), pl.col("_rivals"), pl.lit("; choose the right one.")]))
    )
    rows = per_record.select(
        "tenant", "app", pl.lit(entity).alias("entity"), "sequence_id",
        pl.when(pl.col("app_id").list.len() == 1).then(pl.col("app_id").list.first()).alias("app_id"),
        pl.lit("unlinked_candidate").alias("kind"), pl.lit(None, pl.String).alias("field"),
        pl.col("_value").alias("sequence_value"), pl.col("_value").alias("app_value"),
        pl.when(unique).then(pl.lit("link")).otherwise(pl.lit("review")).alias("proposed_action"),
        reason.alias("reason"),
    )
    pairs = pairs.select("tenant", "app", pl.lit(entity).alias("entity"), "sequence_id", "app_id")
    return Candidates(rows=rows.collect().lazy(), pairs=pairs.collect().lazy())
