"""Contracts of the write payloads Ledgerlink sends to Xero (and of the Sequence writes that come from Xero), as
Pandera (polars) schemas over flattened payload frames, like checks/payloads.py for QuickBooks.

`xero_payload_failures(plan, reference)` takes plan rows (`tenant`, `app`, `entity`, `operation`,
`idempotency_key`, `payload` JSON text) whose write goes to Xero, or to Sequence on Xero's behalf
(`counterpart_app` = "xero"), and returns one row per problem: (idempotency_key, field, reason). A line's
fields are named with its position: "LineItems[1].TaxType".

Payload shapes (ids a dependency creates first are "$ref:<idempotency key>" until it is confirmed):
  xero customer     create|update  Contact: Name, ContactNumber, EmailAddress, Addresses[POBOX], DefaultCurrency
                                   (+ ContactID on update)
  xero invoice / credit_note  create|update  Invoice / CreditNote: Type, Contact.ContactID, number, Date, DueDate,
                                   LineAmountTypes, CurrencyCode, Status, SentToContact, LineItems[Description,
                                   Quantity, UnitAmount, ItemCode, AccountCode, TaxType (+ LineItemID)]
  xero invoice / credit_note  void  {InvoiceID | CreditNoteID, Status: VOIDED | DELETED}
  xero product      create_item|update_item  Item: Code, Name, SalesDetails.AccountCode (+ ItemID)
  sequence customer import|link, sequence invoice mark_paid: as for QuickBooks, with the service "Xero" and the
                                   alias "xero-<ContactID>"

This module imports nothing of the project outside checks/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pandera.polars as pa
import polars as pl

from checks.payloads import (
    DATE,
    EMAIL,
    FAILURES,
    SEQUENCE_IMPORT,
    SEQUENCE_PAYMENT_STATUS,
    _at_most,
    _matches,
    _not_blank,
    _number,
    _schema,
    _text,
    contract_failures,
)
from checks.unified import COUNTRIES, CURRENCIES

XERO_SERVICE = "Xero"
UUID = r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
UUID_OR_REF = r"(?i)^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\$ref:[0-9a-z]+)$"
ID_FIELDS = {"customer": "ContactID", "invoice": "InvoiceID", "credit_note": "CreditNoteID", "product": "ItemID"}
NUMBER_FIELDS = {"invoice": "InvoiceNumber", "credit_note": "CreditNoteNumber"}
DOCUMENT_TYPES = {"invoice": "ACCREC", "credit_note": "ACCRECCREDIT"}
# Xero field limits (xero_accounting.yaml): Contact.Name 255, ContactNumber 50, Item Code 30 / Name 50
NAME_MAX, CONTACT_NUMBER_MAX, ITEM_CODE_MAX, ITEM_NAME_MAX, DESCRIPTION_MAX = 255, 50, 30, 50, 4000
LINE_SEPARATOR = "#"


def _uuid(required: bool = False, *, ref: bool = False, what: str = "a Xero id") -> pa.Column:
    return _text(_matches(UUID_OR_REF if ref else UUID, what), required=required)


def _contact(update: bool) -> pa.DataFrameSchema:
    return _schema(f"xero.contact.{'update' if update else 'create'}", {
        "ContactID": _uuid(update, what="a Xero ContactID"),
        "Name": _text(_not_blank(), _at_most(NAME_MAX), required=True),
        "ContactNumber": _text(_at_most(CONTACT_NUMBER_MAX)),
        "EmailAddress": _text(_matches(EMAIL, "an email address")),
        "Addresses.AddressType": _text(pa.Check.isin(["POBOX", "STREET"], error="is not POBOX or STREET")),
        "Addresses.Country": _text(pa.Check.isin(COUNTRIES, error="is not an ISO 3166-1 alpha-2 code")),
        "DefaultCurrency": _text(pa.Check.isin(CURRENCIES, error="is not an ISO 4217 currency")),
    })


def _document(entity: str, update: bool) -> pa.DataFrameSchema:
    return _schema(f"xero.{entity}.{'update' if update else 'create'}", {
        ID_FIELDS[entity]: _uuid(update, what=f"a Xero {ID_FIELDS[entity]}"),
        "Type": _text(pa.Check.isin(list(DOCUMENT_TYPES.values()), error="is not ACCREC or ACCRECCREDIT"),
                      required=not update),
        "Contact.ContactID": _uuid(not update, ref=True, what="a Xero ContactID"),
        NUMBER_FIELDS[entity]: _text(_not_blank(), _at_most(255)),
        "Date": _text(_matches(DATE, "a date (YYYY-MM-DD)"), required=not update),
        "DueDate": _text(_matches(DATE, "a date (YYYY-MM-DD)")),
        "LineAmountTypes": _text(pa.Check.isin(["Exclusive"], error="is not Exclusive (Sequence's amounts are "
                                                                     "net of tax)")),
        "CurrencyCode": _text(pa.Check.isin(CURRENCIES, error="is not an ISO 4217 currency"), required=not update),
        "Status": _text(pa.Check.isin(["AUTHORISED"], error="is not AUTHORISED")),
        # absent on an update that leaves the lines as they are; a create needs its lines
        "LineItems": pa.Column(pl.UInt32, nullable=update,
                               checks=pa.Check.ge(1, error="has no line (a document needs at least one)")),
    })


XERO_LINE = _schema("xero.document.line", {
    "LineItems.LineItemID": _uuid(what="a Xero LineItemID"),
    "LineItems.Description": _text(_not_blank(), _at_most(DESCRIPTION_MAX), required=True),
    "LineItems.Quantity": _number(required=True),
    "LineItems.UnitAmount": _number(required=True),
    "LineItems.ItemCode": _text(_at_most(ITEM_CODE_MAX)),
    # an AUTHORISED document books every line to an account: Xero refuses a line without one
    "LineItems.AccountCode": _text(_not_blank(), required=True),
    "LineItems.TaxType": _text(_not_blank(), required=True),
})

def _void(entity: str) -> pa.DataFrameSchema:
    return _schema(f"xero.{entity}.void", {
        ID_FIELDS[entity]: _uuid(True, what=f"a Xero {ID_FIELDS[entity]}"),
        "Status": _text(pa.Check.isin(["VOIDED", "DELETED"], error="is not VOIDED or DELETED"), required=True),
    })


def _item(update: bool) -> pa.DataFrameSchema:
    return _schema(f"xero.item.{'update' if update else 'create'}", {
        "ItemID": _uuid(update, what="a Xero ItemID"),
        "Code": _text(_not_blank(), _at_most(ITEM_CODE_MAX), required=not update),
        "Name": _text(_not_blank(), _at_most(ITEM_NAME_MAX), required=not update),
        "SalesDetails.AccountCode": _text(_not_blank(), required=True),
    })


SEQUENCE_IMPORT_XERO = _schema("sequence.customer.import.xero", {
    **{name: column for name, column in SEQUENCE_IMPORT.columns.items()
       if name not in ("idempotency_key", "tenant", "alias")},
    "alias": _text(_matches(r"(?i)^xero-[0-9a-f-]{36}$", "an alias xero-<Xero ContactID>"), required=True),
}, checks=list(SEQUENCE_IMPORT.checks))

SEQUENCE_LINK_XERO = _schema("sequence.customer.link.xero", {
    "customerId": _text(_not_blank(), required=True),
    "service": _text(pa.Check.isin([XERO_SERVICE], error=f"is not {XERO_SERVICE}"), required=True),
    "id": _uuid(True, ref=True, what="a Xero ContactID"),
})

SCHEMAS: dict[tuple[str, str, str], pa.DataFrameSchema] = {
    ("xero", "customer", "create"): _contact(False),
    ("xero", "customer", "update"): _contact(True),
    **{("xero", e, "create"): _document(e, False) for e in DOCUMENT_TYPES},
    **{("xero", e, "update"): _document(e, True) for e in DOCUMENT_TYPES},
    **{("xero", e, "void"): _void(e) for e in DOCUMENT_TYPES},
    ("xero", "product", "create_item"): _item(False),
    ("xero", "product", "update_item"): _item(True),
    ("sequence", "customer", "import"): SEQUENCE_IMPORT_XERO,
    ("sequence", "customer", "link"): SEQUENCE_LINK_XERO,
    ("sequence", "invoice", "mark_paid"): SEQUENCE_PAYMENT_STATUS,
}


# ----------------------------------------------------------------------------------------------------------
# Flattening: one column per payload path (lines apart, one row per line)
# ----------------------------------------------------------------------------------------------------------


def _flat(entity: str, operation: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif not isinstance(value, list):
            out[prefix[:-1]] = value

    walk("", {k: v for k, v in payload.items() if k not in ("LineItems", "Addresses", "integrationIds",
                                                            "contacts", "customerAliases")})
    if entity in NUMBER_FIELDS and operation != "void":
        lines = payload.get("LineItems")
        out["LineItems"] = len(lines) if isinstance(lines, list) else None
    addresses = payload.get("Addresses")
    if isinstance(addresses, list) and addresses and isinstance(addresses[0], dict):
        out |= {f"Addresses.{k}": v for k, v in addresses[0].items()}
    if isinstance(payload.get("integrationIds"), list) and payload["integrationIds"]:
        first = payload["integrationIds"][0] or {}
        out |= {"service": first.get("service"), "id": first.get("id")}
    if isinstance(payload.get("contacts"), list) and payload["contacts"]:
        first = payload["contacts"][0] or {}
        out |= {"contact.email": first.get("email"), "contact.name": first.get("name")}
    if isinstance(payload.get("customerAliases"), list) and payload["customerAliases"]:
        out["alias"] = payload["customerAliases"][0]
    return out


def _frame(schema: pa.DataFrameSchema, records: list[dict[str, Any]]) -> pl.DataFrame:
    dtypes = {name: column.dtype.type for name, column in schema.columns.items()}
    rows = []
    for record in records:
        row = {}
        for name, dtype in dtypes.items():
            value = record.get(name)
            if value is not None and dtype == pl.String:
                value = str(value) if not isinstance(value, (dict, list)) else orjson.dumps(value).decode()
            elif value is not None and dtype == pl.Float64:
                value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            row[name] = value
        rows.append(row)
    return pl.DataFrame(rows, schema=dtypes, orient="row")


# ----------------------------------------------------------------------------------------------------------
# What only other data can tell
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XeroReference:
    """What a payload's codes must resolve to, per tenant (a tenant a frame does not mention is not checked)."""

    tax_types: pl.DataFrame  # tenant, id: the organisation's active TaxTypes
    account_codes: pl.DataFrame  # tenant, id: its account codes

    @staticmethod
    def empty() -> XeroReference:
        ids = {"tenant": pl.String, "id": pl.String}
        return XeroReference(pl.DataFrame(schema=ids), pl.DataFrame(schema=ids))


