"""Per-app field maps from the raw layer to the unified model (checks/unified.py), as data, with per-tenant
overrides from the registry settings. No Dagster here: LazyFrames in, LazyFrames out.

A field map says, per app and unified table, where each unified column comes from:

    "email": "_primary_email"          a column of the source frame (copied, then normalised by the contract)
    "status": pl.when(...)...          an expression over the source frame (normalised the same way)
    "exchange_rate": None              the app does not say: a typed null

The source frame of an entity is its raw table (raw_<app>.<table>, dlt snake_case names) plus helper columns
the app module joins in, named with a leading underscore (`_primary_email`, `_links`, ...). Every map lists
every contract column, so a column the model gains is a loud error until each app says where it comes from.

Normalisation follows the contract's type and the column's role, so the raw side never has to: text is
trimmed and empty text is null; emails lower-case; currencies upper-case; countries ISO alpha-2 (names and
alpha-3 codes looked up in pycountry; an unknown value is kept so the contract quarantines it); dates and
instants parsed from ISO text (any offset, to UTC); money cast to Decimal(38, 9) without rounding. A value
present in raw that cannot be read (a date that is not a date) is not silently nulled: the row carries a
problem (`_problem_field`, `_problem_reason`) and build.py quarantines it.

A tenant's registry settings may override or add fields, no code change needed:

    settings["field_mappings"][app][entity][unified_column] = "<raw column>"
    settings["custom_fields"][app][entity] = ["<raw column>", ...]     -> rows of unified.custom_fields

and, for the CRMs (hubspot.py, salesforce.py, attio.py):

    settings["link_fields"][app][entity] = {"<other app>": "<raw column>"}   -> links: the CRM field that
                                                                               holds the twin's id there
    settings["deal_stages"][app] = {"won": [...], "lost": [...], "open": [...]}   -> is_closed / is_won
                                                                               of the tenant's own stages

`entity` is the word of ENTITIES (customer, invoice, credit_note, product, ...); raw columns are those of
the entity's source frame (a raw column the warehouse has not seen yet reads as null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import polars as pl
import pycountry

from checks.unified import INSTANT, LINKS, MODEL, MONEY

Value = str | pl.Expr | None
FieldMap = Mapping[str, Value]
Settings = Mapping[str, Mapping[str, Any]]  # tenant -> registry settings

PROBLEM_FIELD = "_problem_field"
PROBLEM_REASON = "_problem_reason"
PROBLEM_COLUMNS = (PROBLEM_FIELD, PROBLEM_REASON)

# unified table -> the entity word used in settings, custom_fields and quarantine rows (the manifest's words
# where it has one: tax codes and tax categories are both "tax_category")
ENTITIES: dict[str, str] = {
    "customers": "customer",
    "invoices": "invoice",
    "invoice_lines": "invoice_line",
    "credit_notes": "credit_note",
    "credit_note_lines": "credit_note_line",
    "payments": "payment",
    "payment_applications": "payment_application",
    "products": "product",
    "accounts": "account",
    "tax_codes": "tax_category",
    "companies": "company",
    "contacts": "contact",
    "deals": "deal",
    "deal_companies": "deal_company",
    "custom_fields": "custom_field",
}
# Columns that identify a row: a tenant may not remap them (a wrong id would silently re-link records).
KEY_COLUMNS = frozenset({"tenant", "app", "id", "document_id", "payment_id", "deal_id"})

EMAIL_COLUMNS = frozenset({"email", "billing_email"})
COUNTRY_COLUMNS = frozenset({"country", "billing_country"})
AS_SENT_COLUMNS = frozenset({"country_as_sent"})  # the app's own text, kept when it is not an alpha-2 code
CURRENCY_COLUMNS = frozenset({"currency"})
DOMAIN_COLUMNS = frozenset({"domain"})

# Sequence's integration service names -> unified app names; services that are not apps (Stripe) are dropped.
SERVICES = {"QuickBooks_Online": "quickbooks", "Xero": "xero", "HubSpot": "hubspot", "Salesforce": "salesforce",
            "Attio": "attio"}


class MappingError(ValueError):
    """The mapping itself is wrong (a column of the wrong type, a bad override): fail the run loudly."""


# ----------------------------------------------------------------------------------------------------------
# Normalisers (expressions; the contract's dtype decides which applies)
# ----------------------------------------------------------------------------------------------------------


def text(expr: pl.Expr) -> pl.Expr:
    """Trimmed text; empty text is null."""
    trimmed = expr.cast(pl.String).str.strip_chars()
    return pl.when(trimmed.str.len_chars() > 0).then(trimmed)


def email(expr: pl.Expr) -> pl.Expr:
    return text(expr).str.to_lowercase()


def currency(expr: pl.Expr) -> pl.Expr:
    return text(expr).str.to_uppercase()


def domain(expr: pl.Expr) -> pl.Expr:
    """The bare host of a domain or website ("https://www.Nordwind.example/about" -> "nordwind.example")."""
    host = (text(expr).str.to_lowercase().str.replace(r"^[a-z][a-z0-9+.-]*://", "")
            .str.replace(r"^www\.", "").str.replace(r"[/?#:].*$", ""))
    return text(host)


@lru_cache(maxsize=1)
def country_lookup() -> pl.DataFrame:
    """Upper-cased alpha-2, alpha-3, name, official and common name -> alpha-2: built once (~900 rows)."""
    keys: dict[str, str] = {"UK": "GB"}  # ISO 3166 "exceptionally reserved" for GB, common in address books
    for country in pycountry.countries:
        for attr in ("alpha_2", "alpha_3", "name", "official_name", "common_name"):
            value = getattr(country, attr, None)
            if value:
                keys.setdefault(value.upper(), country.alpha_2)
    return pl.DataFrame({"key": list(keys), "alpha_2": list(keys.values())})


def country(expr: pl.Expr) -> pl.Expr:
    """ISO alpha-2. `replace` is a vectorised hash join on the lookup frame; an unknown value stays as it
    was (upper-cased) so the contract quarantines the row instead of the country silently vanishing."""
    lookup = country_lookup()
    return text(expr).str.to_uppercase().replace(lookup["key"], lookup["alpha_2"])


def country_as_sent(expr: pl.Expr) -> pl.Expr:
    """The app's text when it is not already an alpha-2 code (Sequence imports need alpha-2: the seed)."""
    value = text(expr)
    return pl.when(~value.str.to_uppercase().is_in(country_lookup()["alpha_2"].unique().implode())).then(value)


