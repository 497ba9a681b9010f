"""Write-back to Xero: the plan rows that bring Sequence and a Xero organisation into agreement, and the apply
step that sends them. The business rules are the QuickBooks integration's (../shared/seeds/sequence-quickbooks-
integration.txt, which the Xero integration mirrors); only the payloads and the transport are Xero's.

Operations (plan rows as plan.py describes them; `counterpart_app` is "xero" on every row, Sequence's included):
  xero customer      create (PUT Contacts: Name, ContactNumber = the Sequence customer id, EmailAddress, the
                     POBOX address, DefaultCurrency = its latest document's currency), then a Sequence link
                     storing the new ContactID as the customer's integration id (service "Xero"); update (POST
                     Contacts with ContactID)
  xero invoice / credit_note  create (PUT Invoices / CreditNotes: ACCREC / ACCRECCREDIT, Contact.ContactID, the
                     number, Date by the invoice-date setting, DueDate, LineAmountTypes Exclusive, CurrencyCode,
                     Status AUTHORISED, SentToContact false so that Xero sends no second email, LineItems with
                     "[group]: [line]", Quantity, UnitAmount, ItemCode and AccountCode by the product mapping, TaxType
                     by the seed's resolution order); update (POST with the id; LineItems, with their LineItemIDs,
                     only when a line differs); void (Status VOIDED for an AUTHORISED document with nothing paid,
                     DELETED for a draft; a paid one is refused: a person unpicks the payment first)
  xero product       create_item (PUT Items: Code from the product name, Name, SalesDetails.AccountCode),
                     update_item (POST Items: ItemID, SalesDetails.AccountCode)
  sequence invoice   mark_paid (paid in Xero; never a Stripe payment-link invoice)
  sequence customer  import (Xero contacts passing the import rules, alias xero-<ContactID>), link (a candidate)

Apply (`send_xero`): a wave's Xero rows of one tenant go many to a request (≤ 50, one collection and method per
request) with `summarizeErrors=false`, so each element answers for itself: a refused element is marked failed
with Xero's reason while its neighbours are confirmed. Every request carries one Idempotency-Key derived from its
members' keys and recorded (outbox request_id, each row's element position in batch_item) before it is sent: a
request retried after a 429, a 5xx, a crash or a lost answer goes again with the same members, in the same order,
under the same key, and Xero replays its first answer instead of writing twice.

Known simplifications: Xero keeps an Idempotency-Key for minutes, not forever: a request re-sent much later is
executed again (creates then meet Xero's unique Name / ContactNumber / Code and fail rather than duplicate).
Multi-currency conversion is Xero's own (it applies its daily rate): no CurrencyRate is sent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml

from assets.reconcile.rules import (
    SEQUENCE,
    expected_invoice_date,
    expected_tax_code,
    folded_text,
    line_description,
    settings_frames,
)
from assets.writeback.outbox import Outcome
from assets.writeback.plan import (
    LATER_MAPPING_FIELDS,
    PLAN_SCHEMA,
    WRITE_ACTIONS,
    PlanInputs,
    Row,
    _blocked_by_dependencies,
    _Context,
    _reasons,
    dumps,
    empty_plan,
    for_invoice,
    ref,
)
from checks.payloads_xero import (
    DOCUMENT_TYPES,
    ID_FIELDS,
    NUMBER_FIELDS,
    XERO_SERVICE,
    XeroReference,
    xero_payload_failures,
)
from connectors.errors import AppError
from connectors.xero import MAX_ELEMENTS, ElementResult, XeroClient

if TYPE_CHECKING:
    from assets.writeback.apply import Applier, _Row

XERO = "xero"
ALIAS_PREFIX = "xero-"
COLLECTIONS = {"customer": "Contacts", "invoice": "Invoices", "credit_note": "CreditNotes", "product": "Items"}
DOCUMENTS = {"invoice": ("invoices", "invoice_lines"), "credit_note": ("credit_notes", "credit_note_lines")}
CREATES = ("create", "create_item")  # PUT; every other Xero write is a POST carrying the record's id
ITEM_CODE_MAX, ITEM_NAME_MAX = 30, 50
ORDER = {"create_item": 0, "update_item": 1, "create": 2, "import": 3, "update": 4, "link": 6, "void": 7,
         "mark_paid": 8}


# ----------------------------------------------------------------------------------------------------------
# Context
# ----------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def xero_context(inputs: PlanInputs, settings: Mapping[str, Mapping[str, Any]],
                 tenants: Iterable[str] | None = None) -> _Context:
    """plan._Context for the tenants with a Xero connection: their Xero connection's settings, and the
    mismatches reconciliation found between Sequence and Xero that a write settles."""
    chosen = sorted(t for t in settings if tenants is None or t in set(tenants))
    frames = settings_frames({t: settings[t] for t in chosen})
    extra = pl.DataFrame([(t, _text(settings[t].get("default_account_code"))) for t in chosen],
                         schema={"tenant": pl.String, "default_account_code": pl.String}, orient="row")
    companies = frames.tenants.collect().join(extra, on="tenant", how="left")
    actions = (inputs.mismatches
               .filter((pl.col("app") == XERO) & pl.col("proposed_action").is_in(WRITE_ACTIONS)
                       & pl.col("tenant").is_in(chosen))
               .group_by("tenant", "entity", "sequence_id", "app_id", "proposed_action", maintain_order=True)
               .agg(pl.col("field").drop_nulls().unique().sort().alias("fields"),
                    pl.col("kind").unique().sort().alias("kinds"), pl.col("reason").alias("reasons"))
               .collect())
    ctx = _Context(inputs, chosen, frames, companies, actions)
    ctx.xero_settings = {t: settings[t] for t in chosen}  # type: ignore[attr-defined]  # the items' codes
    return ctx


def _row(tenant: str, app: str, entity: str, operation: str, sequence_id: str | None, app_id: str | None,
         payload: dict[str, Any], reason: str, **kw: Any) -> Row:
    return Row(tenant, app, entity, operation, sequence_id, app_id, payload, reason, counterpart_app=XERO, **kw)


# ----------------------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------------------


def build_xero_plan(inputs: PlanInputs, settings: Mapping[str, Mapping[str, Any]], *,
                    tenants: Iterable[str] | None = None, invoice: str | None = None,
                    reference: XeroReference | None = None) -> pl.DataFrame:
    """The Xero part of the plan (PLAN_SCHEMA): `settings` is tenant -> its Xero connection's settings."""
    ctx = xero_context(inputs, settings, tenants)
    if not ctx.tenants:
        return empty_plan()
    rows: list[Row] = []
    items, mapping = item_rows(ctx)
    rows += items
    customers, customer_ids = customer_rows(ctx)
    rows += customers
    for entity in DOCUMENTS:
        rows += document_rows(ctx, entity, mapping, customer_ids)
    rows += mark_paid_rows(ctx)
    records = [r.record() for r in rows]
    plan = pl.DataFrame(records, schema=PLAN_SCHEMA) if records else empty_plan()
    plan = validated(plan, reference if reference is not None else xero_reference(ctx))
    plan = _blocked_by_dependencies(plan)
    if invoice is not None:
        plan = for_invoice(plan, invoice)
    return (plan.with_columns(_o=pl.col("operation").replace_strict(ORDER, default=9, return_dtype=pl.Int64))
            .sort("tenant", "app", "_o", "entity", "sequence_id", "app_id", nulls_last=True).drop("_o"))


