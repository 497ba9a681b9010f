"""The generic field diff (`field_mismatches`): values compared as the apps mean them, never a false difference
from float noise, whitespace, case of emails or time zones; amounts at the currency's minor units; reasons that
name the record; and line pairing by the link Sequence stores, else by position."""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest

from assets.reconcile.links import MISMATCH_SCHEMA
from assets.reconcile.mismatches import FieldSpec, field_mismatches

QBO, SEQ = "quickbooks", "sequence"
MONEY = pl.Decimal(38, 9)


def diff(seq_rows: list[dict], app_rows: list[dict], specs: list[FieldSpec], **kwargs) -> pl.DataFrame:
    seq = pl.DataFrame([{"tenant": "t1", "app": SEQ, "id": f"s{i}", **r} for i, r in enumerate(seq_rows)],
                       infer_schema_length=None)
    app = pl.DataFrame([{"tenant": "t1", "app": QBO, "id": f"a{i}", **r} for i, r in enumerate(app_rows)],
                       infer_schema_length=None)
    links = pl.DataFrame({"tenant": "t1", "app": QBO, "sequence_id": [f"s{i}" for i in range(len(seq_rows))],
                          "app_id": [f"a{i}" for i in range(len(app_rows))]})
    # amounts and prices are Decimal(38, 9) in the model, whatever the test wrote
    seq = seq.with_columns(pl.col(c).cast(MONEY) for c in seq.columns if c.endswith("total") or c == "rate")
    app = app.with_columns(pl.col(c).cast(MONEY) for c in app.columns if c.endswith("total") or c == "rate")
    return field_mismatches(seq.lazy(), app.lazy(), links.lazy(), specs, entity="invoice", **kwargs).collect()


def test_the_reason_names_the_record_and_both_values():
    found = diff([{"number": "INV00042", "due_date": date(2025, 4, 1)}],
                 [{"number": "INV00042", "due_date": date(2025, 4, 15)}],
                 [FieldSpec("due_date", "due date", "due_date", "due_date", compare="date")],
                 subject=pl.concat_str([pl.lit("Invoice "), pl.col("number")]))
    assert found.schema == pl.Schema(MISMATCH_SCHEMA)
    assert found.row(0, named=True) == {
        "tenant": "t1", "app": QBO, "entity": "invoice", "sequence_id": "s0", "app_id": "a0", "kind": "field_differs",
        "field": "due_date", "sequence_value": "2025-04-01", "app_value": "2025-04-15",
        "proposed_action": "update_in_app",
        "reason": "Invoice INV00042: due date is 2025-04-01 in Sequence but 2025-04-15 in QuickBooks."}


def test_amounts_compare_at_the_currencys_minor_units():
    spec = [FieldSpec("gross_total", "total", "gross_total", "gross_total", compare="money")]
    seq = [{"currency": "GBP", "gross_total": "10.004"}, {"currency": "GBP", "gross_total": "10.005"},
           {"currency": "JPY", "gross_total": "1200.4"}, {"currency": "BHD", "gross_total": "1.2344"},
           {"currency": "BHD", "gross_total": "1.2345"}, {"currency": "EUR", "gross_total": "0.30"}]
    app = [{"currency": "GBP", "gross_total": "10.00"}, {"currency": "GBP", "gross_total": "10.00"},
           {"currency": "JPY", "gross_total": "1200"}, {"currency": "BHD", "gross_total": "1.234"},
           {"currency": "BHD", "gross_total": "1.234"}, {"currency": "EUR", "gross_total": "0.299999999"}]
    found = diff(seq, app, spec)
    # 10.005 rounds half up to 10.01; BHD has three digits (1.2345 -> 1.235); a float's 0.299999999 is 0.30
    assert found.select("sequence_id", "sequence_value", "app_value").rows() == [("s1", "10.01", "10.00"),
                                                                               ("s4", "1.235", "1.234")]


