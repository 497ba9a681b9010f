"""raw_xero -> the unified model: contacts (the customers among them) as customers, ACCREC invoices and
ACCRECCREDIT credit notes (+ line items), payments and the document each pays, items as products, accounts,
tax rates as tax codes (Xero's TaxType is the code), and the custom fields tenants list.

Like quickbooks.py: each function builds the source frame (raw tables and helper columns named `_...`) and
mapping.FIELD_MAPS["xero"] says which column becomes which. Xero's own words are kept where the model has
room for them (app_status), and Xero's conventions are turned into the model's:
- a contact's billing address is its POBOX address (Xero's "postal address", the one invoices print), else
  its STREET address;
- CurrencyRate is units of the document's currency per unit of the organisation's base currency, so the
  model's exchange rate (home units per document unit) is its inverse;
- DRAFT and SUBMITTED documents are drafts, AUTHORISED ones open, VOIDED ones void; DELETED documents and
  payments are gone (Xero's delete) and left out;
- lines have no number: their order in LineItems is their position.
"""

from __future__ import annotations

import polars as pl

from assets.unified import mapping
from assets.unified.mapping import RawFrames, Settings, raw_table
from checks.unified import MONEY

APP = "xero"
S, D, B, I = pl.String(), MONEY, pl.Boolean(), pl.Int64()
T = pl.Datetime("us", "UTC")  # /Date(...)/ values, read as UTC instants by the extraction

_DOCUMENT = {"contact__contact_id": S, "reference": S, "date": T, "due_date": T, "status": S,
             "sub_total": D, "total_tax": D, "total": D, "currency_code": S, "currency_rate": D,
             "updated_date_utc": T}
_LINE = {"line_item_id": S, "description": S, "quantity": D, "unit_amount": D, "line_amount": D, "item_code": S,
         "item__item_id": S, "account_code": S, "tax_type": S, "_index": I}

RAW: dict[str, mapping.RawSchema] = {
    "contacts": {"contact_id": S, "name": S, "email_address": S, "default_currency": S, "tax_number": S,
                 "accounts_receivable_tax_type": S, "contact_status": S, "is_customer": B, "is_supplier": B,
                 "contact_number": S, "updated_date_utc": T},
    "contacts__addresses": {"_contacts_contact_id": S, "address_type": S, "address_line1": S, "address_line2": S,
                            "city": S, "region": S, "postal_code": S, "country": S, "_index": I},
    "invoices": {"invoice_id": S, "invoice_number": S, **_DOCUMENT, "amount_due": D, "amount_paid": D},
    "invoices__line_items": {**_LINE, "_invoices_invoice_id": S},
    "credit_notes": {"credit_note_id": S, "credit_note_number": S, **_DOCUMENT, "remaining_credit": D},
    "credit_notes__line_items": {**_LINE, "_credit_notes_credit_note_id": S},
    "payments": {"payment_id": S, "date": T, "amount": D, "reference": S, "status": S, "invoice__invoice_id": S,
                 "invoice__type": S, "invoice__contact__contact_id": S, "invoice__currency_code": S,
                 "updated_date_utc": T},
    "items": {"item_id": S, "code": S, "name": S, "is_sold": B, "sales_details__account_code": S,
              "updated_date_utc": T},
    "accounts": {"account_id": S, "code": S, "name": S, "type": S, "status": S},
    "tax_rates": {"tax_type": S, "name": S, "status": S, "effective_rate": D},
    "organisation": {"base_currency": S},
}
# unified table -> the raw tables it reads (the lineage the Dagster asset graph shows)
SOURCES: dict[str, tuple[str, ...]] = {
    "customers": ("contacts", "contacts__addresses", "organisation"),
    "invoices": ("invoices", "organisation"),
    "invoice_lines": ("invoices__line_items", "items", "tax_rates"),
    "credit_notes": ("credit_notes", "organisation"),
    "credit_note_lines": ("credit_notes__line_items", "items", "tax_rates"),
    "payments": ("payments",),
    "payment_applications": ("payments",),
    "products": ("items", "accounts"),
    "accounts": ("accounts",),
    "tax_codes": ("tax_rates",),
    "custom_fields": ("contacts", "invoices", "credit_notes", "payments", "items", "accounts", "tax_rates"),
}
# Payment.Invoice.Type -> the unified document a payment applies to
APPLIED_TO = {"ACCREC": "invoice", "ACCRECCREDIT": "credit_note"}
ENTITY_TABLES = {"customers": ("contacts", "contact_id"), "invoices": ("invoices", "invoice_id"),
                 "credit_notes": ("credit_notes", "credit_note_id"), "payments": ("payments", "payment_id"),
                 "products": ("items", "item_id"), "accounts": ("accounts", "account_id"),
                 "tax_codes": ("tax_rates", "tax_type")}


def _raw(raw: RawFrames, table: str) -> pl.LazyFrame:
    return raw_table(raw, APP, table, RAW[table])


def _tenant_settings(raw: RawFrames, settings: Settings | None) -> pl.LazyFrame:
    """Home currency (the organisation's base currency, else the settings') and the exempt / reverse-charge codes."""
    return mapping.accounting_settings(
        settings, _raw(raw, "organisation").select("tenant", pl.col("base_currency").alias("_app_home")))