def xero_reference(ctx: _Context) -> XeroReference:
    """The organisation's active tax types and its account codes, from the unified model."""
    taxes = ctx.unified("tax_codes", XERO).filter(pl.col("active").fill_null(True)).select("tenant", "id").collect()
    accounts = (ctx.unified("accounts", XERO).select("tenant", pl.col("code").alias("id"))
                .filter(pl.col("id").is_not_null()).collect())
    return XeroReference(tax_types=taxes, account_codes=accounts)


def validated(plan: pl.DataFrame, reference: XeroReference) -> pl.DataFrame:
    """Rows whose payload breaks its contract are skipped, the record, field and reason named."""
    failures = xero_payload_failures(plan.filter(pl.col("state") == "planned"), reference)
    if failures.height == 0:
        return plan
    problems = (failures.group_by("idempotency_key", maintain_order=True)
                .agg(pl.format("{}: {}", "field", "reason").str.join("; ").alias("_problem")))
    record = pl.format("{} {}", pl.col("entity").str.replace("_", " "), pl.coalesce("sequence_id", "app_id"))
    return (plan.join(problems, on="idempotency_key", how="left")
            .with_columns(state=pl.when(pl.col("_problem").is_not_null()).then(pl.lit("skipped")).otherwise("state"),
                          error=pl.coalesce("error", pl.format("invalid payload for Xero {}: {}", record, "_problem")))
            .drop("_problem"))


# ----------------------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------------------


def item_code(name: str) -> str:
    """A product's item Code: its name upper-cased, runs of other characters as '-', at most 30 characters."""
    return re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-")[:ITEM_CODE_MAX].rstrip("-") or "ITEM"


