"""XeroClient: first against httpx.MockTransport answering with bodies copied from the vendor notes and the
official spec (error shapes, envelopes, per-element results), then against the Xero emulator served over HTTP
on loopback (OAuth with rotating refresh tokens, tenant header, paging, If-Modified-Since, writes)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import httpx
import pytest

from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.errors import (
    AuthenticationError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from connectors.http import RateLimiter, RetryPolicy
from connectors.registry import parse_registry
from connectors.xero import (
    XERO_TOKEN_URL,
    XeroClient,
    format_if_modified_since,
    parse_dotnet_date,
    quote_literal,
    token_url_for,
)

FAST = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=5.0, jitter=False)
TENANT_ID = "0b7e4c2a-91d3-4f65-a8e0-3c5d7f9b1e24"
BASE = "https://api.example.test"

# Copied from the vendor notes (§1, §5) and the spec's examples.
VALIDATION_400 = {"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred",
                  "Elements": [{"InvoiceID": "00000000-0000-0000-0000-000000000000", "Type": "ACCREC",
                                "ValidationErrors": [{"Message": "Invoice not of valid status for modification"}]}]}
UNAUTHORIZED_401 = {"Type": None, "Title": "Unauthorized", "Status": 401,
                    "Detail": "TokenExpired: token expired at 04/09/2023 05:16:59",
                    "Instance": "6489df60-0000-0000-0000-000000000000", "Extensions": {}}
FORBIDDEN_403 = {"Type": None, "Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful",
                 "Instance": "1", "Extensions": {}}


def envelope(key: str, records: list, **extra) -> dict:
    return {"Id": "9c2a0000-0000-0000-0000-000000000000", "Status": "OK", "ProviderName": "Ledgerlink",
            "DateTimeUTC": "/Date(1741171200000)/", key: records, **extra}


class FakeXero:
    """A scripted Xero: a token endpoint that rotates refresh tokens, and `answer(request)` for the API."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.refresh_tokens = ["rt-0"]
        self.counter = itertools.count(1)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/connect/token":
            form = dict(httpx.QueryParams(request.content.decode()))
            if form.get("refresh_token") != self.refresh_tokens[-1]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            n = next(self.counter)
            self.refresh_tokens.append(f"rt-{n}")
            return httpx.Response(200, json={"access_token": f"at-{n}", "refresh_token": f"rt-{n}",
                                             "expires_in": 1800, "token_type": "Bearer"})
        return self.answer(request)

    @property
    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/connect/token"]


def client_for(fake: FakeXero, tmp_path, **kw) -> XeroClient:
    store = TokenStore(tmp_path / "tokens.json")
    auth = OAuth2RefreshAuth(token_url_for(BASE), "cid", "csecret", store, "acme.xero",
                             initial_refresh_token="rt-0", app="xero")
    kw.setdefault("retry", FAST)
    kw.setdefault("sleep", lambda s: None)
    return XeroClient(BASE, TENANT_ID, auth, transport=httpx.MockTransport(fake), **kw)


