"""One Dagster partition per connection, `<tenant>.<app>`, one partition set per app; kept in step with
connections.yaml by the registry sensor (pipelines/sensors.py) and by `ledgerlink demo`."""

from dagster import DynamicPartitionsDefinition

from connectors.registry import APPS

CONNECTION_PARTITIONS: dict[str, DynamicPartitionsDefinition] = {
    app: DynamicPartitionsDefinition(name=f"{app}_connections") for app in APPS
}
