"""Write-back to Xero: the plan rows that bring Sequence and a Xero organisation into agreement, and the apply
step that sends them. The business rules are the QuickBooks integration's (../shared/seeds/sequence-quickbooks-
integration.txt, which the Xero integration mirrors) and are written once in plan.py (customers, the later-mapping
rule, mark paid, import, link, the seed's document and line rules, validation, dependencies); this module says
them in Xero's words (XeroWords) and keeps what only Xero has: its payloads, item codes, statuses and transport.

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

from assets.reconcile.rules import (
    SEQUENCE,
    folded_text,
    settings_frames,
)
from assets.writeback.outbox import Outcome
from assets.writeback.plan import (
    AppWords,
    PlanInputs,
    Row,
    _Context,
    _reasons,
    app_actions,
    customer_rows,
    document_actions,
    dumps,
    empty_plan,
    finished,
    mark_paid_rows,
    sequence_documents,
    sequence_lines,
    sort_plan,
    twin_lines,
)
from checks.payloads_xero import (
    DOCUMENT_TYPES,
    ID_FIELDS,
    NUMBER_FIELDS,
    XERO_SERVICE,
    XeroReference,
    xero_payload_failures,
)
from connectors.errors import AppError, RateLimited
from connectors.xero import MAX_ELEMENTS, ElementResult, XeroClient

if TYPE_CHECKING:
    from assets.writeback.apply import Applier, _Row

XERO = "xero"
ALIAS_PREFIX = "xero-"
COLLECTIONS = {"customer": "Contacts", "invoice": "Invoices", "credit_note": "CreditNotes", "product": "Items"}
DOCUMENTS = {"invoice": ("invoices", "invoice_lines"), "credit_note": ("credit_notes", "credit_note_lines")}
CREATES = ("create", "create_item")  # PUT; every other Xero write is a POST carrying the record's id
ITEM_CODE_MAX, ITEM_NAME_MAX = 30, 50


# ----------------------------------------------------------------------------------------------------------
# Context
# ----------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _contact(r: Mapping[str, Any]) -> dict[str, Any]:
    address = {"AddressType": "POBOX", "AddressLine1": r["line1"], "AddressLine2": r["line2"], "City": r["city"],
               "Region": r["region"], "PostalCode": r["postal_code"], "Country": r["country"]}
    filled = any(address[k] for k in ("AddressLine1", "City", "PostalCode", "Country"))
    return {"Name": (r["name"] or "").strip(), "EmailAddress": r["email"], "Addresses": [address] if filled else None}


class XeroWords(AppWords):
    """Xero's words for plan.py's general rows (customers, later mapping, mark paid, import, link)."""

    app, label, service, alias_prefix = XERO, "Xero", XERO_SERVICE, ALIAS_PREFIX
    created_id, linked_id = "the ContactID of the Xero contact", "the Xero ContactID"
    id_fields = {**ID_FIELDS, "customer": "ContactID"}
    item_field, item_name_path = "LineItems.ItemCode", "$.Code"
    active_names_only = True  # Xero's contact names are unique among active contacts

    def customer_create(self, r: Mapping[str, Any]) -> tuple[dict[str, Any], str, str | None, str | None]:
        # ContactNumber = the Sequence customer id; the currency of its latest document
        payload = {**_contact(r), "ContactNumber": r["sequence_id"], "DefaultCurrency": r["_currency"]}
        error = (f"Name: Xero contact {r['_taken']} already has the name '{r['name']}' (names are unique among "
                 "active contacts): link the two instead" if r["_taken"] else None)
        return payload, "", error, None

    def customer_update(self, r: Mapping[str, Any]) -> dict[str, Any]:
        return {"ContactID": r["app_id"], **_contact(r)}


XERO_WORDS = XeroWords()


def xero_context(inputs: PlanInputs, settings: Mapping[str, Mapping[str, Any]],
                 tenants: Iterable[str] | None = None) -> _Context:
    """plan._Context for the tenants with a Xero connection: their Xero connection's settings, and the
    mismatches reconciliation found between Sequence and Xero that a write settles."""
    chosen = sorted(t for t in settings if tenants is None or t in set(tenants))
    frames = settings_frames({t: settings[t] for t in chosen})
    extra = pl.DataFrame([(t, _text(settings[t].get("default_account_code"))) for t in chosen],
                         schema={"tenant": pl.String, "default_account_code": pl.String}, orient="row")
    companies = frames.tenants.collect().join(extra, on="tenant", how="left")
    return _Context(inputs, chosen, frames, companies, app_actions(inputs, XERO, chosen), XERO_WORDS,
                    app_settings={t: settings[t] for t in chosen})  # the items' codes


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
    customers, customer_ids, _currencies = customer_rows(ctx)
    rows += customers
    for entity in DOCUMENTS:
        rows += document_rows(ctx, entity, mapping, customer_ids)
    rows += mark_paid_rows(ctx)
    reference = reference if reference is not None else xero_reference(ctx)
    return sort_plan(finished(rows, lambda planned: xero_payload_failures(planned, reference), "Xero ", invoice))


def xero_reference(ctx: _Context) -> XeroReference:
    """The organisation's active tax types and its account codes, from the unified model."""
    taxes = ctx.unified("tax_codes", XERO).filter(pl.col("active").fill_null(True)).select("tenant", "id").collect()
    accounts = (ctx.unified("accounts", XERO).select("tenant", pl.col("code").alias("id"))
                .filter(pl.col("id").is_not_null()).collect())
    return XeroReference(tax_types=taxes, account_codes=accounts)


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
        row = ctx.row(r["tenant"], XERO, "product", "create_item", r["sequence_id"], None,
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
        rows.append(ctx.row(r["tenant"], XERO, "product", "update_item", r["sequence_id"], r["app_id"],
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
    return ctx.app_settings.get(tenant) or {}


# ----------------------------------------------------------------------------------------------------------
# Invoices and credit notes
# ----------------------------------------------------------------------------------------------------------


def _expected_lines(ctx: _Context, line_table: str, docs: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    """The documents' lines as Xero should hold them (plan.sequence_lines: the seed's description and tax type;
    the item's code and account by the mapping), with the LineItemID of the twin line (same position)."""
    contact_codes = ctx.unified("customers", XERO).select(
        "tenant", pl.col("id").alias("expected_customer_id"), pl.col("default_tax_code").alias("_customer_code")
    ).unique(subset=["tenant", "expected_customer_id"]).collect()
    lines = sequence_lines(
        ctx, line_table, docs, contact_codes, heads=("default_account_code",),
        mapped=lambda lines: lines.join(mapping.rename({"account_code": "_item_account"}),
                                        on=["tenant", "product_id"], how="left"),
        columns={"account_code": pl.coalesce("_item_account", "default_account_code")})
    return lines.join(twin_lines(ctx, line_table, docs), on=["tenant", "linked_id", "_rank"], how="left")


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
            "Description": line["description"],
            "Quantity": line["quantity"] or Decimal(0),
            "UnitAmount": line["rate"] or Decimal(0),
            "ItemCode": line["item_code"],
            "AccountCode": line["account_code"],
            "TaxType": line["tax_code"],
        } for line in lines]
    return payload


def document_rows(ctx: _Context, entity: str, mapping: pl.DataFrame, customer_ids: pl.DataFrame) -> list[Row]:
    table, line_table = DOCUMENTS[entity]
    rows, acting = document_actions(ctx, entity, table)
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
        rows.append(ctx.row(r["tenant"], XERO, entity, "void", r["sequence_id"], r["app_id"],
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
    docs = sequence_documents(ctx, table, wanted, links, customer_ids)
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
            rows.append(ctx.row(doc["tenant"], XERO, entity, "create", doc["sequence_id"], None,
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
        rows.append(ctx.row(doc["tenant"], XERO, entity, "update", doc["sequence_id"], target, payload,
                         _reasons(doc["reasons"]), depends_on=depends,
                         error=error if error and (lines_differ or status is not None) else None))
    return rows


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
    # An organisation that answered with its daily limit takes nothing more today: its later requests are not
    # sent (their rows stay planned for the next apply) instead of each meeting its own 429.
    spent: set[str] = set()

    def send(members: list[_Row], key: str) -> None:
        if members[0].tenant in spent:
            applier.echo(f"[apply] {len(members)} Xero writes of {members[0].tenant} wait for the next apply: "
                         "the organisation's daily API limit is spent")
            return
        error = _request(applier, members, key)
        if isinstance(error, RateLimited) and not error.retriable:
            spent.add(members[0].tenant)

    for key, members in earlier.items():
        members.sort(key=lambda m: int(m.batch_item.removeprefix("e")))
        send(members, key)
    size = max(1, min(max_elements, MAX_ELEMENTS))
    for _group, members in sorted(fresh.items()):
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            send(chunk, request_key(r.fresh_request_id() for r in chunk))


def _request(applier: Applier, rows: list[_Row], key: str) -> AppError | None:
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
        return exc
    applier._finish([_outcome(client, row, result) for row, result in zip(rows, results, strict=True)])
    return None


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
    from assets.writeback.apply import add_item_mappings

    return add_item_mappings(registry_path, [
        (tenant, product, {k: v for k, v in {"item_id": str(item_id), "item_code": code,
                                             "account_code": account}.items() if v})
        for tenant, product, item_id, code, account in sorted(created)], app=XERO)


def confirmed_items(con: Any) -> list[tuple[str, str, str, str, str | None]]:
    """(tenant, product, ItemID, Code, account code) of every confirmed Xero create_item in the outbox."""
    from assets.writeback.apply import created_items

    return [(tenant, product, item_id, body.get("Code"), (body.get("SalesDetails") or {}).get("AccountCode"))
            for tenant, product, item_id, body in created_items(con, XERO)]


def record_items(applier: Applier) -> None:
    """The items apply created in Xero become the products' mappings in the tenant's Xero connection settings."""
    if applier.registry_path is not None and Path(applier.registry_path).exists():
        created = confirmed_items(applier.con)
        if created:
            record_item_mappings(Path(applier.registry_path), created)
