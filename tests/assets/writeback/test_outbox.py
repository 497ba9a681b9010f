"""writeback.outbox on a real DuckDB file: planning never duplicates, an unsent intent is replaced by a newer
one, a write that may have happened holds back a new one, and every state change is committed where another
process sees it."""

import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from assets.reconcile.assets import compute_links
from assets.reconcile.links import LINKS_SCHEMA
from assets.writeback import outbox
from assets.writeback.outbox import Outcome
from assets.writeback.plan import Row, empty_plan


def plan_of(*rows: Row) -> pl.DataFrame:
    frame = pl.DataFrame([r.record() for r in rows], schema=empty_plan().schema)
    return frame


def invoice_update(due: str, *, tenant: str = "t1") -> Row:
    return Row(tenant, "quickbooks", "invoice", "update", "inv-1", "101",
               {"Id": "101", "SyncToken": "0", "sparse": True, "DueDate": due}, "due date differs")


def invoice_create(number: str = "INV1", *, error: str | None = None) -> Row:
    return Row("t1", "quickbooks", "invoice", "create", "inv-2", None,
               {"CustomerRef": {"value": "1"}, "DocNumber": number}, "missing in QuickBooks", error=error)


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "wh.duckdb"))
    yield connection
    connection.close()


def states(con) -> dict[str, str]:
    return dict(con.execute("select idempotency_key, state from writeback.outbox").fetchall())


def test_planning_again_inserts_nothing(con):
    plan = plan_of(invoice_update("2025-07-31"), invoice_create())
    assert outbox.merge_plan(con, plan).inserted == 2
    again = outbox.merge_plan(con, plan)
    assert (again.inserted, again.refreshed, again.superseded, again.withdrawn) == (0, 0, 0, 0)
    assert con.execute("select count(*), count(distinct idempotency_key) from writeback.outbox").fetchall() == [(2, 2)]


def test_the_key_is_unique_in_the_table(con):
    outbox.merge_plan(con, plan_of(invoice_create()))
    with pytest.raises(duckdb.ConstraintException):
        con.execute("insert into writeback.outbox select * from writeback.outbox")


def test_an_unsent_row_takes_the_fresh_plan_of_its_key(con):
    skipped = invoice_create(error="CustomerRef: not linked yet")
    outbox.merge_plan(con, plan_of(skipped))
    assert states(con) == {skipped.key: "skipped"}
    fixed = invoice_create()  # same content, same key: the problem is gone
    assert fixed.key == skipped.key
    assert outbox.merge_plan(con, plan_of(fixed)).refreshed == 1
    assert states(con) == {fixed.key: "planned"}


def test_a_changed_document_replaces_its_unsent_update(con):
    old, new = invoice_update("2025-07-31"), invoice_update("2025-08-15")
    outbox.merge_plan(con, plan_of(old))
    merge = outbox.merge_plan(con, plan_of(new))
    assert merge.inserted == 1 and merge.superseded == 1
    assert states(con) == {old.key: "skipped", new.key: "planned"}
    error = con.execute("select error from writeback.outbox where idempotency_key = ?", [old.key]).fetchone()[0]
    assert error.startswith("superseded by a newer plan of the same record")


def test_a_write_that_may_have_happened_holds_back_a_new_one(con):
    old, new = invoice_update("2025-07-31"), invoice_update("2025-08-15")
    outbox.merge_plan(con, plan_of(old))
    outbox.mark_sent(con, [(old.key, old.key, None)])  # sent, answer never recorded
    merge = outbox.merge_plan(con, plan_of(new))
    assert merge.inserted == 0 and merge.waiting == [new.key]
    assert states(con) == {old.key: "sent"}
    # once it is recorded, the new content goes
    outbox.record(con, [Outcome(old.key, "confirmed", answer="{}")])
    assert outbox.merge_plan(con, plan_of(new)).inserted == 1


def test_a_record_is_created_once(con):
    first = invoice_create("INV1")
    outbox.merge_plan(con, plan_of(first))
    outbox.mark_sent(con, [(first.key, first.key, None)])
    outbox.record(con, [Outcome(first.key, "confirmed", answer='{"Id": "300"}', app_id="300")])
    # a plan made from data older than the create (the document changed meanwhile): no second create
    merge = outbox.merge_plan(con, plan_of(invoice_create("INV1-renumbered")))
    assert merge.inserted == 0 and len(merge.waiting) == 1


def sequence_write(operation: str, pair: str, *, sequence_id: str | None = None, app_id: str | None = None,
                   name: str = "Green Robotics Ltd") -> Row:
    payload = {"legalName": name, "integrationIds": [{"service": pair, "id": app_id}]}
    return Row("t1", "sequence", "customer", operation, sequence_id, app_id, payload, "from the pair",
               counterpart_app=pair)


def confirm(con, row: Row, **ids: str) -> None:
    outbox.merge_plan(con, plan_of(row))
    outbox.mark_sent(con, [(row.key, row.key, None)])
    outbox.record(con, [Outcome(row.key, "confirmed", answer="{}", **ids)])


