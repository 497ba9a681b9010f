"""The quality checks in real Dagster runs (ephemeral instance, temporary warehouse): stand-in unified assets
write planted rows, the checks run after them, failing rows land in reconcile.quarantine with the check and
the reason, the metadata carries them, and the run goes on."""

from decimal import Decimal

import polars as pl
import pytest
import yaml
from dagster import (
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DagsterInstance,
    MaterializeResult,
    asset,
    materialize,
    multi_asset,
)

from assets.quality.asset_checks import CHECKS, QUALITY_CHECKS
from assets.quality.quarantine import QUARANTINE
from assets.resources import Ledgerlink
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, replace_tables

TABLES = ("customers", "invoices", "invoice_lines", "credit_notes", "credit_note_lines", "payments", "products",
          "tax_codes")
SETTINGS = {
    "acme-uk": {"home_currency": "GBP", "tax_codes": {"cat-std": "2", "cat-ghost": "999"},
                "fallback_tax_code": "2", "items": {"prod-platform": {"item_id": "5", "account_code": "4000"}}},
    "globex-us": {"home_currency": "USD", "tax_codes": {"cat-saas": "TAX"}, "items": {}},
}


def customer(tenant, app, id, **fields):
    return {"tenant": tenant, "app": app, "id": id, "name": f"Customer {id}", "email": f"ap-{id}@example.com",
            "line1": "1 Wharf Road", "city": "London", "postal_code": "N1 7GR", "country": "GB", "active": True,
            **fields}


def clean_rows() -> dict[str, list[dict]]:
    def line(app, document_id, id, amount, **fields):
        return {"tenant": "acme-uk", "app": app, "document_id": document_id, "id": id, "position": 0,
                "amount": Decimal(amount), **fields}

    def document(app, id, net, **fields):
        return {"tenant": "acme-uk", "app": app, "id": id, "status": "OPEN", "currency": "GBP",
                "net_total": Decimal(net), "billing_email": "ap@quill.example", **fields}

    return {
        "customers": [customer("acme-uk", "sequence", "s1", links=[{"app": "quickbooks", "app_id": "7"}]),
                      customer("acme-uk", "quickbooks", "7"),
                      customer("globex-us", "sequence", "g1", country="US", postal_code="10001",
                               links=[{"app": "quickbooks", "app_id": "3"}]),
                      customer("globex-us", "quickbooks", "3", country="US", postal_code="10001")],
        "invoices": [document("sequence", "inv-1", "100.00"), document("quickbooks", "161", "100.00")],
        "invoice_lines": [line("sequence", "inv-1", "l1", "60.004", tax_category_id="cat-std"),
                          line("sequence", "inv-1", "l2", "39.996"),
                          line("quickbooks", "161", "1", "100", tax_code="2"),
                          {**line("quickbooks", "40", "1", "10", tax_code="TAX"), "tenant": "globex-us"}],
        "credit_notes": [document("sequence", "cn-1", "25.50")],
        "credit_note_lines": [line("sequence", "cn-1", "c1", "25.50")],
        "payments": [{"tenant": "acme-uk", "app": "quickbooks", "id": "p1", "amount": Decimal("100"),
                      "currency": "GBP"}],
        "products": [{"tenant": "acme-uk", "app": "quickbooks", "id": "5", "name": "Platform fee", "active": True},
                     {"tenant": "acme-uk", "app": "sequence", "id": "prod-platform", "name": "Platform fee",
                      "active": True}],
        "tax_codes": [{"tenant": "acme-uk", "app": "quickbooks", "id": "2", "name": "20.0% S", "active": True},
                      {"tenant": "acme-uk", "app": "sequence", "id": "cat-std", "name": "Standard", "active": True},
                      {"tenant": "globex-us", "app": "sequence", "id": "cat-saas", "name": "SaaS", "active": True}],
    }


