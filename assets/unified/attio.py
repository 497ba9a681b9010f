"""raw_attio -> the unified CRM model: companies, people as contacts, deals (their associated company as the
deal↔company link) and the workspace's own attributes as custom fields.

Like xero.py: each function builds the source frame (the raw table plus helper columns named `_...`) and
mapping.FIELD_MAPS["attio"] says which column becomes which. Attio's conventions turned into the model's:
- multiselect attributes (domains, email_addresses, phone_numbers) arrive as JSON array text: the first value
  is the company's domain, the person's email and phone;
- a deal is closed/won by its stage (a status title): Attio's default statuses `Won 🎉` / `Lost` close it,
  `Lead` / `In Progress` are open; a workspace's own statuses are named in settings `deal_stages.attio`, else
  is_closed/is_won stay null;
- Attio records carry no modification time (updated_at is null) and deals no close date (a tenant's own
  attribute can be mapped: field_mappings.attio.deal.close_date);
- deletes are hard: a deleted record is gone from raw (the extraction's complete sweep).
Custom fields: every column of an attribute that is not one of Attio's standard (system) attributes of the
object, named by raw column (`tier`, `mrr`, `mrr__currency_code`), plus the raw columns tenants list.
"""

from __future__ import annotations

import polars as pl

from assets.unified import mapping
from assets.unified.mapping import RawFrames, Settings, raw_table
from checks.unified import MONEY

APP = "attio"
S, D = pl.String(), MONEY
_LOCATION = {f"primary_location__{part}": S for part in ("line_1", "line_2", "locality", "region", "postcode",
                                                         "country_code")}
RAW: dict[str, mapping.RawSchema] = {
    "companies": {"id": S, "name": S, "domains": S, **_LOCATION},
    "people": {"id": S, "name": S, "email_addresses": S, "phone_numbers": S, "job_title": S, "company": S},
    "deals": {"id": S, "name": S, "stage": S, "value": D, "value__currency_code": S, "associated_company": S},
}
SOURCES: dict[str, tuple[str, ...]] = {
    "companies": ("companies",),
    "contacts": ("people",),
    "deals": ("deals",),
    "deal_companies": ("deals",),
    "custom_fields": ("companies", "people", "deals"),
}
REJECTED_ENTITIES = {"companies": "company", "people": "contact", "deals": "deal"}
ENTITY_TABLES = {"companies": "companies", "contacts": "people", "deals": "deals"}

WON, LOST, OPEN = ["Won 🎉", "Won"], ["Lost"], ["Lead", "In Progress"]
# Attio's standard attributes per object (its docs; the emulator serves the first few of each): anything else
# is the workspace's own. Columns of one attribute share its slug before `__`.
_INTERACTIONS = tuple(f"{k}_{i}_interaction" for k in ("first", "last", "next") for i in ("calendar", "email")) + (
    "first_interaction", "last_interaction", "next_interaction", "strongest_connection_strength",
    "strongest_connection_strength_legacy", "strongest_connection_user")
_SOCIAL = ("angellist", "facebook", "instagram", "linkedin", "twitter", "twitter_follower_count")
STANDARD: dict[str, frozenset[str]] = {
    "companies": frozenset({"record_id", "name", "domains", "description", "team", "categories", "primary_location",
                            "logo_url", "estimated_arr_usd", "funding_raised_usd", "foundation_date",
                            "employee_range", "associated_deals", "associated_workspaces", "created_at",
                            "created_by", *_SOCIAL, *_INTERACTIONS}),
    "people": frozenset({"record_id", "name", "email_addresses", "description", "company", "job_title", "avatar_url",
                         "phone_numbers", "primary_location", "associated_deals", "associated_users", "created_at",
                         "created_by", *_SOCIAL, *_INTERACTIONS}),
    "deals": frozenset({"record_id", "name", "stage", "owner", "value", "associated_people", "associated_company",
                        "created_at", "created_by"}),
}
_ROW_COLUMNS = frozenset({"id", "created_at", "web_url", "tenant"})  # the record's own, not attributes


def _raw(raw: RawFrames, table: str) -> pl.LazyFrame:
    return raw_table(raw, APP, table, RAW[table])


def first_value(column: str) -> pl.Expr:
    """The first value of a multiselect attribute (JSON array text), or the text itself when single."""
    value = mapping.text(pl.col(column))
    return pl.when(value.str.starts_with("[")).then(value.str.extract(r'^\[\s*"([^"]*)"', 1)).otherwise(value)


def companies(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = _raw(raw, "companies").with_columns(first_value("domains").alias("_domain"))
    return mapping.apply(APP, "companies", mapping.with_links(APP, "companies", source, settings), settings)


def contacts(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = _raw(raw, "people").with_columns(first_value("email_addresses").alias("_email"),
                                              first_value("phone_numbers").alias("_phone"))
    return mapping.apply(APP, "contacts", source, settings)


def deals(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = mapping.with_stage_flags(APP, _raw(raw, "deals"), pl.col("stage"), settings, won=WON, lost=LOST,
                                      open_=OPEN)
    return mapping.apply(APP, "deals", source, settings)


def deal_companies(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "deal_companies", _raw(raw, "deals").filter(pl.col("associated_company").is_not_null()),
                         settings)


def custom_columns(table: str, columns: list[str]) -> list[str]:
    """The columns of the workspace's own attributes of the object."""
    standard = STANDARD[ENTITY_TABLES[table]]
    return [c for c in columns if c not in _ROW_COLUMNS and not c.startswith("_")
            and c.split("__", 1)[0] not in standard]


def custom_fields(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    sources = {table: _raw(raw, name) for table, name in ENTITY_TABLES.items()}
    return mapping.crm_custom_field_rows(APP, sources, custom_columns, settings)


TABLES = {
    "companies": companies,
    "contacts": contacts,
    "deals": deals,
    "deal_companies": deal_companies,
    "custom_fields": custom_fields,
}
