"""The one place that decides how a connector talks HTTP: retries, backoff, client-side rate limiting and
turning failed responses into `AppError`s.

Each app client subclasses `AppClient` and overrides `decode_error` (its error bodies) and, where the app has
odd throttle signals, `is_retriable`. Everything else (which failures are retriable, how long to wait, honouring
Retry-After, never re-running a non-idempotent write that may have landed) lives here.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import httpx
import orjson
import tenacity

from connectors.errors import (
    AppError,
    BadResponse,
    RateLimited,
    TransportFailure,
    error_class_for_status,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Failures where the request provably never reached the app: safe to retry even for a non-idempotent write.
_NOT_DELIVERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures below HTTP that a second try can cure.
_TRANSIENT_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.DecodingError)


# ----- Retry-After and friends ---------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: either delta-seconds or an HTTP date. None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - now())
    return max(0.0, seconds) if math.isfinite(seconds) else None


def rate_limit_signal(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> tuple[float | None, bool]:
    """(seconds to wait, retriable) from a throttled response's headers.

    Honours Retry-After (seconds or HTTP date) and Xero's X-Rate-Limit-Problem: a daily limit is not worth
    retrying within a run; a minute limit without Retry-After means waiting out the minute.
    """
    wait = parse_retry_after(headers.get("Retry-After"), now=now)
    problem = (headers.get("X-Rate-Limit-Problem") or "").strip().lower()
    if problem.startswith(("day", "daily")):
        return wait, False
    if wait is None and problem.startswith("minute"):
        wait = 60.0
    return wait, True


# ----- retry policy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how patiently to retry a retriable failure.

    Waits are exponential (base_delay · 2^(attempt-1), capped at max_delay) with jitter, unless the app asked for
    a specific wait (Retry-After), which is honoured as a floor. If the app asks for longer than max_delay we stop
    and raise RateLimited (with `retry_after`) so the caller can reschedule rather than stall a run.

    `throttle_delay`: the wait after a throttle (RateLimited) that came *without* Retry-After, for apps whose
    limit is a per-minute window that says nothing about when it frees up (QuickBooks: 429 Fault 3001, no
    Retry-After; Intuit advises backing off about a minute). Up to +10 % jitter so clients that were throttled
    together do not come back together; capped at max_delay. None: such throttles back off exponentially.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0
    jitter: bool = True
    throttle_delay: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or (self.throttle_delay or 0) < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based) when the app gave no signal."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        # "Equal jitter": never less than half the nominal delay, so backoff still grows, but spread out.
        return random.uniform(delay / 2, delay) if self.jitter else delay

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        requested = getattr(error, "retry_after", None)
        if requested is None:
            if self.throttle_delay is not None and isinstance(error, RateLimited):
                spread = random.uniform(0, self.throttle_delay * 0.1) if self.jitter else 0.0
                return min(self.max_delay, self.throttle_delay + spread)
            return self.backoff(attempt)
        spread = random.uniform(0, min(1.0, requested * 0.1)) if self.jitter else 0.0
        return max(requested, min(self.max_delay, requested + spread))

    def gives_up(self, attempt: int, error: BaseException | None) -> bool:
        if attempt >= self.max_attempts:
            return True
        requested = getattr(error, "retry_after", None)
        return requested is not None and requested > self.max_delay

    def retrying(
        self,
        should_retry: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], None] = time.sleep,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.Retrying:
        """A tenacity controller applying this policy; the last error is re-raised as is when it gives up."""

        def wait(state: tenacity.RetryCallState) -> float:
            return self.wait_for(state.attempt_number, _error_of(state))

        def stop(state: tenacity.RetryCallState) -> bool:
            return self.gives_up(state.attempt_number, _error_of(state))

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry),
            wait=wait,
            stop=stop,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


def _error_of(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


# ----- client-side rate limiting ------------------------------------------------------------------------------------


class RateLimiter:
    """Blocks callers so that at most `per_minute` requests start in any sliding `period` and at most
    `max_concurrent` are in flight. Thread-safe; share one instance between clients that share the app's quota.

    Use as a context manager around one request: `with limiter: send()`. A request the app counts as several
    (a QuickBooks batch counts each item) takes `acquire(cost=n)`: n window slots, one in-flight slot.
    """

    def __init__(
        self,
        per_minute: int | None = None,
        max_concurrent: int | None = None,
        *,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_minute is not None and per_minute < 1 or max_concurrent is not None and max_concurrent < 1:
            raise ValueError("limits must be positive (or None for no limit)")
        self.per_minute = per_minute
        self.max_concurrent = max_concurrent
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._slot_freed = threading.Condition(self._lock)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self, cost: int = 1) -> None:
        if cost < 1 or self.per_minute is not None and cost > self.per_minute:
            raise ValueError(f"a request costing {cost} can never fit a limit of {self.per_minute} per period")
        if self.max_concurrent is not None:
            with self._slot_freed:
                while self._in_flight >= self.max_concurrent:
                    self._slot_freed.wait()
                self._in_flight += 1
        else:
            with self._lock:
                self._in_flight += 1
        try:
            self._take_window_slots(cost)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        with self._slot_freed:
            self._in_flight -= 1
            self._slot_freed.notify()

    def _take_window_slots(self, cost: int) -> None:
        if self.per_minute is None:
            return
        while True:
            with self._lock:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.period:
                    self._starts.popleft()
                if len(self._starts) + cost <= self.per_minute:
                    self._starts.extend([now] * cost)
                    return
                # `cost` slots are free once the cost-th oldest start has left the window
                wait = self._starts[len(self._starts) + cost - self.per_minute - 1] + self.period - now
            # Sleep outside the lock so other threads can still release and check.
            self._sleep(max(wait, 0.001))

    def __enter__(self) -> RateLimiter:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----- the client base --------------------------------------------------------------------------------------------


class AppClient:
    """An httpx client for one app: every request goes through the same retry, rate-limit and error decoding.

    Subclasses set `app` and override `decode_error`; they may override `is_retriable` (an app's own throttle
    signal on an odd status) and `check_body` (errors reported inside a 2xx body).
    """

    app: ClassVar[str] = "app"
    # Whether a throttled (429) request provably did nothing, so that even a write without an idempotency key
    # may be re-sent. An app that may throttle after acting (or that says nothing about it) sets False: its
    # throttled writes are then retried only when idempotent (e.g. QuickBooks: only with a requestid).
    throttled_writes_not_applied: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.retry = retry
        self.limiter = limiter
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url,
            auth=auth,
            headers={"Accept": "application/json", **(headers or {})},
            params=params,
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return str(self._http.base_url)

    # ----- requests ---------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Sends a request, retrying retriable failures, and returns the successful response (body read).

        Raises an AppError subclass on failure. `idempotent` says whether re-sending after an unclear outcome
        (timeout, reset, 5xx) is safe; by default GET/HEAD/OPTIONS/PUT/DELETE and requests carrying an
        Idempotency-Key are, POST/PATCH are not (those are retried only when the app provably did not act:
        connection refused, or 429).
        """
        return self._send(method, path, params=params, json=json, content=content, headers=headers,
                          idempotent=idempotent, parse=None)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect: type | tuple[type, ...] = dict,
    ) -> Any:
        """Like `request`, and parses the body as JSON of type `expect`. Parsing happens inside the retry loop, so
        a body damaged in transit is fetched again."""
        return self._send(method, path, params=params, json=json, content=content, headers=headers,
                          idempotent=idempotent, parse=lambda r: self.parse_json(r, expect=expect))

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: type | tuple[type, ...] = dict,
    ) -> Any:
        return self.request_json("GET", path, params=params, headers=headers, expect=expect)

    def send_parsed(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        cost: int = 1,
        limiters: tuple[RateLimiter, ...] = (),
    ) -> T:
        """For subclasses: a request whose successful response is turned into a value by `parse` inside the retry
        loop (a retriable BadResponse raised by `parse` re-sends the request). `cost`: how many requests the app
        counts this one as (every attempt pays it again); `limiters`: further limits it must also pass (e.g. a
        per-endpoint limit)."""
        return self._send(method, path, params=params, json=json, content=content, headers=headers,
                          idempotent=idempotent, parse=parse, cost=cost, limiters=limiters)

    # ----- hooks for subclasses ---------------------------------------------------------------------------------

    def decode_error(self, response: httpx.Response) -> AppError:
        """Turns a failed response into an AppError. The base reads only the status and Retry-After."""
        return self.make_error(response, f"HTTP {response.status_code} {response.reason_phrase}".strip())

    def is_retriable(self, error: AppError) -> bool:
        """Whether an error is worth retrying at all (before idempotency is considered)."""
        return error.retriable

    def check_body(self, response: httpx.Response, body: Any) -> None:
        """Raise an AppError if a 2xx JSON body actually reports a failure. The base accepts everything."""

    # ----- helpers for subclasses -------------------------------------------------------------------------------

    def make_error(
        self,
        response: httpx.Response,
        message: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        cls: type[AppError] | None = None,
    ) -> AppError:
        """An AppError for a response, with the class from its status unless given, and Retry-After decoded."""
        cls = cls or error_class_for_status(response.status_code)
        kwargs: dict[str, Any] = dict(status=response.status_code, code=code, detail=detail,
                                      method=response.request.method, url=response.request.url)
        if issubclass(cls, RateLimited):
            kwargs["retry_after"], kwargs["retriable"] = rate_limit_signal(response.headers)
        elif "Retry-After" in response.headers:  # e.g. 503 during maintenance
            kwargs["retry_after"] = parse_retry_after(response.headers["Retry-After"])
        return cls(self.app, message, **kwargs)

    def bad_response(self, response: httpx.Response, problem: str, *, retriable: bool = False) -> BadResponse:
        return BadResponse(self.app, problem, status=response.status_code, method=response.request.method,
                           url=response.request.url, retriable=retriable)

    def parse_json(self, response: httpx.Response, *, expect: type | tuple[type, ...] = dict) -> Any:
        """The body as JSON, checked to be of type `expect`; BadResponse (retriable) if it does not parse."""
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            kind = response.headers.get("Content-Type", "no content type")
            raise self.bad_response(
                response,
                f"expected a JSON body but {len(response.content)} bytes ({kind}) do not parse: {exc}",
                retriable=True,
            ) from None
        if not isinstance(body, expect):
            names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
            raise self.bad_response(response, f"expected a JSON {names}, got {type(body).__name__}")
        self.check_body(response, body)
        return body

    # ----- machinery --------------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        content: bytes | str | None,
        headers: Mapping[str, str] | None,
        idempotent: bool | None,
        parse: Callable[[httpx.Response], T] | None,
        cost: int = 1,
        limiters: tuple[RateLimiter, ...] = (),
    ) -> Any:
        if json is not None:
            # orjson is strict and fast; build the body once so every retry sends identical bytes.
            content = orjson.dumps(json)
            headers = {"Content-Type": "application/json", **(headers or {})}
        request = self._http.build_request(method, path, params=params, content=content, headers=headers)
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS or "Idempotency-Key" in request.headers

        def should_retry(exc: BaseException) -> bool:
            return isinstance(exc, AppError) and self._worth_retrying(exc, idempotent)

        retrying = self.retry.retrying(should_retry, sleep=self._sleep, before_sleep=self._log_retry)
        paced = tuple(limiter for limiter in (self.limiter, *limiters) if limiter is not None)
        return retrying(self._attempt, request, parse, paced, cost)

    def _worth_retrying(self, error: AppError, idempotent: bool) -> bool:
        if not self.is_retriable(error):
            return False
        if idempotent or isinstance(error, RateLimited) and self.throttled_writes_not_applied:
            return True
        # A write without an idempotency guarantee is re-sent only if it provably never reached the app.
        return isinstance(error, TransportFailure) and isinstance(error.exception, _NOT_DELIVERED)

    def _attempt(self, request: httpx.Request, parse: Callable[[httpx.Response], T] | None,
                 limiters: tuple[RateLimiter, ...] = (), cost: int = 1) -> Any:
        log.debug("%s %s %s", self.app, request.method, request.url.path)
        taken: list[RateLimiter] = []
        try:
            for limiter in limiters:  # every attempt pays again: the app counts a retry as a request
                limiter.acquire(cost if limiter is self.limiter else 1)
                taken.append(limiter)
            response = self._http.send(request)
        except httpx.RequestError as exc:
            raise self._transport_failure(request, exc) from exc
        finally:
            for limiter in taken:
                limiter.release()
        log.debug("%s %s %s -> %s", self.app, request.method, request.url.path, response.status_code)
        if response.is_error:
            raise self.decode_error(response)
        return parse(response) if parse is not None else response

    def _transport_failure(self, request: httpx.Request, exc: httpx.RequestError) -> TransportFailure:
        if isinstance(exc, httpx.TimeoutException):
            what = "timed out"
        elif isinstance(exc, httpx.ConnectError):
            what = "could not connect"
        elif isinstance(exc, httpx.RemoteProtocolError):
            what = "connection dropped before a complete response (reset or body cut short)"
        elif isinstance(exc, httpx.NetworkError):
            what = "connection failed mid-exchange"
        else:
            what = "request failed"
        return TransportFailure(
            self.app, f"{what} ({type(exc).__name__}: {exc})", method=request.method, url=request.url,
            exception=exc, retriable=isinstance(exc, _TRANSIENT_TRANSPORT),
        )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = _error_of(state)
        log.warning("%s; attempt %d of %d failed, retrying in %.2fs", error, state.attempt_number,
                    self.retry.max_attempts, state.upcoming_sleep)

    # ----- lifecycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
