"""The unified assets end to end: the generated demo fixtures extracted from the emulators into a temporary
warehouse, then the unified model materialized by Dagster from that raw layer and checked against the fixture
and the contracts."""

from datetime import datetime

import duckdb
import polars as pl
import pytest

from assets.unified.build import QUARANTINE
from checks.unified import INSTANT, MODEL


@pytest.fixture(scope="module")
def unified_run(extraction):
    extraction.extract_all()
    result = extraction.run_unified()
    return extraction, result


def read(ext, table: str) -> pl.DataFrame:
    with duckdb.connect(str(ext.warehouse), read_only=True) as con:
        frame = con.sql(f"select * from unified.{table}").pl()
    # DuckDB hands instants over in its session's zone: the same instants, named UTC for the contract
    return frame.with_columns(pl.col(c).dt.convert_time_zone("UTC").cast(INSTANT)
                              for c, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime))


def of(frame: pl.DataFrame, tenant: str, app: str) -> pl.DataFrame:
    return frame.filter((pl.col("tenant") == tenant) & (pl.col("app") == app))


def planted(ext, tenant: str, **match) -> list[dict]:
    return [d for d in ext.manifest["discrepancies"]
            if d["tenant"] == tenant and all(d[k] == v for k, v in match.items())]


def test_every_table_is_written_and_holds_its_contract(unified_run):
    ext, result = unified_run
    assert result.success
    for table, schema in MODEL.items():
        frame = read(ext, table)
        schema.validate(frame, lazy=True)
        if table not in ("custom_fields",):
            assert frame.height > 0, table
    assert read(ext, "quarantine").schema == pl.Schema(QUARANTINE)


def test_sequence_counts_equal_the_fixture_less_what_was_quarantined(unified_run):
    ext, _ = unified_run
    invoices, lines, quarantine = read(ext, "invoices"), read(ext, "invoice_lines"), read(ext, "quarantine")
    customers, products, tax_codes = read(ext, "customers"), read(ext, "products"), read(ext, "tax_codes")
    credit_notes, credit_note_lines = read(ext, "credit_notes"), read(ext, "credit_note_lines")
    for tenant in ext.registry.tenants:
        records = ext.fixture_records(tenant, "sequence", "invoices")
        refused = {d["sequence_id"] for d in planted(ext, tenant, kind="invalid", app="sequence")}
        assert refused and refused <= {r["id"] for r in records}
        assert set(of(invoices, tenant, "sequence")["id"]) == {r["id"] for r in records} - refused
        held = of(quarantine, tenant, "sequence")
        assert set(held.filter(pl.col("entity") == "invoice")["id"]) == refused
        fixture_lines = ext.fixture_records(tenant, "sequence", "line-items")
        kept_lines = [r for r in fixture_lines if r["invoiceId"] not in refused]
        assert of(lines, tenant, "sequence").height == len(kept_lines)
        assert held.filter(pl.col("check") == "document_quarantined").height == len(fixture_lines) - len(kept_lines)
        for table, frame in (("customers", customers), ("products", products), ("tax-categories", tax_codes),
                             ("credit-notes", credit_notes), ("credit-note-line-items", credit_note_lines)):
            assert of(frame, tenant, "sequence").height == len(ext.fixture_records(tenant, "sequence", table)), table


def test_quickbooks_counts_equal_the_fixture_less_the_refused_records(unified_run):
    ext, _ = unified_run
    invoices, lines, quarantine = read(ext, "invoices"), read(ext, "invoice_lines"), read(ext, "quarantine")
    for tenant in ext.registry.tenants:
        records = ext.fixture_records(tenant, "quickbooks", "invoice")
        refused = planted(ext, tenant, kind="invalid", app="quickbooks")
        loaded = [r for r in records if r.get("Id") and r["Id"] not in {d["app_id"] for d in refused}]
        assert len(loaded) == len(records) - len(refused)
        assert set(of(invoices, tenant, "quickbooks")["id"]) == {r["Id"] for r in loaded}
        sales_lines = sum(1 for r in loaded for line in r["Line"] if line["DetailType"] == "SalesItemLineDetail")
        assert of(lines, tenant, "quickbooks").height == sales_lines
        # the refused records are in quarantine with the raw field names the manifest uses (Id, TotalAmt)
        held = of(quarantine, tenant, "quickbooks").filter(pl.col("check") == "extract")
        assert sorted(held["field"]) == sorted(d["field"] for d in refused)
        for name, table in (("customer", "customers"), ("item", "products"), ("taxcode", "tax_codes"),
                            ("account", "accounts"), ("payment", "payments"), ("creditmemo", "credit_notes")):
            assert of(read(ext, table), tenant, "quickbooks").height == \
                len(ext.fixture_records(tenant, "quickbooks", name)), name


