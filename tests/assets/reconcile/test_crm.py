"""CRM reconciliation (assets/reconcile/crm.py): Sequence customers against CRM companies.

Rule tests bend one thing at a time in the conftest company plus a HubSpot company that agrees with it; the
end-to-end test runs demo fixtures with CRM plants through sandbox -> extraction -> unified -> reconcile and
finds every planted CRM discrepancy and nothing else for the CRMs."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb
import polars as pl
import pytest
import yaml

from assets.reconcile.assets import compute_links, compute_mismatches
from assets.reconcile.crm import CRM_SPECS, snake_case, sync_values
from connectors.sandbox.demo_data import generate

from tests.assets.reconcile.conftest import NOW, QBO, SEQ, TENANT, settings

HS = "hubspot"
SYNC = {"sequence_customer_id": "sequence_customer_id", "billing_status": "sequence_billing_status",
        "mrr": "sequence_mrr"}
ADDRESS = {"line1": "1 High Street", "city": "London", "postal_code": "EC1V 4AA", "country": "GB"}


def crm_settings(**overrides: Any) -> dict[str, Any]:
    # a CRM connection inherits the tenant's settings (items, tax codes) and adds its own
    return {**settings(), "sync_fields": dict(SYNC),
            "link_fields": {HS: {"company": {"sequence": "properties__sequence_customer_id"}}}, **overrides}


def custom(company_id: str, **values: str) -> list[dict[str, Any]]:
    return [{"tenant": TENANT, "app": HS, "entity": "company", "id": company_id, "field": name, "value": value}
            for name, value in values.items()]


@pytest.fixture
def crm(co):
    """The conftest company (customer c1, invoice inv1 issued 2025-03-16, net 1200) and its HubSpot twin hs1,
    linked by the company's own Sequence customer id field, every synced field up to date."""
    co.row("invoices", SEQ, "inv1", net_total="1200.00")
    co.rows["companies"] = [{"tenant": TENANT, "app": HS, "id": "hs1", "name": "Blue Analytics Ltd",
                             "domain": "blue.example", **ADDRESS, "links": [{"app": SEQ, "app_id": "c1"}]}]
    co.rows["custom_fields"] = custom("hs1", sequence_customer_id="c1", sequence_billing_status="active",
                                      sequence_mrr="1200")
    co.rows["contacts"], co.rows["deals"], co.rows["deal_companies"] = [], [], []
    return co


def reconcile(co, tenant_settings: dict[str, Any] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(links, mismatches) of HubSpot, with QuickBooks connected too (its rows are not HubSpot's business)."""
    frames = co.frames()
    by_app = {QBO: {TENANT: settings()}, HS: {TENANT: tenant_settings or crm_settings()}}
    links = compute_links(frames, by_app, linked_at=NOW)
    mismatches = compute_mismatches(frames, links.lazy(), by_app)
    return links.filter(pl.col("app") == HS), mismatches.filter(pl.col("app") == HS)


def rows(mismatches: pl.DataFrame) -> list[tuple]:
    return mismatches.select("kind", "field", "sequence_id", "app_id", "proposed_action").rows()


def won_company(company_id: str, name: str, *, email: str | None = "jo@green.example", stage_won: bool = True,
                **address: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        "companies": [{"tenant": TENANT, "app": HS, "id": company_id, "name": name, "domain": "green.example",
                       **(address or ADDRESS)}],
        "contacts": [{"tenant": TENANT, "app": HS, "id": f"p-{company_id}", "company_id": company_id,
                      "name": "Jo Green", "email": email}],
        "deals": [{"tenant": TENANT, "app": HS, "id": f"d-{company_id}", "name": f"{name} - Pilot",
                   "stage": "closedwon" if stage_won else "qualifiedtobuy", "is_closed": stage_won,
                   "is_won": stage_won, "company_id": company_id}],
    }


def add(co, parts: dict[str, list[dict[str, Any]]]) -> None:
    for table, records in parts.items():
        co.rows[table] += records


def test_agreeing_company_is_linked_by_its_own_field_and_nothing_is_reported(crm):
    links, mismatches = reconcile(crm)
    assert links.select("entity", "sequence_id", "app_id", "method").rows() == [("customer", "c1", "hs1", "app_field")]
    assert mismatches.height == 0


def test_the_tenants_item_and_tax_mappings_make_no_crm_links(crm):
    links, _ = reconcile(crm)
    assert set(links["entity"]) == {"customer"}


def test_sequence_integration_id_links_and_the_crm_field_must_then_be_filled(crm):
    crm.row("customers", SEQ, "c1", links=[{"app": QBO, "app_id": "1"}, {"app": HS, "app_id": "hs1"}])
    crm.row("companies", HS, "hs1", links=None)
    crm.rows["custom_fields"] = custom("hs1", sequence_billing_status="active", sequence_mrr="1200")
    links, mismatches = reconcile(crm)
    assert links.select("sequence_id", "app_id", "method").rows() == [("c1", "hs1", "integration_id")]
    assert rows(mismatches) == [("field_differs", "sequence_customer_id", "c1", "hs1", "update_in_app")]
    assert mismatches["sequence_value"].to_list() == ["c1"] and mismatches["app_value"].to_list() == [None]


def test_missing_in_app_when_no_company_is_linked_or_matches(crm):
    crm.rows["companies"], crm.rows["custom_fields"] = [], []
    crm.rows["customers"] += [
        {"tenant": TENANT, "app": SEQ, "id": "c-draft", "name": "Draft Co", "app_status": "DRAFT"},
        {"tenant": TENANT, "app": SEQ, "id": "c-gone", "name": "Gone Co", "active": False},
    ]
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("missing_in_app", None, "c1", None, "create_in_app")]
    assert "no HubSpot company" in mismatches["reason"][0]


def test_closed_won_company_without_customer_is_importable_and_prospects_are_not_reported(crm):
    add(crm, won_company("hs2", "Green Robotics Ltd"))
    add(crm, won_company("hs3", "Prospect Labs Ltd", stage_won=False))
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("importable", None, None, "hs2", "import_to_sequence")]
    assert "closed-won" in mismatches["reason"][0]


