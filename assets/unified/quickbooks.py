"""raw_quickbooks -> the unified model: customers, invoices (+ lines), credit memos (+ lines) as credit notes,
payments and what they pay (payment_applications), items as products, accounts, tax codes (with the rate of
their sales tax rates) and custom fields (CustomField arrays, plus what tenants list).

Each function takes the raw tables (name -> frame) and the tenants' settings and returns a LazyFrame of the
unified table (with mapping.PROBLEM_COLUMNS). This module builds the source frames; mapping.FIELD_MAPS says
which column becomes which.
"""

from __future__ import annotations

import polars as pl

from assets.unified import mapping
from assets.unified.mapping import RawFrames, Settings, raw_table
from checks.unified import MONEY

APP = "quickbooks"
S, D, B = pl.String(), MONEY, pl.Boolean()

_META = {"meta_data__create_time": S, "meta_data__last_updated_time": S}
_ADDRESS = {f"bill_addr__{part}": S for part in ("line1", "line2", "city", "country_sub_division_code",
                                                 "postal_code", "country")}
_DOCUMENT = {"id": S, "doc_number": S, "txn_date": S, "customer_ref__value": S, "bill_email__address": S,
             **_ADDRESS, "customer_memo__value": S, "currency_ref__value": S, "exchange_rate": D,
             "txn_tax_detail__total_tax": D, "total_amt": D, "balance": D, "home_total_amt": D, "private_note": S,
             "custom_field": S, **_META}
_LINE = {"id": S, "line_num": pl.Int64(), "description": S, "amount": D, "detail_type": S,
         "sales_item_line_detail__item_ref__value": S, "sales_item_line_detail__qty": D,
         "sales_item_line_detail__unit_price": D, "sales_item_line_detail__tax_code_ref__value": S}

# The raw columns each mapping reads, with their types (raw_quickbooks.<table>: dlt snake_case).
RAW: dict[str, mapping.RawSchema] = {
    "customer": {"id": S, "taxable": B, **_ADDRESS, "currency_ref__value": S, "company_name": S, "display_name": S,
                 "primary_email_addr__address": S, "default_tax_code_ref__value": S, "primary_tax_identifier": S,
                 "active": B, "custom_field": S, **_META},
    "invoice": {**_DOCUMENT, "due_date": S},
    "invoice__line": {**_LINE, "_invoice_id": S},
    "creditmemo": {**_DOCUMENT, "remaining_credit": D},
    "creditmemo__line": {**_LINE, "_creditmemo_id": S},
    "payment": {"id": S, "txn_date": S, "customer_ref__value": S, "currency_ref__value": S, "total_amt": D,
                "payment_ref_num": S, "custom_field": S, **_META},
    "payment__line": {"_payment_id": S, "amount": D, "linked_txn": S, "_index": pl.Int64()},
    "item": {"id": S, "name": S, "active": B, "type": S, "income_account_ref__value": S, "custom_field": S, **_META},
    "account": {"id": S, "name": S, "acct_num": S, "account_type": S, "active": B},
    "taxcode": {"id": S, "name": S, "active": B, "sales_tax_rate_list__tax_rate_detail": S},
    "taxrate": {"id": S, "rate_value": D},
    "preferences": {"currency_prefs__home_currency__value": S},
}

SOURCES: dict[str, tuple[str, ...]] = {
    "customers": ("customer",),
    "invoices": ("invoice", "preferences"),
    "invoice_lines": ("invoice__line", "taxcode", "taxrate"),
    "credit_notes": ("creditmemo", "preferences"),
    "credit_note_lines": ("creditmemo__line", "taxcode", "taxrate"),
    "payments": ("payment",),
    "payment_applications": ("payment__line",),
    "products": ("item",),
    "accounts": ("account",),
    "tax_codes": ("taxcode", "taxrate"),
    "custom_fields": ("customer", "invoice", "creditmemo", "payment", "item", "account", "taxcode"),
}
ENTITY_TABLES = {"customers": "customer", "invoices": "invoice", "credit_notes": "creditmemo",
                 "payments": "payment", "products": "item", "accounts": "account", "tax_codes": "taxcode"}
# Lines that are not goods or services: QuickBooks' own subtotal row (no Id, the sum of the others).
NOT_LINES = ("SubTotalLineDetail",)
# LinkedTxn types a payment applies to -> unified document type
APPLIED_TO = {"Invoice": "invoice", "CreditMemo": "credit_note"}
_CUSTOM_FIELD = pl.List(pl.Struct({"DefinitionId": S, "Name": S, "StringValue": S, "NumberValue": S,
                                   "DateValue": S, "BooleanValue": S}))


def _raw(raw: RawFrames, table: str) -> pl.LazyFrame:
    return raw_table(raw, APP, table, RAW[table])


def _tenant_settings(raw: RawFrames, settings: Settings | None) -> pl.LazyFrame:
    """Home currency (the company's preferences, else the settings') and the exempt / reverse-charge codes."""
    return mapping.accounting_settings(
        settings, _raw(raw, "preferences").select(
            "tenant", pl.col("currency_prefs__home_currency__value").alias("_app_home")))


def _with_settings(frame: pl.LazyFrame, raw: RawFrames, settings: Settings | None) -> pl.LazyFrame:
    return frame.join(_tenant_settings(raw, settings), on="tenant", how="left", validate="m:1")


