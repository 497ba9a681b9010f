"""A one-tenant company for write-back unit tests: unified frames validated by their contracts, the tenant's
settings and the QuickBooks facts the plan reads (SyncTokens, exchange rates, currency preferences). Each
record exists to exercise one seed rule; `Books.plan()` reconciles it with the real reconciliation and plans
from the mismatches, as the assets do."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import pytest

from assets.reconcile.assets import UNIFIED_INPUTS, compute_links, compute_mismatches
from assets.writeback.plan import PlanInputs, build_plan
from assets.writeback.quickbooks import QuickBooksState
from checks.unified import MODEL

T = "t1"
QBO, SEQ = "quickbooks", "sequence"
MERCHANT = "billing@merchant.example"
NOW = datetime(2025, 7, 1, tzinfo=UTC)
GB = {"line1": "1 High Street", "city": "London", "postal_code": "EC1V 4AA", "country": "GB"}


def unified(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    columns = {name: column.dtype.type for name, column in MODEL[table].columns.items()}
    filled = []
    for row in rows:
        assert not set(row) - set(columns), f"{table}: {set(row) - set(columns)} not in the contract"
        record = {name: row.get(name) for name in columns}
        for name, value in record.items():
            if value is not None and columns[name] == pl.Decimal(38, 9) and not isinstance(value, Decimal):
                record[name] = Decimal(str(value))
        if "active" in columns and record["active"] is None:
            record["active"] = True
        filled.append(record)
    return MODEL[table].validate(pl.DataFrame(filled, schema=columns, orient="row"))


def link(app_id: str) -> list[dict[str, str]]:
    return [{"app": QBO, "app_id": app_id}]


def settings(**overrides: Any) -> dict[str, Any]:
    base = {"merchant_email": MERCHANT, "invoice_date": "issue", "tax_codes": {"cat-std": "2"},
            "fallback_tax_code": "4", "exempt_tax_code": "6", "reverse_charge_tax_code": "7",
            "items": {"p-platform": {"item_id": "5", "account_code": "4000"},
                      "p-seats": {"item_id": "6", "account_code": "4000"}},
            "home_currency": "GBP", "multi_currency": True}
    return {**base, **overrides}


def _customer(app: str, cid: str, name: str, email: str | None, **extra: Any) -> dict[str, Any]:
    return {"tenant": T, "app": app, "id": cid, "name": name, "email": email, **GB, **extra}


def _invoice(app: str, iid: str, customer: str, number: str | None, **extra: Any) -> dict[str, Any]:
    base = {"tenant": T, "app": app, "id": iid, "customer_id": customer, "number": number, "currency": "GBP",
            "status": "OPEN", "payment_status": "UNPAID", "issue_date": date(2025, 6, 2),
            "accounting_date": date(2025, 6, 1), "due_date": date(2025, 7, 2), "memo": "Thank you.",
            "billing_email": "ap@blue.example", **{f"billing_{k}": v for k, v in GB.items()},
            "net_total": "1000", "tax_total": "200", "gross_total": "1200", "balance": "1200"}
    if app == SEQ:
        base |= {"app_status": "SENT", "stripe_payment_link": False}
    return {**base, **extra}


def _line(app: str, doc: str, lid: str, position: int, **extra: Any) -> dict[str, Any]:
    base = {"tenant": T, "app": app, "document_id": doc, "id": lid, "position": position}
    if app == SEQ:
        base |= {"group_title": "Platform", "title": "Platform fee", "product_id": "p-platform", "quantity": "1",
                 "rate": "1000", "tax_category_id": "cat-std"}
    else:
        base |= {"description": "Platform: Platform fee", "product_id": "5", "quantity": "1", "rate": "1000",
                 "tax_code": "2"}
    return {**base, **extra}


def company() -> dict[str, list[dict[str, Any]]]:
    """Records named by what they exercise; both sides agree except where a rule needs them not to."""
    return {
        "customers": [
            _customer(SEQ, "c-blue", "Blue Analytics Ltd", "ap@blue.example", tax_status="TAXED",
                      app_status="ACTIVE", links=link("1")),
            _customer(QBO, "1", "Blue Analytics Ltd", "ap@blue.example", currency="GBP"),
            _customer(SEQ, "c-exempt", "Charity Trust", "ap@charity.example", tax_status="TAX_EXEMPT",
                      app_status="ACTIVE", links=link("3")),
            _customer(QBO, "3", "Charity Trust", "ap@charity.example", currency="GBP"),
            _customer(SEQ, "c-rc", "Nordwind GmbH", "ap@nordwind.example", tax_status="REVERSE_CHARGED",
                      app_status="ACTIVE", links=link("4"), **{**GB, "country": "DE", "city": "Hamburg"}),
            _customer(QBO, "4", "Nordwind GmbH", "ap@nordwind.example", currency="EUR",
                      **{**GB, "country": "DE", "city": "Hamburg"}),
            # in Sequence only, its documents in EUR: created in QuickBooks (in EUR), its invoice waits for it
            _customer(SEQ, "c-new", "Fresh Start Ltd", "ap@fresh.example", tax_status="TAXED", app_status="ACTIVE"),
            # in QuickBooks only: a complete one is imported, one without a postal code is not
            _customer(QBO, "9", "Import Me Ltd", "ap@import.example", currency="GBP", tax_status="TAXED"),
            _customer(QBO, "10", "No Postcode Ltd", "ap@nopost.example", currency="GBP",
                      **{**GB, "postal_code": None}),
        ],
        "invoices": [
            # in agreement
            _invoice(SEQ, "inv-ok", "c-blue", "INV001", links=link("100"), billing_email="ap@blue.example"),
            _invoice(QBO, "100", "1", "INV001", billing_email=MERCHANT),
            # issued, never synced: created (a SENT one with the merchant email, a FINAL one with the customer's)
            _invoice(SEQ, "inv-sent", "c-blue", "INV002"),
            _invoice(SEQ, "inv-final", "c-blue", "INV003", app_status="FINAL", memo=None),
            _invoice(SEQ, "inv-exempt", "c-exempt", "INV004", billing_email="ap@charity.example"),
            _invoice(SEQ, "inv-rc", "c-rc", "INV005", currency="EUR", billing_email="ap@nordwind.example"),
            _invoice(SEQ, "inv-new", "c-new", "INV006", currency="EUR", app_status="FINAL",
                     billing_email="ap@fresh.example"),
            # a draft is never synced
            _invoice(SEQ, "inv-draft", "c-blue", None, status="DRAFT", app_status="DRAFT", issue_date=None),
            # voided in Sequence, open in QuickBooks
            _invoice(SEQ, "inv-void", "c-blue", "INV007", status="VOID", app_status="VOIDED", links=link("106")),
            _invoice(QBO, "106", "1", "INV007", billing_email=MERCHANT),
            # paid in QuickBooks: marked paid in Sequence, unless Stripe takes the payment (a payment link)
            _invoice(SEQ, "inv-paid", "c-blue", "INV008", links=link("107")),
            _invoice(QBO, "107", "1", "INV008", billing_email=MERCHANT, status="PAID", payment_status="PAID",
                     balance="0"),
            _invoice(SEQ, "inv-stripe", "c-blue", "INV009", links=link("108"), stripe_payment_link=True),
            _invoice(QBO, "108", "1", "INV009", billing_email=MERCHANT, status="PAID", payment_status="PAID",
                     balance="0"),
            # a due date that changed in Sequence: a sparse update with the current SyncToken
            _invoice(SEQ, "inv-due", "c-blue", "INV010", links=link("109"), due_date=date(2025, 7, 31)),
            _invoice(QBO, "109", "1", "INV010", billing_email=MERCHANT),
            # sent, but QuickBooks still has the customer's email: set the merchant email
            _invoice(SEQ, "inv-email", "c-blue", "INV011", links=link("110")),
            _invoice(QBO, "110", "1", "INV011", billing_email="ap@blue.example"),
        ],
        "invoice_lines": [
            *(_line(SEQ, doc, f"{doc}-l1", 1) for doc in ("inv-ok", "inv-sent", "inv-final", "inv-exempt", "inv-rc",
                                                          "inv-draft", "inv-void", "inv-paid", "inv-stripe", "inv-due",
                                                          "inv-email")),
            _line(SEQ, "inv-sent", "inv-sent-l2", 2, group_title="Usage", title="Printed manuals",
                  product_id="p-manuals", quantity="3", rate="12.505", tax_category_id=None),
            _line(SEQ, "inv-new", "inv-new-l1", 1, title="Seats", product_id="p-seats", quantity="10", rate="20",
                  tax_category_id="cat-none"),
            *(_line(QBO, doc, "1", 1) for doc in ("100", "106", "107", "108", "109", "110")),
        ],
        "credit_notes": [],
        "credit_note_lines": [],
        "products": [
            {"tenant": T, "app": SEQ, "id": "p-platform", "name": "Platform fee", "tax_category_id": "cat-std"},
            {"tenant": T, "app": SEQ, "id": "p-seats", "name": "Seats", "tax_category_id": "cat-std"},
            # unmapped: its item is created, booking to the default item's account
            {"tenant": T, "app": SEQ, "id": "p-manuals", "name": "Printed manuals"},
            {"tenant": T, "app": QBO, "id": "1", "name": "Services", "income_account_id": "90"},
            {"tenant": T, "app": QBO, "id": "5", "name": "Platform fee", "income_account_id": "40"},
            {"tenant": T, "app": QBO, "id": "6", "name": "Seats", "income_account_id": "40"},
        ],
        "accounts": [
            {"tenant": T, "app": QBO, "id": "40", "name": "Subscription Revenue", "code": "4000"},
            {"tenant": T, "app": QBO, "id": "41", "name": "Other Income", "code": "4040"},
            {"tenant": T, "app": QBO, "id": "90", "name": "Sales", "code": "4090"},
        ],
        "tax_codes": [
            {"tenant": T, "app": SEQ, "id": "cat-std", "name": "Standard rated"},
            *({"tenant": T, "app": QBO, "id": code, "name": name, "rate": rate}
              for code, name, rate in (("2", "20.0% S", "0.2"), ("4", "0.0% Z", "0"), ("6", "No VAT", "0"),
                                       ("7", "Reverse Charge", "0"))),
        ],
    }


def quickbooks_state(**rates: str) -> QuickBooksState:
    versions = [(T, "invoice", doc, "3") for doc in ("100", "106", "107", "108", "109", "110")]
    versions += [(T, "customer", c, "1") for c in ("1", "3", "4", "9", "10")]
    versions += [(T, "product", i, "0") for i in ("1", "5", "6")]
    exchange = rates or {"EUR": "0.85"}
    return QuickBooksState(
        versions=pl.LazyFrame(versions, schema={"tenant": pl.String, "entity": pl.String, "id": pl.String,
                                                "sync_token": pl.String}, orient="row"),
        exchange_rates=pl.LazyFrame(
            [(T, cur, "GBP", Decimal(rate), date(2025, 6, 1)) for cur, rate in exchange.items()]
            + [(T, "EUR", "GBP", Decimal("0.80"), date(2025, 1, 1))],  # older: not the latest
            schema={"tenant": pl.String, "currency": pl.String, "home_currency": pl.String,
                    "rate": pl.Decimal(38, 9), "as_of": pl.Date}, orient="row"),
        companies=pl.LazyFrame([(T, "GBP", True)], schema={"tenant": pl.String, "home_currency": pl.String,
                                                            "multi_currency": pl.Boolean}, orient="row"),
        customer_tax_codes=pl.LazyFrame(schema={"tenant": pl.String, "id": pl.String,
                                                "default_tax_code": pl.String}))


class Books:
    """The company of `company()` for one test: change `rows`, then `plan()`."""

    def __init__(self) -> None:
        self.rows = copy.deepcopy(company())
        self.settings = settings()
        self.state = quickbooks_state()
        self.outbox: pl.DataFrame | None = None

    def frames(self) -> dict[str, pl.LazyFrame]:
        return {table: unified(table, self.rows.get(table, [])).lazy() for table in UNIFIED_INPUTS}

    def reconcile(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        frames = self.frames()
        by_app = {QBO: {T: self.settings}}
        links = compute_links(frames, by_app, outbox=self.outbox.lazy() if self.outbox is not None else None,
                              linked_at=NOW)
        return links, compute_mismatches(frames, links.lazy(), by_app)

    def inputs(self) -> PlanInputs:
        links, mismatches = self.reconcile()
        return PlanInputs(unified=self.frames(), links=links.lazy(), mismatches=mismatches.lazy(),
                          settings={T: self.settings}, quickbooks=self.state,
                          outbox=self.outbox.lazy() if self.outbox is not None else None)

    def plan(self, **kwargs: Any) -> pl.DataFrame:
        return build_plan(self.inputs(), **kwargs)

    def record(self, table: str, app: str, record_id: str) -> dict[str, Any]:
        return next(r for r in self.rows[table] if r["app"] == app and r["id"] == record_id)


def write(plan: pl.DataFrame, operation: str, *, sequence_id: str | None = None, app_id: str | None = None,
          entity: str | None = None) -> dict[str, Any]:
    """The one plan row for an operation on a record, its payload decoded."""
    rows = plan.filter(pl.col("operation") == operation)
    if sequence_id is not None:
        rows = rows.filter(pl.col("sequence_id") == sequence_id)
    if app_id is not None:
        rows = rows.filter(pl.col("app_id") == app_id)
    if entity is not None:
        rows = rows.filter(pl.col("entity") == entity)
    assert rows.height == 1, f"expected one {operation} for {sequence_id or app_id}, got {rows.height}"
    row = rows.row(0, named=True)
    return {**row, "payload": orjson.loads(row["payload"])}


@pytest.fixture
def books() -> Books:
    return Books()
