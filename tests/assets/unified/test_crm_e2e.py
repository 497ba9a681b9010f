"""The CRM part of the unified model end to end: one tenant with HubSpot, Salesforce and Attio (a small fixture
folder made here, with per-connection settings in settings.json), extracted by the raw assets from the emulators
over HTTP, the unified model materialized by Dagster, then SQL over unified.deals across the three CRMs; and the
companies of a set of deals read live from the three CRMs at once, counting each emulator's batch calls."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import orjson
import polars as pl
import pytest
from dagster import materialize

from assets.unified.crm import CRM_ASSETS, LIVE_TABLE, SCHEMA, companies_of_deals
from connectors.sandbox.salesforce import make_id

TENANT = "acme"
STAMP = "2025-03-05T10:39:50.000+0000"
WS = "2e7c9a10-4b5d-4f6e-8a7b-1c2d3e4f5a6b"
N_HUBSPOT = 5  # deals 301.. each with a primary company 101.. and the second ones also with 100 (not primary)
N_SALESFORCE = 5  # opportunities each on its own account
N_ATTIO = 5  # deals each with its own company (the last one without)


def hubspot_record(rid: str, **props: str) -> dict:
    return {"id": rid, "properties": props, "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-02T00:00:00.000Z", "archived": False}


def link(to: str, primary: bool) -> dict:
    types = [{"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]
    if primary:
        types.insert(0, {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"})
    return {"toObjectId": to, "associationTypes": types}


def hubspot() -> dict[str, list[dict]]:
    companies = [hubspot_record("100", name="Holding Ltd", country="United Kingdom", domain="holding.example")]
    companies += [hubspot_record(f"{101 + i}", name=f"Hub {i}", domain=f"https://www.Hub{i}.example/about",
                                 city="Hamburg", country="Germany", mrr=f"{1200 + i}.50", sequence_id=f"cus_{i}")
                  for i in range(N_HUBSPOT)]
    stages = ["closedwon", "closedlost", "appointmentscheduled", "9876", "contractsent"]
    deals = [hubspot_record(f"{301 + i}", dealname=f"Hub deal {i}", dealstage=stages[i], amount=f"{1000 + i}.25",
                            closedate="2025-03-31T00:00:00Z", **({"deal_currency_code": "EUR"} if i % 2 else {}))
             for i in range(N_HUBSPOT)]
    associations = [{"from": {"id": f"{301 + i}"},
                     "to": [link(f"{101 + i}", True), *([link("100", False)] if i == 1 else [])]}
                    for i in range(N_HUBSPOT)]
    return {"companies": companies, "deals": deals, "associations": associations,
            "contacts": [hubspot_record("201", email="AP@Hub0.example", firstname="Ada", lastname="Byron",
                                        associatedcompanyid="101")],
            "properties": [
                {"objectType": "companies", "name": "mrr", "label": "MRR", "type": "number", "fieldType": "number",
                 "groupName": "companyinformation"},
                {"objectType": "companies", "name": "sequence_id", "label": "Sequence id", "type": "string",
                 "fieldType": "text", "groupName": "companyinformation"}]}


def salesforce() -> dict[str, list[dict]]:
    accounts = [{"Id": make_id("001", i + 1), "Name": f"Force {i}", "Website": f"force{i}.example",
                 "BillingAddress": {"street": f"{i} Main St\nSuite 5", "city": "Leeds", "state": None,
                                    "postalCode": "LS1", "country": "GB", "latitude": None, "longitude": None,
                                    "geocodeAccuracy": None},
                 "External_Id__c": f"ext-{i}", "SystemModstamp": STAMP} for i in range(N_SALESFORCE)]
    stages = [("Closed Won", True, True), ("Closed Lost", True, False), ("Prospecting", False, False),
              ("Negotiation", False, False), ("Closed Won", True, True)]
    opportunities = [{"Id": make_id("006", i + 1), "Name": f"Force deal {i}", "AccountId": make_id("001", i + 1),
                      "StageName": stages[i][0], "IsClosed": stages[i][1], "IsWon": stages[i][2],
                      "Amount": 2000 + i + 0.1, "CloseDate": "2025-06-30", "SystemModstamp": STAMP}
                     for i in range(N_SALESFORCE)]
    return {"Account": accounts, "Opportunity": opportunities,
            "Contact": [{"Id": make_id("003", 1), "AccountId": make_id("001", 1), "FirstName": "Jana",
                         "LastName": "Krüger", "Email": "jana@force0.example", "SystemModstamp": STAMP}],
            "FieldDefinition": [{"sobject": "Account", "name": "External_Id__c", "type": "string",
                                 "externalId": True, "unique": True}]}


def rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def value(kind: str, **fields) -> dict:
    return {"active_from": "2025-03-02T09:14:11.061281000Z", "active_until": None,
            "created_by_actor": {"type": "system", "id": None}, **fields, "attribute_type": kind}


def attio_record(n: int, obj: str, values: dict) -> dict:
    return {"id": {"workspace_id": WS, "object_id": WS, "record_id": rid(n)},
            "created_at": f"2025-03-02T09:00:{n:02d}.000000000Z", "web_url": f"https://app.attio.com/x/{obj}/{rid(n)}",
            "values": values}


def status(title: str) -> dict:
    return {"id": {"workspace_id": WS, "object_id": WS, "attribute_id": WS, "status_id": WS}, "title": title,
            "is_archived": False}


def attio() -> dict[str, list[dict]]:
    companies = [attio_record(i + 1, "company", {
        "name": [value("text", value=f"Att {i}")],
        "domains": [value("domain", domain=f"att{i}.example", root_domain=f"att{i}.example")],
        "primary_location": [value("location", line_1="Hafenstrasse 5", line_2=None, line_3=None, line_4=None,
                                   locality="Hamburg", region=None, postcode="20457", country_code="DE",
                                   latitude=None, longitude=None)],
        "tier": [value("select", option={"id": {"workspace_id": WS}, "title": "Gold", "is_archived": False})]})
        for i in range(N_ATTIO)]
    stages = ["Won 🎉", "Lost", "Lead", "In Progress", "Negotiating"]
    deals = [attio_record(30 + i, "deal", {
        "name": [value("text", value=f"Att deal {i}")], "stage": [value("status", status=status(stages[i]))],
        "value": [value("currency", currency_value=3000 + i, currency_code="EUR")],
        "expected_close": [value("date", value="2025-04-30")],
        **({"associated_company": [value("record-reference", target_object="companies", target_record_id=rid(i + 1))]}
           if i < N_ATTIO - 1 else {})}) for i in range(N_ATTIO)]
    attributes = [{"object": "companies", "api_slug": "tier", "type": "select", "options": ["Gold", "Silver"]},
                  {"object": "deals", "api_slug": "expected_close", "type": "date"},
                  {"object": "deals", "api_slug": "stage", "type": "status",
                   "statuses": ["Lead", "In Progress", "Negotiating", "Won 🎉", "Lost"]}]
    return {"companies": companies, "deals": deals, "people": [], "attributes": attributes}


# each connection's own settings (settings.json "apps"): what a tenant configures, no code involved
SETTINGS = {TENANT: {"apps": {
    "hubspot": {"home_currency": "USD",
                "deal_stages": {"hubspot": {"won": ["9876"]}},
                "link_fields": {"hubspot": {"company": {"sequence": "properties__sequence_id"}}},
                "custom_fields": {"hubspot": {"contact": ["firstname"]}}},
    "salesforce": {"home_currency": "GBP",
                   "custom_fields": {"salesforce": {"deal": ["stage_name"]}}},
    "attio": {"field_mappings": {"attio": {"deal": {"close_date": "expected_close"}}},
              "deal_stages": {"attio": {"open": ["Negotiating"]}}},
}}}


def write_folder(root: Path) -> Path:
    for app, collections in (("hubspot", hubspot()), ("salesforce", salesforce()), ("attio", attio())):
        folder = root / TENANT / app
        folder.mkdir(parents=True)
        for name, rows in collections.items():
            (folder / f"{name}.json").write_bytes(orjson.dumps(rows))
    (root / "settings.json").write_bytes(orjson.dumps(SETTINGS))
    (root / "manifest.json").write_bytes(orjson.dumps({"discrepancies": []}))
    return root


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    """Replaces the demo folder of tests/conftest.py: its `extraction` harness then serves this one."""
    return write_folder(tmp_path_factory.mktemp("crm_fixtures"))


@pytest.fixture(scope="module")
def crm(extraction):
    assert sorted(extraction.registry.keys()) == [f"{TENANT}.attio", f"{TENANT}.hubspot", f"{TENANT}.salesforce"]
    extraction.extract_all()
    assert extraction.run_unified().success
    return extraction


def sql(ext, query: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(ext.warehouse), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def test_all_deals_of_a_tenant_from_all_crms_in_one_query(crm):
    rows = sql(crm, "select app, count(*), sum(amount), count(*) filter (where is_won), "
                    "count(*) filter (where is_closed is null), count(company_id) "
                    "from unified.deals where tenant = ? group by app order by app", [TENANT])
    assert rows == [
        ("attio", N_ATTIO, Decimal("15010.000000000"), 1, 0, N_ATTIO - 1),
        ("hubspot", N_HUBSPOT, Decimal("5011.250000000"), 2, 0, N_HUBSPOT),  # 9876 is won by the settings
        ("salesforce", N_SALESFORCE, Decimal("10010.500000000"), 2, 0, N_SALESFORCE)]
    # one deal of each CRM with its primary company's name, joined in SQL
    named = sql(crm, "select d.app, d.name, d.currency, d.close_date, c.name, c.domain, c.country "
                     "from unified.deals d join unified.companies c "
                     "on c.tenant = d.tenant and c.app = d.app and c.id = d.company_id "
                     "where d.tenant = ? and d.name like '% deal 0' order by d.app", [TENANT])
    assert [tuple(map(str, r)) for r in named] == [
        ("attio", "Att deal 0", "EUR", "2025-04-30", "Att 0", "att0.example", "DE"),  # close_date: the override
        ("hubspot", "Hub deal 0", "USD", "2025-03-31", "Hub 0", "hub0.example", "DE"),  # no currency: home_currency
        ("salesforce", "Force deal 0", "GBP", "2025-06-30", "Force 0", "force0.example", "GB")]
    assert sql(crm, "select app, count(*), count(*) filter (where is_primary) from unified.deal_companies "
                    "group by app order by app") == [("attio", N_ATTIO - 1, N_ATTIO - 1),
                                                     ("hubspot", N_HUBSPOT + 1, N_HUBSPOT),
                                                     ("salesforce", N_SALESFORCE, N_SALESFORCE)]
    assert sql(crm, "select count(*) from unified.quarantine") == [(0,)]


def test_companies_contacts_links_and_custom_fields_follow_the_tenants_settings(crm):
    assert sql(crm, "select app, count(*) from unified.companies group by app order by app") == [
        ("attio", N_ATTIO), ("hubspot", N_HUBSPOT + 1), ("salesforce", N_SALESFORCE)]
    assert sql(crm, "select line1, line2, city, postal_code, country from unified.companies "
                    "where app = 'salesforce' and name = 'Force 1'") == [("1 Main St", "Suite 5", "Leeds", "LS1", "GB")]
    links = sql(crm, "select id, links from unified.companies where app = 'hubspot' and links is not null order by id")
    assert links == [(f"{101 + i}", [{"app": "sequence", "app_id": f"cus_{i}"}]) for i in range(N_HUBSPOT)]
    assert sql(crm, "select app, company_id, name, email from unified.contacts order by app") == [
        ("hubspot", "101", "Ada Byron", "ap@hub0.example"),
        ("salesforce", make_id("001", 1), "Jana Krüger", "jana@force0.example")]
    fields = sql(crm, "select app, entity, field, count(*), min(value) from unified.custom_fields "
                      "group by all order by all")
    assert fields == [
        ("attio", "company", "tier", N_ATTIO, "Gold"),  # the workspace's own attribute: automatic
        ("attio", "deal", "expected_close", N_ATTIO, "2025-04-30"),
        ("hubspot", "company", "mrr", N_HUBSPOT, "1200.5"),  # the portal's own properties: automatic
        ("hubspot", "company", "sequence_id", N_HUBSPOT, "cus_0"),
        ("hubspot", "contact", "firstname", 1, "Ada"),  # listed by the tenant
        ("salesforce", "company", "external_id_c", N_SALESFORCE, "ext-0"),  # __c: automatic
        ("salesforce", "deal", "stage_name", N_SALESFORCE, "Closed Lost")]  # listed by the tenant


def requests_of(ext, app: str) -> list[dict]:
    return httpx.get(f"{ext.box.urls[app]}/_sandbox/requests").json()


def test_companies_of_deals_reads_each_crm_with_its_batch_calls(crm):
    for app in ("hubspot", "salesforce", "attio"):
        httpx.delete(f"{crm.box.urls[app]}/_sandbox/log").raise_for_status()
    deals = pl.DataFrame(sql(crm, "select tenant, app, id from unified.deals"), schema=["tenant", "app", "id"],
                         orient="row")
    found = companies_of_deals(crm.resource, deals, batch_sizes={"hubspot": 2, "salesforce": 2, "attio": 2})
    assert found.schema == pl.Schema(SCHEMA)
    # the same links and company columns as the warehouse's model
    with duckdb.connect(str(crm.warehouse), read_only=True) as con:
        expected = con.sql("select l.tenant, l.app, l.deal_id, l.company_id, l.is_primary, c.name, c.domain, "
                           "c.country, c.links from unified.deal_companies l join unified.companies c "
                           "on c.tenant = l.tenant and c.app = l.app and c.id = l.company_id").pl()
    key = ["app", "deal_id", "company_id"]
    assert found.select(expected.columns).sort(key).equals(expected.sort(key))

    def posts(app: str, path: str) -> int:
        return sum(1 for r in requests_of(crm, app) if r["method"] == "POST" and r["path"].endswith(path))

    companies = {"hubspot": N_HUBSPOT + 1, "salesforce": N_SALESFORCE, "attio": N_ATTIO - 1}
    # HubSpot: one v4 association batch for the deals, then the companies 2 a call
    assert posts("hubspot", "/crm/v4/associations/deals/companies/batch/read") == 1
    assert posts("hubspot", "/crm/v3/objects/companies/batch/read") == math.ceil(companies["hubspot"] / 2)
    # Salesforce: WHERE Id IN (...) on opportunities, then accounts, 2 ids a query
    queries = [r for r in requests_of(crm, "salesforce") if r["path"].endswith("/query")]
    opportunity = [q for q in queries if "FROM+Opportunity" in q["query"] or "FROM%20Opportunity" in q["query"]]
    assert len(opportunity) == math.ceil(N_SALESFORCE / 2)
    assert len(queries) - len(opportunity) == math.ceil(companies["salesforce"] / 2)
    # Attio: a record_id filter query per 2 deals, then per 2 companies
    assert posts("attio", "/objects/deals/records/query") == math.ceil(N_ATTIO / 2)
    assert posts("attio", "/objects/companies/records/query") == math.ceil(companies["attio"] / 2)


def test_the_live_asset_writes_the_companies_of_the_chosen_deals(crm):
    result = materialize(CRM_ASSETS, instance=crm.instance, resources={"ledgerlink": crm.resource},
                         run_config={"ops": {"crm__deal_companies_live": {"config": {
                             "tenants": [TENANT], "deal_ids": ["302", make_id("006", 1), rid(30)]}}}})
    assert result.success
    rows = sql(crm, f"select app, deal_id, company_id, is_primary, name from {LIVE_TABLE} order by app, company_id")
    assert rows == [("attio", rid(30), rid(1), True, "Att 0"),
                    ("hubspot", "302", "100", False, "Holding Ltd"),
                    ("hubspot", "302", "102", True, "Hub 1"),
                    ("salesforce", make_id("006", 1), make_id("001", 1), True, "Force 0")]
