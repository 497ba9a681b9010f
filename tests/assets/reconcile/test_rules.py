"""One test per rule of the seed (shared/seeds/sequence-quickbooks-integration.txt), on a small one-tenant company
whose two sides agree (conftest.company) with one thing bent at a time, plus the rule functions on their own."""

from datetime import date
from decimal import Decimal

import polars as pl

from assets.reconcile import rules

QBO, SEQ, TENANT = "quickbooks", "sequence", "t1"
MERCHANT = "billing@merchant.example"
PRODUCT, OTHER_PRODUCT = "prod-platform", "prod-seats"


def only(mismatches: pl.DataFrame) -> dict:
    assert mismatches.height == 1, mismatches.select("kind", "field", "reason").to_dicts()
    return mismatches.row(0, named=True)


def fields(mismatches: pl.DataFrame) -> set[tuple[str, str | None]]:
    return set(zip(mismatches["kind"], mismatches["field"], strict=True))


# --- Invoice date (depending on accounting date preference) ---------------------------------------------------


def test_invoice_date_follows_the_tenants_accounting_date_preference(co):
    # settings say "issue": QuickBooks carries the issue date (2025-03-16); the accounting date would be wrong
    assert co.mismatches().height == 0
    co.row("invoices", QBO, "100", issue_date=date(2025, 3, 1))
    found = only(co.mismatches())
    assert (found["field"], found["sequence_value"], found["app_value"]) == ("invoice_date", "2025-03-16", "2025-03-01")
    assert "the settings use the issue date" in found["reason"]
    # settings say "accounting": now the accounting date (2025-03-01) is the right one
    assert co.mismatches(co.settings(invoice_date="accounting")).height == 0

    frame = pl.DataFrame({"pref": ["issue", "accounting", None, "accounting"],
                          "issue": [date(2025, 1, 5), date(2025, 1, 5), date(2025, 1, 5), date(2025, 1, 5)],
                          "acct": [date(2025, 1, 1), date(2025, 1, 1), date(2025, 1, 1), None]})
    expected = frame.select(rules.expected_invoice_date(pl.col("pref"), pl.col("issue"), pl.col("acct")))
    assert expected.to_series().to_list() == [date(2025, 1, 5), date(2025, 1, 1), date(2025, 1, 5), date(2025, 1, 5)]


# --- Customer email: primary billing contact; the merchant's once sent -----------------------------------------


def test_billing_email_is_the_merchant_email_once_sent_and_the_primary_contact_before(co):
    # SENT: QuickBooks holds the merchant email (so QuickBooks does not email the customer again): agreed
    assert co.mismatches().height == 0
    co.row("invoices", QBO, "100", billing_email="ap@blue.example")
    found = only(co.mismatches())
    assert (found["field"], found["sequence_value"], found["app_value"]) == ("billing_email", MERCHANT,
                                                                             "ap@blue.example")
    assert "merchant email" in found["reason"]
    # FINAL (finalised, not sent): the primary billing contact's email, compared case-insensitively
    co.row("invoices", SEQ, "inv1", app_status="FINAL")
    assert co.mismatches().height == 0
    co.row("invoices", QBO, "100", billing_email=MERCHANT)
    assert fields(co.mismatches()) == {("field_differs", "billing_email")}


# --- Line description: "[Line item group name]: [Line item name]" ------------------------------------------------


def test_line_description_is_group_name_colon_line_name(co):
    co.line(QBO, "100", "1", description="Platform fee, March 2025")
    found = only(co.mismatches())
    assert (found["entity"], found["field"], found["sequence_id"], found["app_id"]) == ("invoice", "line.description",
                                                                                        "inv1", "100")
    assert found["sequence_value"] == "Platform: Platform fee, March 2025"
    assert found["reason"].startswith("Invoice INV00042 line 1: description is 'Platform: Platform fee")
    built = pl.DataFrame({"g": ["Usage", None], "t": ["API calls", "Set-up"]}).select(
        rules.line_description(pl.col("g"), pl.col("t")))
    assert built.to_series().to_list() == ["Usage: API calls", "Set-up"]


