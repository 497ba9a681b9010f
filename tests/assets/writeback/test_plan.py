"""The plan, one seed rule per test: reconciliation's mismatches of a small company become writes whose
payloads follow ../shared/seeds/sequence-quickbooks-integration.txt."""

from datetime import date

import polars as pl

from assets.writeback.plan import REF, idempotency_key
from tests.assets.writeback.conftest import MERCHANT, QBO, SEQ, T, Books, _line, write


def line(payload: dict, index: int = 0) -> dict:
    return payload["Line"][index]


def detail(payload: dict, index: int = 0) -> dict:
    return line(payload, index)["SalesItemLineDetail"]


# ----- invoices: the seed's field table ------------------------------------------------------------------------


def test_an_issued_invoice_is_created_with_the_seed_field_table(books: Books):
    created = write(books.plan(), "create", sequence_id="inv-final")
    p = created["payload"]
    assert created["app"] == QBO and created["entity"] == "invoice" and created["state"] == "planned"
    assert p["CustomerRef"] == {"value": "1"}  # the linked customer
    assert p["BillEmail"] == {"Address": "ap@blue.example"}  # FINAL: the primary billing contact's email
    assert p["BillAddr"] == {"Line1": "1 High Street", "City": "London", "PostalCode": "EC1V 4AA", "Country": "GB"}
    assert p["TxnDate"] == "2025-06-02" and p["DueDate"] == "2025-07-02"  # issue date (the default preference)
    assert p["DocNumber"] == "INV003" and p["CurrencyRef"] == {"value": "GBP"}
    assert "CustomerMemo" not in p  # no memo in Sequence: nothing sent
    assert line(p) == {"DetailType": "SalesItemLineDetail", "Amount": 1000.0, "Description": "Platform: Platform fee",
                       "SalesItemLineDetail": {"ItemRef": {"value": "5"}, "Qty": 1.0, "UnitPrice": 1000.0,
                                               "TaxCodeRef": {"value": "2"}}}
    assert "Invoice INV003 is issued in Sequence" in created["reason"]


def test_a_sent_invoice_carries_the_merchant_email_so_quickbooks_sends_no_second_email(books: Books):
    plan = books.plan()
    assert write(plan, "create", sequence_id="inv-sent")["payload"]["BillEmail"] == {"Address": MERCHANT}
    fixed = write(plan, "set_email", sequence_id="inv-email")
    assert fixed["payload"] == {"Id": "110", "SyncToken": "3", "sparse": True, "BillEmail": {"Address": MERCHANT}}


def test_invoice_date_follows_the_accounting_date_preference(books: Books):
    books.settings["invoice_date"] = "accounting"
    # every synced invoice now differs on its date too; the new one is created with the accounting date
    assert write(books.plan(), "create", sequence_id="inv-final")["payload"]["TxnDate"] == "2025-06-01"


def test_lines_use_the_item_mapping_and_group_line_descriptions(books: Books):
    plan = books.plan()
    payload = write(plan, "create", sequence_id="inv-sent")["payload"]
    item = write(plan, "create_item", sequence_id="p-manuals")
    assert detail(payload, 0)["ItemRef"] == {"value": "5"}  # mapped product -> its item
    # an unmapped product gets its own item in this plan: the line waits for it
    assert detail(payload, 1)["ItemRef"] == {"value": f"{REF}{item['idempotency_key']}"}
    assert item["idempotency_key"] in write(plan, "create", sequence_id="inv-sent")["depends_on"]
    assert line(payload, 1)["Description"] == "Usage: Printed manuals"
    assert detail(payload, 1)["Qty"] == 3.0 and detail(payload, 1)["UnitPrice"] == 12.505
    assert line(payload, 1)["Amount"] == 37.52  # UnitPrice x Qty at cents, half up (QuickBooks' rule)


def test_unmapped_products_use_the_default_item_when_no_item_is_created(books: Books):
    books.rows["products"] = [p for p in books.rows["products"] if p["id"] != "p-manuals"]
    payload = write(books.plan(), "create", sequence_id="inv-sent")["payload"]
    assert detail(payload, 1)["ItemRef"] == {"value": "1"}  # QuickBooks' "Services"


