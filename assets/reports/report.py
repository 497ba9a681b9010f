"""The data-quality report, as pure functions: reconciliation results in, a report model out, HTML from it.

Inputs are frames read elsewhere (assets/reports/assets.py): reconcile.mismatches, reconcile.links, record counts
of the unified tables, quarantined rows, and optionally reconcile.mismatch_history. The model says, per tenant,
app and entity, how many records agree, how many need attention and why (in words a finance person uses), with
examples linking to the records in each app. `render_html` turns it into one self-contained page: charts are
static SVG (charts.py), no script, nothing fetched, so it opens offline and prints.

How records are counted: every Sequence record of an entity is compared with the app; it agrees unless a
mismatch names it. Records only the app has (missing in Sequence, invalid app records) are added to the
records compared. A mismatch whose proposed action is `none` (e.g. a Stripe-paid invoice QuickBooks also
marks paid) is "noted": expected, nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import jinja2
import polars as pl

APP_LABELS = {"sequence": "Sequence", "quickbooks": "QuickBooks", "xero": "Xero", "hubspot": "HubSpot",
              "salesforce": "Salesforce", "attio": "Attio"}
ENTITY_LABELS = {"customer": "Customers", "invoice": "Invoices", "credit_note": "Credit notes",
                 "product": "Products", "tax_category": "Tax categories", "payment": "Payments"}
ENTITY_SINGULAR = {"customer": "customer", "invoice": "invoice", "credit_note": "credit note",
                   "product": "product", "tax_category": "tax category", "payment": "payment",
                   "invoice_line": "invoice line", "credit_note_line": "credit note line"}
# kind -> (short label, what it means); {app} is the connected app's name
KINDS: dict[str, tuple[str, str]] = {
    "missing_in_app": ("Missing in {app}", "Sequence has the record; {app} does not."),
    "missing_in_sequence": ("Missing in Sequence", "{app} has the record; Sequence does not."),
    "field_differs": ("Details differ", "Both have the record, but a field disagrees."),
    "status_differs": ("Paid / void status differs", "One side says paid or void, the other does not."),
    "unlinked_candidate": ("Probable match, not linked", "A record looks like the other side's twin (same "
                           "email, name or number) but is not linked; confirm before linking."),
    "invalid": ("Breaks a data rule", "The record fails the data contract (e.g. no id, a malformed amount)."),
    "importable": ("Ready to import into Sequence", "A {app} customer not in Sequence, complete enough to "
                   "import."),
    "not_importable": ("Cannot be imported", "A {app} customer not in Sequence lacks what an import needs "
                       "(email, full address, alpha-2 country)."),
    "product_unmapped": ("Product not mapped to an item", "Its lines go to {app}'s default item."),
    "item_name_not_unique": ("Item name already taken", "Creating the product's {app} item would fail: "
                             "item names are unique."),
    "item_account_differs": ("Item books to another account", "The {app} item's income account is not the "
                             "account code the settings name."),
    "tax_code_unresolved": ("Tax code cannot be resolved", "The tax category maps to a {app} tax code that "
                            "does not exist or is inactive."),
    "currency_differs": ("Currency differs from the customer's", "The invoice's currency is not the {app} "
                         "customer's currency, so it cannot sync."),
    "stripe_link_ignored": ("Paid via Stripe link (no action)", "{app} says paid, but Stripe owns the payment "
                            "status of invoices with a Stripe link; nothing to do."),
}
FIELDS = {
    "due_date": "Due date", "memo": "Message on invoice", "invoice_date": "Invoice date",
    "number": "Number", "billing_email": "Customer email", "status": "Status", "payment_status": "Payment status",
    "currency": "Currency", "name": "Name", "item": "Item mapping", "account_code": "Account code",
    "tax_code": "Tax code", "net_total": "Net total", "line.description": "Line description",
    "line.quantity": "Line quantity", "line.rate": "Line rate", "line.tax_code": "Line tax code",
    "line.item": "Line product/service", "line.amount": "Line amount",
    "billing_address.line1": "Address line 1", "billing_address.city": "City",
    "billing_address.postal_code": "Postal code", "billing_address.country": "Country",
    "Id": "Record id", "TotalAmt": "Total amount",
}
ACTIONS = {
    "create_in_app": "Create in {app}", "update_in_app": "Update in {app}", "void_in_app": "Void in {app}",
    "mark_paid_in_sequence": "Mark paid in Sequence", "import_to_sequence": "Import into Sequence",
    "link": "Link the two records", "create_item": "Create the {app} item", "update_item": "Update the {app} item",
    "fix_settings": "Fix the integration settings", "review": "Review by hand", "none": "Nothing to do",
}
# quarantine check name (after "<table>.") -> label
CHECKS = {
    "addresses_complete": "Incomplete address",
    "emails_valid": "Invalid or missing email",
    "currencies_iso4217": "Unknown currency",
    "totals_match_lines": "Total differs from its lines",
    "tax_codes_resolvable": "Tax code cannot be resolved",
    "tax_categories_mapped": "Tax category not mapped",
    "item_names_unique": "Item name already taken",
}

MISMATCH_COLUMNS = {c: pl.String for c in ("tenant", "app", "entity", "sequence_id", "app_id", "kind", "field",
                                           "sequence_value", "app_value", "proposed_action", "reason")}
LINK_COLUMNS = {**{c: pl.String for c in ("tenant", "app", "entity", "sequence_id", "app_id", "method")},
                "linked_at": pl.Datetime("us", "UTC")}
COUNT_COLUMNS = {"tenant": pl.String, "app": pl.String, "entity": pl.String, "records": pl.Int64}
QUARANTINE_COLUMNS = {**{c: pl.String for c in ("source", "tenant", "app", "entity", "id", "check", "field",
                                                 "reason")},
                      "detected_at": pl.Datetime("us", "UTC")}
HISTORY_COLUMNS = {"tenant": pl.String, "at": pl.Datetime("us", "UTC"), "kind": pl.String, "count": pl.Int64}
DASH = "—"


def conform(frame: pl.DataFrame | None, columns: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """The frame with exactly these columns and types (missing columns null; None or no table: no rows)."""
    if frame is None or frame.width == 0:
        return pl.DataFrame(schema=dict(columns))
    return frame.select([(pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
                         for c, t in columns.items()])


# ----------------------------------------------------------------------------------------------------------
# Links to the records, one small function per app
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppTarget:
    """Where a tenant's app shows its records: the vendor's web app (base_url None) or a sandbox emulator."""

    base_url: str | None = None
    realm_id: str | None = None  # QuickBooks company


_SEQUENCE_PAGES = {"customer": "customers", "invoice": "invoices", "credit_note": "credit-notes",
                   "product": "products"}
_QUICKBOOKS_PAGES = {"customer": "customerdetail?nameId=", "invoice": "invoice?txnId=",
                     "credit_note": "creditmemo?txnId=", "payment": "recvpayment?txnId="}
_QUICKBOOKS_ENTITIES = {"customer": "customer", "invoice": "invoice", "credit_note": "creditmemo",
                        "product": "item", "tax_category": "taxcode", "payment": "payment"}


def sequence_url(entity: str, record_id: str, target: AppTarget) -> str | None:
    page = _SEQUENCE_PAGES.get(entity)
    if page is None:
        return None
    base = target.base_url.rstrip("/") if target.base_url else "https://dashboard.sequencehq.com"
    return f"{base}/{page}/{quote(record_id, safe='')}"


def quickbooks_url(entity: str, record_id: str, target: AppTarget) -> str | None:
    if target.base_url:  # the emulator answers the API's read-one path
        name = _QUICKBOOKS_ENTITIES.get(entity)
        if name is None or not target.realm_id:
            return None
        return f"{target.base_url.rstrip('/')}/v3/company/{target.realm_id}/{name}/{quote(record_id, safe='')}"
    page = _QUICKBOOKS_PAGES.get(entity)
    return None if page is None else f"https://app.qbo.intuit.com/app/{page}{quote(record_id, safe='')}"


URL_BUILDERS = {"sequence": sequence_url, "quickbooks": quickbooks_url}


def record_url(targets: Mapping[tuple[str, str], AppTarget], tenant: str, app: str, entity: str,
               record_id: str | None) -> str | None:
    builder = URL_BUILDERS.get(app)
    if builder is None or not record_id:
        return None
    return builder(entity, record_id, targets.get((tenant, app), AppTarget()))


# ----------------------------------------------------------------------------------------------------------
# Words
# ----------------------------------------------------------------------------------------------------------


def app_label(app: str | None) -> str:
    return APP_LABELS.get(app or "", (app or "").title())


def kind_label(kind: str, app: str | None = None) -> str:
    label = KINDS.get(kind, (kind.replace("_", " ").capitalize(), ""))[0]
    return label.format(app=app_label(app) if app and app != "sequence" else "the app")


def kind_meaning(kind: str, app: str | None = None) -> str:
    meaning = KINDS.get(kind, ("", ""))[1]
    return meaning.format(app=app_label(app) if app and app != "sequence" else "the app")


def field_label(name: str | None) -> str:
    if not name:
        return DASH
    return FIELDS.get(name) or name.replace("_", " ").replace(".", " › ").capitalize()


def action_label(action: str | None, app: str | None = None) -> str:
    if not action:
        return "Review by hand"
    label = ACTIONS.get(action, action.replace("_", " ").capitalize())
    return label.format(app=app_label(app) if app and app != "sequence" else "the app")


def check_label(check: str | None) -> str:
    name = (check or "").rsplit(".", 1)[-1]
    return CHECKS.get(name) or name.replace("_", " ").capitalize() or DASH


def _value(value: str | None, limit: int = 90) -> str:
    if value is None or value == "":
        return DASH
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    app: str
    entity: str
    sequence_records: int | None  # None: the row is about Sequence's own records (no twin to compare)
    app_records: int | None
    compared: int
    agree: int | None
    disagree: int
    noted: int

    @property
    def label(self) -> str:
        if self.app == "sequence":  # Sequence's own records that break a rule, e.g. an unknown currency
            return f"Sequence data · {ENTITY_LABELS.get(self.entity, self.entity)}"
        return f"{app_label(self.app)} · {ENTITY_LABELS.get(self.entity, self.entity)}"

    @property
    def share(self) -> float | None:
        return None if self.agree is None or not self.compared else self.agree / self.compared


@dataclass(frozen=True)
class Reason:
    kind: str
    label: str
    meaning: str
    entity: str
    records: int


@dataclass(frozen=True)
class FieldCount:
    entity: str
    field: str
    label: str
    count: int


@dataclass(frozen=True)
class Example:
    entity: str
    field: str
    sequence_id: str | None
    sequence_url: str | None
    app: str
    app_id: str | None
    app_url: str | None
    sequence_value: str
    app_value: str
    reason: str
    action: str


@dataclass(frozen=True)
class ExampleGroup:
    kind: str
    label: str
    meaning: str
    total: int
    examples: list[Example]
    app: str = ""

    @property
    def app_says(self) -> str:
        return f"{app_label(self.app)} says" if self.app and self.app != "sequence" else "App says"


@dataclass(frozen=True)
class Quarantined:
    check: str
    source: str
    app: str
    entity: str
    id: str | None
    url: str | None
    field: str
    reason: str
    detected_at: datetime | None


@dataclass(frozen=True)
class TrendPoint:
    at: datetime
    kind: str
    count: int


@dataclass
class TenantReport:
    tenant: str
    agreement: list[Agreement]
    reasons: list[Reason]
    fields: list[FieldCount]
    examples: list[ExampleGroup]
    quarantine: list[Quarantined]
    quarantine_total: int
    quarantine_by_check: list[tuple[str, int]]
    trend: list[TrendPoint] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return sum(a.compared for a in self.agreement)

    @property
    def agree(self) -> int:
        return sum(a.agree or 0 for a in self.agreement)

    @property
    def disagree(self) -> int:
        return sum(a.disagree for a in self.agreement)

    @property
    def noted(self) -> int:
        return sum(a.noted for a in self.agreement)

    @property
    def anchor(self) -> str:
        return f"tenant-{self.tenant}"


@dataclass
class Report:
    generated_at: datetime
    warehouse: str
    reconciled_at: datetime | None
    tenants: list[TenantReport]
    kind_counts: dict[str, int]  # mismatch rows per kind, every known kind present
    mismatch_rows: int
    quarantine_total: int
    has_history: bool
    reconciled: bool = True  # False: no reconcile.mismatches yet, so nothing can be said about agreement

    @property
    def compared(self) -> int:
        return sum(t.compared for t in self.tenants)

    @property
    def agree(self) -> int:
        return sum(t.agree for t in self.tenants)

    @property
    def disagree(self) -> int:
        return sum(t.disagree for t in self.tenants)

    @property
    def noted(self) -> int:
        return sum(t.noted for t in self.tenants)


@dataclass(frozen=True)
class Inputs:
    mismatches: pl.DataFrame
    links: pl.DataFrame
    counts: pl.DataFrame  # (tenant, app, entity, records) of the unified tables
    quarantine: pl.DataFrame
    history: pl.DataFrame | None = None  # (tenant, at, kind, count)
    targets: Mapping[tuple[str, str], AppTarget] = field(default_factory=dict)
    warehouse: str = ""
    reconciled: bool = True  # reconcile.mismatches exists (an empty one means: everything agrees)

    def conformed(self) -> Inputs:
        return Inputs(conform(self.mismatches, MISMATCH_COLUMNS), conform(self.links, LINK_COLUMNS),
                      conform(self.counts, COUNT_COLUMNS), conform(self.quarantine, QUARANTINE_COLUMNS),
                      None if self.history is None else conform(self.history, HISTORY_COLUMNS),
                      self.targets, self.warehouse, self.reconciled)


def _flagged(mismatches: pl.DataFrame) -> pl.DataFrame:
    """One row per record a mismatch names: its side (Sequence id or app-only) and whether anything is to do."""
    return (mismatches
            .with_columns(
                pl.col("proposed_action").fill_null("review").ne("none").alias("actionable"),
                pl.when(pl.col("sequence_id").is_not_null()).then(pl.lit("sequence")).otherwise(pl.lit("app"))
                .alias("side"),
                pl.coalesce("sequence_id", "app_id", pl.lit("?")).alias("record"))
            .group_by("tenant", "app", "entity", "side", "record")
            .agg(pl.col("actionable").any()))


def agreement_table(mismatches: pl.DataFrame, counts: pl.DataFrame) -> pl.DataFrame:
    """Per (tenant, app, entity): Sequence and app record counts, records compared, agreeing, needing attention
    and noted."""
    flagged = (_flagged(mismatches).group_by("tenant", "app", "entity").agg(
        pl.col("actionable").sum().cast(pl.Int64).alias("disagree"),
        (~pl.col("actionable")).sum().cast(pl.Int64).alias("noted"),
        (pl.col("side") == "sequence").sum().cast(pl.Int64).alias("sequence_flagged"),
        (pl.col("side") == "app").sum().cast(pl.Int64).alias("app_only")))
    sequence_counts = (counts.filter(pl.col("app") == "sequence")
                       .select("tenant", "entity", pl.col("records").alias("sequence_records")))
    app_counts = (counts.filter(pl.col("app") != "sequence")
                  .select("tenant", "app", "entity", pl.col("records").alias("app_records")))
    keys = pl.concat([flagged.select("tenant", "app", "entity"), app_counts.select("tenant", "app", "entity")]
                     ).unique()
    table = (keys.join(flagged, on=["tenant", "app", "entity"], how="left", validate="1:1")
             .join(app_counts, on=["tenant", "app", "entity"], how="left", validate="1:1")
             .join(sequence_counts, on=["tenant", "entity"], how="left", validate="m:1")
             .with_columns(pl.col("disagree", "noted", "sequence_flagged", "app_only").fill_null(0))
             # rows about Sequence's own records (e.g. an invalid Sequence invoice) have no twin to agree with
             .with_columns(pl.when(pl.col("app") == "sequence").then(None).otherwise(pl.col("sequence_records"))
                           .alias("sequence_records")))
    return (table.with_columns(
        pl.when(pl.col("sequence_records").is_null()).then(pl.col("disagree") + pl.col("noted"))
        .otherwise(pl.col("sequence_records") + pl.col("app_only")).alias("compared"),
        pl.when(pl.col("sequence_records").is_null()).then(None)
        .otherwise((pl.col("sequence_records") - pl.col("sequence_flagged")).clip(lower_bound=0)).alias("agree"))
        .sort("tenant", pl.col("app") == "sequence", "app", "entity"))


ENTITY_ORDER = list(ENTITY_LABELS)


def _entity_rank(entity: str) -> int:
    return ENTITY_ORDER.index(entity) if entity in ENTITY_ORDER else len(ENTITY_ORDER)


def _examples(mismatches: pl.DataFrame, tenant: str, targets: Mapping[tuple[str, str], AppTarget],
              per_kind: int) -> list[ExampleGroup]:
    rows = mismatches.filter(pl.col("tenant") == tenant)
    if rows.is_empty():
        return []
    totals = rows.group_by("kind").agg(pl.len().alias("n"), pl.col("app").first()).sort(["n", "kind"],
                                                                                         descending=[True, False])
    # round-robin over fields, so a kind's examples show its different fields before repeating one
    picked = (rows.sort("kind", "field", "entity", "sequence_id", "app_id", nulls_last=True)
              .with_columns(pl.int_range(pl.len()).over("kind", "field").alias("_turn"))
              .sort("kind", "_turn", "field", nulls_last=True)
              .group_by("kind", maintain_order=True).head(per_kind))
    groups = []
    for total in totals.iter_rows(named=True):
        examples = []
        for row in picked.filter(pl.col("kind") == total["kind"]).iter_rows(named=True):
            app = row["app"] or ""
            examples.append(Example(
                entity=row["entity"] or "", field=field_label(row["field"]),
                sequence_id=row["sequence_id"],
                sequence_url=record_url(targets, tenant, "sequence", row["entity"] or "", row["sequence_id"]),
                app=app, app_id=row["app_id"],
                app_url=record_url(targets, tenant, app, row["entity"] or "", row["app_id"]),
                sequence_value=_value(row["sequence_value"]), app_value=_value(row["app_value"]),
                reason=row["reason"] or kind_meaning(row["kind"], app), action=action_label(row["proposed_action"],
                                                                                           app)))
        groups.append(ExampleGroup(total["kind"], kind_label(total["kind"], total["app"]),
                                   kind_meaning(total["kind"], total["app"]), total["n"], examples,
                                   total["app"] or ""))
    return groups


def _quarantine(quarantine: pl.DataFrame, tenant: str, targets: Mapping[tuple[str, str], AppTarget], limit: int
                ) -> tuple[list[Quarantined], int, list[tuple[str, int]]]:
    rows = quarantine.filter(pl.col("tenant") == tenant)
    by_check = (rows.with_columns(pl.col("check").map_elements(check_label, return_dtype=pl.String).alias("_l"))
                .group_by("_l").agg(pl.len().alias("n")).sort(["n", "_l"], descending=[True, False]))
    shown = [
        Quarantined(check=check_label(r["check"]), source=r["source"] or "", app=app_label(r["app"]),
                    entity=ENTITY_SINGULAR.get(r["entity"] or "", r["entity"] or ""), id=r["id"],
                    url=record_url(targets, tenant, r["app"] or "", r["entity"] or "", r["id"]),
                    field=field_label(r["field"]), reason=r["reason"] or "", detected_at=r["detected_at"])
        for r in rows.sort("check", "entity", "app", "id", nulls_last=True).head(limit).iter_rows(named=True)
    ]
    return shown, rows.height, [(r["_l"], r["n"]) for r in by_check.iter_rows(named=True)]


def build_report(inputs: Inputs, *, generated_at: datetime, examples_per_kind: int = 5,
                 quarantine_limit: int = 40) -> Report:
    inputs = inputs.conformed()
    mismatches, targets = inputs.mismatches, inputs.targets
    table = agreement_table(mismatches, inputs.counts)
    tenants = sorted(set(table["tenant"].drop_nulls()) | set(inputs.quarantine["tenant"].drop_nulls())
                     | set(inputs.links["tenant"].drop_nulls()))
    if not inputs.reconciled:  # counts alone would read as "everything agrees"
        table = table.clear()
    reasons_frame = (_flagged_kinds(mismatches)
                     .sort(["tenant", "records", "kind", "entity"], descending=[False, True, False, False]))
    fields_frame = (mismatches.filter(pl.col("kind").is_in(["field_differs", "status_differs"])
                                      & pl.col("field").is_not_null())
                    .group_by("tenant", "entity", "field").agg(pl.len().alias("n"))
                    .sort(["tenant", "n", "field"], descending=[False, True, False]))
    history = inputs.history
    reports = []
    for tenant in tenants:
        agreement = [Agreement(app=r["app"], entity=r["entity"], sequence_records=r["sequence_records"],
                               app_records=r["app_records"], compared=r["compared"], agree=r["agree"],
                               disagree=r["disagree"], noted=r["noted"])
                     for r in table.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        agreement.sort(key=lambda a: (a.app == "sequence", a.app, _entity_rank(a.entity)))
        reasons = [Reason(r["kind"], kind_label(r["kind"], r["app"]), kind_meaning(r["kind"], r["app"]),
                          r["entity"], r["records"])
                   for r in reasons_frame.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        fields = [FieldCount(r["entity"], r["field"], field_label(r["field"]), r["n"])
                  for r in fields_frame.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        shown, total, by_check = _quarantine(inputs.quarantine, tenant, targets, quarantine_limit)
        apps = {a.app for a in agreement if a.app != "sequence"}
        only_app = apps.pop() if len(apps) == 1 else None  # names the app in labels when it is unambiguous
        trend = [] if history is None else [
            TrendPoint(r["at"], kind_label(r["kind"], only_app), r["count"])
            for r in history.filter(pl.col("tenant") == tenant).sort("at", "kind").iter_rows(named=True)]
        reports.append(TenantReport(tenant, agreement, reasons, fields,
                                    _examples(mismatches, tenant, targets, examples_per_kind), shown, total,
                                    by_check, trend))
    kind_counts = {kind: 0 for kind in KINDS}
    for kind, n in mismatches.group_by("kind").len().iter_rows():
        kind_counts[kind or "unknown"] = n
    reconciled_at = inputs.links["linked_at"].max() if inputs.links.height else None
    return Report(generated_at=generated_at, warehouse=inputs.warehouse, reconciled_at=reconciled_at,
                  tenants=reports, kind_counts=kind_counts, mismatch_rows=mismatches.height,
                  quarantine_total=inputs.quarantine.height, has_history=bool(history is not None and history.height),
                  reconciled=inputs.reconciled)


def _flagged_kinds(mismatches: pl.DataFrame) -> pl.DataFrame:
    """Records per (tenant, kind, entity), with the kind's app for its label."""
    return (mismatches.with_columns(pl.coalesce("sequence_id", "app_id", pl.lit("?")).alias("record"))
            .group_by("tenant", "kind", "entity")
            .agg(pl.col("record").n_unique().alias("records"), pl.col("app").first()))


