"""QuickBooksClient against the QuickBooks emulator served over HTTP on loopback (OAuth included), with small inline
fixtures; then the pieces that need no emulator (Fault decoding, statements, argument checks) against
httpx.MockTransport."""

from __future__ import annotations

import logging
import stat
import time
from datetime import UTC, date, datetime, timedelta

import httpx
import orjson
import pytest

from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.errors import (
    AuthenticationError,
    BadResponse,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    TransportFailure,
    ValidationFailed,
)
from connectors.http import RateLimiter, RetryPolicy
from connectors.quickbooks import (
    INTUIT_TOKEN_URL,
    CdcLimitExceeded,
    QuickBooksClient,
    _statement,
    format_datetime,
    quote_literal,
    token_url_for,
)
from connectors.sandbox import identity
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.quickbooks import QuickBooksEmulator

TWO_DAYS_AGO = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
KEY = "acme.quickbooks"


def meta(minutes: int = 0) -> dict:
    stamp = (TWO_DAYS_AGO + timedelta(minutes=minutes)).isoformat()
    return {"CreateTime": stamp, "LastUpdatedTime": stamp}


def invoice(i: int) -> dict:
    return {"Id": str(200 + i), "SyncToken": "0", "DocNumber": str(1000 + i), "TxnDate": "2025-03-02",
            "DueDate": "2025-04-01", "CustomerRef": {"value": "1", "name": "Customer 1"},
            "CurrencyRef": {"value": "USD"},
            "Line": [{"Id": "1", "LineNum": 1, "Amount": 100.0, "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": "100"}, "Qty": 1, "UnitPrice": 100.0}},
                     {"Amount": 100.0, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}],
            "TxnTaxDetail": {"TotalTax": 0}, "TotalAmt": 100.0, "Balance": 100.0, "MetaData": meta(i)}


def fixtures() -> dict:
    acme = {
        "customer": [{"Id": str(i), "SyncToken": "0", "DisplayName": f"Customer {i}", "Active": True,
                      "CurrencyRef": {"value": "USD"}, "Balance": 0, "MetaData": meta(i)} for i in range(1, 13)],
        "item": [{"Id": "100", "SyncToken": "0", "Name": "Platform fee", "Type": "Service", "Active": True,
                  "UnitPrice": 100, "MetaData": meta()}],
        "invoice": [invoice(i) for i in range(23)],
        "companyinfo": [{"Id": "1", "CompanyName": "Acme Ltd", "LegalName": "Acme Limited", "Country": "US"}],
        "preferences": [{"Id": "1", "CurrencyPrefs": {"MultiCurrencyEnabled": True,
                                                      "HomeCurrency": {"value": "USD"}}}],
        "exchangerate": [{"SourceCurrencyCode": "EUR", "TargetCurrencyCode": "USD", "Rate": 1.0842,
                          "AsOfDate": "2025-03-31"}],
    }
    globex = {"customer": [{"Id": "1", "SyncToken": "0", "DisplayName": "Globex", "MetaData": meta()}]}
    return {"acme": acme, "globex": globex}


@pytest.fixture
def served():
    with ServedEmulator(QuickBooksEmulator(fixtures())) as served:
        yield served


@pytest.fixture
def control(served, control_for):
    return control_for(served.url)


