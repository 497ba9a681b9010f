"""The Xero plan on a small company, one rule per test: reconciliation's Sequence-Xero mismatches become Xero
writes (contacts, invoices, credit notes, items, voids) and Sequence writes (mark paid, import, link) whose
payloads follow the seed's rules in Xero's words; an invalid payload is refused with its record, field and
reason."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import Any

import orjson
import polars as pl
import pytest

from assets.reconcile.assets import UNIFIED_INPUTS, compute_links, compute_mismatches
from assets.writeback.plan import REF, PlanInputs, build_plan
from assets.writeback.xero import build_xero_plan, item_code
from tests.assets.writeback.conftest import GB, SEQ, T, Books, unified, write

XERO = "xero"
NOW = datetime(2025, 7, 1, tzinfo=UTC)


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


BLUE, NEW_CONTACT, IMPORT_ME = uid(1), uid(2), uid(9)
INV_OK, INV_VOID, INV_PAID, INV_STRIPE, INV_DUE, INV_LINES, INV_PART = (uid(100 + i) for i in range(7))
ITEM_PLATFORM = uid(500)


def links(app_id: str) -> list[dict[str, str]]:
    return [{"app": XERO, "app_id": app_id}]


def settings(**overrides: Any) -> dict[str, Any]:
    base = {"merchant_email": "billing@merchant.example", "invoice_date": "issue",
            "tax_codes": {"cat-std": "OUTPUT2"}, "fallback_tax_code": "OUTPUT2", "exempt_tax_code": "NONE",
            "reverse_charge_tax_code": "ECZROUTPUTSERVICES", "default_account_code": "200",
            "items": {"p-platform": {"item_id": ITEM_PLATFORM, "item_code": "PLATFORM", "account_code": "210"}}}
    return {**base, **overrides}


def customer(app: str, cid: str, name: str, email: str, **extra: Any) -> dict[str, Any]:
    return {"tenant": T, "app": app, "id": cid, "name": name, "email": email, **GB, **extra}


def invoice(app: str, iid: str, customer_id: str, number: str, **extra: Any) -> dict[str, Any]:
    base = {"tenant": T, "app": app, "id": iid, "customer_id": customer_id, "number": number, "currency": "GBP",
            "status": "OPEN", "payment_status": "UNPAID", "issue_date": date(2025, 6, 2),
            "due_date": date(2025, 7, 2), "net_total": "1000", "tax_total": "200", "gross_total": "1200",
            "balance": "1200"}
    base |= ({"app_status": "SENT", "stripe_payment_link": False, "accounting_date": date(2025, 6, 1)} if app == SEQ
             else {"app_status": "AUTHORISED"})
    return {**base, **extra}


def line(app: str, doc: str, lid: str, position: int, **extra: Any) -> dict[str, Any]:
    base = {"tenant": T, "app": app, "document_id": doc, "id": lid, "position": position}
    if app == SEQ:
        base |= {"group_title": "Platform", "title": "Platform fee", "product_id": "p-platform", "quantity": "1",
                 "rate": "1000", "tax_category_id": "cat-std"}
    else:
        base |= {"description": "Platform: Platform fee", "product_id": ITEM_PLATFORM, "quantity": "1",
                 "rate": "1000", "tax_code": "OUTPUT2"}
    return {**base, **extra}


def company() -> dict[str, list[dict[str, Any]]]:
    synced = {"inv-ok": INV_OK, "inv-void": INV_VOID, "inv-paid": INV_PAID, "inv-stripe": INV_STRIPE,
              "inv-due": INV_DUE, "inv-lines": INV_LINES, "inv-part": INV_PART}
    return {
        "customers": [
            customer(SEQ, "c-blue", "Blue Analytics Ltd", "ap@blue.example", tax_status="TAXED",
                     app_status="ACTIVE", links=links(BLUE)),
            # renamed in Xero: Sequence's name goes back
            customer(XERO, BLUE, "Blue Analytics", "ap@blue.example"),
            customer(SEQ, "c-new", "Fresh Start Ltd", "ap@fresh.example", tax_status="TAX_EXEMPT",
                     app_status="ACTIVE"),
            customer(XERO, IMPORT_ME, "Import Me Ltd", "ap@import.example", tax_status="TAXED"),
        ],
        "invoices": [
            *(invoice(SEQ, s, "c-blue", f"INV{n:03d}", links=links(x)) for n, (s, x) in enumerate(synced.items())),
            *(invoice(XERO, x, BLUE, f"INV{n:03d}") for n, x in enumerate(synced.values())),
            invoice(SEQ, "inv-sent", "c-blue", "INV010"),
            invoice(SEQ, "inv-new", "c-new", "INV011", currency="EUR"),
        ],
        "invoice_lines": [
            *(line(SEQ, d, f"{d}-l1", 1) for d in (*synced, "inv-sent", "inv-new")),
            line(SEQ, "inv-sent", "inv-sent-l2", 2, group_title="Usage", title="Printed manuals",
                 product_id="p-manuals", quantity="3", rate="12.5", tax_category_id=None),
            *(line(XERO, x, uid(900 + n), 1) for n, x in enumerate(synced.values())),
        ],
        "credit_notes": [
            {"tenant": T, "app": SEQ, "id": "cn-1", "customer_id": "c-blue", "number": "CN001", "currency": "GBP",
             "status": "OPEN", "app_status": "SENT", "issue_date": date(2025, 6, 3), "net_total": "100",
             "tax_total": "20", "gross_total": "120", "balance": "120"},
        ],
        "credit_note_lines": [line(SEQ, "cn-1", "cn-1-l1", 1, rate="100")],
        "products": [
            {"tenant": T, "app": SEQ, "id": "p-platform", "name": "Platform fee", "tax_category_id": "cat-std"},
            {"tenant": T, "app": SEQ, "id": "p-manuals", "name": "Printed manuals"},
            {"tenant": T, "app": XERO, "id": ITEM_PLATFORM, "name": "Platform fee", "income_account_id": "acc-210"},
        ],
        "accounts": [{"tenant": T, "app": XERO, "id": f"acc-{c}", "name": f"Sales {c}", "code": c}
                     for c in ("200", "210")],
        "tax_codes": [{"tenant": T, "app": SEQ, "id": "cat-std", "name": "Standard rated"},
                      *({"tenant": T, "app": XERO, "id": code, "name": code, "rate": rate}
                        for code, rate in (("OUTPUT2", "0.2"), ("NONE", "0"), ("ECZROUTPUTSERVICES", "0")))],
    }


class XeroBooks:
    def __init__(self) -> None:
        self.rows = copy.deepcopy(company())
        self.settings = settings()
        self.edit("invoices", SEQ, "inv-void", status="VOID", app_status="VOIDED")
        self.edit("invoices", XERO, INV_PAID, status="PAID", payment_status="PAID", balance="0", app_status="PAID")
        self.edit("invoices", XERO, INV_STRIPE, status="PAID", payment_status="PAID", balance="0",
                  app_status="PAID")
        self.edit("invoices", SEQ, "inv-stripe", stripe_payment_link=True)
        self.edit("invoices", SEQ, "inv-due", due_date=date(2025, 7, 31))
        self.edit("invoice_lines", SEQ, "inv-lines-l1", rate="1100")

    def edit(self, table: str, app: str, record_id: str, **changes: Any) -> None:
        next(r for r in self.rows[table] if r["app"] == app and r["id"] == record_id).update(changes)

    def plan(self) -> pl.DataFrame:
        frames = {table: unified(table, self.rows.get(table, [])).lazy() for table in UNIFIED_INPUTS}
        by_app = {XERO: {T: self.settings}}
        found = compute_links(frames, by_app, linked_at=NOW)
        mismatches = compute_mismatches(frames, found.lazy(), by_app)
        inputs = PlanInputs(unified=frames, links=found.lazy(), mismatches=mismatches.lazy(), settings={})
        return build_xero_plan(inputs, {T: self.settings})


@pytest.fixture
def books() -> XeroBooks:
    return XeroBooks()


def test_an_issued_invoice_is_created_as_an_authorised_accrec_with_the_seed_fields(books):
    plan = books.plan()
    created = write(plan, "create", sequence_id="inv-sent", entity="invoice")
    p = created["payload"]
    assert created["app"] == XERO and created["state"] == "planned" and created["counterpart_app"] == XERO
    assert p["Type"] == "ACCREC" and p["Contact"] == {"ContactID": BLUE} and p["InvoiceNumber"] == "INV010"
    assert p["Date"] == "2025-06-02" and p["DueDate"] == "2025-07-02" and p["CurrencyCode"] == "GBP"
    assert p["LineAmountTypes"] == "Exclusive" and p["Status"] == "AUTHORISED"
    assert p["SentToContact"] is False  # Xero must not email the customer a second time
    assert p["LineItems"][0] == {"Description": "Platform: Platform fee", "Quantity": 1.0, "UnitAmount": 1000.0,
                                 "ItemCode": "PLATFORM", "AccountCode": "210", "TaxType": "OUTPUT2"}
    # an unmapped product: its item is created in this plan, the line books to the default account meanwhile
    item = write(plan, "create_item", sequence_id="p-manuals")
    assert p["LineItems"][1]["Description"] == "Usage: Printed manuals"
    assert p["LineItems"][1]["ItemCode"] == item["payload"]["Code"] == "PRINTED-MANUALS"
    assert p["LineItems"][1]["TaxType"] == "OUTPUT2"  # no category: the fallback tax type
    assert item["idempotency_key"] in created["depends_on"]


def test_a_new_customer_is_created_as_a_contact_and_linked_back_before_its_invoice(books):
    plan = books.plan()
    contact = write(plan, "create", sequence_id="c-new", entity="customer")
    assert contact["payload"] == {
        "Name": "Fresh Start Ltd", "EmailAddress": "ap@fresh.example", "ContactNumber": "c-new",
        "Addresses": [{"AddressType": "POBOX", "AddressLine1": "1 High Street", "City": "London",
                       "PostalCode": "EC1V 4AA", "Country": "GB"}],
        "DefaultCurrency": "EUR"}  # its documents' currency
    linked = write(plan, "link", sequence_id="c-new")
    assert linked["app"] == SEQ and linked["depends_on"] == [contact["idempotency_key"]]
    assert linked["payload"]["integrationIds"] == [{"service": "Xero", "id": f"{REF}{contact['idempotency_key']}"}]
    invoice_row = write(plan, "create", sequence_id="inv-new")
    assert invoice_row["payload"]["Contact"] == {"ContactID": f"{REF}{contact['idempotency_key']}"}
    assert contact["idempotency_key"] in invoice_row["depends_on"]
    # tax exempt: the exempt tax type of the settings
    assert invoice_row["payload"]["LineItems"][0]["TaxType"] == "NONE"


def test_updates_send_the_id_and_lines_only_when_a_line_differs(books):
    plan = books.plan()
    due = write(plan, "update", sequence_id="inv-due")["payload"]
    assert due["InvoiceID"] == INV_DUE and due["DueDate"] == "2025-07-31" and "LineItems" not in due
    lines = write(plan, "update", sequence_id="inv-lines")["payload"]
    assert lines["LineItems"] == [{"LineItemID": uid(905), "Description": "Platform: Platform fee", "Quantity": 1.0,
                                   "UnitAmount": 1100.0, "ItemCode": "PLATFORM", "AccountCode": "210",
                                   "TaxType": "OUTPUT2"}]
    contact = write(plan, "update", sequence_id="c-blue", entity="customer")["payload"]
    assert contact["ContactID"] == BLUE and contact["Name"] == "Blue Analytics Ltd"


def test_void_payment_status_import_and_credit_note(books):
    plan = books.plan()
    assert write(plan, "void", sequence_id="inv-void")["payload"] == {"InvoiceID": INV_VOID, "Status": "VOIDED"}
    paid = write(plan, "mark_paid", sequence_id="inv-paid")
    assert paid["app"] == SEQ and paid["payload"] == {"invoiceId": "inv-paid", "paymentStatus": "PAID"}
    # a Stripe payment-link invoice paid in Xero is never marked paid from Xero
    assert plan.filter(pl.col("sequence_id") == "inv-stripe").height == 0
    imported = write(plan, "import", app_id=IMPORT_ME)["payload"]
    assert imported["customerAliases"] == [f"xero-{IMPORT_ME}"]
    assert imported["integrationIds"] == [{"service": "Xero", "id": IMPORT_ME}]
    note = write(plan, "create", sequence_id="cn-1")["payload"]
    assert note["Type"] == "ACCRECCREDIT" and note["CreditNoteNumber"] == "CN001" and "DueDate" not in note
    assert "SentToContact" not in note


def test_a_paid_invoice_is_not_voided_and_a_draft_is_deleted(books):
    books.edit("invoices", SEQ, "inv-paid", status="VOID", app_status="VOIDED")
    books.edit("invoices", XERO, INV_PART, app_status="DRAFT", status="DRAFT")
    books.edit("invoices", SEQ, "inv-part", status="VOID", app_status="VOIDED")
    plan = books.plan()
    paid = write(plan, "void", sequence_id="inv-paid")
    assert paid["state"] == "skipped" and "only an AUTHORISED document with nothing paid" in paid["error"]
    assert write(plan, "void", sequence_id="inv-part")["payload"]["Status"] == "DELETED"


def test_a_paid_xero_invoice_is_not_updated_and_a_person_is_told_why(books):
    # Xero refuses any change to a PAID (or VOIDED) document: the update is skipped with the reason, not sent
    books.edit("invoices", XERO, INV_DUE, app_status="PAID", status="PAID")
    update = write(books.plan(), "update", sequence_id="inv-due")
    assert update["state"] == "skipped" and "is PAID and Xero refuses any change" in update["error"]


def test_an_invalid_payload_is_skipped_with_its_record_field_and_reason(books):
    books.settings["tax_codes"] = {"cat-std": "NOSUCHTAX"}
    books.edit("customers", SEQ, "c-new", name="Fresh " * 50)
    plan = books.plan()
    created = write(plan, "create", sequence_id="inv-sent")
    assert created["state"] == "skipped"
    assert "invoice inv-sent" in created["error"]
    assert "LineItems[1].TaxType: tax type NOSUCHTAX does not exist in Xero" in created["error"]
    contact = write(plan, "create", sequence_id="c-new", entity="customer")
    assert contact["state"] == "skipped" and "is longer than 255 characters" in contact["error"]
    assert contact["error"].startswith("invalid payload for Xero customer c-new: Name: ")
    # what waits for a skipped write is skipped too
    assert write(plan, "link", sequence_id="c-new")["state"] == "skipped"
    assert write(plan, "create", sequence_id="inv-new")["state"] == "skipped"


def test_keys_are_deterministic_and_follow_the_content(books):
    first, again = books.plan(), books.plan()
    assert first["idempotency_key"].to_list() == again["idempotency_key"].to_list()
    books.edit("invoices", SEQ, "inv-due", due_date=date(2025, 8, 15))
    changed = write(books.plan(), "update", sequence_id="inv-due")
    assert changed["idempotency_key"] != write(first, "update", sequence_id="inv-due")["idempotency_key"]
    assert orjson.loads(first.filter(pl.col("state") == "planned")["payload"][0])  # payloads are JSON


def test_item_codes_are_xero_codes():
    assert item_code("Data storage (GB)") == "DATA-STORAGE-GB"
    assert len(item_code("x" * 80)) == 30 and item_code("!!!") == "ITEM"


def test_a_tenant_with_quickbooks_and_xero_gets_writes_to_both_when_a_sequence_invoice_changes():
    """conftest's QuickBooks company, with Xero connected too: the invoice whose due date changed in Sequence
    (inv-due) is updated in both apps, each in its own words."""
    qbo = Books()
    xero_rows = company()
    for table in ("customers", "invoices", "invoice_lines", "products", "accounts", "tax_codes"):
        qbo.rows[table] += [r for r in xero_rows[table] if r["app"] == XERO]
    qbo.record("customers", SEQ, "c-blue")["links"].append({"app": XERO, "app_id": BLUE})
    qbo.record("invoices", SEQ, "inv-due")["links"].append({"app": XERO, "app_id": INV_DUE})
    twin = next(r for r in qbo.rows["invoices"] if r["app"] == XERO and r["id"] == INV_DUE)
    twin["number"] = "INV010"  # the QuickBooks company's number for inv-due
    frames = qbo.frames()
    by_app = {"quickbooks": {T: qbo.settings}, XERO: {T: settings()}}
    found = compute_links(frames, by_app, linked_at=NOW)
    inputs = PlanInputs(unified=frames, links=found.lazy(), mismatches=compute_mismatches(frames, found.lazy(),
                                                                                          by_app).lazy(),
                        settings={T: qbo.settings}, quickbooks=qbo.state, xero_settings={T: settings()})
    plan = build_plan(inputs)
    updates = plan.filter((pl.col("sequence_id") == "inv-due") & (pl.col("operation") == "update"))
    assert sorted(updates["app"].to_list()) == ["quickbooks", XERO]
    by_app_payload = {r["app"]: orjson.loads(r["payload"]) for r in updates.to_dicts()}
    assert by_app_payload["quickbooks"]["DueDate"] == by_app_payload[XERO]["DueDate"] == "2025-07-31"
    assert by_app_payload[XERO]["InvoiceID"] == INV_DUE and by_app_payload["quickbooks"]["Id"] == "109"
    # a company both apps would import ("Import Me Ltd") becomes one Sequence customer, QuickBooks' import
    assert write(plan, "import", app_id="9")["state"] == "planned"
    twin_import = write(plan, "import", app_id=IMPORT_ME)
    assert twin_import["state"] == "skipped" and "QuickBooks' import" in twin_import["error"]
    # a re-sync of that one invoice sends it to both apps too
    assert sorted(build_plan(inputs, invoice="inv-due")["app"].unique().to_list()) == ["quickbooks", XERO]