# --- Line tax code (depending on mapping) -------------------------------------------------------------------------


def test_tax_code_resolution_order():
    cases = pl.DataFrame([
        # status, mapped, fallback, exempt, rc, account default, customer default, US -> expected
        ("TAXED", "2", "9", "6", "7", "A", "C", False, "2"),           # the category's mapped code
        ("TAXED", None, "9", "6", "7", "A", "C", False, "9"),          # unmapped line or product: the fallback
        ("TAX_EXEMPT", "2", "9", "6", "7", "A", "C", False, "6"),      # exempt: the configured exempt code
        ("REVERSE_CHARGED", "2", "9", "6", "7", "A", "C", False, "7"),  # reverse charged: its configured code
        ("TAXED", None, None, None, None, "A", "C", False, "A"),       # nothing set: the company default
        ("TAX_EXEMPT", None, None, None, None, None, "C", False, "C"),  # failing that, the customer's default
        ("TAXED", "TAX", "TAX", "NON", "NON", None, None, True, "TAX"),  # US: TAX for taxed
        ("TAXED", "NON", "TAX", "NON", "NON", None, None, True, "NON"),  # US: a non-taxable category
        ("TAX_EXEMPT", "TAX", "TAX", "NON", "NON", None, None, True, "NON"),  # US: NON for exempt
        ("REVERSE_CHARGED", "TAX", "TAX", None, None, None, None, True, "NON"),  # US: NON for reverse charged
    ], schema=["status", "mapped", "fallback", "exempt", "rc", "account", "customer", "us", "expected"], orient="row")
    got = cases.select(rules.expected_tax_code(*(pl.col(c) for c in ("status", "mapped", "fallback", "exempt", "rc",
                                                                       "account", "customer", "us"))))
    assert got.to_series().to_list() == cases["expected"].to_list()


def test_tax_code_differences_on_lines(co):
    co.line(QBO, "100", "2", tax_code="4")  # a zero-rated code where the category maps to 2
    found = only(co.mismatches())
    assert (found["field"], found["sequence_value"], found["app_value"]) == ("line.tax_code", "2", "4")
    # an exempt customer's lines carry the settings' exempt code, whatever the category
    co.row("customers", SEQ, "c1", tax_status="TAX_EXEMPT")
    co.line(QBO, "100", "1", tax_code="6")
    co.line(QBO, "100", "2", tax_code="6")
    assert co.mismatches().height == 0
    # a category the settings do not map falls back to the fallback code (here 7)
    co.row("customers", SEQ, "c1", tax_status="TAXED")
    co.line(SEQ, "inv1", "l1", tax_category_id=None)
    co.line(QBO, "100", "1", tax_code="7")
    co.line(QBO, "100", "2", tax_code="2")
    assert co.mismatches(co.settings(fallback_tax_code="7")).height == 0


def test_without_a_configured_code_the_quickbooks_customer_s_default_tax_code_decides(co):
    # the seed's order ends with the account default, then the customer default: with neither the settings nor
    # the account naming a code, the QuickBooks customer's own default is what Sequence puts on the lines
    bare = co.settings(tax_codes={}, fallback_tax_code=None, account_default_tax_code=None)
    co.row("customers", QBO, "1", default_tax_code="5")
    co.line(QBO, "100", "1", tax_code="5")
    co.line(QBO, "100", "2", tax_code="5")
    assert co.mismatches(bare).height == 0
    co.line(QBO, "100", "2", tax_code="2")
    found = only(co.mismatches(bare))
    assert (found["field"], found["sequence_value"], found["app_value"]) == ("line.tax_code", "5", "2")
    # an account default, when the settings give one, comes before the customer's
    assert {r["sequence_value"] for r in co.mismatches(co.settings(
        tax_codes={}, fallback_tax_code=None, account_default_tax_code="2")).to_dicts()} == {"2"}