@pytest.fixture
def store(tmp_path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def make_auth(served, store, initial: str | None = None) -> OAuth2RefreshAuth:
    return OAuth2RefreshAuth(
        token_url_for(served.url), identity.QUICKBOOKS_CLIENT_ID, identity.QUICKBOOKS_CLIENT_SECRET, store, KEY,
        initial_refresh_token=initial or identity.quickbooks_initial_refresh_token("acme"), app="quickbooks",
    )


@pytest.fixture
def client(served, store, fast_retry):
    realm = identity.quickbooks_realm_id("acme")
    with QuickBooksClient(served.url, realm, make_auth(served, store), retry=fast_retry) as client:
        yield client


def rows(pages) -> list[dict]:
    return [row for page in pages for row in page]


def query_requests(control) -> list[dict]:
    return control.requests("/query")


# ----- reads and paging ----------------------------------------------------------------------------------------------


def test_iter_query_pages_by_startposition_to_the_short_last_page(client, control):
    pages = list(client.iter_query("Invoice", page_size=5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [r["Id"] for r in rows(pages)] == [str(200 + i) for i in range(23)]
    assert len(query_requests(control)) == 5


def test_iter_query_stops_on_an_empty_page_after_an_exact_multiple(client, control):
    pages = list(client.iter_query("Customer", page_size=4))
    assert [len(p) for p in pages] == [4, 4, 4]
    assert len(query_requests(control)) == 4  # the fourth came back empty ({} QueryResponse)


def test_concurrent_paging_yields_the_same_rows_in_order(client, control):
    sequential = rows(client.iter_query("Invoice", page_size=5))
    control.clear_log()
    # Slow answers make the pool's requests overlap, so order is really put back together.
    control.fault("slow", path="/query", times=-1, delay=0.05)
    concurrent = rows(client.iter_query("Invoice", page_size=5, concurrency=3))
    raw_pages = list(client.iter_query_raw("Invoice", page_size=5, concurrency=3))
    control.clear_faults()
    assert concurrent == sequential
    assert rows(orjson.loads(page)["QueryResponse"]["Invoice"] for page in raw_pages) == sequential
    assert len(query_requests(control)) == 2 * (1 + 5)  # count(*) + the 5 counted pages, twice


def test_concurrent_paging_picks_up_rows_added_after_the_count(client):
    pages = client.iter_query("Invoice", page_size=5, concurrency=2)
    first = next(pages)
    for n in range(3):  # 23 -> 26 rows: the counted 5 pages end full, so it carries on
        client.create("Invoice", {"CustomerRef": {"value": "1"}, "Line": [
            {"Amount": 5.0, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "100"}}}
        ]}, request_id=f"late-{n}")
    assert len(first) + len(rows(pages)) == 26


def test_concurrent_paging_refuses_a_sweep_shifted_by_deletes(client):
    pages = client.iter_query("Invoice", page_size=5, concurrency=2)
    next(pages)
    for i in range(10, 16):  # 23 -> 17 rows: the fourth counted page comes back short
        client.delete("Invoice", str(200 + i), "0", request_id=f"del-{i}")
    with pytest.raises(BadResponse, match="changed during a concurrent sweep"):
        list(pages)


def test_count_query_and_single_reads(client):
    assert client.count("Invoice") == 23
    assert client.count("Customer", where="DisplayName LIKE 'Customer 1%'") == 4  # 1, 10, 11, 12
    assert client.query("SELECT * FROM Invoice WHERE DocNumber = '1003'")["Invoice"][0]["Id"] == "203"
    assert client.query("SELECT * FROM Invoice WHERE DocNumber = 'none'") == {}
    assert client.read("Invoice", "205")["DocNumber"] == "1005"
    assert client.company_info()["CompanyName"] == "Acme Ltd"
    assert client.preferences()["CurrencyPrefs"]["HomeCurrency"]["value"] == "USD"
    assert client.exchange_rate("eur", date(2025, 4, 2))["Rate"] == 1.0842
    with pytest.raises(NotFound) as info:
        client.read("Invoice", "999")
    assert info.value.code == "610"


def test_incremental_reads_after_a_write(client):
    watermark = TWO_DAYS_AGO + timedelta(minutes=30)
    where = f"MetaData.LastUpdatedTime > {quote_literal(format_datetime(watermark))}"
    assert rows(client.iter_query("Invoice", where=where)) == []
    before = datetime.now(UTC) - timedelta(seconds=2)

    current = client.read("Invoice", "207")
    updated = client.update("Invoice", {"Id": "207", "SyncToken": current["SyncToken"], "PrivateNote": "chased"},
                            request_id="upd-207")
    assert updated["SyncToken"] == "1" and updated["PrivateNote"] == "chased" and updated["TotalAmt"] == 100.0
    client.delete("Invoice", "208", "0", request_id="del-208")

    assert [r["Id"] for r in rows(client.iter_query("Invoice", where=where))] == ["207"]
    changes = client.cdc(["Invoice", "Customer"], before)
    assert [r["Id"] for r in changes.records["Invoice"]] == ["207", "208"]
    assert changes.records["Invoice"][1]["status"] == "Deleted"
    assert changes.records["Customer"] == [] and changes.time


# ----- writes ---------------------------------------------------------------------------------------------------------


def test_writes_are_idempotent_by_requestid(client, control):
    body = {"CustomerRef": {"value": "2"}, "DocNumber": "9001", "Line": [
        {"Amount": 50.0, "DetailType": "SalesItemLineDetail",
         "SalesItemLineDetail": {"ItemRef": {"value": "100"}, "Qty": 1, "UnitPrice": 50.0}}]}
    first = client.create("Invoice", body, request_id="create-9001")
    again = client.create("Invoice", body, request_id="create-9001")
    assert first == again and first["TotalAmt"] == 50.0
    voided = client.void_invoice(first["Id"], first["SyncToken"], request_id="void-9001")
    assert voided["TotalAmt"] == 0 and voided["SyncToken"] == "1"
    assert [(w["op"], w["request_id"]) for w in control.writes()] == [("create", "create-9001"),
                                                                        ("void", "void-9001")]


def test_stale_sync_token_is_a_conflict_and_not_retried(client, control):
    client.update("Customer", {"Id": "3", "SyncToken": "0", "CompanyName": "Three Ltd"}, request_id="c3-a")
    with pytest.raises(Conflict) as info:
        client.update("Customer", {"Id": "3", "SyncToken": "0", "CompanyName": "Three plc"}, request_id="c3-b")
    assert info.value.code == "5010" and "Stale Object Error" in str(info.value)
    assert len(control.requests("/customer")) == 2


def test_batch(client):
    answers = client.batch([
        {"bId": "b1", "operation": "update", "Customer": {"Id": "4", "SyncToken": "0", "sparse": True,
                                                          "CompanyName": "Four"}},
        {"bId": "b2", "operation": "update", "Customer": {"Id": "5", "SyncToken": "9", "sparse": True,
                                                          "CompanyName": "Five"}},
        {"bId": "b3", "Query": "SELECT * FROM Item"},
    ], request_id="batch-1")
    assert [a["bId"] for a in answers] == ["b1", "b2", "b3"]
    assert client.fault_of(answers[0]) is None and answers[0]["Customer"]["CompanyName"] == "Four"
    assert isinstance(client.fault_of(answers[1]), Conflict)
    assert answers[2]["QueryResponse"]["Item"][0]["Name"] == "Platform fee"


# ----- OAuth against the emulator ------------------------------------------------------------------------------------


def test_401_refreshes_persists_the_rotated_token_and_the_old_one_is_refused(served, client, control, store):
    client.count("Invoice")
    first = store.get(KEY)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    control.expire_tokens()
    assert client.count("Invoice") == 23
    second = store.get(KEY)
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert [r["status"] for r in control.requests("/v3/company")][-2:] == [401, 200]

    # The rotated-away refresh token is dead: only the persisted one works.
    old = httpx.post(token_url_for(served.url), data={"grant_type": "refresh_token",
                                                      "refresh_token": first["refresh_token"]},
                     auth=(identity.QUICKBOOKS_CLIENT_ID, identity.QUICKBOOKS_CLIENT_SECRET))
    assert old.status_code == 400 and old.json() == {"error": "invalid_grant"}

    # A new process (fresh auth, fresh client) carries on from the store alone.
    control.expire_tokens()
    realm = identity.quickbooks_realm_id("acme")
    with QuickBooksClient(served.url, realm, make_auth(served, TokenStore(store.path), initial="gone")) as fresh:
        assert fresh.count("Customer") == 12


def test_expired_token_fault_is_refreshed_once(client, control):
    client.count("Invoice")
    control.fault("expired_token", path="/query")
    assert client.count("Invoice") == 23
    assert len(control.requests("/oauth2")) == 2


def test_invalid_grant_asks_for_reauthorisation(served, tmp_path, fast_retry):
    auth = make_auth(served, TokenStore(tmp_path / "t.json"), initial="sandbox-refresh-acme-stale")
    with QuickBooksClient(served.url, identity.quickbooks_realm_id("acme"), auth, retry=fast_retry) as client:
        with pytest.raises(AuthenticationError, match="re-authorise") as info:
            client.count("Invoice")
    assert "sandbox-refresh-acme-stale" not in str(info.value)


def test_another_tenants_realm_is_refused(served, store, fast_retry):
    realm = identity.quickbooks_realm_id("globex")
    with QuickBooksClient(served.url, realm, make_auth(served, store), retry=fast_retry) as client:
        with pytest.raises(PermissionDenied) as info:
            client.count("Customer")
    assert info.value.code == "3100"


# ----- faults ---------------------------------------------------------------------------------------------------------


def test_429_waits_for_retry_after(client, control):
    client.count("Invoice")
    control.fault("status", path="/query", status=429, retry_after="1")
    started = time.monotonic()
    assert client.count("Invoice") == 23
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in query_requests(control)][-2:] == [429, 200]