def item_rows(ctx: _Context) -> tuple[list[Row], pl.DataFrame]:
    """create_item for unmapped products (the settings' account code, else the default account code),
    update_item where an item books to another account than the settings say. Also returns the product mapping
    documents use: (tenant, product_id, item_code, account_code, depends: the create_item key or null)."""
    settings_items = _settings_items(ctx)
    items = ctx.unified("products", XERO).select("tenant", "id", "name").collect()
    products = ctx.unified("products", SEQUENCE).select("tenant", "id", "name").collect()
    taken = (items.select("tenant", folded_text(pl.col("name")).alias("_folded"), pl.col("id").alias("_taken"),
                          pl.col("name").alias("_taken_name")).unique(subset=["tenant", "_folded"], keep="first"))
    create = (ctx.acting("product", "create_item")
              .join(products.rename({"id": "sequence_id"}), on=["tenant", "sequence_id"], how="inner")
              .join(settings_items.rename({"product_id": "sequence_id"}), on=["tenant", "sequence_id"], how="left")
              .join(ctx.companies.select("tenant", "default_account_code"), on="tenant", how="left")
              .with_columns(_folded=folded_text(pl.col("name")))
              .join(taken, on=["tenant", "_folded"], how="left"))
    rows: list[Row] = []
    created: list[tuple[str, str, str, str | None, str]] = []
    seen: set[tuple[str, str]] = set()
    for r in create.sort("tenant", "sequence_id").to_dicts():
        code = item_code(r["name"] or "")
        account = r["account_code"] or r["default_account_code"]
        error = None
        if r["_taken"] is not None:
            error = (f"Name: an item named '{r['_taken_name']}' ({r['_taken']}) already exists in Xero: map the "
                     "product to it or rename one of them")
        elif (r["tenant"], code) in seen:
            error = f"Code: another product of this plan has the item code '{code}' (codes are unique)"
        elif account is None:
            error = ("SalesDetails.AccountCode: no account code for the product in the settings and no "
                     "default_account_code")
        seen.add((r["tenant"], code))
        row = _row(r["tenant"], XERO, "product", "create_item", r["sequence_id"], None,
                   {"Code": code, "Name": (r["name"] or "")[:ITEM_NAME_MAX],
                    "SalesDetails": {"AccountCode": account}},
                   f"{_reasons(r['reasons'])} Creates item {code} '{r['name']}' booking to account {account}.",
                   error=error)
        rows.append(row)
        if error is None:
            created.append((r["tenant"], r["sequence_id"], code, account, row.key))
    update = (ctx.acting("product", "update_item")
              .join(settings_items.rename({"product_id": "sequence_id"}), on=["tenant", "sequence_id"], how="left"))
    for r in update.sort("tenant", "sequence_id").to_dicts():
        rows.append(_row(r["tenant"], XERO, "product", "update_item", r["sequence_id"], r["app_id"],
                         {"ItemID": r["app_id"], "SalesDetails": {"AccountCode": r["account_code"]}},
                         _reasons(r["reasons"]) + f" Books item {r['item_code'] or r['app_id']} to account "
                                                  f"{r['account_code']}."))
    schema = {"tenant": pl.String, "product_id": pl.String, "item_code": pl.String, "account_code": pl.String,
              "depends": pl.String}
    new = pl.DataFrame(created, schema=schema, orient="row")
    mapped = (settings_items.filter(pl.col("item_code").is_not_null() | pl.col("account_code").is_not_null())
              .select("tenant", "product_id", "item_code", "account_code", pl.lit(None, pl.String).alias("depends"))
              .join(new.select("tenant", "product_id"), on=["tenant", "product_id"], how="anti"))
    return rows, pl.concat([mapped, new])


def _settings_items(ctx: _Context) -> pl.DataFrame:
    """(tenant, product_id, item_id, item_code, account_code) of the Xero settings' item mappings."""
    rows = []
    for tenant in ctx.tenants:
        for product, body in ((_settings_of(ctx, tenant).get("items")) or {}).items():
            body = body or {}
            rows.append((tenant, str(product), _text(body.get("item_id")), _text(body.get("item_code")),
                         _text(body.get("account_code"))))
    return pl.DataFrame(rows, schema={"tenant": pl.String, "product_id": pl.String, "item_id": pl.String,
                                      "item_code": pl.String, "account_code": pl.String}, orient="row")


def _settings_of(ctx: _Context, tenant: str) -> Mapping[str, Any]:
    return getattr(ctx, "xero_settings", {}).get(tenant) or {}


# ----------------------------------------------------------------------------------------------------------
# Customers
# ----------------------------------------------------------------------------------------------------------


def _contact(r: Mapping[str, Any]) -> dict[str, Any]:
    address = {"AddressType": "POBOX", "AddressLine1": r["line1"], "AddressLine2": r["line2"], "City": r["city"],
               "Region": r["region"], "PostalCode": r["postal_code"], "Country": r["country"]}
    filled = any(address[k] for k in ("AddressLine1", "City", "PostalCode", "Country"))
    return {"Name": (r["name"] or "").strip(), "EmailAddress": r["email"], "Addresses": [address] if filled else None}


