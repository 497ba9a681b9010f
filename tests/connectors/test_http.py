"""The shared HTTP machinery, against stateful fake apps behind httpx.MockTransport (no sockets, no real waits)."""

from __future__ import annotations

import email.utils
import logging
import pickle
import threading
import time

import httpx
import pytest

from connectors.errors import (
    AppError,
    AuthenticationError,
    BadResponse,
    Conflict,
    NotFound,
    RateLimited,
    ServerError,
    TransportFailure,
    ValidationFailed,
    safe_url,
)
from connectors.http import AppClient, RateLimiter, RetryPolicy, parse_retry_after, rate_limit_signal

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=5.0, jitter=False)


class Script:
    """A fake app answering from a list of responses (or exceptions), recording every request it saw."""

    def __init__(self, *answers: httpx.Response | Exception | int):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, json={"ok": answer < 400})
        return answer


def client_for(script: Script, *, retry: RetryPolicy = FAST, **kw) -> tuple[AppClient, list[float]]:
    slept: list[float] = []
    client = AppClient("https://app.test/api", transport=httpx.MockTransport(script), retry=retry,
                       sleep=slept.append, **kw)
    return client, slept


# ----- retries ------------------------------------------------------------------------------------------------------


def test_retries_5xx_then_succeeds_with_exponential_backoff():
    script = Script(503, 502, 200)
    client, slept = client_for(script)
    assert client.get_json("/things") == {"ok": True}
    assert len(script.requests) == 3
    assert slept == [0.01, 0.02]


def test_gives_up_after_max_attempts_with_the_last_error():
    script = Script(500)
    client, slept = client_for(script, retry=RetryPolicy(max_attempts=3, base_delay=0.01, jitter=False))
    with pytest.raises(ServerError) as info:
        client.get_json("/things")
    assert len(script.requests) == 3 and len(slept) == 2
    assert info.value.status == 500 and info.value.retriable
    assert str(info.value) == "app 500 HTTP 500 Internal Server Error (GET /api/things)"


@pytest.mark.parametrize("status, cls", [(400, ValidationFailed), (401, AuthenticationError), (404, NotFound),
                                         (409, Conflict), (422, ValidationFailed), (501, ServerError)])
def test_non_retriable_statuses_are_sent_once(status, cls):
    script = Script(status)
    client, slept = client_for(script)
    with pytest.raises(cls) as info:
        client.get_json("/things")
    assert not info.value.retriable
    assert len(script.requests) == 1 and slept == []


def test_retry_after_seconds_is_a_floor_for_the_wait():
    script = Script(httpx.Response(429, headers={"Retry-After": "3"}), 200)
    client, slept = client_for(script, retry=RetryPolicy(base_delay=0.01))  # jitter on
    client.get_json("/things")
    assert 3.0 <= slept[0] <= 3.3


def test_retry_after_as_http_date():
    when = email.utils.formatdate(time.time() + 4, usegmt=True)
    script = Script(httpx.Response(503, headers={"Retry-After": when}), 200)
    client, slept = client_for(script)
    client.get_json("/things")
    assert 2.5 <= slept[0] <= 4.1  # the date has whole-second precision


def test_parse_retry_after_forms():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=lambda: now) == pytest.approx(30)
    assert parse_retry_after("7", now=lambda: now) == 7
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=lambda: now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("nan") is None


def test_x_rate_limit_problem():
    assert rate_limit_signal({"X-Rate-Limit-Problem": "minute"}) == (60.0, True)
    assert rate_limit_signal({"X-Rate-Limit-Problem": "Minute", "Retry-After": "12"}) == (12.0, True)
    assert rate_limit_signal({"X-Rate-Limit-Problem": "Daily", "Retry-After": "3600"}) == (3600.0, False)


def test_daily_limit_is_not_retried():
    script = Script(httpx.Response(429, headers={"X-Rate-Limit-Problem": "day"}))
    client, slept = client_for(script)
    with pytest.raises(RateLimited) as info:
        client.get_json("/things")
    assert len(script.requests) == 1 and not info.value.retriable


def test_a_wait_longer_than_max_delay_is_handed_back_to_the_caller():
    script = Script(httpx.Response(429, headers={"Retry-After": "600"}))
    client, slept = client_for(script)
    with pytest.raises(RateLimited) as info:
        client.get_json("/things")
    assert info.value.retry_after == 600 and len(script.requests) == 1 and slept == []