def test_5xx_then_success_and_400_sent_once(client, control):
    control.fault("status", path="/query", status=503, times=2)
    assert client.count("Invoice") == 23
    with pytest.raises(ValidationFailed) as info:
        client.query("SELECT * FROM Invoice WHERE Id = '1' OR Id = '2'")
    assert info.value.code == "4000"
    assert all("query=" not in r["query"] for r in query_requests(control))  # POSTed, not in the URL
    statuses = [r["status"] for r in query_requests(control)]
    assert statuses[:2] == [503, 503] and statuses.count(400) == 1


def test_connection_reset_on_a_write_is_retried_and_applied_once(client, control):
    client.count("Invoice")
    control.fault("reset", path="/invoice?", method="POST")
    created = client.create("Invoice", {"CustomerRef": {"value": "3"}, "Line": [
        {"Amount": 10.0, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "100"}}}
    ]}, request_id="reset-1")
    assert created["TotalAmt"] == 10.0
    assert len(control.requests("/invoice")) == 2 and len(control.writes()) == 1


def test_truncated_page(client, control):
    client.count("Invoice")
    control.fault("truncate", path="/query")
    assert len(rows(client.iter_query("Invoice"))) == 23

    control.fault("truncate", path="/query", times=-1)
    with pytest.raises((TransportFailure, BadResponse)) as info:
        list(client.iter_query("Invoice"))
    control.clear_faults()
    assert "cut short" in str(info.value) and "(POST /v3/company/" in str(info.value)