def customer_rows(ctx: _Context) -> tuple[list[Row], pl.DataFrame]:
    """Xero creates (each followed by the Sequence link of its new ContactID), updates, Sequence links of
    candidates, and imports; and who each Sequence customer is in Xero (tenant, customer_id,
    expected_customer_id: a ContactID or a $ref)."""
    seq = ctx.unified("customers", SEQUENCE).collect()
    contacts = ctx.unified("customers", XERO).collect()
    rows: list[Row] = []
    documents = pl.concat([ctx.unified(t, SEQUENCE).filter(pl.col("status") != "DRAFT")
                           .select("tenant", "customer_id", "currency", "issue_date", "created_at")
                           for t in ("invoices", "credit_notes")]).collect()
    latest = (documents.sort("issue_date", "created_at", nulls_last=False)
              .group_by("tenant", "customer_id").agg(pl.col("currency").last().alias("_currency")))
    taken = (contacts.filter(pl.col("active").fill_null(True))
             .select("tenant", folded_text(pl.col("name")).alias("_folded"), pl.col("id").alias("_taken"))
             .unique(subset=["tenant", "_folded"], keep="first"))
    create = (ctx.acting("customer", "create_in_app")
              .join(seq.rename({"id": "sequence_id"}), on=["tenant", "sequence_id"], how="inner")
              .join(latest.rename({"customer_id": "sequence_id"}), on=["tenant", "sequence_id"], how="left")
              .with_columns(_folded=folded_text(pl.col("name")))
              .join(taken, on=["tenant", "_folded"], how="left"))
    created = []
    for r in create.sort("tenant", "sequence_id").to_dicts():
        payload = {**_contact(r), "ContactNumber": r["sequence_id"], "DefaultCurrency": r["_currency"]}
        error = (f"Name: Xero contact {r['_taken']} already has the name '{r['name']}' (names are unique among "
                 "active contacts): link the two instead" if r["_taken"] else None)
        row = _row(r["tenant"], XERO, "customer", "create", r["sequence_id"], None, payload,
                   _reasons(r["reasons"]), error=error)
        rows.append(row)
        created.append((r["tenant"], r["sequence_id"], ref(row.key)))
        rows.append(_row(r["tenant"], SEQUENCE, "customer", "link", r["sequence_id"], None,
                         {"customerId": r["sequence_id"], "integrationIds": [{"service": XERO_SERVICE,
                                                                              "id": ref(row.key)}]},
                         f"Stores the ContactID of the Xero contact created for '{r['name']}' as its integration id.",
                         depends_on=[row.key]))
    update = (ctx.acting("customer", "update_in_app")
              .join(seq.rename({"id": "sequence_id"}), on=["tenant", "sequence_id"], how="inner"))
    for r in update.sort("tenant", "sequence_id").to_dicts():
        rows.append(_row(r["tenant"], XERO, "customer", "update", r["sequence_id"], r["app_id"],
                         {"ContactID": r["app_id"], **_contact(r)}, _reasons(r["reasons"])))
    link = ctx.acting("customer", "link").filter(pl.col("sequence_id").is_not_null() & pl.col("app_id").is_not_null())
    for r in link.sort("tenant", "sequence_id").to_dicts():
        rows.append(_row(r["tenant"], SEQUENCE, "customer", "link", r["sequence_id"], r["app_id"],
                         {"customerId": r["sequence_id"], "integrationIds": [{"service": XERO_SERVICE,
                                                                              "id": r["app_id"]}]},
                         _reasons(r["reasons"]) + " Stores the Xero ContactID as the customer's integration id."))
    imports = (ctx.acting("customer", "import_to_sequence")
               .join(contacts.rename({"id": "app_id"}), on=["tenant", "app_id"], how="inner"))
    for r in imports.sort("tenant", "app_id").to_dicts():
        name = (r["name"] or "").strip()
        payload = {"legalName": name,
                   "address": {"line1": r["line1"], "line2": r["line2"], "town": r["city"], "state": r["region"],
                               "postcode": r["postal_code"], "country": r["country"]},
                   "taxStatus": r["tax_status"] or "TAXED",
                   "contacts": [{"name": name, "email": r["email"], "billingPreference": "PRIMARY"}],
                   "customerAliases": [f"{ALIAS_PREFIX}{r['app_id']}"],
                   "integrationIds": [{"service": XERO_SERVICE, "id": r["app_id"]}]}
        rows.append(_row(r["tenant"], SEQUENCE, "customer", "import", None, r["app_id"], payload,
                         _reasons(r["reasons"])))
    linked = (ctx.inputs.links.filter((pl.col("entity") == "customer") & (pl.col("app") == XERO)
                                      & pl.col("tenant").is_in(ctx.tenants))
              .select("tenant", pl.col("sequence_id").alias("customer_id"), pl.col("app_id").alias("_linked"))
              .unique().collect().filter(pl.len().over("tenant", "customer_id") == 1))
    proposed = (link.select("tenant", pl.col("sequence_id").alias("customer_id"), pl.col("app_id").alias("_proposed"))
                .unique(subset=["tenant", "customer_id"], keep="first"))
    new = pl.DataFrame(created, schema={"tenant": pl.String, "customer_id": pl.String, "_created": pl.String},
                       orient="row")
    ids = (seq.select("tenant", pl.col("id").alias("customer_id"))
           .join(linked, on=["tenant", "customer_id"], how="left")
           .join(proposed, on=["tenant", "customer_id"], how="left")
           .join(new, on=["tenant", "customer_id"], how="left")
           .select("tenant", "customer_id",
                   pl.coalesce("_linked", "_proposed", "_created").alias("expected_customer_id")))
    return rows, ids


