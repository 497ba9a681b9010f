"""Contracts of every write payload Ledgerlink sends, as Pandera (polars) schemas over flattened payload frames.

A write-back plan is a frame with one row per intended write (`tenant`, `app`, `entity`, `operation`,
`idempotency_key`, `payload` as JSON text). `payload_failures(plan, reference)` decodes the payloads of each kind
into flat frames (one column per payload path: "BillAddr.PostalCode", "Line.SalesItemLineDetail.Qty"), validates
them with the contract of their kind, checks what only other data can tell (does the tax code exist in that
QuickBooks company, is the item active, is the currency the customer's), and returns one row per problem:
(idempotency_key, field, reason). An invalid payload is never sent; the plan marks it `skipped` with that reason.

Payload shapes (what is sent; ids of records a dependency creates first are "$ref:<idempotency key>" until the
dependency is confirmed):
  quickbooks customer  create|update  Customer: DisplayName, CompanyName, PrimaryEmailAddr, BillAddr, CurrencyRef
                                      (+ Id, SyncToken, sparse on update)
  quickbooks invoice / credit_note  create|update|set_email  Invoice / CreditMemo: CustomerRef, BillEmail,
                                      BillAddr, TxnDate, DueDate, DocNumber, CustomerMemo, CurrencyRef,
                                      ExchangeRate, Line[SalesItemLineDetail]
  quickbooks invoice  void            {Id, SyncToken}
  quickbooks product  create_item|update_item  Item: Name, Type, IncomeAccountRef (+ Id, SyncToken, sparse)
  sequence customer  import           CreateOrUpdateCustomerRequest + customerAliases ["qb-<id>"], integrationIds
  sequence customer  link             {customerId, integrationIds: [{service, id}]}: ids to store on the customer
  sequence invoice  mark_paid         {invoiceId, paymentStatus: "PAID"}
  quickbooks invoice / credit_note  link  {sequenceId, appId}: recorded by Ledgerlink, nothing is sent

This module imports nothing of the project outside checks/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandera.errors
import pandera.polars as pa
import polars as pl

from checks.unified import COUNTRIES, CURRENCIES, TAX_STATUSES

FAILURES: dict[str, pl.DataType] = {"idempotency_key": pl.String(), "field": pl.String(), "reason": pl.String()}

QBO_ID = r"^[0-9]+$"
REF = r"^\$ref:[0-9a-z]+$"  # an id a dependency creates first
QBO_ID_OR_REF = r"^([0-9]+|\$ref:[0-9a-z]+)$"
US_TAX_LITERALS = ("TAX", "NON")
EMAIL = (r"(?i)^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
         r"@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")
DATE = r"^\d{4}-\d{2}-\d{2}$"
QBO_SERVICE = "QuickBooks_Online"
PAYMENT_STATUSES = ("UNPAID", "PARTIALLY_PAID", "PAID", "UNCOLLECTIBLE")
# QuickBooks limits (Intuit field definitions): names without ':' (it separates sub-customers and sub-items).
DISPLAY_NAME_MAX, ITEM_NAME_MAX, DOC_NUMBER_MAX, MEMO_MAX, DESCRIPTION_MAX = 500, 100, 21, 1000, 4000


# ----------------------------------------------------------------------------------------------------------
# Checks with readable reasons
# ----------------------------------------------------------------------------------------------------------


def _matches(pattern: str, what: str) -> pa.Check:
    return pa.Check.str_matches(pattern, error=f"is not {what}")


def _at_most(n: int) -> pa.Check:
    return pa.Check.str_length(max_value=n, error=f"is longer than {n} characters")


def _not_blank() -> pa.Check:
    return pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).str.strip_chars() != ""), error="is empty")


def _no_colon() -> pa.Check:
    return pa.Check(lambda d: d.lazyframe.select(~pl.col(d.key).str.contains(":", literal=True)),
                    error="contains ':' (QuickBooks reserves it for sub-records)")


def _text(*checks: pa.Check, required: bool = False) -> pa.Column:
    return pa.Column(pl.String, nullable=not required, checks=list(checks))


def _number(*checks: pa.Check, required: bool = False) -> pa.Column:
    return pa.Column(pl.Float64, nullable=not required, checks=list(checks))


def _schema(name: str, columns: dict[str, pa.Column], checks: list[pa.Check] | None = None) -> pa.DataFrameSchema:
    base = {"idempotency_key": pa.Column(pl.String), "tenant": pa.Column(pl.String)}
    return pa.DataFrameSchema({**base, **columns}, checks=checks or [], strict=False, name=f"payload.{name}")


# ----------------------------------------------------------------------------------------------------------
# QuickBooks
# ----------------------------------------------------------------------------------------------------------

_ADDRESS_PARTS = ("Line1", "Line2", "City", "CountrySubDivisionCode", "PostalCode", "Country")


def _qbo_address(prefix: str = "BillAddr") -> dict[str, pa.Column]:
    return {f"{prefix}.{part}": _text(_at_most(500)) for part in _ADDRESS_PARTS[:-1]} | {
        f"{prefix}.Country": _text(pa.Check.isin(COUNTRIES, error="is not an ISO 3166-1 alpha-2 code"))}


def _version(update: bool) -> dict[str, pa.Column]:
    return {"Id": _text(_matches(QBO_ID, "a QuickBooks id"), required=update),
            "SyncToken": _text(_matches(QBO_ID, "a SyncToken"), required=update)}


def _qbo_customer(update: bool) -> pa.DataFrameSchema:
    return _schema(f"quickbooks.customer.{'update' if update else 'create'}", {
        **_version(update),
        "DisplayName": _text(_not_blank(), _no_colon(), _at_most(DISPLAY_NAME_MAX), required=True),
        "CompanyName": _text(_at_most(100)),
        "PrimaryEmailAddr.Address": _text(_matches(EMAIL, "an email address")),
        **_qbo_address(),
        "CurrencyRef.value": _text(pa.Check.isin(CURRENCIES, error="is not an ISO 4217 currency")),
    })


def _qbo_document(kind: str) -> pa.DataFrameSchema:
    """kind: create (everything the seed's field table needs), update (sparse, all managed fields), set_email."""
    create, email_only = kind == "create", kind == "set_email"
    return _schema(f"quickbooks.document.{kind}", {
        **_version(not create),
        "CustomerRef.value": _text(_matches(QBO_ID_OR_REF, "a QuickBooks customer id"), required=not email_only),
        "BillEmail.Address": _text(_matches(EMAIL, "an email address"), required=email_only),
        **_qbo_address(),
        "TxnDate": _text(_matches(DATE, "a date (YYYY-MM-DD)"), required=not email_only),
        "DueDate": _text(_matches(DATE, "a date (YYYY-MM-DD)")),
        "DocNumber": _text(_at_most(DOC_NUMBER_MAX)),
        "CustomerMemo.value": _text(_at_most(MEMO_MAX)),
        "CurrencyRef.value": _text(pa.Check.isin(CURRENCIES, error="is not an ISO 4217 currency"), required=create),
        "ExchangeRate": _number(pa.Check.gt(0, error="is not a positive rate")),
        # A sparse update sends Line only when a line differs (absent: the lines stay as they are, null here);
        # Line sent empty would delete every line, and a create needs its lines.
        "Line": pa.Column(pl.UInt32, nullable=not create,
                          checks=pa.Check.ge(0 if email_only else 1, error="has no line (a document needs at least "
                                                                          "one)")),
    })


QBO_LINE = _schema("quickbooks.document.line", {
    "line": pa.Column(pl.Int64),
    "Line.DetailType": _text(pa.Check.isin(["SalesItemLineDetail"], error="is not SalesItemLineDetail"),
                             required=True),
    "Line.Id": _text(_matches(QBO_ID, "a QuickBooks line id")),
    "Line.Description": _text(_at_most(DESCRIPTION_MAX)),
    "Line.Amount": _number(required=True),
    "Line.SalesItemLineDetail.ItemRef.value": _text(_matches(QBO_ID_OR_REF, "a QuickBooks item id"), required=True),
    "Line.SalesItemLineDetail.Qty": _number(required=True),
    "Line.SalesItemLineDetail.UnitPrice": _number(required=True),
    "Line.SalesItemLineDetail.TaxCodeRef.value": _text(_matches(r"^([0-9]+|TAX|NON)$", "a QuickBooks tax code")),
}, checks=[pa.Check(
    # QuickBooks refuses a line whose Amount is not UnitPrice x Qty at cents (Fault 6070)
    lambda d: d.lazyframe.select(
        ((pl.col("Line.SalesItemLineDetail.Qty") * pl.col("Line.SalesItemLineDetail.UnitPrice")).round(2)
         - pl.col("Line.Amount")).abs() < 0.005),
    error="Line.Amount: is not UnitPrice x Qty at cents (QuickBooks refuses it, 6070)")])


def _qbo_item(update: bool) -> pa.DataFrameSchema:
    return _schema(f"quickbooks.item.{'update' if update else 'create'}", {
        **_version(update),
        "Name": _text(_not_blank(), _no_colon(), _at_most(ITEM_NAME_MAX), required=not update),
        "Type": _text(pa.Check.isin(["Service", "NonInventory"], error="is not Service or NonInventory")),
        "IncomeAccountRef.value": _text(_matches(QBO_ID, "a QuickBooks account id"), required=True),
    })


QBO_VOID = _schema("quickbooks.void", _version(True))


# ----------------------------------------------------------------------------------------------------------
# Sequence
# ----------------------------------------------------------------------------------------------------------

SEQUENCE_IMPORT = _schema("sequence.customer.import", {
    "legalName": _text(_not_blank(), required=True),
    "address.line1": _text(_not_blank(), required=True),
    "address.line2": _text(),
    "address.town": _text(_not_blank(), required=True),
    "address.state": _text(),
    "address.postcode": _text(_not_blank(), required=True),
    "address.country": _text(pa.Check.isin(COUNTRIES, error="is not an ISO 3166-1 alpha-2 code"), required=True),
    "taxStatus": _text(pa.Check.isin(TAX_STATUSES, error="is not TAXED, TAX_EXEMPT or REVERSE_CHARGED"),
                       required=True),
    "contact.email": _text(_matches(EMAIL, "an email address"), required=True),
    "contact.name": _text(_not_blank(), required=True),
    "alias": _text(_matches(r"^qb-[0-9]+$", "an alias qb-<QuickBooks id>"), required=True),
}, checks=[pa.Check(
    # Sequence requires a state for addresses in the United States and Canada
    lambda d: d.lazyframe.select(~pl.col("address.country").is_in(["US", "CA"]).fill_null(False)
                                 | pl.col("address.state").is_not_null()),
    error="address.state: is missing (Sequence requires it for US and CA addresses)")])

SEQUENCE_LINK = _schema("sequence.customer.link", {
    "customerId": _text(_not_blank(), required=True),
    "service": _text(pa.Check.isin([QBO_SERVICE], error=f"is not {QBO_SERVICE}"), required=True),
    "id": _text(_matches(QBO_ID_OR_REF, "a QuickBooks customer id"), required=True),
})

SEQUENCE_PAYMENT_STATUS = _schema("sequence.invoice.mark_paid", {
    "invoiceId": _text(_not_blank(), required=True),
    "paymentStatus": _text(pa.Check.isin(["PAID"], error="is not PAID"), required=True),
})

LOCAL_LINK = _schema("local.link", {
    "sequenceId": _text(_not_blank(), required=True),
    "appId": _text(_matches(QBO_ID, "a QuickBooks id"), required=True),
})


# ----------------------------------------------------------------------------------------------------------
# Payload kinds: which rows, how they are flattened, which contract holds
# ----------------------------------------------------------------------------------------------------------


def _struct(**fields: pl.DataType) -> pl.Struct:
    return pl.Struct(fields)


_REF = _struct(value=pl.String)
_ADDRESS = _struct(**{part: pl.String for part in _ADDRESS_PARTS})
_LINE = _struct(Id=pl.String, DetailType=pl.String, Amount=pl.Float64, Description=pl.String,
                SalesItemLineDetail=_struct(ItemRef=_REF, Qty=pl.Float64, UnitPrice=pl.Float64, TaxCodeRef=_REF))
_SEQ_ADDRESS = _struct(line1=pl.String, line2=pl.String, town=pl.String, state=pl.String, postcode=pl.String,
                       country=pl.String)
_IDS = pl.List(_struct(service=pl.String, id=pl.String))

DTYPES: dict[str, pl.Struct] = {
    "quickbooks.customer": _struct(Id=pl.String, SyncToken=pl.String, DisplayName=pl.String, CompanyName=pl.String,
                                   PrimaryEmailAddr=_struct(Address=pl.String), BillAddr=_ADDRESS, CurrencyRef=_REF),
    "quickbooks.document": _struct(Id=pl.String, SyncToken=pl.String, CustomerRef=_REF,
                                   BillEmail=_struct(Address=pl.String), BillAddr=_ADDRESS, TxnDate=pl.String,
                                   DueDate=pl.String, DocNumber=pl.String, CustomerMemo=_REF, CurrencyRef=_REF,
                                   ExchangeRate=pl.Float64, Line=pl.List(_LINE)),
    "quickbooks.item": _struct(Id=pl.String, SyncToken=pl.String, Name=pl.String, Type=pl.String,
                               IncomeAccountRef=_REF),
    "quickbooks.void": _struct(Id=pl.String, SyncToken=pl.String),
    "sequence.import": _struct(legalName=pl.String, address=_SEQ_ADDRESS, taxStatus=pl.String,
                               contacts=pl.List(_struct(name=pl.String, email=pl.String,
                                                        billingPreference=pl.String)),
                               customerAliases=pl.List(pl.String), integrationIds=_IDS),
    "sequence.link": _struct(customerId=pl.String, integrationIds=_IDS),
    "sequence.mark_paid": _struct(invoiceId=pl.String, paymentStatus=pl.String),
    "local.link": _struct(sequenceId=pl.String, appId=pl.String),
}


def kind_of(app: pl.Expr, entity: pl.Expr, operation: pl.Expr) -> pl.Expr:
    """The payload kind of a plan row (null: a write this module does not know, which is refused)."""
    qbo, seq = app == "quickbooks", app == "sequence"
    document = entity.is_in(["invoice", "credit_note"])
    kinds = [
        (qbo & (entity == "customer") & operation.is_in(["create", "update"]), "quickbooks.customer"),
        (qbo & document & operation.is_in(["create", "update", "set_email"]), "quickbooks.document"),
        (qbo & (entity == "invoice") & (operation == "void"), "quickbooks.void"),
        (qbo & (entity == "product") & operation.is_in(["create_item", "update_item"]), "quickbooks.item"),
        (qbo & document & (operation == "link"), "local.link"),
        (seq & (entity == "customer") & (operation == "import"), "sequence.import"),
        (seq & (entity == "customer") & (operation == "link"), "sequence.link"),
        (seq & (entity == "invoice") & (operation == "mark_paid"), "sequence.mark_paid"),
    ]
    expr = pl.when(kinds[0][0]).then(pl.lit(kinds[0][1]))
    for condition, kind in kinds[1:]:
        expr = expr.when(condition).then(pl.lit(kind))
    return expr.otherwise(pl.lit(None, pl.String))


def _flat(frame: pl.DataFrame, paths: list[str], root: str = "_p") -> pl.DataFrame:
    """One column per dotted path into the decoded struct column `root`."""

    def at(path: str) -> pl.Expr:
        expr = pl.col(root)
        for part in path.split("."):
            expr = expr.struct.field(part)
        return expr.alias(path)

    return frame.select("idempotency_key", "tenant", "operation", *(at(p) for p in paths))


_DOCUMENT_PATHS = ["Id", "SyncToken", "CustomerRef.value", "BillEmail.Address",
                   *(f"BillAddr.{p}" for p in _ADDRESS_PARTS), "TxnDate", "DueDate", "DocNumber",
                   "CustomerMemo.value", "CurrencyRef.value", "ExchangeRate"]
_LINE_PATHS = ["Id", "DetailType", "Amount", "Description", "SalesItemLineDetail.ItemRef.value",
               "SalesItemLineDetail.Qty", "SalesItemLineDetail.UnitPrice", "SalesItemLineDetail.TaxCodeRef.value"]


@dataclass(frozen=True)
class Decoded:
    """The flat frames of one payload kind and the contract each is validated with (by operation)."""

    frames: list[tuple[pa.DataFrameSchema, pl.DataFrame]] = field(default_factory=list)


def _by_operation(frame: pl.DataFrame, schemas: dict[str, pa.DataFrameSchema]) -> Decoded:
    return Decoded([(schema, frame.filter(pl.col("operation").is_in(ops.split("|"))))
                    for ops, schema in schemas.items()])


def _decode_customer(rows: pl.DataFrame) -> Decoded:
    flat = _flat(rows, ["Id", "SyncToken", "DisplayName", "CompanyName", "PrimaryEmailAddr.Address",
                        *(f"BillAddr.{p}" for p in _ADDRESS_PARTS), "CurrencyRef.value"])
    return _by_operation(flat, {"create": _qbo_customer(False), "update": _qbo_customer(True)})


def _decode_document(rows: pl.DataFrame) -> Decoded:
    # the header's "Line" is how many lines it has (the lines themselves are validated one by one)
    head = _flat(rows, _DOCUMENT_PATHS).with_columns(
        pl.when(rows["_p"].struct.field("Line").is_not_null() | (rows["operation"] == "create"))
        .then(rows["_p"].struct.field("Line").list.len().fill_null(0).cast(pl.UInt32)).alias("Line"))
    lines = (rows.select("idempotency_key", "tenant", "operation", pl.col("_p").struct.field("Line").alias("_line"))
             .explode("_line").filter(pl.col("_line").is_not_null())
             .with_columns(line=pl.int_range(pl.len()).over("idempotency_key").cast(pl.Int64))
             .rename({"_line": "_p"}))
    flat_lines = _flat(lines, _LINE_PATHS).with_columns(lines["line"]).rename(
        {p: f"Line.{p}" for p in _LINE_PATHS})
    decoded = _by_operation(head, {"create": _qbo_document("create"), "update": _qbo_document("update"),
                                   "set_email": _qbo_document("set_email")})
    decoded.frames.append((QBO_LINE, flat_lines))
    return decoded


def _decode_item(rows: pl.DataFrame) -> Decoded:
    flat = _flat(rows, ["Id", "SyncToken", "Name", "Type", "IncomeAccountRef.value"])
    return _by_operation(flat, {"create_item": _qbo_item(False), "update_item": _qbo_item(True)})


def _decode_import(rows: pl.DataFrame) -> Decoded:
    flat = _flat(rows, ["legalName", *(f"address.{p}" for p in ("line1", "line2", "town", "state", "postcode",
                                                                  "country")), "taxStatus"])
    primary = rows["_p"].struct.field("contacts").list.first()
    flat = flat.with_columns(primary.struct.field("email").alias("contact.email"),
                             primary.struct.field("name").alias("contact.name"),
                             rows["_p"].struct.field("customerAliases").list.first().alias("alias"))
    return Decoded([(SEQUENCE_IMPORT, flat)])


def _decode_link(rows: pl.DataFrame) -> Decoded:
    first = rows["_p"].struct.field("integrationIds").list.first()
    flat = _flat(rows, ["customerId"]).with_columns(first.struct.field("service").alias("service"),
                                                    first.struct.field("id").alias("id"))
    return Decoded([(SEQUENCE_LINK, flat)])


DECODERS: dict[str, Callable[[pl.DataFrame], Decoded]] = {
    "quickbooks.customer": _decode_customer,
    "quickbooks.document": _decode_document,
    "quickbooks.item": _decode_item,
    "quickbooks.void": lambda rows: Decoded([(QBO_VOID, _flat(rows, ["Id", "SyncToken"]))]),
    "sequence.import": _decode_import,
    "sequence.link": _decode_link,
    "sequence.mark_paid": lambda rows: Decoded([(SEQUENCE_PAYMENT_STATUS,
                                                 _flat(rows, ["invoiceId", "paymentStatus"]))]),
    "local.link": lambda rows: Decoded([(LOCAL_LINK, _flat(rows, ["sequenceId", "appId"]))]),
}


# ----------------------------------------------------------------------------------------------------------
# What only other data can tell
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """What a payload's ids must resolve to, per tenant. Every frame has `tenant`; empty frames check nothing
    (a tenant the frame does not mention is not checked)."""

    tax_codes: pl.DataFrame  # tenant, id: active QuickBooks tax codes
    items: pl.DataFrame  # tenant, id: active QuickBooks items
    accounts: pl.DataFrame  # tenant, id: QuickBooks accounts
    customers: pl.DataFrame  # tenant, id, currency: QuickBooks customers
    companies: pl.DataFrame  # tenant, home_currency, multi_currency, us_sales_tax

    @staticmethod
    def empty() -> Reference:
        ids = {"tenant": pl.String, "id": pl.String}
        return Reference(pl.DataFrame(schema=ids), pl.DataFrame(schema=ids), pl.DataFrame(schema=ids),
                         pl.DataFrame(schema={**ids, "currency": pl.String}),
                         pl.DataFrame(schema={"tenant": pl.String, "home_currency": pl.String,
                                              "multi_currency": pl.Boolean, "us_sales_tax": pl.Boolean}))


def _unknown(frame: pl.DataFrame, column: str, known: pl.DataFrame, *, field: str, what: str) -> pl.DataFrame:
    """Rows whose `column` (a QuickBooks id, not a $ref) is not among `known` ids of a tenant `known` covers."""
    if frame.height == 0:
        return pl.DataFrame(schema=FAILURES)
    covered = known.select("tenant").unique()
    ids = known.select("tenant", pl.col("id").alias(column))
    bad = (frame.filter(pl.col(column).is_not_null() & ~pl.col(column).str.starts_with("$ref:"))
           .join(covered, on="tenant", how="semi").join(ids, on=["tenant", column], how="anti"))
    return bad.select("idempotency_key", pl.lit(field).alias("field") if "line" not in bad.columns else
                      pl.format(field, pl.col("line")).alias("field"),
                      pl.format(f"{what} {{}} does not exist in QuickBooks or is inactive", pl.col(column))
                      .alias("reason"))


def reference_failures(kind: str, decoded: Decoded, reference: Reference) -> pl.DataFrame:
    parts = []
    frames = [f for _, f in decoded.frames]
    if kind == "quickbooks.document":
        head = pl.concat([f for f in frames if "CustomerRef.value" in f.columns], how="vertical_relaxed")
        lines = next(f for f in frames if "line" in f.columns)
        codes = lines.join(reference.companies.select("tenant", "us_sales_tax"), on="tenant", how="left")
        us = codes.filter(pl.col("us_sales_tax").fill_null(False))
        parts.append(us.filter(~pl.col("Line.SalesItemLineDetail.TaxCodeRef.value").is_in(US_TAX_LITERALS))
                     .select("idempotency_key", pl.format("Line[{}].SalesItemLineDetail.TaxCodeRef", "line")
                             .alias("field"),
                             pl.format("tax code {} is not TAX or NON (the company uses US automated sales tax)",
                                       pl.col("Line.SalesItemLineDetail.TaxCodeRef.value")).alias("reason")))
        others = codes.filter(~pl.col("us_sales_tax").fill_null(False))
        parts.append(_unknown(others, "Line.SalesItemLineDetail.TaxCodeRef.value", reference.tax_codes,
                              field="Line[{}].SalesItemLineDetail.TaxCodeRef", what="tax code"))
        parts.append(_unknown(lines, "Line.SalesItemLineDetail.ItemRef.value", reference.items,
                              field="Line[{}].SalesItemLineDetail.ItemRef", what="item"))
        parts.append(_unknown(head, "CustomerRef.value", reference.customers.select("tenant", "id"),
                              field="CustomerRef", what="customer"))
        # the currency must be the customer's, and the home currency when multi-currency is off
        currency = (head.filter(pl.col("CurrencyRef.value").is_not_null())
                    .join(reference.customers.rename({"id": "CustomerRef.value", "currency": "_customer"}),
                          on=["tenant", "CustomerRef.value"], how="left")
                    .join(reference.companies, on="tenant", how="left"))
        parts.append(currency.filter(pl.col("_customer").is_not_null()
                                     & (pl.col("_customer") != pl.col("CurrencyRef.value")))
                     .select("idempotency_key", pl.lit("CurrencyRef").alias("field"),
                             pl.format("currency {} is not the QuickBooks customer's currency {}",
                                       pl.col("CurrencyRef.value"), pl.col("_customer")).alias("reason")))
        parts.append(currency.filter(~pl.col("multi_currency").fill_null(True)
                                     & (pl.col("home_currency") != pl.col("CurrencyRef.value")))
                     .select("idempotency_key", pl.lit("CurrencyRef").alias("field"),
                             pl.format("currency {} is not the home currency {} and multi-currency is off",
                                       pl.col("CurrencyRef.value"), pl.col("home_currency")).alias("reason")))
    elif kind == "quickbooks.item":
        for frame in frames:
            parts.append(_unknown(frame, "IncomeAccountRef.value", reference.accounts, field="IncomeAccountRef",
                                  what="account"))
    elif kind == "quickbooks.customer":
        for frame in frames:
            currency = frame.join(reference.companies, on="tenant", how="left")
            parts.append(currency.filter(~pl.col("multi_currency").fill_null(True)
                                         & pl.col("CurrencyRef.value").is_not_null()
                                         & (pl.col("home_currency") != pl.col("CurrencyRef.value")))
                         .select("idempotency_key", pl.lit("CurrencyRef").alias("field"),
                                 pl.format("currency {} is not the home currency {} and multi-currency is off",
                                           pl.col("CurrencyRef.value"), pl.col("home_currency")).alias("reason")))
    parts = [p.select(list(FAILURES)).cast(FAILURES) for p in parts if p.height]
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=FAILURES)


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def contract_failures(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame:
    """Rows of a flat payload frame that break `schema`, as (idempotency_key, field, reason)."""
    if frame.height == 0:
        return pl.DataFrame(schema=FAILURES)
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pl.DataFrame(schema=FAILURES)
    structural = cases.filter(pl.col("index").is_null())
    if structural.height:  # a payload builder that does not produce the contract is a bug, not bad data
        raise ValueError(f"{schema.name}: payloads do not have the contract's shape: "
                         + "; ".join(f"{c}: {k}" for c, k in structural.select("column", "check").iter_rows()))
    line = pl.col("line") if "line" in frame.columns else pl.lit(None, pl.Int64)
    rows = frame.with_row_index("_row").select("_row", "idempotency_key", line.alias("_line"))
    # a frame-level check names its field first: "address.state: is missing ..."
    frame_level = ((pl.col("schema_context") == "DataFrameSchema")
                   & pl.col("check").str.contains(": ", literal=True))
    cases = cases.with_columns(
        column=pl.when(frame_level).then(pl.col("check").str.split_exact(": ", 1).struct.field("field_0"))
        .otherwise("column"),
        check=pl.when(frame_level).then(pl.col("check").str.splitn(": ", 2).struct.field("field_1"))
        .otherwise("check"))
    column = pl.col("column")
    # a line's fields are named with the line's position: Line[2].SalesItemLineDetail.Qty
    field_name = (pl.when(column.str.starts_with("Line.") & pl.col("_line").is_not_null())
                  .then(pl.format("Line[{}].{}", pl.col("_line"), column.str.strip_prefix("Line.")))
                  .otherwise(column))
    shown = pl.coalesce(pl.format("'{}'", pl.col("failure_case").str.slice(0, 80)), pl.lit("null"))
    check = pl.col("check")
    reason = (pl.when(check == "not_nullable").then(pl.lit("is missing"))
              .when(column.is_null() | (column == "Line") | pl.col("failure_case").str.starts_with("{")).then(check)
              .otherwise(pl.format("{} {}", shown, check)))
    out = (cases.with_columns(pl.col("index").cast(pl.UInt32))
           .join(rows, left_on="index", right_on="_row", how="left")
           .select("idempotency_key",
                   pl.when(column.is_null()).then(pl.lit("payload")).otherwise(field_name).alias("field"),
                   reason.alias("reason")))
    return out.cast(FAILURES)


def payload_failures(plan: pl.DataFrame, reference: Reference | None = None) -> pl.DataFrame:
    """Every problem of every payload in `plan` (columns tenant, app, entity, operation, idempotency_key,
    payload): (idempotency_key, field, reason), one row per problem; a payload of no known kind, or whose JSON
    does not parse, is one problem too."""
    reference = reference or Reference.empty()
    if plan.height == 0:
        return pl.DataFrame(schema=FAILURES)
    typed = plan.with_columns(_kind=kind_of(pl.col("app"), pl.col("entity"), pl.col("operation")))
    parts = [typed.filter(pl.col("_kind").is_null()).select(
        "idempotency_key", pl.lit("operation").alias("field"),
        pl.format("no payload contract for {} {} {}", "app", "entity", "operation").alias("reason"))]
    for kind, rows in typed.filter(pl.col("_kind").is_not_null()).partition_by("_kind", as_dict=True).items():
        kind = kind[0]
        try:
            decoded_rows = rows.with_columns(pl.col("payload").str.json_decode(DTYPES[kind]).alias("_p"))
        except pl.exceptions.ComputeError as exc:
            parts.append(rows.select("idempotency_key", pl.lit("payload").alias("field"),
                                     pl.lit(f"is not valid JSON: {exc}").alias("reason")))
            continue
        decoded = DECODERS[kind](decoded_rows)
        parts += [contract_failures(schema, frame) for schema, frame in decoded.frames]
        parts.append(reference_failures(kind, decoded, reference))
    parts = [p.cast(FAILURES) for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema=FAILURES)
    return pl.concat(parts, how="vertical").unique(maintain_order=True)


def describe(failures: pl.DataFrame) -> pl.DataFrame:
    """(idempotency_key, error): a key's problems as one sentence, "field: reason; field: reason"."""
    return (failures.group_by("idempotency_key", maintain_order=True)
            .agg(pl.format("{}: {}", "field", "reason").str.join("; ").alias("error")))
