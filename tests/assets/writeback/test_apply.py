"""apply without the sandbox: dry run outside it, what counts as already applied after a stale SyncToken,
$refs, batch requestids, and the item mappings written back to the registry."""

import duckdb
import polars as pl
import pytest
import yaml
from dagster import AssetKey

from assets.writeback import outbox
from assets.writeback.apply import already_applied, apply, batch_id, record_item_mappings, resolve, writes_allowed
from assets.writeback.assets import APPLY_KEY, PLAN_KEY, WRITEBACK_ASSETS
from assets.writeback.plan import Row, empty_plan, ref
from connectors.auth import TokenStore
from connectors.registry import parse_registry
from pipelines.definitions import defs


def registry(base_url: str):
    return parse_registry({"tenants": {"t1": {"settings": {}, "connections": {
        "quickbooks": {"base_url": base_url, "realm_id": "123",
                       "secrets": {"client_id": "A", "client_secret": "B", "refresh_token": "C"}},
        "sequence": {"base_url": base_url, "secrets": {"client_id": "A", "client_secret": "B"}}}}}})


def test_writes_go_to_the_sandbox_and_elsewhere_only_when_allowed():
    sandbox = registry("http://127.0.0.1:8712").get("t1.quickbooks")
    production = registry("https://quickbooks.api.intuit.com").get("t1.quickbooks")
    assert writes_allowed(sandbox, False) and writes_allowed(production, True)
    assert not writes_allowed(production, False)


def test_dry_run_is_the_default_outside_the_sandbox(tmp_path):
    rows = [Row("t1", "quickbooks", "invoice", "void", "inv-1", "101", {"Id": "101", "SyncToken": "2"}, "voided"),
            Row("t1", "sequence", "invoice", "mark_paid", "inv-2", "102",
                {"invoiceId": "inv-2", "paymentStatus": "PAID"}, "paid in QuickBooks")]
    printed: list[str] = []
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        outbox.merge_plan(con, pl.DataFrame([r.record() for r in rows], schema=empty_plan().schema))
        result = apply(con, registry("https://quickbooks.api.intuit.com"), TokenStore(tmp_path / "tokens.json"),
                       echo=printed.append)
        states = con.execute("select state, attempts from writeback.outbox").fetchall()
    assert result.requests == {} and not result.counts and len(result.dry_run) == 2
    assert states == [("planned", 0), ("planned", 0)]  # nothing sent, nothing recorded
    assert any(f"requestid={rows[0].key}" in line and "operation=void" in line for line in printed)
    assert any("payment-status" in line and '"paymentStatus":"PAID"' in line for line in printed)


def test_already_applied_compares_what_the_update_sends():
    record = {"Id": "9", "SyncToken": "4", "DueDate": "2025-07-31", "CustomerMemo": {"value": "Thanks"},
              "BillEmail": {"Address": "billing@merchant.example"},
              "Line": [{"Id": "1", "DetailType": "SalesItemLineDetail", "Amount": 1000, "Description": "Fee",
                        "SalesItemLineDetail": {"ItemRef": {"value": "5", "name": "Fee"}, "Qty": 1,
                                                "UnitPrice": 1000, "TaxCodeRef": {"value": "2"}}},
                       {"Amount": 1000, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}]}
    update = {"Id": "9", "SyncToken": "2", "sparse": True, "DueDate": "2025-07-31",
              "CustomerMemo": {"value": "Thanks"},
              "Line": [{"Id": "1", "DetailType": "SalesItemLineDetail", "Amount": 1000.0, "Description": "Fee",
                        "SalesItemLineDetail": {"ItemRef": {"value": "5"}, "Qty": 1.0, "UnitPrice": 1000.0,
                                                "TaxCodeRef": {"value": "2"}}}]}
    assert already_applied(update, record)
    assert not already_applied({**update, "DueDate": "2025-08-01"}, record)
    assert not already_applied({**update, "Line": [*update["Line"], update["Line"][0]]}, record)
    assert already_applied({"Id": "9", "CustomerMemo": {"value": ""}}, {"Id": "9"})  # a cleared memo


def test_refs_are_filled_from_confirmed_writes_with_the_id_they_name():
    payload = {"CustomerRef": {"value": "$ref:llaa"}, "Line": [{"ItemRef": {"value": "$ref:llbb"}}, {"x": "$5"}]}
    ids = {"llaa": {"app_id": "58", "sequence_id": "c1"}, "llbb": {"app_id": "12", "sequence_id": None}}
    assert resolve(payload, ids) == {"CustomerRef": {"value": "58"},
                                     "Line": [{"ItemRef": {"value": "12"}}, {"x": "$5"}]}
    # an import's app_id is its source record (a CRM company); the Sequence customer it made is its sequence_id
    imported = {"llcc": {"app_id": "5002", "sequence_id": "cus-9"}}
    assert ref("llcc", "sequence_id") == "$ref:llcc:sequence_id"
    assert resolve({"sequence_customer_id": ref("llcc", "sequence_id"), "id": ref("llcc")}, imported) == {
        "sequence_customer_id": "cus-9", "id": "5002"}
    with pytest.raises(KeyError):  # no such id: never a silent fallback to the other one
        resolve({"v": ref("llbb", "sequence_id")}, ids)
    with pytest.raises(KeyError):
        resolve({"v": ref("lldd")}, ids)
    with pytest.raises(ValueError):
        ref("llaa", "name")


def test_batch_requestids_fit_quickbooks_and_depend_only_on_the_members():
    one = batch_id(["llb", "lla"])
    assert one == batch_id(["lla", "llb"]) and len(one) <= 36 and one != batch_id(["lla"])


def test_created_items_become_the_products_mappings_in_the_registry(tmp_path):
    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump({"sandbox": True, "tenants": {"t1": {"settings": {
        "merchant_email": "m@x.example", "items": {"p1": {"item_id": "5", "account_code": "4000"}}},
        "connections": {}}}}))
    added = record_item_mappings(path, {("t1", "p2"): "77", ("t1", "p1"): "99", ("t9", "p3"): "1"},
                                 {("t1", "p2"): "4090"})
    document = yaml.safe_load(path.read_text())
    assert added == 1
    assert document["tenants"]["t1"]["settings"]["items"] == {"p1": {"item_id": "5", "account_code": "4000"},
                                                               "p2": {"item_id": "77", "account_code": "4090"}}
    assert document["sandbox"] is True and document["tenants"]["t1"]["settings"]["merchant_email"] == "m@x.example"


def test_the_assets_are_in_the_code_location_after_reconciliation():
    graph = defs.resolve_asset_graph()
    plan, applied = graph.get(PLAN_KEY), graph.get(APPLY_KEY)
    assert plan.group_name == applied.group_name == "writeback"
    assert {AssetKey(["reconcile", "mismatches"]), AssetKey(["reconcile", "links"])} <= set(plan.parent_keys)
    assert PLAN_KEY in applied.parent_keys
    assert all(a.node_def.pool == "warehouse" for a in WRITEBACK_ASSETS)