# ----------------------------------------------------------------------------------------------------------
# Invoices and credit notes
# ----------------------------------------------------------------------------------------------------------


def _expected_lines(ctx: _Context, line_table: str, docs: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    """The documents' lines as Xero should hold them, with the LineItemID of the twin line (same position)."""
    customers = ctx.unified("customers", SEQUENCE).select("tenant", pl.col("id").alias("customer_id"),
                                                         "tax_status").collect()
    contact_codes = ctx.unified("customers", XERO).select(
        "tenant", pl.col("id").alias("expected_customer_id"), pl.col("default_tax_code").alias("_contact_code")
    ).unique(subset=["tenant", "expected_customer_id"]).collect()
    heads = docs.select("tenant", pl.col("sequence_id").alias("document_id"), "customer_id", "expected_customer_id",
                        "linked_id", "fallback_tax_code", "exempt_tax_code", "reverse_charge_tax_code",
                        "account_default_tax_code", "default_account_code")
    lines = (ctx.unified(line_table, SEQUENCE).join(heads.lazy(), on=["tenant", "document_id"], how="inner")
             .collect()
             .join(customers, on=["tenant", "customer_id"], how="left")
             .join(contact_codes, on=["tenant", "expected_customer_id"], how="left")
             .join(ctx.settings.tax_codes.collect().rename({"tax_code": "_mapped_code"}),
                   on=["tenant", "tax_category_id"], how="left")
             .join(mapping.rename({"account_code": "_item_account"}), on=["tenant", "product_id"], how="left")
             .with_columns(
                 _rank=pl.col("position").rank("ordinal").over("tenant", "document_id").cast(pl.Int64),
                 account_code=pl.coalesce("_item_account", "default_account_code"),
                 expected_description=line_description(pl.col("group_title"), pl.col("title"), pl.col("description")),
                 tax_type=expected_tax_code(pl.col("tax_status"), pl.col("_mapped_code"), pl.col("fallback_tax_code"),
                                            pl.col("exempt_tax_code"), pl.col("reverse_charge_tax_code"),
                                            pl.col("account_default_tax_code"), pl.col("_contact_code"),
                                            pl.lit(False)))
             .sort("tenant", "document_id", "_rank"))
    twins = heads.select("tenant", pl.col("linked_id").alias("document_id")).drop_nulls().unique()
    xero_lines = (ctx.unified(line_table, XERO).join(twins.lazy(), on=["tenant", "document_id"], how="semi")
                  .select("tenant", pl.col("document_id").alias("linked_id"), pl.col("id").alias("line_id"),
                          _rank=pl.col("position").rank("ordinal").over("tenant", "document_id").cast(pl.Int64))
                  .collect())
    return lines.join(xero_lines, on=["tenant", "linked_id", "_rank"], how="left")


def _document_payload(entity: str, doc: Mapping[str, Any], lines: list[dict], *, create: bool,
                      with_lines: bool = True) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "Type": DOCUMENT_TYPES[entity] if create else None,
        "Contact": {"ContactID": doc["expected_customer_id"]} if doc["expected_customer_id"] else None,
        NUMBER_FIELDS[entity]: doc["number"],
        "Date": doc["expected_date"],
        "DueDate": doc["due_date"] if entity == "invoice" else None,
        "LineAmountTypes": "Exclusive",
        "CurrencyCode": doc["currency"] if create else None,
        "Status": "AUTHORISED" if create else None,
        # Sequence emails the customer itself: Xero must not send the invoice a second time
        "SentToContact": False if create and entity == "invoice" else None,
    }
    if with_lines:
        payload["LineItems"] = [{
            "LineItemID": None if create else line["line_id"],
            "Description": line["expected_description"],
            "Quantity": line["quantity"] or Decimal(0),
            "UnitAmount": line["rate"] or Decimal(0),
            "ItemCode": line["item_code"],
            "AccountCode": line["account_code"],
            "TaxType": line["tax_type"],
        } for line in lines]
    return payload


