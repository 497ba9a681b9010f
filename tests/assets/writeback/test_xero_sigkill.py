"""Exactly once on Xero, proved by killing: the harness of test_sigkill.py (tests/assets/writeback/_sigkill.py) on
a tenant that keeps its books in QuickBooks and Xero, with the Xero API slowed down and every SIGKILL landing
while one of apply's Xero requests is in flight (the emulator still executes it: the answer is what is lost).
The next run sends the same members under the same Idempotency-Key, recorded before the first send, and Xero
replays its first answer. The Xero emulator's write log is the proof: each element written once, and the
organisation holds no contact, invoice, credit note or item twice.

Xero keeps an Idempotency-Key for 6 minutes only. A request re-sent later (a crashed apply run again the next
day) is executed again: apply does not look at how old a `sent` row is, so what stops a duplicate is Xero's own
uniqueness (contact Name and ContactNumber = the Sequence id, item Code, invoice number); the re-sent creates
end failed, naming the record and the clash, and the record Xero already holds is linked by the next
reconciliation. The last test shows both sides of the window on the emulator's clock."""

from __future__ import annotations

from collections import Counter

import duckdb
import httpx
import polars as pl
import pytest

from assets.writeback import outbox
from assets.writeback.xero import XERO
from connectors.auth import TokenStore
from connectors.sandbox.demo_data import generate
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.xero import IDEMPOTENCY_SECONDS, XeroEmulator
from tests.assets.writeback._sigkill import NthStart, kill_until_done, prepare
from tests.assets.writeback.test_xero_rate_limits import Clock, _row, apply_once, load, writes
from tests.connectors.test_xero import small_fixtures

SEED = 20250702
MIN_KILLS = 4  # 9 land when let be (one Xero request of a run killed); at most MAX_KILLS, each run costs seconds
MAX_KILLS = 6
SLOW = 0.4  # seconds per Xero API request while the kills happen
KILL_WITHIN = (0.02, SLOW + 0.05)  # after the request starts: nearly always before its answer
WRITE = ("PUT", "POST")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    # one tenant (acme-uk: QuickBooks and Xero), no CRM: what the kills need, quicker to extract
    root = tmp_path_factory.mktemp("fixtures_xero_kill")
    generate(root, invoices=60, seed=3, tenants=1, hubspot=False, salesforce=False, attio=False)
    return root


@pytest.fixture(scope="module")
def killed(extraction):
    planned = prepare(extraction)
    xero = planned.filter((pl.col("app") == XERO) & (pl.col("state") == "planned"))
    assert xero.height > 15, "the plan should hold the Xero writes to kill"
    box = extraction.box
    httpx.delete(f"{box.urls[XERO]}/_sandbox/log").raise_for_status()
    # the k-th Xero request of a run (k in 1..3; the first is often the re-send of the one killed before)
    trigger = NthStart(box, XERO, "/api.xro/", upto=3)
    result = kill_until_done(extraction, planned, trigger=trigger, delay=KILL_WITHIN,
                             slow={XERO: {"delay": SLOW, "path": "/api.xro/"}}, seed=SEED,
                             logged=(XERO, "sequence"), max_kills=MAX_KILLS)
    result["requests"] = httpx.get(f"{box.urls[XERO]}/_sandbox/requests").json()
    return result


def test_xero_sigkill_kills_landed_during_xero_requests(killed):
    runs = killed["runs"]
    kills = [r for r in runs if r["killed"]]
    assert len(kills) >= MIN_KILLS, runs
    progress = [r["writes"] for r in kills]
    assert len(set(progress)) >= MIN_KILLS // 2, progress  # the writes went on growing between kills
    print(f"\n{len(kills)} kills during Xero requests, writes done by then {progress}; the run that finished "
          f"took {runs[-1]['elapsed']:.1f} s")


def test_xero_sigkill_every_outbox_row_ends_confirmed_or_skipped_with_a_reason(killed):
    final = killed["outbox"]
    assert set(final["state"]) <= {"confirmed", "skipped"}, final.filter(
        ~pl.col("state").is_in(["confirmed", "skipped"])).select("app", "operation", "state", "error").to_dicts()
    assert final.filter(pl.col("state") == "skipped")["error"].null_count() == 0
    assert set(killed["planned"]["idempotency_key"]) <= set(final["idempotency_key"])  # none lost


def test_xero_sigkill_each_element_is_written_once(killed):
    log = killed["logs"][XERO]
    final = killed["outbox"]
    confirmed = final.filter((pl.col("app") == XERO) & (pl.col("state") == "confirmed"))
    executed = Counter((w["idempotency_key"], w["id"]) for w in log)
    assert max(executed.values()) == 1, {k: n for k, n in executed.items() if n > 1}
    # each confirmed write is one entry under the key of the request that carried it; none lost, none extra
    assert set(executed) == {(r["request_id"], r["app_id"]) for r in confirmed.to_dicts()}
    assert len(log) == confirmed.height
    created = Counter((w["entity"], w["id"]) for w in log if w["op"] == "create")
    assert max(created.values()) == 1


def test_xero_sigkill_re_sent_requests_were_replayed_not_executed_again(killed):
    answered = Counter(r["idempotency_key"] for r in killed["requests"]
                       if r["method"] in WRITE and r["status"] == 200 and "/api.xro/" in r["path"])
    resent = {key for key, n in answered.items() if n > 1}
    assert resent, "a killed request should have been sent again"
    # each is the one key its rows were recorded under before the first send (their elements are in the write
    # log once: the test above)
    keys = killed["outbox"].filter(pl.col("app") == XERO)["request_id"].drop_nulls()
    assert resent <= set(keys)
    print(f"\n{len(resent)} Xero requests answered twice or more under one key (replayed), "
          f"{sum(answered.values())} answered in all")


