"""The write-back plan: every write that would bring Sequence and QuickBooks into agreement, one row per write,
computed from the unified tables, reconcile.links, reconcile.mismatches and the tenants' settings. Pure
functions: nothing here reads the warehouse or talks HTTP.

A row: tenant, app (where the write goes), entity, operation, sequence_id, app_id (the QuickBooks record),
counterpart_app (the connected app of the pair), idempotency_key, payload (JSON text, the write's content),
depends_on (keys of writes that must be confirmed first), reason, state (planned | skipped) and error (why a
row is skipped: the record, the field and the reason).

What the seed asks (../shared/seeds/sequence-quickbooks-integration.txt), as operations:
  quickbooks customer   create (+ the customer's currency when multi-currency is on), update (sparse)
  quickbooks invoice / credit_note   create (the seed's field table, item mapping, tax codes by the resolution
                        order, home-currency ExchangeRate), update (sparse, current SyncToken; a product's new item
                        is not pushed onto documents synced before it: see later_mapping_only), set_email (a sent invoice carries the
                        merchant email so QuickBooks sends no second email), void (invoices), link (a twin found
                        by number: recorded, nothing sent)
  quickbooks product    create_item (its name, its account code; names are unique), update_item (income account)
  sequence invoice      mark_paid (paid in QuickBooks; never a Stripe payment-link invoice)
  sequence customer     import (QuickBooks customers passing the import rules, alias qb-<id>), link (the
                        QuickBooks id stored as the customer's integration id, after a create or for a candidate)

What every accounting app plans alike is written once here, in the app's words (an AppWords: QuickBooksWords
here, XeroWords in xero.py): the context (app_actions: which records need which write), customer create /
update / link / import (customer_rows), the later-mapping rule (later_mapping_only, document_actions), the
documents and lines by the seed's field rules (sequence_documents, sequence_lines, twin_lines), mark paid
(mark_paid_rows), validation, dependencies and the one-invoice re-sync (finished). Per app stay its payloads, its
item rules and its own document rules (QuickBooks: SyncToken, sparse, set_email, the applied-payments cap; Xero:
VOIDED / DELETED, PAID and VOIDED documents refused). build_plan loops over writers.WRITERS, so a tenant
connecting QuickBooks and Xero gets the writes of both when a Sequence document changes, with the cross-app
rules (once): an invoice is marked paid in Sequence once, a company two apps would import is imported once.

Ids a write needs from an earlier write in the same plan are "$ref:<idempotency key>" in the payload; apply
fills them in once that write is confirmed. Keys are deterministic: a hash of tenant, app, entity, operation,
the record ids and the payload's content (without SyncToken), so planning the same intent again gives the same
key, and a changed Sequence document gives its update a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
import polars as pl

from assets.reconcile.rules import (
    SEQUENCE,
    clean_text,
    expected_billing_email,
    expected_invoice_date,
    expected_item,
    expected_tax_code,
    folded_text,
    line_description,
    SettingsFrames,
    settings_frames,
    with_app_defaults,
)
from checks.payloads import QBO_SERVICE, Reference, describe, payload_failures

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
QBO_ENTITIES = {"customer": "Customer", "invoice": "Invoice", "credit_note": "CreditMemo", "product": "Item"}
DOCUMENTS = {"invoice": ("invoices", "invoice_lines"), "credit_note": ("credit_notes", "credit_note_lines")}
VOLATILE = frozenset({"SyncToken", "sparse"})  # not part of a payload's content version
REF = "$ref:"
CENT = Decimal("0.01")
MAX_REASONS = 4


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuickBooksState:
    """What the plan needs of QuickBooks beyond the unified model (from raw_quickbooks)."""

    versions: pl.LazyFrame  # tenant, entity (customer|invoice|credit_note|product), id, sync_token
    exchange_rates: pl.LazyFrame  # tenant, currency, home_currency, rate (home units per unit), as_of (date)
    companies: pl.LazyFrame  # tenant, home_currency, multi_currency
    customer_tax_codes: pl.LazyFrame  # tenant, id (QuickBooks customer), default_tax_code

    @staticmethod
    def empty() -> QuickBooksState:
        return QuickBooksState(
            versions=pl.LazyFrame(schema={"tenant": pl.String, "entity": pl.String, "id": pl.String,
                                          "sync_token": pl.String}),
            exchange_rates=pl.LazyFrame(schema={"tenant": pl.String, "currency": pl.String,
                                                "home_currency": pl.String, "rate": pl.Decimal(38, 9),
                                                "as_of": pl.Date}),
            companies=pl.LazyFrame(schema={"tenant": pl.String, "home_currency": pl.String,
                                           "multi_currency": pl.Boolean}),
            customer_tax_codes=pl.LazyFrame(schema={"tenant": pl.String, "id": pl.String,
                                                    "default_tax_code": pl.String}),
        )


@dataclass(frozen=True)
class PlanInputs:
    unified: Mapping[str, pl.LazyFrame]  # unified table -> frame (checks/unified.py contracts)
    links: pl.LazyFrame  # reconcile.links
    mismatches: pl.LazyFrame  # reconcile.mismatches
    settings: Mapping[str, Mapping[str, Any]]  # tenant -> its QuickBooks connection's integration settings
    quickbooks: QuickBooksState = field(default_factory=QuickBooksState.empty)
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


def ref(key: str) -> str:
    return f"{REF}{key}"


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


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


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
    subclasses it (QuickBooksWords here, XeroWords in xero.py)."""

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