def instant(expr: pl.Expr) -> pl.Expr:
    """ISO-8601 text with Z or any offset ("2025-03-05T11:20:40-08:00") -> UTC; text without an offset is
    read as UTC."""
    value = text(expr)
    return pl.coalesce(
        value.str.to_datetime("%+", strict=False, time_unit="us", time_zone="UTC"),
        value.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
    )


def date(expr: pl.Expr) -> pl.Expr:
    """YYYY-MM-DD (a timestamp's date part also reads)."""
    return text(expr).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)


def links(column: str, service_field: str, id_field: str) -> pl.Expr:
    """A JSON array of objects naming twins in other apps -> [{app, app_id}] (null when none)."""
    decoded = pl.col(column).str.json_decode(pl.List(pl.Struct({service_field: pl.String, id_field: pl.String})))
    named = decoded.list.eval(pl.struct(
        app=pl.element().struct.field(service_field).replace_strict(SERVICES, default=None, return_dtype=pl.String),
        app_id=pl.element().struct.field(id_field).str.strip_chars(),
    )).list.eval(pl.element().filter(pl.element().struct.field("app").is_not_null()
                                     & (pl.element().struct.field("app_id").str.len_chars() > 0)))
    return pl.when(named.list.len() > 0).then(named).cast(LINKS)


