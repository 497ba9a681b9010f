"""Cross-row data-quality rules over the unified model (checks/unified.py), as plain Polars lazy frames.

The Pandera contracts in checks/unified.py hold one row at a time (types, vocabularies, formats); the rules here
need other rows, other tables or the tenant's integration settings: is the address complete enough to import
the customer, does a line's tax code exist in QuickBooks, would a new item's name collide, do a document's lines
add up to its total. Each rule takes lazy frames (and settings as plain data) and returns the failing records in
one shape, `FAILURES`: one row per (record, field) with a plain-language reason, and `blocking` = true when the
bad row would be written to an app (the Dagster wrappers turn that into an ERROR, blocking check).

Entity and field names follow the demo manifest (customer, invoice, credit_note, product, tax_category;
billing_address.postal_code, line.tax_code, ...), so quarantine rows read like mismatches. This module imports
nothing of the project outside checks/.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl
from babel.numbers import get_currency_precision

from checks.unified import COUNTRIES, CURRENCIES

FAILURES: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "app": pl.String(),
    "entity": pl.String(),
    "id": pl.String(),
    "field": pl.String(),
    "reason": pl.String(),
    "blocking": pl.Boolean(),
}

# Stricter than the contract's shape test: dot-separated local part, a host name, a TLD of letters. Case is
# ignored (the unified model lower-cases emails; a capital is not a data-quality problem).
VALID_EMAIL = (r"(?i)^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
               r"@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")
# QuickBooks US companies use automated sales tax: lines carry these literals instead of tax code ids.
US_TAX_LITERALS = ("TAX", "NON")
VOID = "VOID"


# ----------------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------------


def no_failures() -> pl.LazyFrame:
    return pl.LazyFrame(schema=FAILURES)


def _failures(frame: pl.LazyFrame, *, entity: str | pl.Expr, field: str | pl.Expr, reason: pl.Expr,
              blocking: bool | pl.Expr, id_column: str = "id") -> pl.LazyFrame:
    def lit(value: Any) -> pl.Expr:
        return value if isinstance(value, pl.Expr) else pl.lit(value)

    return frame.select(
        pl.col("tenant").cast(pl.String),
        pl.col("app").cast(pl.String),
        lit(entity).cast(pl.String).alias("entity"),
        pl.col(id_column).cast(pl.String).alias("id"),
        lit(field).cast(pl.String).alias("field"),
        reason.cast(pl.String).alias("reason"),
        lit(blocking).cast(pl.Boolean).alias("blocking"),
    )


def _concat(parts: Iterable[pl.LazyFrame]) -> pl.LazyFrame:
    parts = list(parts)
    return pl.concat(parts, how="vertical") if parts else no_failures()


def _blank(column: str) -> pl.Expr:
    """Missing text: null, empty or only whitespace (the model trims, but a rule must not trust that)."""
    return pl.col(column).cast(pl.String).str.strip_chars().fill_null("") == ""


def _quoted(column: str) -> pl.Expr:
    return pl.format("'{}'", pl.col(column))


def settings_frame(settings: Mapping[str, Mapping[str, Any]], key: str, columns: tuple[str, str]) -> pl.LazyFrame:
    """A mapping in each tenant's settings (e.g. tax_codes: category -> code) as (tenant, key, value) rows."""
    rows = [(tenant, str(k), None if v is None else str(v))
            for tenant, body in settings.items() for k, v in (body.get(key) or {}).items()]
    return pl.LazyFrame(rows, schema={"tenant": pl.String, columns[0]: pl.String, columns[1]: pl.String},
                        orient="row")


def linked_records(customers: pl.LazyFrame, links: pl.LazyFrame | None = None, *, entity: str = "customer"
                   ) -> pl.LazyFrame:
    """(tenant, app, id) of every record that has a twin: Sequence records naming one in their `links`, the app
    records they name, and both sides of reconcile.links rows for the entity (when that table exists)."""
    named = (customers.filter(pl.col("links").list.len() > 0)
             .select("tenant", pl.col("app").alias("own_app"), pl.col("id").alias("own_id"), "links")
             .explode("links")
             .select("tenant", "own_app", "own_id", pl.col("links").struct.field("app").alias("twin_app"),
                     pl.col("links").struct.field("app_id").alias("twin_id")))
    parts = [named.select("tenant", pl.col("own_app").alias("app"), pl.col("own_id").alias("id")),
             named.select("tenant", pl.col("twin_app").alias("app"), pl.col("twin_id").alias("id"))]
    if links is not None:
        crosswalk = links.filter(pl.col("entity") == entity)
        parts += [crosswalk.select("tenant", pl.lit("sequence").alias("app"), pl.col("sequence_id").alias("id")),
                  crosswalk.select("tenant", "app", pl.col("app_id").alias("id"))]
    return pl.concat([p.select(pl.col(c).cast(pl.String) for c in ("tenant", "app", "id")) for p in parts]
                     ).drop_nulls().unique()