def test_us_company_lines_carry_tax_or_non(co):
    us = co.settings(tax_codes={"cat-std": "TAX"}, fallback_tax_code="TAX", exempt_tax_code="NON",
                  reverse_charge_tax_code="NON", home_currency="USD", multi_currency=False)
    co.rows["tax_codes"] = [r for r in co.rows["tax_codes"] if r["app"] == SEQ] + [
        {"tenant": TENANT, "app": QBO, "id": "TAX", "name": "TAX"}, {"tenant": TENANT, "app": QBO, "id": "NON",
                                                                     "name": "NON"}]
    for record in co.rows["invoice_lines"]:
        if record["app"] == QBO:
            record["tax_code"] = "TAX"
    assert co.mismatches(us).height == 0
    co.row("customers", SEQ, "c1", tax_status="TAX_EXEMPT")
    assert {r["sequence_value"] for r in co.mismatches(us).to_dicts()} == {"NON"}


def test_tax_categories_mapped_to_a_code_quickbooks_lacks_or_retired(co):
    co.rows["tax_codes"].append({"tenant": TENANT, "app": QBO, "id": "8", "name": "17.5% S", "active": False})
    co.rows["tax_codes"].append({"tenant": TENANT, "app": SEQ, "id": "cat-oss", "name": "Digital services (OSS)"})
    tenant = co.settings(tax_codes={"cat-std": "2", "cat-oss": "8", "cat-tel": "999"})
    found = co.mismatches(tenant).sort("sequence_id")
    assert found.select("entity", "kind", "field", "sequence_id", "app_id", "proposed_action").rows() == [
        ("tax_category", "tax_code_unresolved", "tax_code", "cat-oss", "8", "fix_settings"),
        ("tax_category", "tax_code_unresolved", "tax_code", "cat-tel", None, "fix_settings")]
    assert "inactive" in found["reason"][0] and "does not have" in found["reason"][1]


# --- Line item: Sequence product (depending on item mapping); item names unique; account codes ---------------------


def test_lines_use_the_mapped_item_and_unmapped_products_the_default_item(co):
    co.line(QBO, "100", "2", product_id="5")
    found = only(co.mismatches())
    assert (found["field"], found["sequence_value"], found["app_value"]) == ("line.item", "6", "5")
    # unmapped product: its line goes to QuickBooks' default item "Services" (1) and the product is reported
    co.line(QBO, "100", "2", product_id="1")
    co.rows["products"] = [r for r in co.rows["products"] if (r["app"], r["id"]) != (QBO, "6")]
    unmapped = co.settings(items={PRODUCT: {"item_id": "5", "account_code": "4000"}})
    found = only(co.mismatches(unmapped))
    assert (found["entity"], found["kind"], found["field"], found["sequence_id"], found["app_id"],
            found["proposed_action"]) == ("product", "product_unmapped", "item", OTHER_PRODUCT, None, "create_item")


def test_item_names_are_unique_in_quickbooks(co):
    co.rows["products"].append({"tenant": TENANT, "app": SEQ, "id": "prod-consulting", "name": "Consulting"})
    co.rows["products"].append({"tenant": TENANT, "app": QBO, "id": "2", "name": "consulting ",
                                "income_account_id": "41"})
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["sequence_id"], found["app_id"], found["proposed_action"]) == (
        "item_name_not_unique", "name", "prod-consulting", "2", "review")


def test_items_book_to_the_account_code_the_settings_give(co):
    co.row("products", QBO, "6", income_account_id="41")
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["sequence_id"], found["app_id"], found["sequence_value"],
            found["app_value"], found["proposed_action"]) == ("item_account_differs", "account_code", OTHER_PRODUCT,
                                                              "6", "4000", "4040", "update_item")
    # a mapping to an item QuickBooks does not have is a settings problem
    co.row("products", QBO, "6", income_account_id="40")
    missing = co.settings(items={PRODUCT: {"item_id": "5", "account_code": "4000"},
                              OTHER_PRODUCT: {"item_id": "77", "account_code": "4000"}})
    co.line(QBO, "100", "2", product_id="77")
    found = only(co.mismatches(missing))
    assert (found["kind"], found["app_id"], found["proposed_action"]) == ("product_unmapped", "77", "fix_settings")


