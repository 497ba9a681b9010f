"""The reconcile assets: wired into the code location after the unified model, and a run on a warehouse without
unified tables yet (or without a write-back outbox) writes empty tables instead of failing."""

import duckdb
import yaml
from dagster import AssetKey, DagsterInstance

from assets.partitions import materialize_tenants

from assets.reconcile.assets import LINKS_KEY, MISMATCHES_KEY, RECONCILE_ASSETS
from assets.resources import Ledgerlink
from pipelines.definitions import defs


def test_reconcile_assets_are_in_the_code_location_downstream_of_the_unified_model():
    graph = defs.resolve_asset_graph()
    for key in (LINKS_KEY, MISMATCHES_KEY):
        node = graph.get(key)
        assert node.group_name == "reconcile"
        assert AssetKey(["unified", "invoices"]) in node.parent_keys
    assert LINKS_KEY in graph.get(MISMATCHES_KEY).parent_keys
    assert all(a.node_def.pool == "warehouse" for a in RECONCILE_ASSETS)


def test_a_warehouse_without_unified_tables_reconciles_to_empty_tables(tmp_path):
    registry = tmp_path / "connections.yaml"
    registry.write_text(yaml.safe_dump({"tenants": {"t1": {
        "settings": {"merchant_email": "billing@merchant.example", "invoice_date": "issue"},
        "connections": {"quickbooks": {"base_url": "http://127.0.0.1:1", "realm_id": "1",
                                       "secrets": {"client_id": "A", "client_secret": "B", "refresh_token": "C"}}},
    }}}))
    resource = Ledgerlink(registry_path=str(registry), warehouse_path=str(tmp_path / "wh.duckdb"),
                          state_dir=str(tmp_path / "state"))
    duckdb.connect(str(tmp_path / "wh.duckdb")).close()
    result = materialize_tenants(RECONCILE_ASSETS, instance=DagsterInstance.ephemeral(),
                                 resources={"ledgerlink": resource})
    assert result.success
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from reconcile.links").fetchall() == [(0,)]
        assert con.sql("select count(*) from reconcile.mismatches").fetchall() == [(0,)]
        assert con.sql("select count(*) from reconcile.mismatch_log").fetchall() == [(0,)]
        # the run is in the history all the same: every kind at zero for the connected tenant
        assert con.sql("select count(distinct kind), sum(count) from reconcile.mismatch_history "
                       "where tenant = 't1' and app = 'quickbooks'").fetchall() == [(15, 0)]
    meta = {e.event_specific_data.materialization.asset_key: e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta[MISMATCHES_KEY]["mismatches_total"].value == 0
    assert meta[MISMATCHES_KEY]["mismatches_importable"].value == 0


def test_an_item_created_after_a_document_was_synced_is_no_write_for_that_document():
    from datetime import UTC, datetime

    import polars as pl

    from assets.reconcile.assets import mapped_after_sync
    from assets.reconcile.links import MISMATCH_SCHEMA

    mapped = datetime(2026, 11, 20, 12, tzinfo=UTC)
    row = {"tenant": "t1", "app": "quickbooks", "entity": "invoice", "sequence_id": "inv", "kind": "field_differs",
           "field": "line.item", "sequence_value": "77", "app_value": "1", "proposed_action": "update_in_app",
           "reason": "Invoice INV1 line 1: item differs."}
    mismatches = pl.LazyFrame([{**row, "app_id": "100"}, {**row, "sequence_id": "inv2", "app_id": "101"}],
                              schema=MISMATCH_SCHEMA)
    invoices = pl.LazyFrame({"tenant": ["t1", "t1"], "app": ["quickbooks"] * 2, "id": ["100", "101"],
                             "created_at": [datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)]})
    empty = invoices.clear()
    outbox = pl.LazyFrame({"tenant": ["t1"], "app": ["quickbooks"], "operation": ["create_item"],
                           "state": ["confirmed"], "app_id": ["77"], "confirmed_at": [mapped]})
    out = mapped_after_sync(mismatches, {"invoices": invoices, "credit_notes": empty}, outbox).collect()
    actions = dict(zip(out["app_id"], out["proposed_action"], strict=True))
    # synced before the item existed: known, nothing to write; synced after: it should carry the item
    assert actions == {"100": "none", "101": "update_in_app"}
    assert "created after this document was synced" in out.filter(pl.col("app_id") == "100")["reason"].item()
