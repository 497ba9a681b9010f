"""The Xero payload contracts: every problem named by its write (idempotency key), its field (a line's with its
position) and the reason; codes checked against the organisation's own."""

import orjson
import polars as pl

from checks.payloads_xero import XeroReference, xero_payload_failures

CONTACT = "00000000-0000-4000-8000-000000000001"


def plan(*rows: tuple[str, str, str, str, dict]) -> pl.DataFrame:
    return pl.DataFrame([{"idempotency_key": key, "tenant": "t", "app": app, "entity": entity, "operation": op,
                          "payload": orjson.dumps(payload).decode()} for key, app, entity, op, payload in rows])


def problems(frame: pl.DataFrame, reference: XeroReference | None = None) -> set[tuple[str, str, str]]:
    return set(xero_payload_failures(frame, reference).iter_rows())


def test_a_valid_invoice_passes_and_a_broken_one_names_each_field():
    good = {"Type": "ACCREC", "Contact": {"ContactID": CONTACT}, "InvoiceNumber": "INV1", "Date": "2025-06-02",
            "DueDate": "2025-07-02", "LineAmountTypes": "Exclusive", "CurrencyCode": "GBP", "Status": "AUTHORISED",
            "SentToContact": False, "LineItems": [{"Description": "Fee", "Quantity": 1, "UnitAmount": 10.5,
                                                   "ItemCode": "FEE", "AccountCode": "200", "TaxType": "OUTPUT2"}]}
    bad = {**good, "Contact": {"ContactID": "42"}, "Date": "02/06/2025", "CurrencyCode": "EURO",
           "LineItems": [good["LineItems"][0], {"Description": " ", "Quantity": 1, "UnitAmount": 1,
                                                "AccountCode": "999", "TaxType": "GST"}]}
    reference = XeroReference(pl.DataFrame({"tenant": ["t"], "id": ["OUTPUT2"]}),
                              pl.DataFrame({"tenant": ["t"], "id": ["200"]}))
    found = problems(plan(("good", "xero", "invoice", "create", good), ("bad", "xero", "invoice", "create", bad)),
                     reference)
    assert {key for key, *_ in found} == {"bad"}
    fields = {field for _, field, _ in found}
    assert {"Contact.ContactID", "Date", "CurrencyCode", "LineItems[2].Description", "LineItems[2].AccountCode",
            "LineItems[2].TaxType"} <= fields
    assert ("bad", "LineItems[2].TaxType", "tax type GST does not exist in Xero or is not active") in found
    assert ("bad", "Contact.ContactID", "'42' is not a Xero ContactID") in found


def test_updates_voids_items_and_sequence_writes_have_their_contracts():
    found = problems(plan(
        ("upd", "xero", "invoice", "update", {"InvoiceID": "nope", "LineItems": []}),
        ("void", "xero", "credit_note", "void", {"CreditNoteID": CONTACT, "Status": "PAID"}),
        ("item", "xero", "product", "create_item", {"Code": "X" * 31, "Name": "Fee", "SalesDetails": {}}),
        ("link", "sequence", "customer", "link", {"customerId": "c1",
                                                   "integrationIds": [{"service": "QuickBooks_Online", "id": "7"}]}),
        ("what", "xero", "payment", "create", {}),
    ))
    assert ("upd", "InvoiceID", "'nope' is not a Xero InvoiceID") in found
    assert any(k == "upd" and f == "LineItems" for k, f, _ in found)  # sent empty: would drop every line
    assert ("void", "Status", "'PAID' is not VOIDED or DELETED") in found
    assert ("item", "Code", f"'{'X' * 31}' is longer than 30 characters") in found
    assert ("item", "SalesDetails.AccountCode", "is missing") in found
    assert ("link", "service", "'QuickBooks_Online' is not Xero") in found
    assert ("what", "operation", "no payload contract for xero payment create") in found
