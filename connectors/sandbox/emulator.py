"""What every app emulator shares: routing, the control plane, switchable faults and rate limits, request and
write logs, and serving on loopback.

An emulator is a WSGI application, so the same object runs behind a real HTTP server on 127.0.0.1
(`serve`) or in-process behind `httpx.WSGITransport` for fast unit tests.

Control plane (no auth; loopback only), on every emulator:
  GET    /_sandbox/health            app name and tenants
  POST   /_sandbox/faults            arm a fault: {"kind", "times", "path", "method", "status", "retry_after", "delay"}
                                     (kinds: status, slow (waits before the request is counted), busy (waits
                                     while it counts as in flight: holds a concurrency slot), reset, truncate,
                                     expired_token)
  DELETE /_sandbox/faults            disarm all faults
  PUT    /_sandbox/rate-limits       {"enabled": bool, "per_minute": int, "concurrent": int}
  POST   /_sandbox/expire-tokens     every access token issued so far stops working (OAuth apps)
  GET    /_sandbox/requests          every request served: method, path, tenant, status, idempotency key
  GET    /_sandbox/writes            every write that changed state, as the app applied it (the write log)
  DELETE /_sandbox/log               clear both logs
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import orjson
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

FAULT_KINDS = ("status", "slow", "busy", "reset", "truncate", "expired_token")


@dataclass
class Fault:
    """One armed fault. It hits the next `times` requests whose path contains `path` (and method matches);
    times=-1 keeps it armed until cleared."""

    kind: str
    times: int = 1
    path: str = ""
    method: str | None = None
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(FAULT_KINDS)}")

    def matches(self, request: Request) -> bool:
        if self.path and self.path not in request.full_path:
            return False
        return self.method is None or self.method.upper() == request.method


@dataclass
class RateLimits:
    enabled: bool = False
    per_minute: int = 0
    concurrent: int = 0
    window_seconds: float = 60.0


class EmulatorError(Exception):
    """Raised by handlers to answer with the app's own error shape."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


