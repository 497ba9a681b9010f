"""Exactly once on the sandbox, when things go wrong: a crash between marking a write sent and recording its
answer (on both sides of the HTTP call), a stale SyncToken (someone changed the record; someone already made the
change), 429s and 5xx on both apps, an access token that expires mid-run, a re-sync of one failed invoice, and a
second apply by the command line in another process. The emulators' write logs are the proof."""

import os
import subprocess
import sys
from collections import Counter

import duckdb
import httpx
import orjson
import polars as pl
import pytest
from assets.partitions import materialize_tenants

from assets.reconcile.assets import RECONCILE_ASSETS
from assets.writeback import outbox
from assets.writeback.apply import apply
from assets.writeback.assets import plan_writes, registry_file, resync
from assets.writeback.plan import Row, empty_plan
from connectors.clients import build_client
from connectors.http import RetryPolicy

FAST = RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=1.0)


def writes(box, app: str) -> list[dict]:
    return httpx.get(f"{box.urls[app]}/_sandbox/writes").json()


def arm(box, app: str, **fault) -> None:
    httpx.post(f"{box.urls[app]}/_sandbox/faults", json=fault).raise_for_status()


def rows(warehouse, where: str = "true", params: list | None = None) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(f"select * from writeback.outbox where {where}", params=params or []).pl()


def set_rows(warehouse, sql: str, params: list) -> None:
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"update writeback.outbox set {sql}", params)


def qbo_client(extraction, tenant: str):
    connection = extraction.resource.registry().get(f"{tenant}.quickbooks")
    return build_client(connection, token_store=extraction.resource.token_store())


class ExpiresMidRun(httpx.BaseTransport):
    """Passes requests through; before the n-th QuickBooks request, every access token the emulator issued stops
    working (as an hour-old token would)."""

    def __init__(self, box, after: int, seen: Counter):
        self.inner, self.box, self.after, self.seen = httpx.HTTPTransport(), box, after, seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen["requests"] += 1
        if self.seen["requests"] == self.after:
            httpx.post(f"{self.box.urls['quickbooks']}/_sandbox/expire-tokens").raise_for_status()
            self.seen["expired"] += 1
        return self.inner.handle_request(request)