def planted_rows() -> dict[str, list[dict]]:
    """The clean rows plus one bad row for every check."""
    rows = clean_rows()
    rows["customers"] += [
        customer("acme-uk", "quickbooks", "20", email=None, postal_code=None),  # would be imported: blocking
        customer("acme-uk", "quickbooks", "21", country="IE", country_as_sent="Ireland"),
        customer("acme-uk", "sequence", "s-archived", city=None, active=False),  # never created: a warning
        customer("acme-uk", "quickbooks", "23", currency="XXX-not-iso"),
    ]
    rows["invoices"] += [
        {"tenant": "acme-uk", "app": "quickbooks", "id": "162", "status": "OPEN", "currency": "GBP",
         "net_total": Decimal("991.20"), "billing_email": "ap..x@quill.example"},
        {"tenant": "acme-uk", "app": "sequence", "id": "inv-xyz", "status": "DRAFT", "currency": "XYZ",
         "net_total": Decimal("0")},
    ]
    rows["invoice_lines"] += [
        {"tenant": "acme-uk", "app": "quickbooks", "document_id": "162", "id": "1", "position": 0,
         "amount": Decimal("991.19"), "tax_code": "999"},
    ]
    rows["products"] += [
        {"tenant": "acme-uk", "app": "quickbooks", "id": "3", "name": "Consulting", "active": True},
        {"tenant": "acme-uk", "app": "sequence", "id": "prod-consulting", "name": "Consulting", "active": True},
    ]
    rows["tax_codes"] += [
        {"tenant": "acme-uk", "app": "sequence", "id": "cat-ghost", "name": "Telecommunications", "active": True},
    ]
    return rows


def frames(make, rows: dict[str, list[dict]]) -> dict[str, pl.DataFrame]:
    # validate=False: planted rows include some a contract rejects (the checks are the safety net)
    return {f"unified.{table}": make(table, rows.get(table, []), validate=False) for table in TABLES}


def standin_unified(tables: dict[str, pl.DataFrame]):
    """Plays assets/unified: writes the given unified tables, one asset per table, in one transaction."""

    @multi_asset(specs=[AssetSpec(AssetKey(["unified", t])) for t in TABLES], name="standin_unified",
                 pool=WAREHOUSE_POOL)
    def _unified(context: AssetExecutionContext, ledgerlink: Ledgerlink):
        replace_tables(ledgerlink.warehouse, tables)
        for table in TABLES:
            yield MaterializeResult(asset_key=AssetKey(["unified", table]))

    return _unified


@asset(key=AssetKey(["reconcile", "links"]), deps=[AssetKey(["unified", "customers"])])
def downstream_of_customers() -> None:
    """Stands for reconcile: depends on a table whose blocking check fails in the planted run."""


@asset(key=AssetKey(["reconcile", "mismatches"]), deps=[AssetKey(["unified", "payments"])])
def downstream_of_payments() -> None:
    """Depends on a table whose only check (currencies) passes."""


@pytest.fixture
def resource(tmp_path):
    registry = tmp_path / "connections.yaml"
    registry.write_text(yaml.safe_dump({"tenants": {t: {"settings": s} for t, s in SETTINGS.items()}}))
    return Ledgerlink(registry_path=str(registry), warehouse_path=str(tmp_path / "wh.duckdb"),
                      state_dir=str(tmp_path / "state"))


def run(resource, tables):
    return materialize([standin_unified(tables), downstream_of_customers, downstream_of_payments, *QUALITY_CHECKS],
                       instance=DagsterInstance.ephemeral(), resources={"ledgerlink": resource},
                       raise_on_error=False)


