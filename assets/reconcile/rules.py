"""The seed's integration rules (shared/seeds/sequence-quickbooks-integration.txt) as plain, named, vectorised
Polars functions: each takes and returns expressions or lazy frames, never loops over rows.

What Sequence *expects* an app to hold is always computed on the Sequence side (from Sequence's records and the
tenant's integration settings); the field diff then compares that expectation with what the app holds.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import polars as pl
import pycountry
from babel.numbers import get_currency_precision

SEQUENCE = "sequence"
PAID = "PAID"
VOID = "VOID"
DRAFT = "DRAFT"
SENT = "SENT"  # Sequence's own status word (app_status) for an invoice emailed to the customer
TAXED, TAX_EXEMPT, REVERSE_CHARGED = "TAXED", "TAX_EXEMPT", "REVERSE_CHARGED"
# QuickBooks US automated sales tax: lines carry these literal codes instead of real tax code ids.
US_TAXABLE, US_NON_TAXABLE = "TAX", "NON"
DEFAULT_ITEM_NAME = "Services"  # QuickBooks' default item, used for lines of unmapped products
UNIT_SCALE = 6  # digits kept when comparing unit prices and quantities (sub-cent prices are real: 0.0004)


# ----------------------------------------------------------------------------------------------------------
# Money, text, decimals: how values are normalised before they are compared
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def currency_digits() -> dict[str, int]:
    """ISO 4217 code -> minor-unit digits (CLDR via babel: JPY 0, GBP 2, BHD 3)."""
    return {c.alpha_3: get_currency_precision(c.alpha_3) for c in pycountry.currencies}


@lru_cache(maxsize=1)
def alpha2_countries() -> list[str]:
    return sorted(c.alpha_2 for c in pycountry.countries)


def minor_digits(currency: pl.Expr) -> pl.Expr:
    # An unknown code falls back to 2 digits, the most common precision; the contracts reject such codes anyway.
    return currency.replace_strict(currency_digits(), default=2, return_dtype=pl.Int64)


def minor_units(amount: pl.Expr, currency: pl.Expr) -> pl.Expr:
    """An amount as an integer count of its currency's minor units, rounded half away from zero (as invoices are):
    two amounts are equal when these are."""
    scaled = amount.cast(pl.Decimal(38, 9)) * (pl.lit(10, pl.Int64) ** minor_digits(currency))
    return scaled.round(0, mode="half_away_from_zero").cast(pl.Int128)


def money_text(amount: pl.Expr, currency: pl.Expr) -> pl.Expr:
    """An amount printed at its currency's minor units ("43.33", "1200", "0.125")."""
    digits = minor_digits(currency)
    value = amount.cast(pl.Decimal(38, 9))
    out = pl.when(digits == 0).then(value.round(0, mode="half_away_from_zero").cast(pl.Decimal(38, 0)).cast(pl.String))
    for d in (1, 2, 3, 4):
        out = out.when(digits == d).then(value.round(d, mode="half_away_from_zero").cast(pl.Decimal(38, d))
                                         .cast(pl.String))
    return out.otherwise(value.cast(pl.String))


def scaled_decimal(value: pl.Expr, scale: int = UNIT_SCALE) -> pl.Expr:
    """A decimal rounded to `scale` digits, as an integer: float noise from an app's JSON numbers vanishes."""
    return (value.cast(pl.Decimal(38, 9)) * 10**scale).round(0, mode="half_away_from_zero").cast(pl.Int128)


def decimal_text(value: pl.Expr) -> pl.Expr:
    """A decimal without trailing zeros: 2.500000000 -> "2.5", 3.000000000 -> "3"."""
    text = value.cast(pl.Decimal(38, 9)).cast(pl.String)
    return text.str.replace(r"(\.\d*?)0+$", "${1}").str.replace(r"\.$", "")


def clean_text(value: pl.Expr) -> pl.Expr:
    """Trimmed, inner whitespace collapsed, empty -> null: whitespace never makes a difference."""
    text = value.cast(pl.String).str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def folded_text(value: pl.Expr) -> pl.Expr:
    """clean_text, case-insensitive (emails, postal codes: the apps treat them so)."""
    return clean_text(value).str.to_lowercase()


_LEGAL_FORMS = (
    "limited", "ltd", "plc", "llc", "llp", "inc", "incorporated", "corp", "corporation", "co", "company",
    "gmbh", "ag", "kg", "ug", "sas", "sarl", "sa", "sl", "bv", "nv", "dac", "ab", "oy", "as", "spa", "srl",
)


