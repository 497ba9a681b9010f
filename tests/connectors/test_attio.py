"""AttioClient against the Attio emulator served over HTTP on loopback: bearer auth, offset paging until a short
page, the complete sweep that notices records deleted under it, assert by a unique attribute, typed errors, and
429s whose Retry-After is an HTTP date."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from connectors.attio import AttioClient, SweepIncomplete, record_id
from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.errors import AuthenticationError, Conflict, NotFound, RateLimited, ServerError, ValidationFailed
from connectors.http import RateLimiter, RetryPolicy
from connectors.registry import parse_registry
from connectors.sandbox.attio import AttioEmulator
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.identity import attio_access_token
from connectors.sandbox.launcher import start_sandbox

from tests.connectors.conftest import FAST_RETRY

WS = "2e7c9a10-4b5d-4f6e-8a7b-1c2d3e4f5a6b"
ACTOR = {"type": "api-token", "id": "a1b2c3d4-0000-4000-8000-000000000001"}


def rid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def company(n: int) -> dict:
    def value(kind: str, **fields) -> dict:
        return {"active_from": "2025-03-02T09:14:11.061281000Z", "active_until": None, "created_by_actor": ACTOR,
                **fields, "attribute_type": kind}

    return {"id": {"workspace_id": WS, "object_id": "6f8e9d0c-1b2a-4c3d-9e4f-5a6b7c8d9e0f", "record_id": rid(n)},
            "created_at": f"2025-03-02T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000000Z",
            "web_url": f"https://app.attio.com/acme/company/{rid(n)}",
            "values": {"name": [value("text", value=f"Company {n}")],
                       "domains": [value("domain", domain=f"c{n}.example", root_domain=f"c{n}.example")]}}


def fixtures(count: int = 1203) -> dict:
    return {"acme": {"companies": [company(n) for n in range(1, count + 1)], "people": [], "deals": [],
                     "attributes": [{"object": "companies", "api_slug": "seq_customer_id", "type": "text",
                                     "is_unique": True}]}}


@pytest.fixture(scope="module")
def shared() -> ServedEmulator:
    with ServedEmulator(AttioEmulator(fixtures())) as served:
        yield served


@pytest.fixture
def served(shared: ServedEmulator) -> ServedEmulator:
    shared.emulator.load(fixtures())
    shared.emulator.limits.enabled = False
    shared.emulator.faults.clear()
    shared.emulator.request_log.clear()
    shared.emulator.write_log.clear()
    return shared


@pytest.fixture
def client(served: ServedEmulator) -> AttioClient:
    with AttioClient(served.url, attio_access_token("acme"), retry=FAST_RETRY) as client:
        yield client


def requests(served: ServedEmulator, path: str = "") -> list[dict]:
    return [r for r in served.emulator.request_log if path in r["path"]]


def test_bearer_token_and_401_without_leaking_it(served: ServedEmulator) -> None:
    with AttioClient(served.url, "not-the-token", retry=FAST_RETRY) as bad:
        with pytest.raises(AuthenticationError) as caught:
            bad.query("companies", limit=1)
    assert caught.value.code == "unauthorized" and "not-the-token" not in str(caught.value)
    assert len(requests(served)) == 1  # a 401 is not retried


def test_iter_query_pages_until_a_short_page(client: AttioClient, served: ServedEmulator) -> None:
    pages = list(client.iter_query("companies"))
    assert [len(p) for p in pages] == [500, 500, 203]
    assert len({record_id(r) for p in pages for r in p}) == 1203
    served.emulator.load(fixtures(1000))
    served.emulator.request_log.clear()
    assert [len(p) for p in client.iter_query("companies")] == [500, 500]
    assert len(requests(served, "/records/query")) == 3  # an exact multiple ends on an empty page
    assert [r["values"]["name"][0]["value"] for p in client.iter_query(
        "companies", filter={"name": {"$in": ["Company 7", "Company 9"]}},
        sorts=[{"direction": "desc", "attribute": "name"}]) for r in p] == ["Company 9", "Company 7"]


def test_sweep_is_complete_and_overlaps_each_page_by_one(client: AttioClient, served: ServedEmulator) -> None:
    sweep = client.sweep("companies", page_size=100)
    rows = [r for page in sweep for r in page]
    assert sweep.complete and sweep.restarts == 0
    assert [record_id(r) for r in rows] == [rid(n) for n in range(1, 1204)]  # created_at order, no duplicates
    assert sweep.ids == {rid(n) for n in range(1, 1204)}
    # the first page reads 100 rows, each next one 99 new (it repeats its anchor): offsets 0, 99, ..., 1188
    assert sweep.requests == len(requests(served, "/records/query")) == 13


def test_a_deletion_during_the_sweep_is_noticed_and_the_sweep_restarts(client: AttioClient,
                                                                      served: ServedEmulator) -> None:
    # plain offset paging skips a record when an earlier one is deleted mid-listing: the hazard being guarded
    naive: list[str] = []
    for n, page in enumerate(client.iter_query("companies", page_size=100)):
        naive += [record_id(r) for r in page]
        if n == 2:
            client.delete_record("companies", rid(5))
    survivors = {rid(n) for n in range(1, 1204)} - {rid(5)}
    assert len(survivors - set(naive)) == 1  # one survivor shifted into a page already read: never seen
    served.emulator.load(fixtures())
    sweep = client.sweep("companies", page_size=100)
    seen: list[str] = []
    for n, page in enumerate(sweep):
        seen += [record_id(r) for r in page]
        if n == 2:
            client.delete_record("companies", rid(5))
    assert sweep.complete and sweep.restarts == 1
    assert sweep.ids == survivors
    assert set(seen) >= sweep.ids and len(seen) == len(set(seen))  # every survivor seen, none twice


def test_a_sweep_that_never_settles_raises_instead_of_claiming_completeness(client: AttioClient) -> None:
    sweep = client.sweep("companies", page_size=100, max_restarts=1)
    victims = iter(range(1, 50))
    with pytest.raises(SweepIncomplete):
        for _page in sweep:
            client.delete_record("companies", rid(next(victims)))
    assert not sweep.complete and sweep.ids == set()


def test_writes_create_assert_update_delete(client: AttioClient, served: ServedEmulator) -> None:
    made = client.create_record("companies", {"name": "Hafen AG", "domains": ["hafen.example"]})
    assert made["values"]["name"][0]["value"] == "Hafen AG"
    first = client.assert_record("companies", "seq_customer_id", {"seq_customer_id": "cus-1", "name": "Seq Co"})
    again = client.assert_record("companies", "seq_customer_id", {"seq_customer_id": "cus-1", "name": "Seq Co 2"})
    assert record_id(first) == record_id(again) and again["values"]["name"][0]["value"] == "Seq Co 2"
    patched = client.update_record("companies", record_id(made), {"domains": ["hafen.de"]})
    assert [v["domain"] for v in patched["values"]["domains"]] == ["hafen.example", "hafen.de"]
    put = client.update_record("companies", record_id(made), {"domains": ["hafen.de"]}, replace_multiselect=True)
    assert [v["domain"] for v in put["values"]["domains"]] == ["hafen.de"]
    assert client.delete_record("companies", record_id(made)) is True
    assert client.delete_record("companies", record_id(made)) is False
    with pytest.raises(NotFound):
        client.get_record("companies", record_id(made))
    with pytest.raises(ValueError):
        client.assert_record("companies", "seq_customer_id", {"name": "no key"})
    assert [w["op"] for w in served.emulator.write_log] == ["create", "create", "update", "update", "update",
                                                            "delete"]


def test_errors_are_typed_with_attios_code(client: AttioClient) -> None:
    with pytest.raises(Conflict) as conflict:
        client.create_record("companies", {"domains": ["c1.example"]})
    assert conflict.value.code == "uniqueness_conflict" and conflict.value.status == 409
    with pytest.raises(ValidationFailed) as missing:
        client.create_record("deals", {"name": "no stage"})
    assert missing.value.code == "missing_value"
    with pytest.raises(ValidationFailed) as bad_filter:
        client.query("companies", filter={"nope": 1})
    assert bad_filter.value.code == "filter_error"
    with pytest.raises(NotFound) as missing_object:
        client.query("unicorns")
    assert missing_object.value.code == "not_found"


def test_assert_and_query_are_retried_after_a_5xx_but_a_create_is_not(client: AttioClient,
                                                                      served: ServedEmulator) -> None:
    served.emulator.faults.clear()
    from connectors.sandbox.emulator import Fault

    served.emulator.faults.append(Fault(kind="status", status=503, path="/records?matching_attribute"))
    client.assert_record("companies", "seq_customer_id", {"seq_customer_id": "cus-9"})
    served.emulator.faults.append(Fault(kind="status", status=502, path="/records/query"))
    assert len(client.query("companies", limit=5)) == 5
    served.emulator.faults.append(Fault(kind="status", status=500, path="/v2/objects/companies/records", method="POST"))
    with pytest.raises(ServerError):
        client.create_record("companies", {"name": "Once"})
    assert [r["status"] for r in requests(served, "/v2/objects/companies/records") if r["method"] == "PUT"] == \
        [503, 200]
    assert len([w for w in served.emulator.write_log if w["op"] == "create"]) == 1  # the assert, only once


def test_retry_after_as_an_http_date_is_honoured(served: ServedEmulator) -> None:
    from connectors.sandbox.emulator import Fault

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    served.emulator.faults.append(Fault(kind="status", status=429, retry_after="2", path="/records/query"))
    with AttioClient(served.url, attio_access_token("acme"), retry=RetryPolicy(max_attempts=3, base_delay=0.01,
                                                                                 jitter=False), sleep=sleep) as c:
        assert len(c.query("companies", limit=3)) == 3
    assert len(waits) == 1 and 1.0 <= waits[0] <= 2.5  # "now + 2 s" as an HTTP date, whole seconds


def test_real_rate_limits_throttle_and_the_client_recovers(served: ServedEmulator, control_for) -> None:
    control = control_for(served.url)
    control.rate_limits(enabled=True)
    served.emulator.writes_per_second = 2
    unpaced = RateLimiter(per_minute=10_000, period=1.0)
    with AttioClient(served.url, attio_access_token("acme"), retry=RetryPolicy(max_attempts=5, base_delay=0.01),
                     write_limiter=unpaced) as c:
        for n in range(4):
            c.assert_record("companies", "seq_customer_id", {"seq_customer_id": f"rl-{n}"})
    statuses = [r["status"] for r in requests(served, "/v2/objects/companies/records")]
    assert 429 in statuses and statuses.count(200) == 4
    control.rate_limits(enabled=True)  # fresh windows
    served.emulator.request_log.clear()
    served.emulator.writes_per_second = 4
    # paced under the emulator's limit (latency jitter makes "exactly at" racy), the client is never throttled
    with AttioClient(served.url, attio_access_token("acme"), retry=FAST_RETRY,
                     write_limiter=RateLimiter(per_minute=3, period=1.0)) as c:
        for n in range(4):
            c.assert_record("companies", "seq_customer_id", {"seq_customer_id": f"paced-{n}"})
    assert {r["status"] for r in requests(served, "/v2/objects/companies/records")} == {200}


def test_rate_limited_error_carries_the_date_as_seconds(served: ServedEmulator) -> None:
    served.emulator.limits.enabled = True
    served.emulator.reads_per_second = 1
    with AttioClient(served.url, attio_access_token("acme"), retry=RetryPolicy(max_attempts=1)) as c:
        c.query("companies", limit=1)
        with pytest.raises(RateLimited) as caught:
            c.query("companies", limit=1)
    assert caught.value.code == "rate_limit_exceeded" and 0 < caught.value.retry_after <= 2


def test_build_client_from_the_sandbox_registry(tmp_path: Path) -> None:
    folder = tmp_path / "fixtures"
    (folder / "acme" / "attio").mkdir(parents=True)
    (folder / "acme" / "attio" / "companies.json").write_bytes(orjson.dumps([company(1), company(2)]))
    with start_sandbox(folder, apps=["attio"]) as box:
        registry = parse_registry(box.registry_document())
        connection = registry.get("acme.attio")
        assert dict(connection.secret_env) == {"access_token": "LEDGERLINK_SANDBOX_ACME_ATTIO_ACCESS_TOKEN"}
        with build_client(connection, token_store=TokenStore(tmp_path / "tokens"), environ=box.environment(),
                          retry=FAST_RETRY) as client:
            assert isinstance(client, AttioClient)
            assert [len(p) for p in client.iter_query("companies")] == [2]
            assert client.whoami()["workspace_slug"] == "acme"
