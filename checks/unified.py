"""The unified model: one table per entity across apps, as Pandera (polars) contracts. This module is the
single definition of the model; the per-app mappings (assets/unified) produce it and everything downstream
reads it. It imports nothing of the project.

Conventions every table follows:
- `tenant`, `app` and the app's own `id` on every row; (tenant, app, id) is unique.
- Money and quantities are Decimal(38, 9), exactly as the app sent them (compare at the currency's minor
  units, never as floats). Rates (tax) are fractions: 0.2 is 20 %.
- Dates are `Date`; instants are `Datetime("us", "UTC")`.
- Countries are ISO 3166-1 alpha-2, currencies ISO 4217 (validated against pycountry).
- Text is trimmed; empty text is null; emails are lower-case.
- `links`: the twins a record names in other apps, [{app, app_id}] (Sequence integration ids and
  linkedServices; QuickBooks has none), the raw material of reconcile.links.
"""

from __future__ import annotations

import polars as pl
import pandera.polars as pa
import pycountry

MONEY = pl.Decimal(38, 9)
INSTANT = pl.Datetime("us", "UTC")
LINKS = pl.List(pl.Struct({"app": pl.String, "app_id": pl.String}))

APPS = ["sequence", "quickbooks", "xero", "hubspot", "salesforce", "attio"]
COUNTRIES = sorted(c.alpha_2 for c in pycountry.countries)
CURRENCIES = sorted(c.alpha_3 for c in pycountry.currencies)
TAX_STATUSES = ["TAXED", "TAX_EXEMPT", "REVERSE_CHARGED"]
# A document's life in one vocabulary: DRAFT (not issued), OPEN (issued, money due), PAID, VOID.
DOCUMENT_STATUSES = ["DRAFT", "OPEN", "PAID", "VOID"]
PAYMENT_STATUSES = ["UNPAID", "PARTIALLY_PAID", "PAID", "UNCOLLECTIBLE"]
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def _key() -> dict[str, pa.Column]:
    return {
        "tenant": pa.Column(pl.String),
        "app": pa.Column(pl.String, checks=pa.Check.isin(APPS)),
        "id": pa.Column(pl.String),
    }


def _address(prefix: str = "") -> dict[str, pa.Column]:
    return {
        f"{prefix}line1": pa.Column(pl.String, nullable=True),
        f"{prefix}line2": pa.Column(pl.String, nullable=True),
        f"{prefix}city": pa.Column(pl.String, nullable=True),
        f"{prefix}region": pa.Column(pl.String, nullable=True),
        f"{prefix}postal_code": pa.Column(pl.String, nullable=True),
        f"{prefix}country": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(COUNTRIES)),
    }


def _schema(name: str, columns: dict[str, pa.Column], unique: list[str] | None = None) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(columns, strict=True, ordered=False, unique=unique or ["tenant", "app", "id"],
                              name=f"unified.{name}")


CUSTOMERS = _schema("customers", {
    **_key(),
    "name": pa.Column(pl.String, nullable=True),
    "email": pa.Column(pl.String, nullable=True, checks=pa.Check.str_matches(EMAIL)),  # the billing contact's
    **_address(),
    # the app's own country text when it was not an alpha-2 code ("United Kingdom"): `country` holds the code,
    # but Sequence imports only alpha-2 (the seed), so the importability check needs to know
    "country_as_sent": pa.Column(pl.String, nullable=True),
    "currency": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(CURRENCIES)),
    "tax_status": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(TAX_STATUSES)),
    "tax_id": pa.Column(pl.String, nullable=True),
    # the app's default tax code for the customer: last in the seed's tax code resolution order
    "default_tax_code": pa.Column(pl.String, nullable=True),
    "active": pa.Column(pl.Boolean),
    "app_status": pa.Column(pl.String, nullable=True),  # the app's own word: Sequence DRAFT customers are never synced
    "links": pa.Column(LINKS, nullable=True),
    "created_at": pa.Column(INSTANT, nullable=True),
    "updated_at": pa.Column(INSTANT, nullable=True),
})