def _billing_addresses(raw: RawFrames) -> pl.LazyFrame:
    """One address per contact: POBOX (what Xero prints on invoices) before STREET, ignoring empty ones."""
    order = pl.col("address_type").str.to_uppercase().replace_strict({"POBOX": 0, "STREET": 1}, default=2,
                                                                      return_dtype=pl.Int64)
    filled = pl.any_horizontal(mapping.text(pl.col(c)).is_not_null()
                               for c in ("address_line1", "city", "postal_code", "country"))
    return (_raw(raw, "contacts__addresses").filter(filled)
            .sort("tenant", "_contacts_contact_id", order, "_index")
            .group_by("tenant", "_contacts_contact_id", maintain_order=True).first()
            .select("tenant", pl.col("_contacts_contact_id").alias("contact_id"),
                    *(pl.col(c).alias(f"_address_{c}") for c in ("address_line1", "address_line2", "city", "region",
                                                                  "postal_code", "country"))))


def _customers_source(raw: RawFrames, settings: Settings | None) -> pl.LazyFrame:
    # suppliers only (never invoiced, flagged supplier) are not customers
    contacts = _raw(raw, "contacts").filter(pl.col("is_customer").fill_null(False)
                                            | ~pl.col("is_supplier").fill_null(False))
    return (contacts.join(_billing_addresses(raw), on=["tenant", "contact_id"], how="left", validate="1:1")
            .join(_tenant_settings(raw, settings), on="tenant", how="left", validate="m:1"))


def _live(frame: pl.LazyFrame) -> pl.LazyFrame:
    """DELETED is how Xero removes drafts and payments: the record is gone, so it is not in the model (a
    Sequence link to it then points at nothing, which reconciliation reports)."""
    return frame.filter((pl.col("status").str.strip_chars().str.to_uppercase() != "DELETED").fill_null(True))


def _documents_source(raw: RawFrames, table: str, settings: Settings | None) -> pl.LazyFrame:
    return _live(_raw(raw, table)).join(_tenant_settings(raw, settings), on="tenant", how="left", validate="m:1")


def _tax_rates(raw: RawFrames) -> pl.LazyFrame:
    return _raw(raw, "tax_rates").select("tenant", pl.col("tax_type"),
                                          (pl.col("effective_rate") / 100).cast(MONEY).alias("_tax_rate"))


def _lines_source(raw: RawFrames, table: str, parent_key: str) -> pl.LazyFrame:
    # a line may name its item by code only: the code finds the item's id
    codes = _raw(raw, "items").select("tenant", pl.col("code").alias("item_code"), pl.col("item_id").alias("_by_code"))
    parents = {"invoices__line_items": ("invoices", "invoice_id"),
               "credit_notes__line_items": ("credit_notes", "credit_note_id")}
    parent, key = parents[table]
    live = _live(_raw(raw, parent)).select("tenant", pl.col(key).alias(parent_key))
    return (_raw(raw, table)
            .join(live, on=["tenant", parent_key], how="semi")
            .join(codes, on=["tenant", "item_code"], how="left", validate="m:1")
            .join(_tax_rates(raw), on=["tenant", "tax_type"], how="left", validate="m:1")
            .with_columns(_document_id=pl.col(parent_key), _position=pl.col("_index") + 1,
                          _item_id=pl.coalesce("item__item_id", "_by_code")))


def _applications_source(raw: RawFrames) -> pl.LazyFrame:
    """One row per live payment: Xero's Payment pays exactly one document."""
    return (_live(_raw(raw, "payments"))
            .with_columns(_document_type=pl.col("invoice__type").str.strip_chars().str.to_uppercase()
                          .replace_strict(APPLIED_TO, default=None, return_dtype=S))
            .filter(pl.col("_document_type").is_not_null() & pl.col("invoice__invoice_id").is_not_null()))


def _products_source(raw: RawFrames) -> pl.LazyFrame:
    accounts = _raw(raw, "accounts").select("tenant", pl.col("code").alias("sales_details__account_code"),
                                             pl.col("account_id").alias("_income_account_id"))
    return _raw(raw, "items").join(accounts, on=["tenant", "sales_details__account_code"], how="left",
                                   validate="m:1")


def customers(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "customers", _customers_source(raw, settings), settings)


def invoices(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "invoices", _documents_source(raw, "invoices", settings), settings)


def invoice_lines(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "invoice_lines", _lines_source(raw, "invoices__line_items", "_invoices_invoice_id"),
                         settings)


def credit_notes(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "credit_notes", _documents_source(raw, "credit_notes", settings), settings)


def credit_note_lines(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "credit_note_lines",
                         _lines_source(raw, "credit_notes__line_items", "_credit_notes_credit_note_id"), settings)


def payments(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "payments", _live(_raw(raw, "payments")), settings)


def payment_applications(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "payment_applications", _applications_source(raw), settings)


def products(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "products", _products_source(raw), settings)


def accounts(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "accounts", _raw(raw, "accounts"), settings)


def tax_codes(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "tax_codes", _raw(raw, "tax_rates"), settings)


def custom_fields(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    """Xero has no custom fields of its own (tracking categories are not per record): the raw columns tenants
    list in their settings."""
    frames = [mapping.custom_from_settings(APP, table, _raw(raw, name).with_columns(id=pl.col(key)), settings)
              for table, (name, key) in ENTITY_TABLES.items()]
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
