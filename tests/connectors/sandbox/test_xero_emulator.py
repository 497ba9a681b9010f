"""The Xero emulator over real HTTP on 127.0.0.1: OAuth with rotating refresh tokens and expiring access tokens,
the tenant header, the api.xro/2.0 envelope, paging, If-Modified-Since, where/order filters, every collection's
read, writes (batches, partial success, idempotency replay, the invoice status machine, payments, tax maths),
the three rate limits, the write log, and conformance of the answers to the official OpenAPI document.

Fixtures are built here, inline, in the shape Xero's API returns (see ../shared/vendors/xero.md)."""

from __future__ import annotations

import copy
import ssl
import threading
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from connectors.sandbox import identity
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.launcher import start_sandbox
from connectors.sandbox.xero import SCHEMA_FIELDS, XeroEmulator
from connectors.sandbox.xero_where import WhereError, compile_order, compile_where

SPEC_DIR = Path(__file__).resolve().parents[4] / "shared" / "specs" / "xero"
LOOPBACK_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
T0 = 1_741_171_200.0  # 2025-03-05T10:40:00Z
CONTACT_1 = "5c9d1e3f-7a2b-4c6d-8e0f-2a4b6c8d0e01"
CONTACT_2 = "5c9d1e3f-7a2b-4c6d-8e0f-2a4b6c8d0e02"
CONTACT_3 = "5c9d1e3f-7a2b-4c6d-8e0f-2a4b6c8d0e03"
BANK_ID = "ac000000-0000-4000-8000-000000000090"


def ms_date(ms: int) -> str:
    return f"/Date({ms}+0000)/"


def make_contact(cid: str, name: str, number: str, *, status: str = "ACTIVE", updated_ms: int = 1740000000000) -> dict:
    return {"ContactID": cid, "ContactNumber": number, "ContactStatus": status, "Name": name,
            "EmailAddress": f"ap@{number}.example", "Addresses": [], "Phones": [], "ContactGroups": [],
            "ContactPersons": [], "IsSupplier": False, "IsCustomer": True, "DefaultCurrency": "EUR",
            "HasAttachments": False, "HasValidationErrors": False, "UpdatedDateUTC": ms_date(updated_ms)}


def make_invoice(n: int, *, status: str = "AUTHORISED", contact: str = CONTACT_1, total: str = "1440.00",
                 paid: str = "0.00", updated_ms: int | None = None, date: str = "2025-03-02") -> dict:
    total_d = Decimal(total)
    sub = (total_d / Decimal("1.2")).quantize(Decimal("0.01"))
    due = Decimal(0) if status in ("VOIDED", "DELETED") else total_d - Decimal(paid)
    updated = updated_ms if updated_ms is not None else 1741171190000 + n * 1000
    return {
        "Type": "ACCREC", "InvoiceID": f"0b7e4c2a-91d3-4f65-a8e0-{n:012d}", "InvoiceNumber": f"INV-{n:04d}",
        "Reference": f"PO-{n}", "Status": status, "LineAmountTypes": "Exclusive",
        "Contact": {"ContactID": contact, "Name": "Nordwind GmbH"},
        "DateString": f"{date}T00:00:00", "Date": "/Date(1740873600000+0000)/",
        "DueDateString": "2025-04-01T00:00:00", "DueDate": "/Date(1743465600000+0000)/",
        "CurrencyCode": "EUR", "CurrencyRate": 1.0842,
        "LineItems": [{"LineItemID": f"5f7a0000-0000-4000-8000-{n:012d}", "Description": "Platform fee",
                       "Quantity": 1.0, "UnitAmount": float(sub), "ItemCode": "FEE", "AccountCode": "200",
                       "TaxType": "OUTPUT2", "TaxAmount": float(total_d - sub), "LineAmount": float(sub),
                       "Tracking": []}],
        "SubTotal": float(sub), "TotalTax": float(total_d - sub), "Total": float(total_d),
        "AmountDue": float(due), "AmountPaid": float(Decimal(paid)), "AmountCredited": 0.0,
        "SentToContact": False, "HasAttachments": False, "IsDiscounted": False,
        "Payments": [], "CreditNotes": [], "Prepayments": [], "Overpayments": [],
        "UpdatedDateUTC": ms_date(updated), "UpdatedDateUTCString": "2025-03-05T10:39:50Z",
    }


def settings_collections() -> dict[str, list[dict]]:
    return {
        "organisation": [{"OrganisationID": "b2c885a9-4bb9-4a00-9b6e-6c2bf60b1a65", "Name": "Acme GmbH",
                          "LegalName": "Acme GmbH", "BaseCurrency": "EUR", "CountryCode": "DE", "Version": "GLOBAL",
                          "PaysTax": True, "OrganisationStatus": "ACTIVE", "ShortCode": "!abc12",
                          "Timezone": "WEUROPESTANDARDTIME", "FinancialYearEndDay": 31, "FinancialYearEndMonth": 12,
                          "SalesTaxBasis": "ACCRUALS", "IsDemoCompany": False, "OrganisationType": "COMPANY",
                          "CreatedDateUTC": "/Date(1577836800000)/"}],
        "currencies": [{"Code": "EUR", "Description": "Euro"}, {"Code": "GBP", "Description": "Pound Sterling"},
                       {"Code": "USD", "Description": "United States Dollar"}],
        "tax-rates": [
            {"Name": "20% (VAT on Income)", "TaxType": "OUTPUT2", "ReportTaxType": "OUTPUT", "CanApplyToRevenue": True,
             "DisplayTaxRate": 20.0, "EffectiveRate": 20.0, "Status": "ACTIVE",
             "TaxComponents": [{"Name": "VAT", "Rate": 20.0, "IsCompound": False, "IsNonRecoverable": False}]},
            {"Name": "7% reduced", "TaxType": "TAX002", "ReportTaxType": "OUTPUT", "CanApplyToRevenue": True,
             "DisplayTaxRate": 7.0, "EffectiveRate": 7.0, "Status": "ACTIVE", "TaxComponents": []},
            {"Name": "No VAT", "TaxType": "NONE", "ReportTaxType": "NONE", "CanApplyToRevenue": True,
             "DisplayTaxRate": 0.0, "EffectiveRate": 0.0, "Status": "ACTIVE", "TaxComponents": []},
        ],
        "accounts": [
            {"AccountID": "ac000000-0000-4000-8000-000000000200", "Code": "200", "Name": "Sales", "Type": "REVENUE",
             "Class": "REVENUE", "Status": "ACTIVE", "TaxType": "OUTPUT2", "EnablePaymentsToAccount": False,
             "SystemAccount": "", "UpdatedDateUTC": ms_date(1700000000000)},
            {"AccountID": BANK_ID, "Code": "090", "Name": "Business Bank", "Type": "BANK", "Class": "ASSET",
             "Status": "ACTIVE", "TaxType": "NONE", "EnablePaymentsToAccount": False, "CurrencyCode": "EUR",
             "BankAccountType": "BANK", "UpdatedDateUTC": ms_date(1700000000000)},
        ],
        "items": [{"ItemID": "17000000-0000-4000-8000-000000000001", "Code": "FEE", "Name": "Platform fee",
                   "IsSold": True, "IsPurchased": False, "IsTrackedAsInventory": False,
                   "SalesDetails": {"UnitPrice": 1200.0, "AccountCode": "200", "TaxType": "OUTPUT2"},
                   "UpdatedDateUTC": ms_date(1700000000000)}],
    }


