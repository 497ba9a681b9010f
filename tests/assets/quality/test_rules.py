"""Each data-quality rule (checks/rules.py) on small unified frames: a failing and a passing case."""

from decimal import Decimal

import polars as pl
import pytest

from checks import rules

SETTINGS = {
    "acme-uk": {"home_currency": "GBP", "tax_codes": {"cat-std": "2", "cat-old": "8", "cat-ghost": "999"},
                "fallback_tax_code": "2", "items": {"prod-mapped": {"item_id": "5", "account_code": "4000"}}},
    "globex-us": {"home_currency": "USD", "tax_codes": {"cat-us": "TAX"}, "items": {}},
}


def failures(frame: pl.LazyFrame) -> pl.DataFrame:
    out = frame.collect()
    assert out.schema == pl.Schema(rules.FAILURES)
    return out.sort("tenant", "app", "id", "field", "reason")


def customer(**fields):
    base = dict(tenant="acme-uk", name="Quill Bio Ltd", email="ap@quill.example", line1="1 Wharf Road",
                city="London", postal_code="N1 7GR", country="GB", currency="GBP", active=True)
    return {**base, **fields}


# ---- addresses ------------------------------------------------------------------------------------------


def test_complete_addresses_pass(make):
    customers = make("customers", [customer(app="sequence", id="s1", links=[{"app": "quickbooks", "app_id": "7"}]),
                                   customer(app="quickbooks", id="7")])
    assert failures(rules.addresses_complete(customers.lazy(), rules.customers_to_create(customers.lazy()))).is_empty()


def test_incomplete_addresses_fail_and_block_only_customers_to_be_created(make):
    customers = make("customers", [
        customer(app="sequence", id="s1", links=[{"app": "quickbooks", "app_id": "7"}]),
        customer(app="quickbooks", id="7", postal_code="  "),  # linked: a warning
        customer(app="quickbooks", id="20", city=None, postal_code=None),  # not in Sequence: would be imported
        customer(app="quickbooks", id="21", country="IE", country_as_sent="Ireland"),
        customer(app="quickbooks", id="22", line1=None, active=False),  # archived: never created
    ])
    to_create = rules.customers_to_create(customers.lazy())
    assert sorted(to_create.collect()["id"]) == ["20", "21"]
    out = failures(rules.addresses_complete(customers.lazy(), to_create))
    assert out.select("id", "field", "blocking").rows() == [
        ("20", "billing_address.city", True),
        ("20", "billing_address.postal_code", True),
        ("21", "billing_address.country", True),
        ("22", "billing_address.line1", False),
        ("7", "billing_address.postal_code", False),
    ]
    assert "'Ireland' is not an ISO 3166-1 alpha-2 code" in out.filter(pl.col("id") == "21")["reason"][0]
    assert "cannot be created/imported" in out.filter(pl.col("id") == "20")["reason"][0]


def test_sequence_customers_without_a_twin_in_a_connected_app_are_to_be_created(make):
    customers = make("customers", [
        customer(app="sequence", id="linked", links=[{"app": "quickbooks", "app_id": "7"}]),
        customer(app="sequence", id="via-reconcile"),
        customer(app="sequence", id="new", city=None),
        customer(app="sequence", id="draft", city=None, app_status="DRAFT"),
        customer(app="quickbooks", id="7"), customer(app="quickbooks", id="8"),
        customer(tenant="solo", app="sequence", id="no-app", city=None),  # tenant without QuickBooks
    ])
    links = pl.LazyFrame({"tenant": ["acme-uk"], "app": ["quickbooks"], "entity": ["customer"],
                          "sequence_id": ["via-reconcile"], "app_id": ["8"]})
    to_create = rules.customers_to_create(customers.lazy(), links).collect()
    assert sorted(to_create.select("app", "id").rows()) == [("sequence", "new")]
    out = failures(rules.addresses_complete(customers.lazy(), to_create.lazy()))
    assert out.select("id", "blocking").rows() == [("draft", False), ("new", True), ("no-app", False)]


# ---- emails ---------------------------------------------------------------------------------------------


def test_well_formed_emails_pass(make):
    customers = make("customers", [customer(app="quickbooks", id="1", email="Billing.Team+eu@acme-cloud.co.uk")])
    assert failures(rules.emails_valid(customers.lazy(), entity="customer", column="email")).is_empty()


def test_malformed_and_missing_emails_fail_without_blocking(make):
    # shapes the contract's loose pattern lets through
    invoices = make("invoices", [
        dict(tenant="acme-uk", app="sequence", id="i1", billing_email="ap..team@quill.example"),
        dict(tenant="acme-uk", app="sequence", id="i2", billing_email="ap@quill.c0m"),
        dict(tenant="acme-uk", app="sequence", id="i3", billing_email="ap@quill.example"),
    ])
    out = failures(rules.emails_valid(invoices.lazy(), entity="invoice", column="billing_email"))
    assert out.select("id", "field").rows() == [("i1", "billing_email"), ("i2", "billing_email")]
    assert not out["blocking"].any()
    assert out["reason"][0] == "'ap..team@quill.example' is not a valid email address"

    customers = make("customers", [customer(app="quickbooks", id="20", email=None)])
    required = pl.LazyFrame({"tenant": ["acme-uk"], "app": ["quickbooks"], "id": ["20"]})
    out = failures(rules.emails_valid(customers.lazy(), entity="customer", column="email", required=required))
    assert out["reason"].to_list() == ["no email; a customer needs one to be imported into Sequence"]


