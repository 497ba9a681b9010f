"""raw_salesforce -> the unified CRM model: Accounts as companies, Contacts as contacts, Opportunities as deals
(and their one Account as the deal↔company link), custom `__c` fields as custom fields.

Like xero.py: each function builds the source frame (the raw table plus helper columns named `_...`) and
mapping.FIELD_MAPS["salesforce"] says which column becomes which. Salesforce's conventions turned into the
model's:
- the billing address is the compound BillingAddress (its street holds every line, newline-separated: the first
  is line1, the rest line2); country and state codes win over their names when the org has state/country
  picklists;
- Opportunity IsClosed / IsWon say whether a deal is closed and won (a tenant's settings `deal_stages.salesforce`
  may still name stages, and then win);
- an Opportunity has one Account: the deal's company and its only deal_companies row;
- CurrencyIsoCode exists only in multi-currency orgs: without it a deal is in the org's currency, the
  connection's `home_currency` setting;
- deleted rows (the recycle bin) are removed from raw by the extraction; any `is_deleted` row is skipped.
Custom fields: every `__c` field (raw column `*_c`: the extraction reads every field `describe` lists), named by
raw column, plus the raw columns tenants list in settings custom_fields.
"""

from __future__ import annotations

import polars as pl

from assets.unified import mapping
from assets.unified.mapping import RawFrames, Settings, raw_table
from checks.unified import MONEY

APP = "salesforce"
S, D, B = pl.String(), MONEY, pl.Boolean()

_ADDRESS = {f"billing_address__{part}": S for part in ("street", "city", "state", "state_code", "postal_code",
                                                       "country", "country_code")}
RAW: dict[str, mapping.RawSchema] = {
    "account": {"id": S, "name": S, "website": S, **_ADDRESS, "currency_iso_code": S, "owner_id": S,
                "last_modified_date": S, "is_deleted": B},
    "contact": {"id": S, "account_id": S, "name": S, "email": S, "phone": S, "title": S, "last_modified_date": S,
                "is_deleted": B},
    "opportunity": {"id": S, "account_id": S, "name": S, "stage_name": S, "is_closed": B, "is_won": B, "amount": D,
                    "currency_iso_code": S, "close_date": None, "last_modified_date": S, "is_deleted": B},
}
SOURCES: dict[str, tuple[str, ...]] = {
    "companies": ("account",),
    "contacts": ("contact",),
    "deals": ("opportunity",),
    "deal_companies": ("opportunity",),
    "custom_fields": ("account", "contact", "opportunity"),
}
REJECTED_ENTITIES = {"account": "company", "contact": "contact", "opportunity": "deal"}
ENTITY_TABLES = {"companies": "account", "contacts": "contact", "deals": "opportunity"}
CUSTOM_SUFFIX = "_c"  # `Sequence_MRR__c` -> raw column `sequence_mrr_c`


def _live(raw: RawFrames, table: str) -> pl.LazyFrame:
    return raw_table(raw, APP, table, RAW[table]).filter(~pl.col("is_deleted").fill_null(False))


def companies(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    source = mapping.with_links(APP, "companies", _live(raw, "account"), settings)
    return mapping.apply(APP, "companies", source, settings)


def contacts(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "contacts", _live(raw, "contact"), settings)


def deals(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    home = mapping.settings_frame(settings, {"_home_currency": "home_currency"})
    source = _live(raw, "opportunity").join(home, on="tenant", how="left", validate="m:1")
    # the tenant's named stages first, then Salesforce's own flags
    source = mapping.with_stage_flags(APP, source, pl.col("stage_name"), settings, won=[], lost=[], open_=[])
    source = source.with_columns(pl.coalesce("_is_closed", "is_closed").alias("_is_closed"),
                                 pl.coalesce("_is_won", "is_won").alias("_is_won"))
    return mapping.apply(APP, "deals", source, settings)


def deal_companies(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    return mapping.apply(APP, "deal_companies", _live(raw, "opportunity").filter(pl.col("account_id").is_not_null()),
                         settings)


def custom_columns(table: str, columns: list[str]) -> list[str]:
    """The raw columns of `__c` fields."""
    return [c for c in columns if c.endswith(CUSTOM_SUFFIX) and c != CUSTOM_SUFFIX and not c.startswith("_")]


def custom_fields(raw: RawFrames, settings: Settings | None = None) -> pl.LazyFrame:
    sources = {table: _live(raw, name) for table, name in ENTITY_TABLES.items()}
    return mapping.crm_custom_field_rows(APP, sources, custom_columns, settings)


TABLES = {
    "companies": companies,
    "contacts": contacts,
    "deals": deals,
    "deal_companies": deal_companies,
    "custom_fields": custom_fields,
}