def test_no_difference_from_whitespace_or_email_case_but_names_keep_their_case():
    specs = [FieldSpec("memo", "memo", "memo", "memo"),
             FieldSpec("billing_email", "billing email", "email", "email", compare="text_ci"),
             FieldSpec("name", "name", "name", "name")]
    found = diff([{"memo": "Thank  you\n for your business. ", "email": "AP@Blue.example", "name": "Blue Ltd"},
                  {"memo": "", "email": None, "name": "Blue Ltd"}],
                 [{"memo": "Thank you for your business.", "email": " ap@blue.example", "name": "BLUE LTD"},
                  {"memo": None, "email": None, "name": "Blue Ltd"}], specs)
    assert found.select("sequence_id", "field", "sequence_value", "app_value").rows() == [
        ("s0", "name", "Blue Ltd", "BLUE LTD")]  # empty text is null: "" and null agree


def test_dates_compare_as_dates_and_instants_across_time_zones_do_not_differ():
    utc = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
    pacific = utc.astimezone(timezone(timedelta(hours=-8)))  # the same instant, QuickBooks' way
    s = pl.DataFrame({"tenant": ["t1"], "app": [SEQ], "id": ["s0"], "at": [utc]})
    a = pl.DataFrame({"tenant": ["t1"], "app": [QBO], "id": ["a0"], "at": [pacific]}).with_columns(
        pl.col("at").dt.convert_time_zone("UTC"))
    links = pl.DataFrame({"tenant": ["t1"], "app": [QBO], "sequence_id": ["s0"], "app_id": ["a0"]})
    spec = [FieldSpec("updated_at", "updated", "at", "at", compare="date")]
    assert field_mismatches(s.lazy(), a.lazy(), links.lazy(), spec, entity="invoice").collect().height == 0


def test_quantities_and_unit_prices_keep_sub_cent_digits_without_float_noise():
    # QuickBooks sends JSON floats: 47.66 may land as 47.659999999 in a Decimal(38, 9) column
    specs = [FieldSpec("line.rate", "rate", "rate", "rate", compare="decimal")]
    found = diff([{"rate": "0.0025"}, {"rate": "47.66"}, {"rate": "0.0004"}],
                 [{"rate": "0.0028"}, {"rate": "47.659999999"}, {"rate": "0.000400001"}], specs)
    assert found.select("sequence_id", "sequence_value", "app_value").rows() == [("s0", "0.0025", "0.0028")]


def test_when_and_note_and_reported_ids():
    spec = FieldSpec("customer", "customer", "expected", "customer_id", compare="code",
                     when=pl.col("expected").is_not_null(), note=pl.lit(" (as linked)"))
    found = diff([{"expected": None, "doc": "D1"}, {"expected": "7", "doc": "D2"}],
                 [{"customer_id": "9", "doc": "Q1"}, {"customer_id": "8", "doc": "Q2"}], [spec],
                 sequence_ref="doc", app_ref="doc")
    assert found.select("sequence_id", "app_id", "sequence_value", "app_value").rows() == [("D2", "Q2", "7", "8")]
    assert found["reason"][0].endswith("in QuickBooks (as linked).")


def test_a_spec_must_name_a_known_comparison():
    with pytest.raises(ValueError, match="compare must be one of"):
        FieldSpec("x", "x", "x", "x", compare="fuzzy")


def test_only_linked_pairs_are_compared():
    seq = pl.DataFrame({"tenant": ["t1", "t2"], "app": [SEQ, SEQ], "id": ["s0", "s0"], "memo": ["a", "a"]})
    app = pl.DataFrame({"tenant": ["t1", "t2"], "app": [QBO, QBO], "id": ["a0", "a0"], "memo": ["b", "b"]})
    links = pl.DataFrame({"tenant": ["t1"], "app": [QBO], "sequence_id": ["s0"], "app_id": ["a0"]})
    found = field_mismatches(seq.lazy(), app.lazy(), links.lazy(), [FieldSpec("memo", "memo", "memo", "memo")],
                             entity="invoice").collect()
    assert found.select("tenant", "sequence_id").rows() == [("t1", "s0")]  # a tenant's link never reaches another



# --- Pairing on hashed keys, one-sided records, the fast whitespace rule --------------------------------------------


def _sides():
    seq = pl.DataFrame({"tenant": ["t1", "t1", "t2", "t1"], "app": SEQ, "id": ["s0", "s1", "s0", None],
                        "memo": ["a", "b", "c", "d"]})
    app = pl.DataFrame({"tenant": ["t1", "t1", "t2", "t1"], "app": QBO, "id": ["a0", "a1", "a0", None],
                        "memo": ["a", "x", "y", "z"]})
    links = pl.DataFrame({"tenant": ["t1", "t1", "t2", "t1", "t1"], "app": QBO,
                          "sequence_id": ["s0", "s1", "s0", "s9", None], "app_id": ["a0", "a1", "a0", "a1", None]})
    return seq, app, links