def test_retries_resend_the_exact_same_request():
    script = Script(503, 503, httpx.Response(201, json={"id": "1"}))
    client, _ = client_for(script)
    client.request_json("POST", "/things", params={"requestid": "r-1"}, json={"a": 1},
                        headers={"Idempotency-Key": "k-1"})
    first = script.requests[0]
    for again in script.requests[1:]:
        assert again.url == first.url and again.content == first.content == b'{"a":1}'
        assert again.headers["Idempotency-Key"] == "k-1"


def test_post_without_idempotency_is_not_resent_after_an_unclear_failure():
    script = Script(503, 200)
    client, _ = client_for(script)
    with pytest.raises(ServerError):
        client.request("POST", "/things", json={"a": 1})
    assert len(script.requests) == 1

    timeout = Script(httpx.ReadTimeout("timed out"), 200)
    client, _ = client_for(timeout)
    with pytest.raises(TransportFailure):
        client.request("POST", "/things", json={"a": 1})
    assert len(timeout.requests) == 1


def test_post_is_resent_when_it_provably_never_landed_or_is_idempotent():
    for first in (httpx.ConnectError("refused"), httpx.Response(429)):
        script = Script(first, 201)
        client, _ = client_for(script)
        assert client.request("POST", "/things", json={"a": 1}).status_code == 201
        assert len(script.requests) == 2
    script = Script(503, 201)
    client, _ = client_for(script)
    client.request("POST", "/things", json={"a": 1}, idempotent=True)
    assert len(script.requests) == 2


def test_connection_reset_is_retried_and_wrapped_when_exhausted():
    reset = httpx.ReadError("[Errno 104] Connection reset by peer")
    script = Script(reset, 200)
    client, _ = client_for(script)
    assert client.get_json("/x") == {"ok": True}

    script = Script(reset)
    client, _ = client_for(script)
    with pytest.raises(TransportFailure) as info:
        client.get_json("/x")
    assert info.value.exception is reset and info.value.__cause__ is reset
    assert len(script.requests) == FAST.max_attempts


def test_a_body_that_does_not_parse_is_refetched_then_reported_clearly():
    cut = httpx.Response(200, content=b'{"items": [{"id": 1}, {"id"', headers={"Content-Type": "application/json"})
    script = Script(cut, 200)
    client, _ = client_for(script)
    assert client.get_json("/things") == {"ok": True}

    script = Script(cut)
    client, _ = client_for(script)
    with pytest.raises(BadResponse) as info:
        client.get_json("/things", params={"page": "2"})
    message = str(info.value)
    assert len(script.requests) == FAST.max_attempts
    assert message.startswith("app 200 expected a JSON body but 27 bytes (application/json) do not parse")
    assert "(GET /api/things)" in message and info.value.url == "https://app.test/api/things?page=2"


def test_json_of_the_wrong_shape_is_not_retried():
    script = Script(httpx.Response(200, json=[1, 2]))
    client, _ = client_for(script)
    with pytest.raises(BadResponse, match="expected a JSON dict, got list"):
        client.get_json("/things")
    assert len(script.requests) == 1


def test_app_hook_can_make_an_odd_status_retriable():
    class Salesforceish(AppClient):
        app = "salesforceish"

        def decode_error(self, response):
            if response.status_code == 403 and b"REQUEST_LIMIT_EXCEEDED" in response.content:
                return self.make_error(response, "request limit exceeded", cls=RateLimited,
                                       code="REQUEST_LIMIT_EXCEEDED")
            return super().decode_error(response)

    script = Script(httpx.Response(403, json=[{"errorCode": "REQUEST_LIMIT_EXCEEDED"}]), 200)
    slept: list[float] = []
    client = Salesforceish("https://sf.test", transport=httpx.MockTransport(script), retry=FAST, sleep=slept.append)
    assert client.get_json("/q") == {"ok": True} and len(slept) == 1


# ----- logging and secrets --------------------------------------------------------------------------------------------


def test_logs_name_method_and_path_only(caplog):
    script = Script(503, 200)
    client, _ = client_for(script, auth=("user", "pa55word"), headers={"X-Api-Key": "k3y-value"})
    with caplog.at_level(logging.DEBUG):
        client.get_json("/things", params={"access_token": "tok-123", "q": "needle"})
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("connectors"))
    assert "GET /api/things" in text
    for secret in ("pa55word", "k3y-value", "tok-123", "needle", "Authorization"):
        assert secret not in text


