"""Links from the report to the records: Xero's web pages (with and without the organisation's short code) and
its emulator, Salesforce's org host, the registry's own template for apps without a builder, and the targets the
registry gives each connection."""

import yaml

from assets.reports.assets import link_targets
from assets.reports.report import AppTarget, generic_url, record_url, salesforce_url, xero_url
from connectors.registry import load_registry

INVOICE = "0b7e4c2a-91d3-4f65-a8e0-3c5d7f9b1e24"
CONTACT = "5c9d1e3f-7a2b-4c6d-8e0f-2a4b6c8d0e1f"


def test_xero_records_open_on_go_xero_com():
    web = AppTarget()
    assert xero_url("invoice", INVOICE, web) == f"https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID={INVOICE}"
    assert xero_url("credit_note", "cn-1", web) == \
        "https://go.xero.com/AccountsReceivable/ViewCreditNote.aspx?creditNoteID=cn-1"
    assert xero_url("customer", CONTACT, web) == f"https://go.xero.com/Contacts/View/{CONTACT}"
    assert xero_url("payment", "p-1", web) == "https://go.xero.com/Bank/ViewTransaction.aspx?bankTransactionID=p-1"
    # items have no page of their own: the products and services list
    assert xero_url("product", "item-1", web) == "https://go.xero.com/Accounts/Inventory/"
    assert xero_url("tax_category", "OUTPUT2", web) is None
    assert xero_url("invoice", "a b/c", web).endswith("InvoiceID=a%20b%2Fc")  # ids are quoted


def test_with_the_short_code_a_xero_link_opens_the_tenants_organisation_first():
    org = AppTarget(short_code="!mBdtL")
    assert xero_url("invoice", INVOICE, org) == (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode=%21mBdtL"
        f"&redirecturl=/AccountsReceivable/View.aspx%3FInvoiceID%3D{INVOICE}")
    assert xero_url("customer", CONTACT, org) == (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode=%21mBdtL"
        f"&redirecturl=/Contacts/View/{CONTACT}")


def test_a_sandbox_xero_links_to_its_emulators_read_one_path():
    sandbox = AppTarget("http://127.0.0.1:8713/")
    assert xero_url("invoice", INVOICE, sandbox) == f"http://127.0.0.1:8713/api.xro/2.0/Invoices/{INVOICE}"
    assert xero_url("customer", CONTACT, sandbox) == f"http://127.0.0.1:8713/api.xro/2.0/Contacts/{CONTACT}"
    assert xero_url("product", "i-9", sandbox) == "http://127.0.0.1:8713/api.xro/2.0/Items/i-9"
    assert xero_url("credit_note", "c-1", sandbox) == "http://127.0.0.1:8713/api.xro/2.0/CreditNotes/c-1"


def test_apps_without_a_builder_use_the_registrys_template_or_show_no_link():
    template = AppTarget(record_url="https://app.hubspot.com/contacts/123/record/{entity}/{id}")
    assert generic_url("customer", "42 x", template) == "https://app.hubspot.com/contacts/123/record/customer/42%20x"
    assert generic_url("customer", "42", AppTarget()) is None
    assert generic_url("customer", "42", AppTarget(record_url="https://x.example/{nope}")) is None  # no wrong links
    targets = {("acme-uk", "hubspot"): template}
    assert record_url(targets, "acme-uk", "hubspot", "customer", "7") == \
        "https://app.hubspot.com/contacts/123/record/customer/7"
    assert record_url(targets, "globex-us", "attio", "customer", "7") is None  # unknown app, no template
    # a template set for an app with a builder wins: the operator knows their pages
    assert record_url({("t", "xero"): AppTarget(record_url="https://books.example/{id}")}, "t", "xero", "invoice",
                      "1") == "https://books.example/1"
    # Salesforce ids open on the org's own host
    assert salesforce_url("customer", "001xx", AppTarget(web_url="https://acme.my.salesforce.com")) == \
        "https://acme.my.salesforce.com/001xx"


def test_the_registry_gives_each_connection_its_link_target(tmp_path):
    secrets = {"client_id": "X_ID", "client_secret": "X_SECRET", "refresh_token": "X_REFRESH"}
    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump({"tenants": {"acme-uk": {"connections": {
        "xero": {"base_url": "https://api.xero.com/api.xro/2.0", "xero_tenant_id": "org-1", "short_code": "!abc",
                 "secrets": secrets},
        "quickbooks": {"base_url": "http://127.0.0.1:8712", "realm_id": "9130", "secrets": secrets},
        "hubspot": {"base_url": "https://api.hubapi.com", "secrets": {"access_token": "HS"},
                    "record_url": "https://app.hubspot.com/contacts/77/record/0-2/{id}"}}}}}))
    targets = link_targets(load_registry(path))
    assert targets[("acme-uk", "xero")].short_code == "!abc" and targets[("acme-uk", "xero")].base_url is None
    assert targets[("acme-uk", "quickbooks")] == AppTarget("http://127.0.0.1:8712", "9130")
    assert record_url(targets, "acme-uk", "hubspot", "customer", "5") == \
        "https://app.hubspot.com/contacts/77/record/0-2/5"
    assert record_url(targets, "acme-uk", "xero", "invoice", "i").startswith(
        "https://go.xero.com/organisationlogin/default.aspx?shortcode=%21abc&")
