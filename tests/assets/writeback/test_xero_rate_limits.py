"""Xero's rate limits met during apply, on the Xero emulator over loopback with its limits switched on: a minute
limit (429, Retry-After, X-Rate-Limit-Problem: minute) is waited out and the request goes again under the same
Idempotency-Key, once; so is a concurrent limit (another request of the organisation holding the only slot:
the emulator's `busy` fault); a daily limit is not retried within the run: the rows of the refused request end
failed (retriable) with a reason naming the record, that organisation's later requests are not sent (their rows
stay planned), the other tenants go on, and the next day (the emulator's clock moved on) the next apply sends
them all once. No write is ever executed twice (the emulator's write log)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import duckdb
import httpx
import polars as pl
import pytest

from assets.writeback import outbox
from assets.writeback.apply import Applier, Clients
from assets.writeback.plan import Row, empty_plan
from assets.writeback.xero import XERO
from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.errors import RateLimited
from connectors.http import RetryPolicy
from connectors.registry import parse_registry
from connectors.sandbox import identity
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.xero import DAY_SECONDS, XeroEmulator
from connectors.xero import XeroClient, token_url_for
from tests.connectors.test_xero import small_fixtures

# patient enough for a 1-2 s Retry-After, never for a day
RETRY = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=5.0, jitter=False)
TENANTS = ("acme", "globex")


class Clock:
    """The emulator's clock: real time plus an offset a test moves on (token, idempotency and rate windows)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Recorder(httpx.BaseTransport):
    """Keeps what the client saw of each API answer: status, the rate-limit headers, the request's key."""

    def __init__(self, inner: httpx.BaseTransport, seen: list[dict]):
        self.inner, self.seen = inner, seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "/api.xro/" in request.url.path:
            self.seen.append({"method": request.method, "path": request.url.path, "status": response.status_code,
                              "key": request.headers.get("Idempotency-Key"),
                              "tenant_id": request.headers.get("xero-tenant-id"),
                              "problem": response.headers.get("X-Rate-Limit-Problem"),
                              "retry_after": response.headers.get("Retry-After"), "at": time.monotonic()})
        return response

    def close(self) -> None:
        self.inner.close()


def xero_clients(url: str, store: TokenStore, seen: list[dict] | None = None,
                 retry: RetryPolicy = RETRY) -> Clients:
    """Apply's clients for the emulator's tenants (acme, globex), sharing one token store."""
    registry = parse_registry({"tenants": {t: {"settings": {}, "connections": {"xero": {
        "base_url": url, "xero_tenant_id": identity.xero_tenant_id(t),
        "secrets": {"client_id": "A", "client_secret": "B", "refresh_token": "C"}}}} for t in TENANTS}})

    def build(connection, transport):
        tenant = connection.tenant
        auth = OAuth2RefreshAuth(token_url_for(url), identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET, store,
                                 f"{tenant}.xero", initial_refresh_token=identity.xero_initial_refresh_token(tenant),
                                 app="xero")
        wrapped = Recorder(transport, seen) if seen is not None else transport
        return XeroClient(url, identity.xero_tenant_id(tenant), auth, retry=retry, transport=wrapped)

    return Clients(registry, store, build=build)


def apply_once(con, url: str, store: TokenStore, seen: list[dict] | None = None):
    clients = xero_clients(url, store, seen)
    try:
        return Applier(con, clients, echo=lambda _: None).run()
    finally:
        clients.close()


def _row(tenant: str, entity: str, operation: str, sequence_id: str | None, app_id: str | None,
         payload: dict) -> Row:
    return Row(tenant, XERO, entity, operation, sequence_id, app_id, payload, "a test write", counterpart_app=XERO)


def acme_rows() -> list[Row]:
    """Five requests for acme (one per collection and method), six rows."""
    return [
        _row("acme", "customer", "create", "seq-a", None, {"Name": "New A", "ContactNumber": "seq-a"}),
        _row("acme", "customer", "create", "seq-b", None, {"Name": "New B", "ContactNumber": "seq-b"}),
        _row("acme", "customer", "update", "seq-1", "c-1", {"ContactID": "c-1", "EmailAddress": "ap@one.example"}),
        _row("acme", "product", "create_item", "p-new", None,
             {"Code": "NEWFEE", "Name": "New fee", "SalesDetails": {"AccountCode": "200"}}),
        _row("acme", "product", "update_item", "p-fee", "it-1",
             {"ItemID": "it-1", "SalesDetails": {"AccountCode": "200"}}),
        _row("acme", "invoice", "update", "seq-inv-1", "inv-1", {"InvoiceID": "inv-1", "DueDate": "2025-04-30"}),
    ]


