"""raw_hubspot -> the unified CRM model: companies, contacts, deals, the deal↔company links (deal_companies) and
the custom properties as custom fields.

Like xero.py: each function builds the source frame (the raw table plus helper columns named `_...`) and
mapping.FIELD_MAPS["hubspot"] says which column becomes which. HubSpot's conventions turned into the model's:
- every property is text in the API; the extraction keeps numbers as DECIMAL and the rest as text;
- a deal's company is its PRIMARY company (association type 5), else its only one; all links are in
  deal_companies;
- a deal is closed/won by its stage: the default pipeline's `closedwon` / `closedlost` (its other stages are
  open); the stages of a tenant's own pipelines are ids HubSpot does not explain in the record, so a tenant names
  them in settings `deal_stages.hubspot` (else is_closed/is_won stay null);
- a deal without `deal_currency_code` is in the portal's company currency: the connection's `home_currency`
  setting;
- archived records never reach raw as live rows (the extraction deletes them); any `archived` row is skipped.
Custom fields: every property the extraction loaded that is not HubSpot's (the portal's own properties: the
extraction reads exactly the standard set plus the non-`hubspotDefined` ones), named by property name, plus
the raw columns or property names tenants list in settings custom_fields.
"""

from __future__ import annotations

import polars as pl

from assets.extract.hubspot import STANDARD_PROPERTIES
from assets.unified import mapping
from assets.unified.mapping import RawFrames, Settings, raw_table
from checks.unified import MONEY

APP = "hubspot"
S, D, B = pl.String(), MONEY, pl.Boolean()
PREFIX = "properties__"

RAW: dict[str, mapping.RawSchema] = {
    "companies": {"id": S, "properties__name": S, "properties__domain": S, "properties__website": S,
                  "properties__address": S, "properties__address2": S, "properties__city": S,
                  "properties__state": S, "properties__zip": S, "properties__country": S,
                  "properties__hubspot_owner_id": None, "updated_at": S, "archived": B},
    "contacts": {"id": S, "properties__firstname": S, "properties__lastname": S, "properties__email": S,
                 "properties__phone": S, "properties__jobtitle": S, "properties__associatedcompanyid": None,
                 "updated_at": S, "archived": B},
    "deals": {"id": S, "properties__dealname": S, "properties__dealstage": S, "properties__amount": D,
              "properties__deal_currency_code": S, "properties__closedate": S, "updated_at": S, "archived": B},
    "deal_companies": {"deal_id": S, "company_id": S, "is_primary": B},
}
SOURCES: dict[str, tuple[str, ...]] = {
    "companies": ("companies",),
    "contacts": ("contacts",),
    "deals": ("deals", "deal_companies"),
    "deal_companies": ("deal_companies", "deals"),
    "custom_fields": ("companies", "contacts", "deals"),
}
# raw collection (rejected_records.collection) -> entity word
REJECTED_ENTITIES = {"companies": "company", "contacts": "contact", "deals": "deal"}
ENTITY_TABLES = {"companies": "companies", "contacts": "contacts", "deals": "deals"}

# the default sales pipeline's stages (HubSpot's internal values)
WON, LOST = ["closedwon"], ["closedlost"]
OPEN = ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin", "contractsent"]


def _raw(raw: RawFrames, table: str) -> pl.LazyFrame:
    return raw_table(raw, APP, table, RAW[table])


def _live(raw: RawFrames, table: str) -> pl.LazyFrame:
    return _raw(raw, table).filter(~pl.col("archived").fill_null(False))


def _links(raw: RawFrames) -> pl.LazyFrame:
    return _raw(raw, "deal_companies").filter(pl.col("company_id").is_not_null() & pl.col("deal_id").is_not_null())


def companies(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = mapping.with_links(APP, "companies", _live(raw, "companies"), settings)
    return mapping.apply(APP, "companies", source, settings)


def contacts(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = _live(raw, "contacts")
    schema = source.collect_schema()
    column = "properties__associatedcompanyid"  # a number property: DECIMAL in raw, an id here
    source = source.with_columns(mapping.plain_text(pl.col(column), schema[column]).alias("_company_id"))
    return mapping.apply(APP, "contacts", source, settings)


def _primary_companies(raw: RawFrames) -> pl.LazyFrame:
    """deal -> its primary company, else its only company."""
    return (_links(raw).group_by("tenant", "deal_id")
            .agg(pl.col("company_id").filter(pl.col("is_primary").fill_null(False)).sort().first().alias("_primary"),
                 pl.when(pl.len() == 1).then(pl.col("company_id").first()).alias("_only"))
            .select("tenant", pl.col("deal_id").alias("id"), pl.coalesce("_primary", "_only").alias("_company_id")))


def deals(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    home = mapping.settings_frame(settings, {"_home_currency": "home_currency"})
    source = (_live(raw, "deals")
              .join(_primary_companies(raw), on=["tenant", "id"], how="left", validate="1:1")
              .join(home, on="tenant", how="left", validate="m:1"))
    source = mapping.with_stage_flags(APP, source, pl.col("properties__dealstage"), settings, won=WON, lost=LOST,
                                      open_=OPEN)
    return mapping.apply(APP, "deals", source, settings)


def deal_companies(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    live = _live(raw, "deals").select("tenant", pl.col("id").alias("deal_id"))
    return mapping.apply(APP, "deal_companies", _links(raw).join(live, on=["tenant", "deal_id"], how="semi"),
                         settings)


def custom_columns(table: str, columns: list[str]) -> list[str]:
    """The raw columns of the portal's own properties (not HubSpot's standard ones the extraction reads)."""
    standard = set(STANDARD_PROPERTIES[ENTITY_TABLES[table]])
    return [c for c in columns if c.startswith(PREFIX) and c.removeprefix(PREFIX) not in standard
            and not c.removeprefix(PREFIX).startswith("hs_") and c not in RAW[ENTITY_TABLES[table]]]


def custom_fields(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    sources = {table: _live(raw, name) for table, name in ENTITY_TABLES.items()}
    return mapping.crm_custom_field_rows(APP, sources, custom_columns, settings, prefix=PREFIX)


TABLES = {
    "companies": companies,
    "contacts": contacts,
    "deals": deals,
    "deal_companies": deal_companies,
    "custom_fields": custom_fields,
}
