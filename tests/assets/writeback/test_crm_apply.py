"""Applying CRM writes against the HubSpot, Salesforce and Attio emulators over loopback: batch update / upsert
(HubSpot ≤ 100 per call, idProperty on the Sequence-customer-id property; Salesforce sObject Collections,
allOrNone=false, upsert by external id; Attio assert with matching_attribute, PUT by record id), each request's
members recorded before the call, per-record outcomes (a refused record fails alone), and each CRM's rate limit:
HubSpot's 429 (10-second window, no Retry-After), Attio's 429 (Retry-After as an HTTP date), Salesforce's 403
REQUEST_LIMIT_EXCEEDED (not retried: the rows stay pending with the reason)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal

import duckdb
import polars as pl
import pytest

from assets.writeback import outbox
from assets.writeback.apply import Applier, Clients
from assets.writeback.crm import create_payload, request_key, update_payload
from assets.writeback.plan import Row, empty_plan
from connectors.attio import AttioClient
from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.http import RateLimiter, RetryPolicy
from connectors.hubspot import HubSpotClient
from connectors.registry import parse_registry
from connectors.salesforce import SalesforceClient, token_url_for
from connectors.sandbox import identity
from connectors.sandbox.attio import AttioEmulator
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.hubspot import HubSpotEmulator
from connectors.sandbox.salesforce import SalesforceEmulator, make_id
from connectors.sandbox.sequence import SequenceEmulator
from connectors.sequence import SequenceClient
from tests.connectors.conftest import Control

T = "acme"
CRMS = ("hubspot", "salesforce", "attio")
SYNC = {
    "hubspot": {"sequence_customer_id": "sequence_customer_id", "billing_status": "sequence_billing_status",
                "mrr": "sequence_mrr"},
    "salesforce": {"sequence_customer_id": "Sequence_Customer_Id__c",
                   "billing_status": "Sequence_Billing_Status__c", "mrr": "Sequence_MRR__c"},
    "attio": {"sequence_customer_id": "sequence_customer_id", "billing_status": "sequence_billing_status",
              "mrr": "sequence_mrr"},
}
SF_BLUE, SF_GREEN = make_id("001", 101), make_id("001", 102)
STAMP = "2025-01-02T09:00:00.000Z"
# waits the clients asked for (HubSpot's 10 s window, Attio's Retry-After date): recorded, slept only briefly
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=30.0, jitter=False)


def hubspot_company(cid: str, name: str, **props: str) -> dict:
    return {"id": cid, "properties": {"name": name, **props}, "createdAt": STAMP, "updatedAt": STAMP,
            "archived": False}


def fixtures() -> dict[str, dict]:
    group = "companyinformation"
    return {
        "hubspot": {T: {
            "companies": [hubspot_company("5001", "Blue Analytics Ltd", sequence_customer_id="c1",
                                          sequence_billing_status="active", sequence_mrr="900"),
                          hubspot_company("5002", "Green Robotics Ltd")],
            "properties": [
                {"objectType": "companies", "name": "sequence_customer_id", "label": "Sequence customer id",
                 "type": "string", "fieldType": "text", "groupName": group, "hasUniqueValue": True},
                {"objectType": "companies", "name": "sequence_billing_status", "label": "Sequence billing status",
                 "type": "enumeration", "fieldType": "select", "groupName": group,
                 "options": [{"label": "Active", "value": "active"}, {"label": "Archived", "value": "archived"}]},
                {"objectType": "companies", "name": "sequence_mrr", "label": "Sequence MRR", "type": "number",
                 "fieldType": "number", "groupName": group}]}},
        "salesforce": {T: {
            "Account": [{"Id": SF_BLUE, "Name": "Blue Analytics Ltd", "Sequence_Customer_Id__c": "c1",
                         "Sequence_Billing_Status__c": "active", "Sequence_MRR__c": 900.0},
                        {"Id": SF_GREEN, "Name": "Green Robotics Ltd"}],
            "FieldDefinition": [
                {"sobject": "Account", "name": "Sequence_Customer_Id__c", "type": "string", "externalId": True,
                 "unique": True},
                {"sobject": "Account", "name": "Sequence_Billing_Status__c", "type": "picklist"},
                {"sobject": "Account", "name": "Sequence_MRR__c", "type": "currency"}]}},
        "attio": {T: {
            "companies": [],
            "attributes": [
                {"object": "companies", "api_slug": "sequence_customer_id", "type": "text", "is_unique": True},
                {"object": "companies", "api_slug": "sequence_billing_status", "type": "select",
                 "options": ["active", "archived"]},
                {"object": "companies", "api_slug": "sequence_mrr", "type": "currency",
                 "default_currency_code": "GBP"}]}},
        "sequence": {T: {"customers": []}},
    }


class Sandbox:
    """The three CRM emulators and Sequence, served on loopback, and a way to apply the outbox to them."""

    def __init__(self, stack: ExitStack, tmp_path, data: dict[str, dict] | None = None):
        data = data or fixtures()
        self.served = {
            "hubspot": stack.enter_context(ServedEmulator(HubSpotEmulator(data["hubspot"]))),
            "salesforce": stack.enter_context(ServedEmulator(SalesforceEmulator(data["salesforce"]))),
            "attio": stack.enter_context(ServedEmulator(AttioEmulator(data["attio"]))),
            "sequence": stack.enter_context(ServedEmulator(SequenceEmulator(data["sequence"]))),
        }
        self.control = {app: Control(s.url) for app, s in self.served.items()}
        for control in self.control.values():
            stack.callback(control.close)
        self.tmp_path = tmp_path
        self.waits: list[tuple[str, float]] = []

    def registry(self):
        from connectors.registry import REQUIRED_SECRETS

        def secrets(app: str) -> dict[str, str]:  # names of variables: the clients here are built directly
            return {name: f"UNUSED_{name.upper()}" for name in REQUIRED_SECRETS[app]}

        connections = {app: {"base_url": self.served[app].url, "secrets": secrets(app),
                             "settings": {"sync_fields": SYNC[app]}} for app in CRMS}
        connections["sequence"] = {"base_url": self.served["sequence"].url, "secrets": secrets("sequence")}
        return parse_registry({"tenants": {T: {"settings": {}, "connections": connections}}})

    def clients(self) -> Clients:
        store = TokenStore(self.tmp_path / "tokens.json")
        unlimited = RateLimiter(per_minute=1_000_000)

        def sleep(app):
            return lambda seconds: self.waits.append((app, seconds))

        def build(connection, transport):
            url = self.served[connection.app].url
            if connection.app == "hubspot":
                return HubSpotClient(url, identity.hubspot_access_token(T), retry=FAST, transport=transport,
                                     limiter=unlimited, sleep=sleep("hubspot"))
            if connection.app == "salesforce":
                auth = OAuth2RefreshAuth(token_url_for(url), identity.SALESFORCE_CLIENT_ID,
                                         identity.SALESFORCE_CLIENT_SECRET, store, connection.key,
                                         initial_refresh_token=identity.salesforce_initial_refresh_token(T),
                                         app="salesforce")
                return SalesforceClient(url, auth, retry=FAST, transport=transport, sleep=sleep("salesforce"))
            if connection.app == "attio":
                return AttioClient(url, identity.attio_access_token(T), retry=FAST, transport=transport,
                                   limiter=unlimited, write_limiter=unlimited, sleep=sleep("attio"))
            client_id, secret = identity.sequence_credentials(T)
            return SequenceClient(url, client_id, secret, retry=FAST, transport=transport)

        return Clients(self.registry(), store, build=build)

    def apply(self, con, **kw):
        clients = self.clients()
        try:
            return Applier(con, clients, echo=lambda _: None, **kw).run()
        finally:
            clients.close()

    def writes(self, app: str) -> list[dict]:
        return [w for w in self.control[app].writes() if w["tenant"] == T]


@pytest.fixture
def box(tmp_path) -> Iterator[Sandbox]:
    with ExitStack() as stack:
        yield Sandbox(stack, tmp_path)


def plan_rows(con, rows: list[Row]) -> None:
    outbox.merge_plan(con, pl.DataFrame([r.record() for r in rows], schema=empty_plan().schema))


def create(app: str, sequence_id: str, name: str, mrr: str = "1200") -> Row:
    values = {"sequence_customer_id": sequence_id, "name": name, "line1": "1 High Street", "city": "London",
              "postal_code": "EC1V 4AA", "country": "GB", "billing_status": "active", "mrr": Decimal(mrr),
              "currency": "GBP"}
    return Row(T, app, "customer", "create", sequence_id, None, create_payload(app, values, SYNC[app]),
               "missing in the CRM", counterpart_app=app)


def update(app: str, sequence_id: str, record_id: str, operation: str = "update", **values) -> Row:
    return Row(T, app, "customer", operation, sequence_id, record_id, update_payload(app, record_id, values, SYNC[app]),
               "differs", counterpart_app=app)


def box_rows(con, app: str) -> dict[str, dict]:
    return {r["sequence_id"]: r for r in outbox.read(con).filter(pl.col("app") == app).to_dicts()}


def test_hubspot_one_batch_per_endpoint_upsert_on_the_sequence_id_and_a_refused_input_fails_alone(box, tmp_path):
    rows = [create("hubspot", "c2", "Fresh Start Ltd"), create("hubspot", "c3", "Orange Ltd"),
            update("hubspot", "c1", "5001", mrr=Decimal("1200")),
            update("hubspot", "c4", "5002", operation="link", sequence_customer_id="c4", billing_status="active"),
            update("hubspot", "c9", "9999999", mrr=Decimal("1"))]  # no such company
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, rows)
        result = box.apply(con)
        by_id = box_rows(con, "hubspot")
    batches = [r["path"].rsplit("/", 1)[1] for r in box.control["hubspot"].requests("/batch/")]
    assert sorted(batches) == ["update", "upsert"]  # five writes, two requests
    assert result.requests[f"{T}.hubspot"] == 2
    assert by_id["c2"]["state"] == by_id["c3"]["state"] == "confirmed" and by_id["c2"]["app_id"]
    assert by_id["c2"]["request_id"] == request_key("hubspot", [rows[0].key, rows[1].key])
    assert sorted([by_id["c2"]["batch_item"], by_id["c3"]["batch_item"]]) == ["i1", "i2"]
    assert by_id["c1"]["state"] == by_id["c4"]["state"] == "confirmed"
    assert by_id["c9"]["state"] == "failed" and not by_id["c9"]["retriable"]
    assert "update in HubSpot of company (Sequence c9, HubSpot 9999999)" in by_id["c9"]["error"]
    assert "OBJECT_NOT_FOUND" in by_id["c9"]["error"]
    # the CRM holds what Sequence says, as strings
    client = box.clients().get(T, "hubspot")
    blue = client.get("companies", "5001", properties=["sequence_mrr"])
    made = client.get("companies", "c2", properties=["name", "country", "sequence_mrr"],
                      id_property="sequence_customer_id")
    assert blue["properties"]["sequence_mrr"] == "1200.00"
    assert made["properties"] == {**made["properties"], "name": "Fresh Start Ltd", "country": "United Kingdom",
                                  "sequence_mrr": "1200.00"}
    # confirmed creates and links are the CRM's twins in reconcile.links (when that table exists) and have app ids
    assert by_id["c2"]["app_id"] == made["id"]


def test_salesforce_collections_upsert_by_external_id_and_update_with_per_record_results(box, tmp_path):
    rows = [create("salesforce", "c2", "Fresh Start Ltd"), create("salesforce", "c1", "Dup of Blue Ltd"),
            update("salesforce", "c1", SF_BLUE, mrr=Decimal("1200"), billing_status="archived"),
            update("salesforce", "c5", make_id("001", 999), mrr=Decimal("5"))]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, rows)
        result = box.apply(con)
        box_ = outbox.read(con).filter(pl.col("app") == "salesforce")
    states = {(r["operation"], r["sequence_id"]): r for r in box_.to_dicts()}
    paths = [r["path"] for r in box.control["salesforce"].requests("/composite/sobjects")]
    assert len(paths) == 2 and any(p.endswith("/Account/Sequence_Customer_Id__c") for p in paths)
    assert result.requests[f"{T}.salesforce"] == 3  # the token, then one call per endpoint
    assert states[("create", "c2")]["state"] == "confirmed" and states[("create", "c2")]["app_id"].startswith("001")
    # an upsert on an id a company already holds updates it: no second company for c1
    assert states[("create", "c1")]["state"] == "confirmed" and states[("create", "c1")]["app_id"] == SF_BLUE
    assert states[("update", "c1")]["state"] == "confirmed"
    refused = states[("update", "c5")]
    assert refused["state"] == "failed" and "INVALID_CROSS_REFERENCE_KEY" in refused["error"]
    client = box.clients().get(T, "salesforce")
    blue = client.get("Account", SF_BLUE)
    assert blue["Sequence_MRR__c"] == 1200 and blue["Sequence_Billing_Status__c"] == "archived"
    creates = [w for w in box.writes("salesforce") if w["op"] == "create"]
    assert len(creates) == 1


def test_attio_assert_on_the_sequence_id_then_put_by_record_id(box, tmp_path):
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, [create("attio", "c2", "Fresh Start Ltd")])
        box.apply(con)
        made = box_rows(con, "attio")["c2"]
        assert made["state"] == "confirmed" and made["app_id"]
        plan_rows(con, [update("attio", "c2", made["app_id"], mrr=Decimal("15.5"), billing_status="archived")])
        box.apply(con)
        assert set(outbox.read(con)["state"]) == {"confirmed"}
    record = box.clients().get(T, "attio").get_record("companies", made["app_id"])
    assert record["values"]["sequence_mrr"][0]["currency_value"] == 15.5
    assert record["values"]["sequence_billing_status"][0]["option"]["title"] == "archived"
    assert [(w["op"], w.get("via")) for w in box.writes("attio")] == [("create", "assert"), ("update", "put")]


def test_hubspot_429_waits_out_the_ten_second_window_and_writes_once(box, tmp_path):
    box.control["hubspot"].fault("status", status=429, path="/batch/upsert", times=1)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, [create("hubspot", "c2", "Fresh Start Ltd")])
        box.apply(con)
        assert box_rows(con, "hubspot")["c2"]["state"] == "confirmed"
    answered = box.control["hubspot"].requests("/batch/upsert")
    assert [r["status"] for r in answered] == [429, 200]
    assert ("hubspot", 10.0) in box.waits  # TEN_SECONDLY_ROLLING, no Retry-After: the window's length
    assert len([w for w in box.writes("hubspot") if w["op"] == "create"]) == 1


def test_hubspot_429_body_names_the_policy(box):
    box.control["hubspot"].fault("status", status=429, path="/batch/upsert", times=1)
    import httpx
    answer = httpx.post(f"{box.served['hubspot'].url}/crm/v3/objects/companies/batch/upsert",
                        headers={"Authorization": f"Bearer {identity.hubspot_access_token(T)}"}, json={"inputs": []})
    assert answer.status_code == 429 and "retry-after" not in answer.headers
    body = answer.json()
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"


def test_attio_429_waits_until_the_retry_after_date(box, tmp_path):
    box.control["attio"].fault("status", status=429, path="/records", times=1)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, [create("attio", "c2", "Fresh Start Ltd")])
        box.apply(con)
        assert box_rows(con, "attio")["c2"]["state"] == "confirmed"
    statuses = [r["status"] for r in box.control["attio"].requests("/records")]
    assert statuses == [429, 200]
    waits = [s for app, s in box.waits if app == "attio"]
    assert len(waits) == 1 and 0 <= waits[0] <= 2.0  # the HTTP date of the next second, not a backoff guess
    assert len(box.writes("attio")) == 1


def test_salesforce_request_limit_exceeded_is_not_retried_and_the_rows_stay_pending(box, tmp_path):
    control = box.control["salesforce"]
    control.rate_limits(enabled=True)
    control.http.put("/_sandbox/api-usage", json={"daily_api_limit": 0, "reset": True}).raise_for_status()
    rows = [create("salesforce", "c2", "Fresh Start Ltd"), update("salesforce", "c1", SF_BLUE, mrr=Decimal("1"))]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, rows)
        result = box.apply(con)
        held = outbox.read(con)
        assert set(held["state"]) == {"planned"}
        assert all("REQUEST_LIMIT_EXCEEDED" in e and "next apply" in e for e in held["error"])
        calls = [r for r in control.requests("/services/data/") if "/composite/" in r["path"]]
        assert [r["status"] for r in calls] == [403]  # one refused call, not retried, the other not sent
        assert result.requests[f"{T}.salesforce"] == 2  # the token and that call
        assert outbox.pending(con).height == 2
        # the allocation is back: the next apply sends both
        control.http.put("/_sandbox/api-usage", json={"daily_api_limit": 1000, "reset": True}).raise_for_status()
        box.apply(con)
        assert set(outbox.read(con)["state"]) == {"confirmed"}
    assert len([w for w in box.writes("salesforce") if w["op"] == "create"]) == 1


def test_batches_hold_at_most_100_hubspot_inputs_and_200_salesforce_records(box, tmp_path):
    rows = [create("hubspot", f"n{n}", f"Company {n}") for n in range(150)]
    rows += [create("salesforce", f"n{n}", f"Company {n}") for n in range(250)]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, rows)
        result = box.apply(con)
        sizes = (outbox.read(con).group_by("app", "request_id").len().group_by("app")
                 .agg(pl.col("len").sort(descending=True)).sort("app"))
        assert set(outbox.read(con)["state"]) == {"confirmed"}
    assert dict(sizes.iter_rows()) == {"hubspot": [100, 50], "salesforce": [200, 50]}
    assert result.requests[f"{T}.hubspot"] == 2 and result.requests[f"{T}.salesforce"] == 3  # + the token
    assert len([w for w in box.writes("hubspot") if w["op"] == "create"]) == 150
    assert len([w for w in box.writes("salesforce") if w["op"] == "create"]) == 250