def test_xero_sigkill_the_organisation_holds_nothing_twice(killed):
    from connectors.clients import build_client

    ext = killed["ext"]
    registry = ext.resource.registry()
    keys = registry.keys(XERO)
    assert keys
    for key in keys:
        client = build_client(registry.get(key), token_store=ext.resource.token_store())
        try:
            for collection, fields, params in (
                    ("Contacts", ("Name", "ContactNumber"), {"includeArchived": "true"}),
                    ("Invoices", ("InvoiceNumber",), None), ("CreditNotes", ("CreditNoteNumber",), None),
                    ("Items", ("Code",), None)):
                records = list(client.iter_records(collection, params=params))
                for field in fields:
                    values = [str(r[field]).strip().lower() for r in records if r.get(field)
                              and (r.get("Type") in (None, "ACCREC", "ACCRECCREDIT"))
                              and r.get("Status") != "DELETED"]
                    twice = {v: n for v, n in Counter(values).items() if n > 1}
                    assert not twice, f"{key}: {collection} {field} twice: {twice}"
        finally:
            client.close()


def test_xero_sigkill_sequence_writes_are_not_doubled(killed):
    log = killed["logs"]["sequence"]
    for what, entries in (("alias", [(w["tenant"], w["value"]) for w in log if w["entity"] == "customer_alias"]),
                          ("import", [(w["tenant"], w["legalName"]) for w in log
                                      if w["entity"] == "customer" and w["op"] == "create"]),
                          ("paid", [(w["tenant"], w["id"]) for w in log if w["op"] == "payment_status"])):
        twice = {k: n for k, n in Counter(entries).items() if n > 1}
        assert not twice, (what, twice)


def test_xero_sigkill_a_last_clean_apply_sends_nothing(killed):
    again = killed["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert killed["after"] == killed["logs"]
    assert "0 failed" in again.stdout


# ----- the 6-minute replay window ---------------------------------------------------------------------------------


def _creates() -> list:
    return [
        _row("acme", "customer", "create", "seq-a", None, {"Name": "New A", "ContactNumber": "seq-a"}),
        _row("acme", "product", "create_item", "p-new", None,
             {"Code": "NEWFEE", "Name": "New fee", "SalesDetails": {"AccountCode": "200"}}),
        _row("acme", "invoice", "create", "seq-inv", None, {
            "Type": "ACCREC", "Contact": {"ContactID": "c-2"}, "InvoiceNumber": "SEQ-0001", "Date": "2025-03-02",
            "DueDate": "2025-04-01", "LineAmountTypes": "Exclusive", "CurrencyCode": "EUR", "Status": "AUTHORISED",
            "LineItems": [{"Description": "Platform: fee", "Quantity": 1, "UnitAmount": 100, "AccountCode": "200",
                           "TaxType": "NONE"}]}),
        _row("acme", "invoice", "update", "seq-inv-1", "inv-1", {"InvoiceID": "inv-1", "DueDate": "2025-04-30"}),
    ]


@pytest.mark.parametrize("late", [False, True], ids=["within-6-min", "after-6-min"])
def test_a_request_re_sent_after_a_lost_answer_is_replayed_within_the_window_and_refused_not_doubled_after(
        late, tmp_path):
    clock = Clock()
    with ServedEmulator(XeroEmulator(small_fixtures(), clock=clock)) as served, \
            duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        store = TokenStore(tmp_path / "tokens.json")
        rows = _creates()
        load(con, rows)
        first = apply_once(con, served.url, store)
        assert first.counts["confirmed"] == len(rows), first.summary()
        ids = dict(outbox.read(con).select("sequence_id", "app_id").iter_rows())
        log = writes(served.url)
        # a crash after the requests reached Xero, before their answers were recorded
        con.execute("update writeback.outbox set state = 'sent', app_id = case when operation = 'update' "
                    "then app_id end, confirmed_at = null")
        if late:
            clock.offset += IDEMPOTENCY_SECONDS + 1
        again = apply_once(con, served.url, store)
        box = {r["sequence_id"]: r for r in outbox.read(con).to_dicts()}
        after = writes(served.url)
    creates = [w for w in after if w["op"] == "create"]
    # never a second contact, item or invoice: within the window Xero replays, after it its uniqueness refuses
    assert Counter((w["entity"], w["id"]) for w in creates) == Counter((w["entity"], w["id"]) for w in log
                                                                       if w["op"] == "create")
    assert len(creates) == 3
    if not late:
        assert after == log  # replayed: nothing executed again
        assert again.counts["confirmed"] == len(rows)
        assert {k: r["app_id"] for k, r in box.items()} == ids
        return
    # after the window: the creates are executed again and refused; the record Xero holds keeps its id there,
    # not in the outbox, until the next reconciliation links it (ContactNumber, Code, InvoiceNumber)
    for sequence_id, clash in (("seq-a", "already assigned"), ("p-new", "already exists"),
                               ("seq-inv", "must be unique")):
        row = box[sequence_id]
        assert row["state"] == "failed" and not row["retriable"] and row["app_id"] is None, row
        assert sequence_id in row["error"] and clash in row["error"], row["error"]
    # the update went again and changed nothing: no write, confirmed
    assert box["seq-inv-1"]["state"] == "confirmed"
    assert [w for w in after if w["op"] != "create"] == [w for w in log if w["op"] != "create"]
