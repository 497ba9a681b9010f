"""OAuth 2 with rotating refresh tokens, and the small file store that keeps them.

Apps like QuickBooks and Xero hand out a new refresh token on every refresh and may reject the old one. A
token that arrives and is not saved at once is a connection lost, so `OAuth2RefreshAuth` writes each rotated
refresh token to the `TokenStore` before it uses the new access token, and refreshes under a lock (thread and
process) so that concurrent requests refresh once and never race each other with the same refresh token.

Nothing here logs or formats a token or a secret.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from connectors.errors import (
    AppError,
    AuthenticationError,
    BadResponse,
    RateLimited,
    ServerError,
    error_class_for_status,
)
from connectors.http import rate_limit_signal

try:  # POSIX advisory locks make the store safe across processes; elsewhere it is thread-safe only.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class TokenStore:
    """Tokens per connection key in one JSON file (mode 0600), rewritten atomically (temp file + rename).

    Every read-modify-write holds a thread lock and an advisory file lock (`<file>.lock`), and `locked()` lets a
    caller hold both across a refresh so that two processes sharing the file refresh one after the other.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.RLock()
        self._depth = 0  # re-entrant use within the owning thread takes the file lock once
        self._lock_file: Any = None

    def get(self, key: str) -> dict | None:
        with self.locked():
            tokens = self._read().get(key)
        return dict(tokens) if tokens is not None else None

    def put(self, key: str, tokens: dict) -> None:
        with self.locked():
            data = self._read()
            data[key] = dict(tokens)
            self._write(data)

    def delete(self, key: str) -> None:
        with self.locked():
            data = self._read()
            if data.pop(key, None) is not None:
                self._write(data)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._acquire_file_lock()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release_file_lock()

    # ----- internals -----------------------------------------------------------------------------------------------

    def _acquire_file_lock(self) -> None:
        if fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_file = os.fdopen(fd, "r+b")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)

    def _release_file_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _read(self) -> dict[str, dict]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            # Never overwrite a damaged store: the refresh tokens in it may be the only copy.
            raise ValueError(f"token store {self.path} is not valid JSON; fix or remove it") from None
        if not isinstance(data, dict):
            raise ValueError(f"token store {self.path} must hold a JSON object of key -> tokens")
        return data

    def _write(self, data: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


class OAuth2RefreshAuth(httpx.Auth):
    """Bearer auth that refreshes itself with the refresh-token grant.

    Refreshes when there is no access token, when it expires within `leeway` seconds, or when the app answers
    401 (then the original request is sent once more). The refresh goes to `token_url` with HTTP Basic client
    credentials; the answer is persisted to `store[key]` before the new access token is used. The
    `initial_refresh_token` is used only while the store has nothing for `key`.
    """

    requires_response_body = True  # the flow reads the token endpoint's answer

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        store: TokenStore,
        key: str,
        *,
        initial_refresh_token: str | None = None,
        app: str = "oauth2",
        leeway: float = 60.0,
        clock: Callable[[], float] = time.time,
    ):
        self.token_url = token_url
        self.store = store
        self.key = key
        self.app = app
        self.leeway = leeway
        self._clock = clock
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._initial_refresh_token = initial_refresh_token
        self._tokens: dict | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app={self.app!r}, key={self.key!r}, token_url={self.token_url!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        access_token = yield from self._usable_access_token(rejected=None)
        request.headers["Authorization"] = f"Bearer {access_token}"
        response = yield request
        if response.status_code != 401:
            return
        log.info("%s: access token for %s was refused (401); refreshing", self.app, self.key)
        access_token = yield from self._usable_access_token(rejected=access_token)
        request.headers["Authorization"] = f"Bearer {access_token}"
        yield request

    # ----- internals -----------------------------------------------------------------------------------------------

    def _usable(self, tokens: dict | None, rejected: str | None) -> bool:
        if not tokens or not tokens.get("access_token") or tokens["access_token"] == rejected:
            return False
        expires_at = tokens.get("expires_at")
        return expires_at is None or float(expires_at) - self.leeway > self._clock()

    def _usable_access_token(self, rejected: str | None) -> Generator[httpx.Request, httpx.Response, str]:
        if self._usable(self._tokens, rejected):
            return self._tokens["access_token"]  # type: ignore[index]
        with self._lock, self.store.locked():
            # Another thread or process may have refreshed while we waited: its tokens are in the store.
            stored = self.store.get(self.key)
            if self._usable(stored, rejected):
                self._tokens = stored
                return stored["access_token"]  # type: ignore[index]
            tokens = yield from self._refresh(stored or {})
            return tokens["access_token"]

    def _refresh(self, stored: dict) -> Generator[httpx.Request, httpx.Response, dict]:
        refresh_token = stored.get("refresh_token") or self._initial_refresh_token
        if not refresh_token:
            raise AuthenticationError(
                self.app, f"no refresh token stored for connection {self.key!r}; authorise the connection first",
                method="POST", url=self.token_url,
            )
        response = yield httpx.Request(
            "POST",
            self.token_url,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Authorization": self._basic, "Accept": "application/json"},
        )
        body = self._token_body(response)
        now = self._clock()
        tokens = {
            "access_token": body["access_token"],
            # Apps that do not rotate omit it: keep the one we have.
            "refresh_token": body.get("refresh_token") or refresh_token,
            "token_type": body.get("token_type", "bearer"),
            "expires_at": now + float(body["expires_in"]) if body.get("expires_in") is not None else None,
            "refresh_token_expires_at": (
                now + float(body["x_refresh_token_expires_in"])
                if body.get("x_refresh_token_expires_in") is not None else stored.get("refresh_token_expires_at")
            ),
            "refreshed_at": now,
        }
        instance_url = body.get("instance_url") or stored.get("instance_url")
        if instance_url:  # Salesforce names the API host in the token answer; later calls must go there
            tokens["instance_url"] = str(instance_url)
        self.store.put(self.key, tokens)  # persist the rotated refresh token before anything else can fail
        self._tokens = tokens
        log.info("%s: refreshed the access token for %s", self.app, self.key)
        return tokens

    def _token_body(self, response: httpx.Response) -> dict:
        request = response.request
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if response.status_code == 200:
            if isinstance(body, dict) and isinstance(body.get("access_token"), str) and body["access_token"]:
                return body
            raise BadResponse(self.app, "the token endpoint answered 200 without an access_token",
                              status=200, method=request.method, url=request.url, retriable=True)
        error = body.get("error") if isinstance(body, dict) else None
        where = dict(status=response.status_code, method=request.method, url=request.url)
        if error == "invalid_grant":
            raise AuthenticationError(
                self.app,
                f"the refresh token for connection {self.key!r} was rejected (invalid_grant): it expired or was "
                "revoked; re-authorise the connection",
                code=error, **where,
            )
        if error in ("invalid_client", "unauthorized_client"):
            raise AuthenticationError(
                self.app, f"the client id/secret were rejected by the token endpoint ({error})", code=error, **where
            )
        cls = error_class_for_status(response.status_code)
        message = f"token refresh failed ({error or 'HTTP ' + str(response.status_code)})"
        if cls is RateLimited:
            retry_after, retriable = rate_limit_signal(response.headers)
            raise RateLimited(self.app, message, code=error, retry_after=retry_after, retriable=retriable, **where)
        if cls is ServerError:
            raise ServerError(self.app, message, code=error, **where)
        if cls is AppError or response.status_code < 400:
            raise BadResponse(self.app, message, code=error, **where)
        raise cls(self.app, message, code=error, **where)