# --- Importing customers from QuickBooks -------------------------------------------------------------------------


def test_quickbooks_customers_import_only_with_email_and_a_complete_alpha2_address(co):
    base = {"tenant": TENANT, "app": QBO, "line1": "5 Main Street", "city": "Dublin", "postal_code": "D02 A123",
            "country": "IE", "email": "ap@new.example", "currency": "EUR"}
    co.rows["customers"] += [
        {**base, "id": "20", "name": "Complete Ltd"},
        {**base, "id": "21", "name": "No Email Ltd", "email": None},
        {**base, "id": "22", "name": "No Postcode Ltd", "email": "ap@nopost.example", "postal_code": None},
        {**base, "id": "23", "name": "Country Name Ltd", "email": "ap@name.example", "country_as_sent": "Ireland"},
        {**base, "id": "24", "name": "Inactive Ltd", "email": "ap@gone.example", "active": False},
    ]
    found = co.mismatches().sort("app_id")
    assert found.select("kind", "field", "app_id", "proposed_action").rows() == [
        ("importable", None, "20", "import_to_sequence"),
        ("not_importable", "billing_email", "21", "review"),
        ("not_importable", "billing_address.postal_code", "22", "review"),
        ("not_importable", "billing_address.country", "23", "review")]
    country = found.filter(pl.col("app_id") == "23").row(0, named=True)
    assert country["app_value"] == "Ireland" and "has country 'Ireland', not an alpha-2 code" in country["reason"]


# --- Reconciling invoices: paid in QuickBooks; the Stripe payment link ---------------------------------------------


def test_paid_in_quickbooks_marks_paid_in_sequence_unless_stripe_decides(co):
    co.row("invoices", QBO, "100", status="PAID", payment_status="PAID", balance="0")
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["proposed_action"]) == ("status_differs", "payment_status",
                                                                         "mark_paid_in_sequence")
    co.row("invoices", SEQ, "inv1", stripe_payment_link=True)
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["proposed_action"]) == ("stripe_link_ignored", "payment_status",
                                                                         "none")
    assert "Stripe" in found["reason"]
    # paid in Sequence but open in QuickBooks: reconcile it there (never a write back into Sequence)
    co.row("invoices", QBO, "100", status="OPEN", payment_status="UNPAID")
    co.row("invoices", SEQ, "inv1", status="PAID", payment_status="PAID")
    found = only(co.mismatches())
    assert (found["kind"], found["sequence_value"], found["app_value"], found["proposed_action"]) == (
        "status_differs", "PAID", "UNPAID", "review")


def test_rule_functions_for_payment_and_stripe():
    frame = pl.DataFrame({"status": ["PAID", "OPEN", "OPEN"], "pay": [None, "PAID", "UNPAID"],
                          "stripe": [True, False, None]})
    assert frame.select(rules.is_paid(pl.col("status"), pl.col("pay"))).to_series().to_list() == [True, True, False]
    kind, action = rules.paid_in_app_outcome(pl.col("stripe"))
    out = frame.select(kind.alias("k"), action.alias("a"))
    assert out.rows() == [("stripe_link_ignored", "none"), ("status_differs", "mark_paid_in_sequence"),
                          ("status_differs", "mark_paid_in_sequence")]


# --- Voided invoices -----------------------------------------------------------------------------------------------