def make_fixtures() -> dict[str, dict[str, list[dict]]]:
    acme = settings_collections()
    acme["contacts"] = [
        make_contact(CONTACT_1, "Nordwind GmbH", "cust_1", updated_ms=1741000000000),
        make_contact(CONTACT_2, "Sudwind AG", "cust_2", updated_ms=1741200000000),
        make_contact(CONTACT_3, "Old Co", "cust_3", status="ARCHIVED", updated_ms=1741300000000),
    ]
    acme["invoices"] = [
        make_invoice(1, status="AUTHORISED"),
        make_invoice(2, status="PAID", total="240.00", paid="240.00", contact=CONTACT_2),
        make_invoice(3, status="DRAFT", total="60.00"),
        make_invoice(4, status="VOIDED", total="120.00", contact=CONTACT_2),
        make_invoice(5, status="AUTHORISED", total="600.00", paid="100.00", date="2025-02-01"),
    ]
    acme["credit-notes"] = [{
        "Type": "ACCRECCREDIT", "CreditNoteID": "c0000000-0000-4000-8000-000000000001", "CreditNoteNumber": "CN-0001",
        "Status": "AUTHORISED", "Contact": {"ContactID": CONTACT_1, "Name": "Nordwind GmbH"},
        "Date": "/Date(1740873600000+0000)/", "DateString": "2025-03-02T00:00:00", "LineAmountTypes": "Exclusive",
        "LineItems": [], "SubTotal": 100.0, "TotalTax": 20.0, "Total": 120.0, "RemainingCredit": 120.0,
        "Allocations": [], "Payments": [], "CurrencyCode": "EUR", "CurrencyRate": 1.0, "HasAttachments": False,
        "UpdatedDateUTC": ms_date(1741171100000), "UpdatedDateUTCString": "2025-03-05T10:38:20Z"}]
    acme["payments"] = [{
        "PaymentID": "9a000000-0000-4000-8000-000000000001", "Date": "/Date(1741000000000+0000)/",
        "Amount": 100.0, "BankAmount": 100.0, "CurrencyRate": 1.0, "Reference": "SEPA-1", "IsReconciled": False,
        "Status": "AUTHORISED", "PaymentType": "ACCRECPAYMENT", "HasAccount": True, "HasValidationErrors": False,
        "Account": {"AccountID": BANK_ID, "Code": "090"},
        "Invoice": {"InvoiceID": "0b7e4c2a-91d3-4f65-a8e0-000000000005", "InvoiceNumber": "INV-0005"},
        "UpdatedDateUTC": ms_date(1741000000000), "UpdatedDateUTCString": "2025-03-03T11:06:40Z"}]
    bulk = settings_collections()
    bulk["contacts"] = [make_contact(CONTACT_1, "Nordwind GmbH", "cust_1")]
    bulk["invoices"] = [make_invoice(n, updated_ms=1741000000000 + n) for n in range(1, 251)]
    return {"acme": acme, "globex": settings_collections(), "bulk": bulk}


# ----- harness --------------------------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def served(clock: Clock) -> Iterator[ServedEmulator]:
    with ServedEmulator(XeroEmulator(make_fixtures(), clock=clock)) as s:
        yield s


def token_for(url: str, tenant: str, refresh_token: str | None = None) -> dict:
    response = httpx.post(f"{url}/connect/token", auth=(identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET),
                          data={"grant_type": "refresh_token",
                                "refresh_token": refresh_token or identity.xero_initial_refresh_token(tenant)},
                          verify=LOOPBACK_TLS)
    assert response.status_code == 200, response.text
    return response.json()


def client_for(url: str, tenant: str, tokens: dict | None = None) -> httpx.Client:
    granted = token_for(url, tenant)
    if tokens is not None:
        tokens.update(granted)
    access = granted["access_token"]
    return httpx.Client(base_url=f"{url}/api.xro/2.0", verify=LOOPBACK_TLS, timeout=10,
                        headers={"Authorization": f"Bearer {access}", "xero-tenant-id": identity.xero_tenant_id(tenant),
                                 "Accept": "application/json"})


@pytest.fixture
def api(served: ServedEmulator) -> Iterator[httpx.Client]:
    with client_for(served.url, "acme") as client:
        yield client


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def writes(served: ServedEmulator) -> list[dict]:
    return httpx.get(f"{served.url}/_sandbox/writes").json()


# ----- spec conformance -------------------------------------------------------------------------------------------

def _openapi_to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_json_schema(v) for k, v in node.items() if k not in ("example", "examples")}
    # the spec writes boolean defaults as strings ("false"); defaults do not validate, drop them
    out.pop("default", None)
    if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "$ref" in out and len(out) > 1:  # OpenAPI 3.0 ignores siblings of $ref (e.g. `type` beside an enum ref)
        out = {"$ref": out["$ref"]}
    return out