@pytest.mark.parametrize("collide", [False, True])
def test_pairs_found_on_hashed_keys_are_checked_on_the_real_keys(monkeypatch, collide):
    import assets.reconcile.mismatches as mismatches

    if collide:  # every key hashes alike: the m:1 check fails on the hashes and the exact joins decide
        monkeypatch.setattr(mismatches, "_key_hash", lambda columns: pl.col(columns[0]).hash() & 0)
    seq, app, links = _sides()
    rows = mismatches.linked_rows(links.lazy(), seq, app)
    assert list(zip(rows[0].to_list(), rows[1].to_list())) == [(0, 0), (1, 1), (2, 2)]  # no null key pairs
    assert mismatches.unpaired(seq, rows[0])["memo"].to_list() == ["d"]
    assert mismatches.unpaired(app, rows[1])["memo"].to_list() == ["z"]
    spec = [FieldSpec("memo", "memo", "memo", "memo")]
    found = field_mismatches(seq.lazy(), app.lazy(), links.lazy(), spec, entity="invoice").collect()
    assert found.select("tenant", "sequence_id", "app_value").sort("tenant").rows() == [("t1", "s1", "x"),
                                                                                         ("t2", "s0", "y")]
    given = field_mismatches(seq.lazy(), app.lazy(), links.lazy(), spec, entity="invoice", rows=rows).collect()
    assert given.sort("tenant").equals(found.sort("tenant"))


@pytest.mark.parametrize("collide", [False, True])
def test_without_validation_hash_collisions_pair_nothing_extra(monkeypatch, collide):
    import assets.reconcile.mismatches as mismatches

    if collide:  # a join on the hashes pairs every link with every record; only the real keys' pairs remain
        monkeypatch.setattr(mismatches, "_key_hash", lambda columns: pl.col(columns[0]).hash() & 0)
    seq, app, links = _sides()
    rows = mismatches.linked_rows(links.lazy(), seq, app, validate=False)
    assert sorted(zip(rows[0].to_list(), rows[1].to_list())) == [(0, 0), (1, 1), (2, 2)]


def test_a_key_naming_two_records_is_refused():
    import assets.reconcile.mismatches as mismatches

    seq, app, links = _sides()
    twice = pl.concat([app, app.head(1)])
    with pytest.raises(pl.exceptions.ComputeError, match="m:1"):
        mismatches.linked_rows(links.lazy(), seq, twice)


