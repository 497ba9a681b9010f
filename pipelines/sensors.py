"""The sensors: the partitions kept in step with connections.yaml (the per-app connection partitions and the
`tenants` partitions), and near-real-time change detection.

`connection_changes` (each loop of the daemon, ~5 s) polls each connection's cheap change signal, at most once per
its app's probe period (PROBE_PERIODS: 5 s to 5 minutes, from each API's rate limits), a small method per client,
`changed_since(instant)`, that answers the newest change later than `instant` (or None) in one to four requests:
QuickBooks one CDC call, Xero If-Modified-Since with page size 1 per collection, HubSpot a search on the
modification date with limit 1 per object, Salesforce `queryAll` on SystemModstamp with LIMIT 1 per object,
Sequence the `updatedAt` of the newest invoices and credit notes (one page each). Attio has no cheap signal (no
updated-at, no changed-since filter: only a complete sweep can tell), so Attio relies on the schedules.

The cursor keeps, per connection, the last signal seen, in the app's own clock (so our clock's skew does not
matter); a connection seen for the first time starts from now without a run (the schedules read what came
before). A change requests one run of that connection's extraction partition only, ahead of the other runs queued
(CHANGE_PRIORITY); the reconcile_after_sync sensor (pipelines/schedules.py) then runs that tenant's reconciliation
and write-back, at the same priority. A probe that fails (app down, token
revoked) is logged and leaves that connection's signal where it was: it is asked again after its period and blocks
no other connection. Known gaps, covered by the 15-minute schedule: QuickBooks stamps whole seconds (a second change
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
from pipelines.retire import RETIRE_JOB, retire_requests
from pipelines.schedules import CHANGE_PRIORITY, EXTRACT_JOBS, PRIORITY_TAG, RECONCILE_JOB, TRIGGER_TAG


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


# a removal also asks for a retire run (and a reconciliation of a tenant that stays): pipelines/retire.py
@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING, jobs=[RETIRE_JOB, RECONCILE_JOB])
def connection_partitions_sensor(context: SensorEvaluationContext, ledgerlink: Ledgerlink):
    try:
        registry = ledgerlink.registry()
    except RegistryError as exc:
        return SkipReason(str(exc))
    wanted = {app: set(registry.keys(app)) for app in CONNECTION_PARTITIONS}
    have = {app: set(context.instance.get_dynamic_partitions(p.name)) for app, p in CONNECTION_PARTITIONS.items()}
    have_tenants = set(context.instance.get_dynamic_partitions(TENANT_PARTITIONS.name))
    requests = partition_requests(wanted, have, set(registry.tenants), have_tenants)
    if not requests:
        return SkipReason("partitions match the registry")
    return SensorResult(dynamic_partitions_requests=requests, run_requests=retire_requests(
        wanted, have, set(registry.tenants), have_tenants, datetime.now(UTC), RECONCILE_JOB.name))


# apps whose client has a cheap `changed_since` probe; Attio has none (see the module docstring)
PROBED_APPS = ("sequence", "quickbooks", "xero", "hubspot", "salesforce")
# The sensor asks to tick every second; the daemon evaluates sensors once per loop (every 5 s, longer when a loop
# is slow), and a 5 s minimum would skip every other loop on jitter.
CHANGE_INTERVAL_SECONDS = 1
# Seconds between two probes of one connection: a probe costs its requests against the app's limits, all day long.
# QuickBooks: 1 CDC call (500/min per realm); Sequence: 2 (100/min per key, the lower documented figure);
# HubSpot: 3-4 searches (search ~4/s per token); Salesforce: 3 queries against the org's DAILY allowance (15,000 on
# the smallest editions: every 120 s is 2,160/day); Xero: 4 calls against 5,000 per organisation per DAY (every
# 300 s is 1,152/day; every 30 s would be 11,520, twice the allowance): near-real-time Xero needs its webhooks.
PROBE_PERIODS = {"quickbooks": 5, "sequence": 10, "hubspot": 10, "salesforce": 120, "xero": 300}
PROBE_SLACK = 1.0  # a daemon loop's jitter: a probe due within the second is made now, not a loop later
PROBE_WORKERS = 8  # connections probed at once: each probe is a few small requests


def probe(ledgerlink: Ledgerlink, connection: Connection, since: datetime) -> datetime | None:
    with ledgerlink.client(connection) as client:
        return client.changed_since(since)


def read_change_cursor(cursor: str | None) -> dict[str, dict[str, str]]:
    """{"signal": {connection: the last signal seen, in the app's clock}, "probed": {connection: when we last
    asked, in ours}}; an older cursor (connection -> signal) is its signals."""
    state = orjson.loads(cursor) if cursor else {}
    if "signal" not in state:
        state = {"signal": state, "probed": {}}
    return {"signal": dict(state["signal"]), "probed": dict(state.get("probed") or {})}


def changed_connections(ledgerlink: Ledgerlink, keys: dict[str, list[str]], cursor: dict[str, dict[str, str]],
                        now: datetime, log=None) -> tuple[list[RunRequest], dict[str, dict[str, str]]]:
    """One tick's decisions, separated from the sensor for tests: (run requests, the new cursor). A connection is
    probed when its app's PROBE_PERIODS has passed since its last probe."""
    registry = ledgerlink.registry()
    signal, probed = dict(cursor["signal"]), dict(cursor["probed"])
    pending: list[tuple[str, str, datetime]] = []
    for app, app_keys in keys.items():
        for key in app_keys:
            if key not in signal:
                signal[key] = now.isoformat()  # first sight: start from now, the schedules read the past
                probed[key] = now.isoformat()
            elif key in probed and (now - datetime.fromisoformat(probed[key])).total_seconds() + PROBE_SLACK \
                    < PROBE_PERIODS[app]:
                continue  # asked recently: the app's limits come first
            else:
                pending.append((app, key, datetime.fromisoformat(signal[key])))

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
        probed[key] = now.isoformat()  # a failed probe too: a down app is not asked faster than its period
        if isinstance(answer, Exception):
            if log is not None:
                log.warning(f"{key}: change probe failed ({type(answer).__name__}: {answer}); asked again in "
                            f"{PROBE_PERIODS[app]} s")
            continue
        if answer is None:
            continue
        signal[key] = answer.astimezone(UTC).isoformat()
        requests.append(RunRequest(job_name=EXTRACT_JOBS[app].name, partition_key=key,
                                   run_key=f"change:{key}:{signal[key]}",
                                   tags={TRIGGER_TAG: "change", "ledgerlink/connection": key,
                                         "ledgerlink/changed_at": signal[key], PRIORITY_TAG: CHANGE_PRIORITY}))
    return requests, {"signal": signal, "probed": probed}


