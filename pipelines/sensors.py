"""Keeps the per-app connection partitions in step with connections.yaml."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.partitions import CONNECTION_PARTITIONS
from assets.resources import Ledgerlink
from connectors.registry import RegistryError


def partition_requests(registry_keys: dict[str, set[str]], existing: dict[str, set[str]]) -> list:
    requests = []
    for app, partitions in CONNECTION_PARTITIONS.items():
        wanted, have = registry_keys.get(app, set()), existing.get(app, set())
        if wanted - have:
            requests.append(partitions.build_add_request(sorted(wanted - have)))
        if have - wanted:
            requests.append(partitions.build_delete_request(sorted(have - wanted)))
    return requests


@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def connection_partitions_sensor(context: SensorEvaluationContext, ledgerlink: Ledgerlink):
    try:
        registry = ledgerlink.registry()
    except RegistryError as exc:
        return SkipReason(str(exc))
    wanted = {app: set(registry.keys(app)) for app in CONNECTION_PARTITIONS}
    have = {app: set(context.instance.get_dynamic_partitions(p.name)) for app, p in CONNECTION_PARTITIONS.items()}
    requests = partition_requests(wanted, have)
    if not requests:
        return SkipReason("partitions match the registry")
    return SensorResult(dynamic_partitions_requests=requests)
