from decimal import Decimal

import orjson
import pyarrow as pa

from assets.extract.flatten import RecordRules, TableShape, frame_to_tables, read_records, records_frame

CURRENCIES = frozenset({"EUR", "GBP", "USD"})
SHAPE = TableShape("invoice", id_field="Id", children=("Line",), integers=frozenset({"LineNum"}),
                   rules=RecordRules(required=("Id",), numeric=("TotalAmt",), currency=("CurrencyRef.value",),
                                     dates=("TxnDate",)))


def invoice(i: int, **overrides) -> dict:
    record = {
        "Id": str(i), "SyncToken": "0", "TxnDate": "2025-03-02", "CurrencyRef": {"value": "EUR", "name": "Euro"},
        "MetaData": {"LastUpdatedTime": "2025-03-05T11:20:40-08:00"},
        "TotalAmt": 1200.1, "ExchangeRate": 1.0842, "LinkedTxn": [],
        "Line": [
            {"Id": "1", "LineNum": 1, "Amount": 1200.1, "DetailType": "SalesItemLineDetail",
             "SalesItemLineDetail": {"ItemRef": {"value": "12"}, "Qty": 3, "UnitPrice": 400.0333333}},
            {"Amount": 1200.1, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
        ],
    }
    record.update(overrides)
    return record


def page(records: list[dict]) -> bytes:
    return orjson.dumps({"QueryResponse": {"Invoice": records, "startPosition": 1}, "time": "2025-03-05T11:21:00Z"})


def test_numbers_become_exact_decimals_and_nesting_follows_dlt_naming():
    out = frame_to_tables(read_records(page([invoice(1)]), ("QueryResponse", "Invoice")), SHAPE, "acme", CURRENCIES)
    row = out.tables["invoice"].to_pylist()[0]
    assert row["tenant"] == "acme"
    assert row["total_amt"] == Decimal("1200.1")
    assert row["exchange_rate"] == Decimal("1.0842")
    assert row["currency_ref__value"] == "EUR"
    assert row["meta_data__last_updated_time"] == "2025-03-05T11:20:40-08:00"
    assert pa.types.is_decimal(out.tables["invoice"].schema.field("total_amt").type)
    lines = out.tables["invoice__line"].to_pylist()
    assert [(line["_invoice_id"], line["_index"]) for line in lines] == [("1", 0), ("1", 1)]
    assert lines[0]["sales_item_line_detail__qty"] == Decimal(3)
    assert lines[0]["sales_item_line_detail__unit_price"] == Decimal("400.0333333")
    assert lines[0]["line_num"] == 1 and isinstance(lines[0]["line_num"], int)


def test_records_that_break_the_contract_are_rejected_with_field_and_the_rest_loads():
    records = [invoice(1), {k: v for k, v in invoice(2).items() if k != "Id"}, invoice(3, TotalAmt="12,00"),
               invoice(4, CurrencyRef={"value": "XYZ"}), invoice(5, TxnDate="05/03/2025"), invoice(6, TotalAmt="99.5")]
    out = frame_to_tables(read_records(page(records), ("QueryResponse", "Invoice")), SHAPE, "acme", CURRENCIES)
    assert sorted(r["id"] for r in out.tables["invoice"].to_pylist()) == ["1", "6"]
    # a number sent as text elsewhere on the page is still read exactly
    assert {r["id"]: r["total_amt"] for r in out.tables["invoice"].to_pylist()}["6"] == Decimal("99.5")
    rejected = {(r.record_id, r.field, r.reason) for r in out.rejected}
    assert rejected == {
        (None, "Id", "Id is missing"),
        ("3", "TotalAmt", "TotalAmt is not a number"),
        ("4", "CurrencyRef.value", "CurrencyRef.value is not an ISO 4217 currency code"),
        ("5", "TxnDate", "TxnDate is not a date (YYYY-MM-DD)"),
    }
    assert all(orjson.loads(r.record_json) for r in out.rejected)


def test_empty_query_response_gives_no_rows():
    frame = read_records(orjson.dumps({"QueryResponse": {}, "time": "x"}), ("QueryResponse", "Invoice"))
    assert frame.height == 0
    assert frame_to_tables(frame, SHAPE, "acme", CURRENCIES).tables == {}


def test_arrays_that_are_not_children_stay_whole_as_json_text():
    record = invoice(1, LinkedTxn=[{"TxnId": "9", "TxnType": "Payment"}])
    out = frame_to_tables(records_frame([record]), SHAPE, "acme", CURRENCIES)
    assert orjson.loads(out.tables["invoice"].to_pylist()[0]["linked_txn"]) == [{"TxnId": "9", "TxnType": "Payment"}]