class QuickBooksWords(AppWords):
    app, label, service, alias_prefix = QUICKBOOKS, "QuickBooks", QBO_SERVICE, "qb-"
    created_id, linked_id = "the id of the QuickBooks customer", "the QuickBooks id"
    id_fields = {entity: "Id" for entity in QBO_ENTITIES}
    item_field, item_name_path = "Line.ItemRef", "$.Name"
    import_country = ("country_as_sent", "country")  # QuickBooks' own text when it is not a code
    company_columns = ("home_currency", "multi_currency")

    def customer_create(self, r: Mapping[str, Any]) -> tuple[dict[str, Any], str, str | None, str | None]:
        # the currency a new customer gets: its latest issued document's (multi-currency), else the home currency
        currency = (r["_currency"] or r["home_currency"]) if r["multi_currency"] else None
        payload = {**_customer_payload(r), "CurrencyRef": {"value": currency} if currency else None}
        note = f" Currency {currency} (its documents' currency; multi-currency is on)." if currency else ""
        error = (f"DisplayName: QuickBooks customer {r['_taken']} already has the name '{r['name']}' (display "
                 "names are unique): link the two instead" if r["_taken"] else None)
        return payload, note, error, currency or r["home_currency"]

    def customer_update(self, r: Mapping[str, Any]) -> dict[str, Any]:
        return {"Id": r["app_id"], "SyncToken": r["sync_token"], "sparse": True, **_customer_payload(r)}


QBO_WORDS = QuickBooksWords()
VERSIONS_SCHEMA = {"tenant": pl.String, "entity": pl.String, "id": pl.String, "sync_token": pl.String}


@dataclass
class _Context:
    """Frames every part of one app's plan reads, restricted to the tenants being planned."""

    inputs: PlanInputs
    tenants: list[str]
    settings: SettingsFrames
    companies: pl.DataFrame  # tenant -> merchant_email, invoice_date, codes, and what the app adds
    actions: pl.DataFrame  # one row per (tenant, entity, sequence_id, app_id, action): fields, reasons
    words: AppWords = QBO_WORDS
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


def _context(inputs: PlanInputs, tenants: Iterable[str] | None) -> _Context:
    chosen = sorted(t for t in inputs.settings if tenants is None or t in set(tenants))
    settings = settings_frames({t: inputs.settings[t] for t in chosen})
    multi = pl.LazyFrame([(t, bool(inputs.settings[t].get("multi_currency")) if "multi_currency" in
                           inputs.settings[t] else None) for t in chosen],
                         schema={"tenant": pl.String, "_multi_setting": pl.Boolean}, orient="row")

    def qbo(table: str) -> pl.LazyFrame:
        return inputs.unified[table].filter((pl.col("app") == QUICKBOOKS) & pl.col("tenant").is_in(chosen))

    companies = (with_app_defaults(settings.tenants, qbo("products"), qbo("tax_codes"))
                 .join(inputs.quickbooks.companies.rename({"home_currency": "_home", "multi_currency": "_multi"}),
                       on="tenant", how="left", validate="1:1")
                 .join(multi, on="tenant", how="left", validate="1:1")
                 .with_columns(home_currency=pl.coalesce("_home", "home_currency"),
                               multi_currency=pl.coalesce("_multi", "_multi_setting", pl.lit(False)))
                 .drop("_home", "_multi", "_multi_setting").collect())
    return _Context(inputs, chosen, settings, companies, app_actions(inputs, QUICKBOOKS, chosen), QBO_WORDS,
                    inputs.quickbooks.versions, {t: inputs.settings[t] for t in chosen})