def _later_mapping_only(ctx: _Context, entity: str) -> pl.DataFrame:
    """Synced documents whose every difference is a line on another item than the item a write-back created for
    its product (plan.LATER_MAPPING_FIELDS: a mapping applies to documents synced after it; Xero documents carry
    no creation time, so a document Xero already had is taken as synced before). (tenant, sequence_id, app_id,
    _items: the new items' codes)"""
    schema = {"tenant": pl.String, "sequence_id": pl.String, "app_id": pl.String, "_items": pl.String}
    box = ctx.inputs.outbox
    if box is None or not box.collect_schema().len():
        return pl.DataFrame(schema=schema)
    created = (box.filter((pl.col("app") == XERO) & (pl.col("operation") == "create_item")
                          & (pl.col("state") == "confirmed") & pl.col("app_id").is_not_null()
                          & pl.col("tenant").is_in(ctx.tenants))
               .select("tenant", pl.col("app_id").alias("sequence_value"),
                       pl.col("payload").str.json_path_match("$.Code").alias("_code"))
               .unique(subset=["tenant", "sequence_value"]).collect())
    if created.height == 0:
        return pl.DataFrame(schema=schema)
    differences = (ctx.inputs.mismatches
                   .filter((pl.col("app") == XERO) & (pl.col("entity") == entity)
                           & (pl.col("proposed_action") == "update_in_app") & pl.col("tenant").is_in(ctx.tenants))
                   .select("tenant", "sequence_id", "app_id", "field", "sequence_value").collect())
    return (differences.join(created, on=["tenant", "sequence_value"], how="left")
            .group_by("tenant", "sequence_id", "app_id")
            .agg((pl.col("field").is_in(list(LATER_MAPPING_FIELDS)) & pl.col("_code").is_not_null()).all()
                 .alias("_only"), pl.col("_code").drop_nulls().unique().sort().str.join("', '").alias("_items"))
            .filter(pl.col("_only") & pl.col("sequence_id").is_not_null() & pl.col("app_id").is_not_null())
            .select(*schema))


def document_rows(ctx: _Context, entity: str, mapping: pl.DataFrame, customer_ids: pl.DataFrame) -> list[Row]:
    table, line_table = DOCUMENTS[entity]
    acting = ctx.actions.filter(pl.col("entity") == entity)
    rows: list[Row] = []
    later = _later_mapping_only(ctx, entity)
    for r in later.sort("tenant", "sequence_id").to_dicts():
        rows.append(_row(r["tenant"], XERO, entity, "update", r["sequence_id"], r["app_id"],
                         {ID_FIELDS[entity]: r["app_id"]}, "Its lines are on another item than the product's new item.",
                         error=(f"LineItems.ItemCode: {entity.replace('_', ' ')} {r['sequence_id']} was synced before "
                                f"item '{r['_items']}' was created for its product; a mapping applies to documents "
                                "synced after it, so the synced document keeps its item (re-sync it to move it)")))
    acting = pl.concat([acting.filter(pl.col("proposed_action") != "update_in_app"),
                        acting.filter(pl.col("proposed_action") == "update_in_app")
                        .join(later.select("tenant", "sequence_id"), on=["tenant", "sequence_id"], how="anti")])
    id_field = ID_FIELDS[entity]
    held = ctx.unified(table, XERO).select("tenant", pl.col("id").alias("app_id"), "app_status", "gross_total",
                                           "balance").collect()
    for r in (acting.filter(pl.col("proposed_action") == "void_in_app").join(held, on=["tenant", "app_id"], how="left")
              .sort("tenant", "sequence_id").to_dicts()):
        status = (r["app_status"] or "").upper()
        paid = (r["gross_total"] or Decimal(0)) - (r["balance"] if r["balance"] is not None else
                                                   (r["gross_total"] or Decimal(0)))
        error = None
        if status in ("DRAFT", "SUBMITTED"):
            wanted, note = "DELETED", " A draft in Xero: deleted (Xero voids only approved documents)."
        else:
            wanted, note = "VOIDED", ""
            if status != "AUTHORISED" or paid != 0:
                error = (f"Status: Xero voids only an AUTHORISED document with nothing paid; this one is {status} "
                         f"with {paid.normalize():f} paid: remove its payments in Xero first")
        rows.append(_row(r["tenant"], XERO, entity, "void", r["sequence_id"], r["app_id"],
                         {id_field: r["app_id"], "Status": wanted}, _reasons(r["reasons"]) + note, error=error))
    wanted = (acting.filter(pl.col("proposed_action").is_in(["create_in_app", "update_in_app"]))
              .select("tenant", "sequence_id", "app_id", "proposed_action", "fields", "reasons"))
    if wanted.height == 0:
        return rows
    links = pl.concat([
        ctx.inputs.links.filter((pl.col("entity") == entity) & (pl.col("app") == XERO)
                                & pl.col("tenant").is_in(ctx.tenants))
        .select("tenant", "sequence_id", pl.col("app_id").alias("linked_id")).collect(),
        acting.filter((pl.col("proposed_action") == "link") & pl.col("app_id").is_not_null())
        .select("tenant", "sequence_id", pl.col("app_id").alias("linked_id"))]).unique(
        subset=["tenant", "sequence_id"], keep="first")
    docs = (ctx.unified(table, SEQUENCE).rename({"id": "sequence_id"})
            .join(wanted.select("tenant", "sequence_id").unique().lazy(), on=["tenant", "sequence_id"], how="semi")
            .collect()
            .join(links, on=["tenant", "sequence_id"], how="left")
            .join(customer_ids, on=["tenant", "customer_id"], how="left")
            .join(ctx.companies, on="tenant", how="left")
            .with_columns(expected_date=expected_invoice_date(pl.col("invoice_date").fill_null("issue"),
                                                              pl.col("issue_date"), pl.col("accounting_date"))))
    if "due_date" not in docs.columns:
        docs = docs.with_columns(due_date=pl.lit(None, pl.Date))
    # Xero refuses any change to a PAID or VOIDED document ("not of valid status for modification")
    locked = {(t, i): st for t, i, st in ctx.unified(table, XERO).filter(
        pl.col("app_status").str.to_uppercase().is_in(["PAID", "VOIDED"]))
        .select("tenant", "id", pl.col("app_status").str.to_uppercase()).collect().iter_rows()}
    lines = _expected_lines(ctx, line_table, docs, mapping)
    by_doc: dict[tuple[str, str], list[dict]] = {}
    for line in lines.to_dicts():
        by_doc.setdefault((line["tenant"], line["document_id"]), []).append(line)
    plan = docs.join(wanted, on=["tenant", "sequence_id"], how="inner")
    for doc in plan.sort("tenant", "sequence_id", "proposed_action").to_dicts():
        doc_lines = by_doc.get((doc["tenant"], doc["sequence_id"]), [])
        depends = sorted({line["depends"] for line in doc_lines if line.get("depends")}
                         | ({doc["expected_customer_id"].removeprefix("$ref:")}
                            if (doc["expected_customer_id"] or "").startswith("$ref:") else set()))
        error = None
        if doc["expected_customer_id"] is None and doc["proposed_action"] == "create_in_app":
            error = (f"Contact.ContactID: its Sequence customer {doc['customer_id']} is not linked to Xero and no "
                     "write of this plan creates or links it: link it first")
        elif not doc_lines:
            error = "LineItems: the document has no lines in Sequence"
        if doc["proposed_action"] == "create_in_app":
            rows.append(_row(doc["tenant"], XERO, entity, "create", doc["sequence_id"], None,
                             _document_payload(entity, doc, doc_lines, create=True),
                             _reasons(doc["reasons"]) + f" Creates the Xero {DOCUMENT_TYPES[entity]} document.",
                             depends_on=depends, error=error))
            continue
        target = doc["linked_id"] or doc["app_id"]
        fields = set(doc["fields"] or [])
        # lines go only when a line differs: Xero re-creates lines it is sent, and refuses line changes on a
        # part-paid invoice
        lines_differ = any(f == "line" or f.startswith("line.") for f in fields)
        payload = {id_field: target, **_document_payload(entity, doc, doc_lines, create=False,
                                                         with_lines=lines_differ)}
        if doc["expected_customer_id"] is None:
            payload.pop("Contact", None)  # an update leaves the contact as Xero has it
        status = locked.get((doc["tenant"], target))
        if status is not None:
            error = (f"Status: the Xero {entity.replace('_', ' ')} is {status} and Xero refuses any change "
                     "to it: a person decides (remove its payment in Xero, or correct it with a credit note)")
        rows.append(_row(doc["tenant"], XERO, entity, "update", doc["sequence_id"], target, payload,
                         _reasons(doc["reasons"]), depends_on=depends,
                         error=error if error and (lines_differ or status is not None) else None))
    return rows


