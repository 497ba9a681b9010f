"""Planning CRM write-back (assets/writeback/crm.py) from the real CRM reconciliation of a small company: updates
of the fields that differ (synced values as reconcile computes them), creates as upserts on the Sequence id,
imports of closed-won companies with the follow-up that stores the new id ($ref), one import for a company
several apps would import, and contracts (checks/payloads_crm.py) naming the record and the field."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import pytest

from assets.reconcile.assets import compute_links, compute_mismatches
from assets.writeback.plan import PlanInputs, build_plan
from connectors.sandbox.demo_data import CRM_SYNC_FIELDS
from tests.assets.reconcile.conftest import NOW, QBO, SEQ, TENANT, Company, settings

ADDRESS = {"line1": "1 High Street", "city": "London", "postal_code": "EC1V 4AA", "country": "GB"}
SYNC = CRM_SYNC_FIELDS  # the demo's sync fields: the same CRM field names the emulators' schemas carry
LINK_COLUMN = {"hubspot": "properties__sequence_customer_id", "salesforce": "sequence_customer_id_c",
               "attio": "sequence_customer_id"}
IDS = {"hubspot": ("101", "102", "103"), "salesforce": ("001000000000101", "001000000000102", "001000000000103"),
       "attio": ("0a6a0c1e-0000-4000-8000-000000000101", "0a6a0c1e-0000-4000-8000-000000000102",
                 "0a6a0c1e-0000-4000-8000-000000000103")}


def crm_settings(app: str, **overrides: Any) -> dict[str, Any]:
    return {**settings(), "sync_fields": dict(SYNC[app]),
            "link_fields": {app: {"company": {"sequence": LINK_COLUMN[app]}}}, **overrides}


def crm_company(app: str) -> Company:
    """The conftest company (customer c1, invoice inv1 net 1200) with, in `app`: c1's linked company whose MRR is
    stale, a closed-won company with no customer (importable), and a Sequence customer c2 the CRM lacks."""
    co = Company()
    linked, won, _ = IDS[app]
    mrr_field = SYNC[app]["mrr"].lower().replace("__c", "_c")
    co.row("invoices", SEQ, "inv1", net_total="1200.00")
    co.rows["customers"].append({"tenant": TENANT, "app": SEQ, "id": "c2", "name": "Fresh Start Ltd",
                                 "email": "ap@fresh.example", **ADDRESS, "tax_status": "TAXED",
                                 "app_status": "ACTIVE", "currency": "GBP"})
    co.rows["companies"] = [
        {"tenant": TENANT, "app": app, "id": linked, "name": "Blue Analytics Ltd", **ADDRESS,
         "links": [{"app": SEQ, "app_id": "c1"}]},
        {"tenant": TENANT, "app": app, "id": won, "name": "Green Robotics Ltd", "domain": "green.example",
         **{**ADDRESS, "line1": "2 Low Road"}}]
    co.rows["custom_fields"] = [
        {"tenant": TENANT, "app": app, "entity": "company", "id": linked, "field": field, "value": value}
        for field, value in ((LINK_COLUMN[app].removeprefix("properties__"), "c1"),
                             (SYNC[app]["billing_status"].lower().replace("__c", "_c"), "active"),
                             (mrr_field, "900"))]
    co.rows["contacts"] = [{"tenant": TENANT, "app": app, "id": "p1", "company_id": won, "name": "Jo Green",
                            "email": "jo@green.example"}]
    co.rows["deals"] = [{"tenant": TENANT, "app": app, "id": "d1", "name": "Pilot", "stage": "won", "is_closed": True,
                         "is_won": True, "company_id": won}]
    co.rows["deal_companies"] = []
    return co


def plan(co: Company, crms: dict[str, dict[str, Any]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the whole plan, the mismatches) with QuickBooks and the given CRMs connected."""
    frames = co.frames()
    by_app = {QBO: {TENANT: settings()}, **{app: {TENANT: s} for app, s in crms.items()}}
    links = compute_links(frames, by_app, linked_at=NOW)
    mismatches = compute_mismatches(frames, links.lazy(), by_app)
    inputs = PlanInputs(unified=frames, links=links.lazy(), mismatches=mismatches.lazy(),
                        settings={TENANT: settings()}, crm_settings={app: {TENANT: s} for app, s in crms.items()})
    return build_plan(inputs), mismatches


