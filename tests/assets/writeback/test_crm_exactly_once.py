"""Exactly once for CRM write-back, against the emulators over loopback: an apply that dies after a request
reached the CRM and before its answer was recorded leaves the rows `sent` with their request's members; the next
apply re-sends the same members (same request id, same order), and the CRM's upsert semantics (HubSpot batch
upsert by idProperty, Salesforce upsert by external id, Attio assert on a unique attribute) make the second send
an update, never a second company. A closed-won company's Sequence customer is created once (look-up by alias
before every create) and its id lands in the company's link field. The emulators' write logs are the proof."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import duckdb
import httpx
import polars as pl
import pytest

from assets.writeback import outbox
from assets.writeback.apply import Applier
from assets.writeback.plan import Row, ref
from tests.assets.writeback.test_crm_apply import SYNC, T, Sandbox, create, plan_rows, update_payload


class Crash(BaseException):
    """The process dies (a SIGKILL, a power cut) right after the CRM answered: nothing catches it."""


class CrashAfter(httpx.BaseTransport):
    """Passes requests through; the first whose path contains `path` (and method) reaches the app, and then the
    process 'dies' before the answer is read."""

    def __init__(self, inner: httpx.BaseTransport, path: str, method: str):
        self.inner, self.path, self.method, self.armed = inner, path, method, True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if self.armed and self.path in request.url.path and request.method == self.method:
            self.armed = False
            response.read()
            raise Crash(f"died after {request.method} {request.url.path}")
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def box(tmp_path) -> Iterator[Sandbox]:
    with ExitStack() as stack:
        yield Sandbox(stack, tmp_path)


def crashing_apply(box: Sandbox, con, app: str, path: str, method: str) -> None:
    clients = box.clients()
    build = clients._build
    clients._build = lambda connection, transport: build(
        connection, CrashAfter(transport, path, method) if connection.app == app else transport)
    try:
        with pytest.raises(Crash):
            Applier(con, clients, echo=lambda _: None).run()
    finally:
        clients.close()


CASES = {  # app -> (the request that "dies", what the CRM logs for a company it created)
    "hubspot": ("/batch/upsert", "POST"),
    "salesforce": ("/composite/sobjects/Account/", "PATCH"),
    "attio": ("/v2/objects/companies/records", "PUT"),
}


@pytest.mark.parametrize("app", sorted(CASES))
def test_a_crash_between_send_and_confirm_resends_the_same_members_and_makes_no_second_company(box, tmp_path, app):
    path, method = CASES[app]
    rows = [create(app, "c2", "Fresh Start Ltd"), create(app, "c3", "Orange Ltd", mrr="7.25")]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, rows)
        crashing_apply(box, con, app, path, method)
        sent = outbox.read(con).sort("sequence_id")
        # the request reached the CRM: its members were recorded before it went, and nothing after it
        assert set(sent["state"]) == {"sent"} if app != "attio" else "sent" in set(sent["state"])
        first = dict(zip(sent["idempotency_key"], sent["request_id"], strict=True))
        made = [w for w in box.writes(app) if w["op"] == "create"]
        assert len(made) == 1 if app == "attio" else len(made) == 2  # Attio writes one record per request

        box.apply(con)
        done = outbox.read(con).sort("sequence_id")
        assert set(done["state"]) == {"confirmed"} and done["app_id"].null_count() == 0
        for key, request_id in first.items():  # re-sent under the request it was recorded with
            if request_id is not None:
                assert done.filter(pl.col("idempotency_key") == key)["request_id"][0] == request_id
        assert done["attempts"].max() == 2
    creates = [w for w in box.writes(app) if w["op"] == "create"]
    assert len(creates) == 2  # one company per Sequence customer, whatever was sent twice
    ids = done["app_id"].to_list()
    assert sorted({w["id"] for w in creates}) == sorted(ids)

    # and planning the same creates again later changes nothing: a confirmed create happens once
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, [create(app, "c2", "Fresh Start Ltd"), create(app, "c3", "Orange Ltd", mrr="7.25")])
        box.apply(con)
    assert len([w for w in box.writes(app) if w["op"] == "create"]) == 2


def import_rows(app: str, record_id: str, alias_id: str) -> list[Row]:
    payload = {"legalName": "Green Robotics Ltd",
               "address": {"line1": "2 Low Road", "town": "Leeds", "postcode": "LS1 1AA", "country": "GB"},
               "taxStatus": "TAXED",
               "contacts": [{"name": "Green Robotics Ltd", "email": "jo@green.example",
                             "billingPreference": "PRIMARY"}],
               "customerAliases": [f"{app}-{alias_id}"],
               "integrationIds": [{"service": "HubSpot", "id": alias_id}]}
    imported = Row(T, "sequence", "customer", "import", None, record_id, payload, "closed-won, no customer",
                   counterpart_app=app)
    follow = Row(T, app, "customer", "update", None, record_id,
                 update_payload(app, record_id, {"sequence_customer_id": ref(imported.key, "sequence_id"),
                                                           "billing_status": "active"},
                                SYNC[app]),
                 "stores the new Sequence id", depends_on=[imported.key], counterpart_app=app)
    return [imported, follow]


def test_a_closed_won_company_becomes_one_sequence_customer_and_gets_its_id_after_a_crash(box, tmp_path):
    rows = import_rows("hubspot", "5002", "5002")
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        plan_rows(con, rows)
        crashing_apply(box, con, "sequence", "/customers", "POST")  # created in Sequence, answer lost
        assert outbox.read(con, keys=[rows[0].key])["state"][0] == "sent"
        box.apply(con)
        done = {r["operation"]: r for r in outbox.read(con).to_dicts()}
    assert done["import"]["state"] == done["update"]["state"] == "confirmed"
    customers = [w for w in box.writes("sequence") if w["op"] == "create" and w["entity"] == "customer"]
    assert len(customers) == 1  # the look-up by alias found the first create
    new_id = done["import"]["sequence_id"]
    assert new_id and done["update"]["sequence_id"] == new_id
    company = box.clients().get(T, "hubspot").get("companies", "5002", properties=["sequence_customer_id"])
    assert company["properties"]["sequence_customer_id"] == new_id  # the $ref took the Sequence id, not the CRM's