@pytest.fixture(scope="module")
def run(extraction):
    ext, box, warehouse = extraction, extraction.box, extraction.warehouse
    ext.extract_all()
    assert ext.run_unified().success
    assert materialize_tenants(RECONCILE_ASSETS, instance=ext.instance, resources={"ledgerlink": ext.resource}).success
    registry = ext.resource.registry()
    plan_writes(warehouse, registry)
    planned = rows(warehouse, "state = 'planned'")
    seen: dict = {}

    # someone edits an invoice after the plan (stale SyncToken), and someone else already made another change
    updates = planned.filter((pl.col("operation") == "update") & (pl.col("entity") == "invoice")
                             & ~pl.col("payload").str.contains("$ref:", literal=True))
    touched, done = updates.row(0, named=True), updates.row(1, named=True)
    for row, change in ((touched, {"PrivateNote": "edited in QuickBooks meanwhile"}), (done, None)):
        client = qbo_client(ext, row["tenant"])
        current = client.read("Invoice", row["app_id"])
        payload = orjson.loads(row["payload"])
        body = {"Id": row["app_id"], "SyncToken": current["SyncToken"], **(change or {
            k: v for k, v in payload.items() if k not in ("Id", "SyncToken", "sparse")})}
        client.update("Invoice", body, request_id=f"someone-{row['app_id']}")
        client.close()
    seen["stale"] = (touched["idempotency_key"], done["idempotency_key"])

    # a crash right after marking a write sent, before its request left: it is still sent, once
    crashed = planned.filter((pl.col("app") == "quickbooks") & (pl.col("operation") == "create")
                             & (pl.col("entity") == "customer")).row(0, named=True)
    set_rows(warehouse, "state = 'sent', attempts = 1, request_id = idempotency_key where idempotency_key = ?",
             [crashed["idempotency_key"]])
    seen["crashed_before"] = crashed["idempotency_key"]

    # an invoice whose sync failed (QuickBooks refused it): re-synced by hand, as from Sequence's dashboard
    failed = planned.filter((pl.col("app") == "quickbooks") & (pl.col("operation") == "create")
                            & (pl.col("entity") == "invoice") & (pl.col("depends_on").list.len() == 0)
                            ).row(0, named=True)
    set_rows(warehouse, "state = 'failed', attempts = 1, request_id = idempotency_key, retriable = false, "
                        "error = 'quickbooks 400 [6000] injected' where idempotency_key = ?",
             [failed["idempotency_key"]])
    _, resynced = resync(warehouse, registry, ext.resource.token_store(), failed["sequence_id"],
                         registry_path=registry_file(ext.resource), echo=lambda _: None)
    seen["resync"] = (failed, resynced)

    # 429s and 5xx on both apps, and a token that expires in the middle of the run
    for fault in ({"kind": "status", "status": 429, "times": 2, "path": "/batch", "retry_after": "0"},
                  {"kind": "status", "status": 503, "times": 2, "path": "/batch"},
                  {"kind": "reset", "times": 1, "path": "/batch"}):
        arm(box, "quickbooks", **fault)
    for fault in ({"kind": "status", "status": 503, "times": 1, "path": "/customers", "method": "POST"},
                  {"kind": "status", "status": 429, "times": 2, "path": "/payment-status"},
                  {"kind": "status", "status": 502, "times": 1, "path": "/customers/", "method": "PUT"}):
        arm(box, "sequence", **fault)
    counter: Counter = Counter()

    def build(connection, transport):
        if connection.app == "quickbooks":
            transport = ExpiresMidRun(box, after=4, seen=counter)
        return build_client(connection, token_store=ext.resource.token_store(), transport=transport, retry=FAST)

    with duckdb.connect(str(warehouse)) as con:
        first = apply(con, registry, ext.resource.token_store(), registry_path=registry_file(ext.resource),
                      build=build, echo=lambda _: None)
    seen["first"], seen["expired"] = first, counter["expired"]
    seen["logs"] = {app: writes(box, app) for app in ("quickbooks", "sequence")}

    # a crash after the answer came back, before it was recorded: rows back to `sent` by hand, of every kind
    done_rows = rows(warehouse, "state = 'confirmed'")
    batch = done_rows.filter(pl.col("batch_item").is_not_null())["request_id"][0]
    again = done_rows.filter((pl.col("request_id") == batch)
                             | (pl.col("idempotency_key") == crashed["idempotency_key"])
                             | ((pl.col("app") == "sequence")
                                & pl.col("operation").is_in(["import", "mark_paid", "link"])))
    assert set(again["operation"]) >= {"import", "mark_paid", "link", "create"}
    set_rows(warehouse, "state = 'sent', confirmed_at = null where idempotency_key in (select unnest(?))",
             [again["idempotency_key"].to_list()])
    seen["crashed_after"] = again
    # the next apply is another process: the command line, on the registry and warehouse named by the environment
    env = {**os.environ, **box.environment(), "LEDGERLINK_REGISTRY": ext.resource.registry_path,
           "LEDGERLINK_WAREHOUSE": ext.resource.warehouse_path, "LEDGERLINK_STATE_DIR": ext.resource.state_dir}
    cli = subprocess.run([sys.executable, "-m", "pipelines.cli", "apply", "--write"], env=env, capture_output=True,
                         text=True, timeout=120)
    seen["cli"] = cli
    seen["logs_after"] = {app: writes(box, app) for app in ("quickbooks", "sequence")}

    # QuickBooks keeps failing past the connector's retries: the write is failed (retriable) and the run goes on;
    # the next apply sends it again under the same requestid, and it is written once
    tenant = planned["tenant"][0]
    extra = Row(tenant, "quickbooks", "customer", "create", "c-exhausted", None,
                {"DisplayName": "Exhausted Retries Ltd", "BillAddr": {"Line1": "1 Main St", "Country": "GB"}},
                "written by hand for the test")
    with duckdb.connect(str(warehouse)) as con:
        outbox.merge_plan(con, pl.DataFrame([extra.record()], schema=empty_plan().schema))
    arm(box, "quickbooks", kind="status", status=503, times=FAST.max_attempts, path="/customer")
    with duckdb.connect(str(warehouse)) as con:
        exhausted = apply(con, registry, ext.resource.token_store(), build=build, echo=lambda _: None)
    failed_row = rows(warehouse, "idempotency_key = ?", [extra.key]).row(0, named=True)
    with duckdb.connect(str(warehouse)) as con:
        retried = apply(con, registry, ext.resource.token_store(), build=build, echo=lambda _: None)
    seen["exhausted"] = (extra.key, exhausted, failed_row, retried, writes(box, "quickbooks"))
    return ext, seen


