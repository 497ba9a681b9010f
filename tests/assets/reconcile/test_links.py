"""reconcile.links: what Sequence stores, the settings' mappings and confirmed write-backs; conflicting and
dangling links; records that failed a contract."""

from datetime import UTC, datetime

import polars as pl
import pytest

from assets.reconcile.links import LINKS_SCHEMA, build_links, writeback_links

QBO, SEQ = "quickbooks", "sequence"
NOW = datetime(2025, 7, 1, tzinfo=UTC)


def test_links_from_sequence_records_and_settings(co):
    links, _ = co.reconcile()
    assert links.schema == pl.Schema(LINKS_SCHEMA)
    assert links.select("entity", "sequence_id", "app_id", "method").sort("entity", "sequence_id").rows() == [
        ("customer", "c1", "1", "integration_id"), ("invoice", "inv1", "100", "linked_service"),
        ("invoice_line", "l1", "100-1", "external_id"), ("invoice_line", "l2", "100-2", "external_id"),
        ("product", "prod-platform", "5", "settings"), ("product", "prod-seats", "6", "settings"),
        ("tax_category", "cat-std", "2", "settings")]
    assert links["linked_at"].unique().to_list() == [NOW]


def test_vendor_service_names_become_app_ids(co):
    customers = co.unified("customers", [{"tenant": "t1", "app": SEQ, "id": "c1",
                                          "links": [{"app": "QuickBooks_Online", "app_id": " 7 "}]}]).lazy()
    links = build_links({"customers": customers}, linked_at=NOW).collect()
    assert links.select("app", "app_id").rows() == [(QBO, "7")]


def test_confirmed_creates_and_imports_of_earlier_write_backs_link_records(co):
    co.row("customers", SEQ, "c1", links=None)
    co.rows["customers"] += [
        {"tenant": "t1", "app": SEQ, "id": "c20", "name": "Imported Ltd", "email": "ap@imported.example",
         "app_status": "ACTIVE"},
        {"tenant": "t1", "app": QBO, "id": "20", "name": "Imported Ltd", "email": "ap@imported.example"}]
    outbox = pl.DataFrame({  # writeback.outbox's columns (the ones reconciliation reads)
        "tenant": ["t1"] * 4, "app": [QBO, QBO, QBO, SEQ], "entity": ["customer"] * 4,
        "operation": ["create", "create", "update", "import"], "sequence_id": ["c1", "c1", "c9", "c20"],
        "app_id": ["1", "2", "3", "20"], "counterpart_app": [None, None, None, QBO],
        "state": ["confirmed", "failed", "confirmed", "confirmed"],
        "confirmed_at": [datetime(2025, 6, 1, tzinfo=UTC), None, datetime(2025, 6, 2, tzinfo=UTC),
                         datetime(2025, 6, 3, tzinfo=UTC)]})
    links, mismatches = co.reconcile(outbox=outbox)
    customer = links.filter(pl.col("entity") == "customer").sort("sequence_id")
    assert customer.select("app", "sequence_id", "app_id", "method", "linked_at").rows() == [
        (QBO, "c1", "1", "writeback", datetime(2025, 6, 1, tzinfo=UTC)),
        (QBO, "c20", "20", "writeback", datetime(2025, 6, 3, tzinfo=UTC))]  # an import's twin is the counterpart
    assert mismatches.height == 0  # the pairs are compared like any other, and agree


def test_no_outbox_table_is_no_write_back_links():
    assert writeback_links(None, NOW).collect().height == 0
    incomplete = pl.LazyFrame({"tenant": ["t1"], "app": [QBO]})
    assert writeback_links(incomplete, NOW).collect().height == 0


def test_two_records_linked_to_one_twin_are_a_conflict_not_compared(co):
    co.rows["customers"].append({"tenant": "t1", "app": SEQ, "id": "c2", "name": "Blue Analytics (dup)",
                                 "email": "dup@blue.example", "app_status": "ACTIVE",
                                 "links": [{"app": QBO, "app_id": "1"}]})
    _, mismatches = co.reconcile()
    assert sorted(mismatches.select("kind", "sequence_id", "app_id", "proposed_action").rows()) == [
        ("link_conflict", "c1", "1", "review"), ("link_conflict", "c2", "1", "review")]


def test_a_link_to_a_record_quickbooks_no_longer_has(co):
    co.row("invoices", SEQ, "inv1", links=[{"app": QBO, "app_id": "999"}])
    found = co.mismatches().filter(pl.col("entity") == "invoice").sort("kind")
    # reported, and the invoice of the same number is proposed as its twin (not linked, and not created again)
    assert found.select("kind", "sequence_id", "app_id", "proposed_action").rows() == [
        ("missing_in_app", "inv1", "999", "review"), ("unlinked_candidate", "inv1", "100", "link")]
    assert "which QuickBooks does not have" in found["reason"][0]