def test_voided_in_sequence_is_voided_in_quickbooks_and_void_pairs_compare_status_only(co):
    co.row("invoices", SEQ, "inv1", status="VOID", app_status="VOIDED")
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["sequence_value"], found["app_value"], found["proposed_action"]) == (
        "status_differs", "status", "VOID", "OPEN", "void_in_app")
    # voided on both sides: QuickBooks keeps the lines at zero, Qty 0, "Voided", the customer's email: no mismatch
    co.row("invoices", QBO, "100", status="VOID", gross_total="0", balance="0", memo="Voided",
        billing_email="ap@blue.example", home_gross_total="0")
    for line_id in ("1", "2"):
        co.line(QBO, "100", line_id, quantity="0", amount="0")
    assert co.mismatches().height == 0
    # voided in QuickBooks only: somebody should look
    co.row("invoices", SEQ, "inv1", status="OPEN", app_status="SENT")
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["proposed_action"]) == ("status_differs", "status", "review")


# --- Syncing invoices & credit notes: finalised or sent ones must be in QuickBooks --------------------------------


def test_finalised_and_sent_documents_missing_in_quickbooks_are_created_drafts_never(co):
    co.rows["invoices"].append({"tenant": TENANT, "app": SEQ, "id": "inv2", "number": "INV00043", "customer_id": "c1",
                             "status": "OPEN", "app_status": "FINAL", "currency": "GBP"})
    co.rows["invoices"].append({"tenant": TENANT, "app": SEQ, "id": "inv3", "customer_id": "c1", "status": "DRAFT",
                             "app_status": "DRAFT", "currency": "GBP"})
    co.rows["credit_notes"].append({"tenant": TENANT, "app": SEQ, "id": "cn1", "number": "CN00001", "customer_id": "c1",
                                 "status": "OPEN", "app_status": "SENT", "currency": "GBP"})
    found = co.mismatches().sort("entity")
    assert found.select("entity", "kind", "sequence_id", "app_id", "proposed_action").rows() == [
        ("credit_note", "missing_in_app", "cn1", None, "create_in_app"),
        ("invoice", "missing_in_app", "inv2", None, "create_in_app")]
    assert found["reason"][1].startswith("Invoice INV00043 is issued in Sequence but no invoice in QuickBooks")


def test_quickbooks_documents_without_a_sequence_twin_are_for_review(co):
    co.rows["invoices"].append({"tenant": TENANT, "app": QBO, "id": "263", "number": "1001", "customer_id": "1",
                             "status": "OPEN", "currency": "GBP"})
    found = only(co.mismatches())
    assert (found["kind"], found["sequence_id"], found["app_id"], found["proposed_action"]) == (
        "missing_in_sequence", None, "263", "review")


# --- Currency: the invoice's currency must be the QuickBooks customer's; home-currency conversion --------------------


def test_invoice_currency_must_match_the_quickbooks_customers(co):
    co.rows["invoices"].append({"tenant": TENANT, "app": SEQ, "id": "inv2", "number": "INV00043", "customer_id": "c1",
                             "status": "OPEN", "app_status": "SENT", "currency": "USD"})
    found = only(co.mismatches())  # the sync fails: reported as a currency problem, not as a missing invoice
    assert (found["kind"], found["field"], found["sequence_id"], found["sequence_value"], found["app_value"]) == (
        "currency_differs", "currency", "inv2", "USD", "GBP")
    # a linked pair in two currencies
    co.row("invoices", SEQ, "inv2", currency="GBP")
    co.rows["invoices"] = [r for r in co.rows["invoices"] if r["id"] != "inv2"]
    co.row("invoices", QBO, "100", currency="EUR")
    found = only(co.mismatches())
    assert (found["kind"], found["field"], found["sequence_value"], found["app_value"]) == (
        "currency_differs", "currency", "GBP", "EUR")


