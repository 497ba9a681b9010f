"""raw_sequence -> the unified model: customers, invoices (+ lines), credit notes (+ lines), products, tax
categories (as tax_codes) and custom fields (customers' customProperties, plus what tenants list).

Each function takes the raw tables (name -> frame) and the tenants' settings and returns a LazyFrame of the
unified table (with mapping.PROBLEM_COLUMNS). This module builds the source frames (joins: a customer's
primary contact, a line's group, an invoice's payment settings); mapping.FIELD_MAPS says which column
becomes which.
"""

from __future__ import annotations

import polars as pl

from assets.unified import mapping
from assets.unified.mapping import RawFrames, Settings, links, raw_table
from checks.unified import MONEY

APP = "sequence"
S, D = pl.String(), MONEY


def _address(prefix: str) -> dict[str, pl.DataType]:
    return {f"{prefix}{part}": S for part in ("line1", "line2", "town", "state", "postcode", "country")}


_DOCUMENT = {"id": S, "customer_id": S, "status": S, "currency": S, "issue_date": S, "accounting_date": S,
             "memo": S, "customer_emails": S, **_address("customer_billing_address__"), "net_total": D,
             "total_tax": D, "gross_total": D, "linked_services": S, "created_at": S, "updated_at": S}
_LINE = {"id": S, "group_id": S, "title": S, "quantity": D, "rate": D, "tax_rate": D, "index": D, "net_total": D,
         "external_ids": S, "product_id": S}

# The raw columns each mapping reads, with their types (raw_<app>.<table>: dlt snake_case).
RAW: dict[str, mapping.RawSchema] = {
    "customers": {"id": S, "legal_name": S, **_address("address__"), "tax_status": S, "tax_id": S, "status": S,
                  "archived_at": S, "created_at": S, "updated_at": S},
    "customers__contacts": {"_customers_id": S, "email": S, "billing_preference": S, "_index": pl.Int64()},
    "customers__integration_ids": {"_customers_id": S, "service": S, "id": S, "_index": pl.Int64()},
    "invoices": {**_DOCUMENT, "invoice_number": S, "payment_status": S, "due_date": S, "balance": D,
                 "payment_options": S},
    "invoice_payment_settings": {"id": S, "invoice_id": S, "payment_provider": S},
    "line_items": {**_LINE, "invoice_id": S},
    "line_item_groups": {"id": S, "invoice_id": S, "title": S, "tax_category__id": S},
    "credit_notes": {**_DOCUMENT, "credit_note_number": S, "invoice_id": S,
                     "balance": None},  # the raw layer keeps a credit note's balance as the text Sequence sends
    "credit_note_line_items": {**_LINE, "credit_note_id": S},
    "credit_note_line_item_groups": {"id": S, "credit_note_id": S, "line_item_group_id": S, "title": S,
                                     "tax_category__id": S},
    "products": {"id": S, "name": S, "tax_category_id": S, "archived_at": S, "updated_at": S},
    "tax_categories": {"id": S, "name": S, "archived_at": S},
}

# unified table -> the raw tables it reads (lineage for the Dagster assets)
SOURCES: dict[str, tuple[str, ...]] = {
    "customers": ("customers", "customers__contacts", "customers__integration_ids"),
    "invoices": ("invoices", "invoice_payment_settings", "customers__contacts"),
    "invoice_lines": ("line_items", "line_item_groups"),
    "credit_notes": ("credit_notes", "customers__contacts"),
    "credit_note_lines": ("credit_note_line_items", "credit_note_line_item_groups", "line_item_groups"),
    "products": ("products",),
    "tax_codes": ("tax_categories",),
    "custom_fields": ("customers", "invoices", "credit_notes", "products", "tax_categories"),
}
# unified table -> the raw table whose columns a tenant may name in settings (field_mappings, custom_fields)
ENTITY_TABLES = {"customers": "customers", "invoices": "invoices", "credit_notes": "credit_notes",
                 "products": "products", "tax_codes": "tax_categories"}
CUSTOM_PROPERTIES = "custom_properties__"  # customers' customProperties, flattened by the raw layer


def _raw(raw: RawFrames, table: str) -> pl.LazyFrame:
    return raw_table(raw, APP, table, RAW[table])


def _primary_emails(raw: RawFrames) -> pl.LazyFrame:
    """(tenant, customer id) -> the PRIMARY billing contact's email (the first, if a customer had several)."""
    return (_raw(raw, "customers__contacts")
            .filter(pl.col("billing_preference").str.strip_chars().str.to_uppercase() == "PRIMARY")
            .group_by("tenant", "_customers_id")
            .agg(pl.col("email").sort_by("_index").first().alias("_primary_email")))


