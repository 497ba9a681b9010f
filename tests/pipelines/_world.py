"""What the per-tenant pipeline tests share: the real definitions' jobs run in process on a persistent (temporary)
instance, as under `dagster dev`, with every tenant of the sandbox extracted and reconciled one run each."""

import contextlib
import os
from collections.abc import Iterable, Iterator

from dagster import DagsterInstance, instance_for_test

from assets.partitions import CONNECTION_PARTITIONS, TENANT_PARTITIONS
from pipelines.definitions import defs
from pipelines.schedules import RECONCILE_JOB

REPO = defs.get_repository_def()
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_job(instance, job_name: str, *, partition_key: str | None = None, tags: dict | None = None,
            run_config: dict | None = None, asset_selection: Iterable | None = None):
    """One run of a job of the definitions (a subset of its assets, without their checks, as the job runs them);
    a failed run is returned, not raised."""
    job = REPO.get_job(job_name)
    if asset_selection is not None:
        job = job.get_subset(asset_selection=set(asset_selection), asset_check_selection=set())
    return job.execute_in_process(instance=instance, partition_key=partition_key, tags=tags,
                                  run_config={**QUIET, **(run_config or {})}, raise_on_error=False)


@contextlib.contextmanager
def synced_instance(extraction, *, reconcile: Iterable | None = None) -> Iterator[DagsterInstance]:
    """An instance whose partitions match the sandbox's registry, every connection extracted and every tenant
    reconciled (`reconcile`: the assets of the reconcile job to run, default all), the definitions' resource
    pointed at the sandbox for as long as it is open."""
    saved = dict(os.environ)
    os.environ.update(LEDGERLINK_REGISTRY=str(extraction.registry_path), LEDGERLINK_WAREHOUSE=str(extraction.warehouse),
                      LEDGERLINK_STATE_DIR=str(extraction.resource.state_dir))
    try:
        with instance_for_test() as instance:
            for app, partitions in CONNECTION_PARTITIONS.items():
                instance.add_dynamic_partitions(partitions.name, extraction.registry.keys(app))
            instance.add_dynamic_partitions(TENANT_PARTITIONS.name, extraction.registry.tenants)
            for key in extraction.registry.keys():
                assert run_job(instance, f"extract_{key.rsplit('.', 1)[1]}", partition_key=key).success, key
            for tenant in extraction.registry.tenants:
                assert run_job(instance, RECONCILE_JOB.name, partition_key=tenant,
                               asset_selection=reconcile).success, tenant
            yield instance
    finally:
        os.environ.clear()
        os.environ.update(saved)