# ---- currencies -----------------------------------------------------------------------------------------


def test_iso_currencies_pass(make):
    invoices = make("invoices", [dict(tenant="acme-uk", app="sequence", id="i1", currency="JPY")])
    assert failures(rules.currencies_iso4217(invoices.lazy(), entity="invoice", required=True)).is_empty()


def test_unknown_or_missing_currencies_fail(make):
    # rows a writer forgot to validate: the check is the safety net behind the contract
    invoices = make("invoices", [dict(tenant="acme-uk", app="sequence", id="i1", currency="XYZ"),
                                 dict(tenant="acme-uk", app="quickbooks", id="9", currency=None),
                                 dict(tenant="acme-uk", app="quickbooks", id="10", currency="EUR")], validate=False)
    out = failures(rules.currencies_iso4217(invoices.lazy(), entity="invoice", required=True))
    assert out.select("id", "reason").rows() == [("9", "no currency"),
                                                 ("i1", "'XYZ' is not an ISO 4217 currency code")]


# ---- tax codes ------------------------------------------------------------------------------------------


@pytest.fixture
def tax_codes(make):
    return make("tax_codes", [
        dict(tenant="acme-uk", app="quickbooks", id="2", name="20.0% S", rate=Decimal("0.2"), active=True),
        dict(tenant="acme-uk", app="quickbooks", id="8", name="17.5% S", rate=Decimal("0.175"), active=False),
        dict(tenant="acme-uk", app="sequence", id="cat-std", name="Standard", active=True),
        dict(tenant="acme-uk", app="sequence", id="cat-old", name="Digital services (OSS)", active=True),
        dict(tenant="acme-uk", app="sequence", id="cat-ghost", name="Telecommunications", active=True),
        dict(tenant="acme-uk", app="sequence", id="cat-none", name="Books", active=True),
        dict(tenant="acme-uk", app="sequence", id="cat-gone", name="Retired", active=False),
        dict(tenant="globex-us", app="sequence", id="cat-us", name="SaaS", active=True),
    ])


def line(**fields):
    return {"tenant": "acme-uk", "position": 0, **fields}


def test_resolvable_line_tax_codes_pass(make, tax_codes):
    lines = make("invoice_lines", [
        line(app="quickbooks", document_id="161", id="1", tax_code="2"),
        line(app="quickbooks", document_id="161", id="2", tax_code=None),
        line(tenant="globex-us", app="quickbooks", document_id="40", id="1", tax_code="NON"),
        line(app="sequence", document_id="inv-1", id="l1", tax_category_id="cat-std"),
        line(app="sequence", document_id="inv-1", id="l2", tax_category_id="cat-none"),  # fallback applies
    ])
    out = rules.line_tax_codes_resolvable(lines.lazy(), tax_codes.lazy(), settings=SETTINGS,
                                          us=rules.us_tenants(SETTINGS))
    assert failures(out).is_empty()


def test_unresolvable_line_tax_codes_fail_and_block(make, tax_codes):
    lines = make("invoice_lines", [
        line(app="quickbooks", document_id="161", id="3", tax_code="999"),
        line(app="quickbooks", document_id="162", id="1", tax_code="TAX"),  # TAX/NON only for a US company
        line(app="sequence", document_id="inv-2", id="l1", tax_category_id="cat-old"),
        line(app="sequence", document_id="inv-3", id="l1", tax_category_id="cat-ghost"),
    ])
    out = failures(rules.line_tax_codes_resolvable(lines.lazy(), tax_codes.lazy(), settings=SETTINGS,
                                                   us=["globex-us"]))
    assert out.select("app", "id", "field").rows() == [
        ("quickbooks", "161", "line.tax_code"), ("quickbooks", "162", "line.tax_code"),
        ("sequence", "inv-2", "line.tax_code"), ("sequence", "inv-3", "line.tax_code")]
    assert out["blocking"].all()
    reasons = out["reason"].to_list()
    assert reasons[0] == "line 3: tax code '999' does not exist in QuickBooks"
    assert reasons[2] == "line l1: tax category cat-old maps to QuickBooks tax code '8', which is inactive"
    assert reasons[3].endswith("maps to QuickBooks tax code '999', which does not exist")


def test_mapped_tax_categories_pass(make, tax_codes):
    good = tax_codes.filter(pl.col("id").is_in(["2", "cat-std", "cat-gone", "cat-us"]))
    out = rules.tax_categories_mapped(good.lazy(), settings=SETTINGS, us=["globex-us"])
    assert failures(out).is_empty()


