"""The partitions: one Dagster partition per connection, `<tenant>.<app>`, one partition set per app (extraction),
and one per tenant, `tenants` (the unified model, reconciliation and write-back). Both are kept in step with
connections.yaml by the registry sensor (pipelines/sensors.py) and by `ledgerlink demo` (pipelines/runtime.py).

`TenantOfConnection` maps a connection partition to its tenant's partition (`acme.quickbooks` -> `acme`), so
Dagster knows which tenant's unified model an app's sync makes stale. Dagster supports only its built-in
mappings outside the code location: the webserver and daemon drop this one from their copy of the asset graph
(they then see no tenant depending on a connection partition). Nothing here relies on them doing better: the
chaining sensor (pipelines/schedules.py) runs in the code location and maps with this class."""

import warnings
from collections.abc import Iterable
from datetime import datetime

from dagster import DynamicPartitionsDefinition, PartitionMapping, PartitionsDefinition
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult
from dagster._core.definitions.partitions.subset.partitions_subset import PartitionsSubset

from connectors.registry import APPS

CONNECTION_PARTITIONS: dict[str, DynamicPartitionsDefinition] = {
    app: DynamicPartitionsDefinition(name=f"{app}_connections") for app in APPS
}
TENANT_PARTITIONS = DynamicPartitionsDefinition(name="tenants")


def tenant_of(connection_key: str) -> str:
    """`acme-uk.quickbooks` -> `acme-uk` (a tenant name may hold dots; an app name never does)."""
    return connection_key.rsplit(".", 1)[0]


def tenants_of(connection_keys: Iterable[str]) -> list[str]:
    return sorted({tenant_of(key) for key in connection_keys})


class TenantOfConnection(PartitionMapping):
    """Each tenant partition depends on its own connections' partitions (`<tenant>.<app>`) of one app."""

    def validate_partition_mapping(self, upstream_partitions_def: PartitionsDefinition,
                                   downstream_partitions_def: PartitionsDefinition | None) -> None:
        if not isinstance(upstream_partitions_def, DynamicPartitionsDefinition) or \
                downstream_partitions_def != TENANT_PARTITIONS:
            raise ValueError("TenantOfConnection maps connection partitions to the `tenants` partitions")

    def get_downstream_partitions_for_partitions(self, upstream_partitions_subset: PartitionsSubset,
                                                 upstream_partitions_def: PartitionsDefinition,
                                                 downstream_partitions_def: PartitionsDefinition,
                                                 current_time: datetime | None = None,
                                                 dynamic_partitions_store=None) -> PartitionsSubset:
        with partition_loading_context(current_time, dynamic_partitions_store):
            known = set(downstream_partitions_def.get_partition_keys())
            wanted = [t for t in tenants_of(upstream_partitions_subset.get_partition_keys()) if t in known]
            return downstream_partitions_def.empty_subset().with_partition_keys(wanted)

    def get_upstream_mapped_partitions_result_for_partitions(
            self, downstream_partitions_subset: PartitionsSubset | None,
            downstream_partitions_def: PartitionsDefinition | None, upstream_partitions_def: PartitionsDefinition,
            current_time: datetime | None = None, dynamic_partitions_store=None) -> UpstreamPartitionsResult:
        with partition_loading_context(current_time, dynamic_partitions_store):
            tenants = set(downstream_partitions_subset.get_partition_keys()) if downstream_partitions_subset else set()
            # a tenant without a connection to this app needs nothing from it: no partition is missing
            keys = [k for k in upstream_partitions_def.get_partition_keys() if tenant_of(k) in tenants]
            empty = upstream_partitions_def.empty_subset()
            return UpstreamPartitionsResult(partitions_subset=empty.with_partition_keys(keys),
                                            required_but_nonexistent_subset=empty)

    @property
    def description(self) -> str:
        return "Each tenant depends on its own connection of the app (<tenant>.<app> -> <tenant>)."


TENANT_OF_CONNECTION = TenantOfConnection()


def quietly(build):
    """Calls `build()` without Dagster's warning that a non-built-in mapping is unseen by its daemon's automation
    (true, and said above: nothing here uses that automation)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Non-built-in PartitionMappings")
        return build()


# ----------------------------------------------------------------------------------------------------------
# Per-tenant runs
# ----------------------------------------------------------------------------------------------------------


class TenantsFailed(Exception):
    """Some tenants of a run failed; the others' rows were written. Raised at the end of the step, so the run
    fails and names them, after every other tenant was done."""

    def __init__(self, failures: dict[str, BaseException]):
        self.failures = failures
        super().__init__("; ".join(f"tenant {t}: {type(e).__name__}: {e}" for t, e in sorted(failures.items())))


def run_tenants(context, registry_tenants: Iterable[str]) -> tuple[list[str], bool]:
    """(the tenants a step covers, whether that is every tenant of the registry): its partition, or its partition
    range (a single-run backfill, `materialize_tenants`), or, in a run without a partition, every tenant of the
    registry (Dagster runs a partitioned asset without a partition only when no partitioned asset upstream of it
    has been materialized: use a range)."""
    registry_tenants = sorted(registry_tenants)
    if context.has_partition_key or context.has_partition_key_range:
        keys = list(context.partition_keys)
        return keys, set(keys) >= set(registry_tenants)
    return registry_tenants, True


def each_tenant(tenants: Iterable[str], work, log=None) -> tuple[dict, dict[str, BaseException]]:
    """Calls `work(tenant)` for each tenant; one tenant's exception is recorded and the next tenant goes on.
    Returns (tenant -> result, tenant -> exception)."""
    done, failed = {}, {}
    for tenant in tenants:
        try:
            done[tenant] = work(tenant)
        except Exception as exc:  # one tenant's bad data or unreachable app never stops another's
            failed[tenant] = exc
            if log is not None:
                log.error(f"tenant {tenant}: {type(exc).__name__}: {exc}")
    return done, failed


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def materialize_tenants(assets, *, instance, resources, tenant: str | None = None, tags: dict | None = None,
                        **kwargs):
    """`dagster.materialize` of per-tenant assets: one tenant's partition, or (default) every tenant of the
    registry in one run over the range of the `tenants` partitions (added to the instance when missing), each
    tenant in its own transaction. For tests and one-off runs; schedules and sensors run one tenant per run."""
    from dagster import materialize

    if tenant is not None:
        return materialize(assets, instance=instance, resources=resources, partition_key=tenant, tags=tags, **kwargs)
    wanted = resources["ledgerlink"].registry().tenants
    have = list(instance.get_dynamic_partitions(TENANT_PARTITIONS.name))
    if missing := [t for t in wanted if t not in have]:
        instance.add_dynamic_partitions(TENANT_PARTITIONS.name, missing)
        have += missing
    if not have:  # no tenant: nothing to partition (the steps then cover every tenant of an empty registry)
        return materialize(assets, instance=instance, resources=resources, tags=tags, **kwargs)
    return materialize(assets, instance=instance, resources=resources,
                       tags={RANGE_START: have[0], RANGE_END: have[-1], **(tags or {})}, **kwargs)
