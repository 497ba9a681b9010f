"""Starts the emulators of every app found in a fixture folder on 127.0.0.1 and describes them as a
connection registry, with the sandbox's secrets handed over as environment variables (never in the file).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from connectors.sandbox.emulator import Emulator, ServedEmulator
from connectors.sandbox.fixtures import fixtures_for_app, load_fixtures

# app -> "module:Class"; imported when needed so one app's emulator never slows another's start. A new app
# adds one line here and one in DEFAULT_PORTS; its class says which secrets and registry fields it needs.
EMULATORS = {
    "sequence": "connectors.sandbox.sequence:SequenceEmulator",
    "quickbooks": "connectors.sandbox.quickbooks:QuickBooksEmulator",
    "hubspot": "connectors.sandbox.hubspot:HubSpotEmulator",
    "salesforce": "connectors.sandbox.salesforce:SalesforceEmulator",
    "attio": "connectors.sandbox.attio:AttioEmulator",
    "xero": "connectors.sandbox.xero:XeroEmulator",
}
DEFAULT_PORTS = {"sequence": 8711, "quickbooks": 8712, "hubspot": 8714, "attio": 8716, "salesforce": 8715, "xero": 8713}


def emulator_class(app: str) -> type[Emulator]:
    module, name = EMULATORS[app].split(":")
    return getattr(importlib.import_module(module), name)


def known_collections() -> dict[str, frozenset[str]]:
    return {app: emulator_class(app).collections for app in EMULATORS}


def env_name(tenant: str, app: str, secret: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", f"LEDGERLINK_SANDBOX_{tenant}_{app}_{secret}".upper())


@dataclass
class Sandbox:
    fixture_dir: Path
    served: dict[str, ServedEmulator]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        return {app: s.url for app, s in self.served.items()}

    def emulator(self, app: str) -> Emulator:
        return self.served[app].emulator

    def registry_document(self) -> dict:
        tenants: dict[str, dict] = {}
        for app, served in self.served.items():
            for tenant in served.emulator.tenants:
                # settings.json: a tenant's settings, with each app's own under "apps" (its connection's settings)
                tenant_settings = dict(self.settings.get(tenant, {}))
                own = tenant_settings.pop("apps", {}).get(app)
                entry = tenants.setdefault(tenant, {"settings": tenant_settings, "connections": {}})
                entry["connections"][app] = _connection_entry(app, tenant, served.url,
                                                              served.emulator.limits.enabled)
                if own:
                    entry["connections"][app]["settings"] = own
        return {"sandbox": True, "tenants": dict(sorted(tenants.items()))}

    def environment(self) -> dict[str, str]:
        """The sandbox secrets, under the variable names the registry document gives."""
        env: dict[str, str] = {}
        for app, served in self.served.items():
            for tenant in served.emulator.tenants:
                for secret, value in _secrets(app, tenant).items():
                    env[env_name(tenant, app, secret)] = value
        return env

    def stop(self) -> None:
        for served in self.served.values():
            served.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _secrets(app: str, tenant: str) -> dict[str, str]:
    return emulator_class(app).sandbox_secrets(tenant)


def _connection_entry(app: str, tenant: str, url: str, rate_limits: bool) -> dict:
    entry: dict[str, Any] = {"base_url": url, **emulator_class(app).connection_options(tenant)}
    if not rate_limits:
        # the emulator enforces no limit, so the client need not pace itself to the real one
        entry["requests_per_minute"] = 1_000_000
    entry["secrets"] = {name: env_name(tenant, app, name) for name in _secrets(app, tenant)}
    return entry


def start_sandbox(fixture_dir: Path, *, ports: dict[str, int] | None = None, rate_limits: bool = False,
                  host: str = "127.0.0.1", apps: Iterable[str] | None = None) -> Sandbox:
    """Serves every app present in the fixture folder (or only `apps`); port 0 picks a free port."""
    fixture_dir = Path(fixture_dir)
    fixtures = load_fixtures(fixture_dir, known_collections())
    settings_file = fixture_dir / "settings.json"
    settings = orjson.loads(settings_file.read_bytes()) if settings_file.exists() else {}
    served: dict[str, ServedEmulator] = {}
    try:
        for app in EMULATORS:
            if apps is not None and app not in apps:
                continue
            per_tenant = fixtures_for_app(fixtures, app)
            if not per_tenant:
                continue
            emulator = emulator_class(app)(per_tenant, rate_limits=rate_limits)
            served[app] = ServedEmulator(emulator, host=host, port=(ports or {}).get(app, 0))
    except Exception:
        for s in served.values():
            s.stop()
        raise
    return Sandbox(fixture_dir=fixture_dir, served=served, settings=settings)