def test_writes_to_sequence_for_different_apps_are_different_records_with_the_same_id_string(con):
    # QuickBooks customer 9 and HubSpot company 9 are two companies: each is imported
    confirm(con, sequence_write("import", "quickbooks", app_id="9"), sequence_id="cus-1")
    hubspot = sequence_write("import", "hubspot", app_id="9", name="Blue Ltd")
    merge = outbox.merge_plan(con, plan_of(hubspot))
    assert merge.inserted == 1 and merge.waiting == []
    # while one app's record is imported once (a later plan of it, changed meanwhile, waits)
    merge = outbox.merge_plan(con, plan_of(sequence_write("import", "quickbooks", app_id="9", name="Green Ltd")))
    assert merge.inserted == 0 and len(merge.waiting) == 1
    # a Sequence customer is linked once per app: its QuickBooks link does not hold back its Xero link
    confirm(con, sequence_write("link", "quickbooks", sequence_id="cus-1", app_id="9"))
    assert outbox.merge_plan(con, plan_of(sequence_write("link", "xero", sequence_id="cus-1", app_id="x-9"))
                             ).inserted == 1
    assert outbox.merge_plan(con, plan_of(sequence_write("link", "quickbooks", sequence_id="cus-1", app_id="10"))
                             ).waiting != []


def test_a_sequence_write_from_before_counterpart_app_is_quickbooks(con):
    old = sequence_write("import", "quickbooks", app_id="9")
    confirm(con, old, sequence_id="cus-1")
    con.execute("update writeback.outbox set counterpart_app = null")
    assert outbox.merge_plan(con, plan_of(sequence_write("import", "quickbooks", app_id="9", name="Green Ltd"))
                             ).waiting != []
    assert outbox.merge_plan(con, plan_of(sequence_write("import", "attio", app_id="9"))).inserted == 1


def test_a_complete_plan_withdraws_unsent_rows_it_no_longer_has(con):
    kept, gone = invoice_create(), invoice_update("2025-07-31")
    other_tenant = invoice_update("2025-07-31", tenant="t2")
    outbox.merge_plan(con, plan_of(kept, gone, other_tenant))
    merge = outbox.merge_plan(con, plan_of(kept), withdraw_tenants=["t1"])
    assert merge.withdrawn == 1
    assert states(con) == {kept.key: "planned", gone.key: "skipped", other_tenant.key: "planned"}


def test_sent_is_committed_before_the_call_so_a_killed_process_leaves_it(tmp_path):
    """A process marks a row sent and is killed (SIGKILL) before it could record an answer: the next one finds
    the row `sent`, with the requestid it went under, among the rows to resend."""
    path = tmp_path / "wh.duckdb"
    code = f"""
import os, signal, duckdb
import polars as pl
from assets.writeback import outbox
from assets.writeback.plan import Row, empty_plan
row = Row("t1", "quickbooks", "invoice", "create", "inv-2", None, {{"DocNumber": "INV1"}}, "missing")
con = duckdb.connect({str(path)!r})
outbox.merge_plan(con, pl.DataFrame([row.record()], schema=empty_plan().schema))
outbox.mark_sent(con, [(row.key, row.key, None)])
print(row.key, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path.cwd(), timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    key = done.stdout.strip()
    with duckdb.connect(str(path)) as con:
        seen = con.execute("select state, attempts, request_id, sent_at is not null from writeback.outbox").fetchone()
        assert seen == ("sent", 1, key, True)
        assert outbox.pending(con)["idempotency_key"].to_list() == [key]


def test_confirmed_creates_and_links_become_links(con):
    create = invoice_create()
    link = Row("t1", "quickbooks", "invoice", "link", "inv-3", "103", {"sequenceId": "inv-3", "appId": "103"},
               "same number")
    stored = Row("t1", "sequence", "customer", "link", "c-1", "7", {"customerId": "c-1", "integrationIds": []},
                 "candidate")
    con.execute("create schema reconcile")
    con.register("empty_links", pl.DataFrame(schema=LINKS_SCHEMA).to_arrow())
    con.execute("create table reconcile.links as select * from empty_links")
    outbox.merge_plan(con, plan_of(create, link, stored))
    outbox.record(con, [Outcome(create.key, "confirmed", app_id="300"), Outcome(link.key, "confirmed"),
                        Outcome(stored.key, "confirmed", app_id="7")])
    links = con.execute("select app, entity, sequence_id, app_id, method from reconcile.links order by 3").fetchall()
    assert links == [("quickbooks", "customer", "c-1", "7", "writeback"),
                     ("quickbooks", "invoice", "inv-2", "300", "writeback"),
                     ("quickbooks", "invoice", "inv-3", "103", "writeback")]
    # and reconciliation rebuilds them from the outbox: document links live only there
    table = outbox.read(con).lazy()
    rebuilt = compute_links({}, {"quickbooks": {"t1": {}}}, outbox=table, linked_at=datetime.now(UTC))
    assert set(rebuilt.select("entity", "sequence_id", "app_id").iter_rows()) >= {("invoice", "inv-2", "300"),
                                                                                 ("invoice", "inv-3", "103")}