def test_token_url_and_date_and_header_helpers():
    assert token_url_for("https://api.xero.com") == XERO_TOKEN_URL
    assert token_url_for("http://127.0.0.1:8713/") == "http://127.0.0.1:8713/connect/token"
    assert parse_dotnet_date("/Date(1740873600000+0000)/") == datetime(2025, 3, 2, tzinfo=UTC)
    assert parse_dotnet_date("/Date(1552326816230)/").year == 2019
    assert parse_dotnet_date("2025-03-05T10:39:50Z") == datetime(2025, 3, 5, 10, 39, 50, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_dotnet_date("not a date")
    assert format_if_modified_since(datetime(2025, 3, 1, 1, 2, 3, 999, tzinfo=UTC)) == "2025-03-01T01:02:03"
    with pytest.raises(ValueError):
        format_if_modified_since(datetime(2025, 3, 1))
    assert quote_literal('Nord "wind"') == '"Nord ""wind"""'


def test_every_call_carries_tenant_header_json_accept_and_a_bearer_whose_rotation_is_persisted(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(200, json=envelope("Organisations", [{"OrganisationID": "o1"}])))
    with client_for(fake, tmp_path) as client:
        assert client.organisation()["OrganisationID"] == "o1"
    call = fake.api_requests[0]
    assert call.url.path == "/api.xro/2.0/Organisation"
    assert call.headers["xero-tenant-id"] == TENANT_ID
    assert call.headers["Accept"] == "application/json"
    assert call.headers["Authorization"] == "Bearer at-1"
    token_call = fake.requests[0]
    assert token_call.headers["Authorization"].startswith("Basic ")
    stored = json.loads((tmp_path / "tokens.json").read_text())["acme.xero"]
    assert stored["refresh_token"] == "rt-1" and stored["access_token"] == "at-1"
    # a new client (a new run) refreshes with the rotated token, not the initial one that is now dead
    fake.answer = lambda r: httpx.Response(200, json=envelope("Organisations", [{"OrganisationID": "o1"}]))
    store = TokenStore(tmp_path / "tokens.json")
    store.put("acme.xero", {**stored, "access_token": None})
    with client_for(fake, tmp_path) as client:
        client.organisation()
    assert fake.refresh_tokens[-1] == "rt-2"


def test_paging_stops_at_a_short_page_and_sends_where_order_and_if_modified_since(tmp_path):
    rows = [{"InvoiceID": f"id-{i:03d}", "Type": "ACCREC"} for i in range(5)]

    def answer(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["pageSize"])
        chunk = rows[(page - 1) * size: page * size]
        return httpx.Response(200, json=envelope("Invoices", chunk, pagination={
            "page": page, "pageSize": size, "pageCount": 3, "itemCount": 5}))

    fake = FakeXero(answer)
    since = datetime(2025, 3, 1, tzinfo=UTC)
    with client_for(fake, tmp_path) as client:
        pages = list(client.iter_pages("Invoices", where='Type=="ACCREC"', modified_since=since, page_size=2))
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert pages[0].server_time == datetime(2025, 3, 5, 10, 40, tzinfo=UTC)
    first = fake.api_requests[0]
    assert first.url.params["where"] == 'Type=="ACCREC"' and first.url.params["order"] == "InvoiceID ASC"
    assert first.headers["If-Modified-Since"] == "2025-03-01T00:00:00"
    assert [r.url.params["page"] for r in fake.api_requests] == ["1", "2", "3"]


def test_unpaged_collections_are_read_whole_in_one_call(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(200, json=envelope("Items", [{"ItemID": "a"}, {"ItemID": "b"}])))
    with client_for(fake, tmp_path) as client:
        pages = list(client.iter_pages("Items"))
        with pytest.raises(ValueError):
            client.get_page("Items", page=1)
    assert len(pages) == 1 and len(pages[0].records) == 2
    assert "page" not in fake.api_requests[0].url.params


def test_validation_exception_is_decoded_with_element_messages_and_not_retried(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(400, json=VALIDATION_400))
    with client_for(fake, tmp_path) as client, pytest.raises(ValidationFailed) as caught:
        client.void("Invoices", "inv-1", idempotency_key="void:inv-1")
    error = caught.value
    assert error.code == "ValidationException" and error.status == 400
    assert "Invoice not of valid status for modification" in str(error)
    assert len(fake.api_requests) == 1


def test_401_problem_body_refreshes_once_then_raises_authentication_error(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(401, json=UNAUTHORIZED_401))
    with client_for(fake, tmp_path) as client, pytest.raises(AuthenticationError) as caught:
        client.get_page("Contacts", page=1)
    assert caught.value.code == "TokenExpired"
    assert len(fake.api_requests) == 2  # refused, refreshed, refused again: the connection needs re-authorising
    assert "at-" not in str(caught.value) and "rt-" not in str(caught.value)


def test_403_wrong_tenant_is_permission_denied(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(403, json=FORBIDDEN_403))
    with client_for(fake, tmp_path) as client, pytest.raises(PermissionDenied) as caught:
        client.get_page("Contacts", page=1)
    assert caught.value.code == "AuthenticationUnsuccessful"


def test_404_is_not_found(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(404, text="The resource you're looking for cannot be found"))
    with client_for(fake, tmp_path) as client, pytest.raises(NotFound):
        client.get("Invoices", "missing")


def test_minute_429_waits_retry_after_and_day_429_is_not_retried(tmp_path):
    answers = iter([httpx.Response(429, headers={"Retry-After": "2", "X-Rate-Limit-Problem": "minute"}),
                    httpx.Response(200, json=envelope("Currencies", [{"Code": "EUR"}]))])
    fake = FakeXero(lambda r: next(answers))
    slept: list[float] = []
    with client_for(fake, tmp_path, sleep=slept.append) as client:
        assert client.get_page("Currencies").records == [{"Code": "EUR"}]
    assert slept and slept[0] >= 2

    fake = FakeXero(lambda r: httpx.Response(429, headers={"Retry-After": "3600", "X-Rate-Limit-Problem": "day"}))
    with client_for(fake, tmp_path) as client, pytest.raises(RateLimited) as caught:
        client.get_page("Currencies")
    assert caught.value.code == "day" and not caught.value.retriable and caught.value.retry_after == 3600
    assert len(fake.api_requests) == 1


def test_503_organisation_offline_is_retried(tmp_path):
    answers = iter([httpx.Response(503, json={"ErrorNumber": 503, "Type": "OrganisationOfflineException",
                                              "Message": "Organisation is offline"}),
                    httpx.Response(200, json=envelope("Currencies", []))])
    fake = FakeXero(lambda r: next(answers))
    with client_for(fake, tmp_path) as client:
        assert client.get_page("Currencies").records == []
    fake = FakeXero(lambda r: httpx.Response(503, json={"ErrorNumber": 503, "Type": "OrganisationOfflineException",
                                                        "Message": "Organisation is offline"}))
    with client_for(fake, tmp_path) as client, pytest.raises(ServerError):
        client.get_page("Currencies")


def test_many_elements_per_write_with_per_element_results_and_the_idempotency_key(tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["Invoices"]
        assert len(sent) == 2
        return httpx.Response(200, json=envelope("Invoices", [
            {**sent[0], "InvoiceID": "new-1", "StatusAttributeString": "OK", "ValidationErrors": []},
            {**sent[1], "InvoiceID": "00000000-0000-0000-0000-000000000000", "HasErrors": True,
             "StatusAttributeString": "ERROR",
             "ValidationErrors": [{"Message": "The Contact must contain at least 1 of the following elements to "
                                              "identify the contact: Name, ContactID, ContactNumber"}]},
        ]))

    fake = FakeXero(answer)
    elements = [{"Type": "ACCREC", "Contact": {"ContactID": "c1"}, "InvoiceNumber": "INV-1"},
                {"Type": "ACCREC", "Contact": {}, "InvoiceNumber": "INV-2"}]
    with client_for(fake, tmp_path) as client:
        results = client.create_many("Invoices", elements, idempotency_key="t1:invoices:INV-1,INV-2")
        assert client.error_of(results[0]) is None
        assert isinstance(client.error_of(results[1]), ValidationFailed)
        with pytest.raises(ValueError):
            client.create_many("Invoices", elements, idempotency_key="")
        with pytest.raises(ValueError):
            client.create_many("Invoices", elements, idempotency_key="k" * 129)
        with pytest.raises(ValueError):
            client.upsert_many("Invoices", [{"InvoiceNumber": str(i)} for i in range(51)], idempotency_key="k")
    assert [(r.ok, r.id) for r in results] == [(True, "new-1"), (False, None)]
    assert "identify the contact" in results[1].errors[0]
    request = fake.api_requests[0]
    assert request.method == "PUT" and request.url.params["summarizeErrors"] == "false"
    assert request.headers["Idempotency-Key"] == "t1:invoices:INV-1,INV-2"


def test_a_write_cut_off_by_a_server_error_is_resent_with_the_same_idempotency_key(tmp_path):
    answers = iter([httpx.Response(500, text="oops"),
                    httpx.Response(200, json=envelope("Contacts", [{"ContactID": "c1", "Name": "N"}]))])
    fake = FakeXero(lambda r: next(answers))
    with client_for(fake, tmp_path) as client:
        results = client.upsert_many("Contacts", [{"Name": "N"}], idempotency_key="contact:cust_1")
    assert results[0].ok
    keys = [r.headers["Idempotency-Key"] for r in fake.api_requests]
    assert keys == ["contact:cust_1", "contact:cust_1"] and all(r.method == "POST" for r in fake.api_requests)


def test_void_and_delete_shapes(tmp_path):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        body = json.loads(request.content)
        if request.url.path.endswith("/Payments/p1"):
            return httpx.Response(200, json=envelope("Payments", [{"PaymentID": "p1", **body}]))
        return httpx.Response(200, json=envelope("Invoices", body["Invoices"]))

    fake = FakeXero(answer)
    with client_for(fake, tmp_path) as client:
        assert client.void("Invoices", "i1", idempotency_key="v:i1")["Status"] == "VOIDED"
        assert client.delete("Invoices", "i2", idempotency_key="d:i2")["Status"] == "DELETED"
        assert client.delete("Payments", "p1", idempotency_key="d:p1")["Status"] == "DELETED"
        assert client.delete("Items", "it1", idempotency_key="d:it1") is None
        with pytest.raises(ValueError):
            client.void("Contacts", "c1", idempotency_key="v:c1")
    calls = [(r.method, r.url.path.removeprefix("/api.xro/2.0/"), r.content) for r in fake.api_requests]
    assert calls[0][:2] == ("POST", "Invoices/i1")
    assert json.loads(calls[0][2]) == {"Invoices": [{"InvoiceID": "i1", "Status": "VOIDED"}]}
    assert json.loads(calls[2][2]) == {"Status": "DELETED"}
    assert calls[3][:2] == ("DELETE", "Items/it1")
    assert all("Idempotency-Key" in r.headers for r in fake.api_requests)


def test_default_pace_is_60_per_minute_and_5_in_flight(tmp_path):
    fake = FakeXero(lambda r: httpx.Response(200, json=envelope("Currencies", [])))
    with client_for(fake, tmp_path) as client:
        assert (client.limiter.per_minute, client.limiter.max_concurrent) == (60, 5)
    with client_for(fake, tmp_path, limiter=RateLimiter(per_minute=10)) as client:
        assert client.limiter.per_minute == 10


def test_registry_requires_the_tenant_id_and_build_client_uses_the_token_url_option(tmp_path):
    from connectors.clients import build_client
    from connectors.registry import RegistryError

    secrets = {"client_id": "X_ID", "client_secret": "X_SECRET", "refresh_token": "X_RT"}
    with pytest.raises(RegistryError, match="xero_tenant_id"):
        parse_registry({"tenants": {"acme": {"connections": {"xero": {"base_url": BASE, "secrets": secrets}}}}})
    registry = parse_registry({"tenants": {"acme": {"connections": {"xero": {
        "base_url": "https://api.xero.com", "xero_tenant_id": TENANT_ID, "secrets": secrets}}}}})
    environ = {"X_ID": "id", "X_SECRET": "secret", "X_RT": "rt"}
    with build_client(registry.get("acme.xero"), token_store=TokenStore(tmp_path / "t.json"),
                      environ=environ) as client:
        assert isinstance(client, XeroClient) and client.tenant_id == TENANT_ID
        assert client.base_url == "https://api.xero.com/api.xro/2.0/"
        assert client._http.auth.token_url == XERO_TOKEN_URL
    registry = parse_registry({"tenants": {"acme": {"connections": {"xero": {
        "base_url": BASE, "xero_tenant_id": TENANT_ID, "token_url": "https://id.example.test/token",
        "secrets": secrets}}}}})
    with build_client(registry.get("acme.xero"), token_store=TokenStore(tmp_path / "t.json"),
                      environ=environ) as client:
        assert client._http.auth.token_url == "https://id.example.test/token"


# ----- against the emulator over HTTP ---------------------------------------------------------------------------------

from connectors.sandbox import identity  # noqa: E402
from connectors.sandbox.emulator import ServedEmulator  # noqa: E402
from connectors.sandbox.xero import XeroEmulator  # noqa: E402

T0 = 1740873600  # 2025-03-02


def ms_date(seconds: int) -> str:
    return f"/Date({seconds * 1000}+0000)/"


def small_fixtures() -> dict:
    invoices = [{"Type": "ACCREC", "InvoiceID": f"inv-{i}", "InvoiceNumber": f"INV-{i}",
                 "Status": "DRAFT" if i == 0 else "AUTHORISED", "LineAmountTypes": "Exclusive",
                 "Contact": {"ContactID": "c-1", "Name": "Nordwind GmbH"}, "Date": ms_date(T0),
                 "DueDate": ms_date(T0 + 30 * 86400), "CurrencyCode": "EUR",
                 "LineItems": [{"LineItemID": f"l-{i}", "Description": "fee", "Quantity": 1.0, "UnitAmount": 100.0,
                                "AccountCode": "200", "TaxType": "NONE", "TaxAmount": 0.0, "LineAmount": 100.0}],
                 "SubTotal": 100.0, "TotalTax": 0.0, "Total": 100.0, "AmountDue": 100.0, "AmountPaid": 0.0,
                 "AmountCredited": 0.0, "UpdatedDateUTC": ms_date(T0 + i)} for i in range(5)]
    invoices.append({**invoices[1], "InvoiceID": "bill-1", "InvoiceNumber": "B-1", "Type": "ACCPAY"})
    acme = {
        "contacts": [{"ContactID": f"c-{i}", "Name": f"Customer {i}", "ContactStatus": "ACTIVE",
                      "UpdatedDateUTC": ms_date(T0 + i)} for i in range(3)],
        "invoices": invoices,
        "items": [{"ItemID": "it-1", "Code": "FEE", "Name": "Platform fee", "UpdatedDateUTC": ms_date(T0)}],
        "accounts": [{"AccountID": "a-200", "Code": "200", "Name": "Sales", "Type": "REVENUE", "Status": "ACTIVE",
                      "TaxType": "NONE"}],
        "tax-rates": [{"Name": "No tax", "TaxType": "NONE", "Status": "ACTIVE", "EffectiveRate": 0.0}],
        "currencies": [{"Code": "EUR", "Description": "Euro"}],
        "organisation": [{"OrganisationID": "o-1", "Name": "Acme", "BaseCurrency": "EUR"}],
    }
    return {"acme": acme, "globex": {"organisation": [{"OrganisationID": "o-2", "Name": "Globex"}]}}


@pytest.fixture
def served():
    with ServedEmulator(XeroEmulator(small_fixtures())) as served:
        yield served


def emulator_client(served, tmp_path, tenant: str = "acme", tenant_id: str | None = None, **kw) -> XeroClient:
    auth = OAuth2RefreshAuth(token_url_for(served.url), identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET,
                             TokenStore(tmp_path / "tokens.json"), f"{tenant}.xero",
                             initial_refresh_token=identity.xero_initial_refresh_token(tenant), app="xero")
    kw.setdefault("retry", FAST)
    return XeroClient(served.url, tenant_id or identity.xero_tenant_id(tenant), auth, **kw)


def test_emulator_oauth_rotation_survives_expiry_and_a_new_process(served, tmp_path, control_for):
    with emulator_client(served, tmp_path) as client:
        assert client.organisation()["Name"] == "Acme"
        control_for(served.url).expire_tokens()  # the next call gets 401, refreshes with the rotated token
        assert client.organisation()["Name"] == "Acme"
    # the initial refresh token is dead now: a fresh client must use the stored, rotated one
    with emulator_client(served, tmp_path) as client:
        client._http.auth._tokens = None
        assert client.connections()[0]["tenantId"] == identity.xero_tenant_id("acme")
    with emulator_client(served, tmp_path, tenant_id=identity.xero_tenant_id("globex")) as client, \
            pytest.raises(PermissionDenied):
        client.organisation()


def test_emulator_paging_where_and_if_modified_since(served, tmp_path):
    with emulator_client(served, tmp_path) as client:
        pages = list(client.iter_pages("Invoices", where='Type=="ACCREC"', page_size=2))
        assert [[r["InvoiceID"] for r in p.records] for p in pages] == [["inv-0", "inv-1"], ["inv-2", "inv-3"],
                                                                         ["inv-4"]]
        assert pages[0].pagination["itemCount"] == 5 and pages[0].server_time is not None
        since = datetime.fromtimestamp(T0 + 2, tz=UTC)
        assert [r["InvoiceID"] for r in client.iter_records("Invoices", modified_since=since,
                                                             where='Type=="ACCREC"')] == ["inv-3", "inv-4"]
        with pytest.raises(ValidationFailed) as caught:
            client.get_page("Invoices", page=1, where="NoSuchField==1")
        assert caught.value.code == "QueryParseException"


def test_emulator_writes_per_element_results_idempotent_replay_void_and_delete(served, tmp_path, control_for):
    control = control_for(served.url)
    good = {"Type": "ACCREC", "Contact": {"ContactID": "c-1"}, "Date": "2025-03-02", "DueDate": "2025-04-01",
            "InvoiceNumber": "INV-99", "CurrencyCode": "EUR", "LineAmountTypes": "Exclusive", "Status": "AUTHORISED",
            "LineItems": [{"Description": "x", "Quantity": 1, "UnitAmount": 50, "AccountCode": "200",
                           "TaxType": "NONE"}]}
    with emulator_client(served, tmp_path) as client:
        first = client.create_many("Invoices", [good, {"Type": "ACCREC", "Contact": {}}], idempotency_key="w-1")
        again = client.create_many("Invoices", [good, {"Type": "ACCREC", "Contact": {}}], idempotency_key="w-1")
        assert [r.ok for r in first] == [True, False] and first[1].errors
        assert again[0].id == first[0].id  # replayed, not created twice
        assert len([r for r in client.iter_records("Invoices") if r.get("InvoiceNumber") == "INV-99"]) == 1
        assert client.void("Invoices", "inv-1", idempotency_key="void-inv-1")["Status"] == "VOIDED"
        assert client.delete("Invoices", "inv-0", idempotency_key="del-inv-0")["Status"] == "DELETED"
        with pytest.raises(ValidationFailed, match="not of valid status"):
            client.void("Invoices", "inv-0", idempotency_key="void-inv-0")
        assert client.delete("Items", "it-1", idempotency_key="del-it-1") is None
        assert client.get_page("Items").records == []
        assert client.update("Contacts", "c-2", {"EmailAddress": "ap@c2.example"},
                             idempotency_key="upd-c-2")["EmailAddress"] == "ap@c2.example"
    writes = [r for r in control.requests("/api.xro/2.0/") if r["method"] != "GET"]
    assert len(writes) == 7 and all(r["idempotency_key"] for r in writes)
    created = [w for w in control.writes() if w["entity"] == "Invoice" and w["idempotency_key"] == "w-1"]
    assert len(created) == 1, control.writes()


def test_emulator_minute_limit_answers_429_and_the_client_waits_it_out(served, tmp_path, control_for):
    control = control_for(served.url)
    control.rate_limits(enabled=True, per_minute=3, window_seconds=1.0)
    with emulator_client(served, tmp_path, limiter=RateLimiter(per_minute=1000)) as client:
        for _ in range(6):  # more than the window allows: 429s with Retry-After, retried, all succeed
            assert client.get_page("Currencies").records == [{"Code": "EUR", "Description": "Euro"}]
    assert any(r["status"] == 429 for r in control.requests("/Currencies"))