def test_columnwise_reads_give_the_same_rows_from_frames_and_from_file_scans(tmp_path):
    # every kind of read: a plain column, a computed value, a condition and a note, amounts with their currency,
    # other reported ids; columnwise reads each spec's columns when it runs, so it must find the very same rows
    specs = [FieldSpec("memo", "memo", "memo", "memo"),
             FieldSpec("email", "email", "email", "email", compare="text_ci"),
             FieldSpec("total", "total", "total", "total", compare="money"),
             FieldSpec("customer", "customer", pl.col("expected").str.to_uppercase(), pl.col("customer_id"),
                       compare="code", when=pl.col("expected").is_not_null(), note=pl.lit(" (as linked)"))]
    seq = pl.DataFrame({"tenant": "t1", "app": SEQ, "id": ["s0", "s1", "s2", "s3"], "doc": ["D0", "D1", "D2", "D3"],
                        "memo": ["a  b", "x", None, "same"], "email": ["A@x.io", "b@x.io", " c@x.io", None],
                        "currency": ["GBP", "JPY", "GBP", "EUR"], "total": ["1.004", "1200.4", "2.00", "3.10"],
                        "expected": ["c1", None, "c3", "c4"]}).with_columns(pl.col("total").cast(MONEY))
    app = pl.DataFrame({"tenant": "t1", "app": QBO, "id": ["a3", "a2", "a1", "a0"], "doc": ["Q3", "Q2", "Q1", "Q0"],
                        "memo": ["same", "z", "y", "a b"], "email": [None, "c@x.io", "B@X.IO", "a@x.io"],
                        "currency": ["EUR", "GBP", "JPY", "GBP"], "total": ["3.11", "2.01", "1201", "1.00"],
                        "customer_id": ["C4", "C9", "C2", "C1"]}).with_columns(pl.col("total").cast(MONEY))
    links = pl.DataFrame({"tenant": "t1", "app": QBO, "sequence_id": ["s0", "s1", "s2", "s3"],
                          "app_id": ["a0", "a1", "a2", "a3"]})
    seq.write_parquet(tmp_path / "seq.parquet")
    app.write_parquet(tmp_path / "app.parquet")
    kwargs = {"entity": "invoice", "subject": pl.concat_str([pl.lit("Invoice "), pl.col("doc")]),
              "sequence_ref": "doc", "app_ref": "doc"}
    whole = field_mismatches(seq.lazy(), app.lazy(), links.lazy(), specs, columnwise=False, **kwargs).collect()
    assert whole.select("sequence_id", "field", "sequence_value", "app_value").sort("sequence_id", "field").rows() == [
        ("D1", "memo", "x", "y"), ("D1", "total", "1200", "1201"), ("D2", "customer", "C3", "C9"),
        ("D2", "memo", None, "z"), ("D2", "total", "2.00", "2.01"), ("D3", "total", "3.10", "3.11")]
    assert whole.filter(field="customer")["reason"][0] == \
        "Invoice D2: customer is C3 in Sequence but C9 in QuickBooks (as linked)."
    for inputs in ((seq.lazy(), app.lazy()), (pl.scan_parquet(tmp_path / "seq.parquet"),
                                               pl.scan_parquet(tmp_path / "app.parquet"))):
        columnwise = field_mismatches(*inputs, links.lazy(), specs, columnwise=True, **kwargs).collect()
        assert columnwise.schema == whole.schema
        assert columnwise.sort(pl.all()).equals(whole.sort(pl.all()))


def test_the_fast_whitespace_rule_is_clean_text():
    from assets.reconcile.mismatches import _clean_text
    from assets.reconcile.rules import clean_text

    texts = ["a b", "a  b", " a\tb ", "a\u00a0b", "a \u2003 b", "\n", "", "   ", None, "a\r\nb", "\tx", "x\u3000",
             "a b c  d\te", "no-space", "\u00a0 \u00a0"]
    frame = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    ours, theirs = frame.select(_clean_text(pl.col("t")).alias("t")), frame.select(clean_text(pl.col("t")).alias("t"))
    assert ours.equals(theirs)
    assert ours["t"].to_list()[:5] == ["a b", "a b", "a b", "a b", "a b"]

# --- Lines: paired by the link Sequence stores, else by position ----------------------------------------------------


def test_lines_pair_by_their_stored_link_even_out_of_order(co):
    # QuickBooks lists the two lines the other way round; the links still pair l1 with 100-1
    co.line("quickbooks", "100", "1", position=2)
    co.line("quickbooks", "100", "2", position=1)
    assert co.mismatches().height == 0


def test_lines_without_links_pair_by_position_and_a_missing_line_is_reported(co):
    for record in co.rows["invoice_lines"]:
        if record["app"] == SEQ:
            record["links"] = None
    assert co.mismatches().height == 0
    co.rows["invoice_lines"] = [r for r in co.rows["invoice_lines"] if (r["app"], r["id"]) != (QBO, "2")]
    found = co.mismatches()
    assert found.select("entity", "kind", "field", "sequence_id", "app_id").rows() == [
        ("invoice", "field_differs", "line", "inv1", "100")]
    assert "line 2 ('Platform: Additional seats') is in Sequence but not on the QuickBooks invoice" in \
        found["reason"][0]


def test_an_extra_quickbooks_line_is_reported(co):
    co.rows["invoice_lines"].append({"tenant": "t1", "app": QBO, "document_id": "100", "id": "3", "position": 3,
                                     "description": "Ad hoc", "product_id": "5", "quantity": Decimal(1),
                                     "rate": Decimal(10), "tax_code": "2"})
    found = co.mismatches()
    assert found.select("field", "sequence_id", "app_id", "app_value").rows() == [("line", "inv1", "100", "Ad hoc")]