_DOCUMENT = {
    **_key(),
    "number": pa.Column(pl.String, nullable=True),
    "customer_id": pa.Column(pl.String, nullable=True),
    "status": pa.Column(pl.String, checks=pa.Check.isin(DOCUMENT_STATUSES)),
    "app_status": pa.Column(pl.String, nullable=True),  # the app's own word, for the report
    "payment_status": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(PAYMENT_STATUSES)),
    "currency": pa.Column(pl.String, checks=pa.Check.isin(CURRENCIES)),
    "issue_date": pa.Column(pl.Date, nullable=True),
    "accounting_date": pa.Column(pl.Date, nullable=True),
    "due_date": pa.Column(pl.Date, nullable=True),
    "memo": pa.Column(pl.String, nullable=True),
    "billing_email": pa.Column(pl.String, nullable=True, checks=pa.Check.str_matches(EMAIL)),
    **_address("billing_"),
    "net_total": pa.Column(MONEY, nullable=True),
    "tax_total": pa.Column(MONEY, nullable=True),
    "gross_total": pa.Column(MONEY, nullable=True),
    "balance": pa.Column(MONEY, nullable=True),
    "exchange_rate": pa.Column(MONEY, nullable=True),  # home units per document unit
    "home_gross_total": pa.Column(MONEY, nullable=True),
    "links": pa.Column(LINKS, nullable=True),
    "created_at": pa.Column(INSTANT, nullable=True),
    "updated_at": pa.Column(INSTANT, nullable=True),
}

INVOICES = _schema("invoices", {
    **_DOCUMENT,
    # Sequence only: a Stripe payment link means Stripe, not the accounting system, says whether it is paid
    "stripe_payment_link": pa.Column(pl.Boolean, nullable=True),
})
CREDIT_NOTES = _schema("credit_notes", {**_DOCUMENT, "invoice_id": pa.Column(pl.String, nullable=True)})

_LINE = {
    "tenant": pa.Column(pl.String),
    "app": pa.Column(pl.String, checks=pa.Check.isin(APPS)),
    "document_id": pa.Column(pl.String),
    "id": pa.Column(pl.String),
    "position": pa.Column(pl.Int64),
    "description": pa.Column(pl.String, nullable=True),  # Sequence: "[group title]: [line title]"
    "group_title": pa.Column(pl.String, nullable=True),
    "title": pa.Column(pl.String, nullable=True),
    "product_id": pa.Column(pl.String, nullable=True),  # Sequence product / QuickBooks item
    "quantity": pa.Column(MONEY, nullable=True),
    "rate": pa.Column(MONEY, nullable=True),
    "amount": pa.Column(MONEY, nullable=True),  # net
    "tax_category_id": pa.Column(pl.String, nullable=True),  # Sequence (on the line's group)
    "tax_code": pa.Column(pl.String, nullable=True),  # QuickBooks TaxCodeRef ("TAX"/"NON" in the US)
    "tax_rate": pa.Column(MONEY, nullable=True),
    "links": pa.Column(LINKS, nullable=True),
}
INVOICE_LINES = _schema("invoice_lines", dict(_LINE), unique=["tenant", "app", "document_id", "id"])
CREDIT_NOTE_LINES = _schema("credit_note_lines", dict(_LINE), unique=["tenant", "app", "document_id", "id"])

PAYMENTS = _schema("payments", {
    **_key(),
    "customer_id": pa.Column(pl.String, nullable=True),
    "date": pa.Column(pl.Date, nullable=True),
    "amount": pa.Column(MONEY),
    "currency": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(CURRENCIES)),
    "reference": pa.Column(pl.String, nullable=True),
    "updated_at": pa.Column(INSTANT, nullable=True),
})
PAYMENT_APPLICATIONS = _schema("payment_applications", {
    "tenant": pa.Column(pl.String),
    "app": pa.Column(pl.String, checks=pa.Check.isin(APPS)),
    "payment_id": pa.Column(pl.String),
    "document_type": pa.Column(pl.String, checks=pa.Check.isin(["invoice", "credit_note"])),
    "document_id": pa.Column(pl.String),
    "amount": pa.Column(MONEY, nullable=True),
}, unique=["tenant", "app", "payment_id", "document_type", "document_id"])