def test_closed_won_through_deal_companies_counts_too(crm):
    parts = won_company("hs2", "Green Robotics Ltd")
    parts["deals"][0]["company_id"] = None
    parts["deal_companies"] = [{"tenant": TENANT, "app": HS, "deal_id": "d-hs2", "company_id": "hs2",
                                "is_primary": False}]
    add(crm, parts)
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("importable", None, None, "hs2", "import_to_sequence")]


def test_closed_won_company_without_email_or_postal_code_is_not_importable(crm):
    add(crm, won_company("hs2", "Green Robotics Ltd", email=None))
    add(crm, won_company("hs4", "Other Robotics Ltd", line1="2 Low Road", city="Leeds", country="GB"))
    crm.rows["contacts"][-1]["email"] = "al@other.example"
    crm.rows["companies"][-1]["domain"] = "other.example"
    _, mismatches = reconcile(crm)
    assert sorted(rows(mismatches), key=str) == [
        ("not_importable", "billing_address.postal_code", None, "hs4", "review"),
        ("not_importable", "billing_email", None, "hs2", "review"),
    ]


@pytest.mark.parametrize(("column", "field", "value"), [
    ("name", "name", "Blue Analytics Limited"),
    ("line1", "billing_address.line1", "9 High Street"),
    ("city", "city", "Leeds"),
    ("postal_code", "billing_address.postal_code", "EC1V 9ZZ"),
])
def test_field_differs_on_name_and_address(crm, column, field, value):
    field = "billing_address.city" if field == "city" else field
    crm.row("companies", HS, "hs1", **{column: value})
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("field_differs", field, "c1", "hs1", "update_in_app")]
    assert mismatches["app_value"].to_list() == [value]


def test_postal_code_case_and_spacing_are_not_differences(crm):
    crm.row("companies", HS, "hs1", postal_code=" ec1v  4aa ")
    assert reconcile(crm)[1].height == 0


def test_stale_synced_fields_are_reported(crm):
    crm.rows["custom_fields"] = custom("hs1", sequence_customer_id="c1", sequence_billing_status="archived",
                                       sequence_mrr="900")
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("field_differs", "billing_status", "c1", "hs1", "update_in_app"),
                                ("field_differs", "mrr", "c1", "hs1", "update_in_app")]
    by_field = {r["field"]: r for r in mismatches.to_dicts()}
    assert (by_field["billing_status"]["sequence_value"], by_field["billing_status"]["app_value"]) == \
        ("active", "archived")
    assert (by_field["mrr"]["sequence_value"], by_field["mrr"]["app_value"]) == ("1200", "900")


def test_archived_customer_reads_archived_and_mrr_follows_the_as_of_date(crm):
    crm.row("customers", SEQ, "c1", active=False)
    crm.rows["custom_fields"] = custom("hs1", sequence_customer_id="c1", sequence_billing_status="archived",
                                       sequence_mrr="1200")
    assert reconcile(crm)[1].height == 0
    # 2025-05-01: inv1 (2025-03-16) is outside the 30 days, MRR is 0
    _, mismatches = reconcile(crm, crm_settings(mrr_as_of="2025-05-01"))
    assert rows(mismatches) == [("field_differs", "mrr", "c1", "hs1", "update_in_app")]
    assert mismatches["sequence_value"].to_list() == ["0"]


def test_sync_values_default_period_ends_at_the_datas_latest_change(crm):
    frames = crm.frames()
    values = sync_values(frames, {TENANT: {}}).collect()
    assert values.select("sequence_id", "billing_status", "mrr_to").row(0) == ("c1", "active", date(2025, 3, 16))
    assert str(values["mrr"][0]) == "1200.000000000"


def test_fields_not_in_sync_fields_are_not_compared(crm):
    crm.rows["custom_fields"] = custom("hs1", sequence_mrr="1")
    assert reconcile(crm, crm_settings(sync_fields={}))[1].height == 0


