"""Builds the client of a registered connection: its secrets read from the environment variables the registry
names, at the moment the client is built (never at import time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from connectors.attio import AttioClient
from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.http import AppClient, RateLimiter
from connectors.hubspot import HubSpotClient
from connectors.quickbooks import QuickBooksClient, token_url_for
from connectors.registry import Connection
from connectors.salesforce import SalesforceClient
from connectors.salesforce import token_url_for as salesforce_token_url_for
from connectors.sequence import SequenceClient
from connectors.xero import XeroClient
from connectors.xero import token_url_for as xero_token_url_for


def build_client(connection: Connection, *, token_store: TokenStore, environ: Mapping[str, str] | None = None,
                 **client_options: Any) -> AppClient:
    """The registry may set the client-side pace with `requests_per_minute` / `max_concurrent` (e.g. an older
    Sequence account at 100/min); otherwise each client keeps its app's documented limits."""
    pace = {k: connection.options[k] for k in ("requests_per_minute", "max_concurrent") if k in connection.options}
    if pace and "limiter" not in client_options:
        client_options["limiter"] = RateLimiter(per_minute=pace.get("requests_per_minute"),
                                                max_concurrent=pace.get("max_concurrent"))
    if connection.app == "sequence":
        return SequenceClient(
            connection.base_url,
            connection.secret("client_id", environ),
            connection.secret("client_secret", environ),
            **client_options,
        )
    if connection.app == "quickbooks":
        auth = _oauth(connection, token_url_for, token_store, environ)
        return QuickBooksClient(connection.base_url, str(connection.options["realm_id"]), auth, **client_options)
    if connection.app == "xero":
        auth = _oauth(connection, xero_token_url_for, token_store, environ)
        return XeroClient(connection.base_url, str(connection.options["xero_tenant_id"]), auth, **client_options)
    if connection.app == "salesforce":
        auth = _oauth(connection, salesforce_token_url_for, token_store, environ)
        return SalesforceClient(connection.base_url, auth, **client_options)
    if connection.app == "hubspot":
        return HubSpotClient(connection.base_url, connection.secret("access_token", environ), **client_options)
    if connection.app == "attio":
        return AttioClient(connection.base_url, connection.secret("access_token", environ), **client_options)
    raise ValueError(f"connection {connection.key}: no client for app {connection.app!r}")


def _oauth(connection: Connection, default_token_url: Callable[[str], str], token_store: TokenStore,
           environ: Mapping[str, str] | None) -> OAuth2RefreshAuth:
    """OAuth2 refresh for a connection: the registry's `token_url`, else the app's default for its base URL;
    rotated refresh tokens persist in the token store under the connection's key."""
    return OAuth2RefreshAuth(
        str(connection.options.get("token_url") or default_token_url(connection.base_url)),
        connection.secret("client_id", environ),
        connection.secret("client_secret", environ),
        token_store,
        connection.key,
        initial_refresh_token=connection.secret("refresh_token", environ),
        app=connection.app,
    )
