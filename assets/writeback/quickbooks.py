"""Write-back to QuickBooks: the plan rows that bring Sequence and a QuickBooks company into agreement. The
business rules written once for every accounting app are plan.py's (customers, the later-mapping rule, mark
paid, import, link, the seed's document and line rules, validation, dependencies); this module says them in
QuickBooks' words (QuickBooksWords) and keeps what only QuickBooks has: its state beyond the unified model
(SyncTokens, exchange rates, the company's currencies, customers' tax codes), its payloads, the ids a payload may
name (quickbooks_reference), its item rules and its own document rules (SyncToken, sparse, set_email, the
applied-payments cap, no void for credit memos). Its transport is Applier._quickbooks in apply.py.

What the seed asks (../shared/seeds/sequence-quickbooks-integration.txt), as operations:
  quickbooks customer   create (+ the customer's currency when multi-currency is on), update (sparse)
  quickbooks invoice / credit_note   create (the seed's field table, item mapping, tax codes by the resolution
                        order, home-currency ExchangeRate), update (sparse, current SyncToken; a product's new item
                        is not pushed onto documents synced before it: see plan.later_mapping_only), set_email (a
                        sent invoice carries the merchant email so QuickBooks sends no second email), void
                        (invoices), link (a twin found by number: recorded, nothing sent)
  quickbooks product    create_item (its name, its account code; names are unique), update_item (income account)
  sequence invoice      mark_paid (paid in QuickBooks; never a Stripe payment-link invoice)
  sequence customer     import (QuickBooks customers passing the import rules, alias qb-<id>), link (the
                        QuickBooks id stored as the customer's integration id, after a create or for a candidate)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import polars as pl

from assets.reconcile.rules import (
    SEQUENCE,
    clean_text,
    expected_billing_email,
    expected_item,
    folded_text,
    settings_frames,
    with_app_defaults,
)
from assets.writeback.plan import (
    QUICKBOOKS,
    REF,
    AppWords,
    PlanInputs,
    Row,
    _Context,
    _reasons,
    app_actions,
    customer_rows,
    document_actions,
    empty_plan,
    finished,
    mark_paid_rows,
    ref,
    sequence_documents,
    sequence_lines,
    twin_lines,
)
from checks.payloads import QBO_SERVICE, Reference, payload_failures

QBO_ENTITIES = {"customer": "Customer", "invoice": "Invoice", "credit_note": "CreditMemo", "product": "Item"}
DOCUMENTS = {"invoice": ("invoices", "invoice_lines"), "credit_note": ("credit_notes", "credit_note_lines")}
CENT = Decimal("0.01")


# ----------------------------------------------------------------------------------------------------------
# Inputs: what QuickBooks adds to the unified model
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


# ----------------------------------------------------------------------------------------------------------
# Context
# ----------------------------------------------------------------------------------------------------------


class QuickBooksWords(AppWords):
    """QuickBooks' words for plan.py's general rows (customers, later mapping, mark paid, import, link)."""

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


def quickbooks_context(inputs: PlanInputs, tenants: Iterable[str] | None) -> _Context:
    """plan._Context for the tenants with QuickBooks settings: the company's home currency and multi-currency
    (QuickBooks' own, else the settings'), the default item and tax codes, SyncTokens, and the mismatches
    reconciliation found between Sequence and QuickBooks that a write settles."""
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


# ----------------------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------------------


def quickbooks_plan(inputs: PlanInputs, *, tenants: Iterable[str] | None = None, invoice: str | None = None,
                    reference: Reference | None = None) -> pl.DataFrame:
    """The QuickBooks part of the plan (PLAN_SCHEMA): `inputs.settings` is tenant -> its QuickBooks settings."""
    ctx = quickbooks_context(inputs, tenants)
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
    reference = reference if reference is not None else quickbooks_reference(inputs, ctx.tenants, ctx)
    return finished(rows, lambda planned: payload_failures(planned, reference), "", invoice)


def quickbooks_reference(inputs: PlanInputs, tenants: list[str], ctx: _Context | None = None) -> Reference:
    """Ids a payload may name: the QuickBooks company's active tax codes and items, its accounts and customers."""

    def qbo(table: str, *columns: str, active: bool = True) -> pl.DataFrame:
        frame = inputs.unified[table].filter((pl.col("app") == QUICKBOOKS) & pl.col("tenant").is_in(tenants))
        if active:
            frame = frame.filter(pl.col("active").fill_null(True))
        return frame.select("tenant", "id", *columns).collect()

    companies = ctx.companies if ctx is not None else quickbooks_context(inputs, tenants).companies
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
# Customers: the payload (customer_rows in plan.py plans the rows)
# ----------------------------------------------------------------------------------------------------------


def _qbo_address(r: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    return {"Line1": r[f"{prefix}line1"], "Line2": r[f"{prefix}line2"], "City": r[f"{prefix}city"],
            "CountrySubDivisionCode": r[f"{prefix}region"], "PostalCode": r[f"{prefix}postal_code"],
            "Country": r[f"{prefix}country"]}


def _customer_payload(r: Mapping[str, Any]) -> dict[str, Any]:
    name = (r["name"] or "").strip()
    return {"DisplayName": name, "CompanyName": name[:100] or None,
            "PrimaryEmailAddr": {"Address": r["email"]} if r["email"] else None, "BillAddr": _qbo_address(r)}


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


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


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
