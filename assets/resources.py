"""The Dagster resource every asset uses to reach the registry, the apps and the warehouse.

Defined beside the assets (which need its type) and configured in pipelines/definitions.py. Settings left
unset fall back to LEDGERLINK_* environment variables, read when a run uses them, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import dlt
from dagster import ConfigurableResource

from assets.extract.loading import make_pipeline
from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.http import AppClient
from connectors.registry import Connection, Registry, load_registry

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_REGISTRY = "data/connections.yaml"
DEFAULT_STATE_DIR = "data/state"


class Ledgerlink(ConfigurableResource):
    registry_path: str | None = None
    warehouse_path: str | None = None
    state_dir: str | None = None

    @property
    def warehouse(self) -> Path:
        return Path(self.warehouse_path or os.environ.get("LEDGERLINK_WAREHOUSE") or DEFAULT_WAREHOUSE)

    @property
    def state(self) -> Path:
        return Path(self.state_dir or os.environ.get("LEDGERLINK_STATE_DIR") or DEFAULT_STATE_DIR)

    def registry(self) -> Registry:
        return load_registry(Path(self.registry_path or os.environ.get("LEDGERLINK_REGISTRY") or DEFAULT_REGISTRY))

    def token_store(self) -> TokenStore:
        self.state.mkdir(parents=True, exist_ok=True)
        return TokenStore(self.state / "tokens.json")

    def client(self, connection: Connection) -> AppClient:
        return build_client(connection, token_store=self.token_store())

    def pipeline(self, connection: Connection) -> dlt.Pipeline:
        return make_pipeline(connection.app, connection.tenant, self.warehouse, self.state)