def test_unmapped_or_unresolvable_tax_categories_fail(tax_codes):
    out = failures(rules.tax_categories_mapped(tax_codes.lazy(), settings=SETTINGS, us=["globex-us"]))
    assert out.select("id", "reason").rows() == [
        ("cat-ghost", "tax category 'Telecommunications' is mapped to QuickBooks tax code '999', which does not exist"),
        ("cat-none", "tax category 'Books' has no QuickBooks tax code in the integration settings"),
        ("cat-old", "tax category 'Digital services (OSS)' is mapped to QuickBooks tax code '8', which is inactive"),
    ]
    assert set(out["entity"]) == {"tax_category"} and out["blocking"].all()


def test_us_tenants_come_from_the_company_country_else_the_home_currency():
    assert rules.us_tenants(SETTINGS) == ["globex-us"]
    assert rules.us_tenants(SETTINGS, {"globex-us": "CA", "acme-uk": "US"}) == ["acme-uk"]


# ---- item names -----------------------------------------------------------------------------------------


def product(app, id, name, **fields):
    return {"tenant": "acme-uk", "app": app, "id": id, "name": name, "active": True, **fields}


def test_unique_item_names_pass(make):
    products = make("products", [
        product("quickbooks", "1", "Services"), product("quickbooks", "5", "Platform fee"),
        product("sequence", "prod-mapped", "Platform fee"),  # mapped to item 5: no new item
        product("sequence", "prod-new", "Data storage (GB)"),
        product("quickbooks", "9", "Consulting", active=False),  # inactive items free their name
        product("sequence", "prod-consulting", "Consulting"),
    ])
    assert failures(rules.item_names_unique(products.lazy(), settings=SETTINGS)).is_empty()


def test_colliding_item_names_fail_and_block(make):
    products = make("products", [
        product("quickbooks", "3", "Consulting"), product("sequence", "prod-c", "  consulting "),
        product("sequence", "prod-t1", "Training"), product("sequence", "prod-t2", "TRAINING"),
        product("quickbooks", "11", "Support"), product("quickbooks", "12", "support"),
    ])
    out = failures(rules.item_names_unique(products.lazy(), settings=SETTINGS))
    assert out.select("app", "id").rows() == [("quickbooks", "11"), ("quickbooks", "12"), ("sequence", "prod-c"),
                                              ("sequence", "prod-t1"), ("sequence", "prod-t2")]
    assert out["blocking"].all()
    assert "QuickBooks already has an item named so (item 3)" in out.filter(pl.col("id") == "prod-c")["reason"][0]


# ---- totals ---------------------------------------------------------------------------------------------


def doc(app, id, net, currency="GBP", status="OPEN"):
    return {"tenant": "acme-uk", "app": app, "id": id, "net_total": net, "currency": currency, "status": status}


def amounts(document_id, app, *values):
    return [line(app=app, document_id=document_id, id=f"{document_id}-{i}", position=i, amount=v)
            for i, v in enumerate(values)]


def test_totals_equal_to_their_lines_at_minor_units_pass(make):
    invoices = make("invoices", [
        doc("sequence", "a", Decimal("0.30")),  # 0.1 + 0.2: no float noise in Decimal
        doc("sequence", "b", Decimal("100.01")),  # sub-cent line amounts round like the invoice does
        doc("quickbooks", "c", Decimal("1200"), currency="JPY"),
        doc("quickbooks", "v", Decimal("0"), status="VOID"),
        doc("quickbooks", "empty", Decimal("0")),
    ])
    lines = make("invoice_lines", [*amounts("a", "sequence", Decimal("0.1"), Decimal("0.2")),
                                   *amounts("b", "sequence", Decimal("33.3366"), Decimal("66.6734")),
                                   *amounts("c", "quickbooks", Decimal("1199.6")),
                                   *amounts("v", "quickbooks", Decimal("500"))])
    assert failures(rules.totals_match_lines(invoices.lazy(), lines.lazy())).is_empty()


def test_totals_that_differ_from_their_lines_fail_and_block(make):
    invoices = make("invoices", [
        doc("quickbooks", "161", Decimal("991.20")),
        doc("sequence", "a", Decimal("100.00")),
        doc("quickbooks", "c", Decimal("1200"), currency="JPY"),
        doc("sequence", "n", None),
    ])
    lines = make("invoice_lines", [*amounts("161", "quickbooks", Decimal("900"), Decimal("91.19")),
                                   *amounts("a", "sequence", Decimal("100.005")),  # 100.01 at minor units
                                   *amounts("c", "quickbooks", Decimal("1201")),
                                   *amounts("n", "sequence", Decimal("5"))])
    out = failures(rules.totals_match_lines(invoices.lazy(), lines.lazy()))
    assert out.select("id", "reason").rows() == [
        ("161", "net total 991.20 GBP differs from the sum of its 2 lines, 991.19 GBP"),
        ("c", "net total 1200 JPY differs from the sum of its 1 line, 1201 JPY"),
        ("a", "net total 100.00 GBP differs from the sum of its 1 line, 100.01 GBP"),
        ("n", "no net total (its 1 line sum to 5.00 GBP)"),
    ]
    assert out["blocking"].all() and set(out["field"]) == {"net_total"}
