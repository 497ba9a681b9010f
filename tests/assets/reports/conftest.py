"""A temporary warehouse with planted reconciliation results (the reconcile and unified tables as their
assets write them, until those assets run here) and a registry whose QuickBooks connection is a sandbox."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml

from assets.warehouse import replace_tables
from checks.unified import MODEL

RUN_AT = datetime(2025, 6, 30, 17, 0, tzinfo=timezone.utc)
QBO_SANDBOX = "http://127.0.0.1:8712"


def unified(table: str, tenant: str, app: str, n: int) -> pl.DataFrame:
    """n rows of a unified table (contract columns and types; the report only counts them)."""
    columns = {name: column.dtype.type for name, column in MODEL[table].columns.items()}
    required = {"active": True, "status": "OPEN", "currency": "GBP"}
    rows = [{"tenant": tenant, "app": app, "id": f"{app[:3]}-{table}-{i}",
             **{k: v for k, v in required.items() if k in columns}} for i in range(n)]
    return pl.DataFrame(rows, schema=columns) if rows else pl.DataFrame(schema=columns)


def mismatch(tenant, entity, kind, sequence_id, app_id, reason, *, field=None, sequence_value=None, app_value=None,
             action="review", app="quickbooks"):
    return {"tenant": tenant, "app": app, "entity": entity, "sequence_id": sequence_id, "app_id": app_id,
            "kind": kind, "field": field, "sequence_value": sequence_value, "app_value": app_value,
            "proposed_action": action, "reason": reason}


MISMATCHES = [
    # acme-uk invoices: 10 in Sequence, 9 in QuickBooks
    mismatch("acme-uk", "invoice", "field_differs", "seq-inv-1", "161", "Due date differs: Sequence 2025-08-01, "
             "QuickBooks 2025-08-15.", field="due_date", sequence_value="2025-08-01", app_value="2025-08-15",
             action="update_in_app"),
    mismatch("acme-uk", "invoice", "field_differs", "seq-inv-1", "161", "Memo differs.", field="memo",
             sequence_value="Thanks for your business", app_value="Thanks", action="update_in_app"),
    mismatch("acme-uk", "invoice", "field_differs", "seq-inv-2", "162", "Line 2 rate differs.", field="line.rate",
             sequence_value="1200.00", app_value="1250.00", action="update_in_app"),
    mismatch("acme-uk", "invoice", "status_differs", "seq-inv-3", "163", "QuickBooks invoice 163 is paid "
             "(Balance 0); Sequence is UNPAID.", field="payment_status", sequence_value="UNPAID", app_value="PAID",
             action="mark_paid_in_sequence"),
    mismatch("acme-uk", "invoice", "missing_in_app", "seq-inv-4", None, "SENT invoice INV00024 was never synced "
             "to QuickBooks.", action="create_in_app"),
    mismatch("acme-uk", "invoice", "stripe_link_ignored", "seq-inv-5", "165", "QuickBooks says paid, but the "
             "invoice has a Stripe payment link.", field="payment_status", action="none"),
    mismatch("acme-uk", "invoice", "missing_in_sequence", None, "170", "QuickBooks invoice 170 (DocNumber 1010) "
             "has no Sequence twin.", action="review"),
    mismatch("acme-uk", "invoice", "invalid", "seq-inv-x", None, "Sequence invoice has currency 'XYZ', which is "
             "not an ISO 4217 code.", field="currency", app="sequence"),
    # acme-uk customers: 4 and 5
    mismatch("acme-uk", "customer", "field_differs", "seq-cus-1", "6", "Name differs.", field="name",
             sequence_value="Quill Bio Ltd", app_value="Quill Bio", action="update_in_app"),
    mismatch("acme-uk", "customer", "not_importable", None, "22", "QuickBooks customer 'Maple Logistics Inc.' is "
             "not in Sequence and has no postal code.", field="billing_address.postal_code"),
    mismatch("acme-uk", "customer", "unlinked_candidate", "seq-cus-2", "16", "'Umber Payments B.V.' matches "
             "QuickBooks customer 16 by name and email.", action="link"),
    # globex-us: products and tax categories
    mismatch("globex-us", "product", "item_name_not_unique", "seq-prod-1", "3", "Product 'Consulting' is unmapped "
             "and a QuickBooks item named 'Consulting' (3) already exists.", field="name"),
    mismatch("globex-us", "tax_category", "tax_code_unresolved", "seq-tax-1", None, "Tax category "
             "'Telecommunications' is mapped to QuickBooks tax code 999, which does not exist.", field="tax_code",
             action="fix_settings"),
    mismatch("globex-us", "invoice", "field_differs", "seq-ginv-1", "40", "Line 1 tax code differs.",
             field="line.tax_code", sequence_value="TAX", app_value="NON", action="update_in_app"),
]


def links() -> pl.DataFrame:
    rows = [("acme-uk", "invoice", f"seq-inv-{i}", str(160 + i)) for i in (1, 2, 3, 5, 6, 7)]
    rows += [("acme-uk", "customer", "seq-cus-1", "6"), ("acme-uk", "customer", "seq-cus-3", "7"),
             ("globex-us", "invoice", "seq-ginv-1", "40"), ("globex-us", "invoice", "seq-ginv-2", "41")]
    return pl.DataFrame([{"tenant": t, "app": "quickbooks", "entity": e, "sequence_id": s, "app_id": a,
                          "method": "linked_service", "linked_at": RUN_AT} for t, e, s, a in rows],
                        schema_overrides={"linked_at": pl.Datetime("us", "UTC")})


def quarantine() -> tuple[pl.DataFrame, pl.DataFrame]:
    checks = pl.DataFrame([
        {"tenant": "acme-uk", "app": "quickbooks", "entity": "customer", "id": "22",
         "check": "customers.addresses_complete", "field": "billing_address.postal_code",
         "reason": "the address has no postal/zip code; it cannot be created/imported until fixed"},
        {"tenant": "globex-us", "app": "sequence", "entity": "tax_category", "id": "seq-tax-1",
         "check": "tax_codes.tax_categories_mapped", "field": "tax_code",
         "reason": "tax category 'Telecommunications' is mapped to QuickBooks tax code '999', which does not exist"},
    ]).with_columns(detected_at=pl.lit(RUN_AT, pl.Datetime("us", "UTC")))
    contracts = pl.DataFrame([
        {"tenant": "acme-uk", "app": "quickbooks", "entity": "invoice", "id": "269", "check": "extract",
         "field": "TotalAmt", "reason": "TotalAmt is not a number"},
    ]).with_columns(detected_at=pl.lit(RUN_AT, pl.Datetime("us", "UTC")))
    return checks, contracts


def history() -> pl.DataFrame:
    return pl.DataFrame([{"tenant": tenant, "run_at": RUN_AT - timedelta(days=d), "kind": kind, "mismatches": n + d}
                         for tenant in ("acme-uk", "globex-us") for d in range(4)
                         for kind, n in (("field_differs", 3), ("missing_in_app", 1))],
                        schema_overrides={"run_at": pl.Datetime("us", "UTC")})


def plant(warehouse: Path, *, with_history: bool = True) -> None:
    checks, contracts = quarantine()
    counts = [("customers", "acme-uk", 4, 5), ("invoices", "acme-uk", 10, 9), ("invoices", "globex-us", 6, 6),
              ("products", "globex-us", 3, 4), ("tax_codes", "globex-us", 2, 3)]
    frames: dict[str, pl.DataFrame] = {}
    for table in ("customers", "invoices", "products", "tax_codes"):
        parts = [unified(table, tenant, app, n) for t, tenant, seq, qbo in counts if t == table
                 for app, n in (("sequence", seq), ("quickbooks", qbo))]
        frames[f"unified.{table}"] = pl.concat(parts)
    frames |= {"reconcile.mismatches": pl.DataFrame(MISMATCHES), "reconcile.links": links(),
               "reconcile.quarantine": checks, "unified.quarantine": contracts}
    if with_history:
        frames["reconcile.mismatch_history"] = history()
    replace_tables(warehouse, frames)


def write_registry(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"tenants": {
        tenant: {"settings": {}, "connections": {
            "quickbooks": {"base_url": QBO_SANDBOX, "realm_id": f"realm-{tenant}",
                           "secrets": {"client_id": "QBO_ID", "client_secret": "QBO_SECRET",
                                       "refresh_token": "QBO_REFRESH"}},
            "sequence": {"base_url": "https://eu.sequencehq.com/api",
                         "secrets": {"client_id": "SEQ_ID", "client_secret": "SEQ_SECRET"}}}}
        for tenant in ("acme-uk", "globex-us")}}))
    return path


@pytest.fixture
def planted(tmp_path) -> Path:
    """data/warehouse.duckdb in a temporary folder, with planted reconcile and unified tables."""
    warehouse = tmp_path / "data" / "warehouse.duckdb"
    plant(warehouse)
    return warehouse


@pytest.fixture
def registry_path(tmp_path) -> Path:
    return write_registry(tmp_path / "connections.yaml")
