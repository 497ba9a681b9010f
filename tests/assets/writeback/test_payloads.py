"""The payload contracts (checks/payloads.py): every problem named by field and reason; a plan row whose payload
breaks its contract is skipped with the record, the field and the reason, and is never sent."""

import orjson
import polars as pl
import pytest

from checks.payloads import Reference, payload_failures
from tests.assets.writeback.conftest import SEQ, T, Books, write


def plan_of(*rows: tuple[str, str, str, dict]) -> pl.DataFrame:
    return pl.DataFrame([{"tenant": T, "app": app, "entity": entity, "operation": operation,
                          "idempotency_key": f"k{i}", "payload": orjson.dumps(payload).decode()}
                         for i, (app, entity, operation, payload) in enumerate(rows)])


def problems(plan: pl.DataFrame, reference: Reference | None = None) -> set[tuple[str, str, str]]:
    return set(payload_failures(plan, reference).iter_rows())


INVOICE = {"CustomerRef": {"value": "1"}, "TxnDate": "2025-06-02", "DueDate": "2025-07-02", "DocNumber": "INV1",
           "CurrencyRef": {"value": "GBP"},
           "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 37.52, "Description": "Usage: Manuals",
                     "SalesItemLineDetail": {"ItemRef": {"value": "5"}, "Qty": 3, "UnitPrice": 12.505,
                                             "TaxCodeRef": {"value": "2"}}}]}


def test_a_valid_plan_has_no_problems(books: Books):
    plan = books.plan()
    assert payload_failures(plan).height == 0
    assert plan.filter(pl.col("state") == "skipped").height == 0


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"DocNumber": "INV" + "0" * 30}, "DocNumber", "is longer than 21 characters"),
    ({"TxnDate": "02/06/2025"}, "TxnDate", "is not a date (YYYY-MM-DD)"),
    ({"CustomerRef": {"value": "Blue Analytics"}}, "CustomerRef.value", "is not a QuickBooks customer id"),
    ({"CurrencyRef": {"value": "XYZ"}}, "CurrencyRef.value", "is not an ISO 4217 currency"),
    ({"BillEmail": {"Address": "not an email"}}, "BillEmail.Address", "is not an email address"),
    ({"Line": []}, "Line", "has no line (a document needs at least one)"),
    ({"TxnDate": None}, "TxnDate", "is missing"),
])
def test_quickbooks_invoice_contract(change, field, reason):
    found = problems(plan_of(("quickbooks", "invoice", "create", {**INVOICE, **change})))
    assert any(k == "k0" and f == field and reason in r for k, f, r in found), found


def test_a_sparse_update_may_leave_the_lines_out_but_never_send_them_empty():
    update = {"Id": "109", "SyncToken": "3", "sparse": True, "CustomerRef": {"value": "1"}, "TxnDate": "2025-06-02"}
    found = problems(plan_of(("quickbooks", "invoice", "update", update),
                             ("quickbooks", "invoice", "update", {**update, "Line": []})))
    assert not any(k == "k0" for k, _, _ in found), found  # absent: QuickBooks keeps the lines as they are
    assert ("k1", "Line", "has no line (a document needs at least one)") in found  # empty would delete them


def test_line_problems_name_the_line():
    bad_line = {**INVOICE["Line"][0], "Amount": 40.0,
                "SalesItemLineDetail": {**INVOICE["Line"][0]["SalesItemLineDetail"], "ItemRef": None}}
    found = problems(plan_of(("quickbooks", "invoice", "create", {**INVOICE, "Line": [INVOICE["Line"][0], bad_line]})))
    assert ("k0", "Line[1].Amount", "is not UnitPrice x Qty at cents (QuickBooks refuses it, 6070)") in found
    assert ("k0", "Line[1].SalesItemLineDetail.ItemRef.value", "is missing") in found
    assert not any(f.startswith("Line[0]") for _, f, _ in found)