# ----------------------------------------------------------------------------------------------------------
# Sequence: payment status
# ----------------------------------------------------------------------------------------------------------


def mark_paid_rows(ctx: _Context) -> list[Row]:
    """Paid in Xero: mark paid in Sequence, never for an invoice with a Stripe payment link."""
    invoices = ctx.unified("invoices", SEQUENCE).select("tenant", pl.col("id").alias("sequence_id"),
                                                       "stripe_payment_link").collect()
    paid = ctx.acting("invoice", "mark_paid_in_sequence").join(invoices, on=["tenant", "sequence_id"], how="inner")
    return [_row(r["tenant"], SEQUENCE, "invoice", "mark_paid", r["sequence_id"], r["app_id"],
                 {"invoiceId": r["sequence_id"], "paymentStatus": "PAID"}, _reasons(r["reasons"]),
                 error=("operation: the invoice has a Stripe payment link, so Sequence takes its payment status from "
                        "Stripe and never from Xero") if r["stripe_payment_link"] else None)
            for r in paid.sort("tenant", "sequence_id").to_dicts()]


# ----------------------------------------------------------------------------------------------------------
# Apply
# ----------------------------------------------------------------------------------------------------------


def request_key(keys: Iterable[str]) -> str:
    """A request's Idempotency-Key (≤ 128 characters), the same for the same members."""
    return "lx" + hashlib.blake2b("\x1f".join(sorted(keys)).encode(), digest_size=16).hexdigest()


def _method(row: _Row) -> str:
    return "PUT" if row.operation in CREATES else "POST"