def test_tax_codes_follow_the_resolution_order(books: Books):
    plan = books.plan()
    # taxed: the code mapped to the line's tax category; an unmapped category or none: the fallback code
    assert detail(write(plan, "create", sequence_id="inv-sent")["payload"], 0)["TaxCodeRef"] == {"value": "2"}
    assert detail(write(plan, "create", sequence_id="inv-sent")["payload"], 1)["TaxCodeRef"] == {"value": "4"}
    assert detail(write(plan, "create", sequence_id="inv-new")["payload"])["TaxCodeRef"] == {"value": "4"}
    # tax exempt and reverse charged: the codes configured for them
    assert detail(write(plan, "create", sequence_id="inv-exempt")["payload"])["TaxCodeRef"] == {"value": "6"}
    assert detail(write(plan, "create", sequence_id="inv-rc")["payload"])["TaxCodeRef"] == {"value": "7"}


def test_us_companies_get_tax_and_non(books: Books):
    books.settings["us_sales_tax"] = True
    books.settings["multi_currency"] = False
    books.rows["tax_codes"] += [{"tenant": T, "app": QBO, "id": "TAX", "name": "TAX"},
                                {"tenant": T, "app": QBO, "id": "NON", "name": "NON"}]
    plan = books.plan()
    taxed = write(plan, "create", sequence_id="inv-sent")["payload"]
    assert detail(taxed)["TaxCodeRef"] == {"value": "TAX"}
    assert taxed["TxnTaxDetail"] == {"TotalTax": 200.0} and "GlobalTaxCalculation" not in taxed
    assert detail(write(plan, "create", sequence_id="inv-exempt")["payload"])["TaxCodeRef"] == {"value": "NON"}


def test_foreign_currency_invoices_carry_the_latest_quickbooks_rate_to_the_home_currency(books: Books):
    plan = books.plan()
    euro = write(plan, "create", sequence_id="inv-rc")["payload"]
    assert euro["CurrencyRef"] == {"value": "EUR"} and euro["ExchangeRate"] == 0.85  # the 2025-06-01 rate
    assert "ExchangeRate" not in write(plan, "create", sequence_id="inv-final")["payload"]  # home currency


def test_a_changed_invoice_is_updated_sparsely_with_its_current_sync_token(books: Books):
    updated = write(books.plan(), "update", sequence_id="inv-due")
    p = updated["payload"]
    assert updated["app_id"] == "109" and p["Id"] == "109" and p["SyncToken"] == "3" and p["sparse"] is True
    assert p["DueDate"] == "2025-07-31"
    # the lines agree: not sent (QuickBooks would recompute their tax, and a paid invoice can land a cent below
    # what is applied to it, which it refuses)
    assert "Line" not in p
    assert "CurrencyRef" not in p  # an update never touches the currency
    assert "due date is 2025-07-31 in Sequence but 2025-07-02 in QuickBooks" in updated["reason"]
    # a line that differs: the lines are sent, the twin line keeping its id (Sequence's line link stays valid)
    books.record("invoice_lines", SEQ, "inv-due-l1")["rate"] = "1100"
    p = write(books.plan(), "update", sequence_id="inv-due")["payload"]
    assert line(p)["Id"] == "1" and detail(p)["UnitPrice"] == 1100.0


def test_voided_in_sequence_is_voided_in_quickbooks(books: Books):
    voided = write(books.plan(), "void", sequence_id="inv-void")
    assert voided["payload"] == {"Id": "106", "SyncToken": "3"} and voided["app"] == QBO


def test_drafts_and_agreeing_invoices_need_no_write(books: Books):
    plan = books.plan()
    assert plan.filter(pl.col("sequence_id").is_in(["inv-draft", "inv-ok"])).height == 0


# ----- customers --------------------------------------------------------------------------------------------------