def test_references_must_exist_in_that_quickbooks_company():
    ids = {"tenant": pl.String, "id": pl.String}
    reference = Reference(
        tax_codes=pl.DataFrame({"tenant": [T], "id": ["4"]}, schema=ids),
        items=pl.DataFrame({"tenant": [T], "id": ["1"]}, schema=ids),
        accounts=pl.DataFrame({"tenant": [T], "id": ["90"]}, schema=ids),
        customers=pl.DataFrame({"tenant": [T], "id": ["1"], "currency": ["EUR"]}),
        companies=pl.DataFrame({"tenant": [T], "home_currency": ["GBP"], "multi_currency": [True],
                                "us_sales_tax": [False]}))
    found = problems(plan_of(("quickbooks", "invoice", "create", INVOICE),
                             ("quickbooks", "product", "create_item",
                              {"Name": "Manuals", "Type": "Service", "IncomeAccountRef": {"value": "41"}})),
                     reference)
    assert ("k0", "Line[0].SalesItemLineDetail.TaxCodeRef", "tax code 2 does not exist in QuickBooks or is inactive") \
        in found
    assert ("k0", "Line[0].SalesItemLineDetail.ItemRef", "item 5 does not exist in QuickBooks or is inactive") in found
    assert ("k0", "CurrencyRef", "currency GBP is not the QuickBooks customer's currency EUR") in found
    assert ("k1", "IncomeAccountRef", "account 41 does not exist in QuickBooks or is inactive") in found
    # an id a dependency creates first is not checked against the company
    pending = {**INVOICE, "CustomerRef": {"value": "$ref:llabc"}}
    assert not any(f == "CustomerRef" for _, f, _ in problems(plan_of(("quickbooks", "invoice", "create", pending)),
                                                              reference))


def test_sequence_contracts():
    customer = {"legalName": "Maple Retail Inc.", "address": {"line1": "140 Broadway", "town": "Denver",
                                                              "postcode": "80209", "country": "US"},
                "taxStatus": "TAXED", "contacts": [{"name": "Maple", "email": "ap@maple.example",
                                                    "billingPreference": "PRIMARY"}],
                "customerAliases": ["qb-18"], "integrationIds": [{"service": "QuickBooks_Online", "id": "18"}]}
    found = problems(plan_of(
        (SEQ, "customer", "import", customer),
        (SEQ, "invoice", "mark_paid", {"invoiceId": "inv-1", "paymentStatus": "PAYED"}),
        (SEQ, "customer", "link", {"customerId": "c-1", "integrationIds": [{"service": "Xero", "id": "58"}]}),
        ("quickbooks", "customer", "create", {"DisplayName": "Blue: Analytics"}),
        ("quickbooks", "invoice", "archive", {}),
    ))
    assert ("k0", "address.state", "is missing (Sequence requires it for US and CA addresses)") in found
    assert ("k1", "paymentStatus", "'PAYED' is not PAID") in found
    assert ("k2", "service", "'Xero' is not QuickBooks_Online") in found
    assert ("k3", "DisplayName", "'Blue: Analytics' contains ':' (QuickBooks reserves it for sub-records)") in found
    assert ("k4", "operation", "no payload contract for quickbooks invoice archive") in found


def test_an_invalid_payload_is_skipped_with_the_record_the_field_and_the_reason(books: Books):
    books.record("invoices", SEQ, "inv-final")["number"] = "INV-" + "9" * 30
    books.record("customers", SEQ, "c-new")["name"] = "Fresh: Start Ltd"
    plan = books.plan()
    invoice = write(plan, "create", sequence_id="inv-final")
    assert invoice["state"] == "skipped"
    assert invoice["error"] == (f"invalid payload for invoice inv-final: DocNumber: 'INV-{'9' * 30}' is longer "
                                "than 21 characters")
    customer = write(plan, "create", sequence_id="c-new", entity="customer")
    assert customer["state"] == "skipped" and "DisplayName: 'Fresh: Start Ltd' contains ':'" in customer["error"]
    # what waits for a skipped write is skipped too, saying which
    waiting = write(plan, "create", sequence_id="inv-new")
    assert waiting["state"] == "skipped" and customer["idempotency_key"] in waiting["error"]
    # the rest of the plan goes on
    assert write(plan, "create", sequence_id="inv-sent")["state"] == "planned"