def load(con, rows: list[Row]) -> None:
    outbox.merge_plan(con, pl.DataFrame([r.record() for r in rows], schema=empty_plan().schema))


def writes(url: str) -> list[dict]:
    return httpx.get(f"{url}/_sandbox/writes").json()


def limits(url: str, **body) -> None:
    httpx.put(f"{url}/_sandbox/rate-limits", json={"enabled": True, **body}).raise_for_status()


def assert_each_write_once(log: list[dict], box: pl.DataFrame) -> None:
    """Every write log entry is one element of one request, and belongs to a confirmed row."""
    executed = Counter((w["idempotency_key"], w["id"]) for w in log)
    assert max(executed.values(), default=1) == 1, executed
    confirmed = box.filter(pl.col("state") == "confirmed")
    assert len(log) == confirmed.height, (log, confirmed.select("operation", "app_id", "request_id").to_dicts())
    assert set(executed) == {(r["request_id"], r["app_id"]) for r in confirmed.to_dicts()}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def served(clock):
    with ServedEmulator(XeroEmulator(small_fixtures(), rate_limits=True, clock=clock, per_day=1000)) as served:
        yield served


def test_a_minute_limit_is_waited_out_and_each_request_goes_through_once(served, tmp_path):
    # 3 calls per 1.5 s window: the 4th request of the run meets a real minute-limit 429 with a short Retry-After
    limits(served.url, per_minute=3, concurrent=5, window_seconds=1.5)
    seen: list[dict] = []
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        load(con, acme_rows())
        result = apply_once(con, served.url, TokenStore(tmp_path / "tokens.json"), seen)
        box = outbox.read(con)
    assert result.counts["confirmed"] == 6 and result.counts["failed"] == 0, result.summary()
    throttled = [s for s in seen if s["status"] == 429]
    assert throttled and {s["problem"] for s in throttled} == {"minute"}, seen
    for hit in throttled:
        wait = float(hit["retry_after"])
        assert wait >= 1
        # the same request again, under the same key, no sooner than Xero asked
        later = [s for s in seen if s["key"] == hit["key"] and s["at"] > hit["at"]]
        assert later and later[0]["at"] - hit["at"] >= wait - 0.05, (hit, later)
    # five requests were answered 200 once each: one per collection and method
    assert Counter(s["key"] for s in seen if s["status"] == 200).most_common(1)[0][1] == 1
    assert len({s["key"] for s in seen}) == 5
    assert_each_write_once(writes(served.url), box)


def test_a_concurrent_limit_is_waited_out(served, tmp_path):
    """Another request of the organisation (here a slow read) holds its only slot when apply writes."""
    limits(served.url, per_minute=1000, concurrent=1)
    store = TokenStore(tmp_path / "tokens.json")
    holder = xero_clients(served.url, store).get("acme", XERO)
    seen: list[dict] = []
    try:
        assert isinstance(holder, XeroClient)
        holder.organisation()  # its token first: apply's client then refreshes from the rotated one in the store
        httpx.post(f"{served.url}/_sandbox/faults",
                   json={"kind": "busy", "delay": 2.5, "path": "/Organisation", "times": 1}).raise_for_status()
        busy = threading.Thread(target=holder.organisation)
        busy.start()
        deadline = time.monotonic() + 2
        while served.emulator._in_flight["acme"] < 1 and time.monotonic() < deadline:  # the slot is taken
            time.sleep(0.01)
        with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
            load(con, acme_rows()[:2])
            clients = xero_clients(served.url, store, seen, retry=RetryPolicy(max_attempts=6, base_delay=0.0,
                                                                              max_delay=5.0, jitter=False))
            try:
                result = Applier(con, clients, echo=lambda _: None).run()
            finally:
                clients.close()
            box = outbox.read(con)
        busy.join()
    finally:
        holder.close()
    assert result.counts["confirmed"] == 2, result.summary()
    # refused while the slot was held, then the same request under the same key once the slot was free
    statuses = [(s["status"], s["problem"]) for s in seen]
    assert statuses[0] == (429, "concurrent") and statuses[-1] == (200, None), seen
    assert set(statuses[:-1]) == {(429, "concurrent")} and all(s["retry_after"] for s in seen[:-1])
    assert {s["key"] for s in seen} == {seen[0]["key"]}
    assert_each_write_once(writes(served.url), box)