def test_faults_and_an_expiring_token_end_with_zero_failed_writes(run):
    ext, seen = run
    first = seen["first"]
    assert first.counts["failed"] == 0 and not first.waiting, first.summary()
    assert first.counts["confirmed"] > 30
    assert seen["expired"] == 1
    requests = httpx.get(f"{ext.box.urls['quickbooks']}/_sandbox/requests").json()
    statuses = Counter(r["status"] for r in requests)
    assert statuses[429] >= 2 and statuses[503] >= 2 and statuses[401] >= 1  # they did happen
    assert any("oauth2" in r["path"] for r in requests[-len(requests) // 2:])  # and the token was refreshed
    assert rows(ext.warehouse, "state in ('failed', 'planned', 'sent')").height == 0


def test_every_quickbooks_write_is_executed_once(run):
    ext, seen = run
    log = pl.DataFrame(seen["exhausted"][4])  # the write log at the very end
    ours = log.filter(~pl.col("request_id").str.starts_with("someone-"))
    # one execution per requestid and batch item: the resets and 5xx above were retried, never doubled
    assert ours.group_by("request_id", "bId").len()["len"].max() == 1
    confirmed = rows(ext.warehouse, "state = 'confirmed' and app = 'quickbooks' and operation <> 'link'")
    assert ours.height == confirmed.height


def test_a_stale_sync_token_is_read_again_and_decided_anew(run):
    ext, seen = run
    touched, done = seen["stale"]
    resent = rows(ext.warehouse, "idempotency_key = ?", [touched]).row(0, named=True)
    assert resent["state"] == "confirmed" and resent["request_id"] == f"{touched}-{resent['attempts'] - 1}"
    answer = orjson.loads(resent["app_answer"])
    assert answer["PrivateNote"] == "edited in QuickBooks meanwhile"  # a sparse update kept the other change
    skipped = rows(ext.warehouse, "idempotency_key = ?", [done]).row(0, named=True)
    assert skipped["state"] == "skipped" and skipped["error"].startswith("already in QuickBooks")
    log = pl.DataFrame(seen["logs"]["quickbooks"])
    assert log.filter(pl.col("request_id").str.starts_with(done)).height == 0  # nothing written for it


def test_a_crash_before_the_call_sends_it_once(run):
    ext, seen = run
    key = seen["crashed_before"]
    row = rows(ext.warehouse, "idempotency_key = ?", [key]).row(0, named=True)
    assert row["state"] == "confirmed" and row["request_id"] == key and row["app_id"]
    log = pl.DataFrame(seen["logs"]["quickbooks"])
    assert log.filter(pl.col("request_id") == key).height == 1


def test_a_crash_after_the_call_is_resolved_without_a_duplicate(run):
    ext, seen = run
    assert seen["cli"].returncode == 0, seen["cli"].stdout + seen["cli"].stderr
    assert seen["logs_after"] == seen["logs"]  # QuickBooks replayed its answers; Sequence was looked up first
    again = seen["crashed_after"]
    now = rows(ext.warehouse, "idempotency_key in (select unnest(?))", [again["idempotency_key"].to_list()])
    assert set(now["state"]) == {"confirmed"}
    before = again.select("idempotency_key", "app_id", "sequence_id").sort("idempotency_key")
    assert now.select("idempotency_key", "app_id", "sequence_id").sort("idempotency_key").equals(before)
    assert "0 new" in seen["cli"].stdout and "0 failed" in seen["cli"].stdout


def test_a_resync_sends_one_failed_invoice_again(run):
    ext, seen = run
    failed, result = seen["resync"]
    assert result.counts["failed"] == 0 and result.counts["confirmed"] >= 1
    row = rows(ext.warehouse, "idempotency_key = ?", [failed["idempotency_key"]]).row(0, named=True)
    # QuickBooks refused it outright the first time: it went again as a new request, and exactly once
    assert row["state"] == "confirmed" and row["request_id"] == f"{failed['idempotency_key']}-1"
    log = pl.DataFrame(seen["logs"]["quickbooks"])
    assert log.filter(pl.col("request_id").str.starts_with(failed["idempotency_key"])).height == 1
    # only that invoice (and what it waits for) was sent by the re-sync
    assert result.counts["sent"] <= 1 + len(failed["depends_on"])


def test_outbox_is_complete(run):
    ext, _ = run
    # every intent ended: confirmed, or skipped with its reason (refused by a contract, already in QuickBooks)
    done = rows(ext.warehouse)
    assert set(done["state"]) <= {"confirmed", "skipped"}
    assert done.filter(pl.col("state") == "skipped")["error"].null_count() == 0
    assert outbox.pending(duckdb.connect(str(ext.warehouse), read_only=True)).height == 0


def test_retries_that_run_out_fail_the_write_and_the_next_apply_sends_it_once(run):
    _, seen = run
    key, exhausted, failed_row, retried, log = seen["exhausted"]
    assert exhausted.counts["failed"] == 1
    assert failed_row["state"] == "failed" and failed_row["retriable"] is True
    assert "503" in failed_row["error"] and failed_row["request_id"] == key
    assert retried.counts["confirmed"] == 1 and retried.counts["failed"] == 0
    assert [w["request_id"] for w in log].count(key) == 1
