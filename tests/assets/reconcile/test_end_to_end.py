"""Demo fixtures with planted discrepancies -> sandbox -> extraction -> unified -> reconcile, through real Dagster
materializations: every planted discrepancy is found with its kind, entity, field and ids, and nothing else is."""

import duckdb
import polars as pl
import pytest

from assets.reconcile.assets import RECONCILED_APPS
from connectors.sandbox.demo_data import generate

KEY = ["tenant", "app", "entity", "kind", "field", "sequence_id", "app_id"]


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    # overrides tests/conftest.py's fixture_dir: the `extraction` fixture there serves these
    root = tmp_path_factory.mktemp("planted")
    generate(root, invoices=300, seed=7, tenants=3, discrepancies=True)
    return root


@pytest.fixture(scope="module")
def run(extraction, reconciled):
    tables = reconciled
    result = tables["result"]
    mismatches, links = tables["mismatches"], tables["links"]
    # only the apps reconciliation covers (accounting apps and CRMs)
    covered = [d for d in extraction.manifest["discrepancies"]
               if d["app"] in RECONCILED_APPS or d["app"] == "sequence"]
    planted = pl.DataFrame(covered).select(*KEY, "detail")
    return extraction, result, mismatches, links, planted


def test_every_planted_discrepancy_is_found_with_its_kind_entity_field_and_ids(run):
    _, _, mismatches, _, planted = run
    missed = planted.join(mismatches, on=KEY, how="anti", nulls_equal=True)
    assert missed.height == 0, f"not found:\n{missed.to_dicts()}"
    assert planted.height > 150  # every kind the generator plants, in three tenants


def test_nothing_is_reported_that_was_not_planted(run):
    _, _, mismatches, _, planted = run
    extra = mismatches.join(planted, on=KEY, how="anti", nulls_equal=True)
    assert extra.height == 0, f"reported but not planted:\n{extra.select(*KEY, 'reason').to_dicts()}"


def test_legitimate_differences_are_not_mismatches(run):
    ext, _, mismatches, _, planted = run
    # merchant email on sent invoices, the tenant's invoice-date preference: only the planted rows
    for field in ("billing_email", "invoice_date"):
        reported = mismatches.filter((pl.col("entity") == "invoice") & (pl.col("field") == field))
        assert reported.height == planted.filter((pl.col("entity") == "invoice") & (pl.col("field") == field)).height
    # voided on both sides: QuickBooks keeps the lines at zero amounts, Qty 0 and "Voided"; nothing is reported
    with duckdb.connect(str(ext.warehouse), read_only=True) as con:
        invoices = con.sql("select tenant, app, id, status, links from unified.invoices").pl()
    twins = (invoices.filter((pl.col("app") == "sequence") & (pl.col("status") == "VOID"))
             .explode("links").filter(pl.col("links").is_not_null())
             .select("tenant", pl.col("id").alias("sequence_id"), pl.col("links").struct.field("app"),
                     pl.col("links").struct.field("app_id")))
    voided = twins.join(invoices.filter(pl.col("status") == "VOID").select("tenant", "app", pl.col("id").alias("app_id")),
                        on=["tenant", "app", "app_id"], how="semi")
    assert set(voided["app"]) == {"quickbooks", "xero"}  # both accounting systems have such pairs
    about_voided = mismatches.join(voided, on=["tenant", "app", "sequence_id"], how="semi")
    assert about_voided.height == 0


def test_actions_follow_the_seed(run):
    _, _, mismatches, _, _ = run
    actions = dict(mismatches.group_by("kind").agg(pl.col("proposed_action").unique().sort()).iter_rows())
    assert actions["stripe_link_ignored"] == ["none"]  # Stripe decides: never a mark-paid write
    assert actions["missing_in_app"] == ["create_in_app"]
    assert actions["importable"] == ["import_to_sequence"]
    assert actions["unlinked_candidate"] == ["link"]  # unique both ways in the demo data: proposed, not linked
    assert set(actions["status_differs"]) == {"mark_paid_in_sequence", "review", "void_in_app"}
    assert actions["tax_code_unresolved"] == ["fix_settings"]
    assert actions["product_unmapped"] == ["create_item"] and actions["item_account_differs"] == ["update_item"]


def test_candidates_are_proposed_not_linked(run):
    _, _, mismatches, links, _ = run
    proposed = mismatches.filter(pl.col("kind") == "unlinked_candidate").select("tenant", "sequence_id", "app_id")
    assert proposed.height > 0
    assert links.join(proposed, on=["tenant", "sequence_id", "app_id"], how="semi").height == 0


def test_links_come_from_what_sequence_stores_and_the_settings(run):
    _, _, _, links, _ = run
    methods = dict(links.group_by("entity").agg(pl.col("method").unique().sort()).iter_rows())
    # customers: Sequence's integration ids, and the CRM companies' own Sequence customer id field
    assert methods == {"customer": ["app_field", "integration_id"], "invoice": ["linked_service"],
                       "credit_note": ["linked_service"], "invoice_line": ["external_id"],
                       "credit_note_line": ["external_id"], "product": ["settings"], "tax_category": ["settings"]}
    assert links.select("tenant", "app", "entity", "sequence_id", "app_id").is_duplicated().sum() == 0
    assert links["linked_at"].null_count() == 0


def test_reasons_name_the_record_and_values_are_text(run):
    _, _, mismatches, _, _ = run
    assert mismatches["reason"].null_count() == 0
    due = mismatches.filter((pl.col("entity") == "invoice") & (pl.col("field") == "due_date")).row(0, named=True)
    assert due["reason"].startswith("Invoice INV") and due["sequence_value"] in due["reason"]
    assert due["app_value"] in due["reason"] and " in Sequence but " in due["reason"]
    assert all(dtype == pl.String for dtype in mismatches.schema.values())


def test_metadata_counts_by_kind_for_the_ui(run):
    _, result, mismatches, links, _ = run
    events = {e.event_specific_data.materialization.asset_key.path[-1]: e.event_specific_data.materialization.metadata
              for e in result.get_asset_materialization_events()}
    meta = events["mismatches"]
    assert meta["mismatches_total"].value == mismatches.height
    for kind, n in mismatches.group_by("kind").len().iter_rows():
        assert meta[f"mismatches_{kind}"].value == n
    assert meta["mismatches_currency_differs"].value > 0 and "| tenant | app | entity | kind | rows |" in \
        meta["mismatches"].value
    assert events["links"]["links_total"].value == links.height
