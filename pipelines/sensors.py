"""The sensors: the partitions kept in step with connections.yaml (the per-app connection partitions and the
`tenants` partitions), and near-real-time change detection.

`connection_changes` (every 30 s) polls each connection's cheap change signal, a small method per client,
`changed_since(instant)`, that answers the newest change later than `instant` (or None) in one to four requests:
QuickBooks one CDC call, Xero If-Modified-Since with page size 1 per collection, HubSpot a search on the
modification date with limit 1 per object, Salesforce `queryAll` on SystemModstamp with LIMIT 1 per object,
Sequence the `updatedAt` of the newest invoices and credit notes (one page each). Attio has no cheap signal (no
updated-at, no changed-since filter: only a complete sweep can tell), so Attio relies on the schedules.

The cursor keeps, per connection, the last signal seen, in the app's own clock (so our clock's skew does not
matter); a connection seen for the first time starts from now without a run (the schedules read what came
before). A change requests one run of that connection's extraction partition only; the reconcile_after_sync
sensor (pipelines/schedules.py) then runs reconciliation and write-back. A probe that fails (app down, token
revoked) is logged and leaves that connection's cursor where it was: it is asked again next tick and blocks no
other connection. Known gaps, covered by the 15-minute schedule: QuickBooks stamps whole seconds (a second change
within the second of the last signal is not news), HubSpot archivals and search's indexing delay, Xero's unpaged
lists (items, accounts), Sequence changes to documents older than the newest page, customers and products.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson
from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.partitions import CONNECTION_PARTITIONS, TENANT_PARTITIONS
from assets.resources import Ledgerlink
from connectors.registry import Connection, RegistryError
from pipelines.schedules import EXTRACT_JOBS, TRIGGER_TAG


def partition_requests(registry_keys: dict[str, set[str]], existing: dict[str, set[str]],
                       tenants: set[str] | None = None, have_tenants: set[str] | None = None) -> list:
    """Add and delete requests that make the partitions match the registry: per app its connections
    (`<tenant>.<app>`), and (when `tenants` is given) the `tenants` partitions."""
    sets = [(partitions, registry_keys.get(app, set()), existing.get(app, set()))
            for app, partitions in CONNECTION_PARTITIONS.items()]
    if tenants is not None:
        sets.append((TENANT_PARTITIONS, tenants, have_tenants or set()))
    requests = []
    for partitions, wanted, have in sets:
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
    requests = partition_requests(wanted, have, set(registry.tenants),
                                  set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS.name)))
    if not requests:
        return SkipReason("partitions match the registry")
    return SensorResult(dynamic_partitions_requests=requests)


# apps whose client has a cheap `changed_since` probe; Attio has none (see the module docstring)
PROBED_APPS = ("sequence", "quickbooks", "xero", "hubspot", "salesforce")
CHANGE_INTERVAL_SECONDS = 30
PROBE_WORKERS = 8  # connections probed at once: each probe is a few small requests


def probe(ledgerlink: Ledgerlink, connection: Connection, since: datetime) -> datetime | None:
    with ledgerlink.client(connection) as client:
        return client.changed_since(since)


def changed_connections(ledgerlink: Ledgerlink, keys: dict[str, list[str]], cursor: dict[str, str],
                        now: datetime, log=None) -> tuple[list[RunRequest], dict[str, str]]:
    """One tick's decisions, separated from the sensor for tests: (run requests, the new cursor)."""
    registry = ledgerlink.registry()
    new_cursor = dict(cursor)
    pending: list[tuple[str, str, datetime]] = []
    for app, app_keys in keys.items():
        for key in app_keys:
            if key not in cursor:
                new_cursor[key] = now.isoformat()  # first sight: start from now, the schedules read the past
            else:
                pending.append((app, key, datetime.fromisoformat(cursor[key])))

    def ask(item: tuple[str, str, datetime]) -> datetime | None | Exception:
        _, key, since = item
        try:
            return probe(ledgerlink, registry.get(key), since)
        except Exception as exc:  # one connection's trouble never stops the others
            return exc

    with ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="change-probe") as pool:
        answers = list(pool.map(ask, pending))
    requests = []
    for (app, key, _), answer in zip(pending, answers, strict=True):
        if isinstance(answer, Exception):
            if log is not None:
                log.warning(f"{key}: change probe failed ({type(answer).__name__}: {answer}); asked again next tick")
            continue
        if answer is None:
            continue
        new_cursor[key] = answer.astimezone(UTC).isoformat()
        requests.append(RunRequest(job_name=EXTRACT_JOBS[app].name, partition_key=key,
                                   run_key=f"change:{key}:{new_cursor[key]}",
                                   tags={TRIGGER_TAG: "change", "ledgerlink/connection": key,
                                         "ledgerlink/changed_at": new_cursor[key]}))
    return requests, new_cursor


@sensor(minimum_interval_seconds=CHANGE_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
        jobs=[EXTRACT_JOBS[app] for app in PROBED_APPS], name="connection_changes",
        description="Polls each connection's cheap change signal and runs the changed connections' extraction "
                    "partitions only (reconciliation and write-back follow). Attio relies on the schedules.")
def connection_changes(context: SensorEvaluationContext, ledgerlink: Ledgerlink):
    keys = {app: list(context.instance.get_dynamic_partitions(CONNECTION_PARTITIONS[app].name)) for app in PROBED_APPS}
    cursor = orjson.loads(context.cursor) if context.cursor else {}
    try:
        requests, new_cursor = changed_connections(ledgerlink, keys, cursor, datetime.now(UTC), context.log)
    except RegistryError as exc:
        return SkipReason(str(exc))
    # forget connections that are gone from the partitions
    live = {k for app_keys in keys.values() for k in app_keys}
    new_cursor = {k: v for k, v in new_cursor.items() if k in live}
    if new_cursor != cursor:
        context.update_cursor(orjson.dumps(new_cursor, option=orjson.OPT_SORT_KEYS).decode())
    return requests or SkipReason(f"no change on {len(live)} connections")