ORDER = {"create_item": 0, "update_item": 1, "create": 2, "import": 3, "update": 4, "set_email": 5, "link": 6,
         "void": 7, "mark_paid": 8}  # a plan's rows per tenant and app: items, then what uses them


def build_plan(inputs: PlanInputs, *, tenants: Iterable[str] | None = None, invoice: str | None = None,
               reference: Reference | Mapping[str, Any] | None = None) -> pl.DataFrame:
    """The plan (PLAN_SCHEMA) for the tenants (default: every tenant with settings), for every app a tenant
    connects: each writer of writers.WRITERS adds its app's rows (QuickBooks here, Xero in xero.py, the CRMs in
    crm.py), so a tenant with QuickBooks and Xero gets the writes of both. `invoice`: only the writes that one
    Sequence invoice needs, with what they depend on (a re-sync). `reference`: what payload ids must resolve to
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


def quickbooks_plan(inputs: PlanInputs, *, tenants: Iterable[str] | None = None, invoice: str | None = None,
                    reference: Reference | None = None) -> pl.DataFrame:
    """The QuickBooks part of the plan (PLAN_SCHEMA): `inputs.settings` is tenant -> its QuickBooks settings."""
    ctx = _context(inputs, tenants)
    if not ctx.tenants:
        return empty_plan()
    rows: list[Row] = []
    items = _item_rows(ctx)
    rows += items
    mapping = _item_mapping(ctx, items)
    customers, customer_ids, customer_currency = customer_rows(ctx)
    rows += customers
    rows += _document_rows(ctx, mapping, customer_ids, customer_currency)
    rows += mark_paid_rows(ctx)
    reference = reference if reference is not None else default_reference(inputs, ctx.tenants, ctx)
    return finished(rows, lambda planned: payload_failures(planned, reference), "", invoice)


def default_reference(inputs: PlanInputs, tenants: list[str], ctx: _Context | None = None) -> Reference:
    """Ids a payload may name: the QuickBooks company's active tax codes and items, its accounts and customers."""

    def qbo(table: str, *columns: str, active: bool = True) -> pl.DataFrame:
        frame = inputs.unified[table].filter((pl.col("app") == QUICKBOOKS) & pl.col("tenant").is_in(tenants))
        if active:
            frame = frame.filter(pl.col("active").fill_null(True))
        return frame.select("tenant", "id", *columns).collect()

    companies = ctx.companies if ctx is not None else _context(inputs, tenants).companies
    # records earlier write-backs created exist even if the warehouse has not seen them yet
    created = (inputs.outbox.filter((pl.col("state") == "confirmed") & pl.col("app_id").is_not_null()
                                    & pl.col("operation").is_in(["create", "create_item"])
                                    & (pl.col("app") == QUICKBOOKS)
                                    & pl.col("tenant").is_in(tenants))
               .select("tenant", "entity", pl.col("app_id").alias("id")).collect()
               if inputs.outbox is not None and inputs.outbox.collect_schema().len()
               else pl.DataFrame(schema={"tenant": pl.String, "entity": pl.String, "id": pl.String}))
    items = pl.concat([qbo("products"), created.filter(pl.col("entity") == "product").drop("entity")])
    customers = pl.concat([qbo("customers", "currency", active=False),
                           created.filter(pl.col("entity") == "customer").drop("entity")
                           .with_columns(currency=pl.lit(None, pl.String))])
    return Reference(tax_codes=qbo("tax_codes"), items=items, accounts=qbo("accounts", active=False),
                     customers=customers,
                     companies=companies.select("tenant", "home_currency", "multi_currency", "us_sales_tax"))


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
# Items: a product's own item, its income account
# ----------------------------------------------------------------------------------------------------------


def _accounts(ctx: _Context) -> pl.DataFrame:
    return (ctx.unified("accounts", QUICKBOOKS).select("tenant", pl.col("id").alias("account_id"),
                                                       clean_text(pl.col("code")).alias("account_code"))
            .filter(pl.col("account_code").is_not_null())
            .unique(subset=["tenant", "account_code"], keep="first").collect())


