"""Exactly once, proved by killing: `ledgerlink apply --write` runs in its own process and is SIGKILLed at many
seeded random points (the emulators slowed down so that there are many points to land on), then run again, until a
run ends by itself; one more run must then send nothing. The emulators' own write logs are the proof: every planned
write done once, none twice, none lost."""

from collections import Counter

import polars as pl
import pytest

from connectors.sandbox.demo_data import generate
from tests.assets.writeback._sigkill import FirstRequest, kill_until_done, prepare

SEED = 20250701
# 15-20 kills land in practice; the floor keeps a wide margin so a faster machine cannot make this flaky
MIN_KILLS = 6
# seconds after the process's first request, now timed to the millisecond in-process (it was timed by polling the
# request logs over HTTP, which added a growing lag: 0.05-0.3 s then landed about as far as this does now); each
# killed run gets a little further
MIN_DELAY, MAX_DELAY = 0.08, 0.6
SLOW = 0.08  # seconds per emulator request while the kills happen
APPS = ("quickbooks", "sequence")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    # the shared data without the CRMs (their exactly-once is test_crm_exactly_once.py's): two tenants, QuickBooks
    # on both and Xero beside it on one, as many QuickBooks and Sequence writes to kill, a third of the extraction
    root = tmp_path_factory.mktemp("fixtures_kill")
    generate(root, invoices=60, seed=3, tenants=2, discrepancies=True, hubspot=False, salesforce=False, attio=False)
    return root


@pytest.fixture(scope="module")
def killed(extraction):
    planned = prepare(extraction)
    assert planned.filter(pl.col("state") == "planned").height > 30, "the plan should hold the writes to kill"
    return kill_until_done(extraction, planned, trigger=FirstRequest(extraction.box, APPS),
                           delay=(MIN_DELAY, MAX_DELAY),
                           slow={app: {"delay": SLOW} for app in APPS}, seed=SEED, logged=APPS)


def test_sigkill_at_random_points_many_times(killed):
    runs = killed["runs"]
    kills = [r for r in runs if r["killed"]]
    assert len(kills) >= MIN_KILLS, runs
    # the kills landed all along the apply: the writes went on growing between them
    progress = [r["writes"] for r in kills]
    assert len(set(progress)) >= MIN_KILLS // 2, progress
    print(f"\n{len(kills)} kills, {[round(r['delay'], 2) for r in kills]} s after the first request, "
          f"writes done by then {progress}; the run that finished took {runs[-1]['elapsed']:.1f} s "
          f"({runs[-1]['sending']:.1f} s sending)")


def test_sigkill_every_outbox_row_ends_confirmed_or_skipped_with_a_reason(killed):
    final = killed["outbox"]
    assert set(final["state"]) <= {"confirmed", "skipped"}, Counter(final["state"])
    assert final.filter(pl.col("state") == "skipped")["error"].null_count() == 0
    assert set(killed["planned"]["idempotency_key"]) <= set(final["idempotency_key"])  # none lost


def test_sigkill_every_quickbooks_write_is_executed_once(killed):
    log = pl.DataFrame(killed["logs"]["quickbooks"])
    final = killed["outbox"]
    # a requestid may be sent again after a kill, but QuickBooks executes it (and each batch item) once
    per_request = log.group_by("tenant", "request_id", "bId").len()
    assert per_request["len"].max() == 1, per_request.filter(pl.col("len") > 1)
    confirmed = final.filter((pl.col("app") == "quickbooks") & (pl.col("state") == "confirmed")
                             & (pl.col("operation") != "link"))
    assert log.height == confirmed.height  # none lost, none extra
    # each confirmed write's requestid is in the log (a batch's requestid once per item)
    assert set(confirmed["request_id"]) == set(log["request_id"])
    created = log.filter(pl.col("op") == "create")
    # no entity created twice: each created id once, and each planned create done by one execution
    assert created.group_by("tenant", "entity", "id").len()["len"].max() == 1


def test_sigkill_no_quickbooks_entity_is_there_twice(killed):
    from connectors.clients import build_client

    ext = killed["ext"]
    registry = ext.resource.registry()
    for key in registry.keys("quickbooks"):
        client = build_client(registry.get(key), token_store=ext.resource.token_store())
        try:
            for entity, field in (("Invoice", "DocNumber"), ("Customer", "DisplayName"), ("Item", "Name"),
                                  ("CreditMemo", "DocNumber")):
                values = [r.get(field) for page in client.iter_query(entity) for r in page if r.get(field)]
                twice = {v: n for v, n in Counter(values).items() if n > 1}
                assert not twice, f"{key}: {entity} {field} twice: {twice}"
        finally:
            client.close()


def test_sigkill_sequence_writes_are_not_doubled(killed):
    log = killed["logs"]["sequence"]
    aliases = Counter((w["tenant"], w["value"]) for w in log if w["entity"] == "customer_alias")
    assert all(n == 1 for n in aliases.values()), {k: n for k, n in aliases.items() if n > 1}
    imported = Counter((w["tenant"], w["legalName"]) for w in log
                       if w["entity"] == "customer" and w["op"] == "create")
    assert all(n == 1 for n in imported.values()), {k: n for k, n in imported.items() if n > 1}
    paid = Counter((w["tenant"], w["id"]) for w in log if w["op"] == "payment_status")
    assert all(n == 1 for n in paid.values()), {k: n for k, n in paid.items() if n > 1}
    final = killed["outbox"]
    marked = final.filter((pl.col("app") == "sequence") & (pl.col("operation") == "mark_paid")
                          & (pl.col("state") == "confirmed"))
    assert len(paid) == marked.height


def test_sigkill_a_last_clean_apply_sends_nothing(killed):
    again = killed["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert killed["after"] == killed["logs"]
    assert "0 failed" in again.stdout