@sensor(minimum_interval_seconds=CHANGE_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING,
        jobs=[EXTRACT_JOBS[app] for app in PROBED_APPS], name="connection_changes",
        description="Polls each connection's cheap change signal (each app at its own period, within its API "
                    "limits) and runs the changed connections' extraction partitions only, ahead of other queued "
                    "runs (reconciliation and write-back follow). Attio relies on the schedules.")
def connection_changes(context: SensorEvaluationContext, ledgerlink: Ledgerlink):
    keys = {app: list(context.instance.get_dynamic_partitions(CONNECTION_PARTITIONS[app].name)) for app in PROBED_APPS}
    cursor = read_change_cursor(context.cursor)
    try:
        requests, new_cursor = changed_connections(ledgerlink, keys, cursor, datetime.now(UTC), context.log)
    except RegistryError as exc:
        return SkipReason(str(exc))
    # forget connections that are gone from the partitions
    live = {k for app_keys in keys.values() for k in app_keys}
    new_cursor = {part: {k: v for k, v in values.items() if k in live} for part, values in new_cursor.items()}
    if new_cursor != cursor:
        context.update_cursor(orjson.dumps(new_cursor, option=orjson.OPT_SORT_KEYS).decode())
    return requests or SkipReason(f"no change on {len(live)} connections")