def _item_rows(ctx: _Context) -> list[Row]:
    """create_item for unmapped products (the settings' account code, else the account the default item books
    to, where the product's lines are booked today), update_item where an item books to another account."""
    accounts = _accounts(ctx)
    items = ctx.unified("products", QUICKBOOKS).collect()
    products = ctx.unified("products", SEQUENCE).select("tenant", "id", "name").collect()
    default_account = (ctx.companies.select("tenant", "default_item_id")
                       .join(items.select("tenant", pl.col("id").alias("default_item_id"), "income_account_id"),
                             on=["tenant", "default_item_id"], how="left")
                       .join(accounts, left_on=["tenant", "income_account_id"], right_on=["tenant", "account_id"],
                             how="left")
                       .select("tenant", pl.col("income_account_id").alias("_default_account"),
                               pl.col("account_code").alias("_default_code")))
    create = (ctx.acting("product", "create_item")
              .join(products.rename({"id": "sequence_id"}), on=["tenant", "sequence_id"], how="inner")
              .join(ctx.settings.items.collect().rename({"product_id": "sequence_id"}), on=["tenant", "sequence_id"],
                    how="left")
              .join(accounts, on=["tenant", "account_code"], how="left")
              .join(default_account, on="tenant", how="left"))
    taken = items.select("tenant", folded_text(pl.col("name")).alias("_folded"), pl.col("id").alias("_taken"),
                         pl.col("name").alias("_taken_name")).unique(subset=["tenant", "_folded"], keep="first")
    create = create.with_columns(_folded=folded_text(pl.col("name"))).join(taken, on=["tenant", "_folded"],
                                                                            how="left")
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    for r in create.sort("tenant", "sequence_id").to_dicts():
        account_id = r["account_id"] if r["account_code"] else r["_default_account"]
        code = r["account_code"] or r["_default_code"]
        source = "the settings" if r["account_code"] else "the default item's account, where its lines are booked today"
        error = None
        if r["_taken"] is not None:
            error = (f"Name: an item named '{r['_taken_name']}' ({r['_taken']}) already exists in QuickBooks "
                     "(item names are unique): map the product to it or rename one of them")
        elif (r["tenant"], r["_folded"]) in seen:
            error = f"Name: another product of this plan is named '{r['name']}' (item names are unique)"
        elif account_id is None:
            error = (f"IncomeAccountRef: account code {r['account_code']} does not exist in QuickBooks"
                     if r["account_code"] else "IncomeAccountRef: no account code in the settings and the default "
                                               "item books to no account")
        seen.add((r["tenant"], r["_folded"]))
        rows.append(Row(r["tenant"], QUICKBOOKS, "product", "create_item", r["sequence_id"], None,
                        {"Name": r["name"], "Type": "Service", "IncomeAccountRef": {"value": account_id}},
                        f"{_reasons(r['reasons'])} Creates item '{r['name']}' booking to account {code} ({source}).",
                        error=error))
    versions = _versions(ctx, "product")
    update = (ctx.acting("product", "update_item")
              .join(ctx.settings.items.collect().rename({"product_id": "sequence_id"}).drop("item_id"),
                    on=["tenant", "sequence_id"], how="left")
              .join(accounts, on=["tenant", "account_code"], how="left")
              .join(versions, on=["tenant", "app_id"], how="left"))
    for r in update.sort("tenant", "sequence_id").to_dicts():
        rows.append(Row(r["tenant"], QUICKBOOKS, "product", "update_item", r["sequence_id"], r["app_id"],
                        {"Id": r["app_id"], "SyncToken": r["sync_token"], "sparse": True,
                         "IncomeAccountRef": {"value": r["account_id"]}}, _reasons(r["reasons"]),
                        error=None if r["account_id"] else
                        f"IncomeAccountRef: account code {r['account_code']} does not exist in QuickBooks"))
    return rows


def _versions(ctx: _Context, entity: str) -> pl.DataFrame:
    return ctx.versions(entity)


