"""TokenStore and OAuth2RefreshAuth against a fake OAuth app behind httpx.MockTransport.

The refresh against the real QuickBooks emulator (expired tokens, rotation, the old token refused) is in
test_quickbooks.py.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
import time
from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.errors import AuthenticationError, ServerError
from connectors.http import AppClient, RetryPolicy

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, jitter=False)
CLIENT_ID, CLIENT_SECRET = "client-id-1", "client-s3cret"


class FakeOAuthApp:
    """Rotates the refresh token on every refresh and refuses the previous one, like QuickBooks."""

    def __init__(self, store_path=None, *, token_delay: float = 0.0, expires_in: int = 3600):
        self.generation = 0
        self.refresh_token = "rt-0"
        self.access_tokens: set[str] = set()
        self.token_calls = 0
        self.api_calls = 0
        self.store_path = store_path
        self.store_at_api_call: list[dict] = []
        self.token_delay = token_delay
        self.expires_in = expires_in
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return self.token(request)
        self.api_calls += 1
        if self.store_path is not None and os.path.exists(self.store_path):
            self.store_at_api_call.append(orjson.loads(open(self.store_path, "rb").read()))
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.access_tokens:
            return httpx.Response(401, json={"fault": {"error": [{"message": "AuthenticationFailed", "code": "3200"}]}})
        return httpx.Response(200, json={"ok": True})

    def token(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.token_delay)
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401, json={"error": "invalid_client"})
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        with self.lock:
            self.token_calls += 1
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != self.refresh_token:
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.generation += 1
            self.refresh_token = f"rt-{self.generation}"
            access = f"at-{self.generation}"
            self.access_tokens.add(access)
        return httpx.Response(200, json={"access_token": access, "refresh_token": self.refresh_token,
                                         "token_type": "bearer", "expires_in": self.expires_in,
                                         "x_refresh_token_expires_in": 8_640_000})

    def expire_all(self) -> None:
        self.access_tokens.clear()


def make_client(app: FakeOAuthApp, store: TokenStore, **auth_kw) -> tuple[AppClient, OAuth2RefreshAuth]:
    auth_kw.setdefault("initial_refresh_token", "rt-0")
    auth = OAuth2RefreshAuth("https://app.test/oauth/token", CLIENT_ID, CLIENT_SECRET, store, "acme.app",
                             app="fakeapp", **auth_kw)
    client = AppClient("https://app.test/api", auth=auth, transport=httpx.MockTransport(app), retry=FAST,
                       sleep=lambda s: None)
    return client, auth


# ----- TokenStore -----------------------------------------------------------------------------------------------------


def test_token_store_round_trip_mode_and_no_leftovers(tmp_path):
    path = tmp_path / "state" / "tokens.json"
    store = TokenStore(path)
    assert store.get("a") is None
    store.put("a", {"refresh_token": "r1"})
    store.put("b", {"refresh_token": "r2"})
    store.put("a", {"refresh_token": "r3"})
    assert TokenStore(path).get("a") == {"refresh_token": "r3"} and store.get("b") == {"refresh_token": "r2"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_token_store_refuses_to_overwrite_a_damaged_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text('{"a": {"refresh_token": "r1"')
    store = TokenStore(path)
    with pytest.raises(ValueError, match="not valid JSON") as info:
        store.put("b", {"refresh_token": "x"})
    assert "r1" not in str(info.value)
    assert path.read_text() == '{"a": {"refresh_token": "r1"'


def test_token_store_concurrent_writers_lose_nothing(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    threads = [threading.Thread(target=store.put, args=(f"k{i}", {"refresh_token": str(i)})) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(TokenStore(tmp_path / "tokens.json").get(f"k{i}") == {"refresh_token": str(i)} for i in range(20))


# ----- OAuth2RefreshAuth ----------------------------------------------------------------------------------------------


def test_first_request_refreshes_and_persists_the_rotated_token_before_using_it(tmp_path):
    path = tmp_path / "tokens.json"
    app = FakeOAuthApp(store_path=path)
    client, _ = make_client(app, TokenStore(path))
    assert client.get_json("/things") == {"ok": True}
    assert app.token_calls == 1
    # When the API call arrived the new refresh token was already on disk.
    assert app.store_at_api_call[0]["acme.app"]["refresh_token"] == "rt-1"
    saved = TokenStore(path).get("acme.app")
    assert saved["access_token"] == "at-1" and saved["refresh_token"] == "rt-1" and saved["expires_at"] > time.time()
    client.get_json("/things")
    assert app.token_calls == 1  # the access token is reused while valid


def test_401_refreshes_once_and_resends(tmp_path):
    app = FakeOAuthApp()
    client, _ = make_client(app, TokenStore(tmp_path / "t.json"))
    client.get_json("/things")
    app.expire_all()
    assert client.get_json("/things") == {"ok": True}
    assert app.token_calls == 2 and app.api_calls == 3
    assert TokenStore(tmp_path / "t.json").get("acme.app")["refresh_token"] == "rt-2"


def test_a_second_401_after_refresh_is_an_authentication_error(tmp_path):
    app = FakeOAuthApp()
    client, _ = make_client(app, TokenStore(tmp_path / "t.json"))
    original = app.token

    def token_that_issues_useless_access_tokens(request):
        response = original(request)
        app.expire_all()
        return response

    app.token = token_that_issues_useless_access_tokens
    with pytest.raises(AuthenticationError) as info:
        client.get_json("/things")
    # refresh (no token yet) -> 401 -> refresh once more -> 401: given up, not looped
    assert app.token_calls == 2 and app.api_calls == 2 and info.value.status == 401


def test_expiring_access_token_is_refreshed_before_use(tmp_path):
    app = FakeOAuthApp(expires_in=30)  # inside the 60 s leeway: always considered expired
    client, _ = make_client(app, TokenStore(tmp_path / "t.json"))
    client.get_json("/a")
    client.get_json("/b")
    assert app.token_calls == 2 and app.api_calls == 2


def test_stored_refresh_token_wins_over_the_initial_one(tmp_path):
    store = TokenStore(tmp_path / "t.json")
    app = FakeOAuthApp()
    app.refresh_token = "rt-7"
    store.put("acme.app", {"refresh_token": "rt-7"})
    client, _ = make_client(app, store, initial_refresh_token="rt-0")
    assert client.get_json("/things") == {"ok": True}


def test_invalid_grant_says_to_reauthorise_without_leaking_tokens(tmp_path, caplog):
    app = FakeOAuthApp()
    client, _ = make_client(app, TokenStore(tmp_path / "t.json"), initial_refresh_token="rt-stale")
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as info:
        client.get_json("/things")
    message = str(info.value)
    assert "invalid_grant" in message and "re-authorise" in message and "acme.app" in message
    assert app.token_calls == 1  # not retried
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("rt-stale", CLIENT_SECRET, base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()):
        assert secret not in message and secret not in logged


def test_no_refresh_token_anywhere(tmp_path):
    client, _ = make_client(FakeOAuthApp(), TokenStore(tmp_path / "t.json"), initial_refresh_token=None)
    with pytest.raises(AuthenticationError, match="no refresh token stored"):
        client.get_json("/things")


def test_concurrent_requests_refresh_once(tmp_path):
    app = FakeOAuthApp(token_delay=0.05)
    client, _ = make_client(app, TokenStore(tmp_path / "t.json"))
    errors: list[BaseException] = []

    def call():
        try:
            client.get_json("/things")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and app.token_calls == 1 and app.api_calls == 8


def test_another_process_refresh_is_picked_up_from_the_store(tmp_path):
    """Two auth objects on one file stand for two processes: the second must not reuse a rotated-away token."""
    path = tmp_path / "t.json"
    app = FakeOAuthApp()
    first, _ = make_client(app, TokenStore(path))
    second, _ = make_client(app, TokenStore(path))
    first.get_json("/a")
    app.expire_all()
    first.get_json("/a")  # rotates to rt-2; the second process still remembers nothing
    assert second.get_json("/b") == {"ok": True}
    assert app.token_calls == 2  # the second used the stored access token; no refresh with a dead token


def test_token_endpoint_outage_is_retried_by_the_client(tmp_path):
    app = FakeOAuthApp()
    original = app.token
    outages = [httpx.Response(503, json={"error": "temporarily_unavailable"})]

    def flaky(request):
        return outages.pop() if outages else original(request)

    app.token = flaky
    client, _ = make_client(app, TokenStore(tmp_path / "t.json"))
    assert client.get_json("/things") == {"ok": True}

    app2 = FakeOAuthApp()
    app2.token = lambda request: httpx.Response(503, json={})
    client2, _ = make_client(app2, TokenStore(tmp_path / "t2.json"))
    with pytest.raises(ServerError, match="token refresh failed"):
        client2.get_json("/things")


def test_repr_shows_no_secret(tmp_path):
    _, auth = make_client(FakeOAuthApp(), TokenStore(tmp_path / "t.json"))
    assert CLIENT_SECRET not in repr(auth) and "rt-0" not in repr(auth)