def legal_name_key(name: pl.Expr) -> pl.Expr:
    """A company name reduced for matching: accents folded, lower case, punctuation and legal form dropped
    ("Müller Labs GmbH" and "Muller Labs" match)."""
    folded = name.cast(pl.String).map_batches(_fold_accents, return_dtype=pl.String)
    words = folded.str.to_lowercase().str.replace_all(r"[^a-z0-9]+", " ").str.strip_chars()
    stripped = words.str.replace(r"( (" + "|".join(_LEGAL_FORMS) + r"))+$", "").str.strip_chars()
    stripped = pl.when(stripped == "").then(words).otherwise(stripped)  # a name that is only a legal form
    return pl.when(stripped == "").then(None).otherwise(stripped)


def _fold_accents(series: pl.Series) -> pl.Series:
    # One Python call per distinct name (not per row): unicode decomposition has no Polars expression.
    uniques = series.unique().drop_nulls()
    table = {s: unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode() for s in uniques.to_list()}
    return series.replace_strict(table, default=None, return_dtype=pl.String)


# ----------------------------------------------------------------------------------------------------------
# Tenant settings as frames
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingsFrames:
    """A tenant's integration settings (registry `settings`) as small frames the rules join on."""

    tenants: pl.LazyFrame  # tenant, merchant_email, invoice_date, fallback/exempt/reverse_charge codes, ...
    tax_codes: pl.LazyFrame  # tenant, tax_category_id, tax_code
    items: pl.LazyFrame  # tenant, product_id, item_id, account_code


TENANT_SETTINGS_SCHEMA = {
    "tenant": pl.String,
    "merchant_email": pl.String,
    "invoice_date": pl.String,  # "issue" | "accounting"
    "fallback_tax_code": pl.String,
    "exempt_tax_code": pl.String,
    "reverse_charge_tax_code": pl.String,
    "account_default_tax_code": pl.String,  # QuickBooks company default (when the settings name none)
    "default_item_id": pl.String,
    "home_currency": pl.String,
    "us_sales_tax": pl.Boolean,
}


def settings_frames(settings: Mapping[str, Mapping[str, Any]]) -> SettingsFrames:
    """Builds the frames from `Registry.tenant_settings` (tenant -> settings mapping)."""
    rows, codes, items = [], [], []
    for tenant, body in settings.items():
        body = body or {}
        row = {name: body.get(name) for name in TENANT_SETTINGS_SCHEMA if name != "tenant"}
        row["tenant"] = tenant
        row["merchant_email"] = (row["merchant_email"] or "").strip().lower() or None
        rows.append(row)
        for category, code in (body.get("tax_codes") or {}).items():
            codes.append({"tenant": tenant, "tax_category_id": str(category), "tax_code": _text(code)})
        for product, mapping in (body.get("items") or {}).items():
            mapping = mapping or {}
            items.append({"tenant": tenant, "product_id": str(product), "item_id": _text(mapping.get("item_id")),
                          "account_code": _text(mapping.get("account_code"))})
    for row in rows:
        for name, dtype in TENANT_SETTINGS_SCHEMA.items():
            if dtype == pl.String and row.get(name) is not None:
                row[name] = str(row[name])
    return SettingsFrames(
        tenants=pl.LazyFrame(rows, schema=TENANT_SETTINGS_SCHEMA),
        tax_codes=pl.LazyFrame(codes, schema={"tenant": pl.String, "tax_category_id": pl.String,
                                              "tax_code": pl.String}),
        items=pl.LazyFrame(items, schema={"tenant": pl.String, "product_id": pl.String, "item_id": pl.String,
                                          "account_code": pl.String}),
    )


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def with_app_defaults(tenants: pl.LazyFrame, app_products: pl.LazyFrame, app_tax_codes: pl.LazyFrame) -> pl.LazyFrame:
    """Fills what the settings leave implicit from the app itself: the default item (QuickBooks' item named
    "Services") and whether the company uses US automated sales tax (its tax codes include TAX and NON)."""
    default_item = (app_products.filter(folded_text(pl.col("name")) == DEFAULT_ITEM_NAME.lower())
                    .group_by("tenant").agg(pl.col("id").min().alias("_default_item")))
    us = (app_tax_codes.group_by("tenant")
          .agg(pl.col("id").is_in([US_TAXABLE]).any().and_(pl.col("id").is_in([US_NON_TAXABLE]).any())
               .alias("_us")))
    return (tenants.join(default_item, on="tenant", how="left", validate="1:1")
            .join(us, on="tenant", how="left", validate="1:1")
            .with_columns(default_item_id=pl.coalesce("default_item_id", "_default_item"),
                          us_sales_tax=pl.coalesce("us_sales_tax", "_us", pl.lit(False)))
            .drop("_default_item", "_us"))