def test_busy_fault_holds_a_concurrency_slot(served, tmp_path):
    """The emulator addition the test above relies on: a `busy` request counts as in flight while it waits."""
    limits(served.url, per_minute=1000, concurrent=1)
    client = xero_clients(served.url, TokenStore(tmp_path / "tokens.json"),
                          retry=RetryPolicy(max_attempts=1)).get("acme", XERO)
    try:
        assert isinstance(client, XeroClient)
        client.organisation()
        httpx.post(f"{served.url}/_sandbox/faults",
                   json={"kind": "busy", "delay": 1.5, "path": "/Organisation", "times": 1}).raise_for_status()
        busy = threading.Thread(target=client.organisation)
        busy.start()
        deadline = time.monotonic() + 1
        while served.emulator._in_flight["acme"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(RateLimited) as refused:
            client.get("Items", "it-1")
        busy.join()
        assert client.get("Items", "it-1")["Code"] == "FEE"  # the slot is free again
    finally:
        client.close()
    assert refused.value.code == "concurrent" and refused.value.retry_after == 1 and refused.value.retriable


def test_a_daily_limit_is_not_retried_the_rows_fail_naming_the_record_and_the_run_goes_on(served, clock, tmp_path):
    served.emulator.per_day = 3  # acme's day allows three calls: its first three requests of five
    limits(served.url, per_minute=1000, concurrent=5)
    store = TokenStore(tmp_path / "tokens.json")
    seen: list[dict] = []
    rows = [*acme_rows(), _row("globex", "customer", "create", "seq-g", None, {"Name": "Globex Buyer"})]
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:
        load(con, rows)
        result = apply_once(con, served.url, store, seen)
        box = outbox.read(con)
        daily = [s for s in seen if s["status"] == 429]
        assert daily and {s["problem"] for s in daily} == {"daily"}
        assert all(s["retry_after"] for s in daily)
        # one 429 and the organisation is left alone for the day: not retried, no further request of acme's
        assert len(daily) == 1
        acme_after = [s for s in seen[seen.index(daily[0]) + 1:] if s["tenant_id"] == identity.xero_tenant_id("acme")]
        assert not acme_after, acme_after
        refused = box.filter(pl.col("request_id").is_in([s["key"] for s in daily]))
        assert refused.height >= 1 and set(refused["state"]) == {"failed"}, refused.to_dicts()
        for r in refused.to_dicts():
            record = r["sequence_id"]
            assert record in r["error"] and "in Xero of" in r["error"] and "daily" in r["error"], r["error"]
        assert all(refused["retriable"]), "a 429 wrote nothing: the next apply may send it again"
        held = box.filter(pl.col("state") == "planned")  # acme's requests after the 429: never sent
        assert held.height >= 1 and set(held["tenant"]) == {"acme"} and held["request_id"].is_null().all()
        # the rest of the run went on: acme's first three requests and the other tenant
        done = box.filter(pl.col("state") == "confirmed")
        assert done.height == len(rows) - refused.height - held.height
        assert "seq-g" in done["sequence_id"].to_list()
        assert result.counts["failed"] == refused.height
        assert_each_write_once(writes(served.url), box)

        # the next day: the next apply sends the refused and the held rows by itself, once
        clock.offset += DAY_SECONDS + 1
        again = apply_once(con, served.url, store)
        final = outbox.read(con)
    assert again.counts["confirmed"] == refused.height + held.height, again.summary()
    assert set(final["state"]) == {"confirmed"}
    assert_each_write_once(writes(served.url), final)