def send_xero(applier: Applier, rows: list[_Row], *, max_elements: int = MAX_ELEMENTS) -> None:
    """Sends one wave's Xero rows (any tenants): rows sent before go again with their request's members, in their
    order, under its key; fresh rows go up to `max_elements` to a request of one collection and method."""
    earlier: dict[str, list[_Row]] = {}
    fresh: dict[tuple[str, str, str], list[_Row]] = {}
    for row in rows:
        if row.request_id and row.batch_item:
            earlier.setdefault(row.request_id, []).append(row)
        else:
            fresh.setdefault((row.tenant, COLLECTIONS[row.entity], _method(row)), []).append(row)
    for key, members in earlier.items():
        members.sort(key=lambda m: int(m.batch_item.removeprefix("e")))
        _request(applier, members, key)
    size = max(1, min(max_elements, MAX_ELEMENTS))
    for _group, members in sorted(fresh.items()):
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            _request(applier, chunk, request_key(r.fresh_request_id() for r in chunk))


def _request(applier: Applier, rows: list[_Row], key: str) -> None:
    client = applier.clients.get(rows[0].tenant, XERO)
    assert isinstance(client, XeroClient)
    collection, method = COLLECTIONS[rows[0].entity], _method(rows[0])
    # recorded (committed) before the request: a crash after it re-sends the same members under the same key
    applier._mark_sent(rows, key, [f"e{i + 1}" for i in range(len(rows))])
    elements = [row.payload for row in rows]
    try:
        if method == "PUT":
            results = client.create_many(collection, elements, idempotency_key=key)
        else:
            results = client.upsert_many(collection, elements, idempotency_key=key)
    except AppError as exc:
        applier._finish([applier._failure(r, exc) for r in rows])
        return
    applier._finish([_outcome(client, row, result) for row, result in zip(rows, results, strict=True)])


def _outcome(client: XeroClient, row: _Row, result: ElementResult) -> Outcome:
    error = client.error_of(result)
    if error is not None:
        # Xero rolled this element back and wrote its neighbours: it is refused for a reason a person must fix
        return Outcome(row.key, "failed", answer=dumps(result.record), retriable=False,
                       error=f"{_record_name(row)}: {'; '.join(result.errors)}")
    app_id = result.id if row.operation in CREATES else None
    return Outcome(row.key, "confirmed", answer=dumps(result.record), app_id=app_id)


def _record_name(row: _Row) -> str:
    ids = [f"Sequence {row.sequence_id}" if row.sequence_id else None, f"Xero {row.app_id}" if row.app_id else None]
    return f"{row.operation} in Xero of {row.entity.replace('_', ' ')} ({', '.join(i for i in ids if i)})"


def describe(row: _Row, base_url: str) -> str:
    """What apply would send for a Xero row (dry run)."""
    collection = COLLECTIONS[row.entity]
    return (f"{row.tenant}: {row.operation} {_method(row)} {base_url}/api.xro/2.0/{collection}?summarizeErrors=false "
            f"Idempotency-Key (per request) {dumps({collection: [row.payload]})}")


# ----------------------------------------------------------------------------------------------------------
# Item mappings (Sequence keeps a product's link to the item it created)
# ----------------------------------------------------------------------------------------------------------


def record_item_mappings(registry_path: Path, created: Iterable[tuple[str, str, str, str, str | None]]) -> int:
    """(tenant, product, ItemID, Code, account code) of confirmed create_items into the tenant's Xero connection
    settings (`items: {product: {item_id, item_code, account_code}}`), rewritten atomically; mappings already
    there are left alone. Returns how many were added."""
    document = yaml.safe_load(registry_path.read_text()) or {}
    added = 0
    for tenant, product, item_id, code, account in sorted(created):
        connection = (((document.get("tenants") or {}).get(tenant) or {}).get("connections") or {}).get(XERO)
        if not isinstance(connection, dict):
            continue
        settings = connection.get("settings") or {}
        connection["settings"] = settings
        items = settings.get("items") or {}
        settings["items"] = items
        if (items.get(product) or {}).get("item_id"):
            continue
        items[product] = {k: v for k, v in {"item_id": str(item_id), "item_code": code,
                                            "account_code": account}.items() if v}
        added += 1
    if added:
        tmp = registry_path.with_name(f".{registry_path.name}.tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False))
        tmp.replace(registry_path)
    return added


def confirmed_items(con: Any) -> list[tuple[str, str, str, str, str | None]]:
    """(tenant, product, ItemID, Code, account code) of every confirmed Xero create_item in the outbox."""
    import orjson

    from assets.writeback.outbox import OUTBOX_TABLE

    rows = con.execute(f"select tenant, sequence_id, app_id, payload from {OUTBOX_TABLE} where app = 'xero' and "
                       "operation = 'create_item' and state = 'confirmed' and app_id is not null").fetchall()
    out = []
    for tenant, product, item_id, payload in rows:
        body = orjson.loads(payload)
        out.append((tenant, product, item_id, body.get("Code"), (body.get("SalesDetails") or {}).get("AccountCode")))
    return out