PRODUCTS = _schema("products", {
    **_key(),
    "name": pa.Column(pl.String, nullable=True),
    "active": pa.Column(pl.Boolean),
    "type": pa.Column(pl.String, nullable=True),  # QuickBooks item Type
    "income_account_id": pa.Column(pl.String, nullable=True),  # QuickBooks IncomeAccountRef
    "tax_category_id": pa.Column(pl.String, nullable=True),  # Sequence
    "updated_at": pa.Column(INSTANT, nullable=True),
})
ACCOUNTS = _schema("accounts", {
    **_key(),
    "name": pa.Column(pl.String, nullable=True),
    "code": pa.Column(pl.String, nullable=True),  # QuickBooks AcctNum: the "account code" of the settings
    "type": pa.Column(pl.String, nullable=True),
    "active": pa.Column(pl.Boolean),
})
TAX_CODES = _schema("tax_codes", {
    **_key(),
    "name": pa.Column(pl.String, nullable=True),
    "rate": pa.Column(MONEY, nullable=True),  # a fraction; null when the app does not say
    "active": pa.Column(pl.Boolean),
})
CUSTOM_FIELDS = _schema("custom_fields", {
    "tenant": pa.Column(pl.String),
    "app": pa.Column(pl.String, checks=pa.Check.isin(APPS)),
    "entity": pa.Column(pl.String),
    "id": pa.Column(pl.String),
    "field": pa.Column(pl.String),
    "value": pa.Column(pl.String, nullable=True),
}, unique=["tenant", "app", "entity", "id", "field"])

# CRMs (HubSpot, Salesforce, Attio): what revops needs to match CRM companies with billing customers and to list
# deals across CRMs. Companies keep the customers' address parts; `domain` is the bare host (lower-case, no
# scheme or "www."), the usual key between a CRM company and a customer's email domain.
COMPANIES = _schema("companies", {
    **_key(),
    "name": pa.Column(pl.String, nullable=True),
    "domain": pa.Column(pl.String, nullable=True),
    **_address(),
    "currency": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(CURRENCIES)),
    "owner": pa.Column(pl.String, nullable=True),  # the app's owner/user id
    "links": pa.Column(LINKS, nullable=True),  # twins named in the CRM's own fields (settings link_fields)
    "updated_at": pa.Column(INSTANT, nullable=True),
})
CONTACTS = _schema("contacts", {
    **_key(),
    "company_id": pa.Column(pl.String, nullable=True),
    "name": pa.Column(pl.String, nullable=True),
    "email": pa.Column(pl.String, nullable=True, checks=pa.Check.str_matches(EMAIL)),  # the primary one
    "phone": pa.Column(pl.String, nullable=True),
    "job_title": pa.Column(pl.String, nullable=True),
    "updated_at": pa.Column(INSTANT, nullable=True),
})
DEALS = _schema("deals", {
    **_key(),
    "name": pa.Column(pl.String, nullable=True),
    "stage": pa.Column(pl.String, nullable=True),  # the app's own word (HubSpot stage id, Salesforce StageName)
    # null when the stage is not one the model knows and the tenant's settings (deal_stages) do not say
    "is_closed": pa.Column(pl.Boolean, nullable=True),
    "is_won": pa.Column(pl.Boolean, nullable=True),
    "amount": pa.Column(MONEY, nullable=True),
    "currency": pa.Column(pl.String, nullable=True, checks=pa.Check.isin(CURRENCIES)),
    "close_date": pa.Column(pl.Date, nullable=True),
    "company_id": pa.Column(pl.String, nullable=True),  # the primary company (all of them: deal_companies)
    "updated_at": pa.Column(INSTANT, nullable=True),
})
DEAL_COMPANIES = _schema("deal_companies", {
    "tenant": pa.Column(pl.String),
    "app": pa.Column(pl.String, checks=pa.Check.isin(APPS)),
    "deal_id": pa.Column(pl.String),
    "company_id": pa.Column(pl.String),
    "is_primary": pa.Column(pl.Boolean),
}, unique=["tenant", "app", "deal_id", "company_id"])

# table name in the `unified` schema -> contract
MODEL: dict[str, pa.DataFrameSchema] = {
    "customers": CUSTOMERS,
    "invoices": INVOICES,
    "invoice_lines": INVOICE_LINES,
    "credit_notes": CREDIT_NOTES,
    "credit_note_lines": CREDIT_NOTE_LINES,
    "payments": PAYMENTS,
    "payment_applications": PAYMENT_APPLICATIONS,
    "products": PRODUCTS,
    "accounts": ACCOUNTS,
    "tax_codes": TAX_CODES,
    "companies": COMPANIES,
    "contacts": CONTACTS,
    "deals": DEALS,
    "deal_companies": DEAL_COMPANIES,
    "custom_fields": CUSTOM_FIELDS,
}


def empty(table: str) -> pl.DataFrame:
    """A frame with the table's columns and types and no rows."""
    return pl.DataFrame(schema={name: column.dtype.type for name, column in MODEL[table].columns.items()})
