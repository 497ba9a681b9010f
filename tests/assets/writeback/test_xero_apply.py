"""Applying Xero writes against the Xero emulator over loopback: many elements per request under one
Idempotency-Key recorded before the call, per-element outcomes (a refused element fails alone), and a request
re-sent after a lost answer replayed by Xero rather than written twice."""

from __future__ import annotations

import duckdb
import httpx
import polars as pl
import pytest

from assets.writeback import outbox
from assets.writeback.apply import Applier, Clients
from assets.writeback.plan import Row, empty_plan
from assets.writeback.xero import XERO, request_key
from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.registry import parse_registry
from connectors.sandbox import identity
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.xero import XeroEmulator
from connectors.xero import XeroClient, token_url_for
from tests.connectors.test_xero import FAST, small_fixtures


@pytest.fixture
def served():
    with ServedEmulator(XeroEmulator(small_fixtures())) as served:
        yield served


def clients(served, tmp_path) -> Clients:
    registry = parse_registry({"tenants": {"acme": {"settings": {}, "connections": {
        "xero": {"base_url": served.url, "xero_tenant_id": identity.xero_tenant_id("acme"),
                 "secrets": {"client_id": "A", "client_secret": "B", "refresh_token": "C"}}}}}})
    store = TokenStore(tmp_path / "tokens.json")

    def build(connection, transport):
        auth = OAuth2RefreshAuth(token_url_for(served.url), identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET,
                                 store, "acme.xero", initial_refresh_token=identity.xero_initial_refresh_token("acme"),
                                 app="xero")
        return XeroClient(served.url, identity.xero_tenant_id("acme"), auth, retry=FAST, transport=transport)

    return Clients(registry, store, build=build)


def contact(name: str, number: str) -> Row:
    return Row("acme", XERO, "customer", "create", number, None, {"Name": name, "ContactNumber": number},
               "missing in Xero", counterpart_app=XERO)


def run(con, served, tmp_path):
    c = clients(served, tmp_path)
    try:
        return Applier(con, c, echo=lambda _: None).run()
    finally:
        c.close()


def test_one_request_per_collection_and_a_refused_element_fails_alone_then_a_lost_answer_is_replayed(served, tmp_path):
    rows = [contact("New A", "seq-a"), contact("Customer 1", "seq-dup"), contact("New B", "seq-b"),
            Row("acme", XERO, "product", "update_item", "p-1", "it-1", {"ItemID": "it-1",
                                                                        "SalesDetails": {"AccountCode": "200"}},
                "books elsewhere", counterpart_app=XERO)]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        outbox.merge_plan(con, pl.DataFrame([r.record() for r in rows], schema=empty_plan().schema))
        result = run(con, served, tmp_path)
        box = outbox.read(con).sort("sequence_id")
        requests = [r for r in httpx.get(f"{served.url}/_sandbox/requests").json()
                    if r["method"] in ("PUT", "POST") and "/api.xro/" in r["path"]]
        assert [(r["method"], r["path"].rsplit("/", 1)[1]) for r in requests] == [("PUT", "Contacts"),
                                                                                 ("POST", "Items")]
        # the three contacts went in one request under a key derived from their keys, recorded on each row
        key = request_key(r.key for r in rows[:3])
        assert requests[0]["idempotency_key"] == key
        contacts = box.filter(pl.col("entity") == "customer")
        assert set(contacts["request_id"]) == {key} and sorted(contacts["batch_item"]) == ["e1", "e2", "e3"]
        by_id = {r["sequence_id"]: r for r in contacts.to_dicts()}
        assert by_id["seq-a"]["state"] == by_id["seq-b"]["state"] == "confirmed"
        assert by_id["seq-a"]["app_id"] and by_id["seq-b"]["app_id"]
        refused = by_id["seq-dup"]
        assert refused["state"] == "failed" and not refused["retriable"]
        assert "create in Xero of customer (Sequence seq-dup)" in refused["error"]
        assert "already assigned to another contact" in refused["error"]
        assert result.counts["confirmed"] == 3 and result.counts["failed"] == 1
        # the answer was lost (a crash before it was recorded): the rows are 'sent' again, with their request
        con.execute("update writeback.outbox set state = 'sent', app_id = null where entity = 'customer'")
        again = run(con, served, tmp_path)
        replayed = outbox.read(con).filter(pl.col("entity") == "customer")
        assert {r["sequence_id"]: r["app_id"] for r in replayed.to_dicts() if r["state"] == "confirmed"} == {
            "seq-a": by_id["seq-a"]["app_id"], "seq-b": by_id["seq-b"]["app_id"]}
        assert again.counts["sent"] == 3
    writes = httpx.get(f"{served.url}/_sandbox/writes").json()
    created = [w for w in writes if w["entity"].lower().startswith("contact") and w["op"] == "create"]
    assert len(created) == 2 and {w["idempotency_key"] for w in created} == {key}  # once each, despite the resend
    resent = [r for r in httpx.get(f"{served.url}/_sandbox/requests").json() if r["method"] == "PUT"]
    assert [r["idempotency_key"] for r in resent] == [key, key]