def test_hubspot_updates_the_stale_field_upserts_the_missing_company_and_imports_the_won_one():
    whole, _ = plan(crm_company("hubspot"), {"hubspot": crm_settings("hubspot")})
    every = whole.filter(pl.col("counterpart_app") == "hubspot").to_dicts()
    assert sorted((r["app"], r["operation"]) for r in every) == [
        ("hubspot", "create"), ("hubspot", "update"), ("hubspot", "update"), ("sequence", "import")]
    assert {r["state"] for r in every} == {"planned"}
    stale = next(r for r in every if r["operation"] == "update" and r["sequence_id"] == "c1")
    # only what differs, as sync_values says it (reconcile's own numbers), every value a string
    assert orjson.loads(stale["payload"]) == {"id": "101", "properties": {"sequence_mrr": "1200.00"}}
    made = orjson.loads(next(r for r in every if r["operation"] == "create")["payload"])
    assert made["idProperty"] == "sequence_customer_id" and made["id"] == "c2"
    assert made["properties"] == {"name": "Fresh Start Ltd", "address": "1 High Street", "city": "London",
                                  "zip": "EC1V 4AA", "country": "United Kingdom", "sequence_billing_status": "active",
                                  "sequence_mrr": "0.00"}
    imported = next(r for r in every if r["operation"] == "import")
    body = orjson.loads(imported["payload"])
    assert imported["app"] == SEQ and imported["app_id"] == "102"
    assert body["customerAliases"] == ["hubspot-102"] and body["integrationIds"] == [{"service": "HubSpot",
                                                                                     "id": "102"}]
    assert body["contacts"][0]["email"] == "jo@green.example" and body["address"]["line1"] == "2 Low Road"
    follow = next(r for r in every if r["operation"] == "update" and r["app_id"] == "102")
    assert follow["depends_on"] == [imported["idempotency_key"]]
    assert orjson.loads(follow["payload"])["properties"] == {
        # the import's Sequence id, named as such (its app_id is the HubSpot company's)
        "sequence_customer_id": f"$ref:{imported['idempotency_key']}:sequence_id", "sequence_billing_status": "active",
        "sequence_mrr": "0.00"}
    again, _ = plan(crm_company("hubspot"), {"hubspot": crm_settings("hubspot")})
    assert again.equals(whole)  # deterministic keys: the same intent is the same write


@pytest.mark.parametrize("app", ["salesforce", "attio"])
def test_salesforce_and_attio_payloads_in_their_own_words(app):
    whole, _ = plan(crm_company(app), {app: crm_settings(app)})
    every = {(r["operation"], r["sequence_id"] or r["app_id"]): orjson.loads(r["payload"])
             for r in whole.filter((pl.col("counterpart_app") == app) & (pl.col("app") == app)).to_dicts()}
    assert set(whole.filter(pl.col("counterpart_app") == app)["state"]) == {"planned"}
    linked, won, _ = IDS[app]
    if app == "salesforce":
        assert every[("update", "c1")] == {"attributes": {"type": "Account"}, "id": linked, "Sequence_MRR__c": 1200.0}
        made = every[("create", "c2")]
        assert made["Sequence_Customer_Id__c"] == "c2" and made["BillingCountry"] == "United Kingdom"
        assert made["Name"] == "Fresh Start Ltd" and made["BillingStreet"] == "1 High Street"
    else:
        assert every[("update", "c1")] == {"record_id": linked, "values": {
            "sequence_mrr": {"currency_value": 1200.0}}}
        made = every[("create", "c2")]
        assert made["matching_attribute"] == "sequence_customer_id" and made["values"]["sequence_customer_id"] == "c2"
        assert made["values"]["primary_location"]["country_code"] == "GB"
        assert made["values"]["sequence_mrr"] == {"currency_value": 0.0, "currency_code": "GBP"}
    assert every[("update", won)] is not None


