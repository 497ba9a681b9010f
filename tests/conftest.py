"""Fixtures shared by every test folder: generated demo fixtures and an extraction set-up (a sandbox serving
them, a registry naming its secrets, a temporary warehouse and an ephemeral Dagster instance)."""

import os
from pathlib import Path

import orjson
import pytest
from dagster import DagsterInstance, materialize

from assets.partitions import CONNECTION_PARTITIONS
from assets.resources import Ledgerlink
from connectors.registry import dump_registry, load_registry
from connectors.sandbox.demo_data import generate
from connectors.sandbox.launcher import start_sandbox


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixtures")
    generate(root, invoices=60, seed=3, tenants=2, discrepancies=True)
    return root


class Extraction:
    """A sandbox, a registry naming its secrets, a temporary warehouse and a Dagster instance."""

    def __init__(self, fixture_dir: Path, work: Path):
        self.fixture_dir = fixture_dir
        self.box = start_sandbox(fixture_dir)
        self.registry_path = work / "connections.yaml"
        dump_registry(self.box.registry_document(), self.registry_path)
        self.registry = load_registry(self.registry_path)
        self.resource = Ledgerlink(registry_path=str(self.registry_path), warehouse_path=str(work / "wh.duckdb"),
                                   state_dir=str(work / "state"))
        self.instance = DagsterInstance.ephemeral()
        for app, partitions in CONNECTION_PARTITIONS.items():
            self.instance.add_dynamic_partitions(partitions.name, self.registry.keys(app))
        self.manifest = orjson.loads((fixture_dir / "manifest.json").read_bytes())

    @property
    def warehouse(self) -> Path:
        return Path(self.resource.warehouse_path)

    def run(self, key: str, *, raise_on_error: bool = True):
        from dagster_dlt import DagsterDltResource

        from assets.extract.assets import RAW_ASSETS

        assets_def = RAW_ASSETS[key.rsplit(".", 1)[1]]
        return materialize([assets_def], instance=self.instance, partition_key=key, raise_on_error=raise_on_error,
                           resources={"dlt": DagsterDltResource(), "ledgerlink": self.resource})

    def extract_all(self) -> None:
        """Every connection of the registry, one materialization each."""
        for key in self.registry.keys():
            assert self.run(key).success, key

    def run_unified(self, *, raise_on_error: bool = True):
        """The unified model, rebuilt from this warehouse's raw layer (one run over every tenant's partition)."""
        from assets.partitions import materialize_tenants
        from assets.unified.assets import UNIFIED_ASSETS

        return materialize_tenants(UNIFIED_ASSETS, instance=self.instance, raise_on_error=raise_on_error,
                                   resources={"ledgerlink": self.resource})

    def fixture_records(self, tenant: str, app: str, collection: str) -> list[dict]:
        path = self.fixture_dir / tenant / app / f"{collection}.json"
        return orjson.loads(path.read_bytes()) if path.exists() else []

    def stop(self) -> None:
        self.box.stop()


@pytest.fixture(scope="module")
def extraction(fixture_dir, tmp_path_factory):
    saved = dict(os.environ)
    work = tmp_path_factory.mktemp("extract")
    ext = Extraction(fixture_dir, work)
    os.environ.update(ext.box.environment())
    try:
        yield ext
    finally:
        ext.stop()
        os.environ.clear()
        os.environ.update(saved)