def test_a_new_customer_is_created_in_its_currency_and_its_invoice_waits_for_it(books: Books):
    plan = books.plan()
    customer = write(plan, "create", sequence_id="c-new", entity="customer")
    assert customer["payload"] == {"DisplayName": "Fresh Start Ltd", "CompanyName": "Fresh Start Ltd",
                                   "PrimaryEmailAddr": {"Address": "ap@fresh.example"},
                                   "BillAddr": {"Line1": "1 High Street", "City": "London", "PostalCode": "EC1V 4AA",
                                                "Country": "GB"},
                                   "CurrencyRef": {"value": "EUR"}}  # its documents' currency (multi-currency)
    invoice = write(plan, "create", sequence_id="inv-new")
    assert invoice["payload"]["CustomerRef"] == {"value": f"{REF}{customer['idempotency_key']}"}
    assert invoice["depends_on"] == [customer["idempotency_key"]]
    # and the new QuickBooks id is stored back as the Sequence customer's integration id
    stored = write(plan, "link", sequence_id="c-new", entity="customer")
    assert stored["app"] == SEQ and stored["depends_on"] == [customer["idempotency_key"]]
    assert stored["payload"]["integrationIds"] == [{"service": "QuickBooks_Online",
                                                   "id": f"{REF}{customer['idempotency_key']}"}]


def test_without_multi_currency_customers_get_no_currency(books: Books):
    books.settings["multi_currency"] = False
    books.state = books.state.__class__(books.state.versions, books.state.exchange_rates,
                                        pl.LazyFrame([(T, "GBP", False)], schema=["tenant", "home_currency",
                                                                                 "multi_currency"], orient="row"),
                                        books.state.customer_tax_codes)
    for invoice in ("inv-new", "inv-rc"):
        books.record("invoices", SEQ, invoice)["currency"] = "GBP"
    books.record("customers", QBO, "4")["currency"] = "GBP"
    assert "CurrencyRef" not in write(books.plan(), "create", sequence_id="c-new", entity="customer")["payload"]


def test_customer_fields_that_differ_are_updated(books: Books):
    books.record("customers", QBO, "1")["city"] = "Manchester"
    updated = write(books.plan(), "update", sequence_id="c-blue", entity="customer")
    assert updated["payload"]["BillAddr"]["City"] == "London" and updated["payload"]["SyncToken"] == "1"


def test_a_unique_candidate_is_linked_by_storing_the_id_in_sequence(books: Books):
    books.rows["customers"].append({"tenant": T, "app": QBO, "id": "20", "name": "Fresh Start Ltd",
                                    "email": "ap@fresh.example", "line1": "1 High Street", "city": "London",
                                    "postal_code": "EC1V 4AA", "country": "GB", "currency": "EUR"})
    plan = books.plan()
    linked = write(plan, "link", sequence_id="c-new", entity="customer")
    assert linked["app"] == SEQ and linked["app_id"] == "20" and linked["depends_on"] == []
    assert plan.filter((pl.col("entity") == "customer") & (pl.col("operation") == "create")).height == 0
    # the customer's invoice goes to the candidate at once
    assert write(plan, "create", sequence_id="inv-new")["payload"]["CustomerRef"] == {"value": "20"}


def test_importable_quickbooks_customers_are_imported_with_their_alias(books: Books):
    plan = books.plan()
    imported = write(plan, "import", app_id="9")
    assert imported["app"] == SEQ and imported["sequence_id"] is None
    assert imported["payload"] == {
        "legalName": "Import Me Ltd",
        "address": {"line1": "1 High Street", "town": "London", "postcode": "EC1V 4AA", "country": "GB"},
        "taxStatus": "TAXED",
        "contacts": [{"name": "Import Me Ltd", "email": "ap@import.example", "billingPreference": "PRIMARY"}],
        "customerAliases": ["qb-9"], "integrationIds": [{"service": "QuickBooks_Online", "id": "9"}]}
    # the import rules: no postal code, no import
    assert plan.filter(pl.col("app_id") == "10").height == 0


# ----- items --------------------------------------------------------------------------------------------------------


