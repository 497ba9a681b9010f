"""The data-quality report, as pure functions: reconciliation results in, a report model out, HTML from it.

Inputs are frames read elsewhere (assets/reports/assets.py): reconcile.mismatches, reconcile.links, record counts
of the unified tables, quarantined rows, the connected apps of the registry, and, when they exist,
reconcile.mismatch_history (counts per run), reconcile.mismatch_log (since when a mismatch is open) and
ops.sync_runs (every extraction run). The model says, per tenant, app and entity, how many records agree, how many
need attention and why (in words a finance person uses), with examples linking to the records in each app and
the date each difference was first seen; how the counts moved over the runs, per reason and per app; and how the
syncs of each connection went. `render_html` turns it into one self-contained page: charts are static SVG
(charts.py), no script, nothing fetched, so it opens offline and prints.

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
    "link_conflict": ("Linked to two records", "Two records on one side name the same twin on the other; only "
                      "one can be right."),
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
HISTORY_COLUMNS = {"tenant": pl.String, "app": pl.String, "kind": pl.String, "count": pl.Int64,
                   "at": pl.Datetime("us", "UTC")}
LOG_COLUMNS = {**MISMATCH_COLUMNS, "valid_from": pl.Datetime("us", "UTC"), "valid_to": pl.Datetime("us", "UTC")}
# a mismatch is the same one across runs while these agree (assets/reconcile/assets.py LOG_IDENTITY)
LOG_IDENTITY = ("tenant", "app", "entity", "sequence_id", "app_id", "kind", "field", "sequence_value", "app_value")
SYNC_COLUMNS = {**{c: pl.String for c in ("run_id", "tenant", "app", "status", "error")},
                "started_at": pl.Datetime("us", "UTC"), "finished_at": pl.Datetime("us", "UTC"),
                "rows_loaded": pl.Int64}
CONNECTION_COLUMNS = {"tenant": pl.String, "app": pl.String}
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
    """Where a tenant's app shows its records: the vendor's web app (base_url None) or a sandbox emulator.

    realm_id names a QuickBooks company; short_code a Xero organisation (its Organisation.ShortCode, e.g.
    "!mBdtL": with it a link opens that organisation even when the reader's last session was in another);
    web_url is a real connection's own host (a Salesforce instance); record_url a template "…{entity}…{id}…" a
    connection may set in the registry for an app that has no link builder here."""

    base_url: str | None = None
    realm_id: str | None = None  # QuickBooks company
    short_code: str | None = None  # Xero organisation
    web_url: str | None = None
    record_url: str | None = None


_SEQUENCE_PAGES = {"customer": "customers", "invoice": "invoices", "credit_note": "credit-notes",
                   "product": "products"}
_QUICKBOOKS_PAGES = {"customer": "customerdetail?nameId=", "invoice": "invoice?txnId=",
                     "credit_note": "creditmemo?txnId=", "payment": "recvpayment?txnId="}
_QUICKBOOKS_ENTITIES = {"customer": "customer", "invoice": "invoice", "credit_note": "creditmemo",
                        "product": "item", "tax_category": "taxcode", "payment": "payment"}
XERO_WEB = "https://go.xero.com"
# Xero's web pages (the deep links Xero documents; a Sequence-synced invoice's externalUrl has the same form).
# Items have no documented page of their own: the products and services list, where the code finds it.
_XERO_PAGES = {"invoice": "/AccountsReceivable/View.aspx?InvoiceID=",
               "credit_note": "/AccountsReceivable/ViewCreditNote.aspx?creditNoteID=",
               "customer": "/Contacts/View/", "payment": "/Bank/ViewTransaction.aspx?bankTransactionID=",
               "product": "/Accounts/Inventory/"}
_XERO_RESOURCES = {"customer": "Contacts", "invoice": "Invoices", "credit_note": "CreditNotes", "product": "Items",
                   "payment": "Payments", "tax_category": "TaxRates"}


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


def xero_url(entity: str, record_id: str, target: AppTarget) -> str | None:
    if target.base_url:  # the emulator answers the API's read-one path
        resource = _XERO_RESOURCES.get(entity)
        return None if resource is None else \
            f"{target.base_url.rstrip('/')}/api.xro/2.0/{resource}/{quote(record_id, safe='')}"
    page = _XERO_PAGES.get(entity)
    if page is None:
        return None
    path = page if page.endswith("/Inventory/") else page + quote(record_id, safe="")
    if not target.short_code:  # opens in the organisation the reader last used
        return XERO_WEB + path
    # Xero's organisation login switches to the tenant's organisation first, then redirects to the page
    return (f"{XERO_WEB}/organisationlogin/default.aspx?shortcode={quote(target.short_code, safe='')}"
            f"&redirecturl={quote(path, safe='/')}")


def salesforce_url(entity: str, record_id: str, target: AppTarget) -> str | None:
    """A Salesforce id opens its record on the org's own host, whatever the object."""
    base = target.base_url or target.web_url
    return None if not base else f"{base.rstrip('/')}/{quote(record_id, safe='')}"


def generic_url(entity: str, record_id: str, target: AppTarget) -> str | None:
    """Apps without a builder: the connection's `record_url` template if the registry gives one, else no link
    (the report still shows the id and the app)."""
    if not target.record_url:
        return None
    try:
        return target.record_url.format(entity=quote(entity, safe=""), id=quote(record_id, safe=""))
    except (KeyError, IndexError, ValueError):  # a template naming other fields: no link rather than a wrong one
        return None


URL_BUILDERS = {"sequence": sequence_url, "quickbooks": quickbooks_url, "xero": xero_url,
                "salesforce": salesforce_url}


def record_url(targets: Mapping[tuple[str, str], AppTarget], tenant: str, app: str, entity: str,
               record_id: str | None) -> str | None:
    if not record_id or not app:
        return None
    target = targets.get((tenant, app), AppTarget())
    if target.record_url:  # the registry's own template wins: the operator knows their app's pages
        return generic_url(entity, record_id, target)
    return URL_BUILDERS.get(app, generic_url)(entity, record_id, target)


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
    app: str = ""


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
    since: datetime | None = None  # first run that found this difference (reconcile.mismatch_log valid_from)


@dataclass(frozen=True)
class ExampleGroup:
    kind: str
    label: str
    meaning: str
    total: int
    examples: list[Example]
    app: str = ""
    oldest: datetime | None = None  # the longest-open difference of this kind was first seen then

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
    """One run's count of one series (a reason's label, or an app's name)."""

    at: datetime
    series: str
    count: int


@dataclass(frozen=True)
class Change:
    """A reason's count for one app at the last run, the run before it, and since when it has been non-zero."""

    app: str
    kind: str
    label: str
    latest: int
    previous: int | None
    since: datetime | None

    @property
    def delta(self) -> int | None:
        return None if self.previous is None else self.latest - self.previous


@dataclass(frozen=True)
class AppStatus:
    """A connected app of a tenant (from the registry): whether its records are compared yet, how many need
    attention, and how its last sync went."""

    app: str
    compared: int
    agree: int
    disagree: int
    reconciled: bool
    last_sync: datetime | None = None
    last_status: str | None = None

    @property
    def label(self) -> str:
        return app_label(self.app)


@dataclass(frozen=True)
class SyncSummary:
    """The extraction runs of one connection (ops.sync_runs)."""

    app: str
    runs: int
    failed: int
    rows_loaded: int
    last_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_success_at: datetime | None

    @property
    def label(self) -> str:
        return app_label(self.app)


@dataclass(frozen=True)
class SyncPoint:
    """One connection's syncs on one day (at: midnight UTC)."""

    at: datetime
    app: str
    rows: int
    runs: int
    failed: int


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
    trend: list[TrendPoint] = field(default_factory=list)  # per reason, summed over apps
    trend_apps: list[TrendPoint] = field(default_factory=list)  # per app, summed over reasons
    changes: list[Change] = field(default_factory=list)
    apps: list[AppStatus] = field(default_factory=list)
    syncs: list[SyncSummary] = field(default_factory=list)
    sync_points: list[SyncPoint] = field(default_factory=list)

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
    trend_apps: list[TrendPoint] = field(default_factory=list)  # every tenant, per app
    runs: int = 0  # reconciliation runs in the history
    has_sync_runs: bool = False
    app_kind_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # app -> kind -> rows, every kind

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
    history: pl.DataFrame | None = None  # (tenant, app, kind, count, at)
    targets: Mapping[tuple[str, str], AppTarget] = field(default_factory=dict)
    warehouse: str = ""
    reconciled: bool = True  # reconcile.mismatches exists (an empty one means: everything agrees)
    log: pl.DataFrame | None = None  # reconcile.mismatch_log: every mismatch with valid_from / valid_to
    sync_runs: pl.DataFrame | None = None  # ops.sync_runs
    connections: pl.DataFrame | None = None  # (tenant, app) the registry connects; None: no registry

    def conformed(self) -> Inputs:
        def optional(frame: pl.DataFrame | None, columns: Mapping[str, pl.DataType]) -> pl.DataFrame | None:
            return None if frame is None else conform(frame, columns)

        return Inputs(conform(self.mismatches, MISMATCH_COLUMNS), conform(self.links, LINK_COLUMNS),
                      conform(self.counts, COUNT_COLUMNS), conform(self.quarantine, QUARANTINE_COLUMNS),
                      optional(self.history, HISTORY_COLUMNS), self.targets, self.warehouse, self.reconciled,
                      optional(self.log, LOG_COLUMNS), optional(self.sync_runs, SYNC_COLUMNS),
                      optional(self.connections, CONNECTION_COLUMNS))


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
    """Per (app, kind): "Missing in Xero" and "Missing in QuickBooks" are separate to-do lists."""
    rows = mismatches.filter(pl.col("tenant") == tenant).with_columns(pl.col("app").fill_null(""))
    if rows.is_empty():
        return []
    # app by app (Sequence's own data last), the largest kind first within each
    totals = (rows.group_by("app", "kind").agg(pl.len().alias("n"), pl.col("since").min())
              .sort([pl.col("app") == "sequence", "app", "n", "kind"], descending=[False, False, True, False]))
    # round-robin over fields, so a kind's examples show its different fields before repeating one
    picked = (rows.sort("app", "kind", "field", "entity", "sequence_id", "app_id", nulls_last=True)
              .with_columns(pl.int_range(pl.len()).over("app", "kind", "field").alias("_turn"))
              .sort("app", "kind", "_turn", "field", nulls_last=True)
              .group_by("app", "kind", maintain_order=True).head(per_kind))
    groups = []
    for total in totals.iter_rows(named=True):
        app, kind = total["app"], total["kind"]
        examples = []
        for row in picked.filter((pl.col("app") == app) & (pl.col("kind") == kind)).iter_rows(named=True):
            examples.append(Example(
                entity=row["entity"] or "", field=field_label(row["field"]),
                sequence_id=row["sequence_id"],
                sequence_url=record_url(targets, tenant, "sequence", row["entity"] or "", row["sequence_id"]),
                app=app, app_id=row["app_id"],
                app_url=record_url(targets, tenant, app, row["entity"] or "", row["app_id"]),
                sequence_value=_value(row["sequence_value"]), app_value=_value(row["app_value"]),
                reason=row["reason"] or kind_meaning(kind, app), action=action_label(row["proposed_action"], app),
                since=row["since"]))
        groups.append(ExampleGroup(kind, kind_label(kind, app), kind_meaning(kind, app), total["n"], examples, app,
                                   total["since"]))
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


_TIME = pl.Datetime("us", "UTC")


def with_since(mismatches: pl.DataFrame, log: pl.DataFrame | None) -> pl.DataFrame:
    """The mismatches with `since`: when the log's open interval of the same mismatch began, i.e. the first run
    that found it and every run since did too (null when the log does not know it, e.g. it predates the log)."""
    if log is None or log.is_empty():
        return mismatches.with_columns(pl.lit(None, _TIME).alias("since"))
    open_since = (log.filter(pl.col("valid_to").is_null()).group_by(list(LOG_IDENTITY))
                  .agg(pl.col("valid_from").min().alias("since")))
    return mismatches.join(open_since, on=list(LOG_IDENTITY), how="left", nulls_equal=True, validate="m:1")


def thin_runs(frame: pl.DataFrame, *, max_runs: int = 60) -> pl.DataFrame:
    """Rows of (at, ...): with more runs than a chart can show apart (a frequent schedule makes dozens a day),
    only each day's last run, the state the day ended in (history counts are snapshots, never summed over runs)."""
    if frame["at"].n_unique() <= max_runs:
        return frame
    last = frame.group_by(pl.col("at").dt.date().alias("_day")).agg(pl.col("at").max())
    return frame.join(last.select("at"), on="at", how="semi")


def trend_series(history: pl.DataFrame, by: str, *, tenant: str | None = None, max_runs: int = 60
                 ) -> pl.DataFrame:
    """(at, series, count): per run, the mismatches of each kind (by="kind") or app (by="app"), summed over the
    other dimension, for one tenant or all; series at zero in every run are left out (the history has a row per
    kind and run, zeros included), and many runs are thinned to each day's last.

    Tenants reconcile at different moments (one run per tenant), so the all-tenant series carries each tenant's
    latest counts forward to every run: at any point it is the sum of what each tenant showed last, not of only
    the tenants that happened to run then."""
    rows = history if tenant is None else history.filter(pl.col("tenant") == tenant)
    per_tenant = (rows.filter(pl.col(by).is_not_null()).group_by("tenant", "at", by).agg(pl.col("count").sum())
                  .sort("at"))
    runs = per_tenant.select("at").unique().sort("at")
    carried = (per_tenant.select("tenant", by).unique().join(runs, how="cross").sort("at")
               .join_asof(per_tenant, on="at", by=["tenant", by], strategy="backward",
                          check_sortedness=False))  # both sorted by "at" above, so within each group too
    frame = (carried.group_by("at", by).agg(pl.col("count").fill_null(0).sum())
             .rename({by: "series"}))
    shown = frame.group_by("series").agg(pl.col("count").max()).filter(pl.col("count") > 0)["series"]
    return thin_runs(frame.filter(pl.col("series").is_in(shown.implode())), max_runs=max_runs).sort("at", "series")


def changes_table(history: pl.DataFrame, tenant: str) -> pl.DataFrame:
    """Per (app, kind) of a tenant: the count at its last run, at the run before, and since when it has been
    non-zero without a break (the first run of the current streak); only kinds non-zero in one of the two."""
    rows = history.filter((pl.col("tenant") == tenant) & pl.col("app").is_not_null())
    runs = rows["at"].unique().sort(descending=True)
    if runs.is_empty():
        return pl.DataFrame(schema={"app": pl.String, "kind": pl.String, "latest": pl.Int64,
                                    "previous": pl.Int64, "since": _TIME})
    latest, previous = runs[0], (runs[1] if runs.len() > 1 else None)
    per_run = rows.group_by("app", "kind", "at").agg(pl.col("count").sum())
    streak = (per_run.group_by("app", "kind").agg(
        pl.col("at").filter(pl.col("count") == 0).max().alias("_last_zero"),
        pl.col("count").filter(pl.col("at") == latest).sum().alias("latest"),
        (pl.col("count").filter(pl.col("at") == previous).sum() if previous is not None else pl.lit(None, pl.Int64))
        .alias("previous")))
    since = (per_run.join(streak.select("app", "kind", "_last_zero"), on=["app", "kind"])
             .filter((pl.col("count") > 0) & (pl.col("_last_zero").is_null() | (pl.col("at") > pl.col("_last_zero"))))
             .group_by("app", "kind").agg(pl.col("at").min().alias("since")))
    return (streak.join(since, on=["app", "kind"], how="left")
            .with_columns(pl.when(pl.col("latest") > 0).then(pl.col("since")).alias("since"),
                          pl.col("latest").cast(pl.Int64), pl.col("previous").cast(pl.Int64))
            .filter((pl.col("latest") > 0) | (pl.col("previous").fill_null(0) > 0))
            .select("app", "kind", "latest", "previous", "since")
            .sort(["app", "latest", "kind"], descending=[False, True, False]))


def sync_summary(sync_runs: pl.DataFrame) -> pl.DataFrame:
    """Per (tenant, app): runs, failed runs, rows loaded, the last run's time, status and error, the last success."""
    failed = pl.col("status") != "success"
    return (sync_runs.sort("started_at", nulls_last=False)
            .group_by("tenant", "app")
            .agg(pl.len().alias("runs"), failed.sum().cast(pl.Int64).alias("failed"),
                 pl.col("rows_loaded").fill_null(0).sum().cast(pl.Int64).alias("rows_loaded"),
                 pl.col("started_at").last().alias("last_at"), pl.col("status").last().alias("last_status"),
                 pl.col("error").last().alias("last_error"),
                 pl.col("started_at").filter(~failed).max().alias("last_success_at"))
            .sort("tenant", pl.col("app") != "sequence", "app"))


def sync_days(sync_runs: pl.DataFrame) -> pl.DataFrame:
    """Per (tenant, app, day): rows loaded, runs and failed runs, for the charts (a frequent schedule makes many
    small runs a day; a day is what a reader compares)."""
    return (sync_runs.filter(pl.col("started_at").is_not_null())
            .group_by("tenant", "app", pl.col("started_at").dt.truncate("1d").alias("at"))
            .agg(pl.col("rows_loaded").fill_null(0).sum().cast(pl.Int64).alias("rows"),
                 pl.len().cast(pl.Int64).alias("runs"),
                 (pl.col("status") != "success").sum().cast(pl.Int64).alias("failed"))
            .sort("tenant", "app", "at"))


def _reconciled_only(table: pl.DataFrame, inputs: Inputs) -> pl.DataFrame:
    """Drops agreement rows of apps that were never reconciled for the tenant (e.g. a CRM whose records reach the
    unified tables before its reconciliation exists): counts alone would read as "everything agrees". Known only
    from a history with apps; without one every counted app stays."""
    history = inputs.history
    if history is None or history["app"].drop_nulls().is_empty():
        return table
    reconciled = pl.concat([f.select("tenant", "app") for f in (history, inputs.mismatches, inputs.links)]).unique()
    return pl.concat([table.filter(pl.col("app") == "sequence"),
                      table.filter(pl.col("app") != "sequence").join(reconciled, on=["tenant", "app"],
                                                                     how="semi")])


def _app_statuses(tenant: str, agreement: list[Agreement], connections: pl.DataFrame | None,
                  syncs: list[SyncSummary]) -> list[AppStatus]:
    apps = {a.app for a in agreement if a.app != "sequence"}
    if connections is not None:
        apps |= set(connections.filter((pl.col("tenant") == tenant) & (pl.col("app") != "sequence"))["app"])
    last = {s.app: s for s in syncs}
    statuses = []
    for app in sorted(apps, key=lambda a: (a not in URL_BUILDERS, a)):
        rows = [a for a in agreement if a.app == app]
        sync = last.get(app)
        statuses.append(AppStatus(app, sum(a.compared for a in rows), sum(a.agree or 0 for a in rows),
                                  sum(a.disagree for a in rows), bool(rows),
                                  sync.last_at if sync else None, sync.last_status if sync else None))
    return statuses


def _reason_label(kind: str, app: str | None, several_apps: bool) -> str:
    """The kind's words; with several apps, which app unless the words already say it."""
    label = kind_label(kind, app)
    if several_apps and app and app != "sequence" and app_label(app) not in label:
        return f"{label} ({app_label(app)})"
    return label


def _series_label(app: str) -> str:
    return "Sequence's own data" if app == "sequence" else app_label(app)


def build_report(inputs: Inputs, *, generated_at: datetime, examples_per_kind: int = 5,
                 quarantine_limit: int = 40, max_runs: int = 60) -> Report:
    inputs = inputs.conformed()
    targets, history, connections = inputs.targets, inputs.history, inputs.connections
    mismatches = with_since(inputs.mismatches, inputs.log)
    table = _reconciled_only(agreement_table(mismatches, inputs.counts), inputs)
    tenant_sources = [table["tenant"], inputs.quarantine["tenant"], inputs.links["tenant"]]
    tenant_sources += [f["tenant"] for f in (connections, history, inputs.sync_runs) if f is not None]
    tenants = sorted(set().union(*(set(s.drop_nulls()) for s in tenant_sources)))
    if connections is not None:  # a tenant removed from the registry leaves the report (its history stays in SQL)
        tenants = [t for t in tenants if t in set(connections["tenant"].to_list())]
    if not inputs.reconciled:  # counts alone would read as "everything agrees"
        table = table.clear()
    reasons_frame = (_flagged_kinds(mismatches)
                     .sort(["tenant", "records", "kind", "entity"], descending=[False, True, False, False]))
    fields_frame = (mismatches.filter(pl.col("kind").is_in(["field_differs", "status_differs"])
                                      & pl.col("field").is_not_null())
                    .group_by("tenant", "entity", "field").agg(pl.len().alias("n"))
                    .sort(["tenant", "n", "field"], descending=[False, True, False]))
    syncs_frame = sync_summary(inputs.sync_runs) if inputs.sync_runs is not None else None
    days_frame = sync_days(inputs.sync_runs) if inputs.sync_runs is not None else None
    reports = []
    for tenant in tenants:
        agreement = [Agreement(app=r["app"], entity=r["entity"], sequence_records=r["sequence_records"],
                               app_records=r["app_records"], compared=r["compared"], agree=r["agree"],
                               disagree=r["disagree"], noted=r["noted"])
                     for r in table.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        agreement.sort(key=lambda a: (a.app == "sequence", a.app, _entity_rank(a.entity)))
        several = len({a.app for a in agreement if a.app != "sequence"}) > 1
        reasons = [Reason(r["kind"], _reason_label(r["kind"], r["app"], several), kind_meaning(r["kind"], r["app"]),
                          r["entity"], r["records"], r["app"] or "")
                   for r in reasons_frame.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        fields = [FieldCount(r["entity"], r["field"], field_label(r["field"]), r["n"])
                  for r in fields_frame.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        shown, total, by_check = _quarantine(inputs.quarantine, tenant, targets, quarantine_limit)
        # a reason's series names the app only when one app is in play (in the comparison or the history)
        trend_apps_seen = {a.app for a in agreement} | (
            set() if history is None else set(history.filter(pl.col("tenant") == tenant)["app"].drop_nulls()))
        trend_apps_seen.discard("sequence")
        only_app = next(iter(trend_apps_seen)) if len(trend_apps_seen) == 1 else None
        trend, trend_apps, changes = [], [], []
        if history is not None:
            trend = [TrendPoint(r["at"], kind_label(r["series"], only_app), r["count"]) for r in
                     trend_series(history, "kind", tenant=tenant, max_runs=max_runs).iter_rows(named=True)]
            trend_apps = [TrendPoint(r["at"], _series_label(r["series"]), r["count"]) for r in
                          trend_series(history, "app", tenant=tenant, max_runs=max_runs).iter_rows(named=True)]
            changes = [Change(r["app"], r["kind"], kind_label(r["kind"], r["app"]), r["latest"], r["previous"],
                              r["since"]) for r in changes_table(history, tenant).iter_rows(named=True)]
        syncs = [] if syncs_frame is None else [
            SyncSummary(r["app"], r["runs"], r["failed"], r["rows_loaded"], r["last_at"], r["last_status"],
                        r["last_error"], r["last_success_at"])
            for r in syncs_frame.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        sync_points = [] if days_frame is None else [
            SyncPoint(r["at"], r["app"], r["rows"], r["runs"], r["failed"])
            for r in days_frame.filter(pl.col("tenant") == tenant).iter_rows(named=True)]
        reports.append(TenantReport(tenant, agreement, reasons, fields,
                                    _examples(mismatches, tenant, targets, examples_per_kind), shown, total,
                                    by_check, trend, trend_apps, changes,
                                    _app_statuses(tenant, agreement, connections, syncs), syncs, sync_points))
    kind_counts = {kind: 0 for kind in KINDS}
    for kind, n in mismatches.group_by("kind").len().iter_rows():
        kind_counts[kind or "unknown"] = n
    # apps reconciled somewhere (a connected CRM without reconciliation yet has nothing to count)
    counted_apps = set(mismatches["app"].drop_nulls()) | {a.app for t in reports for a in t.apps if a.reconciled}
    app_kind_counts = {app: {kind: 0 for kind in KINDS} for app in sorted(counted_apps)}
    for app, kind, n in mismatches.group_by("app", "kind").len().iter_rows():
        if app is not None:
            app_kind_counts[app][kind or "unknown"] = n
    reconciled_at = inputs.links["linked_at"].max() if inputs.links.height else None
    overall = [] if history is None else [
        TrendPoint(r["at"], _series_label(r["series"]), r["count"])
        for r in trend_series(history, "app", max_runs=max_runs).iter_rows(named=True)]
    return Report(generated_at=generated_at, warehouse=inputs.warehouse, reconciled_at=reconciled_at,
                  tenants=reports, kind_counts=kind_counts, mismatch_rows=mismatches.height,
                  quarantine_total=inputs.quarantine.height, has_history=bool(history is not None and history.height),
                  reconciled=inputs.reconciled, trend_apps=overall,
                  runs=0 if history is None else history["at"].n_unique(),
                  has_sync_runs=bool(inputs.sync_runs is not None and inputs.sync_runs.height),
                  app_kind_counts=app_kind_counts)


def _flagged_kinds(mismatches: pl.DataFrame) -> pl.DataFrame:
    """Records per (tenant, app, kind, entity)."""
    return (mismatches.with_columns(pl.coalesce("sequence_id", "app_id", pl.lit("?")).alias("record"))
            .group_by("tenant", "app", "kind", "entity")
            .agg(pl.col("record").n_unique().alias("records")))


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
        if t.apps:
            lines.append("  apps: " + ", ".join(_app_line(a) for a in t.apps))
    if not report.tenants and report.reconciled:
        lines.append("no reconciliation results in the warehouse yet (run the reconcile assets first)")
    return lines


def _app_line(status: AppStatus) -> str:
    words = (f"{status.label} {status.agree:,}/{status.compared:,} agree" if status.reconciled
             else f"{status.label} not compared yet")
    return words + (" (last sync failed)" if status.last_status not in (None, "success") else "")


def summary_markdown(report: Report) -> str:
    rows = ["| tenant | compared | agree | need attention | noted | quarantined |", "|---|---:|---:|---:|---:|---:|"]
    for t in report.tenants:
        rows.append(f"| {t.tenant} | {t.compared:,} | {t.agree:,} | {t.disagree:,} | {t.noted:,} | "
                    f"{t.quarantine_total:,} |")
    top = sorted(((k, n) for k, n in report.kind_counts.items() if n), key=lambda kv: (-kv[1], kv[0]))
    if top:
        rows.append("")
        rows.append("Mismatches by kind: " + ", ".join(f"{kind_label(k)} {n:,}" for k, n in top))
    by_app = [(app, sum(kinds.values())) for app, kinds in sorted(report.app_kind_counts.items())]
    if by_app:
        rows.append("")
        rows.append("Mismatches by app: " + ", ".join(f"{_series_label(app)} {n:,}" for app, n in by_app))
    return "\n".join(rows)


TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda n: DASH if n is None else f"{n:,}"
    env.filters["percent"] = _percent
    env.filters["when"] = lambda d: DASH if d is None else d.strftime("%d %b %Y, %H:%M UTC")
    env.filters["day"] = lambda d: DASH if d is None else d.strftime("%d %b %Y")
    env.globals.update(entity_label=lambda e: ENTITY_LABELS.get(e, e), app_label=app_label,
                       entity_singular=lambda e: ENTITY_SINGULAR.get(e, e))
    return env


def render_html(report: Report, *, charts: Mapping[str, str] | None = None, build_seconds: float | None = None
                ) -> str:
    """The page. `charts` maps chart ids (charts.chart_ids) to inline SVG; omitted, they are drawn here."""
    from assets.reports.charts import chart_ids, draw_charts

    if charts is None:
        charts = draw_charts(report)
    return _environment().get_template("report.html.j2").render(
        report=report, charts=charts, build_seconds=build_seconds, kinds=KINDS, kind_label=kind_label,
        kind_meaning=kind_meaning, chart_ids=chart_ids)
