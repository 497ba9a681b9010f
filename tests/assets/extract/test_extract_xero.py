"""Xero extraction end to end: a small hand-written fixture folder served by the Xero emulator over HTTP,
extracted into a temporary warehouse through real Dagster materializations of raw_xero."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from dagster import DagsterInstance, materialize
from dagster_dlt import DagsterDltResource

import assets.extract.xero as xero_extract
from assets.extract.assets import RAW_ASSETS
from assets.partitions import CONNECTION_PARTITIONS
from assets.resources import Ledgerlink
from connectors.registry import dump_registry, load_registry
from connectors.sandbox.launcher import start_sandbox

T0 = 1740873600  # 2025-03-02T00:00:00Z
TENANT = "acme"
KEY = f"{TENANT}.xero"


def ms_date(seconds: int) -> str:
    return f"/Date({seconds * 1000}+0000)/"


def invoice(i: int, **changes) -> dict:
    record = {"Type": "ACCREC", "InvoiceID": f"inv-{i}", "InvoiceNumber": f"INV-{i}",
              "Status": "DRAFT" if i == 0 else "AUTHORISED", "LineAmountTypes": "Exclusive",
              "Contact": {"ContactID": "c-1", "Name": "Customer 1"}, "DateString": "2025-03-02T00:00:00",
              "Date": ms_date(T0), "DueDate": ms_date(T0 + 30 * 86400), "CurrencyCode": "EUR", "CurrencyRate": 1.0842,
              "LineItems": [{"LineItemID": f"l-{i}-{n}", "Description": "Platform fee", "Quantity": 1.0,
                             "UnitAmount": 1200.1, "ItemCode": "FEE", "AccountCode": "200", "TaxType": "OUTPUT2",
                             "TaxAmount": 240.02, "LineAmount": 1200.1, "Tracking": []} for n in range(2)],
              "SubTotal": 2400.2, "TotalTax": 480.04, "Total": 2880.24, "AmountDue": 2880.24, "AmountPaid": 0.0,
              "AmountCredited": 0.0, "Payments": [], "UpdatedDateUTC": ms_date(T0 + i)}
    return {**record, **changes}


def fixtures() -> dict[str, list[dict]]:
    invoices = [invoice(i) for i in range(4)]
    invoices += [invoice(4, CurrencyCode="EURO"),  # not ISO 4217: rejected
                 invoice(5, DueDate="2025-13-45"),  # not a Xero date: rejected
                 invoice(6, Type="ACCPAY", InvoiceNumber="BILL-6")]  # a bill: not extracted
    return {
        "contacts": [{"ContactID": f"c-{i}", "ContactNumber": f"cust_{i}", "Name": f"Customer {i}",
                      "ContactStatus": "ARCHIVED" if i == 3 else "ACTIVE", "DefaultCurrency": "EUR",
                      "Addresses": [{"AddressType": "POBOX", "AddressLine1": f"Hafenstrasse {i}", "City": "Hamburg",
                                     "Country": "Germany"}],
                      "Phones": [], "UpdatedDateUTC": ms_date(T0 + i)} for i in range(4)],
        "invoices": invoices,
        "credit-notes": [{"Type": "ACCRECCREDIT", "CreditNoteID": "cn-1", "CreditNoteNumber": "CN-1",
                          "Status": "AUTHORISED", "Contact": {"ContactID": "c-1"}, "Date": ms_date(T0),
                          "LineAmountTypes": "Exclusive", "LineItems": [
                              {"LineItemID": "cl-1", "Description": "refund", "Quantity": 1.0, "UnitAmount": 100.0,
                               "AccountCode": "200", "TaxType": "NONE", "TaxAmount": 0.0, "LineAmount": 100.0}],
                          "SubTotal": 100.0, "TotalTax": 0.0, "Total": 100.0, "RemainingCredit": 0.0,
                          "Allocations": [{"AllocationID": "al-1", "Invoice": {"InvoiceID": "inv-1"},
                                           "Amount": 100.0, "Date": ms_date(T0 + 86400)}],
                          "CurrencyCode": "EUR", "UpdatedDateUTC": ms_date(T0)}],
        "payments": [{"PaymentID": "p-1", "Invoice": {"InvoiceID": "inv-2", "InvoiceNumber": "INV-2"},
                      "Account": {"AccountID": "a-090", "Code": "090"}, "Date": ms_date(T0 + 86400),
                      "Amount": 500.5, "CurrencyRate": 1.0842, "Reference": "SEPA-1", "Status": "AUTHORISED",
                      "PaymentType": "ACCRECPAYMENT", "UpdatedDateUTC": ms_date(T0)}],
        "items": [{"ItemID": f"it-{i}", "Code": f"CODE-{i}", "Name": f"Item {i}", "IsSold": True,
                   "SalesDetails": {"UnitPrice": 1200.1, "AccountCode": "200", "TaxType": "OUTPUT2"},
                   "UpdatedDateUTC": ms_date(T0)} for i in range(1, 4)],
        "accounts": [{"AccountID": "a-200", "Code": "200", "Name": "Sales", "Type": "REVENUE", "Class": "REVENUE",
                      "Status": "ACTIVE", "TaxType": "OUTPUT2", "UpdatedDateUTC": ms_date(T0)},
                     {"AccountID": "a-090", "Code": "090", "Name": "Bank", "Type": "BANK", "Class": "ASSET",
                      "Status": "ACTIVE", "EnablePaymentsToAccount": True, "UpdatedDateUTC": ms_date(T0)}],
        "tax-rates": [{"Name": "20% (VAT on Income)", "TaxType": "OUTPUT2", "Status": "ACTIVE",
                       "EffectiveRate": 20.0, "DisplayTaxRate": 20.0, "CanApplyToRevenue": True,
                       "TaxComponents": [{"Name": "VAT", "Rate": 20.0, "IsCompound": False}]},
                      {"Name": "No VAT", "TaxType": "NONE", "Status": "ACTIVE", "EffectiveRate": 0.0,
                       "TaxComponents": [{"Name": "None", "Rate": 0.0, "IsCompound": False}]}],
        "currencies": [{"Code": "EUR", "Description": "Euro"}, {"Code": "USD", "Description": "US Dollar"}],
        "organisation": [{"OrganisationID": "o-1", "Name": "Acme GmbH", "BaseCurrency": "EUR", "CountryCode": "DE",
                          "FinancialYearEndDay": 31, "FinancialYearEndMonth": 12,
                          "CreatedDateUTC": ms_date(T0 - 86400 * 365)}],
    }


def query(warehouse: Path, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def count(warehouse: Path, table: str) -> int:
    return query(warehouse, f"select count(*) from raw_xero.{table} where tenant = ?", [TENANT])[0][0]


def loaded_rows(result) -> dict[str, int]:
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        value = materialization.metadata.get("rows_loaded")
        rows[materialization.asset_key.path[-1]] = value.value if value is not None else 0
    return rows


class XeroExtraction:
    def __init__(self, root: Path):
        app_dir = root / "fixtures" / TENANT / "xero"
        app_dir.mkdir(parents=True)
        for collection, records in fixtures().items():
            (app_dir / f"{collection}.json").write_bytes(orjson.dumps(records))
        self.box = start_sandbox(root / "fixtures", apps=["xero"])
        self.url = self.box.urls["xero"]
        registry_path = root / "connections.yaml"
        dump_registry(self.box.registry_document(), registry_path)
        self.registry = load_registry(registry_path)
        self.resource = Ledgerlink(registry_path=str(registry_path), warehouse_path=str(root / "wh.duckdb"),
                                   state_dir=str(root / "state"))
        self.instance = DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions(CONNECTION_PARTITIONS["xero"].name, self.registry.keys("xero"))

    @property
    def warehouse(self) -> Path:
        return Path(self.resource.warehouse_path)

    def run(self, *, raise_on_error: bool = True):
        return materialize([RAW_ASSETS["xero"]], instance=self.instance, partition_key=KEY,
                           raise_on_error=raise_on_error,
                           resources={"dlt": DagsterDltResource(), "ledgerlink": self.resource})

    def client(self):
        return self.resource.client(self.registry.get(KEY))


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    saved_env, saved_page = dict(os.environ), xero_extract.PAGE_SIZE
    xero_extract.PAGE_SIZE = 2  # several pages from a small fixture
    extraction = XeroExtraction(tmp_path_factory.mktemp("xero-extract"))
    os.environ.update(extraction.box.environment())
    try:
        first = extraction.run()
        extraction.first_rows = loaded_rows(first)
        yield extraction
    finally:
        extraction.box.stop()
        xero_extract.PAGE_SIZE = saved_page
        os.environ.clear()
        os.environ.update(saved_env)


def test_counts_equal_the_fixture_less_bills_and_rejected_records(ext):
    wh = ext.warehouse
    assert count(wh, "invoices") == 4  # 6 sales invoices, 2 rejected; the bill is not read
    assert count(wh, "invoices__line_items") == 8
    assert count(wh, "contacts") == 4  # the ARCHIVED one too (includeArchived)
    assert count(wh, "contacts__addresses") == 4
    assert (count(wh, "credit_notes"), count(wh, "credit_notes__line_items"), count(wh, "credit_notes__allocations")) \
        == (1, 1, 1)
    assert (count(wh, "payments"), count(wh, "items"), count(wh, "accounts")) == (1, 3, 2)
    assert (count(wh, "tax_rates"), count(wh, "tax_rates__tax_components")) == (2, 2)
    assert (count(wh, "currencies"), count(wh, "organisation")) == (2, 1)
    assert query(wh, "select count(*) from raw_xero.invoices where type <> 'ACCREC'") == [(0,)]
    # paged reads really paged (PAGE_SIZE 2), with the Type filter and includeArchived on the wire
    reads = httpx.get(f"{ext.url}/_sandbox/requests").json()
    invoice_reads = [r for r in reads if r["path"].endswith("/Invoices")]
    assert len(invoice_reads) == 3 and all("ACCREC" in httpx.URL("/?" + r["query"]).params["where"]
                                           for r in invoice_reads)


def test_bad_records_are_reported_with_record_field_and_reason(ext):
    rows = query(ext.warehouse, "select tenant, app, collection, record_id, field, reason "
                                "from raw_xero.rejected_records order by record_id")
    assert rows == [
        (TENANT, "xero", "invoices", "inv-4", "CurrencyCode", "CurrencyCode is not an ISO 4217 currency code"),
        (TENANT, "xero", "invoices", "inv-5", "DueDate", "DueDate is not a Xero date (/Date(ms+0000)/)"),
    ]


def test_money_is_decimal_dates_are_utc_timestamps_and_integers_stay_integers(ext):
    types = dict(query(ext.warehouse, "select column_name, data_type from information_schema.columns "
                                      "where table_schema = 'raw_xero' and table_name = 'invoices'"))
    assert types["total"] == "DECIMAL(38,9)" and types["currency_rate"] == "DECIMAL(38,9)"
    assert types["date"] == types["due_date"] == types["updated_date_utc"] == "TIMESTAMP WITH TIME ZONE"
    assert types["date_string"] == "VARCHAR"
    line_types = dict(query(ext.warehouse, "select column_name, data_type from information_schema.columns "
                                           "where table_schema = 'raw_xero' and table_name = 'invoices__line_items'"))
    assert line_types["unit_amount"] == "DECIMAL(38,9)"
    with duckdb.connect(str(ext.warehouse), read_only=True) as con:
        con.execute("set timezone = 'UTC'")
        date, total = con.execute("select date, total from raw_xero.invoices where invoice_id = 'inv-1'").fetchone()
        assert (date.isoformat(), str(total)) == ("2025-03-02T00:00:00+00:00", "2880.240000000")
        assert con.execute("select date::varchar from raw_xero.credit_notes__allocations").fetchone()[0] \
            .startswith("2025-03-03 00:00:00")
    org_types = dict(query(ext.warehouse, "select column_name, data_type from information_schema.columns "
                                          "where table_schema = 'raw_xero' and table_name = 'organisation'"))
    assert org_types["financial_year_end_day"] == "BIGINT"


def test_a_second_run_loads_only_what_changed(ext):
    with ext.client() as client:
        client.update("Contacts", "c-2", {"EmailAddress": "ap@customer2.example"}, idempotency_key="test-upd-c-2")
    rows = loaded_rows(ext.run())
    assert rows["contacts"] == 1
    assert all(rows.get(t, 0) == 0 for t in ("invoices", "credit_notes", "payments", "items", "accounts",
                                             "tax_rates", "currencies", "organisation")), rows
    assert query(ext.warehouse, "select email_address from raw_xero.contacts where contact_id = 'c-2'") \
        == [("ap@customer2.example",)]
    assert count(ext.warehouse, "contacts") == 4 and count(ext.warehouse, "contacts__addresses") == 4
    # the next read asks only for what changed since the server time of this one (less the overlap)
    modified = [r for r in httpx.get(f"{ext.url}/_sandbox/requests").json() if r["path"].endswith("/Contacts")]
    assert modified, "contacts were read"


def test_a_deleted_draft_stays_as_a_deleted_row_and_a_vanished_item_goes_only_after_a_complete_read(ext):
    with ext.client() as client:
        client.delete("Invoices", "inv-0", idempotency_key="test-del-inv-0")
        client.delete("Items", "it-2", idempotency_key="test-del-it-2")
    # the Items read fails: nothing may be concluded from the items we did not see
    httpx.post(f"{ext.url}/_sandbox/faults", json={"kind": "status", "status": 501, "times": -1,
                                                  "path": "/Items"}).raise_for_status()
    try:
        assert not ext.run(raise_on_error=False).success
    finally:
        httpx.delete(f"{ext.url}/_sandbox/faults").raise_for_status()
    assert query(ext.warehouse, "select count(*) from raw_xero.items where item_id = 'it-2'") == [(1,)]
    rows = loaded_rows(ext.run())
    # only the deleted draft; the contact changed by the previous test may come again (within the cursor overlap)
    assert rows["invoices"] == 1 and rows.get("contacts", 0) <= 1 and rows.get("payments", 0) == 0
    assert query(ext.warehouse, "select status from raw_xero.invoices where invoice_id = 'inv-0'") == [("DELETED",)]
    assert count(ext.warehouse, "invoices__line_items") == 8  # the deleted draft keeps its lines
    assert sorted(r[0] for r in query(ext.warehouse, "select item_id from raw_xero.items")) == ["it-1", "it-3"]
