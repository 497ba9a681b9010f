"""The write-back plan: every write that would bring Sequence and the apps a tenant connects into agreement,
one row per write, computed from the unified tables, reconcile.links, reconcile.mismatches and the tenants'
settings. Pure functions: nothing here reads the warehouse or talks HTTP.

A row: tenant, app (where the write goes), entity, operation, sequence_id, app_id (the app's record),
counterpart_app (the connected app of the pair), idempotency_key, payload (JSON text, the write's content),
depends_on (keys of writes that must be confirmed first), reason, state (planned | skipped) and error (why a
row is skipped: the record, the field and the reason).

What every accounting app plans alike is written once here, in the app's words (an AppWords: QuickBooksWords
in quickbooks.py, XeroWords in xero.py): the context (app_actions: which records need which write), customer
create / update / link / import (customer_rows), the later-mapping rule (later_mapping_only, document_actions),
the documents and lines by the seed's field rules (sequence_documents, sequence_lines, twin_lines), mark paid
(mark_paid_rows), validation, dependencies and the one-invoice re-sync (finished). Each app's module keeps its
payloads, its item rules and its own document rules (QuickBooks: SyncToken, sparse, set_email, the
applied-payments cap; Xero: VOIDED / DELETED, PAID and VOIDED documents refused) and lists the operations it
plans. build_plan loops over writers.WRITERS, so a tenant connecting QuickBooks and Xero gets the writes of both
when a Sequence document changes, with the cross-app rules (once): an invoice is marked paid in Sequence once, a
company two apps would import is imported once.

Ids a write needs from an earlier write in the same plan are "$ref:<idempotency key>" in the payload (its app_id,
the record it created) or "$ref:<idempotency key>:sequence_id" (the Sequence customer an import created); apply
fills them in once that write is confirmed. Keys are deterministic: a hash of tenant, app, entity, operation,
the record ids and the payload's content (without SyncToken), so planning the same intent again gives the same
key, and a changed Sequence document gives its update a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from assets.reconcile.rules import (
    SEQUENCE,
    expected_invoice_date,
    expected_tax_code,
    folded_text,
    line_description,
    SettingsFrames,
)
from checks.payloads import describe

if TYPE_CHECKING:
    from assets.writeback.quickbooks import QuickBooksState
    from checks.payloads import Reference

QUICKBOOKS = "quickbooks"
PLAN_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(), "app": pl.String(), "entity": pl.String(), "operation": pl.String(),
    "sequence_id": pl.String(), "app_id": pl.String(), "counterpart_app": pl.String(),
    "idempotency_key": pl.String(), "payload": pl.String(), "depends_on": pl.List(pl.String()),
    "reason": pl.String(), "state": pl.String(), "error": pl.String(),
}
# reconcile's proposed actions that a write performs (the others ask a person: review, fix_settings, none)
WRITE_ACTIONS = ("create_in_app", "update_in_app", "void_in_app", "mark_paid_in_sequence", "import_to_sequence",
                 "link", "create_item", "update_item")
VOLATILE = frozenset({"SyncToken", "sparse"})  # not part of a payload's content version
REF = "$ref:"
# which id of a confirmed write a $ref takes: the record it made in its app, or the Sequence customer an import
# made (an import's app_id is the source app's record, which a CRM's Sequence-customer-id field must not get)
REF_IDS = ("app_id", "sequence_id")
MAX_REASONS = 4


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def _quickbooks_state() -> QuickBooksState:
    # QuickBooks' inputs are quickbooks.py's (which builds on this module): imported when first needed
    from assets.writeback.quickbooks import QuickBooksState

    return QuickBooksState.empty()


@dataclass(frozen=True)
class PlanInputs:
    unified: Mapping[str, pl.LazyFrame]  # unified table -> frame (checks/unified.py contracts)
    links: pl.LazyFrame  # reconcile.links
    mismatches: pl.LazyFrame  # reconcile.mismatches
    settings: Mapping[str, Mapping[str, Any]]  # tenant -> its QuickBooks connection's integration settings
    quickbooks: QuickBooksState = field(default_factory=_quickbooks_state)
    outbox: pl.LazyFrame | None = None  # writeback.outbox: items created by earlier write-backs
    xero_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # tenant -> its Xero connection's
    crm_settings: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)  # crm -> tenant -> settings


# ----------------------------------------------------------------------------------------------------------
# Rows, keys, JSON
# ----------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # QuickBooks amounts are JSON numbers
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot put {type(value).__name__} in a payload")


def dumps(payload: Any, *, sort: bool = False) -> str:
    return orjson.dumps(payload, default=_plain, option=orjson.OPT_SORT_KEYS if sort else 0).decode()


def content_version(payload: Mapping[str, Any]) -> str:
    content = {k: v for k, v in payload.items() if k not in VOLATILE}
    return hashlib.blake2b(dumps(content, sort=True).encode(), digest_size=8).hexdigest()


def idempotency_key(tenant: str, app: str, entity: str, operation: str, sequence_id: str | None,
                    app_id: str | None, payload: Mapping[str, Any]) -> str:
    """32 characters (QuickBooks takes ≤ 50 as a requestid): the same intent and content, the same key."""
    parts = [tenant, app, entity, operation, sequence_id or "", app_id or "", content_version(payload)]
    return "ll" + hashlib.blake2b("\x1f".join(parts).encode(), digest_size=15).hexdigest()


def ref(key: str, id_field: str = "app_id") -> str:
    """A payload's reference to an id write `key` gets once confirmed: "$ref:<key>" its app_id, the form every
    app write's refs have (and outbox payloads already hold), "$ref:<key>:sequence_id" its sequence_id."""
    if id_field not in REF_IDS:
        raise ValueError(f"a $ref takes one of {REF_IDS}, not {id_field!r}")
    return f"{REF}{key}" if id_field == "app_id" else f"{REF}{key}:{id_field}"


