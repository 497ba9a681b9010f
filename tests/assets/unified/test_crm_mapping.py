"""The CRM mappings on small raw frames (raw_hubspot / raw_salesforce / raw_attio as the extraction writes them):
each app's field map, the per-tenant settings (field_mappings, custom_fields, link_fields, deal_stages) with no
code change, and build coping with apps that have no CRM tables (and CRMs that have no invoices)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pytest

from assets.unified import attio, hubspot, salesforce, sequence
from assets.unified.build import build, map_apps
from assets.unified.mapping import PROBLEM_COLUMNS, MappingError
from checks.unified import MODEL, MONEY

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def frame(rows: list[dict], **types: pl.DataType) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col(c).cast(t) for c, t in types.items())


def rows(lazy: pl.LazyFrame, table: str, key: str = "id") -> dict[str, dict]:
    out = lazy.collect()
    assert out.filter(pl.col(PROBLEM_COLUMNS[0]).is_not_null()).height == 0, out
    body = out.drop(PROBLEM_COLUMNS)
    MODEL[table].validate(body, lazy=True)
    return {row[key]: row for row in body.to_dicts()}


def custom(lazy: pl.LazyFrame) -> set[tuple[str, str, str, str, str]]:
    return {(r["tenant"], r["entity"], r["id"], r["field"], r["value"])
            for r in lazy.collect().drop(PROBLEM_COLUMNS).to_dicts()}


# ----- HubSpot --------------------------------------------------------------------------------------------------

HS_COMPANIES = frame([
    {"tenant": "acme", "id": "101", "properties__name": " Nordwind GmbH ", "properties__domain": None,
     "properties__website": "https://www.Nordwind.example/about", "properties__city": "Hamburg",
     "properties__country": "Germany", "properties__mrr": "1200.50", "properties__seq_id": "cus_1",
     "properties__createdate": "2025-01-01", "updated_at": "2025-01-02T00:00:00.000Z", "archived": False},
    {"tenant": "acme", "id": "102", "properties__name": "Kestrel", "properties__domain": "kestrel.example",
     "properties__country": "GBR", "properties__mrr": None, "properties__seq_id": None,
     "updated_at": "2025-01-02T00:00:00Z", "archived": False},
    {"tenant": "acme", "id": "103", "properties__name": "Gone", "archived": True},
], properties__mrr=MONEY)
HS_DEALS = frame([
    {"tenant": "acme", "id": "301", "properties__dealname": "Renewal", "properties__dealstage": "closedwon",
     "properties__amount": "1440.50", "properties__deal_currency_code": "eur",
     "properties__closedate": "2025-03-31T00:00:00Z", "updated_at": "2025-03-01T00:00:00Z", "archived": False},
    {"tenant": "acme", "id": "302", "properties__dealname": "Upsell", "properties__dealstage": "qualifiedtobuy",
     "properties__amount": None, "properties__deal_currency_code": None, "archived": False},
    {"tenant": "acme", "id": "303", "properties__dealname": "Custom pipeline", "properties__dealstage": "777",
     "archived": False},
], properties__amount=MONEY)
HS_LINKS = frame([
    {"tenant": "acme", "deal_id": "301", "company_id": "102", "is_primary": False},
    {"tenant": "acme", "deal_id": "301", "company_id": "101", "is_primary": True},
    {"tenant": "acme", "deal_id": "302", "company_id": "102", "is_primary": False},
    {"tenant": "acme", "deal_id": "303", "company_id": "101", "is_primary": False},
    {"tenant": "acme", "deal_id": "303", "company_id": "102", "is_primary": False},
])
HS_RAW = {"companies": HS_COMPANIES, "deals": HS_DEALS, "deal_companies": HS_LINKS, "contacts": frame([
    {"tenant": "acme", "id": "201", "properties__firstname": "Ada", "properties__lastname": None,
     "properties__email": " AP@Nordwind.example ", "properties__associatedcompanyid": "101", "archived": False}],
    properties__associatedcompanyid=MONEY)}


def test_hubspot_companies_contacts_deals_and_links():
    companies = rows(hubspot.companies(HS_RAW), "companies")
    assert set(companies) == {"101", "102"}  # archived rows are not the model's
    assert companies["101"]["links"] is None  # no link_fields in the settings
    assert (companies["101"]["name"], companies["101"]["domain"], companies["101"]["country"]) == \
        ("Nordwind GmbH", "nordwind.example", "DE")
    assert (companies["102"]["domain"], companies["102"]["country"]) == ("kestrel.example", "GB")
    assert companies["101"]["updated_at"] == datetime(2025, 1, 2, tzinfo=UTC)
    contact = rows(hubspot.contacts(HS_RAW), "contacts")["201"]
    assert (contact["name"], contact["email"], contact["company_id"]) == ("Ada", "ap@nordwind.example", "101")

    deals = rows(hubspot.deals(HS_RAW, {"acme": {"home_currency": "GBP"}}), "deals")
    assert (deals["301"]["is_closed"], deals["301"]["is_won"], deals["301"]["amount"], deals["301"]["currency"],
            deals["301"]["close_date"], deals["301"]["company_id"]) == (True, True, Decimal("1440.5"), "EUR",
                                                                        date(2025, 3, 31), "101")  # the primary
    assert (deals["302"]["is_closed"], deals["302"]["currency"], deals["302"]["company_id"]) == (False, "GBP", "102")
    # a stage the model does not know stays unknown; two links and none primary: no company
    assert (deals["303"]["is_closed"], deals["303"]["is_won"], deals["303"]["company_id"]) == (None, None, None)
    links = hubspot.deal_companies(HS_RAW).collect().drop(PROBLEM_COLUMNS)
    MODEL["deal_companies"].validate(links)
    assert links.filter("is_primary").select("deal_id", "company_id").rows() == [("301", "101")]
    assert links.height == 5


def test_hubspot_custom_properties_arrive_without_configuration():
    fields = custom(hubspot.custom_fields(HS_RAW))
    # the portal's own properties (not HubSpot's standard ones), numbers as typed
    assert fields == {("acme", "company", "101", "mrr", "1200.5"), ("acme", "company", "101", "seq_id", "cus_1")}


# ----- Salesforce -----------------------------------------------------------------------------------------------

SF_RAW = {
    "account": frame([
        {"tenant": "acme", "id": "001A", "name": "Force", "website": "HTTP://force.example", "is_deleted": False,
         "billing_address__street": "1 Main St\nSuite 5\nFloor 2", "billing_address__city": "Leeds",
         "billing_address__country": "United Kingdom", "billing_address__country_code": None,
         "external_id_c": "ext-1", "sequence_mrr_c": "99.900000000",
         "last_modified_date": "2025-03-05T10:39:50.000+0000"},
        {"tenant": "acme", "id": "001B", "name": "Binned", "is_deleted": True},
    ], sequence_mrr_c=MONEY),
    "opportunity": frame([
        {"tenant": "acme", "id": "006A", "name": "Won", "account_id": "001A", "stage_name": "Closed Won",
         "is_closed": True, "is_won": True, "amount": "10.1", "close_date": "2025-06-30", "currency_iso_code": None},
        {"tenant": "acme", "id": "006B", "name": "Verbal", "account_id": None, "stage_name": "Verbal yes",
         "is_closed": False, "is_won": False, "amount": None, "currency_iso_code": "USD"},
    ], amount=MONEY),
}


def test_salesforce_accounts_and_opportunities():
    settings = {"acme": {"home_currency": "GBP", "deal_stages": {"salesforce": {"won": ["verbal yes"]}}}}
    company = rows(salesforce.companies(SF_RAW, settings), "companies")
    assert set(company) == {"001A"}
    assert (company["001A"]["line1"], company["001A"]["line2"], company["001A"]["country"],
            company["001A"]["domain"]) == ("1 Main St", "Suite 5, Floor 2", "GB", "force.example")
    deals = rows(salesforce.deals(SF_RAW, settings), "deals")
    assert (deals["006A"]["is_won"], deals["006A"]["currency"], deals["006A"]["company_id"]) == (True, "GBP", "001A")
    # the tenant's named stage wins over Salesforce's own flags
    assert (deals["006B"]["is_closed"], deals["006B"]["is_won"], deals["006B"]["currency"]) == (True, True, "USD")
    assert list(rows(salesforce.deal_companies(SF_RAW), "deal_companies", key="deal_id")) == ["006A"]
    assert custom(salesforce.custom_fields(SF_RAW)) == {("acme", "company", "001A", "external_id_c", "ext-1"),
                                                        ("acme", "company", "001A", "sequence_mrr_c", "99.9")}


# ----- Attio ----------------------------------------------------------------------------------------------------

AT_RAW = {
    "companies": frame([
        {"tenant": "acme", "id": "c1", "created_at": "2025-03-02T09:00:00Z", "web_url": "https://app.attio.com/x",
         "name": "Att", "domains": '["att.example","other.example"]', "primary_location__country_code": "DE",
         "primary_location__latitude": "53.5", "categories": '["SaaS"]', "tier": "Gold", "arr": "12.000000000",
         "arr__currency_code": "EUR"},
    ], arr=MONEY),
    "people": frame([{"tenant": "acme", "id": "p1", "name": "Ada Lovelace",
                      "email_addresses": '["Ada@att.example","a.l@att.example"]', "company": "c1"}]),
    "deals": frame([
        {"tenant": "acme", "id": "d1", "name": "Big", "stage": "Won 🎉", "value": "5.5",
         "value__currency_code": "EUR", "associated_company": "c1"},
        {"tenant": "acme", "id": "d2", "name": "Mid", "stage": "Negotiating", "value": None,
         "associated_company": None},
    ], value=MONEY),
}


def test_attio_records_and_workspace_attributes():
    company = rows(attio.companies(AT_RAW), "companies")["c1"]
    assert (company["domain"], company["country"], company["updated_at"]) == ("att.example", "DE", None)
    assert rows(attio.contacts(AT_RAW), "contacts")["p1"]["email"] == "ada@att.example"
    deals = rows(attio.deals(AT_RAW), "deals")
    assert (deals["d1"]["is_won"], deals["d1"]["amount"], deals["d1"]["company_id"]) == (True, Decimal("5.5"), "c1")
    assert (deals["d2"]["is_closed"], deals["d2"]["is_won"]) == (None, None)  # a status the model does not know
    opened = rows(attio.deals(AT_RAW, {"acme": {"deal_stages": {"attio": {"open": ["negotiating"]}}}}), "deals")
    assert (opened["d2"]["is_closed"], opened["d2"]["is_won"]) == (False, False)
    # standard attributes (categories, primary_location) are not custom; the workspace's own are, every column
    assert custom(attio.custom_fields(AT_RAW)) == {("acme", "company", "c1", "tier", "Gold"),
                                                   ("acme", "company", "c1", "arr", "12"),
                                                   ("acme", "company", "c1", "arr__currency_code", "EUR")}


# ----- per-tenant settings, no code change ----------------------------------------------------------------------

_NORDWIND = HS_COMPANIES.filter(pl.col("id") == "101")
TWO_TENANTS = {"companies": pl.concat([_NORDWIND, _NORDWIND.with_columns(tenant=pl.lit("globex"))], how="vertical")}


def test_a_tenant_remaps_lists_and_links_fields_and_only_its_rows_change():
    settings = {"acme": {
        "field_mappings": {"hubspot": {"company": {"owner": "properties__seq_id", "domain": "properties__not_yet"}}},
        "custom_fields": {"hubspot": {"company": ["properties__createdate", "brand_new_property"]}},
        "link_fields": {"hubspot": {"company": {"sequence": "properties__seq_id", "quickbooks": "properties__nope"}}},
    }}
    companies = rows(hubspot.companies(TWO_TENANTS, settings), "companies", key="tenant")
    assert (companies["acme"]["owner"], companies["acme"]["domain"]) == ("cus_1", None)  # a column not loaded yet
    assert (companies["globex"]["owner"], companies["globex"]["domain"]) == (None, "nordwind.example")
    assert companies["acme"]["links"] == [{"app": "sequence", "app_id": "cus_1"}]
    assert companies["globex"]["links"] is None
    fields = custom(hubspot.custom_fields(TWO_TENANTS, settings))
    # listed by raw column or by property name; automatic ones for both tenants; the listing for acme only
    assert ("acme", "company", "101", "createdate", "2025-01-01") in fields
    assert not any(f[0] == "globex" and f[3] == "createdate" for f in fields)
    assert {f[3] for f in fields if f[0] == "globex"} == {"mrr", "seq_id"}


@pytest.mark.parametrize("settings, message", [
    ({"acme": {"field_mappings": {"hubspot": {"deal_company": {"deal_id": "x"}}}}}, "key columns"),
    ({"acme": {"field_mappings": {"hubspot": {"deal": {"probability": "x"}}}}}, "no column 'probability'"),
    ({"acme": {"deal_stages": {"hubspot": {"winning": ["x"]}}}}, "deal_stages.hubspot"),
    ({"acme": {"link_fields": {"hubspot": {"company": {"netsuite": "x"}}}}}, "not an app"),
])
def test_a_wrong_setting_fails_loudly(settings, message):
    with pytest.raises(MappingError, match=message):
        raw = {**HS_RAW}
        hubspot.deal_companies(raw, settings).collect()
        hubspot.companies(raw, settings).collect()
        hubspot.deals(raw, settings).collect()


# ----- build: apps without CRM tables, CRMs without invoices ----------------------------------------------------

def test_build_maps_crm_and_billing_apps_side_by_side():
    raw = {"hubspot": {**HS_RAW, "rejected_records": frame([
        {"tenant": "acme", "app": "hubspot", "collection": "contacts", "record_id": "299", "field": "id",
         "reason": "bad", "record": "{}", "rejected_at": NOW}])},
           "sequence": {"customers": frame([{"tenant": "acme", "id": "cus_1", "legal_name": "Nordwind"}])}}
    result = build(raw, {}, detected_at=NOW)
    assert result.counts("customers") == {"acme": {"sequence": 1}}
    assert result.counts("deals") == {"acme": {"hubspot": 3}}
    assert result.tables["invoices"].height == 0 and result.tables["deal_companies"].height == 5
    # the CRM's own word for its raw collection: HubSpot contacts are contacts (Xero's are customers)
    assert result.quarantine.select("app", "entity", "id").rows() == [("hubspot", "contact", "299")]
    lazy = map_apps({"sequence": raw["sequence"]})
    assert {t: f.collect().height for t, f in lazy.items() if t in ("companies", "deals")} == {"companies": 0,
                                                                                              "deals": 0}
    assert set(sequence.TABLES) & {"companies", "contacts", "deals", "deal_companies"} == set()
