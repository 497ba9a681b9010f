"""Small unified frames for reconciliation unit tests, typed and validated by the contracts in checks/unified.py
(exactly what the unified assets write), and a one-tenant company whose Sequence and QuickBooks sides agree, for
tests to bend one field at a time."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from assets.reconcile.assets import UNIFIED_INPUTS, compute_links, compute_mismatches
from checks.unified import MODEL

NOW = datetime(2025, 7, 1, tzinfo=UTC)
TENANT = "t1"
QBO = "quickbooks"
SEQ = "sequence"
MERCHANT = "billing@merchant.example"
CATEGORY = "cat-std"  # a Sequence tax category mapped to QuickBooks tax code "2"
PRODUCT, OTHER_PRODUCT = "prod-platform", "prod-seats"


def unified(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows of a unified table with every contract column (missing ones null), validated by its contract."""
    schema = MODEL[table]
    columns = {name: column.dtype.type for name, column in schema.columns.items()}
    filled = []
    for row in rows:
        unknown = set(row) - set(columns)
        assert not unknown, f"{table}: not in the contract: {unknown}"
        record = {name: row.get(name) for name in columns}
        for name, value in record.items():
            if value is not None and columns[name] == pl.Decimal(38, 9) and not isinstance(value, Decimal):
                record[name] = Decimal(str(value))
        for name in ("active",):
            if name in columns and record[name] is None:
                record[name] = True
        filled.append(record)
    return schema.validate(pl.DataFrame(filled, schema=columns, orient="row"))


def link(app_id: str) -> list[dict[str, str]]:
    return [{"app": QBO, "app_id": app_id}]


def settings(**overrides: Any) -> dict[str, Any]:
    base = {"merchant_email": MERCHANT, "invoice_date": "issue", "tax_codes": {CATEGORY: "2"},
            "fallback_tax_code": "2", "exempt_tax_code": "6", "reverse_charge_tax_code": "7",
            "items": {PRODUCT: {"item_id": "5", "account_code": "4000"},
                      OTHER_PRODUCT: {"item_id": "6", "account_code": "4000"}},
            "home_currency": "GBP", "multi_currency": True}
    base.update(overrides)
    return base


def company() -> dict[str, list[dict[str, Any]]]:
    """One tenant, both sides in agreement: a linked customer, a SENT invoice with two lines, products mapped
    to items booked to the right account, the tax codes the settings name."""
    address = {"line1": "1 High Street", "city": "London", "postal_code": "EC1V 4AA", "country": "GB"}
    billing = {f"billing_{k}": v for k, v in address.items()}
    invoice = {"tenant": TENANT, "number": "INV00042", "currency": "GBP", "due_date": date(2025, 4, 15),
               "memo": "Thank you for your business.", **billing, "gross_total": "1440.00"}
    return {
        "customers": [
            {"tenant": TENANT, "app": SEQ, "id": "c1", "name": "Blue Analytics Ltd", "email": "ap@blue.example",
             **address, "tax_status": "TAXED", "app_status": "ACTIVE", "links": link("1")},
            {"tenant": TENANT, "app": QBO, "id": "1", "name": "Blue Analytics Ltd", "email": "ap@blue.example",
             **address, "currency": "GBP"},
        ],
        "invoices": [
            {**invoice, "app": SEQ, "id": "inv1", "customer_id": "c1", "status": "OPEN", "app_status": "SENT",
             "payment_status": "UNPAID", "issue_date": date(2025, 3, 16), "accounting_date": date(2025, 3, 1),
             "billing_email": "ap@blue.example", "links": link("100"), "stripe_payment_link": False},
            {**invoice, "app": QBO, "id": "100", "customer_id": "1", "status": "OPEN", "payment_status": "UNPAID",
             "issue_date": date(2025, 3, 16), "billing_email": MERCHANT, "exchange_rate": "1",
             "home_gross_total": "1440.00"},
        ],
        "invoice_lines": [
            {"tenant": TENANT, "app": SEQ, "document_id": "inv1", "id": "l1", "position": 1,
             "description": "Platform: Platform fee, March 2025", "group_title": "Platform",
             "title": "Platform fee, March 2025", "product_id": PRODUCT, "quantity": "1", "rate": "1000.00",
             "tax_category_id": CATEGORY, "links": link("100-1")},
            {"tenant": TENANT, "app": SEQ, "document_id": "inv1", "id": "l2", "position": 2,
             "description": "Platform: Additional seats", "group_title": "Platform", "title": "Additional seats",
             "product_id": OTHER_PRODUCT, "quantity": "10", "rate": "20.00", "tax_category_id": CATEGORY,
             "links": link("100-2")},
            {"tenant": TENANT, "app": QBO, "document_id": "100", "id": "1", "position": 1,
             "description": "Platform: Platform fee, March 2025", "product_id": "5", "quantity": "1",
             "rate": "1000.00", "tax_code": "2"},
            {"tenant": TENANT, "app": QBO, "document_id": "100", "id": "2", "position": 2,
             "description": "Platform: Additional seats", "product_id": "6", "quantity": "10", "rate": "20.00",
             "tax_code": "2"},
        ],
        "credit_notes": [],
        "credit_note_lines": [],
        "products": [
            {"tenant": TENANT, "app": SEQ, "id": PRODUCT, "name": "Platform fee", "tax_category_id": CATEGORY},
            {"tenant": TENANT, "app": SEQ, "id": OTHER_PRODUCT, "name": "Additional seats",
             "tax_category_id": CATEGORY},
            {"tenant": TENANT, "app": QBO, "id": "1", "name": "Services", "income_account_id": "90"},
            {"tenant": TENANT, "app": QBO, "id": "5", "name": "Platform fee", "income_account_id": "40"},
            {"tenant": TENANT, "app": QBO, "id": "6", "name": "Additional seats", "income_account_id": "40"},
        ],
        "accounts": [
            {"tenant": TENANT, "app": QBO, "id": "40", "name": "Subscription Revenue", "code": "4000"},
            {"tenant": TENANT, "app": QBO, "id": "41", "name": "Other Income", "code": "4040"},
            {"tenant": TENANT, "app": QBO, "id": "90", "name": "Sales", "code": "4090"},
        ],
        "tax_codes": [
            {"tenant": TENANT, "app": SEQ, "id": CATEGORY, "name": "Standard rated"},
            *({"tenant": TENANT, "app": QBO, "id": code, "name": name, "rate": rate}
              for code, name, rate in (("2", "20.0% S", "0.2"), ("6", "No VAT", "0"), ("7", "Reverse Charge", "0"),
                                       ("4", "0.0% Z", "0"))),
        ],
    }


