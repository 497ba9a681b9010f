"""The report in a real browser: Debian's Chromium, headless, driven by Playwright, offline. What a finance
person would see must be visible: the title, every tenant's section, the charts, an example with its reason."""

import os
import shutil
from pathlib import Path

import pytest

from assets.reports.assets import write_report
from assets.reports.screenshot import CHROMIUM, CHROMIUM_ARGS, can_screenshot
from connectors.registry import load_registry

pytestmark = pytest.mark.skipif(can_screenshot() is not None, reason=f"no browser: {can_screenshot()}")


@pytest.fixture
def page(planted, registry_path):
    from playwright.sync_api import sync_playwright

    built = write_report(planted, registry=load_registry(registry_path))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
            page = context.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(built.path.resolve().as_uri())
            page.requests = requests
            yield page
        finally:
            browser.close()


def test_the_report_renders_offline_with_every_tenant_chart_and_example_visible(page, tmp_path):
    assert page.title() == "Ledgerlink data-quality report"
    assert page.get_by_role("heading", name="Data-quality report").is_visible()
    for tenant in ("acme-uk", "globex-us"):
        section = page.locator(f"section#tenant-{tenant}")
        assert section.is_visible()
        assert section.get_by_role("heading", name=tenant, exact=True).is_visible()
        charts = section.locator("svg.chart")
        assert charts.count() == 4
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert charts.nth(i).is_visible() and box["width"] > 250 and box["height"] > 60
    assert page.locator("#chart-overview svg.chart").is_visible()

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


def test_the_page_prints(page, tmp_path):
    pdf = tmp_path / "data_quality.pdf"
    page.emulate_media(media="print")
    page.pdf(path=str(pdf), format="A4", print_background=True)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000
