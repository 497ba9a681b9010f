"""Attio -> raw_attio through real Dagster materializations, from the Attio emulator over HTTP (a small fixture
folder made here): active values flattened to typed columns, custom attributes, rejected records, only changed
records loaded, hard deletes applied only after a sweep known to be complete."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pytest
from dagster import DagsterInstance, materialize
from dagster_dlt import DagsterDltResource

import assets.extract.attio as attio_extract
from assets.partitions import CONNECTION_PARTITIONS
from assets.resources import Ledgerlink
from connectors.registry import dump_registry, load_registry
from connectors.sandbox.emulator import json_response
from connectors.sandbox.launcher import start_sandbox

WS = "2e7c9a10-4b5d-4f6e-8a7b-1c2d3e4f5a6b"
ACTOR = {"type": "api-token", "id": "a1b2c3d4-0000-4000-8000-000000000001"}
KEY = "acme.attio"


def rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def value(kind: str, *, until: str | None = None, **fields) -> dict:
    return {"active_from": "2025-03-02T09:14:11.061281000Z", "active_until": until, "created_by_actor": ACTOR,
            **fields, "attribute_type": kind}


def record(n: int, obj: str, values: dict) -> dict:
    return {"id": {"workspace_id": WS, "object_id": "6f8e9d0c-1b2a-4c3d-9e4f-5a6b7c8d9e0f", "record_id": rid(n)},
            "created_at": f"2025-03-02T09:00:{n:02d}.000000000Z",
            "web_url": f"https://app.attio.com/acme/{obj}/{rid(n)}",
            "values": values}


def company(n: int, title: str, **extra) -> dict:
    return record(n, "company", {"name": [value("text", value=title)],
                                 "domains": [value("domain", domain=f"c{n}.example", root_domain=f"c{n}.example")],
                                 **extra})


def make_folder(root: Path) -> Path:
    folder = root / "fixtures"
    attio = folder / "acme" / "attio"
    attio.mkdir(parents=True)
    companies = [
        company(1, "Nordwind GmbH",
                name=[value("text", value="Nordwind Old", until="2025-03-01T00:00:00.000000000Z"),
                      value("text", value="Nordwind GmbH")],
                primary_location=[value("location", line_1="Hafenstrasse 5", line_2=None, line_3=None, line_4=None,
                                        locality="Hamburg", region=None, postcode="20457", country_code="DE",
                                        latitude=None, longitude=None)],
                qb_customer_id=[value("text", value="58")],
                tier=[value("select", option={"id": {"workspace_id": WS, "object_id": WS, "attribute_id": WS,
                                                     "option_id": WS}, "title": "Gold", "is_archived": False})]),
        *[company(n, f"Company {n}") for n in range(2, 7)],
    ]
    people = [record(20, "person", {
        "name": [value("personal-name", first_name="Ada", last_name="Lovelace", full_name="Ada Lovelace")],
        "email_addresses": [value("email-address", original_email_address="ada@c1.example",
                                  email_address="ada@c1.example", email_domain="c1.example",
                                  email_root_domain="c1.example", email_local_specifier="ada"),
                            value("email-address", original_email_address="a.l@c1.example",
                                  email_address="a.l@c1.example", email_domain="c1.example",
                                  email_root_domain="c1.example", email_local_specifier="a.l")],
        "company": [value("record-reference", target_object="companies", target_record_id=rid(1))]})]
    stage = {"id": {"workspace_id": WS, "object_id": WS, "attribute_id": WS, "status_id": WS}, "title": "Won 🎉",
             "is_archived": False, "celebration_enabled": True, "target_time_in_status": None}
    deals = [
        record(30, "deal", {"name": [value("text", value="Nordwind renewal")], "stage": [value("status", status=stage)],
                            "value": [value("currency", currency_value=1440.5, currency_code="EUR")],
                            "associated_company": [value("record-reference", target_object="companies",
                                                         target_record_id=rid(1))]}),
        record(31, "deal", {"name": [value("text", value="Big one")], "stage": [value("status", status=stage)],
                            "value": [value("currency", currency_value=123456789.1234, currency_code="USD")]}),
        # breaks the contract: the amount is not a number
        record(32, "deal", {"name": [value("text", value="Broken")],
                            "value": [value("currency", currency_value="lots", currency_code="EUR")]}),
    ]
    attributes = [
        {"object": "companies", "api_slug": "qb_customer_id", "type": "text", "is_unique": True},
        {"object": "companies", "api_slug": "tier", "type": "select", "options": ["Gold", "Silver"]},
        {"object": "deals", "api_slug": "value", "type": "currency", "default_currency_code": "EUR"},
    ]
    for name, rows in (("companies", companies), ("people", people), ("deals", deals), ("attributes", attributes)):
        (attio / f"{name}.json").write_bytes(orjson.dumps(rows))
    return folder


class Setup:
    def __init__(self, work: Path):
        self.box = start_sandbox(make_folder(work), apps=["attio"])
        registry_path = work / "connections.yaml"
        dump_registry(self.box.registry_document(), registry_path)
        self.registry = load_registry(registry_path)
        self.resource = Ledgerlink(registry_path=str(registry_path), warehouse_path=str(work / "wh.duckdb"),
                                   state_dir=str(work / "state"))
        self.instance = DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions(CONNECTION_PARTITIONS["attio"].name, self.registry.keys("attio"))
        self.emulator = self.box.emulator("attio")

    def run(self, *, raise_on_error: bool = True):
        from assets.extract.assets import RAW_ASSETS

        return materialize([RAW_ASSETS["attio"]], instance=self.instance, partition_key=KEY,
                           raise_on_error=raise_on_error,
                           resources={"dlt": DagsterDltResource(), "ledgerlink": self.resource})

    def client(self):
        return self.resource.client(self.registry.get(KEY))

    def query(self, sql: str, params=()) -> list[tuple]:
        with duckdb.connect(str(self.resource.warehouse_path), read_only=True) as con:
            return con.execute(sql, list(params)).fetchall()

    def ids(self, table: str) -> set[str]:
        return {row[0] for row in self.query(f"select id from raw_attio.{table} where tenant = 'acme'")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    saved = dict(os.environ)
    ext = Setup(tmp_path_factory.mktemp("attio"))
    os.environ.update(ext.box.environment())
    try:
        assert ext.run().success
        yield ext
    finally:
        ext.box.stop()
        os.environ.clear()
        os.environ.update(saved)


def loaded(result) -> dict[str, int]:
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        rows = materialization.metadata.get("rows_loaded")
        out[materialization.asset_key.path[-1]] = rows.value if rows is not None else 0
    return out


def test_active_values_land_as_typed_columns_with_custom_attributes(setup: Setup) -> None:
    assert setup.ids("companies") == {rid(n) for n in range(1, 7)}
    row = setup.query("select name, domains, primary_location__locality, primary_location__country_code, "
                      "qb_customer_id, tier, web_url from raw_attio.companies where id = ?", [rid(1)])[0]
    assert row[0] == "Nordwind GmbH"  # the active value, not the historic one
    assert orjson.loads(row[1]) == ["c1.example"]  # multiselect: the values as a JSON array
    assert row[2:6] == ("Hamburg", "DE", "58", "Gold") and row[6].endswith(rid(1))
    person = setup.query("select name, name__first_name, name__last_name, email_addresses, company, "
                         "company__target_object from raw_attio.people")[0]
    assert person[:3] == ("Ada Lovelace", "Ada", "Lovelace")
    assert orjson.loads(person[3]) == ["ada@c1.example", "a.l@c1.example"]
    assert person[4:] == (rid(1), "companies")
    deals = dict(setup.query("select id, value from raw_attio.deals"))
    assert deals == {rid(30): Decimal("1440.5"), rid(31): Decimal("123456789.1234")}  # exact, never a float
    types = dict(setup.query("select column_name, data_type from information_schema.columns "
                             "where table_schema = 'raw_attio' and table_name = 'deals'"))
    assert types["value"] == "DECIMAL(38,9)" and types["value__currency_code"] == "VARCHAR"
    assert setup.query("select stage, associated_company from raw_attio.deals where id = ?", [rid(30)]) == \
        [("Won 🎉", rid(1))]
    rejected = setup.query("select collection, record_id, field from raw_attio.rejected_records")
    assert rejected == [("deals", rid(32), "value")]


def test_unchanged_records_are_not_reloaded_and_changes_are(setup: Setup) -> None:
    assert sum(loaded(setup.run()).values()) == 0
    with setup.client() as client:
        client.update_record("companies", rid(2), {"name": "Company Two"})
        made = client.assert_record("companies", "qb_customer_id", {"qb_customer_id": "77", "name": "New Co"})
    rows = loaded(setup.run())
    assert rows.get("companies") == 2 and not rows.get("people") and not rows.get("deals")
    assert setup.query("select name from raw_attio.companies where id = ?", [rid(2)]) == [("Company Two",)]
    assert made["id"]["record_id"] in setup.ids("companies")


def test_a_hard_delete_is_applied_after_a_complete_sweep_and_not_after_one_cut_short(setup: Setup,
                                                                                      monkeypatch) -> None:
    with setup.client() as client:
        client.delete_record("companies", rid(3))
    # small pages so that the sweep has several; the second query of companies fails (not retriable)
    monkeypatch.setattr(attio_extract, "PAGE_SIZE", 2)
    original = setup.emulator.query_records
    calls = {"n": 0}

    def failing_second_page(request, ws, ctx, object):
        if object == "companies":
            calls["n"] += 1
            if calls["n"] == 2:
                return setup.emulator.error_response(400, "sandbox: sweep cut short")
        return original(request, ws, ctx, object)

    monkeypatch.setattr(setup.emulator, "query_records", failing_second_page)
    assert not setup.run(raise_on_error=False).success
    assert calls["n"] == 2
    assert rid(3) in setup.ids("companies")  # nothing deleted by a sweep that did not finish
    monkeypatch.setattr(setup.emulator, "query_records", original)
    assert setup.run().success
    ids = setup.ids("companies")
    assert rid(3) not in ids and {rid(1), rid(2), rid(4), rid(5), rid(6)} <= ids


def test_a_sweep_whose_rows_keep_moving_loads_but_deletes_nothing(setup: Setup, monkeypatch) -> None:
    with setup.client() as client:
        client.delete_record("companies", rid(4))
        client.update_record("companies", rid(2), {"name": "Company Deux"})  # on the first page
    monkeypatch.setattr(attio_extract, "PAGE_SIZE", 2)
    original = setup.emulator.query_records

    def shifting(request, ws, ctx, object):
        answer = original(request, ws, ctx, object)
        if object == "companies" and orjson.loads(request.get_data()).get("offset", 0) > 0:
            # every later page starts one row late, as if an earlier record had just been deleted
            return json_response({"data": orjson.loads(answer.get_data())["data"][1:]})
        return answer

    monkeypatch.setattr(setup.emulator, "query_records", shifting)
    assert setup.run().success
    assert rid(4) in setup.ids("companies")  # not known to be complete: no deletes...
    assert setup.query("select name from raw_attio.companies where id = ?", [rid(2)]) == [("Company Deux",)]
    monkeypatch.setattr(setup.emulator, "query_records", original)  # ...but what it saw still loads
    assert setup.run().success
    assert rid(4) not in setup.ids("companies") and {rid(2), rid(5)} <= setup.ids("companies")
