"""Salesforce extraction end to end: a small fixture folder served by the Salesforce emulator (start_sandbox),
read with the registry's client into a temporary DuckDB through the dlt source: a complete sweep first, then an
incremental queryAll on SystemModstamp that carries changes, a new custom field and recycle-bin deletes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pytest
from dagster import DagsterInstance, materialize
from dagster_dlt import DagsterDltResource

from assets.extract.assets import RAW_ASSETS, SOURCES
from assets.extract.loading import make_pipeline
from assets.extract.salesforce import salesforce_source
from assets.partitions import CONNECTION_PARTITIONS
from assets.resources import Ledgerlink
from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.registry import dump_registry, load_registry, parse_registry
from connectors.salesforce import SalesforceClient
from connectors.sandbox.launcher import start_sandbox
from connectors.sandbox.salesforce import make_id

TENANT = "acme"
NORDWIND, KESTREL, OSPREY = make_id("001", 1), make_id("001", 2), make_id("001", 3)
STAMP = "2025-03-05T10:39:50.000+0000"


def write_fixtures(root: Path) -> None:
    folder = root / TENANT / "salesforce"
    folder.mkdir(parents=True)
    collections = {
        "Account": [
            {"attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{NORDWIND}"},
             "Id": NORDWIND, "Name": "Nordwind GmbH", "External_Id__c": "qb-58", "SystemModstamp": STAMP,
             "BillingAddress": {"street": "Hafenstrasse 5", "city": "Hamburg", "state": None, "postalCode": "20457",
                                "country": "Germany", "latitude": None, "longitude": None, "geocodeAccuracy": None}},
            {"Id": KESTREL, "Name": "Kestrel Ltd", "BillingCity": "Leeds", "SystemModstamp": STAMP},
            {"Id": OSPREY, "Name": "Osprey SA", "SystemModstamp": STAMP},
            {"Id": make_id("001", 4), "Name": "Binned", "IsDeleted": True, "SystemModstamp": STAMP},
        ],
        "Contact": [{"Id": make_id("003", 1), "AccountId": KESTREL, "FirstName": "Jana", "LastName": "Krüger",
                     "Email": "jana@kestrel.example", "SystemModstamp": STAMP}],
        "Opportunity": [
            {"Id": make_id("006", 1), "Name": "Nordwind renewal", "AccountId": NORDWIND, "StageName": "Closed Won",
             "Amount": 1440.5, "CloseDate": "2025-03-31", "SystemModstamp": STAMP},
            {"Id": make_id("006", 2), "Name": "Kestrel upsell", "AccountId": KESTREL, "StageName": "Prospecting",
             "Amount": 0.1, "CloseDate": "2025-06-30", "SystemModstamp": STAMP}],
        "FieldDefinition": [
            {"sobject": "Account", "name": "External_Id__c", "type": "string", "externalId": True, "unique": True},
            {"sobject": "Account", "name": "Sequence_MRR__c", "type": "currency"}],
    }
    for name, rows in collections.items():
        (folder / f"{name}.json").write_bytes(orjson.dumps(rows))


@pytest.fixture
def sandbox(tmp_path: Path):
    write_fixtures(tmp_path / "fixtures")
    with start_sandbox(tmp_path / "fixtures", apps=["salesforce"]) as box:
        yield box


def test_first_sweep_then_incremental_query_all_with_deletes(sandbox, tmp_path: Path) -> None:
    assert SOURCES["salesforce"] is salesforce_source
    connection = parse_registry(sandbox.registry_document()).get(f"{TENANT}.salesforce")
    warehouse = tmp_path / "warehouse.duckdb"
    pipeline = make_pipeline("salesforce", TENANT, warehouse, tmp_path / "state")
    messages: list[str] = []
    store = TokenStore(tmp_path / "tokens.json")

    def run() -> None:
        with build_client(connection, token_store=store, environ=sandbox.environment()) as client:
            assert isinstance(client, SalesforceClient)
            pipeline.run(salesforce_source(client, TENANT, messages.append))

    def query(sql: str) -> list[tuple]:
        with duckdb.connect(str(warehouse), read_only=True) as db:
            return db.execute(sql).fetchall()

    run()
    assert query("SELECT tenant, id, name, billing_address__city, billing_address__postal_code, external_id_c "
                 "FROM raw_salesforce.account ORDER BY name") == [
        (TENANT, KESTREL, "Kestrel Ltd", "Leeds", None, None),
        (TENANT, NORDWIND, "Nordwind GmbH", "Hamburg", "20457", "qb-58"),
        (TENANT, OSPREY, "Osprey SA", None, None, None)]
    columns = {c for (c,) in query("SELECT column_name FROM information_schema.columns "
                                   "WHERE table_schema = 'raw_salesforce' AND table_name = 'account'")}
    assert "billing_city" not in columns and "attributes__url" not in columns
    assert query("SELECT data_type FROM information_schema.columns WHERE table_schema = 'raw_salesforce' "
                 "AND table_name = 'opportunity' AND column_name = 'amount'") == [("DECIMAL(38,9)",)]
    assert query("SELECT name, amount, is_won FROM raw_salesforce.opportunity ORDER BY name") == [
        ("Kestrel upsell", Decimal("0.1"), False), ("Nordwind renewal", Decimal("1440.5"), True)]
    assert query("SELECT name, email, account_id FROM raw_salesforce.contact") == [
        ("Jana Krüger", "jana@kestrel.example", KESTREL)]
    emulator = sandbox.emulator("salesforce")
    assert not any(r["path"].endswith("/queryAll") for r in emulator.request_log)  # the first run is a sweep

    with build_client(connection, token_store=store, environ=sandbox.environment()) as client:
        client.update("Account", NORDWIND, {"Name": "Nordwind AG", "Sequence_MRR__c": 120.25})
        client.delete("Account", KESTREL)  # cascades to its contact and opportunity
        client.upsert("Account", "External_Id__c", "qb-99", {"Name": "Heron BV", "BillingCity": "Utrecht"})
    emulator.request_log.clear()

    run()
    queries = [r for r in emulator.request_log if "/query" in r["path"]]
    assert queries and all(r["path"].endswith("/queryAll") and "SystemModstamp" in r["query"] for r in queries)
    assert query("SELECT name, billing_address__city, sequence_mrr_c FROM raw_salesforce.account ORDER BY name") == [
        ("Heron BV", "Utrecht", None), ("Nordwind AG", "Hamburg", Decimal("120.25")), ("Osprey SA", None, None)]
    assert query("SELECT count(*) FROM raw_salesforce.contact") == [(0,)]
    assert query("SELECT name FROM raw_salesforce.opportunity") == [("Nordwind renewal",)]
    assert any("deleted" in m and "changed since" in m for m in messages)

    secret = sandbox.environment()
    assert not any(value in m for value in secret.values() for m in messages)


def test_the_dagster_asset_materializes_a_partition(sandbox, tmp_path: Path, monkeypatch) -> None:
    for name, value in sandbox.environment().items():
        monkeypatch.setenv(name, value)
    registry_path = tmp_path / "connections.yaml"
    dump_registry(sandbox.registry_document(), registry_path)
    key = f"{TENANT}.salesforce"
    assert load_registry(registry_path).keys("salesforce") == [key]
    resource = Ledgerlink(registry_path=str(registry_path), warehouse_path=str(tmp_path / "wh.duckdb"),
                          state_dir=str(tmp_path / "state"))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CONNECTION_PARTITIONS["salesforce"].name, [key])
    result = materialize([RAW_ASSETS["salesforce"]], instance=instance, partition_key=key,
                         resources={"dlt": DagsterDltResource(), "ledgerlink": resource})
    assert result.success
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM raw_salesforce.account").fetchall() == [(3,)]
        assert db.execute("SELECT count(*) FROM raw_salesforce.opportunity").fetchall() == [(2,)]
