"""HubSpot extraction end to end: a small fixture folder served by the HubSpot emulator (start_sandbox), read
with the registry's client into a temporary DuckDB through the dlt source: first a complete sweep, then an
incremental run by search on the modification date with deletes from the archived listing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pytest

from assets.extract.assets import SOURCES
from assets.extract.hubspot import hubspot_source
from assets.extract.loading import make_pipeline
from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.hubspot import DEAL_TO_COMPANY, HubSpotClient
from connectors.registry import parse_registry
from connectors.sandbox.launcher import start_sandbox

TENANT = "acme"


def record(rid: str, archived: bool = False, **props: str) -> dict:
    out = {"id": rid, "properties": props, "createdAt": "2025-01-01T00:00:00.000Z",
           "updatedAt": "2025-01-02T00:00:00.000Z", "archived": archived}
    if archived:
        out["archivedAt"] = "2025-01-03T00:00:00.000Z"
    return out


def write_fixtures(root: Path) -> None:
    folder = root / TENANT / "hubspot"
    folder.mkdir(parents=True)
    collections = {
        "companies": [record("101", name="Nordwind GmbH", annualrevenue="2500000", mrr="1200.50", qb_customer_id="58"),
                      record("102", name="Kestrel Ltd", mrr="99"),
                      record("103", name="Osprey SA"),
                      record("104", archived=True, name="Gone Inc")],
        "contacts": [record("201", email="ap@nordwind.example", firstname="Ada"),
                     record("202", email="bob@kestrel.example")],
        "deals": [record("301", dealname="Nordwind renewal", amount="1440.50", dealstage="closedwon",
                         deal_currency_code="EUR"),
                  record("302", dealname="Kestrel upsell", amount="10"),
                  record("303", dealname="Broken", amount="12x")],
        "associations": [
            {"from": {"id": "301"}, "to": [
                {"toObjectId": "101", "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5,
                                                            "label": "Primary"},
                                                           {"category": "HUBSPOT_DEFINED", "typeId": 341,
                                                            "label": None}]},
                {"toObjectId": "102", "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 341,
                                                            "label": None}]}]},
            {"from": {"id": "302"}, "to": [{"toObjectId": "102", "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]}]},
        ],
        "properties": [
            {"objectType": "companies", "name": "mrr", "label": "MRR", "type": "number", "fieldType": "number",
             "groupName": "companyinformation"},
            {"objectType": "companies", "name": "qb_customer_id", "label": "QuickBooks id", "type": "string",
             "fieldType": "text", "groupName": "companyinformation", "hasUniqueValue": True},
        ],
    }
    for name, rows in collections.items():
        (folder / f"{name}.json").write_bytes(orjson.dumps(rows))


@pytest.fixture
def sandbox(tmp_path: Path):
    write_fixtures(tmp_path / "fixtures")
    with start_sandbox(tmp_path / "fixtures", apps=["hubspot"]) as box:
        yield box


def test_first_sweep_then_incremental_search_with_deletes(sandbox, tmp_path: Path) -> None:
    assert SOURCES["hubspot"] is hubspot_source
    connection = parse_registry(sandbox.registry_document()).get(f"{TENANT}.hubspot")
    warehouse = tmp_path / "warehouse.duckdb"
    pipeline = make_pipeline("hubspot", TENANT, warehouse, tmp_path / "state")
    messages: list[str] = []

    def run() -> None:
        with build_client(connection, token_store=TokenStore(tmp_path / "tokens.json"),
                          environ=sandbox.environment()) as client:
            assert isinstance(client, HubSpotClient)
            pipeline.run(hubspot_source(client, TENANT, messages.append))

    def query(sql: str) -> list[tuple]:
        with duckdb.connect(str(warehouse), read_only=True) as db:
            return db.execute(sql).fetchall()

    run()
    assert query("SELECT id, properties__name, properties__mrr, properties__annualrevenue, properties__qb_customer_id "
                 "FROM raw_hubspot.companies ORDER BY id") == [
        ("101", "Nordwind GmbH", Decimal("1200.5"), Decimal("2500000"), "58"),
        ("102", "Kestrel Ltd", Decimal("99"), None, None),
        ("103", "Osprey SA", None, None, None)]
    assert query("SELECT tenant, id, properties__amount, properties__deal_currency_code FROM raw_hubspot.deals "
                 "ORDER BY id") == [(TENANT, "301", Decimal("1440.5"), "EUR"), (TENANT, "302", Decimal("10"), None)]
    assert query("SELECT record_id, field FROM raw_hubspot.rejected_records") == [("303", "properties.amount")]
    assert query("SELECT deal_id, company_id, is_primary FROM raw_hubspot.deal_companies ORDER BY 1, 2") == [
        ("301", "101", True), ("301", "102", False), ("302", "102", False)]
    assert query("SELECT count(*) FROM raw_hubspot.contacts") == [(2,)]
    emulator = sandbox.emulator("hubspot")
    assert not any(r["path"].endswith("/search") for r in emulator.request_log)  # the first run is a sweep

    # changes in HubSpot, including a custom property created after the first run
    with build_client(connection, token_store=TokenStore(tmp_path / "tokens.json"),
                      environ=sandbox.environment()) as client:
        client.update("companies", "101", {"name": "Nordwind AG"})
        client.archive("companies", "102")
        client.create_property("companies", {"name": "billing_status", "label": "Billing status", "type": "string",
                                             "fieldType": "text", "groupName": "companyinformation"})
        client.update("companies", "103", {"billing_status": "active"})
        client.dissociate("deals", "302", "companies", "102")
        client.associate("deals", "302", "companies", "103", [DEAL_TO_COMPANY])
        client.update("deals", "302", {"amount": "20"})
    emulator.request_log.clear()

    run()
    searched = {r["path"] for r in emulator.request_log if r["path"].endswith("/search")}
    assert searched == {f"/crm/v3/objects/{t}/search" for t in ("companies", "contacts", "deals")}
    assert not any(r["path"] == "/crm/v3/objects/companies" and "archived=false" in r["query"]
                   for r in emulator.request_log)  # no sweep of the live listing on the incremental run
    assert query("SELECT id, properties__name, properties__billing_status FROM raw_hubspot.companies "
                 "ORDER BY id") == [("101", "Nordwind AG", None), ("103", "Osprey SA", "active")]
    assert query("SELECT deal_id, company_id, is_primary FROM raw_hubspot.deal_companies ORDER BY 1, 2") == [
        ("301", "101", True), ("301", "102", False), ("302", "103", False)]
    assert query("SELECT properties__amount FROM raw_hubspot.deals WHERE id = '302'") == [(Decimal("20"),)]
    assert any("modified since" in m for m in messages)
    token = sandbox.environment()["LEDGERLINK_SANDBOX_ACME_HUBSPOT_ACCESS_TOKEN"]
    assert not any(token in m for m in messages)