def _tax_code_rates(raw: RawFrames) -> pl.LazyFrame:
    """(tenant, tax code id) -> rate as a fraction: the sum of the code's sales tax rates (RateValue is a
    percentage); null when the code names no rate (US TAX/NON)."""
    detail = pl.List(pl.Struct({"TaxRateRef": pl.Struct({"value": S})}))
    refs = (_raw(raw, "taxcode")
            .select("tenant", "id", _rate_id=pl.col("sales_tax_rate_list__tax_rate_detail").str.json_decode(detail))
            .explode("_rate_id")
            .with_columns(pl.col("_rate_id").struct.field("TaxRateRef").struct.field("value").alias("_rate_id")))
    rates = _raw(raw, "taxrate").select("tenant", pl.col("id").alias("_rate_id"),
                                         (pl.col("rate_value") / 100).cast(MONEY).alias("_fraction"))
    return (refs.join(rates, on=["tenant", "_rate_id"], how="left", validate="m:1")
            .group_by("tenant", "id")
            .agg(pl.when(pl.col("_fraction").count() > 0).then(pl.col("_fraction").sum()).alias("_rate")))


def _tax_codes_source(raw: RawFrames) -> pl.LazyFrame:
    return _raw(raw, "taxcode").join(_tax_code_rates(raw), on=["tenant", "id"], how="left", validate="1:1")


def _lines_source(raw: RawFrames, table: str, parent_key: str) -> pl.LazyFrame:
    rates = _tax_code_rates(raw).select("tenant", pl.col("id").alias("sales_item_line_detail__tax_code_ref__value"),
                                        "_rate")
    return (_raw(raw, table)
            .filter(~pl.col("detail_type").is_in(NOT_LINES).fill_null(False))
            .join(rates, on=["tenant", "sales_item_line_detail__tax_code_ref__value"], how="left", validate="m:1")
            .rename({"_rate": "_tax_rate"})
            .with_columns(_document_id=pl.col(parent_key)))


def _applications_source(raw: RawFrames) -> pl.LazyFrame:
    """One row per (payment, document) it pays. A line's Amount applies to its one LinkedTxn; a line linking
    several documents does not say how it splits, so its amount stays null."""
    linked = pl.List(pl.Struct({"TxnId": S, "TxnType": S}))
    rows = (_raw(raw, "payment__line")
            .with_columns(_linked=pl.col("linked_txn").str.json_decode(linked))
            .with_columns(_shares=pl.col("_linked").list.len())
            .explode("_linked")
            .with_columns(_document_type=pl.col("_linked").struct.field("TxnType").str.strip_chars()
                          .replace_strict(APPLIED_TO, default=None, return_dtype=S),
                          _document_id=pl.col("_linked").struct.field("TxnId").str.strip_chars(),
                          amount=pl.when(pl.col("_shares") == 1).then(pl.col("amount")))
            .filter(pl.col("_document_type").is_not_null() & pl.col("_document_id").is_not_null()))
    # two lines of one payment paying the same document are one application
    return (rows.group_by("tenant", "_payment_id", "_document_type", "_document_id", maintain_order=True)
            .agg(pl.when(pl.col("amount").null_count() == 0).then(pl.col("amount").sum()).alias("amount")))


def customers(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "customers", _with_settings(_raw(raw, "customer"), raw, settings), settings)


def invoices(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "invoices", _with_settings(_raw(raw, "invoice"), raw, settings), settings)


def invoice_lines(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "invoice_lines", _lines_source(raw, "invoice__line", "_invoice_id"), settings)


def credit_notes(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "credit_notes", _with_settings(_raw(raw, "creditmemo"), raw, settings), settings)


def credit_note_lines(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "credit_note_lines", _lines_source(raw, "creditmemo__line", "_creditmemo_id"),
                         settings)


def payments(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "payments", _raw(raw, "payment"), settings)


def payment_applications(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "payment_applications", _applications_source(raw), settings)


def products(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    """QuickBooks items."""
    return mapping.apply(APP, "products", _raw(raw, "item"), settings)


def accounts(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "accounts", _raw(raw, "account"), settings)


def tax_codes(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "tax_codes", _tax_codes_source(raw), settings)


def _custom_field_arrays(raw: RawFrames, table: str, raw_name: str) -> pl.LazyFrame:
    """An entity's CustomField array (JSON text) -> one row per named field with a value."""
    fields = (_raw(raw, raw_name)
              .select("tenant", "id", _field=pl.col("custom_field").str.json_decode(_CUSTOM_FIELD))
              .explode("_field")
              .filter(pl.col("_field").is_not_null())
              .select("tenant", "id",
                      field=pl.coalesce(mapping.text(pl.col("_field").struct.field("Name")),
                                        mapping.text(pl.col("_field").struct.field("DefinitionId"))),
                      value=pl.coalesce(*(pl.col("_field").struct.field(f"{kind}Value")
                                          for kind in ("String", "Number", "Date", "Boolean"))))
              .filter(pl.col("field").is_not_null()))
    return mapping.custom_rows(fields, APP, mapping.ENTITIES[table])


def custom_fields(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    """CustomField arrays of every entity that has them (no configuration needed) and the raw columns tenants
    list."""
    frames = [_custom_field_arrays(raw, table, raw_name) for table, raw_name in ENTITY_TABLES.items()
              if "custom_field" in RAW[raw_name]]
    for table, raw_name in ENTITY_TABLES.items():
        frames.append(mapping.custom_from_settings(APP, table, _raw(raw, raw_name), settings))
    return mapping.with_problems(mapping.unique_custom_fields(frames))


TABLES = {
    "customers": customers,
    "invoices": invoices,
    "invoice_lines": invoice_lines,
    "credit_notes": credit_notes,
    "credit_note_lines": credit_note_lines,
    "payments": payments,
    "payment_applications": payment_applications,
    "products": products,
    "accounts": accounts,
    "tax_codes": tax_codes,
    "custom_fields": custom_fields,
}