def customers_to_create(customers: pl.LazyFrame, links: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """(tenant, app, id) of active customers a write-back would create on the other side: app customers no
    Sequence customer is linked to (imported into Sequence), and Sequence customers without a twin in an app
    their tenant has connected (created in that app)."""
    active = customers.filter(pl.col("active"))
    if "app_status" in customers.collect_schema().names():
        # Sequence DRAFT customers are never synced (the integration skips them)
        active = active.filter(pl.col("app_status").fill_null("").str.to_uppercase() != "DRAFT")
    unlinked_app = (active.filter(pl.col("app") != "sequence").select("tenant", "app", "id")
                    .join(linked_records(customers, links), on=["tenant", "app", "id"], how="anti"))
    # the apps each tenant has connected: those with customers in the model
    connected = (customers.filter(pl.col("app") != "sequence")
                 .select("tenant", pl.col("app").alias("twin_app")).unique())
    twins = (customers.filter(pl.col("app") == "sequence").select("tenant", "id", "links").explode("links")
             .select("tenant", "id", pl.col("links").struct.field("app").alias("twin_app")))
    if links is not None:
        twins = pl.concat([twins, links.filter(pl.col("entity") == "customer").select(
            pl.col("tenant").cast(pl.String), pl.col("sequence_id").cast(pl.String).alias("id"),
            pl.col("app").cast(pl.String).alias("twin_app"))])
    unlinked_sequence = (active.filter(pl.col("app") == "sequence").select("tenant", "id")
                         .join(connected, on="tenant", how="inner")
                         .join(twins.drop_nulls().unique(), on=["tenant", "id", "twin_app"], how="anti")
                         .select("tenant", pl.lit("sequence").alias("app"), "id"))
    return pl.concat([unlinked_app, unlinked_sequence]).unique()


def us_tenants(settings: Mapping[str, Mapping[str, Any]], countries: Mapping[str, str | None] | None = None
               ) -> list[str]:
    """Tenants whose QuickBooks is a US company (automated sales tax, TAX/NON on lines): the company's country
    when known (raw_quickbooks.companyinfo), else a USD home currency in the settings."""
    countries = countries or {}
    found = []
    for tenant in sorted(set(settings) | set(countries)):
        country = countries.get(tenant)
        if country:
            us = country.strip().upper() in ("US", "USA", "UNITED STATES")
        else:
            us = str((settings.get(tenant) or {}).get("home_currency") or "").upper() == "USD"
        if us:
            found.append(tenant)
    return found


def currency_precisions(currencies: Iterable[str | None]) -> pl.LazyFrame:
    """Minor-unit digits per currency (CLDR via babel: JPY 0, GBP 2, KWD 3). One call per distinct currency."""
    codes = sorted({c for c in currencies if c})
    return pl.LazyFrame({"currency": codes, "precision": [get_currency_precision(c) for c in codes]},
                        schema={"currency": pl.String, "precision": pl.Int32})


def _minor_units(column: str) -> pl.Expr:
    """The amount in the currency's minor units, rounded half away from zero (how invoices round money)."""
    scale = pl.lit(10, dtype=pl.Int64).pow(pl.col("precision")).cast(pl.Decimal(38, 0))
    return (pl.col(column) * scale).round(0, mode="half_away_from_zero").cast(pl.Int128)


def _money_text(minor: str) -> pl.Expr:
    """Minor units back to text at the currency's precision ("120.50 GBP", "1200 JPY"), in integer arithmetic."""
    units = pl.col(minor).cast(pl.Int128)
    sign = pl.when(units < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    expr = pl.lit(None, dtype=pl.String)
    for digits in range(4, -1, -1):
        scale = 10 ** digits
        whole = (units.abs() // scale).cast(pl.String)
        text = (pl.concat_str(sign, whole, pl.lit("."), (units.abs() % scale).cast(pl.String).str.zfill(digits))
                if digits else pl.concat_str(sign, whole))
        expr = pl.when(pl.col("precision") == digits).then(text).otherwise(expr)
    return pl.format("{} {}", expr, pl.col("currency"))


# ----------------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------------

ADDRESS_FIELDS = (
    ("line1", "billing_address.line1", "the address has no first line"),
    ("city", "billing_address.city", "the address has no city"),
    ("postal_code", "billing_address.postal_code", "the address has no postal/zip code"),
    ("country", "billing_address.country", "the address has no country"),
)


def addresses_complete(customers: pl.LazyFrame, to_create: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Customer addresses carry line 1, city, postal code and an ISO 3166-1 alpha-2 country: what Sequence
    requires to import a customer (seed). Blocking for customers a write-back would create (`to_create`,
    see `customers_to_create`); a warning for the others."""
    as_sent = "country_as_sent" in customers.collect_schema().names()
    frame = customers.select("tenant", "app", "id", "line1", "city", "postal_code", "country",
                             (pl.col("country_as_sent") if as_sent else pl.lit(None, pl.String)).alias("_as_sent"))
    if to_create is not None:
        frame = frame.join(to_create.select("tenant", "app", "id").with_columns(pl.lit(True).alias("_create")),
                           on=["tenant", "app", "id"], how="left").with_columns(pl.col("_create").fill_null(False))
    else:
        frame = frame.with_columns(pl.lit(False).alias("_create"))
    suffix = pl.when(pl.col("_create")).then(pl.lit("; it cannot be created/imported until fixed")).otherwise(
        pl.lit(""))
    parts = [
        _failures(frame.filter(_blank(column)), entity="customer", field=field,
                  reason=pl.concat_str(pl.lit(text), suffix), blocking=pl.col("_create"))
        for column, field, text in ADDRESS_FIELDS
    ]
    # the model holds the code it could derive; the app's own text, when it was not alpha-2, is kept aside
    # because Sequence imports alpha-2 only (seed)
    bad_country = frame.filter(~_blank("country") & ~pl.col("country").is_in(COUNTRIES)
                               | ~_blank("_as_sent")).with_columns(pl.coalesce("_as_sent", "country").alias("_shown"))
    parts.append(_failures(
        bad_country, entity="customer", field="billing_address.country", blocking=pl.col("_create"),
        reason=pl.concat_str(pl.format("country {} is not an ISO 3166-1 alpha-2 code", _quoted("_shown")), suffix)))
    return _concat(parts)


def emails_valid(frame: pl.LazyFrame, *, entity: str, column: str, required: pl.LazyFrame | None = None
                 ) -> pl.LazyFrame:
    """Emails present are well-formed; records in `required` (tenant, app, id) must have one (an app customer
    needs a primary email to be imported into Sequence). Never blocking: a bad address bounces, it does not
    corrupt a ledger."""
    rows = frame.select("tenant", "app", "id", pl.col(column).alias("_email"))
    invalid = rows.filter(~_blank("_email") & ~pl.col("_email").str.strip_chars().str.contains(VALID_EMAIL))
    parts = [_failures(invalid, entity=entity, field="billing_email", blocking=False,
                       reason=pl.format("{} is not a valid email address", _quoted("_email")))]
    if required is not None:
        missing = rows.filter(_blank("_email")).join(required.select("tenant", "app", "id"),
                                                     on=["tenant", "app", "id"], how="semi")
        parts.append(_failures(missing, entity=entity, field="billing_email", blocking=False,
                               reason=pl.lit("no email; a customer needs one to be imported into Sequence")))
    return _concat(parts)


def currencies_iso4217(frame: pl.LazyFrame, *, entity: str, required: bool = False) -> pl.LazyFrame:
    """Currencies are ISO 4217 codes (pycountry's list); `required` flags a missing one too (documents)."""
    rows = frame.select("tenant", "app", "id", "currency")
    parts = [_failures(rows.filter(~_blank("currency") & ~pl.col("currency").is_in(CURRENCIES)),
                       entity=entity, field="currency", blocking=False,
                       reason=pl.format("{} is not an ISO 4217 currency code", _quoted("currency")))]
    if required:
        parts.append(_failures(rows.filter(_blank("currency")), entity=entity, field="currency", blocking=False,
                               reason=pl.lit("no currency")))
    return _concat(parts)


def _quickbooks_codes(tax_codes: pl.LazyFrame, us: Iterable[str]) -> pl.LazyFrame:
    """(tenant, code, active) of every tax code a QuickBooks line may carry, the US literals included."""
    known = tax_codes.filter(pl.col("app") == "quickbooks").select(
        "tenant", pl.col("id").alias("code"), pl.col("active").fill_null(True))
    literals = pl.LazyFrame([(t, code, True) for t in us for code in US_TAX_LITERALS],
                            schema={"tenant": pl.String, "code": pl.String, "active": pl.Boolean}, orient="row")
    return pl.concat([known, literals]).unique(subset=["tenant", "code"], keep="first")


def line_tax_codes_resolvable(lines: pl.LazyFrame, tax_codes: pl.LazyFrame, *,
                              settings: Mapping[str, Mapping[str, Any]], us: Iterable[str],
                              entity: str = "invoice") -> pl.LazyFrame:
    """Every QuickBooks line's tax code exists among the tenant's QuickBooks tax codes (or is TAX/NON for a US
    company), and every Sequence line's tax category maps (settings.tax_codes) to a code that exists and is
    active, so a synced line never carries a code QuickBooks rejects. Blocking."""
    codes = _quickbooks_codes(tax_codes, list(us))
    qbo = (lines.filter((pl.col("app") == "quickbooks") & ~_blank("tax_code"))
           .select("tenant", "app", "document_id", pl.col("id").alias("line_id"),
                   pl.col("tax_code").str.strip_chars().alias("code"))
           .join(codes, on=["tenant", "code"], how="anti"))
    parts = [_failures(qbo, entity=entity, field="line.tax_code", blocking=True, id_column="document_id",
                       reason=pl.format("line {}: tax code '{}' does not exist in QuickBooks", "line_id", "code"))]
    mapping = settings_frame(settings, "tax_codes", ("tax_category_id", "code"))
    sequence = (lines.filter((pl.col("app") == "sequence") & ~_blank("tax_category_id"))
                .select("tenant", "app", "document_id", pl.col("id").alias("line_id"), "tax_category_id")
                # unmapped categories take the fallback code (seed); the category rule reports them
                .join(mapping, on=["tenant", "tax_category_id"], how="inner", validate="m:1")
                .join(codes, on=["tenant", "code"], how="left", validate="m:1")
                .filter(pl.col("active").is_null() | ~pl.col("active")))
    state = pl.when(pl.col("active").is_null()).then(pl.lit("does not exist")).otherwise(pl.lit("is inactive"))
    parts.append(_failures(
        sequence, entity=entity, field="line.tax_code", blocking=True, id_column="document_id",
        reason=pl.format("line {}: tax category {} maps to QuickBooks tax code '{}', which {}",
                         "line_id", "tax_category_id", "code", state)))
    return _concat(parts)


def tax_categories_mapped(tax_codes: pl.LazyFrame, *, settings: Mapping[str, Mapping[str, Any]],
                          us: Iterable[str]) -> pl.LazyFrame:
    """Every active Sequence tax category of a tenant with QuickBooks settings is mapped (settings.tax_codes)
    to a QuickBooks tax code that exists and is active. Blocking: an invoice using it could not be synced."""
    tenants = pl.LazyFrame({"tenant": sorted(settings)}, schema={"tenant": pl.String})
    categories = (tax_codes.filter((pl.col("app") == "sequence") & pl.col("active").fill_null(True))
                  .select("tenant", "app", "id", "name")
                  .join(tenants, on="tenant", how="semi"))
    mapping = settings_frame(settings, "tax_codes", ("id", "code"))
    codes = _quickbooks_codes(tax_codes, list(us))
    resolved = (categories.join(mapping, on=["tenant", "id"], how="left", validate="1:1")
                .join(codes, on=["tenant", "code"], how="left", validate="m:1"))
    name = pl.coalesce(pl.format("'{}'", pl.col("name")), pl.col("id"))
    reason = (pl.when(_blank("code"))
              .then(pl.format("tax category {} has no QuickBooks tax code in the integration settings", name))
              .when(pl.col("active").is_null())
              .then(pl.format("tax category {} is mapped to QuickBooks tax code '{}', which does not exist",
                              name, "code"))
              .otherwise(pl.format("tax category {} is mapped to QuickBooks tax code '{}', which is inactive",
                                   name, "code")))
    failing = resolved.filter(_blank("code") | pl.col("active").is_null() | ~pl.col("active"))
    return _failures(failing, entity="tax_category", field="tax_code", reason=reason, blocking=True)


def item_names_unique(products: pl.LazyFrame, *, settings: Mapping[str, Mapping[str, Any]]) -> pl.LazyFrame:
    """QuickBooks item names are unique per company (case-insensitive). Names in play: the active QuickBooks
    items, and the active Sequence products with no item mapping (settings.items), whose item a product link
    would create under the product's name. Blocking: QuickBooks rejects the duplicate."""
    mapped = settings_frame(settings, "items", ("id", "_item")).select("tenant", "id")
    candidates = pl.concat([
        products.filter((pl.col("app") == "quickbooks") & pl.col("active")).select("tenant", "app", "id", "name"),
        products.filter((pl.col("app") == "sequence") & pl.col("active"))
        .join(mapped, on=["tenant", "id"], how="anti").select("tenant", "app", "id", "name"),
    ]).filter(~_blank("name")).with_columns(pl.col("name").str.strip_chars().str.to_lowercase().alias("_key"))
    groups = candidates.group_by("tenant", "_key").agg(
        pl.len().alias("_n"),
        (pl.col("app") == "quickbooks").sum().alias("_items"),
        pl.col("id").filter(pl.col("app") == "quickbooks").sort().str.join(", ").alias("_item_ids"),
    ).filter(pl.col("_n") > 1)
    clashing = candidates.join(groups, on=["tenant", "_key"], how="inner", validate="m:1").filter(
        # an existing item is only at fault when several items already share the name
        (pl.col("app") == "sequence") | (pl.col("_items") > 1))
    reason = (pl.when((pl.col("app") == "sequence") & (pl.col("_items") > 0))
              .then(pl.format("product '{}' is not mapped and QuickBooks already has an item named so "
                              "(item {}); creating its item would fail", "name", "_item_ids"))
              .when(pl.col("app") == "sequence")
              .then(pl.format("product '{}' is not mapped and {} unmapped products share its name; only one "
                              "item can be created", "name", "_n"))
              .otherwise(pl.format("item name '{}' is used by {} QuickBooks items ({})", "name", "_items",
                                   "_item_ids")))
    return _failures(clashing, entity="product", field="name", reason=reason, blocking=True)


def totals_match_lines(documents: pl.LazyFrame, lines: pl.LazyFrame, *, entity: str = "invoice",
                       apps: tuple[str, ...] = ("sequence", "quickbooks")) -> pl.LazyFrame:
    """A non-void document's net total equals the sum of its line amounts, compared at the currency's minor
    units (so 0.1 + 0.2 is 0.30 and no float noise reaches the comparison). Blocking: a write would carry
    either number."""
    docs = documents.filter(pl.col("app").is_in(apps) & (pl.col("status") != VOID)).select(
        "tenant", "app", "id", "currency", "net_total")
    sums = (lines.filter(pl.col("app").is_in(apps))
            .group_by("tenant", "app", "document_id")
            .agg(pl.col("amount").fill_null(0).sum().alias("_lines"), pl.len().alias("_n"))
            .rename({"document_id": "id"}))
    currencies = docs.select("currency").unique().collect().to_series().to_list()
    compared = (docs.join(sums, on=["tenant", "app", "id"], how="left", validate="1:1")
                .join(currency_precisions(currencies), on="currency", how="left", validate="m:1")
                .with_columns(pl.col("precision").fill_null(2), pl.col("_n").fill_null(0),
                              pl.col("_lines").fill_null(0).cast(pl.Decimal(38, 9)))
                .with_columns(_minor_units("net_total").alias("_total_minor"),
                              _minor_units("_lines").alias("_lines_minor")))
    missing = compared.filter(pl.col("net_total").is_null())
    differ = compared.filter(pl.col("net_total").is_not_null() & (pl.col("_total_minor") != pl.col("_lines_minor")))
    lines_word = pl.when(pl.col("_n") == 1).then(pl.lit("line")).otherwise(pl.lit("lines"))
    return _concat([
        _failures(missing, entity=entity, field="net_total", blocking=True,
                  reason=pl.format("no net total (its {} {} sum to {})", "_n", lines_word,
                                   _money_text("_lines_minor"))),
        _failures(differ, entity=entity, field="net_total", blocking=True,
                  reason=pl.format("net total {} differs from the sum of its {} {}, {}",
                                   _money_text("_total_minor"), "_n", lines_word, _money_text("_lines_minor"))),
    ])