def test_an_item_is_created_for_a_product_with_its_account_code(books: Books):
    books.settings["items"]["p-manuals"] = {"account_code": "4040"}  # mapped to an account, no item yet
    item = write(books.plan(), "create_item", sequence_id="p-manuals")
    assert item["payload"] == {"Name": "Printed manuals", "Type": "Service", "IncomeAccountRef": {"value": "41"}}


def test_without_an_account_code_the_new_item_books_where_the_lines_go_today(books: Books):
    item = write(books.plan(), "create_item", sequence_id="p-manuals")
    assert item["payload"]["IncomeAccountRef"] == {"value": "90"}  # the default item's account
    assert "account 4090" in item["reason"]


def test_item_names_are_unique(books: Books):
    books.rows["products"].append({"tenant": T, "app": QBO, "id": "30", "name": "printed manuals ",
                                   "income_account_id": "90", "active": False})
    # reconciliation looks at active items only; QuickBooks keeps names unique among inactive ones too
    refused = write(books.plan(), "create_item", sequence_id="p-manuals")
    assert refused["state"] == "skipped"
    assert refused["error"].startswith("Name: an item named 'printed manuals ' (30) already exists")
    # the product stays unmapped, so the invoice books its line to the default item and waits for nothing
    invoice = write(books.plan(), "create", sequence_id="inv-sent")
    assert detail(invoice["payload"], 1)["ItemRef"] == {"value": "1"} and invoice["depends_on"] == []


def test_an_item_booking_to_another_account_is_updated(books: Books):
    books.record("products", QBO, "6")["income_account_id"] = "41"
    item = write(books.plan(), "update_item", sequence_id="p-seats")
    assert item["payload"] == {"Id": "6", "SyncToken": "0", "sparse": True, "IncomeAccountRef": {"value": "40"}}


def test_an_item_mapping_applies_to_documents_synced_after_it_not_to_synced_ones(books: Books):
    """Seed: documents sync when finalised or sent, with the mapping of that moment; a product mapped later (its
    item created by write-back) does not re-book invoices already in QuickBooks."""
    from datetime import UTC, datetime

    from assets.writeback.outbox import _schema

    # inv-ok is synced (QuickBooks 100, created in June) with a line of the unmapped product on the default item
    books.rows["invoice_lines"] += [
        _line(SEQ, "inv-ok", "inv-ok-l2", 2, group_title="Usage", title="Printed manuals", product_id="p-manuals",
              quantity="1", rate="10", tax_category_id=None),
        _line(QBO, "100", "2", 2, description="Usage: Printed manuals", product_id="1", rate="10", tax_code="4")]
    books.record("invoices", QBO, "100")["created_at"] = datetime(2025, 6, 2, 9, tzinfo=UTC)
    first = books.plan()
    item = write(first, "create_item", sequence_id="p-manuals")
    # the new item is for documents synced from now on: the unsynced invoice waits for it, inv-ok is not rewritten
    assert item["idempotency_key"] in write(first, "create", sequence_id="inv-sent")["depends_on"]
    assert first.filter(pl.col("sequence_id") == "inv-ok").height == 0

    # apply created item 31 (July) and recorded the mapping; reconciliation now expects inv-ok's line on it
    confirmed = first.filter(pl.col("idempotency_key") == item["idempotency_key"]).with_columns(
        state=pl.lit("confirmed"), app_id=pl.lit("31"), attempts=pl.lit(1, pl.Int32), request_id=pl.lit(None),
        batch_item=pl.lit(None), app_answer=pl.lit(None), retriable=pl.lit(None, pl.Boolean),
        planned_at=pl.lit(datetime(2025, 7, 1, tzinfo=UTC)), sent_at=pl.lit(datetime(2025, 7, 1, tzinfo=UTC)),
        confirmed_at=pl.lit(datetime(2025, 7, 1, 0, 1, tzinfo=UTC)))
    books.outbox = confirmed.select(list(_schema())).cast(_schema())
    books.settings["items"]["p-manuals"] = {"item_id": "31", "account_code": "4090"}
    books.rows["products"].append({"tenant": T, "app": QBO, "id": "31", "name": "Printed manuals",
                                   "income_account_id": "90"})
    mismatches = books.reconcile()[1]
    assert mismatches.filter((pl.col("sequence_id") == "inv-ok") & (pl.col("field") == "line.item")).height == 1
    kept = write(books.plan(), "update", sequence_id="inv-ok")
    assert kept["state"] == "skipped" and kept["payload"] == {"Id": "100"}
    assert kept["error"].startswith("Line.ItemRef: invoice inv-ok was synced before item 'Printed manuals' was "
                                    "created for its product; a mapping applies to documents synced after it")

    # the rule is about time: a QuickBooks document created after the item does get the product's item
    books.record("invoices", QBO, "100")["created_at"] = datetime(2025, 7, 2, tzinfo=UTC)
    moved = write(books.plan(), "update", sequence_id="inv-ok")
    new_item = {"value": f"{REF}{item['idempotency_key']}"}  # apply fills in 31, the id of that confirmed write
    assert moved["state"] == "planned" and detail(moved["payload"], 1)["ItemRef"] == new_item
    # and a synced document updated for another difference is synced again, with the current mapping
    books.record("invoices", QBO, "100")["created_at"] = datetime(2025, 6, 2, 9, tzinfo=UTC)
    books.record("invoices", SEQ, "inv-ok")["memo"] = "New memo"
    resynced = write(books.plan(), "update", sequence_id="inv-ok")
    assert resynced["state"] == "planned" and detail(resynced["payload"], 1)["ItemRef"] == new_item