def test_unlinked_company_with_the_same_name_is_a_candidate_not_a_link(crm):
    crm.row("companies", HS, "hs1", links=None, name="Blue Analytics Limited")
    crm.rows["custom_fields"] = []
    links, mismatches = reconcile(crm)
    assert links.height == 0
    assert rows(mismatches) == [("unlinked_candidate", None, "c1", "hs1", "link")]
    assert "same legal name" in mismatches["reason"][0]


def test_unlinked_company_with_the_email_domain_is_a_candidate(crm):
    crm.row("companies", HS, "hs1", links=None, name="Blue Group")
    crm.rows["custom_fields"] = []
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("unlinked_candidate", None, "c1", "hs1", "link")]
    assert "same domain (blue.example)" in mismatches["reason"][0]


def test_a_link_to_a_company_that_is_gone_is_reported_not_created(crm):
    crm.row("customers", SEQ, "c1", links=[{"app": QBO, "app_id": "1"}, {"app": HS, "app_id": "hs-deleted"}])
    crm.rows["companies"], crm.rows["custom_fields"] = [], []
    _, mismatches = reconcile(crm)
    assert rows(mismatches) == [("missing_in_app", None, "c1", "hs-deleted", "review")]


def test_salesforce_field_names_read_as_their_raw_columns():
    assert snake_case("Sequence_MRR__c") == "sequence_mrr_c" and snake_case("sequence_mrr") == "sequence_mrr"
    assert set(CRM_SPECS) == {"hubspot", "salesforce", "attio"}


# ----------------------------------------------------------------------------------------------------------
# End to end: demo fixtures with CRM plants
# ----------------------------------------------------------------------------------------------------------

CRMS = ("hubspot", "salesforce", "attio")
KEY = ["tenant", "app", "entity", "kind", "field", "sequence_id", "app_id"]


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    # overrides tests/conftest.py's: three tenants cover the three CRMs (UK: HubSpot and Attio, US: Salesforce,
    # DE: Attio); no Xero, few invoices
    root = tmp_path_factory.mktemp("crm")
    generate(root, invoices=60, seed=5, tenants=3, discrepancies=True, xero=False)
    return root


@pytest.fixture(scope="module")
def crm_run(extraction):
    from assets.partitions import materialize_tenants

    from assets.reconcile.assets import RECONCILE_ASSETS

    # MRR is the demo's as of its reference date: say so in the CRM connections' settings
    as_of = extraction.manifest["reference_date"][:10]
    document = yaml.safe_load(extraction.registry_path.read_text())
    for tenant in document["tenants"].values():
        for app, connection in tenant["connections"].items():
            if app in CRMS:
                connection.setdefault("settings", {})["mrr_as_of"] = as_of
    extraction.registry_path.write_text(yaml.safe_dump(document))
    # Sequence and the CRMs only: the accounting apps are not what this test is about
    for key in extraction.registry.keys():
        if key.rsplit(".", 1)[1] in ("sequence", *CRMS):
            assert extraction.run(key).success, key
    assert extraction.run_unified().success
    result = materialize_tenants(RECONCILE_ASSETS, instance=extraction.instance, resources={"ledgerlink": extraction.resource})
    assert result.success
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        mismatches = con.sql("select * from reconcile.mismatches").pl().filter(pl.col("app").is_in(CRMS))
        links = con.sql("select * from reconcile.links").pl().filter(pl.col("app").is_in(CRMS))
    planted = pl.DataFrame(extraction.manifest["discrepancies"]).filter(pl.col("app").is_in(CRMS)).select(*KEY)
    return mismatches, links, planted


def test_every_planted_crm_discrepancy_is_found_and_nothing_else(crm_run):
    mismatches, _, planted = crm_run
    assert set(planted["app"]) == set(CRMS)
    assert set(planted["kind"]) >= {"missing_in_app", "field_differs", "unlinked_candidate", "importable",
                                    "not_importable"}
    assert {"billing_status", "mrr", "name"} <= set(planted["field"].drop_nulls())
    missed = planted.join(mismatches, on=KEY, how="anti", nulls_equal=True)
    assert missed.height == 0, f"not found:\n{missed.to_dicts()}"
    extra = mismatches.join(planted, on=KEY, how="anti", nulls_equal=True)
    assert extra.height == 0, f"reported but not planted:\n{extra.select(*KEY, 'reason').to_dicts()}"


def test_crm_actions_and_links(crm_run):
    mismatches, links, _ = crm_run
    actions = dict(mismatches.group_by("kind").agg(pl.col("proposed_action").unique().sort()).iter_rows())
    assert actions["missing_in_app"] == ["create_in_app"] and actions["importable"] == ["import_to_sequence"]
    assert actions["field_differs"] == ["update_in_app"] and actions["unlinked_candidate"] == ["link"]
    assert set(links["app"]) == set(CRMS) and set(links["method"]) == {"app_field"}
    assert set(links["entity"]) == {"customer"}
    proposed = mismatches.filter(pl.col("kind") == "unlinked_candidate").select("tenant", "sequence_id", "app_id")
    assert links.join(proposed, on=["tenant", "sequence_id", "app_id"], how="semi").height == 0
