"""Builds the client of a registered connection: its secrets read from the environment variables the registry
names, at the moment the client is built (never at import time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.http import AppClient
from connectors.quickbooks import QuickBooksClient, token_url_for
from connectors.registry import Connection
from connectors.sequence import SequenceClient


def build_client(connection: Connection, *, token_store: TokenStore, environ: Mapping[str, str] | None = None,
                 **client_options: Any) -> AppClient:
    if connection.app == "sequence":
        return SequenceClient(
            connection.base_url,
            connection.secret("client_id", environ),
            connection.secret("client_secret", environ),
            **client_options,
        )
    if connection.app == "quickbooks":
        auth = OAuth2RefreshAuth(
            str(connection.options.get("token_url") or token_url_for(connection.base_url)),
            connection.secret("client_id", environ),
            connection.secret("client_secret", environ),
            token_store,
            connection.key,
            initial_refresh_token=connection.secret("refresh_token", environ),
            app="quickbooks",
        )
        return QuickBooksClient(connection.base_url, str(connection.options["realm_id"]), auth, **client_options)
    raise ValueError(f"connection {connection.key}: no client for app {connection.app!r}")