def test_client_limiter_keeps_under_the_concurrency_limit(served, control, store, fast_retry):
    control.rate_limits(enabled=True, per_minute=500, concurrent=2)
    control.fault("slow", path="/query", times=-1, delay=0.05)
    realm = identity.quickbooks_realm_id("acme")
    limiter = RateLimiter(per_minute=500, max_concurrent=2)
    with QuickBooksClient(served.url, realm, make_auth(served, store), retry=fast_retry, limiter=limiter) as client:
        assert len(rows(client.iter_query("Invoice", page_size=3, concurrency=4))) == 23
    assert 429 not in [r["status"] for r in control.requests()]


def test_secrets_never_reach_logs_or_errors(client, control, store, caplog):
    with caplog.at_level(logging.DEBUG):
        client.count("Invoice")
        control.expire_tokens()
        with pytest.raises(NotFound) as info:
            client.read("Invoice", "404")
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert "/query" in logged
    tokens = store.get(KEY)
    for secret in (tokens["access_token"], tokens["refresh_token"], identity.QUICKBOOKS_CLIENT_SECRET,
                   identity.quickbooks_initial_refresh_token("acme")):
        assert secret not in logged and secret not in str(info.value)


# ----- without the emulator: decoding and argument checks -----------------------------------------------------------

