"""Validation and quarantine: bad rows are set aside with the check and the reason and the rest is kept; a
mapping that does not produce the contract fails loudly."""

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from assets.unified.build import QUARANTINE, build, validate
from assets.unified.mapping import MappingError
from checks.unified import MODEL

NOW = datetime(2025, 7, 1, 12, tzinfo=UTC)


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def invoice(tenant: str, id_: str, **extra) -> dict:
    return {"tenant": tenant, "id": id_, "customer_id": "c1", "status": "SENT", "payment_status": "UNPAID",
            "currency": "GBP", **extra}


def line(tenant: str, invoice_id: str, id_: str, index: int) -> dict:
    return {"tenant": tenant, "id": id_, "invoice_id": invoice_id, "group_id": "g", "title": "Seats",
            "index": Decimal(index), "quantity": Decimal(1), "rate": Decimal(10), "net_total": Decimal(10)}


def test_bad_rows_are_quarantined_with_check_field_and_reason_and_their_lines_go_with_them():
    raw = {"sequence": {
        "invoices": frame([invoice("t1", "good"),
                           invoice("t1", "bad-email"),
                           invoice("t1", "bad-currency", currency="XYZ"),
                           invoice("t2", "good")]),
        "customers__contacts": frame([{"tenant": "t1", "_customers_id": "c1", "email": "not an email",
                                       "billing_preference": "PRIMARY", "_index": 0}]),
        "line_items": frame([line("t1", "good", "l1", 0), line("t1", "bad-currency", "l2", 0)]),
    }}
    raw["sequence"]["invoices"] = raw["sequence"]["invoices"].with_columns(
        customer_id=pl.when(pl.col("id") == "bad-email").then(pl.lit("c1")).otherwise(pl.lit("c0")))
    result = build(raw, {}, detected_at=NOW)
    assert sorted(result.tables["invoices"].select("tenant", "id").rows()) == [("t1", "good"), ("t2", "good")]
    assert result.tables["invoice_lines"]["id"].to_list() == ["l1"]
    q = result.quarantine
    assert q.schema == pl.Schema(QUARANTINE)
    got = {(r["entity"], r["id"], r["check"], r["field"]) for r in q.to_dicts()}
    assert got == {("invoice", "bad-email", "str_matches", "billing_email"),
                   ("invoice", "bad-currency", "isin", "currency"),
                   ("invoice_line", "bad-currency-l2", "document_quarantined", "document_id")}
    reasons = dict(q.select("id", "reason").rows())
    assert "'not an email'" in reasons["bad-email"] and "'XYZ'" in reasons["bad-currency"]
    assert reasons["bad-currency-l2"] == "its invoice bad-currency was quarantined"
    assert q["detected_at"].unique().to_list() == [NOW]
    assert (result.quarantined("invoices"), result.quarantined("invoice_lines")) == (2, 1)


def test_duplicate_keys_quarantine_every_copy():
    raw = {"quickbooks": {"account": frame([
        {"tenant": "t1", "id": "1", "name": "Sales", "active": True},
        {"tenant": "t1", "id": "1", "name": "Sales (copy)", "active": True},
        {"tenant": "t1", "id": "2", "name": "Bank", "active": True},
        {"tenant": "t2", "id": "1", "name": "Sales", "active": True}])}}
    result = build(raw, {}, detected_at=NOW)
    assert sorted(result.tables["accounts"].select("tenant", "id").rows()) == [("t1", "2"), ("t2", "1")]
    assert result.quarantine.select("id", "check", "field").rows() == [("1", "unique", "tenant,app,id")] * 2


def test_records_the_extraction_refused_are_in_quarantine_once_and_only_while_absent():
    rejected = frame([
        {"tenant": "t1", "app": "quickbooks", "collection": "invoice", "record_id": "266", "field": "TotalAmt",
         "reason": "TotalAmt is not a number", "record": "{}", "rejected_at": datetime(2025, 6, 1, tzinfo=UTC)},
        {"tenant": "t1", "app": "quickbooks", "collection": "invoice", "record_id": "266", "field": "TotalAmt",
         "reason": "TotalAmt is not a number", "record": "{}", "rejected_at": datetime(2025, 6, 2, tzinfo=UTC)},
        {"tenant": "t1", "app": "quickbooks", "collection": "invoice", "record_id": None, "field": "Id",
         "reason": "Id is missing", "record": '{"DocNumber":"1007"}', "rejected_at": datetime(2025, 6, 2, tzinfo=UTC)},
        {"tenant": "t1", "app": "quickbooks", "collection": "invoice", "record_id": "140", "field": "TotalAmt",
         "reason": "TotalAmt is not a number", "record": "{}", "rejected_at": datetime(2025, 5, 1, tzinfo=UTC)},
    ]).with_columns(pl.col("rejected_at").dt.convert_time_zone("Etc/UTC"))  # as DuckDB hands it over
    loaded = frame([{"tenant": "t1", "id": "140", "total_amt": Decimal(5), "balance": Decimal(5),
                     "currency_ref__value": "GBP"}])  # fixed and loaded since
    result = build({"quickbooks": {"rejected_records": rejected, "invoice": loaded}}, {}, detected_at=NOW)
    rows = result.quarantine.select("entity", "id", "check", "field", "detected_at").rows()
    assert rows == [("invoice", "266", "extract", "TotalAmt", datetime(2025, 6, 2, tzinfo=UTC)),
                    ("invoice", None, "extract", "Id", datetime(2025, 6, 2, tzinfo=UTC))]
    assert result.tables["invoices"]["id"].to_list() == ["140"]


def test_a_mapping_that_breaks_the_contract_shape_fails_loudly():
    body = frame([{"tenant": "t1", "app": "quickbooks", "id": "1", "name": "Sales", "code": "4000", "type": "Income",
                   "active": "yes"}])  # a text column where the contract says Boolean
    with pytest.raises(MappingError, match=r"unified\.accounts.*active"):
        validate("accounts", body, NOW)


def test_an_empty_warehouse_builds_empty_valid_tables():
    result = build({}, None, detected_at=NOW)
    assert set(result.tables) == set(MODEL)
    for table, frame_ in result.tables.items():
        assert frame_.height == 0
        MODEL[table].validate(frame_)
    assert result.quarantine.height == 0
