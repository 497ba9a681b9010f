"""The report in a real browser: Debian's Chromium, headless, driven by Playwright, offline. What a finance
person would see must be visible: the title, every tenant's section, the charts, an example with its reason, each
connected app (Xero beside QuickBooks, a CRM not compared yet), the trends over runs, the syncs, and since when a
difference is open."""

import os
import shutil
from pathlib import Path

import pytest

from assets.reports.assets import write_report
from assets.reports.screenshot import CHROMIUM, CHROMIUM_ARGS, can_screenshot
from connectors.registry import load_registry
from tests.assets.reports.conftest import plant, write_registry

pytestmark = pytest.mark.skipif(can_screenshot() is not None, reason=f"no browser: {can_screenshot()}")


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    """The page, built once for this module's tests (drawing its charts is the slow part)."""
    root = tmp_path_factory.mktemp("report")
    warehouse = root / "data" / "warehouse.duckdb"
    plant(warehouse)
    return write_report(warehouse, registry=load_registry(write_registry(root / "connections.yaml"))).path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, report_page):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report_page.resolve().as_uri())
        page.requests = requests
        yield page
    finally:
        context.close()


def test_the_report_renders_offline_with_every_tenant_chart_and_example_visible(page, tmp_path):
    assert page.title() == "Ledgerlink data-quality report"
    assert page.get_by_role("heading", name="Data-quality report").is_visible()
    for tenant, drawn in (("acme-uk", 6), ("globex-us", 5)):
        section = page.locator(f"section#tenant-{tenant}")
        assert section.is_visible()
        assert section.get_by_role("heading", name=tenant, exact=True).is_visible()
        charts = section.locator("svg.chart")
        # agreement, reasons, fields, trend by reason, trend by app (two apps only), syncs
        assert charts.count() == drawn
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert charts.nth(i).is_visible() and box["width"] > 250 and box["height"] > 60
    assert page.locator("#chart-overview svg.chart").is_visible()
    assert page.locator("#chart-trend svg.chart").is_visible()

    example = page.locator("section#tenant-acme-uk .kind[data-kind='status_differs'] tr.example").first
    assert example.is_visible()
    assert "QuickBooks invoice 163 is paid (Balance 0); Sequence is UNPAID." in example.inner_text()
    assert "Mark paid in Sequence" in example.inner_text()
    link = example.get_by_role("link", name="163")
    assert link.get_attribute("href") == "http://127.0.0.1:8712/v3/company/realm-acme-uk/invoice/163"
    assert page.locator("section#tenant-acme-uk table.quarantine").get_by_text("Incomplete address").is_visible()
    # nothing but the page itself was loaded
    assert [url for url in page.requests if not url.startswith("file://")] == []

    shot = tmp_path / "data_quality.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    # `make demo` / .ci/run keep a copy for people to look at
    if os.environ.get("LEDGERLINK_REPORT_SCREENSHOT"):
        target = Path(os.environ["LEDGERLINK_REPORT_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_xero_has_its_own_section_links_trends_and_syncs(page):
    acme = page.locator("section#tenant-acme-uk")
    # each connected app with its own agreement and last sync; a failing sync shows
    xero = acme.locator(".appcard[data-app='xero']")
    assert xero.is_visible() and "12 of 17 records agree" in xero.inner_text()
    assert "failed" in xero.inner_text()
    assert "7 of 16 records agree" in acme.locator(".appcard[data-app='quickbooks']").inner_text()
    hubspot = page.locator("section#tenant-globex-us .appcard[data-app='hubspot']")
    assert hubspot.is_visible() and "not compared with Sequence yet" in hubspot.inner_text()
    # Xero's rows in the agreement table
    table = acme.locator("table.agreement")
    for label in ("Xero · Invoices", "Xero · Customers", "Xero · Credit notes"):
        assert table.get_by_role("cell", name=label, exact=True).is_visible()

    # Xero's own to-do list, its records linked into the tenant's Xero organisation
    paid = acme.locator(".kind[data-app='xero'][data-kind='status_differs']")
    assert paid.get_by_role("heading", name="Paid / void status differs").is_visible()
    assert paid.get_by_role("columnheader", name="Xero says").is_visible()
    link = paid.get_by_role("link", name="9a1c2e44…")
    assert link.is_visible() and link.get_attribute("href") == (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode=%21mBdtL"
        "&redirecturl=/AccountsReceivable/View.aspx%3FInvoiceID%3D9a1c2e44-0d5b-4f7e-8a63-1b2c3d4e5f60")
    assert acme.locator(".kind[data-app='xero'][data-kind='missing_in_app']").get_by_role(
        "heading", name="Missing in Xero").is_visible()
    # since when: the Xero due date has differed for two days
    due = acme.locator(".kind[data-app='xero'][data-kind='field_differs'] tr.example").filter(has_text="Due date")
    assert due.locator("td.since").inner_text() == "28 Jun 2025"

    # trends: by reason and by app, Xero drawn as its own line
    by_app = acme.locator("figure.chart-trend-apps")
    assert by_app.locator("svg.chart").is_visible()
    assert by_app.locator("svg text", has_text="Xero").count() >= 1
    assert acme.locator("figure.chart-trend svg.chart").is_visible()
    change = acme.locator("table.changes tr[data-app='xero'][data-kind='field_differs']")
    assert change.is_visible() and "28 Jun 2025" in change.inner_text()

    # syncs per connection: the failed Xero sync and its error
    syncs = acme.locator("figure.chart-syncs")
    assert syncs.locator("svg text", has_text="1 failed").count() == 1
    row = acme.locator("table.syncs tr[data-app='xero']")
    assert row.is_visible() and "429" in row.inner_text() and "failed" in row.inner_text()


def test_the_page_prints(page, tmp_path):
    pdf = tmp_path / "data_quality.pdf"
    page.emulate_media(media="print")
    page.pdf(path=str(pdf), format="A4", print_background=True)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000