def test_a_company_quickbooks_imports_too_is_imported_once_and_the_crm_waits_for_that_import():
    co = crm_company("hubspot")
    co.rows["customers"].append({"tenant": TENANT, "app": QBO, "id": "9", "name": "Green Robotics Ltd",
                                 "email": "ap@green.example", **ADDRESS, "currency": "GBP"})
    whole, mismatches = plan(co, {"hubspot": crm_settings("hubspot")})
    qbo_import = whole.filter((pl.col("operation") == "import") & (pl.col("counterpart_app") == QBO))
    assert qbo_import.height == 1 and qbo_import["state"][0] == "planned"
    key = qbo_import["idempotency_key"][0]
    mine = whole.filter(pl.col("counterpart_app") == "hubspot")
    imported = mine.filter(pl.col("operation") == "import").to_dicts()[0]
    assert imported["state"] == "skipped" and key in imported["error"]
    assert "Green Robotics Ltd" in imported["error"]
    follow = mine.filter((pl.col("operation") == "update") & (pl.col("app_id") == "102")).to_dicts()[0]
    assert follow["state"] == "planned" and follow["depends_on"] == [key]
    assert f'"$ref:{key}:sequence_id"' in follow["payload"]


def test_two_crms_of_one_tenant_import_a_company_once():
    co = crm_company("hubspot")
    attio = crm_company("attio")
    for table in ("companies", "custom_fields", "contacts", "deals"):
        co.rows[table] += attio.rows[table]
    whole, _ = plan(co, {"hubspot": crm_settings("hubspot"), "attio": crm_settings("attio")})
    imports = whole.filter(pl.col("operation") == "import").sort("counterpart_app")
    assert imports["counterpart_app"].to_list() == ["attio", "hubspot"]
    assert imports["state"].to_list() == ["planned", "skipped"]
    attio_key = imports["idempotency_key"][0]
    follow = whole.filter((pl.col("counterpart_app") == "hubspot") & (pl.col("app_id") == "102")
                          & (pl.col("operation") == "update"))
    assert follow["depends_on"].to_list() == [[attio_key]]


def test_without_a_sequence_id_field_creates_are_refused_and_imports_have_no_follow_up():
    sync = {"billing_status": "sequence_billing_status", "mrr": "sequence_mrr"}
    whole, _ = plan(crm_company("hubspot"), {"hubspot": crm_settings("hubspot", sync_fields=sync)})
    mine = whole.filter(pl.col("counterpart_app") == "hubspot")
    made = mine.filter(pl.col("operation") == "create").to_dicts()[0]
    assert made["state"] == "skipped" and made["error"].startswith("settings.sync_fields.sequence_customer_id")
    assert mine.filter(pl.col("operation") == "import")["state"].to_list() == ["planned"]
    assert mine.filter((pl.col("operation") == "update") & (pl.col("app_id") == "102")).height == 0


def test_a_payload_that_breaks_its_contract_is_skipped_naming_the_record_and_the_crm_field():
    co = crm_company("salesforce")
    co.rows["customers"][-1]["name"] = "Fresh Start " + "x" * 300
    whole, _ = plan(co, {"salesforce": crm_settings("salesforce")})
    made = whole.filter((pl.col("counterpart_app") == "salesforce") & (pl.col("operation") == "create")).to_dicts()[0]
    assert made["state"] == "skipped"
    assert made["error"].startswith("invalid payload for Salesforce company of Sequence customer c2: Name:")
    assert "longer than 255" in made["error"]


def test_write_back_syncs_the_values_reconciliation_compares():
    from assets.reconcile import crm as reconciled
    from assets.writeback import crm

    assert crm.SYNC_VALUES == reconciled.SYNC_VALUES


def test_a_one_invoice_resync_plans_no_crm_writes():
    co = crm_company("hubspot")
    frames = co.frames()
    by_app = {QBO: {TENANT: settings()}, "hubspot": {TENANT: crm_settings("hubspot")}}
    links = compute_links(frames, by_app, linked_at=NOW)
    mismatches = compute_mismatches(frames, links.lazy(), by_app)
    inputs = PlanInputs(unified=frames, links=links.lazy(), mismatches=mismatches.lazy(),
                        settings={TENANT: settings()}, crm_settings={"hubspot": {TENANT: crm_settings("hubspot")}})
    assert build_plan(inputs, invoice="inv1").filter(pl.col("counterpart_app") == "hubspot").height == 0
