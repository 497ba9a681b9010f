"""A clean demo company (both apps agree everywhere) reconciles to no mismatch at all: every legitimate
difference the seed describes (merchant email on sent invoices, the invoice-date preference, tax-code resolution,
default items, voided invoices at zero amounts, DRAFT and archived customers) is understood, not reported."""

import duckdb
import polars as pl
import pytest

from assets.reconcile.mismatches import ACTIONABLE_KINDS
from connectors.sandbox.demo_data import generate


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    # overrides tests/conftest.py's fixture_dir: the `extraction` fixture there serves these
    root = tmp_path_factory.mktemp("clean")
    generate(root, invoices=300, seed=7, tenants=3, discrepancies=False)
    return root


@pytest.fixture(scope="module")
def run(reconciled):
    tables = reconciled
    return tables["mismatches"], tables["links"], tables["mismatch_history"]


def test_a_clean_company_has_no_actionable_mismatch(run):
    mismatches, _, _ = run
    actionable = mismatches.filter(pl.col("kind").is_in(sorted(ACTIONABLE_KINDS)))
    assert actionable.height == 0, actionable.select("tenant", "entity", "kind", "field", "reason").to_dicts()
    assert mismatches.height == 0  # not even a negative control: nothing is paid in QuickBooks only


def test_every_synced_record_is_linked(run):
    _, links, _ = run
    counts = dict(links.group_by("entity").len().iter_rows())
    assert counts["customer"] > 0 and counts["invoice"] > 0 and counts["invoice_line"] > counts["invoice"]
    assert set(links["tenant"]) == {"acme-uk", "globex-us", "nordwind-de"}


def test_history_records_the_run_even_when_it_found_nothing(run):
    _, _, history = run
    assert set(history.columns) == {"tenant", "app", "kind", "count", "at"}
    # 3 QuickBooks + 2 Xero (UK and DE) + 4 CRMs (UK: HubSpot and Attio, US: Salesforce, DE: Attio)
    connections = history.select("tenant", "app").n_unique()
    assert connections == 9 and history.height == connections * history["kind"].n_unique()
    assert history["count"].sum() == 0
    assert history["at"].n_unique() == 1
