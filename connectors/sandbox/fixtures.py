"""The sandbox fixture layout: `<root>/<tenant>/<app>/<collection>.json`, each file a JSON array of records
exactly as that app's API returns them. The demo generator writes it, the emulators load it, and any
hand-written folder in the same layout works too. Files at the root (manifest.json, settings.json) are
metadata for the launcher and the tests, not records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import orjson

# tenant -> app -> collection -> records
Fixtures = dict[str, dict[str, dict[str, list[dict]]]]

_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ROOT_METADATA_FILES = frozenset({"manifest.json", "settings.json"})


class FixtureLayoutError(ValueError):
    """A fixture folder that does not match the layout; the message lists every problem found."""


def load_fixtures(root: Path, known: Mapping[str, frozenset[str]]) -> Fixtures:
    """Reads a fixture folder, refusing it whole (with every reason) when it does not match the layout.

    `known` maps each app the caller can serve to the collections it understands.
    """
    root = Path(root)
    if not root.is_dir():
        raise FixtureLayoutError(f"fixture folder {root} does not exist or is not a folder")
    problems: list[str] = []
    fixtures: Fixtures = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.name not in ROOT_METADATA_FILES:
                problems.append(
                    f"{entry.name}: a file at the top level; expected folders <tenant>/<app>/<collection>.json "
                    f"(only {', '.join(sorted(ROOT_METADATA_FILES))} may sit at the top)"
                )
            continue
        if not _TENANT_NAME.match(entry.name):
            problems.append(f"{entry.name}/: tenant folder names are lowercase letters, digits, '-' or '_'")
            continue
        tenant_apps: dict[str, dict[str, list[dict]]] = {}
        for app_dir in sorted(entry.iterdir()):
            rel = f"{entry.name}/{app_dir.name}"
            if app_dir.name.startswith("."):
                continue
            if not app_dir.is_dir():
                problems.append(f"{rel}: expected an app folder ({', '.join(sorted(known))}), found a file")
                continue
            if app_dir.name not in known:
                problems.append(f"{rel}/: unknown app {app_dir.name!r}; known apps: {', '.join(sorted(known))}")
                continue
            collections: dict[str, list[dict]] = {}
            for file in sorted(app_dir.iterdir()):
                frel = f"{rel}/{file.name}"
                if file.name.startswith("."):
                    continue
                if file.is_dir() or file.suffix != ".json":
                    problems.append(f"{frel}: expected <collection>.json files only")
                    continue
                if file.stem not in known[app_dir.name]:
                    problems.append(
                        f"{frel}: unknown collection {file.stem!r} for {app_dir.name}; "
                        f"known: {', '.join(sorted(known[app_dir.name]))}"
                    )
                    continue
                try:
                    records = orjson.loads(file.read_bytes())
                except orjson.JSONDecodeError as exc:
                    problems.append(f"{frel}: not valid JSON ({exc})")
                    continue
                if not isinstance(records, list):
                    problems.append(f"{frel}: expected a JSON array of records, found {type(records).__name__}")
                    continue
                bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
                if bad is not None:
                    problems.append(f"{frel}: element {bad} is not a JSON object")
                    continue
                collections[file.stem] = records
            tenant_apps[app_dir.name] = collections
        fixtures[entry.name] = tenant_apps
    if problems:
        raise FixtureLayoutError(
            f"fixture folder {root} does not match the layout <tenant>/<app>/<collection>.json:\n  - "
            + "\n  - ".join(problems)
        )
    if not fixtures:
        raise FixtureLayoutError(f"fixture folder {root} holds no tenant folders")
    return fixtures


def fixtures_for_app(fixtures: Fixtures, app: str) -> dict[str, dict[str, list[dict]]]:
    """tenant -> collection -> records, for the tenants that connected `app`."""
    return {tenant: apps[app] for tenant, apps in fixtures.items() if app in apps}
