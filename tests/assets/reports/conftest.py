"""A temporary warehouse with planted reconciliation results (the reconcile, unified and ops tables as their
assets write them) and a registry: acme-uk has QuickBooks (a sandbox) and Xero (a real organisation, so its
links go to go.xero.com), globex-us QuickBooks and HubSpot (connected, not reconciled yet)."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml

from assets.warehouse import replace_tables
from checks.unified import MODEL

RUN_AT = datetime(2025, 6, 30, 17, 0, tzinfo=timezone.utc)
QBO_SANDBOX = "http://127.0.0.1:8712"
XERO_SHORT_CODE = "!mBdtL"
XERO_INVOICE = "0b7e4c2a-91d3-4f65-a8e0-3c5d7f9b1e24"
XERO_CONTACT = "5c9d1e3f-7a2b-4c6d-8e0f-2a4b6c8d0e1f"
XERO_CREDIT_NOTE = "7d1f0c55-3b6e-4a0f-9e21-6c4b8a2d1f90"


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
    # acme-uk in Xero: invoices 10 and 9, customers 4 and 4, credit notes 2 and 3
    mismatch("acme-uk", "invoice", "field_differs", "seq-inv-1", XERO_INVOICE, "Due date differs: Sequence "
             "2025-08-01, Xero 2025-08-10.", field="due_date", sequence_value="2025-08-01", app_value="2025-08-10",
             action="update_in_app", app="xero"),
    mismatch("acme-uk", "invoice", "missing_in_app", "seq-inv-4", None, "SENT invoice INV00024 was never synced "
             "to Xero.", action="create_in_app", app="xero"),
    mismatch("acme-uk", "invoice", "status_differs", "seq-inv-6", "9a1c2e44-0d5b-4f7e-8a63-1b2c3d4e5f60",
             "Xero invoice INV-0046 is PAID; Sequence is UNPAID.", field="payment_status", sequence_value="UNPAID",
             app_value="PAID", action="mark_paid_in_sequence", app="xero"),
    mismatch("acme-uk", "customer", "field_differs", "seq-cus-1", XERO_CONTACT, "Name differs.", field="name",
             sequence_value="Quill Bio Ltd", app_value="Quill Bio Limited", action="update_in_app", app="xero"),
    mismatch("acme-uk", "credit_note", "missing_in_sequence", None, XERO_CREDIT_NOTE, "Xero credit note CN-0007 "
             "has no Sequence twin.", app="xero"),
]


def links() -> pl.DataFrame:
    rows = [("acme-uk", "invoice", f"seq-inv-{i}", str(160 + i)) for i in (1, 2, 3, 5, 6, 7)]
    rows += [("acme-uk", "customer", "seq-cus-1", "6"), ("acme-uk", "customer", "seq-cus-3", "7"),
             ("globex-us", "invoice", "seq-ginv-1", "40"), ("globex-us", "invoice", "seq-ginv-2", "41")]
    xero = [("acme-uk", "invoice", "seq-inv-1", XERO_INVOICE), ("acme-uk", "customer", "seq-cus-1", XERO_CONTACT)]
    return pl.DataFrame([{"tenant": t, "app": app, "entity": e, "sequence_id": s, "app_id": a,
                          "method": "linked_service", "linked_at": RUN_AT}
                         for app, group in (("quickbooks", rows), ("xero", xero)) for t, e, s, a in group],
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


# counts per run, oldest first: (tenant, app, kind) -> counts of the runs 3, 2, 1 and 0 days before RUN_AT
HISTORY = {
    ("acme-uk", "quickbooks", "field_differs"): (6, 5, 4, 3),
    ("acme-uk", "quickbooks", "missing_in_app"): (4, 3, 2, 1),
    ("acme-uk", "xero", "field_differs"): (0, 1, 2, 2),
    ("acme-uk", "xero", "missing_in_app"): (1, 1, 1, 1),
    ("acme-uk", "xero", "invalid"): (0, 0, 0, 0),  # every kind has a row per run, zeros too
    ("globex-us", "quickbooks", "field_differs"): (3, 2, 1, 1),
    ("globex-us", "quickbooks", "missing_in_app"): (0, 0, 0, 0),
}


def history() -> pl.DataFrame:
    """reconcile.mismatch_history as the reconcile asset writes it: (tenant, app, kind, count, at)."""
    return pl.DataFrame([{"tenant": tenant, "app": app, "kind": kind, "count": n, "at": RUN_AT - timedelta(days=3 - i)}
                         for (tenant, app, kind), counts in HISTORY.items() for i, n in enumerate(counts)],
                        schema_overrides={"at": pl.Datetime("us", "UTC")})


def mismatch_log() -> pl.DataFrame:
    """reconcile.mismatch_log: the open interval of every current mismatch (first seen N days ago), and a closed
    earlier interval of one of them (it was fixed once, then came back)."""
    first_seen = {("xero", "seq-inv-1", "due_date"): 2, ("quickbooks", "seq-inv-3", "payment_status"): 3}
    rows = [{**m, "valid_from": RUN_AT - timedelta(days=first_seen.get((m["app"], m["sequence_id"], m["field"]), 0)),
             "valid_to": None} for m in MISMATCHES]
    back = next(m for m in MISMATCHES if m["app"] == "xero" and m["field"] == "due_date")
    rows.append({**back, "valid_from": RUN_AT - timedelta(days=10), "valid_to": RUN_AT - timedelta(days=8)})
    return pl.DataFrame(rows, schema_overrides={"valid_from": pl.Datetime("us", "UTC"),
                                                "valid_to": pl.Datetime("us", "UTC")})


def sync_runs() -> pl.DataFrame:
    """ops.sync_runs: two syncs a day for three days per connection; acme-uk's last Xero sync failed."""
    rows = []
    for tenant, app in (("acme-uk", "sequence"), ("acme-uk", "quickbooks"), ("acme-uk", "xero"),
                        ("globex-us", "sequence"), ("globex-us", "quickbooks")):
        for day in range(3):
            for hour in (6, 18):
                started = RUN_AT.replace(hour=hour) - timedelta(days=2 - day)
                failed = (tenant, app, day, hour) == ("acme-uk", "xero", 2, 18)
                rows.append({"run_id": f"{tenant}-{app}-{day}-{hour}", "tenant": tenant, "app": app,
                             "connection": f"{tenant}.{app}", "started_at": started,
                             "finished_at": started + timedelta(seconds=40),
                             "status": "failed" if failed else "success",
                             "rows_loaded": 0 if failed else 10 * (day + 1), "tables": "{}",
                             "error": "Xero answered 429: the minute limit is spent (Retry-After 20 s)" if failed
                             else None})
    return pl.DataFrame(rows, schema_overrides={"started_at": pl.Datetime("us", "UTC"),
                                                "finished_at": pl.Datetime("us", "UTC")})