def _normalise(expr: pl.Expr, column: str, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    if target == pl.String:
        if column in EMAIL_COLUMNS:
            return email(expr)
        if column in COUNTRY_COLUMNS:
            return country(expr)
        if column in CURRENCY_COLUMNS:
            return currency(expr)
        if column in DOMAIN_COLUMNS:
            return domain(expr)
        if column in AS_SENT_COLUMNS:
            return country_as_sent(expr)
        return text(expr)
    if source == pl.Null:
        return pl.lit(None, target)
    if source == pl.String:
        if target == INSTANT:
            return instant(expr)
        if target == pl.Date:
            return date(expr)
        if target == pl.Boolean:
            lowered = text(expr).str.to_lowercase()
            return pl.when(lowered == "true").then(True).when(lowered == "false").then(False)
        return text(expr).cast(target, strict=False)  # numbers (money exactly: text -> Decimal is lossless)
    if target == INSTANT and isinstance(source, pl.Datetime):
        return (expr.dt.replace_time_zone("UTC") if source.time_zone is None
                else expr.dt.convert_time_zone("UTC")).cast(INSTANT)
    return expr.cast(target)  # strict: a typed value that does not fit is an error of the mapping, not of the row


def _parses(source: pl.DataType, target: pl.DataType) -> bool:
    """Whether the value is read from text (and may fail to read)."""
    return source == pl.String and target != pl.String


# ----------------------------------------------------------------------------------------------------------
# The field maps
# ----------------------------------------------------------------------------------------------------------

_SEQ_STATUS = pl.col("status").str.strip_chars().str.to_uppercase()
_SEQ_PAYMENT_STATUS = pl.col("payment_status").str.strip_chars().str.to_uppercase()


def _sequence_status(payment_status: pl.Expr | None) -> pl.Expr:
    """DRAFT/IN_PROGRESS -> DRAFT, FINAL/SENT -> OPEN (PAID when paid), VOIDED -> VOID; an unknown word is kept
    so the contract quarantines it."""
    issued = pl.lit("OPEN") if payment_status is None else \
        pl.when(payment_status == "PAID").then(pl.lit("PAID")).otherwise(pl.lit("OPEN"))
    return (pl.when(_SEQ_STATUS.is_in(["DRAFT", "IN_PROGRESS"])).then(pl.lit("DRAFT"))
            .when(_SEQ_STATUS.is_in(["FINAL", "SENT"])).then(issued)
            .when(_SEQ_STATUS == "VOIDED").then(pl.lit("VOID"))
            .otherwise(_SEQ_STATUS))


def _sequence_address(prefix: str, raw: str) -> dict[str, Value]:
    return {f"{prefix}line1": f"{raw}line1", f"{prefix}line2": f"{raw}line2", f"{prefix}city": f"{raw}town",
            f"{prefix}region": f"{raw}state", f"{prefix}postal_code": f"{raw}postcode",
            f"{prefix}country": f"{raw}country"}


def _quickbooks_address(prefix: str, raw: str) -> dict[str, Value]:
    return {f"{prefix}line1": f"{raw}line1", f"{prefix}line2": f"{raw}line2", f"{prefix}city": f"{raw}city",
            f"{prefix}region": f"{raw}country_sub_division_code", f"{prefix}postal_code": f"{raw}postal_code",
            f"{prefix}country": f"{raw}country"}


_SEQUENCE_DOCUMENT: dict[str, Value] = {
    "customer_id": "customer_id",
    "app_status": "status",
    "currency": "currency",
    "issue_date": "issue_date",
    "accounting_date": "accounting_date",
    "memo": "memo",
    # the seed: QuickBooks "Customer email" <- Sequence "Primary billing contact email"
    "billing_email": pl.coalesce(pl.col("_primary_email"), pl.col("_first_customer_email")),
    **_sequence_address("billing_", "customer_billing_address__"),
    "net_total": "net_total",
    "tax_total": "total_tax",
    "gross_total": "gross_total",
    "balance": "balance",
    "exchange_rate": None,
    "home_gross_total": None,
    "links": "_links",
    "created_at": "created_at",
    "updated_at": "updated_at",
}

_SEQUENCE_LINE: dict[str, Value] = {
    "document_id": "_document_id",
    "position": (pl.col("index").cast(pl.Int64) + 1),  # 1-based, as QuickBooks Line.Id = Sequence index + 1
    # the seed: QuickBooks line Description = "[line item group name]: [line item name]"
    "description": pl.when(pl.col("_group_title").str.strip_chars().str.len_chars() > 0)
    .then(pl.concat_str(pl.col("_group_title").str.strip_chars(), pl.lit(": "), pl.col("title").str.strip_chars()))
    .otherwise(pl.col("title")),
    "group_title": "_group_title",
    "title": "title",
    "product_id": "product_id",
    "quantity": "quantity",
    "rate": "rate",
    "amount": "net_total",
    "tax_category_id": "_tax_category_id",  # Sequence keeps the tax category on the line's group
    "tax_code": None,
    "tax_rate": "tax_rate",
    "links": "_links",
}

# QuickBooks has one status-like fact per invoice: voided (PrivateNote "Voided", zero TotalAmt: what the void
# operation leaves), paid (Balance 0 on a non-zero total) or open.
_QBO_VOIDED = (pl.col("private_note").str.strip_chars() == "Voided") & (pl.col("total_amt") == 0)
_QBO_PAID = (pl.col("balance") <= 0) & (pl.col("total_amt") > 0)

_QUICKBOOKS_DOCUMENT: dict[str, Value] = {
    "number": "doc_number",
    "customer_id": "customer_ref__value",
    "currency": "currency_ref__value",
    "issue_date": "txn_date",  # QuickBooks' one date; which Sequence date it mirrors is settings.invoice_date
    "accounting_date": None,
    "memo": "customer_memo__value",
    "billing_email": "bill_email__address",
    **_quickbooks_address("billing_", "bill_addr__"),
    "net_total": pl.col("total_amt") - pl.col("txn_tax_detail__total_tax").fill_null(0),
    "tax_total": "txn_tax_detail__total_tax",
    "gross_total": "total_amt",
    "exchange_rate": "exchange_rate",
    # home-currency total: QuickBooks gives it for foreign documents; a home-currency document is its own
    "home_gross_total": pl.coalesce(pl.col("home_total_amt"),
                                    pl.when(pl.col("currency_ref__value") == pl.col("_home_currency"))
                                    .then(pl.col("total_amt"))),
    "links": None,
    "created_at": "meta_data__create_time",
    "updated_at": "meta_data__last_updated_time",
}

_QUICKBOOKS_LINE: dict[str, Value] = {
    "document_id": "_document_id",
    "position": "line_num",
    "description": "description",
    "group_title": None,
    "title": None,
    "product_id": "sales_item_line_detail__item_ref__value",
    "quantity": "sales_item_line_detail__qty",
    "rate": "sales_item_line_detail__unit_price",
    "amount": "amount",
    "tax_category_id": None,
    "tax_code": "sales_item_line_detail__tax_code_ref__value",
    "tax_rate": "_tax_rate",
    "links": None,
}

def _xero_address(prefix: str, raw: str) -> dict[str, Value]:
    return {f"{prefix}line1": f"{raw}address_line1", f"{prefix}line2": f"{raw}address_line2",
            f"{prefix}city": f"{raw}city", f"{prefix}region": f"{raw}region",
            f"{prefix}postal_code": f"{raw}postal_code", f"{prefix}country": f"{raw}country"}


_XERO_STATUS = pl.col("status").str.strip_chars().str.to_uppercase()
_XERO_DOCUMENT: dict[str, Value] = {
    "customer_id": "contact__contact_id",
    "status": pl.when(_XERO_STATUS.is_in(["DRAFT", "SUBMITTED"])).then(pl.lit("DRAFT"))
    .when(_XERO_STATUS == "AUTHORISED").then(pl.lit("OPEN"))
    .when(_XERO_STATUS == "PAID").then(pl.lit("PAID"))
    .when(_XERO_STATUS.is_in(["VOIDED", "DELETED"])).then(pl.lit("VOID"))
    .otherwise(_XERO_STATUS),
    "app_status": "status",
    "currency": "currency_code",
    "issue_date": "date",  # Xero's one date; which Sequence date it mirrors is settings.invoice_date
    "accounting_date": None,
    "due_date": "due_date",
    "memo": None,  # Xero invoices have no memo (Reference is the customer's purchase order)
    "billing_email": None,  # nor a billing email or address: both are the contact's
    **{f"billing_{part}": None for part in ("line1", "line2", "city", "region", "postal_code", "country")},
    "net_total": "sub_total",
    "tax_total": "total_tax",
    "gross_total": "total",
    # CurrencyRate is document units per base unit; the model's rate is base units per document unit
    "exchange_rate": pl.when(pl.col("currency_rate") > 0).then(pl.lit(1, MONEY) / pl.col("currency_rate")),
    "home_gross_total": pl.when(pl.col("currency_code") == pl.col("_home_currency")).then(pl.col("total"))
    .when(pl.col("currency_rate") > 0).then(pl.col("total") / pl.col("currency_rate")),
    "links": None,
    "created_at": None,
    "updated_at": "updated_date_utc",
}

_XERO_LINE: dict[str, Value] = {
    "document_id": "_document_id",
    "id": "line_item_id",
    "position": "_position",
    "description": "description",
    "group_title": None,
    "title": None,
    "product_id": "_item_id",
    "quantity": "quantity",
    "rate": "unit_amount",
    "amount": "line_amount",
    "tax_category_id": None,
    "tax_code": "tax_type",
    "tax_rate": "_tax_rate",
    "links": None,
}


def mapping_text(column: str) -> pl.Expr:
    """A raw column as trimmed text, empty as null (for coalescing alternatives inside a field map)."""
    return text(pl.col(column))


FIELD_MAPS: dict[str, dict[str, FieldMap]] = {
    "sequence": {
        "customers": {
            "name": "legal_name",
            "email": "_primary_email",  # the PRIMARY billing contact's
            **_sequence_address("", "address__"),
            "country_as_sent": "address__country",  # kept only when it is not already the alpha-2 code
            "currency": None,
            "tax_status": "tax_status",
            "tax_id": "tax_id",
            "default_tax_code": None,  # Sequence resolves tax by category (the seed's order starts there)
            "active": pl.col("archived_at").is_null(),
            "app_status": "status",  # ACTIVE | DRAFT (drafts are never synced)
            "links": "_links",
            "created_at": "created_at",
            "updated_at": "updated_at",
        },
        "invoices": {
            **_SEQUENCE_DOCUMENT,
            "number": "invoice_number",
            "status": _sequence_status(_SEQ_PAYMENT_STATUS),
            "payment_status": "payment_status",
            "due_date": "due_date",
            # Stripe decides paid-ness when the invoice shows a Stripe link (the seed); GoCardless is not Stripe
            "stripe_payment_link": (pl.col("payment_options").str.json_decode(pl.List(pl.String))
                                    .list.contains("LINK").fill_null(False)
                                    & (pl.col("_payment_provider") == "STRIPE").fill_null(False)),
        },
        "credit_notes": {
            **_SEQUENCE_DOCUMENT,
            "number": "credit_note_number",
            "status": _sequence_status(None),
            "payment_status": None,  # a credit note is applied, not paid
            "due_date": None,
            "invoice_id": "invoice_id",
        },
        "invoice_lines": _SEQUENCE_LINE,
        "credit_note_lines": _SEQUENCE_LINE,
        "products": {
            "name": "name",
            "active": pl.col("archived_at").is_null(),
            "type": None,
            "income_account_id": None,
            "tax_category_id": "tax_category_id",
            "updated_at": "updated_at",
        },
        "tax_codes": {
            "name": "name",
            "rate": None,  # Sequence states rates on lines, not on categories
            "active": pl.col("archived_at").is_null(),
        },
    },
    "quickbooks": {
        "customers": {
            "name": pl.coalesce(text(pl.col("company_name")), text(pl.col("display_name"))),
            "email": "primary_email_addr__address",
            **_quickbooks_address("", "bill_addr__"),
            "country_as_sent": "bill_addr__country",
            "currency": "currency_ref__value",
            # QuickBooks says taxable or not; a non-taxable customer on the tenant's reverse-charge code is RC
            "tax_status": pl.when(pl.col("taxable")).then(pl.lit("TAXED"))
            .when(pl.col("taxable").is_not_null()
                  & (pl.col("default_tax_code_ref__value") == pl.col("_reverse_charge_code"))
                  & (pl.col("_reverse_charge_code") != pl.col("_exempt_code")).fill_null(True))
            .then(pl.lit("REVERSE_CHARGED"))
            .when(pl.col("taxable").is_not_null()).then(pl.lit("TAX_EXEMPT")),
            "tax_id": "primary_tax_identifier",
            "default_tax_code": "default_tax_code_ref__value",
            "active": pl.col("active").fill_null(True),
            "app_status": None,
            "links": None,
            "created_at": "meta_data__create_time",
            "updated_at": "meta_data__last_updated_time",
        },
        "invoices": {
            **_QUICKBOOKS_DOCUMENT,
            "status": pl.when(_QBO_VOIDED).then(pl.lit("VOID")).when(_QBO_PAID).then(pl.lit("PAID"))
            .otherwise(pl.lit("OPEN")),
            # the words QuickBooks' own screens show
            "app_status": pl.when(_QBO_VOIDED).then(pl.lit("Voided")).when(_QBO_PAID).then(pl.lit("Paid"))
            .when(pl.col("balance") < pl.col("total_amt")).then(pl.lit("Partially paid")).otherwise(pl.lit("Open")),
            "payment_status": pl.when(_QBO_VOIDED).then(None).when(_QBO_PAID).then(pl.lit("PAID"))
            .when(pl.col("balance") < pl.col("total_amt")).then(pl.lit("PARTIALLY_PAID"))
            .otherwise(pl.lit("UNPAID")),
            "balance": "balance",
            "due_date": "due_date",
            "stripe_payment_link": None,
        },
        "credit_notes": {
            **_QUICKBOOKS_DOCUMENT,
            "status": pl.when(_QBO_VOIDED).then(pl.lit("VOID")).otherwise(pl.lit("OPEN")),
            "app_status": pl.when(_QBO_VOIDED).then(pl.lit("Voided"))
            .when((pl.col("remaining_credit") <= 0) & (pl.col("total_amt") > 0)).then(pl.lit("Closed"))
            .otherwise(pl.lit("Open")),
            "payment_status": None,
            "balance": "remaining_credit",  # credit not yet applied
            "due_date": None,
            "invoice_id": None,  # a CreditMemo does not name the invoice it credits
        },
        "invoice_lines": _QUICKBOOKS_LINE,
        "credit_note_lines": _QUICKBOOKS_LINE,
        "payments": {
            "customer_id": "customer_ref__value",
            "date": "txn_date",
            "amount": "total_amt",
            "currency": "currency_ref__value",
            "reference": "payment_ref_num",
            "updated_at": "meta_data__last_updated_time",
        },
        "payment_applications": {
            "payment_id": "_payment_id",
            "document_type": "_document_type",
            "document_id": "_document_id",
            "amount": "amount",
        },
        "products": {
            "name": "name",
            "active": pl.col("active").fill_null(True),
            "type": "type",
            "income_account_id": "income_account_ref__value",
            "tax_category_id": None,
            "updated_at": "meta_data__last_updated_time",
        },
        "accounts": {
            "name": "name",
            "code": "acct_num",
            "type": "account_type",
            "active": pl.col("active").fill_null(True),
        },
        "tax_codes": {
            "name": "name",
            "rate": "_rate",  # from its sales tax rates (SalesTaxRateList), as a fraction
            "active": pl.col("active").fill_null(True),
        },
    },
    "xero": {
        "customers": {
            "id": "contact_id",
            "name": "name",
            "email": "email_address",
            **_xero_address("", "_address_"),
            "country_as_sent": "_address_country",
            "currency": "default_currency",
            # Xero has no taxable flag: the contact's sales tax type says it, read against the settings' codes
            "tax_status": pl.when(pl.col("accounts_receivable_tax_type").is_null()).then(None)
            .when(pl.col("accounts_receivable_tax_type") == pl.col("_reverse_charge_code"))
            .then(pl.lit("REVERSE_CHARGED"))
            .when(pl.col("accounts_receivable_tax_type") == pl.col("_exempt_code")).then(pl.lit("TAX_EXEMPT"))
            .otherwise(pl.lit("TAXED")),
            "tax_id": "tax_number",
            "default_tax_code": "accounts_receivable_tax_type",
            "active": (pl.col("contact_status").str.to_uppercase() != "ARCHIVED").fill_null(True),
            "app_status": "contact_status",
            "links": None,
            "created_at": None,
            "updated_at": "updated_date_utc",
        },
        "invoices": {
            **_XERO_DOCUMENT,
            "id": "invoice_id",
            "number": "invoice_number",
            "payment_status": pl.when(_XERO_STATUS == "PAID").then(pl.lit("PAID"))
            .when((_XERO_STATUS == "AUTHORISED") & (pl.col("amount_paid") > 0)).then(pl.lit("PARTIALLY_PAID"))
            .when(_XERO_STATUS == "AUTHORISED").then(pl.lit("UNPAID")),
            "balance": "amount_due",
            "stripe_payment_link": None,
        },
        "credit_notes": {
            **_XERO_DOCUMENT,
            "id": "credit_note_id",
            "number": "credit_note_number",
            "payment_status": None,
            "balance": "remaining_credit",  # credit not yet allocated
            "due_date": None,
            "invoice_id": None,  # allocations name invoices; a credit note is not "of" one invoice
        },
        "invoice_lines": _XERO_LINE,
        "credit_note_lines": _XERO_LINE,
        "payments": {
            "id": "payment_id",
            "customer_id": "invoice__contact__contact_id",
            "date": "date",
            "amount": "amount",
            "currency": "invoice__currency_code",
            "reference": "reference",
            "updated_at": "updated_date_utc",
        },
        "payment_applications": {
            "payment_id": "payment_id",
            "document_type": "_document_type",
            "document_id": "invoice__invoice_id",
            "amount": "amount",
        },
        "products": {
            "id": "item_id",
            "name": "name",
            "active": pl.lit(True),  # Xero deletes items outright; those still listed are live
            "type": None,
            "income_account_id": "_income_account_id",  # the account whose Code the item's SalesDetails name
            "tax_category_id": None,
            "updated_at": "updated_date_utc",
        },
        "accounts": {
            "id": "account_id",
            "name": "name",
            "code": "code",
            "type": "type",
            "active": (pl.col("status").str.to_uppercase() != "ARCHIVED").fill_null(True),
        },
        "tax_codes": {
            "id": "tax_type",  # Xero lines name their tax by TaxType: it is the code
            "name": "name",
            "rate": pl.col("effective_rate") / 100,
            "active": (pl.col("status").str.to_uppercase() == "ACTIVE").fill_null(True),
        },
    },
    # CRMs: the source frames are built in hubspot.py, salesforce.py and attio.py (helper columns `_...`)
    "hubspot": {
        "companies": {
            "name": "properties__name",
            "domain": pl.coalesce(mapping_text("properties__domain"), mapping_text("properties__website")),
            "line1": "properties__address",
            "line2": "properties__address2",
            "city": "properties__city",
            "region": "properties__state",
            "postal_code": "properties__zip",
            "country": "properties__country",
            "currency": None,  # HubSpot companies carry no currency (deals do)
            "owner": "properties__hubspot_owner_id",
            "links": "_links",
            "updated_at": "updated_at",  # the record's updatedAt (= hs_lastmodifieddate)
        },
        "contacts": {
            "company_id": "_company_id",  # associatedcompanyid: the contact's primary company
            "name": pl.concat_str(mapping_text("properties__firstname"), mapping_text("properties__lastname"),
                                  separator=" ", ignore_nulls=True),
            "email": "properties__email",
            "phone": "properties__phone",
            "job_title": "properties__jobtitle",
            "updated_at": "updated_at",
        },
        "deals": {
            "name": "properties__dealname",
            "stage": "properties__dealstage",
            "is_closed": "_is_closed",
            "is_won": "_is_won",
            "amount": "properties__amount",
            "currency": pl.coalesce(mapping_text("properties__deal_currency_code"), pl.col("_home_currency")),
            "close_date": "properties__closedate",
            "company_id": "_company_id",
            "updated_at": "updated_at",
        },
        "deal_companies": {
            "deal_id": "deal_id",
            "company_id": "company_id",
            "is_primary": pl.col("is_primary").fill_null(False),
        },
    },
    "salesforce": {
        "companies": {
            "name": "name",
            "domain": "website",
            # a compound street holds every line, newline-separated
            "line1": pl.col("billing_address__street").str.split("\n").list.first(),
            "line2": pl.col("billing_address__street").str.split("\n").list.slice(1).list.join(", "),
            "city": "billing_address__city",
            "region": pl.coalesce(mapping_text("billing_address__state_code"), mapping_text("billing_address__state")),
            "postal_code": "billing_address__postal_code",
            "country": pl.coalesce(mapping_text("billing_address__country_code"),
                                   mapping_text("billing_address__country")),
            "currency": "currency_iso_code",  # multi-currency orgs only
            "owner": "owner_id",
            "links": "_links",
            "updated_at": "last_modified_date",
        },
        "contacts": {
            "company_id": "account_id",
            "name": "name",
            "email": "email",
            "phone": "phone",
            "job_title": "title",
            "updated_at": "last_modified_date",
        },
        "deals": {
            "name": "name",
            "stage": "stage_name",
            "is_closed": "_is_closed",
            "is_won": "_is_won",
            "amount": "amount",
            "currency": pl.coalesce(mapping_text("currency_iso_code"), pl.col("_home_currency")),
            "close_date": "close_date",
            "company_id": "account_id",
            "updated_at": "last_modified_date",
        },
        "deal_companies": {  # an Opportunity has one Account
            "deal_id": "id",
            "company_id": "account_id",
            "is_primary": pl.lit(True),
        },
    },
    "attio": {
        "companies": {
            "name": "name",
            "domain": "_domain",
            "line1": "primary_location__line_1",
            "line2": "primary_location__line_2",
            "city": "primary_location__locality",
            "region": "primary_location__region",
            "postal_code": "primary_location__postcode",
            "country": "primary_location__country_code",
            "currency": None,
            "owner": None,  # Attio companies have a team, no owner
            "links": "_links",
            "updated_at": None,  # Attio records carry no modification time
        },
        "contacts": {
            "company_id": "company",
            "name": "name",
            "email": "_email",
            "phone": "_phone",
            "job_title": "job_title",
            "updated_at": None,
        },
        "deals": {
            "name": "name",
            "stage": "stage",
            "is_closed": "_is_closed",
            "is_won": "_is_won",
            "amount": "value",
            "currency": "value__currency_code",
            "close_date": None,  # not a standard attribute: a tenant names its own (field_mappings)
            "company_id": "associated_company",
            "updated_at": None,
        },
        "deal_companies": {
            "deal_id": "id",
            "company_id": "associated_company",
            "is_primary": pl.lit(True),
        },
    },
}


# ----------------------------------------------------------------------------------------------------------
# Applying a map
# ----------------------------------------------------------------------------------------------------------


def _as_expr(value: Value) -> pl.Expr:
    if value is None:
        return pl.lit(None)
    return pl.col(value) if isinstance(value, str) else value


def tenant_section(settings: Settings, key: str, app: str, entity: str) -> dict[str, Any]:
    """settings[tenant][key][app][entity] per tenant, for the tenants that have one."""
    found = {}
    for tenant, body in (settings or {}).items():
        section = (((body or {}).get(key) or {}).get(app) or {}).get(entity)
        if section:
            found[tenant] = section
    return found


def overrides(app: str, table: str, settings: Settings) -> dict[str, dict[str, str]]:
    """unified column -> {tenant: raw column} from settings["field_mappings"], checked."""
    entity = ENTITIES[table]
    contract = MODEL[table].columns
    by_column: dict[str, dict[str, str]] = {}
    for tenant, fields in tenant_section(settings, "field_mappings", app, entity).items():
        where = f"tenant {tenant}: settings.field_mappings.{app}.{entity}"
        if not isinstance(fields, Mapping):
            raise MappingError(f"{where}: expected a mapping of unified column -> raw column")
        for column, raw in fields.items():
            if column not in contract:
                raise MappingError(f"{where}.{column}: unified.{table} has no column {column!r} "
                                   f"(columns: {', '.join(contract)})")
            if column in KEY_COLUMNS:
                raise MappingError(f"{where}.{column}: key columns cannot be remapped")
            if not isinstance(raw, str) or not raw:
                raise MappingError(f"{where}.{column}: name one raw column (got {raw!r})")
            by_column.setdefault(column, {})[tenant] = raw
    return by_column


def _with_columns_present(source: pl.LazyFrame, exprs: list[pl.Expr]) -> pl.LazyFrame:
    """Raw columns appear in the warehouse only once some record carries them: an absent one reads as null."""
    present = set(source.collect_schema().names())
    missing = sorted({name for expr in exprs for name in expr.meta.root_names()} - present)
    return source.with_columns(pl.lit(None, pl.String).alias(name) for name in missing) if missing else source


def apply(app: str, table: str, source: pl.LazyFrame, settings: Settings | None = None) -> pl.LazyFrame:
    """The unified table's columns (contract order and types) from the app's source frame, plus the problem
    columns (null when the row read cleanly)."""
    contract = MODEL[table].columns
    field_map = FIELD_MAPS[app][table]
    unknown = set(field_map) - set(contract)
    if unknown:
        raise MappingError(f"{app}.{table}: the field map names columns the contract lacks: {sorted(unknown)}")
    fixed = {"tenant": pl.col("tenant"), "app": pl.lit(app)}
    staged: dict[str, pl.Expr] = {}
    for column in contract:
        if column in fixed:
            continue
        if column not in field_map and column != "id":
            raise MappingError(f"{app}.{table}: the field map does not say where {column!r} comes from")
        staged[column] = _as_expr(field_map.get(column, "id"))
    tenant_overrides = overrides(app, table, settings or {})
    for column, by_tenant in tenant_overrides.items():
        for tenant, raw in by_tenant.items():
            staged[f"{column}\x1f{tenant}"] = pl.col(raw)
    source = _with_columns_present(source, list(staged.values()) + [pl.col("tenant")])
    frame = source.select(pl.col("tenant"), *(expr.alias(name) for name, expr in staged.items()))
    schema = frame.collect_schema()

    outputs: list[pl.Expr] = []
    problems: list[tuple[pl.Expr, str, pl.Expr, pl.DataType]] = []  # (condition, field, raw value, type)
    for column, spec in contract.items():
        if column in fixed:
            outputs.append(fixed[column].alias(column) if column == "app" else pl.col(column))
            continue
        target = spec.dtype.type
        value = _normalise(pl.col(column), column, schema[column], target)
        if _parses(schema[column], target):
            unreadable = pl.col(column).str.strip_chars().str.len_chars().gt(0) & value.is_null()
            if column in tenant_overrides:  # the default does not apply to tenants that remapped the column
                unreadable = unreadable & ~pl.col("tenant").is_in(list(tenant_overrides[column]))
            problems.append((unreadable, column, pl.col(column), target))
        for tenant, raw in tenant_overrides.get(column, {}).items():
            name = f"{column}\x1f{tenant}"
            override = _normalise(pl.col(name), column, schema[name], target)
            value = pl.when(pl.col("tenant") == tenant).then(override).otherwise(value)
            if _parses(schema[name], target):
                problems.append(((pl.col("tenant") == tenant) & pl.col(name).str.strip_chars().str.len_chars().gt(0)
                                 & override.is_null(), column, pl.col(name), target))
        outputs.append(value.cast(target).alias(column))
    outputs += problem_columns(problems)
    return frame.select(outputs)


def _type_word(dtype: pl.DataType) -> str:
    if dtype == INSTANT:
        return "an ISO-8601 instant"
    if dtype == pl.Date:
        return "a date (YYYY-MM-DD)"
    if dtype == pl.Boolean:
        return "true or false"
    if isinstance(dtype, pl.Decimal):
        return "a decimal number"
    return f"{dtype}"


def problem_columns(problems: list[tuple[pl.Expr, str, pl.Expr, pl.DataType]]) -> list[pl.Expr]:
    """The first unreadable value of a row, as (field, reason); null when there is none."""
    if not problems:
        return [pl.lit(None, pl.String).alias(PROBLEM_FIELD), pl.lit(None, pl.String).alias(PROBLEM_REASON)]
    field = reason = None
    for condition, column, raw, target in problems:
        message = pl.concat_str(pl.lit(f"{column}: cannot read '"), raw.cast(pl.String).str.slice(0, 80),
                                pl.lit(f"' as {_type_word(target)}"))
        field = (pl.when(condition) if field is None else field.when(condition)).then(pl.lit(column))
        reason = (pl.when(condition) if reason is None else reason.when(condition)).then(message)
    return [field.otherwise(pl.lit(None, pl.String)).alias(PROBLEM_FIELD),
            reason.otherwise(pl.lit(None, pl.String)).alias(PROBLEM_REASON)]


def with_problems(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Adds empty problem columns to a frame built without `apply` (custom fields)."""
    names = frame.collect_schema().names()
    return frame.with_columns(pl.lit(None, pl.String).alias(c) for c in PROBLEM_COLUMNS if c not in names)


# ----------------------------------------------------------------------------------------------------------
# Custom fields
# ----------------------------------------------------------------------------------------------------------

_CUSTOM_FIELDS_ORDER = list(MODEL["custom_fields"].columns)


def custom_rows(frame: pl.LazyFrame, app: str, entity: str) -> pl.LazyFrame:
    """(tenant, id, field, value) -> unified.custom_fields rows (values as trimmed text, empty -> dropped)."""
    return (frame.with_columns(app=pl.lit(app), entity=pl.lit(entity), value=text(pl.col("value")),
                               id=pl.col("id").cast(pl.String))
            .filter(pl.col("value").is_not_null())
            .select(_CUSTOM_FIELDS_ORDER))


def custom_columns(app: str, table: str, source: pl.LazyFrame, columns: list[str], *, field_names: list[str] |
                   None = None, tenant: str | None = None) -> pl.LazyFrame:
    """Raw columns of the source as custom fields (`field_names` renames them; default the raw name)."""
    entity = ENTITIES[table]
    source = _with_columns_present(source, [pl.col(c) for c in columns])
    if tenant is not None:
        source = source.filter(pl.col("tenant") == tenant)
    names = field_names or columns
    wide = source.select("tenant", "id", *(pl.col(c).cast(pl.String).alias(n) for c, n in zip(columns, names,
                                                                                                strict=True)))
    long = wide.unpivot(on=names, index=["tenant", "id"], variable_name="field", value_name="value")
    return custom_rows(long, app, entity)


def custom_prefixed(app: str, table: str, source: pl.LazyFrame, prefix: str) -> pl.LazyFrame:
    """Every `<prefix><key>` column (a flattened object of free-form properties) as field `<key>`."""
    columns = [c for c in source.collect_schema().names() if c.startswith(prefix)]
    if not columns:
        return empty_custom_fields()
    return custom_columns(app, table, source, columns, field_names=[c.removeprefix(prefix) for c in columns])


def custom_from_settings(app: str, table: str, source: pl.LazyFrame, settings: Settings | None) -> pl.LazyFrame:
    """The raw columns each tenant lists in settings["custom_fields"][app][entity]."""
    entity = ENTITIES[table]
    frames = []
    for tenant, columns in tenant_section(settings or {}, "custom_fields", app, entity).items():
        if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
            raise MappingError(f"tenant {tenant}: settings.custom_fields.{app}.{entity}: expected a list of raw "
                               f"column names (got {columns!r})")
        frames.append(custom_columns(app, table, source, list(columns), tenant=tenant))
    return pl.concat(frames, how="vertical") if frames else empty_custom_fields()


def empty_custom_fields() -> pl.LazyFrame:
    return pl.LazyFrame(schema={name: column.dtype.type for name, column in MODEL["custom_fields"].columns.items()})


def unique_custom_fields(frames: list[pl.LazyFrame]) -> pl.LazyFrame:
    """One value per (tenant, app, entity, id, field): the first source that names it wins (automatic fields
    before the ones a tenant lists)."""
    key = ["tenant", "app", "entity", "id", "field"]
    return pl.concat(frames, how="vertical").unique(subset=key, keep="first", maintain_order=True)


# ----------------------------------------------------------------------------------------------------------
# Raw tables as the mappings expect them
# ----------------------------------------------------------------------------------------------------------

RawSchema = Mapping[str, pl.DataType | None]  # column -> expected type (None: whatever the raw layer holds)
RawFrames = Mapping[str, pl.LazyFrame | pl.DataFrame]  # raw table name (no schema) -> frame


def raw_table(raw: RawFrames, app: str, table: str, columns: RawSchema) -> pl.LazyFrame:
    """One raw table with at least the columns the mapping reads. A column (or table) the warehouse has not
    seen yet reads as typed nulls; a column of another type is a mapping error, raised before any row is read."""
    frame = raw.get(table)
    frame = pl.LazyFrame() if frame is None else frame.lazy()
    have = frame.collect_schema()
    if "tenant" not in have and len(have):
        raise MappingError(f"raw_{app}.{table} has no tenant column")
    fixes = []
    for column, dtype in {"tenant": pl.String(), **columns}.items():
        actual = have.get(column)
        if actual is None:
            fixes.append(pl.lit(None, dtype or pl.String()).alias(column))
        elif dtype is None or actual == dtype:
            continue
        elif isinstance(actual, pl.Decimal) and isinstance(dtype, pl.Decimal):
            fixes.append(pl.col(column).cast(dtype))
        elif isinstance(actual, pl.Datetime) and isinstance(dtype, pl.Datetime) and actual.time_zone:
            # DuckDB hands TIMESTAMPTZ over in its session's zone ("Etc/UTC", or the machine's): same instants
            fixes.append(pl.col(column).dt.convert_time_zone(dtype.time_zone or "UTC").cast(dtype))
        elif actual == pl.Null:
            fixes.append(pl.col(column).cast(dtype))
        else:
            raise MappingError(f"raw_{app}.{table}.{column} is {actual}; the unified mapping reads it as {dtype}")
    return frame.with_columns(fixes) if fixes else frame


def accounting_settings(settings: Settings | None, app_home: pl.LazyFrame) -> pl.LazyFrame:
    """Per tenant of an accounting app: its home currency (what the app says, `app_home`: tenant, _app_home;
    else the settings') and the tax codes the settings give exempt and reverse-charged customers."""
    configured = settings_frame(settings, {"_settings_home": "home_currency",
                                           "_reverse_charge_code": "reverse_charge_tax_code",
                                           "_exempt_code": "exempt_tax_code"})
    home = app_home.group_by("tenant").agg(pl.col("_app_home").drop_nulls().first())
    return (configured.join(home, on="tenant", how="full", coalesce=True, validate="1:1")
            .select("tenant", "_reverse_charge_code", "_exempt_code",
                    pl.coalesce(currency(pl.col("_app_home")), currency(pl.col("_settings_home")))
                    .alias("_home_currency")))


def settings_frame(settings: Settings | None, columns: Mapping[str, str]) -> pl.LazyFrame:
    """Per-tenant scalar settings as a lookup frame: {output column: settings key} (values as text)."""
    rows = {"tenant": [], **{name: [] for name in columns}}
    for tenant, body in (settings or {}).items():
        rows["tenant"].append(tenant)
        for name, key in columns.items():
            value = (body or {}).get(key)
            rows[name].append(None if value is None or isinstance(value, (dict, list)) else str(value))
    return pl.LazyFrame(rows, schema={name: pl.String for name in rows})


# ----------------------------------------------------------------------------------------------------------
# CRMs: links named in CRM fields, deal stages (hubspot.py, salesforce.py, attio.py)
# ----------------------------------------------------------------------------------------------------------


def plain_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A raw value as the text a person typed: numbers stored as DECIMAL lose the padding zeros ("58", "1200.5",
    not "58.000000000"); other types are cast to text."""
    if isinstance(dtype, pl.Decimal):
        return expr.cast(pl.String).str.replace(r"(\.\d*?)0+$", "$1").str.replace(r"\.$", "")
    return expr.cast(pl.String)


def with_links(app: str, table: str, source: pl.LazyFrame, settings: Settings | None) -> pl.LazyFrame:
    """Adds `_links` ([{app, app_id}], null when none): per tenant, settings["link_fields"][app][entity] =
    {"<other app>": "<raw column holding that app's id>"} (a HubSpot property `sequence_customer_id`, a
    Salesforce `Sequence_Id__c`, ...)."""
    from checks.unified import APPS as MODEL_APPS

    entity = ENTITIES[table]
    per_tenant = tenant_section(settings or {}, "link_fields", app, entity)
    if not per_tenant:
        return source.with_columns(pl.lit(None, LINKS).alias("_links"))
    columns: set[str] = set()
    for tenant, fields in per_tenant.items():
        where = f"tenant {tenant}: settings.link_fields.{app}.{entity}"
        if not isinstance(fields, Mapping):
            raise MappingError(f"{where}: expected a mapping of app -> raw column")
        for other, column in fields.items():
            if other not in MODEL_APPS:
                raise MappingError(f"{where}.{other}: not an app ({', '.join(MODEL_APPS)})")
            if not isinstance(column, str) or not column:
                raise MappingError(f"{where}.{other}: name one raw column (got {column!r})")
            columns.add(column)
    source = _with_columns_present(source, [pl.col(c) for c in columns])
    schema = source.collect_schema()
    links = pl.lit(None, LINKS)
    for tenant, fields in per_tenant.items():
        named = pl.concat_list([pl.struct(app=pl.lit(other), app_id=text(plain_text(pl.col(c), schema[c])))
                                for other, c in fields.items()])
        named = named.list.eval(pl.element().filter(pl.element().struct.field("app_id").is_not_null()))
        links = pl.when(pl.col("tenant") == tenant).then(pl.when(named.list.len() > 0).then(named)).otherwise(links)
    return source.with_columns(links.cast(LINKS).alias("_links"))


def with_stage_flags(app: str, source: pl.LazyFrame, stage: pl.Expr, settings: Settings | None, *,
                     won: list[str], lost: list[str], open_: list[str]) -> pl.LazyFrame:
    """Adds `_is_closed` and `_is_won` from the deal's stage (case-insensitive): the tenant's
    settings["deal_stages"][app] = {"won": [...], "lost": [...], "open": [...]} first, then the app's own
    defaults; a stage neither names is null (unknown, never guessed)."""
    word = text(stage).str.to_lowercase()
    closed = won_ = None

    def add(condition: pl.Expr, is_closed: bool, is_won: bool) -> None:
        nonlocal closed, won_
        closed = (pl.when(condition) if closed is None else closed.when(condition)).then(pl.lit(is_closed))
        won_ = (pl.when(condition) if won_ is None else won_.when(condition)).then(pl.lit(is_won))

    for tenant, body in (settings or {}).items():
        stages = ((body or {}).get("deal_stages") or {}).get(app)
        if not stages:
            continue
        if not isinstance(stages, Mapping) or set(stages) - {"won", "lost", "open"}:
            raise MappingError(f"tenant {tenant}: settings.deal_stages.{app}: expected {{won, lost, open}} lists")
        for key, is_closed, is_won in (("won", True, True), ("lost", True, False), ("open", False, False)):
            names = [str(n).strip().lower() for n in stages.get(key) or []]
            if names:
                add((pl.col("tenant") == tenant) & word.is_in(names), is_closed, is_won)
    for names, is_closed, is_won in ((won, True, True), (lost, True, False), (open_, False, False)):
        if names:
            add(word.is_in([n.lower() for n in names]), is_closed, is_won)
    if closed is None:
        return source.with_columns(pl.lit(None, pl.Boolean).alias("_is_closed"),
                                   pl.lit(None, pl.Boolean).alias("_is_won"))
    return source.with_columns(closed.otherwise(pl.lit(None, pl.Boolean)).alias("_is_closed"),
                               won_.otherwise(pl.lit(None, pl.Boolean)).alias("_is_won"))


def crm_custom_field_rows(app: str, sources: Mapping[str, pl.LazyFrame],
                          automatic: Callable[[str, list[str]], list[str]], settings: Settings | None, *,
                          prefix: str = "") -> pl.LazyFrame:
    """unified.custom_fields of a CRM: for each unified table's source frame, the columns `automatic(table,
    columns)` flags as the app's own custom fields plus the ones tenants list (crm_custom_fields)."""
    frames = [crm_custom_fields(app, table, source, automatic(table, source.collect_schema().names()), settings,
                                prefix=prefix)
              for table, source in sources.items()]
    return with_problems(unique_custom_fields(frames))


def crm_custom_fields(app: str, table: str, source: pl.LazyFrame, automatic: list[str], settings: Settings | None,
                      *, prefix: str = "") -> pl.LazyFrame:
    """The custom fields of one CRM entity: the raw columns the app itself flags as custom (`automatic`) and the
    ones each tenant lists in settings custom_fields (by raw column, or by the app's own name when the raw
    column is `<prefix><name>`: HubSpot `mrr` for `properties__mrr`). A field is named without the prefix;
    numbers read as plain text."""
    schema = source.collect_schema()
    per_tenant: dict[str, list[str]] = {}
    for tenant, columns in tenant_section(settings or {}, "custom_fields", app, ENTITIES[table]).items():
        if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
            raise MappingError(f"tenant {tenant}: settings.custom_fields.{app}.{ENTITIES[table]}: expected a list of "
                               f"raw column names (got {columns!r})")
        per_tenant[tenant] = list(dict.fromkeys(c if c in schema or f"{prefix}{c}" not in schema else f"{prefix}{c}"
                                                for c in columns))
    wanted = set(automatic).union(*per_tenant.values())
    typed = source.with_columns(plain_text(pl.col(c), schema[c]).alias(c) for c in wanted
                                if c in schema and schema[c] != pl.String)

    def named(columns: list[str]) -> list[str]:
        return [c.removeprefix(prefix) if prefix else c for c in columns]

    frames = [custom_columns(app, table, typed, automatic, field_names=named(automatic))] if automatic else []
    frames += [custom_columns(app, table, typed, columns, field_names=named(columns), tenant=tenant)
               for tenant, columns in per_tenant.items()]
    return pl.concat(frames, how="vertical") if frames else empty_custom_fields()