REALM = "9130000000000001"
NO_WAIT = RetryPolicy(max_attempts=2, base_delay=0.0, jitter=False)
XML_THROTTLE = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="2025-03-05T11:21:00.000-08:00">
  <Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>
  <Detail>The request limit was reached. Try again later</Detail></Error></Fault></IntuitResponse>"""


def mock_client(handler) -> QuickBooksClient:
    """No auth: these tests are about decoding (OAuth is covered above and in test_auth)."""
    return QuickBooksClient("https://qbo.test", REALM, auth=None,  # type: ignore[arg-type]
                            transport=httpx.MockTransport(handler), retry=NO_WAIT, sleep=lambda s: None)


def fault(code: str, message: str, detail: str = "", type_: str = "ValidationFault") -> dict:
    return {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code, "element": ""}],
                      "type": type_}, "time": "2025-03-05T11:21:00.000-08:00"}


@pytest.mark.parametrize("status, body, cls, code", [
    (400, fault("5010", "Stale Object Error", "You and root were working on this at the same time."), Conflict,
     "5010"),
    (400, fault("610", "Object Not Found", "Something you're trying to use has been made inactive."), NotFound,
     "610"),
    (400, fault("2020", "Required param missing", "Required parameter Line.Amount is missing"), ValidationFailed,
     "2020"),
    (401, {"fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                                "detail": "Token expired", "code": "3200"}], "type": "AUTHENTICATION"}},
     AuthenticationError, "3200"),
])
def test_fault_bodies_decode_to_error_classes(status, body, cls, code):
    client = mock_client(lambda request: httpx.Response(status, json=body))
    with pytest.raises(cls) as info:
        client.read("Invoice", "42")
    assert info.value.code == code and info.value.status == status and not info.value.retriable


def test_error_message_shape():
    body = fault("5010", "Stale Object Error", "Stale Object Error : You and root were working on this")
    client = mock_client(lambda r: httpx.Response(400, json=body))
    with pytest.raises(Conflict) as info:
        client.update("Invoice", {"Id": "42", "SyncToken": "1", "PrivateNote": "x"}, request_id="req-1")
    assert str(info.value) == (f"quickbooks 400 [5010] Stale Object Error: Stale Object Error : You and root were "
                               f"working on this (POST /v3/company/{REALM}/invoice)")


def test_xml_throttle_body_is_a_retriable_rate_limit():
    answers = [httpx.Response(429, content=XML_THROTTLE, headers={"Content-Type": "application/xml"}),
               httpx.Response(200, json={"Invoice": {"Id": "42"}, "time": "t"})]
    assert mock_client(lambda request: answers.pop(0)).read("Invoice", "42") == {"Id": "42"}

    with pytest.raises(RateLimited) as info:
        mock_client(lambda request: httpx.Response(429, content=XML_THROTTLE)).read("Invoice", "42")
    assert info.value.code == "3001" and "ThrottleExceeded" in info.value.message
    assert info.value.detail == "The request limit was reached. Try again later"


def test_a_fault_inside_a_200_is_an_error():
    client = mock_client(lambda request: httpx.Response(200, json=fault("4000", "QueryParserError")))
    with pytest.raises(ValidationFailed, match="QueryParserError"):
        client.query("SELECT * FROM Invoice")


def test_every_request_carries_minorversion_and_writes_a_requestid():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"Invoice": {"Id": "42", "SyncToken": "1"}, "time": "t"})

    client = mock_client(handler)
    client.create("Invoice", {"CustomerRef": {"value": "1"}}, request_id="req-create-1")
    client.update("Invoice", {"Id": "42", "SyncToken": "0", "DueDate": "2025-04-01"}, request_id="req-update-1")
    client.void_invoice("42", "1", request_id="req-void-1")
    client.delete("Invoice", "42", "2", request_id="req-delete-1")
    assert [dict(r.url.params) for r in seen] == [
        {"minorversion": "75", "requestid": "req-create-1"},
        {"minorversion": "75", "requestid": "req-update-1"},
        {"minorversion": "75", "requestid": "req-void-1", "operation": "void"},
        {"minorversion": "75", "requestid": "req-delete-1", "operation": "delete"},
    ]
    assert orjson.loads(seen[1].content)["sparse"] is True
    assert orjson.loads(seen[2].content) == {"Id": "42", "SyncToken": "1"}


def test_write_arguments_are_checked_before_sending():
    client = mock_client(lambda request: pytest.fail("nothing should be sent"))
    with pytest.raises(ValueError, match="requestid"):
        client.create("Invoice", {}, request_id="")
    with pytest.raises(ValueError, match="requestid"):
        client.create("Invoice", {}, request_id="x" * 51)
    with pytest.raises(ValueError, match="must not carry an Id"):
        client.create("Invoice", {"Id": "1"}, request_id="r")
    with pytest.raises(ValueError, match="SyncToken"):
        client.update("Invoice", {"Id": "1"}, request_id="r")
    with pytest.raises(ValueError, match="at most 30"):
        client.batch([{"bId": f"b{i}"} for i in range(31)], request_id="r")
    with pytest.raises(ValueError, match="requestid"):
        client.batch([{"bId": "b1"}], request_id="x" * 37)
    with pytest.raises(ValueError, match="bId"):
        client.batch([{"bId": "b-too-long-1"}], request_id="r")
    with pytest.raises(ValueError, match="entity name"):
        client.read("Invoice; drop", "1")
    with pytest.raises(ValueError, match="digit strings"):
        client.read("Invoice", "../customer/1")
    with pytest.raises(ValueError, match="page_size"):
        next(client.iter_query("Invoice", page_size=1001))
    with pytest.raises(ValueError, match="realm_id"):
        QuickBooksClient("https://qbo.test", "../1", auth=None)  # type: ignore[arg-type]


def test_statements_and_literals():
    assert _statement("Invoice", where="DocNumber = '1'", order_by="Id", start=1001, size=1000) == (
        "SELECT * FROM Invoice WHERE DocNumber = '1' ORDERBY Id STARTPOSITION 1001 MAXRESULTS 1000")
    assert _statement("Customer", count=True, order_by="Id") == "SELECT COUNT(*) FROM Customer"
    assert quote_literal("O'Brien \\ Co") == "'O\\'Brien \\\\ Co'"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_datetime(datetime(2025, 3, 1))


def test_token_url_choice():
    assert token_url_for("https://quickbooks.api.intuit.com") == INTUIT_TOKEN_URL
    assert token_url_for("https://sandbox-quickbooks.api.intuit.com/") == INTUIT_TOKEN_URL
    assert token_url_for("http://127.0.0.1:8123/") == "http://127.0.0.1:8123/oauth2/v1/tokens/bearer"


def test_cdc_cap_raises_so_the_caller_narrows_the_window():
    changed = [{"Id": str(i)} for i in range(600)]
    body = {"CDCResponse": [{"QueryResponse": [{"Invoice": changed, "startPosition": 1, "maxResults": 600},
                                               {"Customer": changed[:400], "startPosition": 1, "maxResults": 400}]}],
            "time": "2025-03-05T11:21:00.000-08:00"}
    client = mock_client(lambda request: httpx.Response(200, json=body))
    with pytest.raises(CdcLimitExceeded, match="shorter window"):
        client.cdc(["Invoice", "Customer"], datetime(2025, 3, 1, tzinfo=UTC))


# ----- throttling: QuickBooks answers 429 without Retry-After ------------------------------------------------------


def test_throttled_write_waits_a_minute_and_is_resent_only_with_its_requestid():
    slept: list[float] = []
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) % 2:
            return httpx.Response(429, content=XML_THROTTLE)
        return httpx.Response(200, json={"Invoice": {"Id": "9"}, "time": "t"})

    client = QuickBooksClient("https://qbo.test", REALM, auth=None,  # type: ignore[arg-type]
                              transport=httpx.MockTransport(handler), sleep=slept.append)
    assert client.retry.throttle_delay == 60.0  # the default policy: wait out Intuit's minute
    assert client.create("Invoice", {"CustomerRef": {"value": "1"}}, request_id="k1") == {"Id": "9"}
    assert [r.url.params["requestid"] for r in seen] == ["k1", "k1"] and 60.0 <= slept[0] <= 66.0

    seen.clear()
    with pytest.raises(RateLimited):  # a POST without requestid: QuickBooks may have acted, not re-sent
        client.request("POST", "invoice", json={"CustomerRef": {"value": "1"}})
    assert len(seen) == 1


def test_batch_charges_every_item_against_the_per_minute_limit_on_every_attempt():
    answers = [httpx.Response(429, content=XML_THROTTLE),
               httpx.Response(200, json={"BatchItemResponse": [{"bId": f"b{i}"} for i in range(30)]})]
    limiter = RateLimiter(per_minute=500)
    client = QuickBooksClient("https://qbo.test", REALM, auth=None,  # type: ignore[arg-type]
                              transport=httpx.MockTransport(lambda r: answers.pop(0)), retry=NO_WAIT,
                              limiter=limiter, sleep=lambda s: None)
    items = [{"bId": f"b{i}", "operation": "create", "Item": {"Name": f"n{i}"}} for i in range(30)]
    assert len(client.batch(items, request_id="lb1")) == 30
    assert len(limiter._starts) == 60 and len(client.batch_limiter._starts) == 2
