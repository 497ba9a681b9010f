"""HubSpotClient over real HTTP against the HubSpot emulator: paging, the archived listing, incremental search
across the 10,000-result cap (window moved forward, and the full-listing fallback), batches of 100 with 207
partial failures, associations, custom properties, typed errors, retries (429 by policy, 5xx only when safe),
and building the client from a sandbox registry."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.errors import AuthenticationError, Conflict, NotFound, ServerError, ValidationFailed
from connectors.http import RateLimiter, RetryPolicy
from connectors.hubspot import HubSpotClient, SearchCapReached
from connectors.registry import parse_registry
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.hubspot import HubSpotEmulator
from connectors.sandbox.identity import hubspot_access_token
from connectors.sandbox.launcher import start_sandbox
from tests.connectors.conftest import FAST_RETRY, Control


# Plain HTTP on loopback: one shared TLS context spares every client httpx's certificate load (~0.1-0.5 s).
LOOPBACK_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def loopback() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(verify=LOOPBACK_TLS)


def stamp(n: int) -> str:
    """Distinct, increasing modification times: minute n after 2025-01-01."""
    return datetime.fromtimestamp(1_735_689_600 + 60 * n, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def company(n: int, *, modified: str | None = None, archived: bool = False) -> dict:
    record = {"id": str(1000 + n), "properties": {"name": f"Company {n}", "qb_customer_id": f"qb-{n}",
                                                  "hs_lastmodifieddate": modified or stamp(n)},
              "createdAt": stamp(0), "updatedAt": modified or stamp(n), "archived": archived}
    if archived:
        record["archivedAt"] = stamp(n)
    return record


def fixtures() -> dict:
    return {
        "acme": {
            "companies": [company(n) for n in range(1, 251)] + [company(251, archived=True)],
            "contacts": [{"id": "2001", "properties": {"email": "a@x.example", "lastmodifieddate": stamp(5)},
                          "createdAt": stamp(1), "updatedAt": stamp(5), "archived": False}],
            "deals": [{"id": "3001", "properties": {"dealname": "Renewal", "amount": "1440.50"},
                       "createdAt": stamp(1), "updatedAt": stamp(2), "archived": False},
                      {"id": "3002", "properties": {"dealname": "Upsell"},
                       "createdAt": stamp(1), "updatedAt": stamp(3), "archived": False}],
            "associations": [{"from": {"id": "3001"}, "to": [{"toObjectId": "1001", "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"}]}]}],
            "properties": [{"objectType": "companies", "name": "qb_customer_id", "label": "QB id", "type": "string",
                            "fieldType": "text", "groupName": "companyinformation", "hasUniqueValue": True}],
        },
    }


@pytest.fixture(scope="module")
def server() -> Iterator[ServedEmulator]:
    with ServedEmulator(HubSpotEmulator(fixtures())) as served:
        yield served


@pytest.fixture(scope="module")
def module_control(server: ServedEmulator) -> Iterator[Control]:
    ctl = Control(server.url)
    yield ctl
    ctl.http.close()


@pytest.fixture
def control(server: ServedEmulator, module_control: Control) -> Control:
    server.emulator.load(fixtures())
    module_control.clear_faults()
    module_control.http.delete("/_sandbox/log").raise_for_status()
    module_control.rate_limits(enabled=False)
    return module_control


@pytest.fixture
def client(server: ServedEmulator, control: Control) -> Iterator[HubSpotClient]:
    with HubSpotClient(server.url, hubspot_access_token("acme"), retry=FAST_RETRY, transport=loopback(),
                       limiter=RateLimiter(per_minute=1_000_000)) as hubspot:
        hubspot.search_limiter = RateLimiter(per_minute=1_000_000)
        yield hubspot


def test_listing_pages_through_everything_and_archived_separately(client: HubSpotClient, control: Control) -> None:
    pages = list(client.iter_pages("companies", properties=["name", "qb_customer_id"]))
    rows = [r for page in pages for r in page]
    assert len(pages) == 3 and len(rows) == 250 and all(not r["archived"] for r in rows)
    assert rows[0]["properties"]["qb_customer_id"] == "qb-1"
    archived = [r for page in client.iter_archived("companies") for r in page]
    assert [(r["id"], r["archived"]) for r in archived] == [("1251", True)]
    assert client.get("companies", "1251") is None and client.get("companies", "1001")["id"] == "1001"
    assert client.get("companies", "qb-7", id_property="qb_customer_id")["id"] == "1007"


def test_incremental_search_is_oldest_first_and_inclusive(client: HubSpotClient) -> None:
    since = datetime(2025, 1, 1, 4, 0, tzinfo=UTC)  # minute 240
    rows = [r for page in client.iter_modified_since("companies", since, properties=["name"]) for r in page]
    assert [r["id"] for r in rows] == [str(1000 + n) for n in range(240, 251)]
    contacts = [r for p in client.iter_modified_since("contacts", datetime(2025, 1, 1, tzinfo=UTC)) for r in p]
    assert [r["id"] for r in contacts] == ["2001"] and "lastmodifieddate" in contacts[0]["properties"]


def test_the_search_cap_is_stepped_over_by_moving_the_lower_bound(control: Control) -> None:
    # 10,200 companies over 170 distinct instants (60 share each): more than one search may page through
    big = [company(n, modified=stamp(n // 60)) for n in range(10_200)]
    with ServedEmulator(HubSpotEmulator({"big": {"companies": big}})) as served, \
            HubSpotClient(served.url, hubspot_access_token("big"), retry=FAST_RETRY, transport=loopback(),
                          limiter=RateLimiter(per_minute=1_000_000)) as client:
        client.search_limiter = RateLimiter(per_minute=1_000_000)
        with pytest.raises(SearchCapReached):
            for _ in client.iter_search("companies"):
                pass
        ids = [r["id"] for page in client.iter_modified_since("companies", datetime(2024, 1, 1, tzinfo=UTC))
               for r in page]
        assert len(ids) == len(set(ids)) == 10_200
        searches = [r for r in served.emulator.request_log if r["path"].endswith("/search")]
        assert all(r["status"] == 200 for r in searches)  # never asked for a page past the cap


def test_falls_back_to_the_listing_when_ten_thousand_rows_share_one_instant() -> None:
    same = [company(n, modified=stamp(1)) for n in range(10_001)]
    with ServedEmulator(HubSpotEmulator({"big": {"companies": same}})) as served, \
            HubSpotClient(served.url, hubspot_access_token("big"), retry=FAST_RETRY, transport=loopback(),
                          limiter=RateLimiter(per_minute=1_000_000)) as client:
        client.search_limiter = RateLimiter(per_minute=1_000_000)
        ids = [r["id"] for page in client.iter_modified_since("companies", datetime(2024, 1, 1, tzinfo=UTC))
               for r in page]
        assert len(set(ids)) == 10_001
        assert any(r["path"] == "/crm/v3/objects/companies" for r in served.emulator.request_log)


def test_batches_go_100_at_a_time_and_report_partial_failures(client: HubSpotClient, control: Control) -> None:
    ids = [str(1000 + n) for n in range(1, 231)] + ["9999"]
    read = client.batch_read("companies", ids, properties=["name"])
    assert len(read.results) == 230 and read.missing_ids == ["9999"] and not read.ok
    assert len(control.requests("/batch/read")) == 3
    by_unique = client.batch_read("companies", ["qb-3", "qb-4"], id_property="qb_customer_id")
    assert sorted(r["id"] for r in by_unique.results) == ["1003", "1004"]

    inputs = [{"id": f"qb-{n}", "properties": {"name": f"Renamed {n}"}} for n in range(1, 151)]
    inputs.append({"id": "qb-new", "properties": {"name": "Brand new"}})
    upserted = client.batch_upsert("companies", inputs, id_property="qb_customer_id")
    assert len(upserted.results) == 151 and sum(r["new"] for r in upserted.results) == 1
    again = client.batch_upsert("companies", inputs[-1:], id_property="qb_customer_id")
    assert again.results[0]["new"] is False  # repeating an upsert creates nothing

    updated = client.batch_update("companies", [{"id": "1001", "properties": {"city": "Leeds"}},
                                                {"id": "8888", "properties": {"city": "York"}}])
    assert [r["id"] for r in updated.results] == ["1001"] and updated.missing_ids == ["8888"]
    created = client.batch_create("deals", [{"properties": {"dealname": "New"}}])
    assert created.ok and created.results[0]["properties"]["dealname"] == "New"
    with pytest.raises(ValidationFailed) as invalid:
        client.batch_update("deals", [{"id": "3001", "properties": {"amount": "12x"}}])
    assert invalid.value.code == "VALIDATION_ERROR" and "not a valid number" in (invalid.value.detail or "")


def test_associations_and_custom_properties(client: HubSpotClient) -> None:
    links = client.batch_read_associations("deals", "companies", ["3001", "3002"])
    assert [t["toObjectId"] for t in links["3001"]] == ["1001"] and links["3002"] == []
    client.associate("deals", "3002", "companies", "1002", [341])
    client.associate("deals", "3002", "companies", "1003")
    assert [link["toObjectId"] for link in client.list_associations("deals", "3002", "companies")] == ["1002", "1003"]
    result = client.batch_associate("deals", "companies", [("3001", "1004")], 341)
    assert result.ok and len(result.results) == 1
    client.dissociate("deals", "3001", "companies", "1004")
    assert [t["toObjectId"] for t in client.batch_read_associations("deals", "companies", ["3001"])["3001"]] == ["1001"]

    definition = {"name": "sequence_customer_id", "label": "Sequence customer", "type": "string",
                  "fieldType": "text", "groupName": "companyinformation", "hasUniqueValue": True}
    created = client.ensure_property("companies", definition)
    assert created["name"] == "sequence_customer_id"
    assert client.ensure_property("companies", definition)["createdAt"] == created["createdAt"]
    with pytest.raises(Conflict):
        client.create_property("companies", definition)
    client.update("companies", "1001", {"sequence_customer_id": "cust-1"})
    assert client.get("companies", "cust-1", id_property="sequence_customer_id",
                      properties=["sequence_customer_id"])["id"] == "1001"
    assert "sequence_customer_id" in {p["name"] for p in client.list_properties("companies")}


def test_errors_are_typed_and_never_carry_the_token(server: ServedEmulator, client: HubSpotClient) -> None:
    with pytest.raises(NotFound):
        client.update("companies", "424242", {"name": "x"})
    with pytest.raises(Conflict) as duplicate:
        client.create("contacts", {"email": "a@x.example"})
    assert "Existing ID: 2001" in str(duplicate.value)
    with HubSpotClient(server.url, "pat-na1-wrong", retry=FAST_RETRY, transport=loopback()) as wrong, \
            pytest.raises(AuthenticationError) as denied:
        list(wrong.iter_pages("companies"))
    assert denied.value.code == "INVALID_AUTHENTICATION" and "pat-na1" not in str(denied.value)
    with pytest.raises(ValueError):
        client.get("widgets", "1")


def test_429_waits_out_the_policy_window_and_5xx_retries_only_safe_requests(server: ServedEmulator,
                                                                            control: Control) -> None:
    waits: list[float] = []
    with HubSpotClient(server.url, hubspot_access_token("acme"), sleep=waits.append, transport=loopback(),
                       retry=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=30.0, jitter=False),
                       limiter=RateLimiter(per_minute=1_000_000)) as client:
        control.fault("status", status=429, path="/crm/v3/objects/companies", times=2)
        assert len(next(client.iter_pages("companies"))) == 100
        assert waits == [10.0, 10.0]  # TEN_SECONDLY_ROLLING: no Retry-After, wait out the 10 s window

        control.fault("status", status=502, path="/batch/upsert")
        client.batch_upsert("companies", [{"id": "qb-1", "properties": {"name": "x"}}], id_property="qb_customer_id")
        control.fault("status", status=502, path="/crm/v3/objects/deals")
        with pytest.raises(ServerError):
            client.create("deals", {"dealname": "maybe landed"})  # a create is never re-sent after a 5xx
    assert len(control.requests("/batch/upsert")) == 2 and len(control.requests("/crm/v3/objects/deals")) == 1


def test_a_real_burst_against_the_limit_is_absorbed_by_retries(server: ServedEmulator, control: Control) -> None:
    control.rate_limits(enabled=True, per_minute=5, window_seconds=1.0)
    slept: list[float] = []

    def short_sleep(seconds: float) -> None:  # the emulator's window is 1 s here, not HubSpot's 10 s
        slept.append(seconds)
        import time
        time.sleep(min(seconds, 1.05))

    with HubSpotClient(server.url, hubspot_access_token("acme"), sleep=short_sleep, transport=loopback(),
                       retry=RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=30.0, jitter=False),
                       limiter=RateLimiter(per_minute=1_000_000)) as client:
        names = [client.get("companies", str(1000 + n))["id"] for n in range(1, 9)]
    assert len(names) == 8 and slept and all(s == 10.0 for s in slept)
    assert any(r["status"] == 429 for r in control.requests("/crm/v3/objects/companies/"))


def test_build_client_from_a_sandbox_registry(tmp_path) -> None:
    folder = tmp_path / "fixtures" / "acme" / "hubspot"
    folder.mkdir(parents=True)
    (folder / "companies.json").write_text('[{"id": "1", "properties": {"name": "A"}, "createdAt": '
                                           '"2025-01-01T00:00:00Z", "updatedAt": "2025-01-01T00:00:00Z", '
                                           '"archived": false}]')
    with start_sandbox(tmp_path / "fixtures", apps=["hubspot"]) as box:
        registry = parse_registry(box.registry_document())
        connection = registry.get("acme.hubspot")
        assert dict(connection.secret_env) == {"access_token": "LEDGERLINK_SANDBOX_ACME_HUBSPOT_ACCESS_TOKEN"}
        with build_client(connection, token_store=TokenStore(tmp_path / "tokens"), environ=box.environment()) as client:
            assert isinstance(client, HubSpotClient)
            assert [r["properties"]["name"] for page in client.iter_pages("companies", properties=["name"])
                    for r in page] == ["A"]