# ----------------------------------------------------------------------------------------------------------
# Invoice fields
# ----------------------------------------------------------------------------------------------------------


def expected_invoice_date(preference: pl.Expr, issue_date: pl.Expr, accounting_date: pl.Expr) -> pl.Expr:
    """Invoice date "depending on accounting date preference": settings.invoice_date = issue | accounting
    (issue when unset); the other date stands in when the preferred one is missing."""
    return (pl.when(preference.str.to_lowercase() == "accounting")
            .then(pl.coalesce(accounting_date, issue_date))
            .otherwise(pl.coalesce(issue_date, accounting_date)))


def expected_billing_email(app_status: pl.Expr, billing_email: pl.Expr, merchant_email: pl.Expr) -> pl.Expr:
    """The primary billing contact's email; once the invoice is SENT, Sequence overwrites it with the merchant's
    email so that QuickBooks does not email the customer a second time."""
    sent = app_status.str.to_uppercase() == SENT
    return pl.when(sent & merchant_email.is_not_null()).then(merchant_email).otherwise(billing_email)


def merchant_email_note(app_status: pl.Expr, merchant_email: pl.Expr) -> pl.Expr:
    """The reason's explanation when the merchant email is expected."""
    sent = (app_status.str.to_uppercase() == SENT) & merchant_email.is_not_null()
    return pl.when(sent).then(pl.lit(" (a sent invoice carries the merchant email so that QuickBooks does not "
                                     "email the customer again)"))


def line_description(group_title: pl.Expr, title: pl.Expr, description: pl.Expr | None = None) -> pl.Expr:
    """"[Line item group name]: [Line item name]"; the line title alone when it has no group."""
    built = pl.when(group_title.is_not_null() & title.is_not_null()).then(
        pl.concat_str([group_title, pl.lit(": "), title])).otherwise(title)
    return built if description is None else pl.coalesce(built, description)


def expected_tax_code(tax_status: pl.Expr, mapped_code: pl.Expr, fallback_code: pl.Expr, exempt_code: pl.Expr,
                      reverse_charge_code: pl.Expr, account_default: pl.Expr, customer_default: pl.Expr,
                      us_sales_tax: pl.Expr) -> pl.Expr:
    """The QuickBooks tax code Sequence assigns to a line, in the seed's order:
    1. taxed customer: the code mapped to the line's tax category, else the fallback code (unmapped lines);
       tax exempt / reverse charged customer: the code configured for that status;
    2. none of those set: the QuickBooks company's default tax code, failing that the customer's default;
    3. US companies (automated sales tax): TAX for taxed lines, NON for exempt or reverse-charged ones.
    `mapped_code` is null when the line has no tax category or the category is not mapped."""
    status = tax_status.str.to_uppercase()
    configured = (pl.when(status == TAXED).then(pl.coalesce(mapped_code, fallback_code))
                  .when(status == TAX_EXEMPT).then(exempt_code)
                  .when(status == REVERSE_CHARGED).then(reverse_charge_code))
    code = pl.coalesce(configured, account_default, customer_default)
    us = pl.when((status == TAXED) & code.is_not_null() & (code != US_NON_TAXABLE)).then(pl.lit(US_TAXABLE)) \
        .otherwise(pl.lit(US_NON_TAXABLE))
    return pl.when(us_sales_tax.fill_null(False)).then(us).otherwise(code)


def expected_item(mapped_item: pl.Expr, default_item: pl.Expr) -> pl.Expr:
    """Product -> settings.items[product].item_id; lines of unmapped products use the default item."""
    return pl.coalesce(mapped_item, default_item)


# ----------------------------------------------------------------------------------------------------------
# Customers, payments, currency
# ----------------------------------------------------------------------------------------------------------

IMPORT_REQUIREMENTS = (
    # (field, what the reason says when the requirement is not met)
    ("billing_email", "has no valid primary email"),
    ("billing_address.line1", "has no first address line"),
    ("billing_address.city", "has no city"),
    ("billing_address.postal_code", "has no postal code"),
    ("billing_address.country", "has no alpha-2 country code"),
)