def evaluations(result) -> dict[str, object]:
    return {f"{e.asset_key.path[-1]}.{e.check_name}": e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def quarantine(resource) -> pl.DataFrame:
    with connect(resource.warehouse, read_only=True) as con:
        return read_table(con, QUARANTINE)


def test_failing_checks_carry_their_rows_quarantine_them_and_the_run_goes_on(make, resource):
    result = run(resource, frames(make, planted_rows()))
    checks = evaluations(result)
    # every check ran, though blocking ones failed before the others
    assert set(checks) == {c.check_id for c in CHECKS}

    failed = {name: e for name, e in checks.items() if not e.passed}
    assert set(failed) == {
        "customers.addresses_complete", "customers.emails_valid", "customers.currencies_iso4217",
        "invoices.totals_match_lines", "invoices.emails_valid", "invoices.currencies_iso4217",
        "invoice_lines.tax_codes_resolvable", "tax_codes.tax_categories_mapped", "products.item_names_unique",
    }
    severity = {name: e.severity for name, e in failed.items()}
    assert {n for n, s in severity.items() if s == AssetCheckSeverity.ERROR} == {
        "customers.addresses_complete", "invoices.totals_match_lines", "invoice_lines.tax_codes_resolvable",
        "tax_codes.tax_categories_mapped", "products.item_names_unique"}

    addresses = failed["customers.addresses_complete"].metadata
    assert addresses["failing_rows"].value == 3 and addresses["blocking_rows"].value == 2
    examples = addresses["examples"].value
    assert examples.startswith("| tenant | app | id | field | reason |")
    assert "| acme-uk | quickbooks | 21 | billing_address.country | country 'Ireland' is not an ISO 3166-1" in examples
    assert "s-archived" in examples  # the warning row is listed too, after the blocking ones
    totals = failed["invoices.totals_match_lines"].metadata["examples"].value
    assert "| 162 | net_total | net total 991.20 GBP differs from the sum of its 1 line, 991.19 GBP |" in totals

    # failing rows are quarantined, one set per check, with the check and the reason
    held = quarantine(resource)
    per_check = dict(held.group_by("check").len().iter_rows())
    assert per_check == {name: e.metadata["failing_rows"].value for name, e in failed.items()}
    row = held.filter(pl.col("check") == "products.item_names_unique").row(0, named=True)
    assert (row["tenant"], row["app"], row["entity"], row["id"], row["field"]) == (
        "acme-uk", "sequence", "product", "prod-consulting", "name")
    assert "creating its item would fail" in row["reason"] and row["detected_at"] is not None

    # the run goes on: only the blocking failures fail steps, downstream of a failing table waits, the rest ran
    failures = result.get_step_failure_events()
    assert {f.step_failure_data.error.cls_name for f in failures} == {"DagsterAssetCheckFailedError"}
    assert len(failures) == 5
    assert "reconcile/mismatches" in materialized(result)
    assert "reconcile/links" not in materialized(result)


def test_clean_tables_pass_blocking_checks_clear_stale_quarantine_and_warnings_do_not_stop_the_run(make, resource):
    rows = clean_rows()
    rows["invoices"][0]["billing_email"] = "ap@@quill.example"  # the only problem: a warning
    replace_tables(resource.warehouse, {QUARANTINE: pl.DataFrame({
        "tenant": ["acme-uk", "acme-uk"], "app": ["quickbooks", "quickbooks"], "entity": ["product", "invoice"],
        "id": ["3", "9"], "check": ["products.item_names_unique", "someone_else.check"], "field": ["name", "x"],
        "reason": ["stale", "not ours"], "detected_at": [None, None]},
        schema_overrides={"detected_at": pl.Datetime("us", "UTC")})})

    result = run(resource, frames(make, rows))
    assert result.success
    checks = evaluations(result)
    assert [name for name, e in checks.items() if not e.passed] == ["invoices.emails_valid"]
    assert checks["invoices.emails_valid"].severity == AssetCheckSeverity.WARN
    assert checks["products.item_names_unique"].metadata["failing_rows"].value == 0
    assert {"reconcile/links", "reconcile/mismatches"} <= materialized(result)

    held = quarantine(resource)
    assert sorted(held["check"]) == ["invoices.emails_valid", "someone_else.check"]
    assert held.filter(pl.col("check") == "invoices.emails_valid")["reason"].to_list() == [
        "'ap@@quill.example' is not a valid email address"]


def test_every_check_targets_a_unified_asset_and_takes_the_warehouse_pool():
    # dagster 1.13 takes `pool=` on @asset_check: the checks write reconcile.quarantine
    for definition in QUALITY_CHECKS:
        assert definition.node_def.pool == WAREHOUSE_POOL
        [key] = definition.check_keys
        assert key.asset_key.path[0] == "unified"
    blocking = {c.check_id for c in CHECKS if c.blocking}
    assert blocking == {"customers.addresses_complete", "invoices.totals_match_lines",
                        "credit_notes.totals_match_lines", "invoice_lines.tax_codes_resolvable",
                        "credit_note_lines.tax_codes_resolvable", "tax_codes.tax_categories_mapped",
                        "products.item_names_unique"}
