"""The connection registry (`connections.yaml`): which apps each tenant connected, where they answer, the
NAMES of the environment variables holding their secrets (never the secrets), and the tenant's integration
settings. One connection is one Dagster partition key `<tenant>.<app>`.

    tenants:
      acme-uk:
        settings: {merchant_email: billing@acme.example, invoice_date: issue, ...}   # every connection's
        connections:
          sequence:
            base_url: https://eu.sequencehq.com/api
            secrets: {client_id: ACME_SEQUENCE_CLIENT_ID, client_secret: ACME_SEQUENCE_CLIENT_SECRET}
          quickbooks:
            base_url: https://quickbooks.api.intuit.com
            token_url: https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer
            realm_id: "9130348651845276"
            secrets: {client_id: QBO_CLIENT_ID, client_secret: QBO_CLIENT_SECRET, refresh_token: ACME_QBO_REFRESH_TOKEN}
            settings: {tax_codes: {...}, items: {...}}    # this connection's own, over the tenant's
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

APPS = ("sequence", "quickbooks", "xero", "hubspot", "attio", "salesforce")
REQUIRED_SECRETS = {
    "hubspot": ("access_token",),
    "sequence": ("client_id", "client_secret"),
    "quickbooks": ("client_id", "client_secret", "refresh_token"),
    "xero": ("client_id", "client_secret", "refresh_token"),
    "attio": ("access_token",),
    "salesforce": ("client_id", "client_secret", "refresh_token"),
}
REQUIRED_OPTIONS = {"sequence": (), "quickbooks": ("realm_id",), "xero": ("xero_tenant_id",), "hubspot": (),
                    "attio": (), "salesforce": ()}
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class RegistryError(ValueError):
    """connections.yaml is malformed or a connection lacks what it needs; names the place, never a secret."""


@dataclass(frozen=True)
class Connection:
    tenant: str
    app: str
    base_url: str
    secret_env: Mapping[str, str]
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The Dagster partition key of this connection."""
        return f"{self.tenant}.{self.app}"

    @property
    def is_loopback(self) -> bool:
        return bool(re.match(r"^https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", self.base_url))

    def secret(self, name: str, environ: Mapping[str, str] | None = None) -> str:
        """The secret's value from the environment variable the registry names; the error names only the variable."""
        env = os.environ if environ is None else environ
        var = self.secret_env.get(name)
        if var is None:
            raise RegistryError(f"connection {self.key}: no environment variable is named for secret {name!r}")
        value = env.get(var)
        if not value:
            raise RegistryError(f"connection {self.key}: environment variable {var} (secret {name!r}) is not set")
        return value


@dataclass(frozen=True)
class Registry:
    connections: tuple[Connection, ...]
    tenant_settings: Mapping[str, Mapping[str, Any]]

    def for_app(self, app: str) -> list[Connection]:
        return [c for c in self.connections if c.app == app]

    def get(self, key: str) -> Connection:
        for connection in self.connections:
            if connection.key == key:
                return connection
        raise RegistryError(f"no connection {key!r} in the registry; known: {', '.join(self.keys()) or 'none'}")

    def keys(self, app: str | None = None) -> list[str]:
        return [c.key for c in self.connections if app is None or c.app == app]

    @property
    def tenants(self) -> list[str]:
        return sorted(self.tenant_settings)


def load_registry(path: Path) -> Registry:
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"connection registry {path} does not exist (run `ledgerlink sandbox` or write one)")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from None
    return parse_registry(document, source=str(path))


def parse_registry(document: Mapping[str, Any], source: str = "connections.yaml") -> Registry:
    problems: list[str] = []
    connections: list[Connection] = []
    settings: dict[str, Mapping[str, Any]] = {}
    tenants = document.get("tenants")
    if not isinstance(tenants, Mapping):
        raise RegistryError(f"{source}: expected a top-level 'tenants' mapping")
    for tenant, body in tenants.items():
        where = f"{source}: tenants.{tenant}"
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            problems.append(f"{where}: tenant names are lowercase letters, digits, '-' or '_'")
            continue
        if not isinstance(body, Mapping):
            problems.append(f"{where}: expected a mapping with 'connections' and optional 'settings'")
            continue
        settings[tenant] = dict(body.get("settings") or {})
        for app, conn in (body.get("connections") or {}).items():
            cwhere = f"{where}.connections.{app}"
            if app not in APPS:
                problems.append(f"{cwhere}: unknown app {app!r}; known: {', '.join(APPS)}")
                continue
            if not isinstance(conn, Mapping) or not conn.get("base_url"):
                problems.append(f"{cwhere}: 'base_url' is required")
                continue
            secret_env = dict(conn.get("secrets") or {})
            for name in REQUIRED_SECRETS[app]:
                var = secret_env.get(name)
                if not var:
                    problems.append(f"{cwhere}.secrets.{name}: name the environment variable that holds it")
                elif not _ENV_NAME.match(str(var)):
                    problems.append(
                        f"{cwhere}.secrets.{name}: {var!r} is not an environment variable name "
                        "(the registry names variables; it never holds secrets)"
                    )
            options = {k: v for k, v in conn.items() if k not in ("base_url", "secrets", "settings")}
            own = conn.get("settings") or {}
            if not isinstance(own, Mapping):
                problems.append(f"{cwhere}.settings: expected a mapping")
                own = {}
            for name in REQUIRED_OPTIONS[app]:
                if not options.get(name):
                    problems.append(f"{cwhere}.{name}: required")
            connections.append(
                Connection(tenant=tenant, app=app, base_url=str(conn["base_url"]).rstrip("/"),
                           secret_env=secret_env, options=options,
                           # the app's own settings (its tax codes, item and account mappings) over the tenant's
                           settings={**settings[tenant], **own})
            )
    if problems:
        raise RegistryError("connection registry is not valid:\n  - " + "\n  - ".join(problems))
    return Registry(connections=tuple(connections), tenant_settings=settings)


def dump_registry(registry_doc: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(registry_doc), sort_keys=False))