# ----------------------------------------------------------------------------------------------------------
# Text and HTML
# ----------------------------------------------------------------------------------------------------------


def _percent(share: float | None) -> str:
    return DASH if share is None else f"{share * 100:.1f} %"


def summary_lines(report: Report, *, reasons: int = 4) -> list[str]:
    """A one-screen summary per tenant (the CLI prints it; the Dagster metadata shows it as markdown)."""
    lines = []
    if not report.reconciled:
        lines.append("not reconciled yet: no reconcile.mismatches in the warehouse (materialize the reconcile "
                     "assets); only quarantined rows are reported")
    for t in report.tenants:
        if not report.reconciled:
            lines.append(f"{t.tenant}: {t.quarantine_total:,} rows quarantined")
            continue
        share = t.agree / t.compared if t.compared else None
        lines.append(f"{t.tenant}: {t.compared:,} records compared, {t.agree:,} agree ({_percent(share)}), "
                     f"{t.disagree:,} need attention, {t.noted:,} noted, {t.quarantine_total:,} quarantined")
        totals: dict[str, int] = {}
        for r in t.reasons:
            totals[r.label] = totals.get(r.label, 0) + r.records
        top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:reasons]
        if top:
            lines.append("  why: " + ", ".join(f"{label} {n:,}" for label, n in top))
    if not report.tenants and report.reconciled:
        lines.append("no reconciliation results in the warehouse yet (run the reconcile assets first)")
    return lines