def test_home_currency_total_is_the_total_at_the_quickbooks_rate(co):
    co.row("invoices", QBO, "100", currency="EUR", exchange_rate="0.851234", home_gross_total="1225.78")
    co.row("invoices", SEQ, "inv1", currency="EUR")
    co.row("customers", QBO, "1", currency="EUR")
    assert co.mismatches().height == 0  # 1440.00 x 0.851234 = 1225.77696 -> 1225.78
    co.row("invoices", QBO, "100", home_gross_total="1225.77")  # half a cent off the product still rounds ok
    assert co.mismatches().height == 1
    co.row("invoices", QBO, "100", home_gross_total="1226.78")
    found = only(co.mismatches())
    assert (found["field"], found["sequence_value"], found["app_value"]) == ("home_total", "1225.78", "1226.78")
    frame = pl.DataFrame({"t": [Decimal("100.01")], "r": [Decimal("0.5")], "h": [Decimal("50.00")]},
                         schema={"t": pl.Decimal(38, 9), "r": pl.Decimal(38, 9), "h": pl.Decimal(38, 9)})
    # 50.005 exactly: half-up gives 50.01, half-even 50.00; both are within half a minor unit of the product
    assert not frame.select(rules.home_total_differs(pl.col("t"), pl.col("r"), pl.col("h"), pl.lit("GBP"))).item()


# --- Linking customers -------------------------------------------------------------------------------------------


def test_unlinked_customers_get_a_proposed_twin_never_a_silent_link(co):
    co.rows["customers"] += [
        {"tenant": TENANT, "app": SEQ, "id": "c2", "name": "Umber Payments B.V.", "email": "ap@umber.example",
         "app_status": "ACTIVE"},
        {"tenant": TENANT, "app": QBO, "id": "16", "name": "Umber Payments", "email": "ap@umber.example"},
        {"tenant": TENANT, "app": SEQ, "id": "c3", "name": "Müller Labs GmbH", "email": "ap@muller.example",
         "app_status": "ACTIVE"},
        {"tenant": TENANT, "app": QBO, "id": "17", "name": "Muller Labs", "email": "finance@muller.example"},
        {"tenant": TENANT, "app": SEQ, "id": "c4", "name": "Draft Co Ltd", "email": "ap@draft.example",
         "app_status": "DRAFT"},
    ]
    links, found = co.reconcile()
    assert found.sort("sequence_id").select("kind", "sequence_id", "app_id", "proposed_action").rows() == [
        ("unlinked_candidate", "c2", "16", "link"),  # same email
        ("unlinked_candidate", "c3", "17", "link")]  # same legal name, accents and legal form aside
    assert "same email" in found["reason"][0] and "same legal name" in found["reason"][1]
    assert links.filter(pl.col("sequence_id").is_in(["c2", "c3"])).height == 0
    # two QuickBooks customers with that email: ambiguous, review, both named
    co.rows["customers"].append({"tenant": TENANT, "app": QBO, "id": "18", "name": "Umber Payments (old)",
                              "email": "ap@umber.example"})
    c2 = co.mismatches().filter(pl.col("sequence_id") == "c2").row(0, named=True)
    assert (c2["app_id"], c2["proposed_action"]) == (None, "review")
    assert "16 'Umber Payments'" in c2["reason"] and "18 'Umber Payments (old)'" in c2["reason"]


def test_new_sequence_customers_are_created_in_quickbooks_drafts_and_archived_are_not(co):
    co.rows["customers"] += [
        {"tenant": TENANT, "app": SEQ, "id": "c5", "name": "New Co Ltd", "email": "ap@new.example",
         "app_status": "ACTIVE"},
        {"tenant": TENANT, "app": SEQ, "id": "c6", "name": "Draft Co Ltd", "email": "ap@draft.example",
         "app_status": "DRAFT"},
        {"tenant": TENANT, "app": SEQ, "id": "c7", "name": "Gone Co Ltd", "email": "ap@gone.example",
         "app_status": "ACTIVE", "active": False},
    ]
    found = only(co.mismatches())
    assert (found["kind"], found["sequence_id"], found["proposed_action"]) == ("missing_in_app", "c5", "create_in_app")


def test_invoices_match_quickbooks_documents_by_number(co):
    co.row("invoices", SEQ, "inv1", links=None)
    found = only(co.mismatches())
    assert (found["kind"], found["entity"], found["sequence_id"], found["app_id"], found["proposed_action"]) == (
        "unlinked_candidate", "invoice", "inv1", "100", "link")
    assert "same number (inv00042)" in found["reason"]