def plant(warehouse: Path, *, with_history: bool = True) -> None:
    checks, contracts = quarantine()
    # (table, tenant, Sequence, QuickBooks, Xero)
    counts = [("customers", "acme-uk", 4, 5, 4), ("invoices", "acme-uk", 10, 9, 9),
              ("credit_notes", "acme-uk", 2, 0, 3), ("invoices", "globex-us", 6, 6, 0),
              ("products", "globex-us", 3, 4, 0), ("tax_codes", "globex-us", 2, 3, 0)]
    frames: dict[str, pl.DataFrame] = {}
    for table in ("customers", "invoices", "credit_notes", "products", "tax_codes"):
        parts = [unified(table, tenant, app, n) for t, tenant, seq, qbo, xero in counts if t == table
                 for app, n in (("sequence", seq), ("quickbooks", qbo), ("xero", xero))]
        frames[f"unified.{table}"] = pl.concat(parts)
    frames |= {"reconcile.mismatches": pl.DataFrame(MISMATCHES), "reconcile.links": links(),
               "reconcile.quarantine": checks, "unified.quarantine": contracts}
    if with_history:
        frames |= {"reconcile.mismatch_history": history(), "reconcile.mismatch_log": mismatch_log(),
                   "ops.sync_runs": sync_runs()}
    replace_tables(warehouse, frames)


def write_registry(path: Path) -> Path:
    extra = {
        "acme-uk": {"xero": {"base_url": "https://api.xero.com/api.xro/2.0", "xero_tenant_id": "org-acme",
                             "short_code": XERO_SHORT_CODE,
                             "secrets": {"client_id": "XERO_ID", "client_secret": "XERO_SECRET",
                                         "refresh_token": "XERO_REFRESH"}}},
        "globex-us": {"hubspot": {"base_url": "https://api.hubapi.com", "secrets": {"access_token": "HS_TOKEN"}}},
    }
    path.write_text(yaml.safe_dump({"tenants": {
        tenant: {"settings": {}, "connections": {
            "quickbooks": {"base_url": QBO_SANDBOX, "realm_id": f"realm-{tenant}",
                           "secrets": {"client_id": "QBO_ID", "client_secret": "QBO_SECRET",
                                       "refresh_token": "QBO_REFRESH"}},
            "sequence": {"base_url": "https://eu.sequencehq.com/api",
                         "secrets": {"client_id": "SEQ_ID", "client_secret": "SEQ_SECRET"}},
            **extra[tenant]}}
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