def test_every_linked_sequence_customer_names_its_quickbooks_twin(unified_run):
    ext, _ = unified_run
    customers = read(ext, "customers")
    for tenant in ext.registry.tenants:
        expected = {r["id"]: i["id"] for r in ext.fixture_records(tenant, "sequence", "customers")
                    for i in r.get("integrationIds", []) if i["service"] == "QuickBooks_Online"}
        assert expected
        sequence = of(customers, tenant, "sequence").explode("links").filter(pl.col("links").is_not_null())
        got = {row["id"]: row["links"]["app_id"] for row in sequence.to_dicts() if row["links"]["app"] == "quickbooks"}
        assert got == expected
        assert set(got.values()) <= set(of(customers, tenant, "quickbooks")["id"])


def test_documents_and_lines_follow_the_seed_rules(unified_run):
    ext, _ = unified_run
    invoices, lines = read(ext, "invoices"), read(ext, "invoice_lines")
    for tenant in ext.registry.tenants:
        # QuickBooks descriptions were written by the integration as "[group]: [line]": unified Sequence lines say
        # the same for every linked line that was not planted to differ
        qbo = of(lines, tenant, "quickbooks").select(pl.concat_str("document_id", pl.lit("-"), "id").alias("key"),
                                                     pl.col("description").alias("qbo"))
        seq = of(lines, tenant, "sequence").explode("links").filter(pl.col("links").is_not_null()).select(
            pl.col("links").struct.field("app_id").alias("key"), "description")
        pairs = seq.join(qbo, on="key", how="inner", validate="1:1")
        differs = pairs.filter(pl.col("description") != pl.col("qbo")).height
        assert pairs.height > 0 and differs == len(planted(ext, tenant, app="quickbooks", field="line.description"))
        # voided in QuickBooks -> VOID; Sequence statuses in the model's words
        voided = {r["Id"] for r in ext.fixture_records(tenant, "quickbooks", "invoice")
                  if r.get("PrivateNote") == "Voided" and r.get("Id")}
        qbo_invoices = of(invoices, tenant, "quickbooks")
        assert set(qbo_invoices.filter(pl.col("status") == "VOID")["id"]) == voided
        assert set(of(invoices, tenant, "sequence")["status"]) == {"DRAFT", "OPEN", "PAID", "VOID"}
        # MetaData times carry US Pacific offsets; the model holds the same instants in UTC
        record = next(r for r in ext.fixture_records(tenant, "quickbooks", "invoice") if r.get("Id"))
        created = qbo_invoices.filter(pl.col("id") == record["Id"])["created_at"].item()
        assert created == datetime.fromisoformat(record["MetaData"]["CreateTime"])


def test_a_quickbooks_country_name_is_normalised_and_its_text_kept_for_the_import_check(unified_run):
    ext, _ = unified_run
    customers = read(ext, "customers")
    for tenant in ext.registry.tenants:
        (plant,) = planted(ext, tenant, app="quickbooks", kind="not_importable", field="billing_address.country")
        row = of(customers, tenant, "quickbooks").filter(pl.col("id") == plant["app_id"]).to_dicts()[0]
        assert len(row["country"]) == 2 and row["country_as_sent"] and row["country_as_sent"] in plant["detail"]


def test_materializations_report_rows_per_table_and_tenant_and_quarantined_counts(unified_run):
    ext, result = unified_run
    metadata = {e.event_specific_data.materialization.asset_key.path[-1]: e.event_specific_data.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert set(metadata) == set(MODEL) | {"quarantine"}
    for table in MODEL:
        assert metadata[table]["rows"].value == read(ext, table).height
        assert all(tenant in metadata[table]["rows_by_tenant"].value for tenant in ext.registry.tenants)
    assert metadata["quarantine"]["rows"].value == read(ext, "quarantine").height
    assert metadata["invoice_lines"]["quarantined"].value > 0  # the lines of the refused Sequence invoices
