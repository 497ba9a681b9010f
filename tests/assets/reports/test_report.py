"""The data-quality report: the model from planted reconciliation results (QuickBooks and Xero), the words and
links it uses, the HTML written under the warehouse's folder, the Dagster asset's metadata and `ledgerlink report`.
Trend shaping and the link builders have their own tests in test_trends.py and test_links.py."""

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, materialize

from assets.reports.assets import REPORT_ASSETS, default_report_path, read_inputs, write_report
from assets.reports.report import (
    KINDS,
    AppTarget,
    Inputs,
    action_label,
    build_report,
    field_label,
    kind_label,
    quickbooks_url,
    record_url,
    sequence_url,
    summary_lines,
)
from assets.resources import Ledgerlink
from connectors.registry import load_registry

from tests.assets.reports.conftest import RUN_AT, XERO_CREDIT_NOTE

NOW = datetime(2025, 7, 1, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def report(planted, registry_path):
    from assets.reports.assets import connected, link_targets

    registry = load_registry(registry_path)
    return build_report(read_inputs(planted, link_targets(registry), connected(registry)), generated_at=NOW,
                        examples_per_kind=2)


def rows(report, tenant):
    t = next(t for t in report.tenants if t.tenant == tenant)
    return {(a.app, a.entity): (a.sequence_records, a.app_records, a.compared, a.agree, a.disagree, a.noted)
            for a in t.agreement}, t


def test_per_tenant_app_and_entity_it_counts_records_that_agree_disagree_or_are_only_noted(report):
    acme, t = rows(report, "acme-uk")
    # (in Sequence, in the app, compared, agree, need attention, noted)
    assert acme == {
        # 5 Sequence invoices named by mismatches (one only noted: a Stripe-link payment), 1 QuickBooks-only
        ("quickbooks", "invoice"): (10, 9, 11, 5, 5, 1),
        ("quickbooks", "customer"): (4, 5, 5, 2, 3, 0),
        # the same Sequence records compared with Xero, the tenant's second accounting system
        ("xero", "invoice"): (10, 9, 10, 7, 3, 0),
        ("xero", "customer"): (4, 4, 4, 3, 1, 0),
        ("xero", "credit_note"): (2, 3, 3, 2, 1, 0),  # one Xero-only credit note
        # Sequence's own invalid invoice: nothing to agree with
        ("sequence", "invoice"): (None, None, 1, None, 1, 0),
    }
    assert (t.compared, t.agree, t.disagree, t.noted) == (34, 19, 14, 1)
    globex, _ = rows(report, "globex-us")
    assert globex == {("quickbooks", "invoice"): (6, 6, 6, 5, 1, 0), ("quickbooks", "product"): (3, 4, 3, 2, 1, 0),
                      ("quickbooks", "tax_category"): (2, 3, 2, 1, 1, 0)}
    assert report.kind_counts["field_differs"] == 7 and report.kind_counts["importable"] == 0
    assert set(KINDS) <= set(report.kind_counts) and report.mismatch_rows == 19
    assert report.app_kind_counts["xero"]["field_differs"] == 2 and report.app_kind_counts["xero"]["invalid"] == 0
    assert "hubspot" not in report.app_kind_counts  # connected, not reconciled: nothing to count yet


def test_every_connected_app_of_the_registry_is_listed_even_before_it_is_compared(report):
    _, acme = rows(report, "acme-uk")
    assert [(a.app, a.compared, a.agree, a.disagree, a.reconciled, a.last_status) for a in acme.apps] == [
        ("quickbooks", 16, 7, 8, True, "success"), ("xero", 17, 12, 5, True, "failed")]
    _, globex = rows(report, "globex-us")
    assert [(a.app, a.reconciled, a.last_sync) for a in globex.apps] == [("quickbooks", True, RUN_AT.replace(hour=18)),
                                                                         ("hubspot", False, None)]


def test_reasons_fields_and_examples_speak_plain_language_and_link_to_the_records(report):
    _, acme = rows(report, "acme-uk")
    reasons = {(r.label, r.entity): r.records for r in acme.reasons}
    # two apps: a reason says which one unless its words already do
    assert reasons[("Details differ (QuickBooks)", "invoice")] == 2
    assert reasons[("Details differ (Xero)", "invoice")] == 1
    assert reasons[("Missing in QuickBooks", "invoice")] == 1 and reasons[("Missing in Xero", "invoice")] == 1
    assert {f.label: f.count for f in acme.fields} == {"Due date": 2, "Message on invoice": 1, "Line rate": 1,
                                                        "Name": 2, "Payment status": 2}
    groups = {(g.app, g.kind): g for g in acme.examples}
    # app by app: QuickBooks' to-do lists, then Xero's, then Sequence's own data
    assert [g.app for g in acme.examples] == ["quickbooks"] * 7 + ["xero"] * 4 + ["sequence"]
    details = groups[("quickbooks", "field_differs")]
    assert details.total == 4 and len(details.examples) == 2  # capped, one per field before repeating
    assert len({e.field for e in details.examples}) == 2
    paid = groups[("quickbooks", "status_differs")].examples[0]
    assert (paid.sequence_value, paid.app_value, paid.action) == ("UNPAID", "PAID", "Mark paid in Sequence")
    assert paid.reason.startswith("QuickBooks invoice 163 is paid")
    # QuickBooks is a sandbox in the registry: its emulator; Sequence is real: its dashboard
    assert paid.app_url == "http://127.0.0.1:8712/v3/company/realm-acme-uk/invoice/163"
    assert paid.sequence_url == "https://dashboard.sequencehq.com/invoices/seq-inv-3"
    assert groups[("quickbooks", "stripe_link_ignored")].examples[0].action == "Nothing to do"
    assert groups[("quickbooks", "missing_in_sequence")].examples[0].sequence_id is None
    # Xero is a real organisation in the registry: its web app, in the tenant's organisation
    xero_paid = groups[("xero", "status_differs")]
    assert (xero_paid.label, xero_paid.app_says) == ("Paid / void status differs", "Xero says")
    assert xero_paid.examples[0].app_url == (
        "https://go.xero.com/organisationlogin/default.aspx?shortcode=%21mBdtL"
        "&redirecturl=/AccountsReceivable/View.aspx%3FInvoiceID%3D9a1c2e44-0d5b-4f7e-8a63-1b2c3d4e5f60")
    assert groups[("xero", "missing_in_app")].label == "Missing in Xero"
    credit = groups[("xero", "missing_in_sequence")].examples[0]
    assert "ViewCreditNote.aspx%3FcreditNoteID%3D" + XERO_CREDIT_NOTE in credit.app_url
    # since when each difference is open: the log's open interval, not the earlier closed one
    due = next(e for e in groups[("xero", "field_differs")].examples if e.field == "Due date")
    assert due.since == RUN_AT - timedelta(days=2) and groups[("xero", "field_differs")].oldest == due.since
    assert paid.since == RUN_AT - timedelta(days=3)
    assert [q.check for q in acme.quarantine] == ["Incomplete address", "Extract"]
    assert acme.quarantine_total == 2 and {q.source for q in acme.quarantine} == {"data check", "contract"}
    assert len(acme.trend) == 8 and report.has_history and report.runs == 4
    assert {p.series for p in acme.trend_apps} == {"QuickBooks", "Xero"}


def test_words_for_kinds_fields_and_actions():
    assert kind_label("missing_in_app", "quickbooks") == "Missing in QuickBooks"
    assert kind_label("brand_new_kind") == "Brand new kind"
    assert field_label("billing_address.postal_code") == "Postal code"
    assert field_label("line.discount") == "Line › discount"
    assert action_label("create_in_app", "quickbooks") == "Create in QuickBooks"
    assert action_label(None) == "Review by hand"


def test_one_small_link_builder_per_app():
    real, sandbox = AppTarget(), AppTarget("http://127.0.0.1:8711/", None)
    assert sequence_url("customer", "c-1", real) == "https://dashboard.sequencehq.com/customers/c-1"
    assert sequence_url("credit_note", "cn 1", real) == "https://dashboard.sequencehq.com/credit-notes/cn%201"
    assert sequence_url("invoice", "i-1", sandbox) == "http://127.0.0.1:8711/invoices/i-1"
    assert sequence_url("tax_category", "t", real) is None
    assert quickbooks_url("invoice", "161", real) == "https://app.qbo.intuit.com/app/invoice?txnId=161"
    assert quickbooks_url("customer", "7", real) == "https://app.qbo.intuit.com/app/customerdetail?nameId=7"
    assert quickbooks_url("credit_note", "9", AppTarget("http://127.0.0.1:8712", "42")) == \
        "http://127.0.0.1:8712/v3/company/42/creditmemo/9"
    assert record_url({}, "acme-uk", "xero", "invoice", "1") == \
        "https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID=1"
    assert record_url({}, "acme-uk", "hubspot", "customer", "1") is None  # no builder, no template: no link
    assert record_url({}, "acme-uk", "quickbooks", "invoice", None) is None


def test_without_reconcile_tables_the_report_says_so_instead_of_claiming_agreement(tmp_path):
    counts = pl.DataFrame({"tenant": ["acme-uk"], "app": ["sequence"], "entity": ["invoice"], "records": [10]})
    built = build_report(Inputs(mismatches=pl.DataFrame(), links=pl.DataFrame(), counts=counts,
                                quarantine=pl.DataFrame(), reconciled=False), generated_at=NOW)
    assert not built.reconciled and built.compared == 0
    assert summary_lines(built)[0].startswith("not reconciled yet")


def test_the_report_is_one_self_contained_page_under_the_warehouse_folder(planted, registry_path):
    built = write_report(planted, registry=load_registry(registry_path), now=NOW)
    assert built.path == planted.parent / "reports" / "data_quality.html" == default_report_path(planted)
    html = built.path.read_text()
    assert "<title>Ledgerlink data-quality report</title>" in html
    assert 'id="tenant-acme-uk"' in html and 'id="tenant-globex-us"' in html
    # charts are inline SVG: overview and trend by app; per tenant agreement, reasons, fields, trend by reason,
    # trend by app (not for globex-us: one app) and syncs
    assert html.count("<svg") == 2 + 6 + 5
    assert "<script" not in html and not re.search(
        r"""(src|href)=["']https?://(?!dashboard\.sequencehq|127\.0|go\.xero\.com/)""", html)
    assert 'href="https://go.xero.com/organisationlogin/default.aspx?shortcode=%21mBdtL&amp;redirecturl=' in html
    assert "QuickBooks invoice 163 is paid (Balance 0); Sequence is UNPAID." in html
    assert 'href="http://127.0.0.1:8712/v3/company/realm-acme-uk/invoice/163"' in html
    assert "01 Jul 2025, 09:30 UTC" in html and "30 Jun 2025, 17:00 UTC" in html  # run and reconcile times


@pytest.fixture
def no_charts(monkeypatch):
    """For tests about numbers and files, not drawings: every chart costs vl-convert a third of a second (the page
    test and the browser test draw them all)."""
    monkeypatch.setattr("assets.reports.charts.draw_charts", lambda report: {})


def test_the_dagster_asset_writes_the_page_and_reports_counts_as_metadata(planted, registry_path, tmp_path,
                                                                          no_charts):
    resource = Ledgerlink(warehouse_path=str(planted), registry_path=str(registry_path),
                          state_dir=str(tmp_path / "state"))
    result = materialize(REPORT_ASSETS, instance=DagsterInstance.ephemeral(), resources={"ledgerlink": resource})
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.asset_key.path == ["reports", "data_quality_report"]
    metadata = event.materialization.metadata
    assert Path(metadata["path"].value) == default_report_path(planted).resolve()
    assert default_report_path(planted).exists()
    assert metadata["mismatches_field_differs"].value == 7
    assert metadata["mismatches_importable"].value == 0  # every kind, so the UI plots each one's history
    assert metadata["mismatches_total"].value == 19 and metadata["quarantined_rows"].value == 3
    assert metadata["records_need_attention"].value == 17
    # per app, and per app and kind (zeros too), so the UI plots each app's history
    assert metadata["mismatches_app_xero"].value == 5 and metadata["mismatches_app_quickbooks"].value == 13
    assert metadata["mismatches_xero_field_differs"].value == 2 and metadata["mismatches_xero_importable"].value == 0
    assert metadata["records_need_attention_xero"].value == 5
    assert not any(key.startswith("mismatches_hubspot") for key in metadata)
    assert metadata["sync_connections_failing"].value == 1
    assert "| acme-uk | 34 | 19 | 14 | 1 | 2 |" in metadata["summary"].value
    assert "Mismatches by app: QuickBooks 13, Sequence's own data 1, Xero 5" in metadata["summary"].value


def test_ledgerlink_report_prints_where_the_page_is_and_a_summary_per_tenant(planted, registry_path, tmp_path,
                                                                             monkeypatch, no_charts):
    from pipelines.cli import main

    monkeypatch.setenv("LEDGERLINK_REGISTRY", str(registry_path))
    out = tmp_path / "elsewhere" / "dq.html"
    result = CliRunner().invoke(main, ["report", "--warehouse", str(planted), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"report: {out}")
    assert "acme-uk: 34 records compared, 19 agree (55.9 %), 14 need attention, 1 noted, 2 quarantined" in lines[1]
    assert lines[2].startswith("    why: Details differ (QuickBooks) 3, Details differ (Xero) 2")
    assert lines[3] == "    apps: QuickBooks 7/16 agree, Xero 12/17 agree (last sync failed)"
    assert "  apps: QuickBooks 8/11 agree, HubSpot not compared yet" in result.output
    assert out.exists()
    missing = CliRunner().invoke(main, ["report", "--warehouse", str(tmp_path / "none.duckdb")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