# ----- Sequence: payment status -------------------------------------------------------------------------------------


def test_paid_in_quickbooks_is_marked_paid_in_sequence_but_never_a_stripe_link_invoice(books: Books):
    plan = books.plan()
    paid = write(plan, "mark_paid", sequence_id="inv-paid")
    assert paid["app"] == SEQ and paid["payload"] == {"invoiceId": "inv-paid", "paymentStatus": "PAID"}
    assert plan.filter(pl.col("sequence_id") == "inv-stripe").height == 0


def test_a_stripe_link_invoice_is_refused_even_if_reconciliation_asked(books: Books):
    inputs = books.inputs()
    forced = inputs.mismatches.with_columns(
        proposed_action=pl.when(pl.col("sequence_id") == "inv-stripe").then(pl.lit("mark_paid_in_sequence"))
        .otherwise("proposed_action"))
    from assets.writeback.plan import build_plan

    plan = build_plan(inputs.__class__(**{**inputs.__dict__, "mismatches": forced}))
    refused = write(plan, "mark_paid", sequence_id="inv-stripe")
    assert refused["state"] == "skipped" and "Stripe payment link" in refused["error"]


# ----- keys ---------------------------------------------------------------------------------------------------------


def test_keys_are_stable_across_plans_and_change_with_the_sequence_document(books: Books):
    first, second = books.plan(), books.plan()
    assert first["idempotency_key"].to_list() == second["idempotency_key"].to_list()
    assert first["idempotency_key"].n_unique() == first.height
    assert all(len(k) <= 36 for k in first["idempotency_key"])  # a QuickBooks requestid, even in a batch
    before = write(first, "update", sequence_id="inv-due")["idempotency_key"]
    books.record("invoices", SEQ, "inv-due")["due_date"] = date(2025, 8, 15)
    assert write(books.plan(), "update", sequence_id="inv-due")["idempotency_key"] != before
    # the SyncToken is not content: a fresher one does not make a new intent
    payload = write(first, "update", sequence_id="inv-due")["payload"]
    same = idempotency_key(T, QBO, "invoice", "update", "inv-due", "109", {**payload, "SyncToken": "9"})
    assert same == before


def test_a_resync_plans_one_invoice_and_what_it_waits_for(books: Books):
    plan = books.plan(invoice="inv-new")
    assert sorted(plan["operation"].to_list()) == ["create", "create"]
    assert set(plan["entity"]) == {"customer", "invoice"}
