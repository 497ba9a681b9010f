"""The per-app mappings on small hand-made raw frames (the raw layer's table and column names)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pytest

from assets.unified import quickbooks, sequence
from assets.unified.build import map_all, validate
from assets.unified.mapping import PROBLEM_COLUMNS, MappingError
from checks.unified import MODEL

T = "acme-uk"
NOW = datetime(2025, 7, 1, tzinfo=UTC)


def frames(**tables: list[dict]) -> dict[str, pl.DataFrame]:
    return {name: pl.DataFrame([{"tenant": T, **row} for row in rows], infer_schema_length=None)
            for name, rows in tables.items()}


def rows(frame: pl.LazyFrame, table: str) -> list[dict]:
    """Collects, checks the contract holds and returns the rows (by id order)."""
    collected = frame.collect()
    assert collected.filter(pl.col(PROBLEM_COLUMNS[0]).is_not_null()).height == 0
    body = collected.drop(PROBLEM_COLUMNS)
    MODEL[table].validate(body, lazy=True)
    return body.to_dicts()


def one(frame: pl.LazyFrame, table: str) -> dict:
    (row,) = rows(frame, table)
    return row


# ---- time, countries, text, money --------------------------------------------------------------------------


def test_quickbooks_offsets_become_utc_instants():
    raw = frames(invoice=[{"id": "1", "total_amt": Decimal("10"), "balance": Decimal("10"),
                           "currency_ref__value": "USD", "meta_data__create_time": "2025-03-05T11:20:40-08:00",
                           "meta_data__last_updated_time": "2025-07-01T09:00:00-07:00"}])
    row = one(quickbooks.invoices(raw), "invoices")
    assert row["created_at"] == datetime(2025, 3, 5, 19, 20, 40, tzinfo=UTC)
    assert row["updated_at"] == datetime(2025, 7, 1, 16, 0, 0, tzinfo=UTC)


def test_sequence_instants_with_z_or_fractions_and_dates():
    raw = frames(invoices=[{"id": "i1", "customer_id": "c1", "status": "SENT", "payment_status": "UNPAID",
                            "currency": "GBP", "created_at": "2025-06-30T15:55:10Z",
                            "updated_at": "2025-06-30T15:55:10.250Z", "issue_date": "2025-06-30",
                            "due_date": "2025-07-30", "accounting_date": "2025-06-01"}])
    row = one(sequence.invoices(raw), "invoices")
    assert row["created_at"] == datetime(2025, 6, 30, 15, 55, 10, tzinfo=UTC)
    assert row["updated_at"] == datetime(2025, 6, 30, 15, 55, 10, 250000, tzinfo=UTC)
    assert (row["issue_date"], row["due_date"], row["accounting_date"]) == \
        (date(2025, 6, 30), date(2025, 7, 30), date(2025, 6, 1))


def test_quickbooks_country_names_and_alpha3_become_alpha2_and_the_sent_text_is_kept():
    sent = ["United Kingdom", "USA", "gb ", "Germany", "Ireland", "DE", "Narnia"]
    raw = frames(customer=[{"id": str(n), "display_name": f"C{n}", "bill_addr__country": c, "active": True}
                           for n, c in enumerate(sent)])
    out = quickbooks.customers(raw).collect().sort(pl.col("id").cast(pl.Int64))
    assert out["country"].to_list() == ["GB", "US", "GB", "DE", "IE", "DE", "NARNIA"]
    assert out["country_as_sent"].to_list() == ["United Kingdom", "USA", None, "Germany", "Ireland", None, "Narnia"]
    # an unknown country is not silently dropped: the contract quarantines the row
    kept, held = validate("customers", out, NOW)
    assert kept.height == len(sent) - 1
    assert held.select("id", "check", "field").to_dicts() == [{"id": "6", "check": "isin", "field": "country"}]
    assert "'NARNIA'" in held["reason"][0]


def test_text_is_trimmed_empty_is_null_emails_lower_case_currencies_upper_case():
    raw = frames(customer=[{"id": " 7 ", "display_name": "  Acme  ", "company_name": "  ",
                            "primary_email_addr__address": " AP@Acme.Example ", "bill_addr__line1": "",
                            "currency_ref__value": "gbp", "active": True}])
    row = one(quickbooks.customers(raw), "customers")
    assert (row["id"], row["name"], row["email"], row["line1"], row["currency"]) == \
        ("7", "Acme", "ap@acme.example", None, "GBP")


def test_money_and_quantities_stay_exact_decimals():
    raw = frames(
        line_items=[{"id": "l1", "invoice_id": "i1", "group_id": "g1", "title": "API calls", "index": Decimal("0"),
                     "quantity": Decimal("2500000"), "rate": Decimal("0.0004"), "tax_rate": Decimal("0.2"),
                     "net_total": Decimal("1000.00")}],
        line_item_groups=[{"id": "g1", "invoice_id": "i1", "title": "Usage"}])
    row = one(sequence.invoice_lines(raw), "invoice_lines")
    assert row["rate"] == Decimal("0.0004") and row["quantity"] == Decimal("2500000")
    assert row["amount"] == Decimal("1000.00") and row["tax_rate"] == Decimal("0.2")
    assert sequence.invoice_lines(raw).collect_schema()["rate"] == pl.Decimal(38, 9)


def test_an_unreadable_value_is_a_row_problem_not_a_silent_null():
    raw = frames(credit_notes=[{"id": "cn1", "customer_id": "c1", "status": "SENT", "currency": "GBP",
                                "issue_date": "31/06/2025", "balance": "12,50"}])
    out = sequence.credit_notes(raw).collect()
    assert out["_problem_field"].to_list() == ["issue_date"]
    assert "31/06/2025" in out["_problem_reason"][0]
    kept, held = validate("credit_notes", out, NOW)
    assert kept.height == 0
    assert held.select("entity", "id", "check", "field").row(0) == ("credit_note", "cn1", "readable", "issue_date")


# ---- Sequence rules ----------------------------------------------------------------------------------------


def test_sequence_line_description_is_group_title_colon_line_title_with_its_groups_tax_category():
    raw = frames(
        line_items=[{"id": "l1", "invoice_id": "i1", "group_id": "g1", "title": " Platform fee, May 2025 ",
                     "index": Decimal(0), "external_ids": '[{"key":"QuickBooks_Online","value":"131-1"}]'},
                    {"id": "l2", "invoice_id": "i1", "group_id": "g2", "title": "Onboarding", "index": Decimal(1)}],
        line_item_groups=[{"id": "g1", "invoice_id": "i1", "title": "Platform", "tax_category__id": "cat-std"},
                          {"id": "g2", "invoice_id": "i1", "title": ""}])
    first, second = sorted(rows(sequence.invoice_lines(raw), "invoice_lines"), key=lambda r: r["position"])
    assert first["description"] == "Platform: Platform fee, May 2025"
    assert (first["group_title"], first["title"], first["tax_category_id"]) == \
        ("Platform", "Platform fee, May 2025", "cat-std")
    assert (first["document_id"], first["position"]) == ("i1", 1)
    assert first["links"] == [{"app": "quickbooks", "app_id": "131-1"}]
    assert (second["description"], second["group_title"], second["tax_category_id"], second["links"]) == \
        ("Onboarding", None, None, None)


def test_credit_note_lines_take_the_category_of_the_invoice_group_they_credit():
    raw = frames(
        credit_note_line_items=[{"id": "cl1", "credit_note_id": "cn1", "group_id": "cg1", "title": "Seats",
                                 "index": Decimal(0)}],
        credit_note_line_item_groups=[{"id": "cg1", "credit_note_id": "cn1", "line_item_group_id": "g1",
                                       "title": "Platform"}],
        line_item_groups=[{"id": "g1", "invoice_id": "i1", "title": "Platform", "tax_category__id": "cat-std"}])
    row = one(sequence.credit_note_lines(raw), "credit_note_lines")
    assert (row["description"], row["tax_category_id"], row["document_id"]) == ("Platform: Seats", "cat-std", "cn1")


@pytest.mark.parametrize(("status", "payment_status", "expected"), [
    ("DRAFT", "UNPAID", "DRAFT"),
    ("IN_PROGRESS", "UNPAID", "DRAFT"),
    ("FINAL", "UNPAID", "OPEN"),
    ("SENT", "UNPAID", "OPEN"),
    ("FINAL", "PAID", "PAID"),
    ("SENT", "PAID", "PAID"),
    ("VOIDED", "UNPAID", "VOID"),
])
def test_sequence_invoice_status(status, payment_status, expected):
    raw = frames(invoices=[{"id": "i1", "customer_id": "c1", "status": status, "payment_status": payment_status,
                            "currency": "GBP"}])
    row = one(sequence.invoices(raw), "invoices")
    assert (row["status"], row["app_status"], row["payment_status"]) == (expected, status, payment_status)


def test_an_unknown_sequence_status_is_quarantined_not_guessed():
    raw = frames(invoices=[{"id": "i1", "customer_id": "c1", "status": "ARCHIVED", "currency": "GBP"}])
    kept, held = validate("invoices", sequence.invoices(raw).collect(), NOW)
    assert kept.height == 0 and held["field"].to_list() == ["status"]


@pytest.mark.parametrize(("options", "provider", "expected"), [
    ('["BANK_TRANSFER","LINK"]', "STRIPE", True),
    ('["BANK_TRANSFER","LINK"]', "GOCARDLESS", False),  # GoCardless is not Stripe
    ('["BANK_TRANSFER"]', "STRIPE", False),  # no link shown
    ('["BANK_TRANSFER","LINK"]', None, False),  # no payment settings
])
def test_stripe_payment_link_needs_a_link_option_and_stripe_settings(options, provider, expected):
    settings = [{"id": "s1", "invoice_id": "i1", "payment_provider": provider}] if provider else []
    raw = frames(invoices=[{"id": "i1", "customer_id": "c1", "status": "SENT", "payment_status": "UNPAID",
                            "currency": "GBP", "payment_options": options}],
                 invoice_payment_settings=settings)
    assert one(sequence.invoices(raw), "invoices")["stripe_payment_link"] is expected


def test_sequence_customer_email_links_and_activity():
    raw = frames(
        customers=[{"id": "c1", "legal_name": "Acme Ltd", "status": "ACTIVE", "address__country": "GB",
                    "address__town": "London", "address__postcode": "EC1V 8WG", "address__state": None},
                   {"id": "c2", "legal_name": "Beta Ltd", "status": "DRAFT", "archived_at": "2025-05-01T10:00:00Z"}],
        customers__contacts=[
            {"_customers_id": "c1", "email": "cto@acme.example", "billing_preference": "NONE", "_index": 0},
            {"_customers_id": "c1", "email": "AP@acme.example", "billing_preference": "PRIMARY", "_index": 1},
            {"_customers_id": "c1", "email": "jo@acme.example", "billing_preference": "STANDARD", "_index": 2}],
        customers__integration_ids=[
            {"_customers_id": "c1", "service": "QuickBooks_Online", "id": "42", "_index": 0},
            {"_customers_id": "c1", "service": "Stripe", "id": "cus_1", "_index": 1},
            {"_customers_id": "c1", "service": "Xero", "id": "x-9", "_index": 2}])
    acme, beta = sorted(rows(sequence.customers(raw), "customers"), key=lambda r: r["id"])
    assert acme["email"] == "ap@acme.example"  # the PRIMARY billing contact's
    assert acme["links"] == [{"app": "quickbooks", "app_id": "42"}, {"app": "xero", "app_id": "x-9"}]
    assert (acme["city"], acme["postal_code"], acme["country"], acme["active"]) == ("London", "EC1V 8WG", "GB", True)
    assert (beta["email"], beta["links"], beta["active"], beta["app_status"]) == (None, None, False, "DRAFT")


def test_sequence_documents_link_and_carry_the_primary_contacts_email():
    raw = frames(
        invoices=[{"id": "i1", "customer_id": "c1", "status": "FINAL", "payment_status": "UNPAID", "currency": "gbp",
                   "customer_emails": '["other@acme.example"]', "linked_services":
                   '[{"externalId":"221","externalService":"QuickBooks_Online","syncTime":"2025-06-19T16:43:09Z"}]'}],
        customers__contacts=[{"_customers_id": "c1", "email": "ap@acme.example", "billing_preference": "PRIMARY",
                              "_index": 0}])
    row = one(sequence.invoices(raw), "invoices")
    assert (row["billing_email"], row["currency"]) == ("ap@acme.example", "GBP")
    assert row["links"] == [{"app": "quickbooks", "app_id": "221"}]


def test_customer_properties_become_custom_fields_without_configuration():
    raw = frames(customers=[{"id": "c1", "legal_name": "Acme", "custom_properties__region": "UK",
                             "custom_properties__tier": " gold "},
                            {"id": "c2", "legal_name": "Beta", "custom_properties__region": None,
                             "custom_properties__tier": "silver"}])
    got = {(r["id"], r["field"], r["value"]) for r in rows(sequence.custom_fields(raw), "custom_fields")}
    assert got == {("c1", "region", "UK"), ("c1", "tier", "gold"), ("c2", "tier", "silver")}


# ---- QuickBooks rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "balance", "note", "status", "payment_status"), [
    ("0", "0", "Voided", "VOID", None),  # what QuickBooks' void leaves
    ("120.00", "0", None, "PAID", "PAID"),
    ("120.00", "120.00", None, "OPEN", "UNPAID"),
    ("120.00", "20.00", None, "OPEN", "PARTIALLY_PAID"),
    ("120.00", "120.00", "Voided", "OPEN", "UNPAID"),  # a note alone does not void a live invoice
])
def test_quickbooks_invoice_status(total, balance, note, status, payment_status):
    raw = frames(invoice=[{"id": "1", "total_amt": Decimal(total), "balance": Decimal(balance), "private_note": note,
                           "currency_ref__value": "GBP"}])
    row = one(quickbooks.invoices(raw), "invoices")
    assert (row["status"], row["payment_status"]) == (status, payment_status)


def test_quickbooks_invoice_totals_home_currency_and_lines():
    raw = frames(
        invoice=[{"id": "130", "doc_number": "INV00001", "total_amt": Decimal("120.00"), "balance": Decimal("120.00"),
                  "txn_tax_detail__total_tax": Decimal("20.00"), "currency_ref__value": "EUR",
                  "exchange_rate": Decimal("0.85"), "home_total_amt": Decimal("102.00"), "txn_date": "2025-05-01"},
                 {"id": "131", "total_amt": Decimal("50"), "balance": Decimal("50"), "currency_ref__value": "GBP"}],
        invoice__line=[
            {"_invoice_id": "130", "id": "1", "line_num": 1, "description": "Platform: Seats", "amount": Decimal("100"),
             "detail_type": "SalesItemLineDetail", "sales_item_line_detail__item_ref__value": "6",
             "sales_item_line_detail__qty": Decimal("4"), "sales_item_line_detail__unit_price": Decimal("25"),
             "sales_item_line_detail__tax_code_ref__value": "2"},
            {"_invoice_id": "130", "id": None, "line_num": None, "amount": Decimal("100"),
             "detail_type": "SubTotalLineDetail"}],
        preferences=[{"currency_prefs__home_currency__value": "GBP"}],
        taxcode=[{"id": "2", "name": "20.0% S", "active": True, "sales_tax_rate_list__tax_rate_detail":
                  '[{"TaxRateRef":{"value":"1","name":"20.0% S (sales)"},"TaxTypeApplicable":"TaxOnAmount"}]'}],
        taxrate=[{"id": "1", "rate_value": Decimal("20")}])
    eur, gbp = sorted(rows(quickbooks.invoices(raw), "invoices"), key=lambda r: r["id"])
    assert (eur["net_total"], eur["tax_total"], eur["gross_total"]) == (Decimal("100"), Decimal("20"), Decimal("120"))
    assert (eur["exchange_rate"], eur["home_gross_total"], eur["issue_date"]) == \
        (Decimal("0.85"), Decimal("102"), date(2025, 5, 1))
    assert gbp["home_gross_total"] == Decimal("50")  # a home-currency document is its own home total
    line = one(quickbooks.invoice_lines(raw), "invoice_lines")  # the subtotal row is not a line
    assert (line["document_id"], line["id"], line["position"], line["product_id"], line["tax_code"]) == \
        ("130", "1", 1, "6", "2")
    assert (line["quantity"], line["rate"], line["amount"], line["tax_rate"]) == \
        (Decimal("4"), Decimal("25"), Decimal("100"), Decimal("0.2"))


def test_quickbooks_tax_code_rate_from_its_sales_tax_rates():
    raw = frames(
        taxcode=[{"id": "2", "name": "20.0% S", "active": True,
                  "sales_tax_rate_list__tax_rate_detail": '[{"TaxRateRef":{"value":"1"}}]'},
                 {"id": "9", "name": "Group", "active": False, "sales_tax_rate_list__tax_rate_detail":
                  '[{"TaxRateRef":{"value":"1"}},{"TaxRateRef":{"value":"3"}}]'},
                 {"id": "TAX", "name": "TAX", "active": True}],
        taxrate=[{"id": "1", "rate_value": Decimal("20")}, {"id": "3", "rate_value": Decimal("8.875")}])
    got = {r["id"]: (r["rate"], r["active"]) for r in rows(quickbooks.tax_codes(raw), "tax_codes")}
    assert got == {"2": (Decimal("0.2"), True), "9": (Decimal("0.28875"), False), "TAX": (None, True)}


def test_quickbooks_customer_tax_status_uses_the_tenants_reverse_charge_code():
    raw = frames(customer=[{"id": "1", "display_name": "A", "taxable": True, "default_tax_code_ref__value": "2"},
                           {"id": "2", "display_name": "B", "taxable": False, "default_tax_code_ref__value": "6"},
                           {"id": "3", "display_name": "C", "taxable": False, "default_tax_code_ref__value": "7"},
                           {"id": "4", "display_name": "D"}])
    settings = {T: {"exempt_tax_code": "6", "reverse_charge_tax_code": "7"}}
    got = {r["id"]: r["tax_status"] for r in rows(quickbooks.customers(raw, settings), "customers")}
    assert got == {"1": "TAXED", "2": "TAX_EXEMPT", "3": "REVERSE_CHARGED", "4": None}


def test_quickbooks_payments_and_what_they_pay():
    raw = frames(
        payment=[{"id": "135", "txn_date": "2025-06-02", "customer_ref__value": "4", "currency_ref__value": "GBP",
                  "total_amt": Decimal("150.50"), "payment_ref_num": "BACS-1"}],
        payment__line=[
            {"_payment_id": "135", "amount": Decimal("100.50"), "linked_txn": '[{"TxnId":"134","TxnType":"Invoice"}]',
             "_index": 0},
            {"_payment_id": "135", "amount": Decimal("50"), "linked_txn": '[{"TxnId":"140","TxnType":"CreditMemo"}]',
             "_index": 1},
            {"_payment_id": "135", "amount": Decimal("1"), "linked_txn": '[{"TxnId":"9","TxnType":"JournalEntry"}]',
             "_index": 2}])
    payment = one(quickbooks.payments(raw), "payments")
    assert (payment["amount"], payment["date"], payment["reference"]) == (Decimal("150.50"), date(2025, 6, 2), "BACS-1")
    applied = {(r["document_type"], r["document_id"]): r["amount"]
               for r in rows(quickbooks.payment_applications(raw), "payment_applications")}
    assert applied == {("invoice", "134"): Decimal("100.50"), ("credit_note", "140"): Decimal("50")}


def test_quickbooks_custom_field_arrays_become_custom_fields():
    raw = frames(invoice=[{"id": "130", "total_amt": Decimal(1), "balance": Decimal(1), "currency_ref__value": "GBP",
                           "custom_field": '[{"DefinitionId":"1","Name":"Crew #","Type":"StringType",'
                                           '"StringValue":"102"},{"DefinitionId":"2","Type":"StringType"}]'}])
    got = rows(quickbooks.custom_fields(raw), "custom_fields")
    assert got == [{"tenant": T, "app": "quickbooks", "entity": "invoice", "id": "130", "field": "Crew #",
                    "value": "102"}]


# ---- the raw layer's shape ---------------------------------------------------------------------------------


def test_absent_tables_and_columns_read_as_typed_nulls():
    for module in (sequence, quickbooks):
        for table, frame in map_all(module, {}).items():
            assert rows(frame, table) == []
    raw = frames(invoice=[{"id": "1", "total_amt": Decimal(5), "balance": Decimal(5), "currency_ref__value": "GBP"}])
    row = one(quickbooks.invoices(raw), "invoices")  # no DocNumber, dates, address or metadata columns yet
    assert (row["number"], row["issue_date"], row["billing_country"], row["created_at"]) == (None, None, None, None)


def test_a_raw_column_of_another_type_is_an_error_of_the_mapping():
    raw = frames(invoice=[{"id": "1", "total_amt": "12.50", "balance": Decimal(5), "currency_ref__value": "GBP"}])
    with pytest.raises(MappingError, match=r"raw_quickbooks\.invoice\.total_amt is String"):
        quickbooks.invoices(raw).collect()