def _unknown(frame: pl.DataFrame, column: str, known: pl.DataFrame, field: str, what: str) -> pl.DataFrame:
    if frame.height == 0 or column not in frame.columns:
        return pl.DataFrame(schema=FAILURES)
    covered = known.select("tenant").unique()
    bad = (frame.filter(pl.col(column).is_not_null()).join(covered, on="tenant", how="semi")
           .join(known.select("tenant", pl.col("id").alias(column)), on=["tenant", column], how="anti"))
    return bad.select("idempotency_key", pl.lit(field).alias("field"),
                      pl.format(f"{what} {{}} does not exist in Xero or is not active", pl.col(column)).alias("reason"))


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def xero_payload_failures(plan: pl.DataFrame, reference: XeroReference | None = None) -> pl.DataFrame:
    """Every problem of every payload in `plan` (its Xero rows and Sequence rows on Xero's behalf), as
    (idempotency_key, field, reason); a write with no contract, or a payload that is not JSON, is one too."""
    reference = reference or XeroReference.empty()
    if plan.height == 0:
        return pl.DataFrame(schema=FAILURES)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    lines: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for row in plan.select("idempotency_key", "tenant", "app", "entity", "operation", "payload").to_dicts():
        kind = (row["app"], row["entity"], row["operation"])
        if kind not in SCHEMAS:
            problems.append({"idempotency_key": row["idempotency_key"], "field": "operation",
                             "reason": "no payload contract for {} {} {}".format(*kind)})
            continue
        try:
            payload = orjson.loads(row["payload"])
        except orjson.JSONDecodeError as exc:
            problems.append({"idempotency_key": row["idempotency_key"], "field": "payload",
                             "reason": f"is not valid JSON: {exc}"})
            continue
        base = {"idempotency_key": row["idempotency_key"], "tenant": row["tenant"]}
        groups.setdefault(kind, []).append({**base, **_flat(row["entity"], row["operation"], payload)})
        for n, line in enumerate(payload.get("LineItems") or [], start=1):
            if isinstance(line, dict):
                lines.append({"idempotency_key": f"{row['idempotency_key']}{LINE_SEPARATOR}{n}",
                              "tenant": row["tenant"], **{f"LineItems.{k}": v for k, v in line.items()}})
    parts = [pl.DataFrame(problems, schema=FAILURES)]
    for kind, records in groups.items():
        schema = SCHEMAS[kind]
        frame = _frame(schema, records)
        parts.append(contract_failures(schema, frame))
        if kind[1] == "product":
            parts.append(_unknown(frame, "SalesDetails.AccountCode", reference.account_codes,
                                  "SalesDetails.AccountCode", "account code"))
    if lines:
        frame = _frame(XERO_LINE, lines)
        found = [contract_failures(XERO_LINE, frame),
                 _unknown(frame, "LineItems.TaxType", reference.tax_types, "LineItems.TaxType", "tax type"),
                 _unknown(frame, "LineItems.AccountCode", reference.account_codes, "LineItems.AccountCode",
                          "account code")]
        found = pl.concat([f.cast(FAILURES) for f in found], how="vertical")
        # "<key>#<n>", "LineItems.TaxType" -> "<key>", "LineItems[n].TaxType"
        split = pl.col("idempotency_key").str.split(LINE_SEPARATOR)
        parts.append(found.select(
            split.list.first().alias("idempotency_key"),
            pl.format("LineItems[{}].{}", split.list.last(), pl.col("field").str.strip_prefix("LineItems."))
            .alias("field"), "reason"))
    parts = [p.cast(FAILURES) for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema=FAILURES)
    return pl.concat(parts, how="vertical").unique(maintain_order=True)