def test_safe_url_redacts_secret_query_values_and_userinfo():
    url = "https://u:p@app.test/x?access_token=abc&client_secret=s&requestid=r1&code=c&minorversion=75"
    assert safe_url(url) == ("https://app.test/x?access_token=REDACTED&client_secret=REDACTED&requestid=r1"
                             "&code=REDACTED&minorversion=75")


def test_errors_pickle_with_their_attributes():
    error = RateLimited("x", "slow down", status=429, retry_after=2.0, method="GET", url="https://a.test/p")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimited and copy.retry_after == 2.0 and str(copy) == str(error)
    assert isinstance(copy, AppError) and copy.path == "/p"


# ----- retry policy --------------------------------------------------------------------------------------------------


def test_backoff_grows_caps_and_jitters_within_bounds():
    plain = RetryPolicy(base_delay=0.5, max_delay=4.0, jitter=False)
    assert [plain.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = RetryPolicy(base_delay=0.5, max_delay=4.0)
    for n in range(1, 7):
        assert plain.backoff(n) / 2 <= jittered.backoff(n) <= plain.backoff(n)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# ----- rate limiter ---------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_sliding_window_blocks_until_a_slot_frees():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        with limiter:
            clock.now += 1
    assert clock.slept == []
    with limiter:  # the first start (t=100) leaves the window at t=160
        pass
    assert clock.slept == [pytest.approx(57.0)]
    assert clock.now == pytest.approx(160.0)


def test_rate_limiter_caps_concurrency_across_threads():
    limiter = RateLimiter(max_concurrent=2)
    peak = 0
    guard = threading.Lock()

    def work():
        nonlocal peak
        with limiter:
            with guard:
                peak = max(peak, limiter.in_flight)
            time.sleep(0.02)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2 and limiter.in_flight == 0


def test_client_releases_the_limiter_slot_on_failure():
    limiter = RateLimiter(per_minute=100, max_concurrent=1)
    client, _ = client_for(Script(httpx.ConnectError("refused")), limiter=limiter)
    with pytest.raises(TransportFailure):
        client.get_json("/x")
    assert limiter.in_flight == 0


# ----- throttles without Retry-After, requests that count as several ----------------------------------------------


def test_throttle_without_retry_after_waits_the_throttle_delay_with_jitter():
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=66.0, throttle_delay=60.0)
    script = Script(httpx.Response(429), httpx.Response(429), 200)
    client, slept = client_for(script, retry=policy)
    assert client.get_json("/things") == {"ok": True}
    assert len(slept) == 2 and all(60.0 <= s <= 66.0 for s in slept)
    # a 5xx still backs off exponentially; a Retry-After still wins; the wait never exceeds max_delay
    assert policy.wait_for(1, ServerError("x", "down", status=503)) <= 0.01
    assert policy.wait_for(1, RateLimited("x", "slow", status=429, retry_after=2.0)) <= 3.0
    capped = RetryPolicy(max_delay=1.0, throttle_delay=60.0)
    assert capped.wait_for(1, RateLimited("x", "slow", status=429)) == 1.0


def test_throttled_write_without_idempotency_is_not_resent_when_the_app_may_have_acted():
    class Cautious(AppClient):
        throttled_writes_not_applied = False

    for idempotent, sent in ((None, 1), (True, 2)):
        script = Script(httpx.Response(429), 201)
        client = Cautious("https://app.test", transport=httpx.MockTransport(script), retry=FAST,
                          sleep=lambda s: None)
        if sent == 1:
            with pytest.raises(RateLimited):
                client.request("POST", "/things", json={"a": 1}, idempotent=idempotent)
        else:
            assert client.request("POST", "/things", json={"a": 1}, idempotent=idempotent).status_code == 201
        assert len(script.requests) == sent


def test_rate_limiter_charges_a_cost_per_attempt_and_waits_for_enough_slots():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=5, clock=clock, sleep=clock.sleep)
    limiter.acquire(cost=3)
    limiter.release()
    clock.now += 10
    limiter.acquire(cost=2)  # 5 of 5: fits
    limiter.release()
    assert clock.slept == []
    limiter.acquire(cost=3)  # needs the first three (t=100) gone: t=160
    limiter.release()
    assert clock.now == pytest.approx(160.0)
    with pytest.raises(ValueError):
        limiter.acquire(cost=6)
    assert limiter.in_flight == 0

    script = Script(httpx.Response(429), 200)
    paced = RateLimiter(per_minute=100)
    client, _ = client_for(script, limiter=paced)
    client.send_parsed("POST", "/batch", lambda r: r, json={}, idempotent=True, cost=7)
    assert len(paced._starts) == 14  # both attempts paid the whole cost