def summary_markdown(report: Report) -> str:
    rows = ["| tenant | compared | agree | need attention | noted | quarantined |", "|---|---:|---:|---:|---:|---:|"]
    for t in report.tenants:
        rows.append(f"| {t.tenant} | {t.compared:,} | {t.agree:,} | {t.disagree:,} | {t.noted:,} | "
                    f"{t.quarantine_total:,} |")
    top = sorted(((k, n) for k, n in report.kind_counts.items() if n), key=lambda kv: (-kv[1], kv[0]))
    if top:
        rows.append("")
        rows.append("Mismatches by kind: " + ", ".join(f"{kind_label(k)} {n:,}" for k, n in top))
    return "\n".join(rows)


TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda n: DASH if n is None else f"{n:,}"
    env.filters["percent"] = _percent
    env.filters["when"] = lambda d: DASH if d is None else d.strftime("%d %b %Y, %H:%M UTC")
    env.globals.update(entity_label=lambda e: ENTITY_LABELS.get(e, e), app_label=app_label,
                       entity_singular=lambda e: ENTITY_SINGULAR.get(e, e))
    return env


def render_html(report: Report, *, charts: Mapping[str, str] | None = None, build_seconds: float | None = None
                ) -> str:
    """The page. `charts` maps chart ids (charts.chart_ids) to inline SVG; omitted, they are drawn here."""
    if charts is None:
        from assets.reports.charts import draw_charts

        charts = draw_charts(report)
    return _environment().get_template("report.html.j2").render(
        report=report, charts=charts, build_seconds=build_seconds, kinds=KINDS, kind_label=kind_label,
        kind_meaning=kind_meaning)