def import_failures(customers: pl.LazyFrame) -> pl.LazyFrame:
    """Customers (unified columns) that cannot be imported into Sequence, one row per failing requirement:
    a primary address with first line, city, postal code and an alpha-2 country code, and an email.
    Returns the input's columns plus `field`, `problem` and `value` (what the app holds there, as text)."""
    checks = {  # field -> (fails?, the value shown)
        "billing_email": (~folded_text(pl.col("email")).str.contains(r"^[^@\s]+@[^@\s]+\.[^@\s]+$").fill_null(False),
                          pl.col("email")),
        "billing_address.line1": (clean_text(pl.col("line1")).is_null(), pl.col("line1")),
        "billing_address.city": (clean_text(pl.col("city")).is_null(), pl.col("city")),
        "billing_address.postal_code": (clean_text(pl.col("postal_code")).is_null(), pl.col("postal_code")),
        # the app's own text counts: "Ireland" was normalised to IE for the model, but an import needs alpha-2
        "billing_address.country": (~clean_text(pl.col("country")).is_in(alpha2_countries()).fill_null(False)
                                    | pl.col("country_as_sent").is_not_null(),
                                    pl.coalesce("country_as_sent", "country")),
    }
    if "country_as_sent" not in customers.collect_schema().names():
        customers = customers.with_columns(country_as_sent=pl.lit(None, pl.String))
    problems = {field: pl.lit(text) for field, text in IMPORT_REQUIREMENTS}
    problems["billing_address.country"] = pl.when(pl.col("country_as_sent").is_not_null()).then(
        pl.concat_str([pl.lit("has country '"), pl.col("country_as_sent"), pl.lit("', not an alpha-2 code")])
    ).otherwise(problems["billing_address.country"])
    return pl.concat([customers.filter(failing).with_columns(field=pl.lit(field), problem=problems[field],
                                                             value=clean_text(value))
                      for field, (failing, value) in checks.items()], how="vertical")


def is_paid(status: pl.Expr, payment_status: pl.Expr) -> pl.Expr:
    return ((status == PAID) | (payment_status == PAID)).fill_null(False)


def paid_in_app_outcome(stripe_payment_link: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Paid in the app, not in Sequence: (kind, proposed_action). With a Stripe payment link Sequence takes the
    payment status from Stripe and ignores the app's, so it is never marked paid from there."""
    stripe = stripe_payment_link.fill_null(False)
    kind = pl.when(stripe).then(pl.lit("stripe_link_ignored")).otherwise(pl.lit("status_differs"))
    action = pl.when(stripe).then(pl.lit("none")).otherwise(pl.lit("mark_paid_in_sequence"))
    return kind, action


def currency_conflicts(documents: pl.LazyFrame, app_customers: pl.LazyFrame) -> pl.LazyFrame:
    """Sequence documents whose currency differs from the currency of the app customer they must be booked to
    (`expected_customer_id`): the app rejects them. Adds `customer_currency`."""
    currencies = app_customers.select("tenant", "app", pl.col("id").alias("expected_customer_id"),
                                      pl.col("currency").alias("customer_currency"))
    return (documents.join(currencies, on=["tenant", "app", "expected_customer_id"], how="inner", validate="m:1")
            .filter(pl.col("customer_currency").is_not_null() & (pl.col("currency") != pl.col("customer_currency"))))


def home_total_differs(gross_total: pl.Expr, exchange_rate: pl.Expr, home_total: pl.Expr,
                       home_currency: pl.Expr) -> pl.Expr:
    """Home-currency conversion with the app's own rate: home total = total x exchange rate at the home
    currency's minor units. True when the stored home total is off by more than half a minor unit of the
    unrounded product (so half-up and half-even rounding both pass)."""
    product = gross_total.cast(pl.Decimal(38, 9)) * exchange_rate.cast(pl.Decimal(38, 9))
    delta = (product - home_total.cast(pl.Decimal(38, 9))).abs() * (pl.lit(10, pl.Int64) ** minor_digits(home_currency))
    return delta > pl.lit(0.5).cast(pl.Decimal(38, 9))


def expected_home_total(gross_total: pl.Expr, exchange_rate: pl.Expr) -> pl.Expr:
    return gross_total.cast(pl.Decimal(38, 9)) * exchange_rate.cast(pl.Decimal(38, 9))
