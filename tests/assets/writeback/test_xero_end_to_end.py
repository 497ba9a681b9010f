"""Write-back to Xero on the sandbox, over real HTTP: reconcile -> plan -> apply (with a 429 and a 5xx on the way)
-> extract, unify and reconcile again. Afterwards no Xero write is left to make, and every confirmed Xero write is
in the Xero emulator's own write log exactly once, under the Idempotency-Key of the request that carried it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import httpx
import polars as pl
import pytest
from assets.partitions import materialize_tenants

from assets.reconcile.assets import RECONCILE_ASSETS
from assets.writeback import outbox
from assets.writeback.apply import apply
from assets.writeback.inputs import read_inputs
from assets.writeback.plan import WRITE_ACTIONS, build_plan
from assets.writeback.xero import XERO, build_xero_plan
from connectors.clients import build_client
from connectors.registry import load_registry
from connectors.sandbox.demo_data import generate

TEST_KEY = "test-setup-"


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixtures_xero")
    generate(root, invoices=60, seed=3, tenants=3)  # tenants 0 and 2 keep their books in Xero too
    return root


def reconcile(extraction, *, apps: tuple[str, ...] | None = None) -> pl.DataFrame:
    """Extract (every connection, or those of `apps`: the others' raw tables stay), unify, reconcile."""
    for key in extraction.registry.keys():
        if apps is None or key.rsplit(".", 1)[1] in apps:
            assert extraction.run(key).success, key
    assert extraction.run_unified().success
    assert materialize_tenants(RECONCILE_ASSETS, instance=extraction.instance,
                               resources={"ledgerlink": extraction.resource}).success
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        return con.sql("select * from reconcile.mismatches").pl()


def xero_settings(registry_path: Path) -> dict:
    return {c.tenant: dict(c.settings) for c in load_registry(registry_path).for_app(XERO)}


def change_invoices_in_xero(extraction) -> list[str]:
    """Moves the due date of two open, unpaid, linked invoices per Xero tenant and changes a line's price of one
    (as a bookkeeper editing in Xero would): reconciliation then asks for Sequence's values back."""
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        open_docs = con.sql(
            "select i.tenant, i.id, i.due_date from unified.invoices i join reconcile.links l on l.app = 'xero' and "
            "l.entity = 'invoice' and l.app_id = i.id and l.tenant = i.tenant where i.app = 'xero' and "
            "i.app_status = 'AUTHORISED' and i.balance = i.gross_total and i.due_date is not null "
            "order by i.tenant, i.id").pl()
    changed = []
    registry = load_registry(extraction.registry_path)
    for (tenant,), docs in open_docs.partition_by("tenant", as_dict=True, maintain_order=True).items():
        client = build_client(registry.get(f"{tenant}.xero"), token_store=extraction.resource.token_store())
        try:
            elements = []
            for n, doc in enumerate(docs.head(2).to_dicts()):
                due = doc["due_date"]
                due = due.date() if hasattr(due, "date") else due
                element = {"InvoiceID": doc["id"], "DueDate": (due + timedelta(days=9)).isoformat()}
                if n == 0:  # Xero takes the lines whole: the current ones, one price changed
                    current = client.get("Invoices", doc["id"])["LineItems"]
                    keep = ("LineItemID", "Description", "Quantity", "UnitAmount", "ItemCode", "AccountCode",
                            "TaxType")
                    element["LineItems"] = [{k: line[k] for k in keep if line.get(k) is not None}
                                            for line in current]
                    element["LineItems"][0]["UnitAmount"] = float(current[0]["UnitAmount"]) + 7
                elements.append(element)
                changed.append(doc["id"])
            results = client.upsert_many("Invoices", elements, idempotency_key=f"{TEST_KEY}{tenant}")
            assert all(r.ok for r in results), [r.errors for r in results]
        finally:
            client.close()
    return changed


@pytest.fixture(scope="module")
def loop(extraction):
    reconcile(extraction)
    changed = change_invoices_in_xero(extraction)
    before = reconcile(extraction, apps=(XERO,))
    box = extraction.box
    base = box.urls[XERO]
    httpx.delete(f"{base}/_sandbox/log").raise_for_status()
    for fault in ({"kind": "status", "status": 429, "retry_after": "1", "path": "/Invoices", "times": 2},
                  {"kind": "status", "status": 503, "path": "/Contacts", "times": 1}):
        httpx.post(f"{base}/_sandbox/faults", json=fault).raise_for_status()
    registry = load_registry(extraction.registry_path)
    with duckdb.connect(str(extraction.warehouse)) as con:
        # the whole plan: QuickBooks and Xero writes side by side (tenants 0 and 2 have both)
        full = build_plan(read_inputs(con, registry))
        plan = full.filter(pl.col("counterpart_app") == XERO)
        assert full.filter(pl.col("app") == "quickbooks").height > 0
        outbox.ensure(con)
        outbox.merge_plan(con, plan, withdraw_tenants=None)  # the Xero writes only: this test is Xero's
        first = apply(con, registry, extraction.resource.token_store(), registry_path=extraction.registry_path,
                      echo=lambda _: None)
        # at once again: everything is confirmed, nothing is sent
        second = apply(con, registry, extraction.resource.token_store(), registry_path=extraction.registry_path,
                       echo=lambda _: None)
        rows = outbox.read(con)
    requests = httpx.get(f"{base}/_sandbox/requests").json()
    writes = httpx.get(f"{base}/_sandbox/writes").json()
    httpx.delete(f"{base}/_sandbox/faults").raise_for_status()
    after = reconcile(extraction, apps=(XERO, "sequence"))
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        replanned = build_xero_plan(read_inputs(con, load_registry(extraction.registry_path)),
                                    xero_settings(extraction.registry_path))
    return plan, before, first, second, rows, requests, writes, after, changed, replanned


def test_the_plan_covers_every_kind_of_xero_write(loop):
    plan, before, *_ = loop
    kinds = set(plan.filter(pl.col("state") == "planned").select("app", "entity", "operation").iter_rows())
    assert {("xero", "customer", "create"), ("xero", "customer", "update"), ("xero", "invoice", "update"),
            ("xero", "product", "create_item"), ("xero", "product", "update_item"),
            ("sequence", "customer", "import"), ("sequence", "customer", "link")} <= kinds
    assert before.filter((pl.col("app") == XERO) & pl.col("proposed_action").is_in(WRITE_ACTIONS)).height >= 30


def test_after_write_back_no_actionable_xero_mismatch_is_left(loop):
    plan, before, first, second, rows, _, _, after, changed, replanned = loop
    assert first.counts["confirmed"] == plan.filter(pl.col("state") == "planned").height, first.summary()
    assert first.counts["failed"] == 0 and not first.waiting, first.summary()
    # planned again from the new state: every write still planned is one the outbox has confirmed
    done = rows.filter(pl.col("state") == "confirmed").select("idempotency_key")
    still = replanned.filter(pl.col("state") == "planned").join(done, on="idempotency_key", how="anti")
    assert still.height == 0, still.select("tenant", "operation", "entity", "sequence_id", "reason").to_dicts()
    # what a write could fix and is still there was refused by a contract or a rule, with its reason
    left = after.filter((pl.col("app") == XERO) & pl.col("proposed_action").is_in(WRITE_ACTIONS))
    skipped = pl.concat([plan, replanned]).filter(pl.col("state") == "skipped")
    assert skipped["error"].null_count() == 0
    unexplained = left.join(skipped, on=["tenant", "sequence_id"], how="anti")
    assert unexplained.height == 0, unexplained.select("tenant", "entity", "kind", "field", "reason").to_dicts()
    # the invoices edited in Xero hold Sequence's values again
    assert after.filter(pl.col("app_id").is_in(changed)).height == 0
    assert second.counts["sent"] == 0


def test_every_confirmed_xero_write_is_in_the_write_log_exactly_once(loop):
    *_, rows, requests, writes, _, _, _ = loop
    confirmed = rows.filter((pl.col("app") == XERO) & (pl.col("state") == "confirmed"))
    assert confirmed.height > 20
    log = pl.DataFrame([w for w in writes if not (w.get("idempotency_key") or "").startswith(TEST_KEY)])
    # one execution per (request key, record)
    dupes = log.group_by("idempotency_key", "id").len().filter(pl.col("len") > 1)
    assert dupes.height == 0, dupes.to_dicts()
    for row in confirmed.to_dicts():
        hits = log.filter((pl.col("idempotency_key") == row["request_id"]) & (pl.col("id") == row["app_id"]))
        assert hits.height == 1, (row["operation"], row["entity"], row["app_id"])
    # every write log entry belongs to a confirmed row (none lost, none extra)
    assert log.height == confirmed.height
    # many elements per request, each request under its own key
    write_requests = [r for r in requests if r["method"] in ("PUT", "POST") and r["status"] == 200]
    assert len({r["idempotency_key"] for r in write_requests}) < confirmed.height
    # the 429 and the 5xx happened, and their requests were retried under the same key
    statuses = [r["status"] for r in requests]
    assert statuses.count(429) == 2 and statuses.count(503) == 1
    keys_by_status = {}
    for r in requests:
        keys_by_status.setdefault(r["idempotency_key"], set()).add(r["status"])
    assert any({429, 200} <= s for s in keys_by_status.values())
    assert any({503, 200} <= s for s in keys_by_status.values())


def test_the_sequence_side_stores_xero_ids(loop, extraction):
    *_, rows, _, _, _, _, _ = loop
    links = rows.filter((pl.col("app") == "sequence") & (pl.col("operation") == "link")
                        & (pl.col("state") == "confirmed"))
    assert links.height >= 4
    imports = rows.filter((pl.col("operation") == "import") & (pl.col("state") == "confirmed"))
    assert imports.height >= 2 and imports["sequence_id"].null_count() == 0
    seq_writes = httpx.get(f"{extraction.box.urls['sequence']}/_sandbox/writes").json()
    assert seq_writes, "Sequence was written to"
    # item mappings of the created items are in the Xero connection's settings
    settings = xero_settings(extraction.registry_path)
    created = rows.filter((pl.col("operation") == "create_item") & (pl.col("app") == XERO))
    for row in created.to_dicts():
        assert settings[row["tenant"]]["items"][row["sequence_id"]]["item_id"] == row["app_id"]