@cache
def _openapi(name: str) -> tuple[dict, Registry]:
    path = SPEC_DIR / name
    if not path.exists():
        pytest.skip(f"vendor OpenAPI document not found at {path}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads the 0.9 MB spec in ~1 s
    document = _openapi_to_json_schema(yaml.load(path.read_text(), Loader=loader))
    return document, Registry().with_resource(f"urn:{name}", Resource.from_contents(document,
                                                                                   default_specification=DRAFT4))


def assert_conforms(response: httpx.Response, path: str, method: str = "get",
                    spec: str = "xero_accounting.yaml") -> None:
    document, registry = _openapi(spec)
    declared = document["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in declared, f"{method.upper()} {path} answered {status}, not declared in the spec"
    content = (declared[status] or {}).get("content", {}).get("application/json")
    if content is None:  # e.g. a 400 the spec declares without a body schema: Xero's Error shape
        schema: dict = {"$ref": f"urn:{spec}#/components/schemas/Error"}
    else:
        schema = content["schema"]
        if "$ref" in schema:
            schema = {"$ref": f"urn:{spec}{schema['$ref']}"}
        else:
            schema = {**schema, "items": {"$ref": f"urn:{spec}{schema['items']['$ref']}"}} if "items" in schema \
                else schema
    validator = jsonschema.Draft4Validator(schema, registry=registry)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(response.json())]
    assert not problems, f"{method.upper()} {path} {status}:\n  " + "\n  ".join(problems[:10])


def test_schema_field_lists_match_the_spec() -> None:
    document, _ = _openapi("xero_accounting.yaml")
    schemas = document["components"]["schemas"]
    for name, fields in SCHEMA_FIELDS.items():
        declared = set(schemas[name]["properties"])
        assert declared <= fields, f"{name} misses {declared - fields}"
        invented = fields - declared - {"DateString", "DueDateString"}
        assert not invented, f"{name} invents {invented}"


# ----- auth ---------------------------------------------------------------------------------------------------------

def test_refresh_tokens_rotate_and_access_tokens_expire(served: ServedEmulator, clock: Clock) -> None:
    first = token_for(served.url, "acme")
    assert first["expires_in"] == 1800 and first["token_type"] == "Bearer"
    assert first["refresh_token"] != identity.xero_initial_refresh_token("acme")
    # the used refresh token is dead
    again = httpx.post(f"{served.url}/connect/token", auth=(identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET),
                       data={"grant_type": "refresh_token",
                             "refresh_token": identity.xero_initial_refresh_token("acme")})
    assert again.status_code == 400 and again.json() == {"error": "invalid_grant"}
    wrong_client = httpx.post(f"{served.url}/connect/token", auth=("nobody", "nothing"),
                              data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert wrong_client.json() == {"error": "invalid_client"}
    headers = {"Authorization": f"Bearer {first['access_token']}", "xero-tenant-id": identity.xero_tenant_id("acme")}
    assert httpx.get(f"{served.url}/api.xro/2.0/Organisation", headers=headers).status_code == 200
    clock.now += 1799
    assert httpx.get(f"{served.url}/api.xro/2.0/Organisation", headers=headers).status_code == 200
    clock.now += 2
    expired = httpx.get(f"{served.url}/api.xro/2.0/Organisation", headers=headers)
    assert expired.status_code == 401
    assert expired.json()["Title"] == "Unauthorized" and expired.json()["Detail"].startswith("TokenExpired")
    second = token_for(served.url, "acme", first["refresh_token"])  # the rotated token works once
    headers["Authorization"] = f"Bearer {second['access_token']}"
    assert httpx.get(f"{served.url}/api.xro/2.0/Organisation", headers=headers).status_code == 200
    assert httpx.get(f"{served.url}/api.xro/2.0/Organisation",
                     headers={**headers, "Authorization": "Bearer nonsense"}).status_code == 401
    httpx.post(f"{served.url}/_sandbox/expire-tokens")
    assert httpx.get(f"{served.url}/api.xro/2.0/Organisation", headers=headers).status_code == 401


def test_connections_list_the_granted_tenant(served: ServedEmulator) -> None:
    access = token_for(served.url, "acme")["access_token"]
    for path in ("/connections", "/Connections"):
        response = httpx.get(f"{served.url}{path}", headers={"Authorization": f"Bearer {access}"})
        assert response.status_code == 200
        assert_conforms(response, "/Connections", spec="xero-identity.yaml")
        [connection] = response.json()
        assert connection["tenantId"] == identity.xero_tenant_id("acme")
        assert connection["tenantType"] == "ORGANISATION" and connection["tenantName"] == "Acme GmbH"
    assert httpx.get(f"{served.url}/connections").status_code == 401


def test_tenant_header_is_required_and_must_match_the_token(served: ServedEmulator, api: httpx.Client) -> None:
    missing = api.get("/Invoices", headers={"xero-tenant-id": ""})
    assert missing.status_code == 403
    assert missing.json()["Title"] == "Forbidden" and missing.json()["Detail"] == "AuthenticationUnsuccessful"
    other = api.get("/Invoices", headers={"xero-tenant-id": identity.xero_tenant_id("globex")})
    assert other.status_code == 403
    unknown = api.get("/Invoices", headers={"xero-tenant-id": "00000000-0000-4000-a000-000000000000"})
    assert unknown.status_code == 403
    assert api.get("/Invoices").status_code == 200
    assert api.get("/Invoices", headers={"xero-tenant-id": identity.xero_tenant_id("acme").upper()}).status_code == 200


def test_sandbox_secrets_and_launcher_registration(tmp_path: Path) -> None:
    assert XeroEmulator.sandbox_secrets("acme") == {
        "client_id": identity.XERO_CLIENT_ID, "client_secret": identity.XERO_CLIENT_SECRET,
        "refresh_token": identity.xero_initial_refresh_token("acme")}
    assert XeroEmulator.connection_options("acme") == {"xero_tenant_id": identity.xero_tenant_id("acme")}
    folder = tmp_path / "acme" / "xero"
    folder.mkdir(parents=True)
    for name, records in make_fixtures()["globex"].items():
        (folder / f"{name}.json").write_bytes(orjson.dumps(records))
    with start_sandbox(tmp_path, apps=["xero"]) as sandbox:
        entry = sandbox.registry_document()["tenants"]["acme"]["connections"]["xero"]
        assert entry["xero_tenant_id"] == identity.xero_tenant_id("acme")
        assert set(entry["secrets"]) == {"client_id", "client_secret", "refresh_token"}
        with client_for(sandbox.urls["xero"], "acme") as client:
            assert ok(client.get("/Currencies"))["Currencies"][0]["Code"] == "EUR"


# ----- reads --------------------------------------------------------------------------------------------------------

def test_envelope_and_every_collection_conform_to_the_spec(api: httpx.Client) -> None:
    reads = {
        "/Contacts": "Contacts", "/Invoices": "Invoices", "/CreditNotes": "CreditNotes", "/Payments": "Payments",
        "/Items": "Items", "/Accounts": "Accounts", "/TaxRates": "TaxRates", "/Currencies": "Currencies",
        "/Organisation": "Organisations",
    }
    for path, key in reads.items():
        response = api.get(path)
        body = ok(response)
        assert_conforms(response, path)
        assert body["Status"] == "OK" and body["ProviderName"] and body["Id"]
        assert body["DateTimeUTC"] == f"/Date({int(T0 * 1000)})/"
        assert body[key], path
        assert ("pagination" in body) == (key in ("Contacts", "Invoices", "CreditNotes", "Payments")), path
    # fixtures are served exactly as given
    assert ok(api.get("/Invoices"))["Invoices"][0] == make_fixtures()["acme"]["invoices"][0]
    singles = {
        f"/Contacts/{CONTACT_1}": "/Contacts/{ContactID}", "/Contacts/cust_2": "/Contacts/{ContactNumber}",
        "/Invoices/0b7e4c2a-91d3-4f65-a8e0-000000000001": "/Invoices/{InvoiceID}",
        "/Invoices/INV-0002": "/Invoices/{InvoiceID}",
        "/CreditNotes/CN-0001": "/CreditNotes/{CreditNoteID}",
        "/Payments/9a000000-0000-4000-8000-000000000001": "/Payments/{PaymentID}",
        "/Items/FEE": "/Items/{ItemID}", f"/Accounts/{BANK_ID}": "/Accounts/{AccountID}",
        "/TaxRates/OUTPUT2": "/TaxRates/{TaxType}",
    }
    for path, spec_path in singles.items():
        response = api.get(path)
        assert_conforms(response, spec_path)
        assert len(next(v for k, v in response.json().items() if isinstance(v, list))) == 1, path
    missing = api.get("/Invoices/0b7e4c2a-91d3-4f65-a8e0-999999999999")
    assert missing.status_code == 404 and "cannot be found" in missing.text
    assert api.get("/Nonsense").status_code == 404
    assert api.get("/invoices").status_code == 200  # resource names are case-insensitive


def test_paging_defaults_sizes_and_cap(served: ServedEmulator) -> None:
    with client_for(served.url, "bulk") as bulk:
        first = ok(bulk.get("/Invoices"))
        assert first["pagination"] == {"page": 1, "pageSize": 100, "pageCount": 3, "itemCount": 250}
        assert [i["InvoiceNumber"] for i in first["Invoices"]][:2] == ["INV-0001", "INV-0002"]
        last = ok(bulk.get("/Invoices", params={"page": 3}))
        assert len(last["Invoices"]) == 50 and last["Invoices"][-1]["InvoiceNumber"] == "INV-0250"
        assert ok(bulk.get("/Invoices", params={"page": 4}))["Invoices"] == []
        small = ok(bulk.get("/Invoices", params={"page": 2, "pageSize": 40}))
        assert small["pagination"] == {"page": 2, "pageSize": 40, "pageCount": 7, "itemCount": 250}
        assert small["Invoices"][0]["InvoiceNumber"] == "INV-0041"
        capped = ok(bulk.get("/Invoices", params={"pageSize": 5000}))
        assert capped["pagination"]["pageSize"] == 1000 and len(capped["Invoices"]) == 250
        for bad in ({"page": 0}, {"page": "x"}, {"pageSize": 0}):
            error = bulk.get("/Invoices", params=bad)
            assert error.status_code == 400 and error.json()["Type"] == "ValidationException"
        assert "pagination" not in ok(bulk.get("/Items"))


def test_a_paged_query_is_sorted_once_and_a_write_refreshes_it(served: ServedEmulator) -> None:
    query = {"where": 'Type=="ACCREC"', "order": "InvoiceNumber DESC", "pageSize": 100}
    with client_for(served.url, "bulk") as bulk:
        first = ok(bulk.get("/Invoices", params={**query, "page": 1}))
        assert first["Invoices"][0]["InvoiceNumber"] == "INV-0250"
        second = ok(bulk.get("/Invoices", params={**query, "page": 2}))
        assert second["Invoices"][0]["InvoiceNumber"] == "INV-0150"
        created = ok(bulk.put("/Invoices", json={"Invoices": [{
            "Type": "ACCREC", "Contact": {"ContactID": CONTACT_1}, "InvoiceNumber": "INV-0999",
            "LineItems": [{"Description": "x", "Quantity": 1, "UnitAmount": 10, "AccountCode": "200"}]}]},
            headers={"Idempotency-Key": "cache-refresh-1"}))
        assert created["Invoices"][0]["InvoiceNumber"] == "INV-0999"
        again = ok(bulk.get("/Invoices", params={**query, "page": 1}))
        assert again["pagination"]["itemCount"] == first["pagination"]["itemCount"] + 1
        assert again["Invoices"][0]["InvoiceNumber"] == "INV-0999"


def test_if_modified_since_uses_updated_date_utc(api: httpx.Client) -> None:
    # contacts updated at 1741000000 (2025-03-03T11:06:40Z) and 1741200000 (2025-03-05T18:40:00Z)
    later = ok(api.get("/Contacts", headers={"If-Modified-Since": "2025-03-04T00:00:00"}))["Contacts"]
    assert [c["ContactID"] for c in later] == [CONTACT_2]
    rfc = ok(api.get("/Contacts", headers={"If-Modified-Since": "Tue, 04 Mar 2025 00:00:00 GMT"}))["Contacts"]
    assert [c["ContactID"] for c in rfc] == [CONTACT_2]
    # strictly later: the exact instant of a change is not returned again
    assert ok(api.get("/Contacts", headers={"If-Modified-Since": "2025-03-05T18:40:00"}))["Contacts"] == []
    invoices = ok(api.get("/Invoices", headers={"If-Modified-Since": "2025-03-05T10:39:53"}))
    assert [i["InvoiceNumber"] for i in invoices["Invoices"]] == ["INV-0004", "INV-0005"]
    assert invoices["pagination"]["itemCount"] == 2
    bad = api.get("/Invoices", headers={"If-Modified-Since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["Type"] == "ValidationException"


@pytest.mark.parametrize(("where", "numbers"), [
    ('Status=="AUTHORISED"', ["INV-0001", "INV-0005"]),
    ('Type=="ACCREC" AND Status!="AUTHORISED"', ["INV-0002", "INV-0003", "INV-0004"]),
    ('Status=="DRAFT" OR Status=="VOIDED"', ["INV-0003", "INV-0004"]),
    ('Status == "PAID" || (Status == "DRAFT" && Total < 100)', ["INV-0002", "INV-0003"]),
    (f'Contact.ContactID==Guid("{CONTACT_2.upper()}")', ["INV-0002", "INV-0004"]),
    ("AmountDue > 500", ["INV-0001"]),
    ("AmountDue >= 500 AND AmountDue <= 1440", ["INV-0001", "INV-0005"]),
    ('Date >= DateTime(2025,03,02)', ["INV-0001", "INV-0002", "INV-0003", "INV-0004", "INV-0005"]),
    ('UpdatedDateUTC > DateTime(2025, 3, 5, 10, 39, 53)', ["INV-0004", "INV-0005"]),
    ('UpdatedDateUTC>=DateTime.Parse("2025-03-05T10:39:54")&&Type=="ACCREC"', ["INV-0004", "INV-0005"]),
    ('InvoiceNumber.StartsWith("INV-000") AND NOT Reference.EndsWith("1")',
     ["INV-0002", "INV-0003", "INV-0004", "INV-0005"]),
    ('Reference.ToLower() == "po-3"', ["INV-0003"]),
    ("FullyPaidOnDate == null AND SentToContact == false", ["INV-0001", "INV-0002", "INV-0003", "INV-0004",
                                                            "INV-0005"]),
])
def test_where_filters(api: httpx.Client, where: str, numbers: list[str]) -> None:
    body = ok(api.get("/Invoices", params={"where": where}))
    assert [i["InvoiceNumber"] for i in body["Invoices"]] == numbers


@pytest.mark.parametrize(("where", "message"), [
    ('Foo=="x"', "No property or field 'Foo' exists in type 'Invoice'"),
    ('Status=="AUTHORISED" AND', "Expression expected"),
    ('Status=="AUTHORISED" AND ()', "Expression expected"),
    ("SentToContact == \"yes\"", "Operator '==' incompatible with operand types 'Boolean' and 'String'"),
    ('Status ~ "x"', "Syntax error"),
    ('Name.Matches("x")', "No property or field 'Name' exists in type 'Invoice'"),
    ('Reference.Matches("x")', "No applicable method 'Matches'"),
    ('Status=="AUTHORISED', "Unterminated string literal"),
])
def test_where_errors_are_query_parse_exceptions(api: httpx.Client, where: str, message: str) -> None:
    response = api.get("/Invoices", params={"where": where})
    assert response.status_code == 400
    body = response.json()
    assert body["ErrorNumber"] == 16 and body["Type"] == "QueryParseException"
    assert message in body["Message"]


def test_where_parser_units() -> None:
    record = {"Name": 'Say "hi"', "IsCustomer": True, "Balance": 10, "Contact": {"Name": "A"}}
    assert compile_where('Name == "Say ""hi"""')(record)
    assert compile_where("IsCustomer")(record) and not compile_where("!IsCustomer")(record)
    assert compile_where('Contact.Name.Contains("A") and Balance = 10')(record)
    assert compile_where("10 < Balance OR false")(record) is False
    assert compile_where("Balance <> 11")(record)
    with pytest.raises(WhereError):
        compile_where("")
    with pytest.raises(WhereError):
        compile_where("DateTime(2025,13,1) == Date", None)
    assert compile_order("UpdatedDateUTC DESC, Name") == [(("UpdatedDateUTC",), True), (("Name",), False)]
    with pytest.raises(WhereError):
        compile_order("Name SIDEWAYS")


def test_order_and_list_filters(api: httpx.Client) -> None:
    by_total = ok(api.get("/Invoices", params={"order": "Total DESC"}))["Invoices"]
    assert [i["InvoiceNumber"] for i in by_total] == ["INV-0001", "INV-0005", "INV-0002", "INV-0004", "INV-0003"]
    by_contact = ok(api.get("/Invoices", params={"order": "Contact.ContactID, InvoiceNumber DESC"}))["Invoices"]
    assert [i["InvoiceNumber"] for i in by_contact][:3] == ["INV-0005", "INV-0003", "INV-0001"]
    bad = api.get("/Invoices", params={"order": "Nope ASC"})
    assert bad.status_code == 400 and bad.json()["Type"] == "QueryParseException"

    def numbers(**params: str) -> list[str]:
        return [i["InvoiceNumber"] for i in ok(api.get("/Invoices", params=params))["Invoices"]]

    assert numbers(Statuses="DRAFT,PAID") == ["INV-0002", "INV-0003"]
    assert numbers(IDs="0B7E4C2A-91D3-4F65-A8E0-000000000004,0b7e4c2a-91d3-4f65-a8e0-000000000001") == [
        "INV-0001", "INV-0004"]
    assert numbers(InvoiceNumbers="INV-0003") == ["INV-0003"]
    assert numbers(ContactIDs=CONTACT_2) == ["INV-0002", "INV-0004"]
    assert numbers(searchTerm="po-5") == ["INV-0005"]
    summary = ok(api.get("/Invoices", params={"summaryOnly": "true"}))["Invoices"][0]
    assert "LineItems" not in summary and summary["Total"] == 1440.0

    def contacts(**params: str) -> list[str]:
        return [c["Name"] for c in ok(api.get("/Contacts", params=params))["Contacts"]]

    assert contacts() == ["Nordwind GmbH", "Sudwind AG"]
    assert contacts(includeArchived="true") == ["Nordwind GmbH", "Sudwind AG", "Old Co"]
    assert contacts(IDs=CONTACT_2) == ["Sudwind AG"]
    assert contacts(searchTerm="SUD") == ["Sudwind AG"]
    assert contacts(where='ContactStatus=="ACTIVE" AND Name.Contains("wind")') == ["Nordwind GmbH", "Sudwind AG"]


# ----- writes -------------------------------------------------------------------------------------------------------

def new_invoice(**fields: Any) -> dict:
    return {"Type": "ACCREC", "Contact": {"ContactID": CONTACT_1}, "Date": "2025-03-02", "DueDate": "2025-04-01",
            "Reference": "PO-7781", "CurrencyCode": "EUR", "LineAmountTypes": "Exclusive", "Status": "AUTHORISED",
            "LineItems": [{"Description": "Platform fee", "Quantity": 1, "UnitAmount": 1200, "AccountCode": "200",
                           "TaxType": "OUTPUT2", "ItemCode": "FEE"}], **fields}


def test_create_invoice_computes_totals_dates_and_number(served: ServedEmulator, api: httpx.Client,
                                                        clock: Clock) -> None:
    clock.now = T0 + 60
    response = api.put("/Invoices", json={"Invoices": [new_invoice()]})
    assert_conforms(response, "/Invoices", "put")
    [invoice] = ok(response)["Invoices"]
    assert invoice["InvoiceNumber"] == "INV-0006" and invoice["Status"] == "AUTHORISED"
    assert invoice["Date"] == "/Date(1740873600000+0000)/" and invoice["DateString"] == "2025-03-02T00:00:00"
    assert invoice["DueDate"] == "/Date(1743465600000+0000)/" and invoice["DueDateString"] == "2025-04-01T00:00:00"
    assert invoice["UpdatedDateUTC"] == f"/Date({int(clock.now * 1000)}+0000)/"
    assert invoice["UpdatedDateUTCString"] == "2025-03-05T10:41:00Z"
    assert (invoice["SubTotal"], invoice["TotalTax"], invoice["Total"], invoice["AmountDue"]) == (1200, 240, 1440, 1440)
    assert invoice["LineItems"][0]["TaxAmount"] == 240 and invoice["LineItems"][0]["LineItemID"]
    assert b'"Total":1440.00' in response.content  # exact decimals on the wire
    assert ok(api.get(f"/Invoices/{invoice['InvoiceID']}"))["Invoices"][0] == invoice
    assert writes(served)[-1] == {**writes(served)[-1], "op": "create", "entity": "Invoice",
                                  "id": invoice["InvoiceID"], "tenant": "acme"}


@pytest.mark.parametrize(("amount_types", "lines", "expected"), [
    ("Exclusive", [(3, "33.33", "OUTPUT2"), (1, "10.00", "TAX002")], ("109.99", "20.70", "130.69")),
    ("Inclusive", [(1, "120.00", "OUTPUT2"), (2, "53.50", "TAX002")], ("200.00", "27.00", "227.00")),
    ("NoTax", [(2, "19.99", "OUTPUT2")], ("39.98", "0.00", "39.98")),
])
def test_tax_maths_per_line_amount_type(api: httpx.Client, amount_types: str, lines: list, expected: tuple) -> None:
    body = new_invoice(LineAmountTypes=amount_types, LineItems=[
        {"Description": "x", "Quantity": q, "UnitAmount": float(u), "AccountCode": "200", "TaxType": t}
        for q, u, t in lines])
    response = api.put("/Invoices", json={"Invoices": [body]})
    invoice = orjson.loads(response.content)["Invoices"][0]
    exact = response.json(parse_float=Decimal)["Invoices"][0]
    assert (exact["SubTotal"], exact["TotalTax"], exact["Total"]) == tuple(Decimal(e) for e in expected)
    assert invoice["LineAmountTypes"] == amount_types


def test_validation_exception_applies_nothing(served: ServedEmulator, api: httpx.Client) -> None:
    before = len(writes(served))
    bad = [new_invoice(), new_invoice(Contact={"ContactID": "11111111-1111-4111-8111-111111111111"}),
           new_invoice(LineItems=[{"Description": "x", "Quantity": 1, "UnitAmount": 5, "TaxType": "BOGUS"}])]
    response = api.put("/Invoices", json={"Invoices": bad})
    assert response.status_code == 400
    assert_conforms(response, "/Invoices", "put")
    body = response.json()
    assert body["ErrorNumber"] == 10 and body["Type"] == "ValidationException"
    assert body["Message"] == "A validation exception occurred"
    assert len(body["Elements"]) == 2
    assert "could not be found" in body["Elements"][0]["ValidationErrors"][0]["Message"]
    assert "TaxType code 'BOGUS'" in body["Elements"][1]["ValidationErrors"][0]["Message"]
    assert len(writes(served)) == before
    assert ok(api.get("/Invoices"))["pagination"]["itemCount"] == 5


def test_summarize_errors_false_gives_partial_success(served: ServedEmulator, api: httpx.Client) -> None:
    elements = [{"Name": "Fresh Ltd", "ContactNumber": "cust_9"}, {"Name": "Nordwind GmbH"},
                {"Name": "Other Ltd", "EmailAddress": "not-an-email"}, {"Name": "Third Ltd"}]
    response = api.put("/Contacts", params={"summarizeErrors": "false"}, json={"Contacts": elements})
    assert_conforms(response, "/Contacts", "put")
    contacts = ok(response)["Contacts"]
    assert [c["StatusAttributeString"] for c in contacts] == ["OK", "ERROR", "ERROR", "OK"]
    assert [c.get("HasErrors", False) for c in contacts] == [False, True, True, False]
    assert "already assigned to another contact" in contacts[1]["ValidationErrors"][0]["Message"]
    assert contacts[2]["ValidationErrors"] == [{"Message": "Email address must be valid."}]
    assert [(w["op"], w["id"]) for w in writes(served)] == [("create", contacts[0]["ContactID"]),
                                                            ("create", contacts[3]["ContactID"])]
    names = [c["Name"] for c in ok(api.get("/Contacts"))["Contacts"]]
    assert names == ["Nordwind GmbH", "Sudwind AG", "Fresh Ltd", "Third Ltd"]


def test_contact_upsert_update_and_archive(served: ServedEmulator, api: httpx.Client, clock: Clock) -> None:
    clock.now += 5
    upsert = ok(api.post("/Contacts", json={"Contacts": [{"Name": "nordwind gmbh", "EmailAddress": "new@n.example"},
                                                         {"Name": "Brand New"}]}))["Contacts"]
    assert upsert[0]["ContactID"] == CONTACT_1 and upsert[0]["EmailAddress"] == "new@n.example"
    assert upsert[1]["ContactID"] != CONTACT_1 and upsert[1]["ContactStatus"] == "ACTIVE"
    assert upsert[0]["UpdatedDateUTC"] == f"/Date({int(clock.now * 1000)}+0000)/"
    assert upsert[1]["UpdatedDateUTC"] == f"/Date({int(clock.now * 1000) + 1}+0000)/"  # strictly increasing
    archived = ok(api.post(f"/Contacts/{CONTACT_2}", json={"ContactStatus": "ARCHIVED"}))["Contacts"][0]
    assert archived["ContactStatus"] == "ARCHIVED"
    assert [w["op"] for w in writes(served)] == ["update", "create", "archive"]
    duplicate = api.put("/Contacts", json={"Contacts": [{"Name": "Brand New"}]})
    assert duplicate.status_code == 400
    assert api.post("/Contacts/5c9d1e3f-0000-4000-8000-000000000000", json={"Name": "x"}).status_code == 404


def test_items_create_update_delete(served: ServedEmulator, api: httpx.Client) -> None:
    created = ok(api.put("/Items", json={"Items": [{"Code": "SEAT", "Name": "Seat", "SalesDetails": {
        "UnitPrice": 9.5, "AccountCode": "200", "TaxType": "OUTPUT2"}}]}))["Items"][0]
    assert created["IsSold"] is True and created["IsPurchased"] is False
    clash = api.put("/Items", json={"Items": [{"Code": "SEAT"}]})
    assert clash.status_code == 400 and "already exists" in clash.text
    renamed = ok(api.post("/Items", json={"Items": [{"Code": "SEAT", "Name": "Seat licence"}]}))["Items"][0]
    assert renamed["ItemID"] == created["ItemID"] and renamed["Name"] == "Seat licence"
    assert api.delete(f"/Items/{created['ItemID']}").status_code == 204
    assert [i["Code"] for i in ok(api.get("/Items"))["Items"]] == ["FEE"]
    assert [w["op"] for w in writes(served)] == ["create", "update", "delete"]


def test_idempotency_key_replays_the_first_answer(served: ServedEmulator, api: httpx.Client, clock: Clock) -> None:
    headers = {"Idempotency-Key": "sync-run-1:invoice-42"}
    body = {"Invoices": [new_invoice(InvoiceNumber="SEQ-42")]}
    first = api.put("/Invoices", json=body, headers=headers)
    second = api.put("/Invoices", json=body, headers=headers)
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert [(w["op"], w["idempotency_key"]) for w in writes(served)] == [("create", "sync-run-1:invoice-42")]
    assert ok(api.get("/Invoices", params={"InvoiceNumbers": "SEQ-42"}))["pagination"]["itemCount"] == 1
    changed = api.put("/Invoices", json={"Invoices": [new_invoice(InvoiceNumber="SEQ-43")]}, headers=headers)
    assert changed.status_code == 400 and changed.json()["Type"] == "ValidationException"
    # a failed request replays its failure too (no second attempt sneaks through under the same key)
    bad = {"Invoices": [new_invoice(InvoiceNumber="SEQ-42")]}
    failure = api.put("/Invoices", json=bad, headers={"Idempotency-Key": "k2"})
    assert failure.status_code == 400 and api.put("/Invoices", json=bad, headers={"Idempotency-Key": "k2"}).content \
        == failure.content
    assert api.put("/Invoices", json=body, headers={"Idempotency-Key": "x" * 129}).status_code == 400
    clock.now += 361  # the key expires: the same request runs again (and now clashes on the number)
    assert api.put("/Invoices", json=body, headers=headers).status_code == 400
    requests_seen = httpx.get(f"{served.url}/_sandbox/requests").json()
    assert requests_seen[0]["path"] == "/connect/token" and requests_seen[0]["idempotency_key"] is None
    assert requests_seen[-1]["idempotency_key"] == headers[
        "Idempotency-Key"]


def test_void_and_delete_status_rules(served: ServedEmulator, api: httpx.Client) -> None:
    def post(number: str, status: str) -> httpx.Response:
        return api.post(f"/Invoices/{number}", json={"InvoiceNumber": number, "Status": status})

    voided = post("INV-0001", "VOIDED")
    assert_conforms(voided, "/Invoices/{InvoiceID}", "post")
    assert ok(voided)["Invoices"][0]["Status"] == "VOIDED" and voided.json()["Invoices"][0]["AmountDue"] == 0
    for number, status in (("INV-0001", "AUTHORISED"), ("INV-0002", "VOIDED"), ("INV-0004", "DELETED"),
                           ("INV-0005", "VOIDED"), ("INV-0003", "VOIDED")):
        refused = post(number, status)
        assert refused.status_code == 400, (number, status)
        assert "not of valid status for modification" in refused.json()["Elements"][0]["ValidationErrors"][0][
            "Message"]
    assert ok(post("INV-0003", "DELETED"))["Invoices"][0]["Status"] == "DELETED"
    created = ok(api.put("/Invoices", json=new_invoice(Status="DRAFT")))["Invoices"][0]
    assert created["Status"] == "DRAFT"
    assert post(created["InvoiceNumber"], "AUTHORISED").status_code == 200
    assert post(created["InvoiceNumber"], "DELETED").status_code == 400
    assert [(w["op"], w["entity"]) for w in writes(served)] == [
        ("void", "Invoice"), ("delete", "Invoice"), ("create", "Invoice"), ("update", "Invoice")]
    # a part-paid invoice keeps its lines
    relined = api.post("/Invoices/INV-0005", json={"LineItems": [{"Description": "x", "UnitAmount": 1}]})
    assert relined.status_code == 400
    assert ok(api.post("/Invoices/INV-0005", json={"Reference": "new ref"}))["Invoices"][0]["Reference"] == "new ref"


def test_credit_notes_create_and_void(api: httpx.Client) -> None:
    body = {"Type": "ACCRECCREDIT", "Contact": {"ContactID": CONTACT_1}, "Date": "2025-03-04", "Status": "AUTHORISED",
            "LineItems": [{"Description": "Refund", "Quantity": 1, "UnitAmount": 50, "AccountCode": "200"}]}
    response = api.put("/CreditNotes", json={"CreditNotes": [body]})
    assert_conforms(response, "/CreditNotes", "put")
    note = ok(response)["CreditNotes"][0]
    # no TaxType on the line: the account's (OUTPUT2, 20%) applies
    assert note["CreditNoteNumber"] == "CN-0002" and note["Total"] == 60 and note["RemainingCredit"] == 60
    assert note["LineItems"][0]["TaxType"] == "OUTPUT2"
    voided = ok(api.post(f"/CreditNotes/{note['CreditNoteID']}", json={"Status": "VOIDED"}))["CreditNotes"][0]
    assert voided["Status"] == "VOIDED"


def test_credit_note_allocation_settles_invoices(served: ServedEmulator, api: httpx.Client) -> None:
    note_id = "c0000000-0000-4000-8000-000000000001"  # AUTHORISED, 120.00 left, contact 1
    response = api.put(f"/CreditNotes/{note_id}/Allocations", json={"Allocations": [
        {"Invoice": {"InvoiceID": "0b7e4c2a-91d3-4f65-a8e0-000000000001"}, "Amount": 100, "Date": "2025-03-06"}]})
    assert_conforms(response, "/CreditNotes/{CreditNoteID}/Allocations", "put")
    [allocation] = ok(response)["Allocations"]
    assert allocation["Amount"] == 100 and allocation["Date"] == "/Date(1741219200000+0000)/"
    note = ok(api.get(f"/CreditNotes/{note_id}"))["CreditNotes"][0]
    assert note["RemainingCredit"] == 20 and note["Status"] == "AUTHORISED" and len(note["Allocations"]) == 1
    invoice = ok(api.get("/Invoices/INV-0001"))["Invoices"][0]
    assert (invoice["AmountCredited"], invoice["AmountDue"]) == (100, 1340)
    assert invoice["CreditNotes"][0]["CreditNoteID"] == note_id
    too_much = api.put(f"/CreditNotes/{note_id}/Allocations",
                       json={"Allocations": [{"Invoice": {"InvoiceNumber": "INV-0001"}, "Amount": 21}]})
    assert too_much.status_code == 400 and "remaining credit" in too_much.text
    other_contact = api.put(f"/CreditNotes/{note_id}/Allocations",
                            json={"Invoice": {"InvoiceNumber": "INV-0002"}, "Amount": 1})
    assert other_contact.status_code == 400
    rest = api.put(f"/CreditNotes/{note_id}/Allocations", json={"Invoice": {"InvoiceNumber": "INV-0005"}, "Amount": 20})
    assert ok(rest)["Allocations"][0]["Amount"] == 20
    assert ok(api.get(f"/CreditNotes/{note_id}"))["CreditNotes"][0]["Status"] == "PAID"
    # credited invoices cannot be voided any more
    assert api.post("/Invoices/INV-0001", json={"Status": "VOIDED"}).status_code == 400
    assert [(w["op"], w["entity"]) for w in writes(served)] == [
        ("allocate", "CreditNote"), ("update", "Invoice"), ("allocate", "CreditNote"), ("update", "Invoice")]
    assert api.put("/Invoices/INV-0001/Allocations", json={}).status_code == 404


def test_payments_settle_invoices(served: ServedEmulator, api: httpx.Client) -> None:
    invoice_id = "0b7e4c2a-91d3-4f65-a8e0-000000000001"
    part = api.put("/Payments", json={"Payments": [{"Invoice": {"InvoiceID": invoice_id}, "Account": {"Code": "090"},
                                                    "Date": "2025-03-20", "Amount": 440.00, "Reference": "SEPA-88"}]})
    assert_conforms(part, "/Payments", "put")
    payment = ok(part)["Payments"][0]
    assert payment["Status"] == "AUTHORISED" and payment["PaymentType"] == "ACCRECPAYMENT"
    assert payment["Amount"] == 440 and payment["Invoice"]["InvoiceID"] == invoice_id
    invoice = ok(api.get(f"/Invoices/{invoice_id}"))["Invoices"][0]
    assert (invoice["AmountPaid"], invoice["AmountDue"], invoice["Status"]) == (440, 1000, "AUTHORISED")
    too_much = api.put("/Payments", json={"Invoice": {"InvoiceID": invoice_id}, "Account": {"Code": "090"},
                                          "Amount": 1000.01})
    assert too_much.status_code == 400 and "exceeds the amount outstanding" in too_much.text
    not_bank = api.put("/Payments", json={"Invoice": {"InvoiceID": invoice_id}, "Account": {"Code": "200"},
                                          "Amount": 1})
    assert not_bank.status_code == 400
    draft = api.put("/Payments", json={"Invoice": {"InvoiceNumber": "INV-0003"}, "Account": {"Code": "090"},
                                       "Amount": 1})
    assert "Authorised documents" in draft.text
    rest = ok(api.put("/Payments", json={"Payments": [
        {"Invoice": {"InvoiceNumber": "INV-0001"}, "Account": {"AccountID": BANK_ID}, "Date": "2025-03-21",
         "Amount": 1000}]}))["Payments"][0]
    invoice = ok(api.get(f"/Invoices/{invoice_id}"))["Invoices"][0]
    assert (invoice["AmountPaid"], invoice["AmountDue"], invoice["Status"]) == (1440, 0, "PAID")
    assert invoice["FullyPaidOnDate"] == "/Date(1742515200000+0000)/" and len(invoice["Payments"]) == 2
    assert api.post(f"/Invoices/{invoice_id}", json={"Status": "VOIDED"}).status_code == 400  # paid: refused
    deleted = ok(api.post(f"/Payments/{rest['PaymentID']}", json={"Status": "DELETED"}))["Payments"][0]
    assert deleted["Status"] == "DELETED"
    invoice = ok(api.get(f"/Invoices/{invoice_id}"))["Invoices"][0]
    assert (invoice["AmountDue"], invoice["Status"]) == (1000, "AUTHORISED") and "FullyPaidOnDate" not in invoice
    assert api.post(f"/Payments/{rest['PaymentID']}", json={"Amount": 5}).status_code == 400
    assert [(w["op"], w["entity"]) for w in writes(served)] == [
        ("create", "Payment"), ("update", "Invoice"), ("create", "Payment"), ("paid", "Invoice"),
        ("delete", "Payment"), ("update", "Invoice")]
    changed = ok(api.get("/Payments", params={"where": 'Status=="DELETED"'}))["Payments"]
    assert [p["PaymentID"] for p in changed] == [rest["PaymentID"]]


# ----- rate limits --------------------------------------------------------------------------------------------------

@pytest.fixture
def limited(clock: Clock) -> Iterator[ServedEmulator]:
    with ServedEmulator(XeroEmulator(make_fixtures(), clock=clock, rate_limits=True, per_day=80)) as s:
        yield s


def test_minute_and_daily_limits(limited: ServedEmulator, clock: Clock) -> None:
    tokens: dict = {}
    with client_for(limited.url, "acme", tokens) as client, client_for(limited.url, "globex") as other:
        for n in range(60):
            response = client.get("/Currencies")
            assert response.status_code == 200, n
        assert response.headers["X-MinLimit-Remaining"] == "0" and response.headers["X-DayLimit-Remaining"] == "20"
        throttled = client.get("/Currencies")
        assert throttled.status_code == 429
        assert throttled.headers["X-Rate-Limit-Problem"] == "minute" and throttled.headers["Retry-After"] == "60"
        assert other.get("/Currencies").status_code == 200  # limits are per tenant
        clock.now += 30
        assert client.get("/Currencies").headers["Retry-After"] == "30"
        clock.now += 31
        for _ in range(20):
            assert client.get("/Currencies").status_code == 200
        daily = client.get("/Currencies")
        assert daily.status_code == 429 and daily.headers["X-Rate-Limit-Problem"] == "daily"
        assert int(daily.headers["Retry-After"]) == 86400 - 61
        clock.now += 86400
        renewed = token_for(limited.url, "acme", tokens["refresh_token"])  # token calls are not rate limited
        client.headers["Authorization"] = f"Bearer {renewed['access_token']}"
        assert client.get("/Currencies").status_code == 200


def test_concurrent_limit(limited: ServedEmulator) -> None:
    emulator: XeroEmulator = limited.emulator  # type: ignore[assignment]
    release, entered = threading.Event(), threading.Semaphore(0)
    original = emulator.list_resource

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.release()
        release.wait(5)
        return original(*args, **kwargs)

    emulator.list_resource = held  # type: ignore[method-assign]
    with client_for(limited.url, "acme") as client:
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(client.get("/Currencies").status_code))
                   for _ in range(5)]
        for thread in threads:
            thread.start()
        for _ in range(5):
            assert entered.acquire(timeout=5)
        blocked = client.get("/Items/FEE")  # a sixth request while five are in flight
        release.set()
        for thread in threads:
            thread.join(5)
    assert blocked.status_code == 429 and blocked.headers["X-Rate-Limit-Problem"] == "concurrent"
    assert "Retry-After" in blocked.headers
    assert results == [200] * 5


def test_limits_are_off_unless_enabled(served: ServedEmulator, api: httpx.Client) -> None:
    for _ in range(70):
        assert api.get("/Currencies").status_code == 200


def test_injected_faults_use_xero_shapes(served: ServedEmulator, api: httpx.Client) -> None:
    httpx.post(f"{served.url}/_sandbox/faults", json={"kind": "status", "status": 429, "retry_after": "7",
                                                      "path": "/Invoices"})
    throttled = api.get("/Invoices")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.headers["X-Rate-Limit-Problem"] == "minute"
    httpx.post(f"{served.url}/_sandbox/faults", json={"kind": "expired_token"})
    expired = api.get("/Invoices")
    assert expired.status_code == 401 and expired.json()["Detail"].startswith("TokenExpired")
    assert api.get("/Invoices").status_code == 200


def test_fixtures_are_not_mutated_by_writes(api: httpx.Client) -> None:
    fixtures = make_fixtures()
    kept = copy.deepcopy(fixtures)
    with ServedEmulator(XeroEmulator(fixtures)) as s, client_for(s.url, "acme") as client:
        ok(client.post("/Invoices/INV-0001", json={"Status": "VOIDED"}))
    assert fixtures == kept


def test_demo_generator_fixtures_load_and_agree_with_the_tax_maths(tmp_path: Path) -> None:
    """The demo generator's Xero files are served, and every well-formed invoice's totals are what the emulator
    computes from its lines (so writes and fixtures follow the same arithmetic)."""
    from connectors.sandbox.demo_data import generate

    generate(tmp_path, invoices=40, seed=3, tenants=2)
    if not list(tmp_path.glob("*/xero")):
        pytest.skip("the demo generator emits no Xero tenant")
    with start_sandbox(tmp_path, apps=["xero"]) as sandbox:
        emulator: XeroEmulator = sandbox.emulator("xero")  # type: ignore[assignment]
        checked = 0
        for tenant in emulator.tenants:
            with client_for(sandbox.urls["xero"], tenant) as client:
                for path in ("/Contacts", "/Invoices", "/CreditNotes", "/Payments", "/Items", "/Accounts",
                             "/TaxRates", "/Currencies", "/Organisation"):
                    assert client.get(path).status_code == 200, path
                invoices = ok(client.get("/Invoices", params={"pageSize": 1000}))["Invoices"]
            org = emulator.orgs[tenant]
            for invoice in invoices:
                if not all(isinstance(invoice.get(k), (int, float)) for k in ("Total", "TotalTax")):
                    continue  # a planted malformed record, served as given
                errors: list[str] = []
                _, subtotal, tax, _ = emulator._price_lines(org, invoice["LineItems"], invoice["LineAmountTypes"],
                                                            errors)
                assert not errors and (subtotal + tax, tax) == (Decimal(str(invoice["Total"])),
                                                                Decimal(str(invoice["TotalTax"]))), invoice
                checked += 1
        assert checked