def _item_mapping(ctx: _Context, planned: list[Row]) -> pl.DataFrame:
    """(tenant, product_id) -> item, new_item, item_id. An item a write-back creates (in this plan, or earlier and not
    yet known to reconciliation) is named by "$ref:<key of its create_item>" so that the documents using it
    keep the same content, and so the same keys, until apply fills the id in."""
    created = [(r.tenant, r.sequence_id, ref(r.key), r.key) for r in planned
               if r.operation == "create_item" and r.error is None]
    earlier: list[tuple[str, str, str, str]] = []
    if ctx.inputs.outbox is not None and ctx.inputs.outbox.collect_schema().len():
        earlier_rows = (ctx.inputs.outbox
                        .filter((pl.col("operation") == "create_item") & pl.col("tenant").is_in(ctx.tenants)
                                & (pl.col("app") == QUICKBOOKS)
                                & (pl.col("state").is_in(["planned", "sent", "confirmed"])
                                   | ((pl.col("state") == "failed") & pl.col("retriable").fill_null(False))))
                        .select("tenant", "sequence_id", "app_id", "idempotency_key", "state").collect())
        earlier = [(r["tenant"], r["sequence_id"], ref(r["idempotency_key"]), r["app_id"])
                   for r in earlier_rows.to_dicts()]
    schema = {"tenant": pl.String, "product_id": pl.String, "_new_item": pl.String, "_created_id": pl.String}
    # a create_item planned again (same key) and its confirmed earlier self are one write: keep its id
    new = (pl.concat([pl.DataFrame([(t, p, i, None) for t, p, i, _ in created], schema=schema, orient="row"),
                      pl.DataFrame(earlier, schema=schema, orient="row")])
           .group_by("tenant", "product_id", maintain_order=True)
           .agg(pl.col("_new_item").first(), pl.col("_created_id").drop_nulls().first()))
    settings = ctx.settings.items.collect().select("tenant", "product_id", "item_id")
    # a settings mapping that came from an earlier create_item is still named by that write
    merged = (settings.join(new, on=["tenant", "product_id"], how="full", coalesce=True)
              .with_columns(new_item=pl.col("_new_item").is_not_null()
                            & (pl.col("item_id").is_null() | (pl.col("item_id") == pl.col("_created_id"))))
              .select("tenant", "product_id",
                      pl.when(pl.col("new_item")).then(pl.col("_new_item")).otherwise(pl.col("item_id")).alias("item"),
                      "new_item",
                      # the id QuickBooks gave the new item, once its create is confirmed
                      pl.when(pl.col("new_item")).then(pl.col("_created_id")).otherwise(pl.col("item_id"))
                      .alias("item_id")))
    return merged.filter(pl.col("item").is_not_null())


# ----------------------------------------------------------------------------------------------------------
# Customers
# ----------------------------------------------------------------------------------------------------------