def ref_target(value: Any) -> tuple[str, str] | None:
    """(key, id field) a "$ref:..." string names; None for any other value."""
    if not isinstance(value, str) or not value.startswith(REF):
        return None
    key, _, id_field = value.removeprefix(REF).partition(":")
    return key, id_field or "app_id"


def _compact(value: Any) -> Any:
    """Drops null fields and empty objects (QuickBooks and Sequence take absent, not null)."""
    if isinstance(value, dict):
        out = {k: _compact(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v != {}}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


@dataclass
class Row:
    tenant: str
    app: str
    entity: str
    operation: str
    sequence_id: str | None
    app_id: str | None
    payload: dict[str, Any]
    reason: str
    depends_on: list[str] = field(default_factory=list)
    error: str | None = None  # known before the contracts run: the row is skipped
    counterpart_app: str = QUICKBOOKS

    def __post_init__(self) -> None:
        self.payload = _compact(self.payload)
        self.key = idempotency_key(self.tenant, self.app, self.entity, self.operation, self.sequence_id,
                                   self.app_id, self.payload)

    def record(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "app": self.app, "entity": self.entity, "operation": self.operation,
                "sequence_id": self.sequence_id, "app_id": self.app_id, "counterpart_app": self.counterpart_app,
                "idempotency_key": self.key, "payload": dumps(self.payload),
                "depends_on": sorted(set(self.depends_on)), "reason": self.reason,
                "state": "skipped" if self.error else "planned", "error": self.error}


def empty_plan() -> pl.DataFrame:
    return pl.DataFrame(schema=PLAN_SCHEMA)


def _frame(rows: Iterable[Row]) -> pl.DataFrame:
    records = [row.record() for row in rows]
    return pl.DataFrame(records, schema=PLAN_SCHEMA) if records else empty_plan()


def _reasons(reasons: list[str] | None) -> str:
    reasons = [r for r in dict.fromkeys(reasons or []) if r]
    shown = " ".join(reasons[:MAX_REASONS])
    return shown + (f" (and {len(reasons) - MAX_REASONS} more differences)" if len(reasons) > MAX_REASONS else "")


# ----------------------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------------------


class AppWords:
    """What an accounting app's rows say in its own words, where every accounting app plans alike (customers,
    the later-mapping rule, mark paid, import, link, validation): the general planners below call these; an app
    subclasses it (QuickBooksWords in quickbooks.py, XeroWords in xero.py)."""

    app: str
    label: str  # the app's name in reasons and errors
    service: str  # the integration-id service Sequence stores the app's customer id under
    alias_prefix: str  # a customer imported from the app gets the alias <prefix><app id>
    created_id: str  # what the Sequence link after a customer create stores ("the id of the QuickBooks customer")
    linked_id: str  # what a candidate's Sequence link stores ("the QuickBooks id")
    id_fields: Mapping[str, str]  # entity -> the payload field naming the app's record
    item_field: str  # the payload field of a line's item, in the later-mapping error
    item_name_path: str  # where a create_item payload names its item (JSON path)
    import_country: tuple[str, ...] = ("country",)  # columns, first non-null, for an import's country
    active_names_only: bool = False  # a new customer's name must differ only from active customers'
    company_columns: tuple[str, ...] = ()  # companies' columns a customer create reads

    def customer_create(self, r: Mapping[str, Any]) -> tuple[dict[str, Any], str, str | None, str | None]:
        """A customer create's payload, a note for its reason, its error (r["_taken"]: the id of an app
        customer of that name), and the currency the new customer has (None: unknown)."""
        raise NotImplementedError

    def customer_update(self, r: Mapping[str, Any]) -> dict[str, Any]:
        """A customer update's payload (r: the Sequence customer, app_id, sync_token)."""
        raise NotImplementedError


VERSIONS_SCHEMA = {"tenant": pl.String, "entity": pl.String, "id": pl.String, "sync_token": pl.String}


@dataclass
class _Context:
    """Frames every part of one app's plan reads, restricted to the tenants being planned."""

    inputs: PlanInputs
    tenants: list[str]
    settings: SettingsFrames
    companies: pl.DataFrame  # tenant -> merchant_email, invoice_date, codes, and what the app adds
    actions: pl.DataFrame  # one row per (tenant, entity, sequence_id, app_id, action): fields, reasons
    words: AppWords
    versions_frame: pl.LazyFrame | None = None  # tenant, entity, id, sync_token: the app's record versions
    app_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # tenant -> the connection's

    def unified(self, table: str, app: str) -> pl.LazyFrame:
        return self.inputs.unified[table].filter((pl.col("app") == app) & pl.col("tenant").is_in(self.tenants))

    def acting(self, entity: str, action: str) -> pl.DataFrame:
        return self.actions.filter((pl.col("entity") == entity) & (pl.col("proposed_action") == action))

    def versions(self, entity: str) -> pl.DataFrame:
        """(tenant, app_id, sync_token) of the app's records (empty for an app without versions)."""
        frame = self.versions_frame if self.versions_frame is not None else pl.LazyFrame(schema=VERSIONS_SCHEMA)
        return (frame.filter(pl.col("entity") == entity).select("tenant", pl.col("id").alias("app_id"), "sync_token")
                .unique(subset=["tenant", "app_id"], keep="last").collect())

    def row(self, tenant: str, app: str, entity: str, operation: str, sequence_id: str | None, app_id: str | None,
            payload: dict[str, Any], reason: str, **kw: Any) -> Row:
        """A row of this app's plan (its Sequence writes' counterpart_app is the app too)."""
        return Row(tenant, app, entity, operation, sequence_id, app_id, payload, reason,
                   counterpart_app=self.words.app, **kw)


def app_actions(inputs: PlanInputs, app: str, tenants: list[str]) -> pl.DataFrame:
    """reconcile's mismatches between Sequence and `app` that a write settles, one row per record and action."""
    return (inputs.mismatches
            .filter((pl.col("app") == app) & pl.col("proposed_action").is_in(WRITE_ACTIONS)
                    & pl.col("tenant").is_in(tenants))
            .group_by("tenant", "entity", "sequence_id", "app_id", "proposed_action", maintain_order=True)
            .agg(pl.col("field").drop_nulls().unique().sort().alias("fields"),
                 pl.col("kind").unique().sort().alias("kinds"), pl.col("reason").alias("reasons"))
            .collect())


ORDER = {"create_item": 0, "update_item": 1, "create": 2, "import": 3, "update": 4, "set_email": 5, "link": 6,
         "void": 7, "mark_paid": 8}  # a plan's rows per tenant and app: items, then what uses them


def build_plan(inputs: PlanInputs, *, tenants: Iterable[str] | None = None, invoice: str | None = None,
               reference: Reference | Mapping[str, Any] | None = None) -> pl.DataFrame:
    """The plan (PLAN_SCHEMA) for the tenants (default: every tenant with settings), for every app a tenant
    connects: each writer of writers.WRITERS adds its app's rows (QuickBooks in quickbooks.py, Xero in xero.py,
    the CRMs in crm.py), so a tenant with QuickBooks and Xero gets the writes of both. `invoice`: only the writes
    that one Sequence invoice needs, with what they depend on (a re-sync). `reference`: what payload ids must resolve to
    (app -> the app's reference, or QuickBooks' Reference alone; default: from the unified tables)."""
    from assets.writeback.writers import writers  # the writers build on this module

    references = reference if isinstance(reference, Mapping) else {QUICKBOOKS: reference}
    accounting: list[pl.DataFrame] = []
    for writer in writers():
        if writer.plan is not None:
            rows = writer.plan(inputs, tenants=tenants, invoice=invoice, reference=references.get(writer.app))
            accounting.append(once(pl.concat([empty_plan(), *accounting]), rows, writer.contact))
    plan = sort_plan(pl.concat([empty_plan(), *accounting]))
    for writer in writers():
        if writer.extend is not None:
            plan = writer.extend(inputs, plan, tenants=tenants, invoice=invoice)
    return plan


def sort_plan(plan: pl.DataFrame) -> pl.DataFrame:
    return (plan.with_columns(_o=pl.col("operation").replace_strict(ORDER, default=9, return_dtype=pl.Int64))
            .sort("tenant", "app", "_o", "entity", "sequence_id", "app_id", nulls_last=True).drop("_o"))


def once(earlier: pl.DataFrame, rows: pl.DataFrame, contact: str) -> pl.DataFrame:
    """An app's rows beside the earlier apps' (`contact`: what the app calls a customer): an invoice paid in two
    apps is marked paid in Sequence once (the earlier app's row); a company two apps would import becomes one
    Sequence customer (the earlier app's import), which reconciliation then finds as the other app's candidate
    and links."""
    if earlier.height == 0:
        return rows
    paid = (earlier.filter(pl.col("operation") == "mark_paid").select("tenant", "sequence_id", _paid=pl.lit(True))
            .unique(subset=["tenant", "sequence_id"]))
    rows = (rows.join(paid, on=["tenant", "sequence_id"], how="left")
            .filter(~(pl.col("_paid").fill_null(False) & (pl.col("operation") == "mark_paid"))).drop("_paid"))
    from assets.writeback.writers import writers

    name = folded_text(pl.col("payload").str.json_path_match("$.legalName"))
    labels = {writer.app: writer.possessive for writer in writers()}
    imported = (earlier.filter((pl.col("operation") == "import") & (pl.col("state") == "planned"))
                .select("tenant", name.alias("_name"), pl.col("idempotency_key").alias("_twin"),
                        pl.col("counterpart_app").replace_strict(labels, default="another app's").alias("_by"))
                .unique(subset=["tenant", "_name"]))
    return (rows.with_columns(_name=pl.when(pl.col("operation") == "import").then(name))
            .join(imported, on=["tenant", "_name"], how="left")
            .with_columns(state=pl.when(pl.col("_twin").is_not_null()).then(pl.lit("skipped")).otherwise("state"),
                          error=pl.when(pl.col("_twin").is_not_null())
                          .then(pl.format("operation: {} import (write {}) creates this customer in Sequence; the "
                                          f"next reconciliation links it to this {contact}", "_by", "_twin"))
                          .otherwise("error"))
            .drop("_name", "_twin", "_by"))


def finished(rows: list[Row], failures: Callable[[pl.DataFrame], pl.DataFrame], label: str,
             invoice: str | None) -> pl.DataFrame:
    """One app's rows as a plan: payloads breaking their contract skipped (`failures`: planned rows -> field
    failures, checks/payloads*.py; `label`: how an error names the app, e.g. "Xero "), then the rows waiting for
    a skipped row, then (a re-sync) only what one invoice needs."""
    plan = _frame(rows)
    plan = validated(plan, failures(plan.filter(pl.col("state") == "planned")), label)
    plan = _blocked_by_dependencies(plan)
    return for_invoice(plan, invoice) if invoice is not None else plan


def validated(plan: pl.DataFrame, failures: pl.DataFrame, label: str = "") -> pl.DataFrame:
    """Rows whose payload breaks its contract are skipped, with every problem named (record, field, reason)."""
    if failures.height == 0:
        return plan
    problems = describe(failures).rename({"error": "_problem"})
    record = pl.format("{} {}", pl.col("entity").str.replace("_", " "), pl.coalesce("sequence_id", "app_id"))
    return (plan.join(problems, on="idempotency_key", how="left", validate="1:1")
            .with_columns(state=pl.when(pl.col("_problem").is_not_null()).then(pl.lit("skipped")).otherwise("state"),
                          error=pl.coalesce("error", pl.format(f"invalid payload for {label}{{}}: {{}}", record,
                                                               "_problem")))
            .drop("_problem"))


def _blocked_by_dependencies(plan: pl.DataFrame) -> pl.DataFrame:
    """A write that waits for a skipped write is skipped too (its dependency will never be confirmed)."""
    for _ in range(4):  # dependency chains are at most three writes long
        skipped = plan.filter(pl.col("state") == "skipped").select("idempotency_key")
        waiting = (plan.filter(pl.col("state") == "planned").select("idempotency_key", "depends_on")
                   .explode("depends_on").join(skipped, left_on="depends_on", right_on="idempotency_key",
                                               how="semi")
                   .group_by("idempotency_key").agg(pl.col("depends_on").first().alias("_blocker")))
        if waiting.height == 0:
            return plan
        plan = (plan.join(waiting, on="idempotency_key", how="left", validate="1:1")
                .with_columns(state=pl.when(pl.col("_blocker").is_not_null()).then(pl.lit("skipped"))
                              .otherwise("state"),
                              error=pl.when(pl.col("_blocker").is_not_null())
                              .then(pl.format("waits for write {}, which is skipped", "_blocker"))
                              .otherwise("error"))
                .drop("_blocker"))
    return plan


def for_invoice(plan: pl.DataFrame, invoice: str) -> pl.DataFrame:
    """The writes one Sequence invoice needs and, transitively, the writes they wait for."""
    wanted = set(plan.filter((pl.col("entity") == "invoice") & (pl.col("sequence_id") == invoice))
                 .get_column("idempotency_key").to_list())
    deps = dict(zip(plan["idempotency_key"].to_list(), plan["depends_on"].to_list(), strict=True))
    frontier = list(wanted)
    while frontier:
        for dep in deps.get(frontier.pop(), None) or []:
            if dep not in wanted:
                wanted.add(dep)
                frontier.append(dep)
    return plan.filter(pl.col("idempotency_key").is_in(sorted(wanted)))


# ----------------------------------------------------------------------------------------------------------
# Customers
# ----------------------------------------------------------------------------------------------------------


def customer_rows(ctx: _Context) -> tuple[list[Row], pl.DataFrame, pl.DataFrame]:
    """Any accounting app's customer writes (ctx.words says them in the app's words): creates (each followed by
    a Sequence write storing the new id as the customer's integration id), updates, Sequence links of
    candidates, and imports. Also returns who each Sequence customer is in the app (tenant, customer_id,
    expected_customer_id: an id or a $ref) and the currency of customers this plan creates (tenant,
    expected_customer_id, customer_currency)."""
    words, app = ctx.words, ctx.words.app
    seq = ctx.unified("customers", SEQUENCE).collect()
    theirs = ctx.unified("customers", app).collect()
    rows: list[Row] = []
    # the currency of a customer's latest issued document
    documents = pl.concat([ctx.unified(t, SEQUENCE).filter(pl.col("status") != "DRAFT")
                           .select("tenant", "customer_id", "currency", "issue_date", "created_at")
                           for t in ("invoices", "credit_notes")]).collect()
    latest = (documents.sort("issue_date", "created_at", nulls_last=False)
              .group_by("tenant", "customer_id").agg(pl.col("currency").last().alias("_currency")))
    named = theirs.filter(pl.col("active").fill_null(True)) if words.active_names_only else theirs
    taken = named.select("tenant", folded_text(pl.col("name")).alias("_folded"), pl.col("id").alias("_taken")) \
        .unique(subset=["tenant", "_folded"], keep="first")
    create = (ctx.acting("customer", "create_in_app")
              .join(seq.rename({"id": "sequence_id"}), on=["tenant", "sequence_id"], how="inner")
              .join(latest.rename({"customer_id": "sequence_id"}), on=["tenant", "sequence_id"], how="left"))
    if words.company_columns:
        create = create.join(ctx.companies.select("tenant", *words.company_columns), on="tenant", how="left")
    create = create.with_columns(_folded=folded_text(pl.col("name"))).join(taken, on=["tenant", "_folded"], how="left")
    created: list[tuple[str, str, str, str | None]] = []
    for r in create.sort("tenant", "sequence_id").to_dicts():
        payload, note, error, currency = words.customer_create(r)
        row = ctx.row(r["tenant"], app, "customer", "create", r["sequence_id"], None, payload,
                      _reasons(r["reasons"]) + note, error=error)
        rows.append(row)
        created.append((r["tenant"], r["sequence_id"], ref(row.key), currency))
        rows.append(ctx.row(r["tenant"], SEQUENCE, "customer", "link", r["sequence_id"], None,
                            {"customerId": r["sequence_id"], "integrationIds": [{"service": words.service,
                                                                                 "id": ref(row.key)}]},
                            f"Stores {words.created_id} created for '{r['name']}' as its integration id.",
                            depends_on=[row.key]))
    update = (ctx.acting("customer", "update_in_app")
              .join(seq.rename({"id": "sequence_id"}), on=["tenant", "sequence_id"], how="inner")
              .join(ctx.versions("customer"), on=["tenant", "app_id"], how="left"))
    for r in update.sort("tenant", "sequence_id").to_dicts():
        rows.append(ctx.row(r["tenant"], app, "customer", "update", r["sequence_id"], r["app_id"],
                            words.customer_update(r), _reasons(r["reasons"])))
    link = ctx.acting("customer", "link").filter(pl.col("sequence_id").is_not_null() & pl.col("app_id").is_not_null())
    for r in link.sort("tenant", "sequence_id").to_dicts():
        rows.append(ctx.row(r["tenant"], SEQUENCE, "customer", "link", r["sequence_id"], r["app_id"],
                            {"customerId": r["sequence_id"], "integrationIds": [{"service": words.service,
                                                                                 "id": r["app_id"]}]},
                            _reasons(r["reasons"]) + f" Stores {words.linked_id} as the customer's integration id."))
    imports = (ctx.acting("customer", "import_to_sequence")
               .join(theirs.rename({"id": "app_id"}), on=["tenant", "app_id"], how="inner"))
    for r in imports.sort("tenant", "app_id").to_dicts():
        name = (r["name"] or "").strip()
        country = next((r[c] for c in words.import_country if r[c]), r[words.import_country[-1]])
        payload = {"legalName": name,
                   "address": {"line1": r["line1"], "line2": r["line2"], "town": r["city"], "state": r["region"],
                               "postcode": r["postal_code"], "country": country},
                   "taxStatus": r["tax_status"] or "TAXED",
                   "contacts": [{"name": name, "email": r["email"], "billingPreference": "PRIMARY"}],
                   "customerAliases": [f"{words.alias_prefix}{r['app_id']}"],
                   "integrationIds": [{"service": words.service, "id": r["app_id"]}]}
        rows.append(ctx.row(r["tenant"], SEQUENCE, "customer", "import", None, r["app_id"], payload,
                            _reasons(r["reasons"])))
    # who each Sequence customer is in the app: its link, else a candidate being linked, else a create
    linked = (ctx.inputs.links.filter((pl.col("entity") == "customer") & (pl.col("app") == app)
                                      & pl.col("tenant").is_in(ctx.tenants))
              .select("tenant", pl.col("sequence_id").alias("customer_id"), pl.col("app_id").alias("_linked"))
              .unique().collect()
              .filter(pl.len().over("tenant", "customer_id") == 1))
    proposed = link.select("tenant", pl.col("sequence_id").alias("customer_id"), pl.col("app_id").alias("_proposed")) \
        .unique(subset=["tenant", "customer_id"], keep="first")
    schema = {"tenant": pl.String, "customer_id": pl.String, "_created": pl.String, "customer_currency": pl.String}
    created_frame = pl.DataFrame(created, schema=schema, orient="row")
    ids = (seq.select("tenant", pl.col("id").alias("customer_id"))
           .join(linked, on=["tenant", "customer_id"], how="left")
           .join(proposed, on=["tenant", "customer_id"], how="left")
           .join(created_frame.drop("customer_currency"), on=["tenant", "customer_id"], how="left")
           .select("tenant", "customer_id",
                   pl.coalesce("_linked", "_proposed", "_created").alias("expected_customer_id")))
    currencies = created_frame.select("tenant", pl.col("_created").alias("expected_customer_id"), "customer_currency")
    return rows, ids, currencies


# ----------------------------------------------------------------------------------------------------------
# Invoices and credit notes
# ----------------------------------------------------------------------------------------------------------


def sequence_documents(ctx: _Context, table: str, wanted: pl.DataFrame, links: pl.DataFrame,
                       customer_ids: pl.DataFrame) -> pl.DataFrame:
    """The Sequence documents any accounting app is to hold (wanted: tenant, sequence_id), with their twin in the
    app (links: tenant, sequence_id, linked_id), who their customer is there (customer_ids), the tenant's
    settings (ctx.companies) and the date the seed's invoice-date setting gives (expected_date)."""
    # only the documents being written are read whole (a large tenant has many more)
    return (ctx.unified(table, SEQUENCE).rename({"id": "sequence_id"})
            .join(wanted.select("tenant", "sequence_id").unique().lazy(), on=["tenant", "sequence_id"], how="semi")
            .collect()
            .join(links, on=["tenant", "sequence_id"], how="left")
            .join(customer_ids, on=["tenant", "customer_id"], how="left")
            .join(ctx.companies, on="tenant", how="left")
            .with_columns(expected_date=expected_invoice_date(pl.col("invoice_date").fill_null("issue"),
                                                              pl.col("issue_date"), pl.col("accounting_date"))))


def sequence_lines(ctx: _Context, line_table: str, docs: pl.DataFrame, customer_codes: pl.DataFrame, *,
                   heads: Iterable[str], mapped: Callable[[pl.DataFrame], pl.DataFrame],
                   columns: Mapping[str, pl.Expr], us_sales_tax: pl.Expr = pl.lit(False)) -> pl.DataFrame:
    """The lines of the documents to write (docs) as any accounting app should hold them, by the seed's rules:
    description "[group]: [line]", tax_code by the resolution order (customer_codes: tenant, expected_customer_id,
    _customer_code, the app customer's default code), _rank (position within the document); the app adds its
    item columns (`mapped` joins its product mapping, `columns` names them); `heads`: the app's document columns
    its lines read."""
    customers = ctx.unified("customers", SEQUENCE).select("tenant", pl.col("id").alias("customer_id"),
                                                         "tax_status").collect()
    head = docs.select("tenant", pl.col("sequence_id").alias("document_id"), "customer_id", "expected_customer_id",
                       "linked_id", "fallback_tax_code", "exempt_tax_code", "reverse_charge_tax_code",
                       "account_default_tax_code", *heads)
    lines = (ctx.unified(line_table, SEQUENCE).join(head.lazy(), on=["tenant", "document_id"], how="inner")
             .collect()
             .join(customers, on=["tenant", "customer_id"], how="left")
             .join(customer_codes, on=["tenant", "expected_customer_id"], how="left")
             .join(ctx.settings.tax_codes.collect().rename({"tax_code": "_mapped_code"}),
                   on=["tenant", "tax_category_id"], how="left"))
    return (mapped(lines)
            .with_columns(
                _rank=pl.col("position").rank("ordinal").over("tenant", "document_id").cast(pl.Int64),
                description=line_description(pl.col("group_title"), pl.col("title"), pl.col("description")),
                tax_code=expected_tax_code(pl.col("tax_status"), pl.col("_mapped_code"), pl.col("fallback_tax_code"),
                                           pl.col("exempt_tax_code"), pl.col("reverse_charge_tax_code"),
                                           pl.col("account_default_tax_code"), pl.col("_customer_code"),
                                           us_sales_tax),
                **columns)
            .sort("tenant", "document_id", "_rank"))


def twin_lines(ctx: _Context, line_table: str, docs: pl.DataFrame) -> pl.DataFrame:
    """(tenant, linked_id, line_id, _rank): the app's lines of the documents' twins, ranked by position."""
    twins = docs.select("tenant", pl.col("linked_id").alias("document_id")).drop_nulls().unique()
    return (ctx.unified(line_table, ctx.words.app).join(twins.lazy(), on=["tenant", "document_id"], how="semi")
            .select("tenant", pl.col("document_id").alias("linked_id"), pl.col("id").alias("line_id"),
                    _rank=pl.col("position").rank("ordinal").over("tenant", "document_id").cast(pl.Int64))
            .collect())


# Mapping changes apply to documents synced after the mapping. The seed (sequence-quickbooks-integration.txt):
# "When an invoice or credit note is finalized or sent, it is automatically synced to QuickBooks" and "Linking a
# product will create a new item in QuickBooks ... This ensures synced invoice line items are accurately
# categorized": a document is synced when it is finalised or sent (or re-synced by hand), with the mapping of that
# moment; nothing in the seed re-books documents already in QuickBooks when a product is mapped later. So a
# synced document whose only difference is the item of a mapping made after it (an item a write-back created
# after the QuickBooks document existed) is not rewritten. A document updated for another difference is synced
# again, and then takes the current mapping.
LATER_MAPPING_FIELDS = frozenset({"line.item"})


def later_mapping_only(ctx: _Context, entity: str, table: str) -> pl.DataFrame:
    """Synced documents whose every difference is a line on another item than a product's item created by a
    write-back after the app's document existed (an app that keeps no creation time: a document it already had
    is taken as synced before). (tenant, sequence_id, app_id, _items: names of those items)"""
    schema = {"tenant": pl.String, "sequence_id": pl.String, "app_id": pl.String, "_items": pl.String}
    app = ctx.words.app
    outbox = ctx.inputs.outbox
    if outbox is None or not outbox.collect_schema().len():
        return pl.DataFrame(schema=schema)
    created = (outbox.filter((pl.col("operation") == "create_item") & (pl.col("state") == "confirmed")
                             & (pl.col("app") == app)
                             & pl.col("app_id").is_not_null() & pl.col("tenant").is_in(ctx.tenants))
               .select("tenant", pl.col("app_id").alias("sequence_value"), pl.col("confirmed_at").alias("_mapped_at"),
                       pl.col("payload").str.json_path_match(ctx.words.item_name_path).alias("_item_name"))
               .unique(subset=["tenant", "sequence_value"]).collect())
    if created.height == 0:
        return pl.DataFrame(schema=schema)
    differences = (ctx.inputs.mismatches
                   .filter((pl.col("app") == app) & (pl.col("entity") == entity)
                           & (pl.col("proposed_action") == "update_in_app") & pl.col("tenant").is_in(ctx.tenants))
                   .select("tenant", "sequence_id", "app_id", "field", "sequence_value").collect())
    app_docs = ctx.unified(table, app).select("tenant", pl.col("id").alias("app_id"),
                                              pl.col("created_at").alias("_synced_at")).collect()
    judged = (differences.join(created, on=["tenant", "sequence_value"], how="left")
              .join(app_docs, on=["tenant", "app_id"], how="left")
              .with_columns(_later=pl.col("field").is_in(list(LATER_MAPPING_FIELDS))
                            & pl.col("_mapped_at").is_not_null()
                            # unknown creation time: the document was in the app before (its line is elsewhere)
                            & (pl.col("_synced_at").is_null()
                               | (pl.col("_synced_at").cast(pl.Datetime("us", "UTC"))
                                  < pl.col("_mapped_at").cast(pl.Datetime("us", "UTC"))))))
    return (judged.group_by("tenant", "sequence_id", "app_id")
            .agg(pl.col("_later").all().alias("_only"),
                 pl.col("_item_name").drop_nulls().unique().sort().str.join("', '").alias("_items"))
            .filter(pl.col("_only") & pl.col("sequence_id").is_not_null() & pl.col("app_id").is_not_null())
            .select(*schema))


def document_actions(ctx: _Context, entity: str, table: str) -> tuple[list[Row], pl.DataFrame]:
    """The write actions on an app's documents of one entity, and the rows of the later-mapping rule: a synced
    document whose only difference is a later mapping's item is not rewritten (a skipped update saying why);
    its other actions (e.g. a void) stand."""
    acting = ctx.actions.filter(pl.col("entity") == entity)
    later = later_mapping_only(ctx, entity, table)
    rows = [ctx.row(r["tenant"], ctx.words.app, entity, "update", r["sequence_id"], r["app_id"],
                    {ctx.words.id_fields[entity]: r["app_id"]},
                    "Its lines are on another item than the product's new item.",
                    error=(f"{ctx.words.item_field}: {entity.replace('_', ' ')} {r['sequence_id']} was synced before "
                           f"item '{r['_items']}' was created for its product; a mapping applies to documents "
                           "synced after it, so the synced document keeps its item (re-sync it to move it)"))
            for r in later.sort("tenant", "sequence_id").to_dicts()]
    acting = pl.concat([acting.filter(pl.col("proposed_action") != "update_in_app"),
                        acting.filter(pl.col("proposed_action") == "update_in_app")
                        .join(later.select("tenant", "sequence_id"), on=["tenant", "sequence_id"], how="anti")])
    return rows, acting


# ----------------------------------------------------------------------------------------------------------
# Sequence: payment status
# ----------------------------------------------------------------------------------------------------------


def mark_paid_rows(ctx: _Context) -> list[Row]:
    """Paid in the app: mark paid in Sequence, never for an invoice with a Stripe payment link (Stripe says
    whether those are paid)."""
    invoices = ctx.unified("invoices", SEQUENCE).select("tenant", pl.col("id").alias("sequence_id"),
                                                       "stripe_payment_link").collect()
    paid = ctx.acting("invoice", "mark_paid_in_sequence").join(invoices, on=["tenant", "sequence_id"], how="inner")
    return [ctx.row(r["tenant"], SEQUENCE, "invoice", "mark_paid", r["sequence_id"], r["app_id"],
                    {"invoiceId": r["sequence_id"], "paymentStatus": "PAID"}, _reasons(r["reasons"]),
                    error=("operation: the invoice has a Stripe payment link, so Sequence takes its payment "
                           f"status from Stripe and never from {ctx.words.label}") if r["stripe_payment_link"]
                    else None)
            for r in paid.sort("tenant", "sequence_id").to_dicts()]