class _AbortConnection(Exception):
    """Raised to drop the TCP connection without an HTTP answer (a reset)."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype="application/json")


@dataclass
class RequestContext:
    """What the authentication step learned about a request."""

    tenant: str
    extra: dict[str, Any] = field(default_factory=dict)


class Emulator:
    """Base class: subclasses set `app` and `collections`, load their fixtures, declare `routes()`, and
    implement `authenticate`, `error_response` and `throttled_response` in the app's own shapes."""

    app: ClassVar[str]
    collections: ClassVar[frozenset[str]]
    default_limits: ClassVar[RateLimits] = RateLimits()

    def __init__(self, fixtures: dict[str, dict[str, list[dict]]], *, rate_limits: bool = False):
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.limits = RateLimits(**{**asdict(self.default_limits), "enabled": rate_limits})
        self.request_log: list[dict] = []
        self.write_log: list[dict] = []
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._in_flight: dict[str, int] = defaultdict(int)
        self.tenants = sorted(fixtures)
        self.load(fixtures)
        self.url_map = Map(self.routes(), strict_slashes=False, merge_slashes=False)

    # ----- to implement per app -------------------------------------------------------------------------
    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        raise NotImplementedError

    def routes(self) -> list[Rule]:
        """Rules whose endpoint is the name of a handler method `handler(request, ctx, **url_args)`."""
        raise NotImplementedError

    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        """Returns who is calling, or raises EmulatorError with the app's 401/403."""
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> Response:
        """The app's generic error body for a status (used for injected 5xx and routing errors)."""
        raise NotImplementedError

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        raise NotImplementedError

    def expired_token_response(self) -> Response:
        return self.error_response(401, "token expired")

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far (OAuth apps override)."""

    def idempotency_key(self, request: Request) -> str | None:
        return None

    # ----- how the launcher describes a tenant's connection to this emulator --------------------------------
    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        """The secrets a client needs for `tenant` (handed over as environment variables, never in a file)."""
        raise NotImplementedError

    @classmethod
    def connection_options(cls, tenant: str) -> dict[str, Any]:
        """Registry fields besides base_url and secrets (e.g. QuickBooks' realm_id)."""
        return {}

    # ----- helpers for handlers ---------------------------------------------------------------------------
    def record_write(self, tenant: str, op: str, entity: str, record_id: str | None, **extra: Any) -> None:
        with self.lock:
            self.write_log.append(
                {"seq": len(self.write_log) + 1, "tenant": tenant, "op": op, "entity": entity, "id": record_id,
                 "at": time.time(), **extra}
            )

    @staticmethod
    def json_body(request: Request, error: Callable[[str], Response]) -> Any:
        try:
            return orjson.loads(request.get_data())
        except orjson.JSONDecodeError as exc:
            raise EmulatorError(error(f"request body is not valid JSON: {exc}")) from None

    # ----- WSGI -----------------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.startswith("/_sandbox/"):
            return self._control(request)(environ, start_response)
        fault = self._take_fault(request)
        tenant = "-"
        if fault is not None and fault.kind == "busy":
            environ["sandbox.busy"] = fault.delay  # slept in _dispatch, inside the rate limiter's slot
        try:
            if fault is not None:
                early = self._apply_fault(fault, environ)
                if early is not None:
                    self._log(request, tenant, early.status_code)
                    return early(environ, start_response)
            response, tenant = self._dispatch(request)
        except _AbortConnection:
            self._log(request, tenant, 0)
            _reset_connection(environ)
            return []
        self._log(request, tenant, response.status_code)
        if fault is not None and fault.kind == "truncate":
            return _truncated(response, environ, start_response)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> tuple[Response, str]:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            return self.error_response(404, f"no route for {request.method} {request.path}"), "-"
        except MethodNotAllowed:
            return self.error_response(405, f"{request.method} is not allowed on {request.path}"), "-"
        except HTTPException as exc:  # e.g. a redirect for a trailing slash
            return self.error_response(exc.code or 400, str(exc)), "-"
        tenant = "-"
        try:
            ctx = self.authenticate(request, args)
            tenant = ctx.tenant
            with self._throttle(tenant):
                if request.environ.get("sandbox.busy"):
                    time.sleep(request.environ["sandbox.busy"])
                return getattr(self, endpoint)(request, ctx, **args), tenant
        except EmulatorError as exc:
            return exc.response, tenant

    # ----- faults and limits -----------------------------------------------------------------------------------
    def _take_fault(self, request: Request) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(request):
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def _apply_fault(self, fault: Fault, environ: dict) -> Response | None:
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return None
        if fault.kind == "reset":
            raise _AbortConnection
        if fault.kind == "expired_token":
            return self.expired_token_response()
        if fault.kind == "status":
            if fault.status == 429:
                return self.throttled_response("injected", fault.retry_after)
            response = self.error_response(fault.status, "injected fault")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        return None  # truncate acts on the real answer

    @contextlib.contextmanager
    def _throttle(self, key: str) -> Iterator[None]:
        if not self.limits.enabled:
            yield
            return
        now = time.monotonic()
        with self.lock:
            window = self._windows[key]
            while window and window[0] <= now - self.limits.window_seconds:
                window.popleft()
            if self.limits.concurrent and self._in_flight[key] >= self.limits.concurrent:
                raise EmulatorError(self.throttled_response("concurrent", None))
            if self.limits.per_minute and len(window) >= self.limits.per_minute:
                wait = max(1, int(window[0] + self.limits.window_seconds - now) + 1)
                raise EmulatorError(self.throttled_response("minute", str(wait)))
            window.append(now)
            self._in_flight[key] += 1
        try:
            yield
        finally:
            with self.lock:
                self._in_flight[key] -= 1

    def _log(self, request: Request, tenant: str, status: int) -> None:
        with self.lock:
            self.request_log.append(
                {"seq": len(self.request_log) + 1, "method": request.method, "path": request.path,
                 "query": request.query_string.decode(), "tenant": tenant, "status": status,
                 "idempotency_key": self.idempotency_key(request), "at": time.time()}
            )

    # ----- control plane ---------------------------------------------------------------------------------------
    def _control(self, request: Request) -> Response:
        route = (request.method, request.path.removeprefix("/_sandbox/").strip("/"))
        try:
            body = orjson.loads(request.get_data() or b"{}")
            if route == ("GET", "health"):
                return json_response({"app": self.app, "tenants": self.tenants})
            if route == ("POST", "faults"):
                fault = Fault(**body)
                with self.lock:
                    self.faults.append(fault)
                return json_response(asdict(fault), status=201)
            if route == ("DELETE", "faults"):
                with self.lock:
                    self.faults.clear()
                return json_response({"faults": []})
            if route == ("PUT", "rate-limits"):
                with self.lock:
                    self.limits = RateLimits(**{**asdict(self.limits), **body})
                    self._windows.clear()
                return json_response(asdict(self.limits))
            if route == ("POST", "expire-tokens"):
                self.expire_tokens()
                return json_response({"expired": True})
            if route == ("GET", "requests"):
                with self.lock:
                    return json_response(list(self.request_log))
            if route == ("GET", "writes"):
                with self.lock:
                    return json_response(list(self.write_log))
            if route == ("DELETE", "log"):
                with self.lock:
                    self.request_log.clear()
                    self.write_log.clear()
                return json_response({"cleared": True})
        except (TypeError, ValueError) as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response({"error": f"unknown control route {request.method} {request.path}"}, status=404)


def _reset_connection(environ: dict) -> None:
    """Close the client's socket with SO_LINGER 0, so the peer sees a connection reset."""
    sock = environ.get("werkzeug.socket")
    if sock is None:  # mounted in-process: there is no socket to reset
        raise ConnectionResetError("sandbox: injected connection reset")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    raise _ConnectionDropped


class _ConnectionDropped(ConnectionError):
    """Werkzeug treats ConnectionError as a dropped connection and stays quiet."""


def _truncated(response: Response, environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Announce the full Content-Length, send half the body, then drop the connection."""
    body = response.get_data()
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    start_response(response.status, headers)

    def chunks() -> Iterator[bytes]:
        yield body[: max(1, len(body) // 2)]
        if environ.get("werkzeug.socket") is None:
            raise ConnectionResetError("sandbox: injected truncated body")
        _reset_connection(environ)

    return chunks()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # the request log is the emulator's own
        pass


class ServedEmulator:
    """An emulator behind a threaded HTTP server on 127.0.0.1."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0):
        self.emulator = emulator
        self.server: BaseWSGIServer = make_server(host, port, emulator, threaded=True, request_handler=_QuietHandler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_port}"
        # a short poll interval so stopping takes milliseconds, not werkzeug's default half second
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-{emulator.app}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ServedEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


logging.getLogger("werkzeug").setLevel(logging.ERROR)