def _customer_links(raw: RawFrames) -> pl.LazyFrame:
    """(tenant, customer id) -> [{app, app_id}] from integrationIds (services that are apps only)."""
    ids = _raw(raw, "customers__integration_ids").with_columns(
        _app=pl.col("service").str.strip_chars().replace_strict(mapping.SERVICES, default=None,
                                                                return_dtype=pl.String),
        _app_id=mapping.text(pl.col("id")))
    return (ids.filter(pl.col("_app").is_not_null() & pl.col("_app_id").is_not_null())
            .group_by("tenant", "_customers_id")
            .agg(pl.struct(app="_app", app_id="_app_id").sort_by("_index").alias("_links")))


def _customers_source(raw: RawFrames) -> pl.LazyFrame:
    key = ["tenant", "id"]
    by_customer = ["tenant", "_customers_id"]
    return (_raw(raw, "customers")
            .join(_primary_emails(raw), left_on=key, right_on=by_customer, how="left", validate="m:1")
            .join(_customer_links(raw), left_on=key, right_on=by_customer, how="left", validate="m:1"))


def _document_source(raw: RawFrames, table: str) -> pl.LazyFrame:
    """An invoice or credit note with its customer's primary email and its links (linkedServices)."""
    return (_raw(raw, table)
            .join(_primary_emails(raw), left_on=["tenant", "customer_id"], right_on=["tenant", "_customers_id"],
                  how="left", validate="m:1")
            .with_columns(_first_customer_email=pl.col("customer_emails").str.json_decode(pl.List(pl.String))
                          .list.first(),
                          _links=links("linked_services", "externalService", "externalId")))


def _invoices_source(raw: RawFrames) -> pl.LazyFrame:
    # one payment-settings record per invoice (Sequence returns one; keep the last if the raw layer had more)
    settings = (_raw(raw, "invoice_payment_settings")
                .unique(subset=["tenant", "invoice_id"], keep="last", maintain_order=True)
                .select("tenant", "invoice_id",
                        _payment_provider=pl.col("payment_provider").str.strip_chars().str.to_uppercase()))
    return _document_source(raw, "invoices").join(settings, left_on=["tenant", "id"],
                                                  right_on=["tenant", "invoice_id"], how="left", validate="m:1")


def _lines_source(raw: RawFrames, lines: str, groups: str, document: str) -> pl.LazyFrame:
    """Lines with their group's title and tax category (Sequence keeps the category on the group). A credit
    note group without a category takes the category of the invoice group it credits."""
    group = _raw(raw, groups).select("tenant", pl.col("id").alias("group_id"), pl.col("title").alias("_group_title"),
                                     pl.col("tax_category__id").alias("_tax_category_id"),
                                     *(["line_item_group_id"] if groups == "credit_note_line_item_groups" else []))
    if groups == "credit_note_line_item_groups":
        credited = _raw(raw, "line_item_groups").select(
            "tenant", pl.col("id").alias("line_item_group_id"), pl.col("tax_category__id").alias("_credited_category"))
        group = (group.join(credited, on=["tenant", "line_item_group_id"], how="left", validate="m:1")
                 .select("tenant", "group_id", "_group_title",
                         pl.coalesce("_tax_category_id", "_credited_category").alias("_tax_category_id")))
    return (_raw(raw, lines)
            .join(group, on=["tenant", "group_id"], how="left", validate="m:1")
            .with_columns(_document_id=pl.col(document), _links=links("external_ids", "key", "value")))


def customers(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "customers", _customers_source(raw), settings)


def invoices(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "invoices", _invoices_source(raw), settings)


def invoice_lines(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "invoice_lines", _lines_source(raw, "line_items", "line_item_groups", "invoice_id"),
                         settings)


def credit_notes(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "credit_notes", _document_source(raw, "credit_notes"), settings)


def credit_note_lines(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = _lines_source(raw, "credit_note_line_items", "credit_note_line_item_groups", "credit_note_id")
    return mapping.apply(APP, "credit_note_lines", source, settings)


def products(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "products", _raw(raw, "products"), settings)


def tax_codes(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    """Sequence tax categories (their QuickBooks codes are settings, resolved in reconcile)."""
    return mapping.apply(APP, "tax_codes", _raw(raw, "tax_categories"), settings)


def custom_fields(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    """Customers' customProperties (every key, no configuration needed) and the raw columns tenants list."""
    frames = [mapping.custom_prefixed(APP, "customers", raw_table(raw, APP, "customers", {"id": S}),
                                      CUSTOM_PROPERTIES)]
    for table, raw_name in ENTITY_TABLES.items():
        frames.append(mapping.custom_from_settings(APP, table, _raw(raw, raw_name), settings))
    return mapping.with_problems(mapping.unique_custom_fields(frames))


TABLES = {
    "customers": customers,
    "invoices": invoices,
    "invoice_lines": invoice_lines,
    "credit_notes": credit_notes,
    "credit_note_lines": credit_note_lines,
    "products": products,
    "tax_codes": tax_codes,
    "custom_fields": custom_fields,
}