class Company:
    """The company of `company()` for one test: change it (`row`, `line`, or `rows` directly), then `reconcile`."""

    TENANT, QBO, SEQ, MERCHANT, CATEGORY, PRODUCT, OTHER_PRODUCT = TENANT, QBO, SEQ, MERCHANT, CATEGORY, PRODUCT, \
        OTHER_PRODUCT

    def __init__(self) -> None:
        self.rows = copy.deepcopy(company())

    @staticmethod
    def settings(**overrides: Any) -> dict[str, Any]:
        return settings(**overrides)

    @staticmethod
    def unified(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
        return unified(table, rows)

    def frames(self) -> dict[str, pl.LazyFrame]:
        return {table: unified(table, self.rows.get(table, [])).lazy() for table in UNIFIED_INPUTS}

    def reconcile(self, tenant_settings: dict[str, Any] | None = None, *, outbox: pl.DataFrame | None = None,
                  quarantine: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(links, mismatches) for the company, as the assets compute them."""
        frames = self.frames()
        by_app = {QBO: {TENANT: tenant_settings or settings()}}
        links = compute_links(frames, by_app, outbox=outbox.lazy() if outbox is not None else None, linked_at=NOW)
        mismatches = compute_mismatches(frames, links.lazy(), by_app,
                                        quarantine=quarantine.lazy() if quarantine is not None else None)
        return links, mismatches

    def mismatches(self, tenant_settings: dict[str, Any] | None = None) -> pl.DataFrame:
        return self.reconcile(tenant_settings)[1]

    def row(self, table: str, app: str, record_id: str, **changes: Any) -> None:
        """Changes one record in place."""
        for record in self.rows[table]:
            if record["app"] == app and record["id"] == record_id:
                record.update(changes)
                return
        raise KeyError((table, app, record_id))

    def line(self, app: str, document_id: str, line_id: str, **changes: Any) -> None:
        for record in self.rows["invoice_lines"]:
            if record["app"] == app and record["document_id"] == document_id and record["id"] == line_id:
                record.update(changes)
                return
        raise KeyError((app, document_id, line_id))


@pytest.fixture
def co() -> Company:
    return Company()


@pytest.fixture(scope="module")
def reconciled(extraction) -> dict[str, Any]:
    """Extract, unify and reconcile the `extraction` fixture's company through real Dagster materializations:
    the reconcile run's result and the reconcile tables as frames."""
    import duckdb
    from assets.partitions import materialize_tenants

    from assets.reconcile.assets import RECONCILE_ASSETS

    extraction.extract_all()
    assert extraction.run_unified().success
    result = materialize_tenants(RECONCILE_ASSETS, instance=extraction.instance, resources={"ledgerlink": extraction.resource})
    assert result.success
    with duckdb.connect(str(extraction.warehouse), read_only=True) as con:
        tables = {table: con.sql(f"select * from reconcile.{table}").pl()
                  for table in ("mismatches", "links", "mismatch_history")}
    return {"result": result, **tables}