def _qbo_address(r: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return {"Line1": r[f"{prefix}line1"], "Line2": r[f"{prefix}line2"], "City": r[f"{prefix}city"],
            "CountrySubDivisionCode": r[f"{prefix}region"], "PostalCode": r[f"{prefix}postal_code"],
            "Country": r[f"{prefix}country"]}


def _customer_payload(r: Mapping[str, Any]) -> dict[str, Any]:
    name = (r["name"] or "").strip()
    return {"DisplayName": name, "CompanyName": name[:100] or None,
            "PrimaryEmailAddr": {"Address": r["email"]} if r["email"] else None, "BillAddr": _qbo_address(r)}


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


def _latest_rates(ctx: _Context) -> pl.DataFrame:
    """(tenant, currency) -> the latest rate QuickBooks gives into the home currency."""
    return (ctx.inputs.quickbooks.exchange_rates.filter(pl.col("tenant").is_in(ctx.tenants))
            .join(ctx.companies.lazy().select("tenant", pl.col("home_currency").alias("_home")), on="tenant")
            .filter(pl.col("home_currency") == pl.col("_home"))
            .sort("as_of").group_by("tenant", "currency").agg(pl.col("rate").last().alias("_rate")).collect())


def _document_rows(ctx: _Context, mapping: pl.DataFrame, customer_ids: pl.DataFrame,
                   customer_currency: pl.DataFrame) -> list[Row]:
    rows: list[Row] = []
    for entity, (table, line_table) in DOCUMENTS.items():
        rows += _documents_of(ctx, entity, table, line_table, mapping, customer_ids, customer_currency)
    return rows


def _documents_of(ctx: _Context, entity: str, table: str, line_table: str, mapping: pl.DataFrame,
                  customer_ids: pl.DataFrame, customer_currency: pl.DataFrame) -> list[Row]:
    rows, acting = document_actions(ctx, entity, table)
    wanted = (acting.filter(pl.col("proposed_action").is_in(["create_in_app", "update_in_app"]))
              .select("tenant", "sequence_id").unique())
    # void and link need no document content
    for r in acting.filter(pl.col("proposed_action") == "void_in_app").sort("tenant", "sequence_id").join(
            _versions(ctx, entity), on=["tenant", "app_id"], how="left").to_dicts():
        error = None if entity == "invoice" else ("operation: QuickBooks offers no void for credit memos through "
                                                  "its API; void or delete it in QuickBooks")
        rows.append(Row(r["tenant"], QUICKBOOKS, entity, "void", r["sequence_id"], r["app_id"],
                        {"Id": r["app_id"], "SyncToken": r["sync_token"]}, _reasons(r["reasons"]), error=error))
    for r in acting.filter(pl.col("proposed_action") == "link").sort("tenant", "sequence_id").to_dicts():
        if r["sequence_id"] and r["app_id"]:
            rows.append(Row(r["tenant"], QUICKBOOKS, entity, "link", r["sequence_id"], r["app_id"],
                            {"sequenceId": r["sequence_id"], "appId": r["app_id"]},
                            _reasons(r["reasons"]) + " Recorded in reconcile.links (Sequence keeps no writable "
                                                     "link on documents)."))
    if wanted.height == 0:
        return rows
    docs = _expected_documents(ctx, entity, table, wanted, customer_ids, customer_currency)
    lines = _expected_lines(ctx, table, line_table, docs, mapping)
    by_doc = {k[0] if isinstance(k, tuple) else k: v for k, v in lines.partition_by(
        "_doc", as_dict=True, maintain_order=True).items()} if lines.height else {}
    creates = acting.filter(pl.col("proposed_action") == "create_in_app").select("tenant", "sequence_id", "reasons")
    updates = (acting.filter(pl.col("proposed_action") == "update_in_app")
               .select("tenant", "sequence_id", "app_id", "fields", "reasons"))
    versions = _versions(ctx, entity)
    plan = (docs.join(creates.rename({"reasons": "_create"}), on=["tenant", "sequence_id"], how="left")
            .join(updates.rename({"reasons": "_update", "app_id": "_update_app"}), on=["tenant", "sequence_id"],
                  how="left")
            .join(versions, left_on=["tenant", "linked_id"], right_on=["tenant", "app_id"], how="left"))
    name = QBO_ENTITIES[entity]
    for doc in plan.sort("tenant", "sequence_id").to_dicts():
        doc_lines = by_doc.get(f"{doc['tenant']}\x1f{doc['sequence_id']}")
        line_rows = doc_lines.to_dicts() if doc_lines is not None else []
        depends = [v.removeprefix(REF) for v in [doc["expected_customer_id"], *(l["item"] for l in line_rows)]
                   if isinstance(v, str) and v.startswith(REF)]
        if doc["_create"] is not None:
            payload = _document_payload(doc, line_rows, entity, create=True)
            rows.append(Row(doc["tenant"], QUICKBOOKS, entity, "create", doc["sequence_id"], None, payload,
                            _reasons(doc["_create"]) + f" Creates the QuickBooks {name}.", depends_on=depends,
                            error=_document_error(doc, line_rows)))
            continue
        if doc["linked_id"] is None:
            continue
        fields = set(doc["fields"] or [])
        email_only = (fields == {"billing_email"} and entity == "invoice"
                      and doc["expected_billing_email"] is not None)
        if email_only:
            payload = {"Id": doc["linked_id"], "SyncToken": doc["sync_token"], "sparse": True,
                       "BillEmail": {"Address": doc["expected_billing_email"]}}
            operation = "set_email"
        else:
            payload = {"Id": doc["linked_id"], "SyncToken": doc["sync_token"], "sparse": True,
                       **_document_payload(doc, line_rows, entity, create=False)}
            operation = "update"
        # A sparse update sends Line only when a line differs: QuickBooks recomputes the tax of the lines it is
        # sent (per rate, on the sum) and can land a cent below Sequence's per-line total, which it refuses
        # (6000) on a paid document; lines it is not sent keep their amounts.
        lines_differ = any(f == "line" or f.startswith("line.") for f in fields)
        if operation == "update" and not lines_differ:
            payload.pop("Line", None)
            payload.pop("TxnTaxDetail", None)
        reason = _reasons(doc["_update"])
        error = _document_error(doc, line_rows, create=False)
        applied = doc["_applied"] or Decimal(0)
        if error is None and lines_differ and applied > 0 and (doc["gross_total"] or Decimal(0)) < applied:
            # QuickBooks refuses a total below the payments applied to it (6000): a person decides
            error = (f"Line: QuickBooks has {applied.normalize():f} {doc['currency']} of payments applied to it and "
                     f"Sequence's total is {doc['gross_total'].normalize():f}: QuickBooks refuses a total below what "
                     "is applied; unapply the payment or issue a credit note")
        rows.append(Row(doc["tenant"], QUICKBOOKS, entity, operation, doc["sequence_id"], doc["linked_id"], payload,
                        reason, depends_on=depends, error=error))
    return rows


def _document_error(doc: Mapping[str, Any], lines: list[dict], *, create: bool = True) -> str | None:
    if doc["expected_customer_id"] is None and create:  # an update leaves the customer as QuickBooks has it
        return (f"CustomerRef: its Sequence customer {doc['customer_id']} is not linked to QuickBooks and no write "
                "of this plan creates or links it (archived, draft, or a candidate to review): link it first")
    if doc.get("customer_currency") is not None and doc["customer_currency"] != doc["currency"]:
        return (f"CurrencyRef: the document is in {doc['currency']} but the QuickBooks customer this plan creates "
                f"is in {doc['customer_currency']}")
    if not lines:
        return "Line: the document has no lines in Sequence"
    return None


def _expected_documents(ctx: _Context, entity: str, table: str, wanted: pl.DataFrame, customer_ids: pl.DataFrame,
                        customer_currency: pl.DataFrame) -> pl.DataFrame:
    """The Sequence documents to write, with what Sequence expects QuickBooks to hold (the seed's field table)."""
    rates = _latest_rates(ctx)
    linking = ctx.acting(entity, "link").filter(pl.col("sequence_id").is_not_null() & pl.col("app_id").is_not_null())
    links = (pl.concat([ctx.inputs.links.filter((pl.col("entity") == entity) & (pl.col("app") == QUICKBOOKS)
                                                & pl.col("tenant").is_in(ctx.tenants))
                        .select("tenant", "sequence_id", pl.col("app_id").alias("linked_id")).collect(),
                        linking.select("tenant", "sequence_id", pl.col("app_id").alias("linked_id"))])
             .unique().filter(pl.len().over("tenant", "sequence_id") == 1))
    # what QuickBooks holds: payments applied to a document cap how low an update may take its total
    held = ctx.unified(table, QUICKBOOKS).select(
        "tenant", pl.col("id").alias("linked_id"),
        (pl.col("gross_total") - pl.col("balance")).alias("_applied")).collect()
    merchant = pl.col("merchant_email")
    return (sequence_documents(ctx, table, wanted, links, customer_ids)
            .join(held, on=["tenant", "linked_id"], how="left")
            .join(customer_currency, on=["tenant", "expected_customer_id"], how="left")
            .join(rates, on=["tenant", "currency"], how="left")
            .with_columns(
                expected_billing_email=expected_billing_email(pl.col("app_status"), pl.col("billing_email"), merchant),
                exchange=pl.when(pl.col("multi_currency") & (pl.col("currency") != pl.col("home_currency")))
                .then(pl.col("_rate")),
                _doc=pl.concat_str(["tenant", pl.lit("\x1f"), "sequence_id"])))


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


def _expected_lines(ctx: _Context, table: str, line_table: str, docs: pl.DataFrame, mapping: pl.DataFrame
                    ) -> pl.DataFrame:
    """The documents' lines as QuickBooks should hold them: item by the product mapping (the default item for
    unmapped products), "[group]: [line]", the tax code by the seed's resolution order, Qty, UnitPrice, and the
    QuickBooks Line.Id of the twin line (so that Sequence's line links stay valid on an update)."""
    tax_defaults = ctx.inputs.quickbooks.customer_tax_codes.filter(pl.col("tenant").is_in(ctx.tenants)).select(
        "tenant", pl.col("id").alias("expected_customer_id"), pl.col("default_tax_code").alias("_customer_code")
    ).unique(subset=["tenant", "expected_customer_id"]).collect()
    lines = sequence_lines(
        ctx, line_table, docs, tax_defaults, heads=("_doc", "merchant_email", "default_item_id", "us_sales_tax"),
        mapped=lambda lines: lines.join(mapping.select("tenant", "product_id", pl.col("item").alias("_mapped_item")),
                                        on=["tenant", "product_id"], how="left"),
        columns={"item": expected_item(pl.col("_mapped_item"), pl.col("default_item_id"))},
        us_sales_tax=pl.col("us_sales_tax"))
    # the twin line: the one Sequence links ("<document Id>-<Line.Id>"), else the one at the same position
    qbo_lines = twin_lines(ctx, line_table, docs).rename({"line_id": "_qbo_line"})
    by_link = (lines.select("tenant", "document_id", "id", "linked_id", "links").explode("links")
               .filter(pl.col("links").is_not_null() & pl.col("linked_id").is_not_null())
               .with_columns(_value=pl.col("links").struct.field("app_id"))
               .filter(pl.col("_value").str.starts_with(pl.concat_str(["linked_id", pl.lit("-")])))
               .select("tenant", "document_id", "id", "linked_id",
                       _qbo_line=pl.col("_value").str.slice(pl.col("linked_id").str.len_chars() + 1))
               .join(qbo_lines.select("tenant", "linked_id", "_qbo_line"), on=["tenant", "linked_id", "_qbo_line"],
                     how="semi")
               .unique(subset=["tenant", "document_id", "id"], keep="first")
               .unique(subset=["tenant", "linked_id", "_qbo_line"], keep="first")
               .select("tenant", "document_id", "id", pl.col("_qbo_line").alias("_by_link")))
    by_position = qbo_lines.join(by_link.select("tenant", pl.col("_by_link").alias("_qbo_line")),
                                 on=["tenant", "_qbo_line"], how="anti").rename({"_qbo_line": "_by_position"})
    return (lines.join(by_link, on=["tenant", "document_id", "id"], how="left")
            .join(by_position, on=["tenant", "linked_id", "_rank"], how="left")
            .with_columns(line_id=pl.when(pl.col("_by_link").is_not_null()).then("_by_link")
                          .when(pl.col("linked_id").is_not_null()
                                & ~pl.col("_by_position").is_in(pl.col("_by_link").drop_nulls().implode()))
                          .then("_by_position")))


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


def _document_payload(doc: Mapping[str, Any], lines: list[dict], entity: str, *, create: bool) -> dict[str, Any]:
    """The seed's invoice field table as a QuickBooks Invoice / CreditMemo body."""
    payload: dict[str, Any] = {
        "CustomerRef": {"value": doc["expected_customer_id"]} if doc["expected_customer_id"] else None,
        "BillEmail": {"Address": doc["expected_billing_email"]} if doc["expected_billing_email"] else None,
        "BillAddr": _qbo_address(doc, "billing_"),
        "TxnDate": doc["expected_date"],
        "DueDate": doc["due_date"] if entity == "invoice" else None,
        "DocNumber": doc["number"],
        # an update clears a memo Sequence no longer has; a create leaves it out
        "CustomerMemo": {"value": doc["memo"]} if doc["memo"] else (None if create else {"value": ""}),
    }
    if create:
        payload["CurrencyRef"] = {"value": doc["currency"]}
        payload["ExchangeRate"] = doc["exchange"]
        payload["GlobalTaxCalculation"] = None if doc["us_sales_tax"] else "TaxExcluded"
    if doc["us_sales_tax"]:
        # US automated sales tax is computed from TxnTaxDetail; Sequence's own tax total stands
        payload["TxnTaxDetail"] = {"TotalTax": doc["tax_total"]}
    payload["Line"] = [_line_payload(line, create=create) for line in lines]
    return payload


def _line_payload(line: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
    quantity, rate = line["quantity"] or Decimal(0), line["rate"] or Decimal(0)
    return {
        "Id": None if create else line["line_id"],
        "DetailType": "SalesItemLineDetail",
        "Amount": _money(quantity * rate),
        "Description": line["description"],
        "SalesItemLineDetail": {
            "ItemRef": {"value": line["item"]},
            "Qty": quantity,
            "UnitPrice": rate,
            "TaxCodeRef": {"value": line["tax_code"]} if line["tax_code"] else None,
        },
    }


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