def test_records_that_failed_a_contract_are_invalid_mismatches(co):
    quarantine = pl.DataFrame({
        "tenant": ["t1"] * 4, "app": [QBO, QBO, SEQ, QBO], "entity": ["invoice", "invoice", "invoice", "invoice_line"],
        "id": ["266", None, "inv-xyz", "266-1"], "check": ["extract", "extract", "extract", "document_quarantined"],
        "field": ["TotalAmt", "Id", "currency", "document_id"],
        "reason": ["TotalAmt is not a number", "Id is missing", "currency is not an ISO 4217 currency code",
                   "its invoice 266 was quarantined"]})
    _, mismatches = co.reconcile(quarantine=quarantine)
    assert sorted(mismatches.select("app", "kind", "field", "sequence_id", "app_id").rows(),
                  key=lambda r: r[2]) == [
        (QBO, "invalid", "Id", None, None), (QBO, "invalid", "TotalAmt", None, "266"),
        (SEQ, "invalid", "currency", "inv-xyz", None)]  # the cascaded line is its document's problem
    assert all(action == "review" for action in mismatches["proposed_action"])


@pytest.mark.parametrize("collide", [False, True])
def test_each_link_is_a_pair_a_conflict_or_dangling_by_hashed_keys_checked_on_the_real_ones(monkeypatch, collide):
    import assets.reconcile.mismatches as mismatches

    if collide:  # every key hashes alike: the m:1 check fails on the hashes and the exact joins decide
        monkeypatch.setattr(mismatches, "_key_hash", lambda columns: pl.col(columns[0]).hash() & 0)
    seq = pl.DataFrame({"tenant": ["t1", "t1", "t1", "t1", "t2"], "id": ["s0", "s1", "s2", "s3", "s0"],
                        "_subject": ["S0", "S1", "S2", "S3", "T2"]})
    app = pl.DataFrame({"tenant": ["t1", "t1", "t2", "t1"], "app": QBO, "id": ["a0", "a1", "a0", "a9"]})
    rows = [("t1", "s0", "a0"), ("t1", "s0", "a0"),  # the same link twice is one link
            ("t1", "s1", "a1"), ("t1", "s2", "a1"),  # two records linked to one twin: a conflict
            ("t1", "s3", "gone"),  # a twin the app no longer has
            ("t2", "s0", "a0"),  # another tenant's keys
            ("t1", "s9", "a9")]  # a record this side does not have: not its link
    links = pl.DataFrame(rows, schema=["tenant", "sequence_id", "app_id"], orient="row").with_columns(
        app=pl.lit(QBO), entity=pl.lit("invoice"), method=pl.lit("linked_service"))
    others = pl.DataFrame({"tenant": ["t1", "t1"], "sequence_id": ["s3", "s3"], "app_id": ["a9", "a9"],
                           "app": QBO, "entity": ["customer", "invoice"], "method": ["linked_service", "settings"]})
    found = mismatches._pairs(pl.concat([links, others], how="diagonal").lazy(), "invoice", seq.lazy(), app.lazy(),
                              pl.col("_subject"), QBO)
    pairs = found.pairs.collect()
    assert sorted(pairs.select("tenant", "sequence_id", "app_id").rows()) == [("t1", "s0", "a0"), ("t2", "s0", "a0")]
    si, ai = found.index  # row numbers into both frames, in the order of `pairs`
    assert seq[si].select("tenant", "id").rows() == pairs.select("tenant", "sequence_id").rows()
    assert app[ai].select("tenant", "id").rows() == pairs.select("tenant", "app_id").rows()
    assert sorted(found.rows.collect().select("kind", "sequence_id", "app_id").rows()) == [
        ("link_conflict", "s1", "a1"), ("link_conflict", "s2", "a1"), ("missing_in_app", "s3", "gone")]
    assert "S3 is linked to QuickBooks invoice gone, which QuickBooks does not have" in \
        found.rows.collect().filter(kind="missing_in_app")["reason"][0]
    assert sorted(found.linked_sequence.collect().rows()) == [("t1", "s0"), ("t1", "s1"), ("t1", "s2"), ("t2", "s0")]
    assert found.dangling_sequence.collect().rows() == [("t1", "s3")]
    assert sorted(found.linked_app.collect().rows()) == [("t1", QBO, "a0"), ("t1", QBO, "a1"), ("t1", QBO, "gone"),
                                                         ("t2", QBO, "a0")]
    assert found.unlinked_sequence.collect().select("tenant", "id").rows() == [("t1", "s3")]
    assert found.unlinked_app.collect().select("tenant", "id").rows() == [("t1", "a9")]
