"""Benchmark: how long from a change made in an app to reconcile.mismatches showing it, and to the write-back
putting the app right, with the real Dagster daemon (sensors, run queue, one process per run) as `make dev` runs.

Set-up (not timed): clean demo fixtures (both sides agree) served by the emulators, a temporary registry,
warehouse, dlt state and DAGSTER_HOME (with the `warehouse` pool limited to 1), a first extraction, unification
and reconciliation in-process. Then `dagster-daemon run` on workspace.yaml starts: the registry sensor, the
`connection_changes` sensor (every 30 s) and `reconcile_after_sync` (every 5 s). Once `connection_changes` has
ticked once (it remembers every connection's signal), a linked QuickBooks invoice gets another due date through
the emulator's API, and the clock starts:

    t_reconciled   the first reconcile/mismatches materialization after the change (Dagster's event log: reading
                   the warehouse from here would block the runs' writes); tests/pipelines/test_sensors.py
                   checks the same loop's mismatch row and write-back in-process
    t_written_back QuickBooks answers the original due date again (the write-back's update)

Each round also prints where the time went, from the run records: `probe` change -> the change sensor's run
request, `queue` -> the run's process launched, `start` -> the run started (process start: imports), `run` -> it
finished; then the same for the reconciliation (`chain` is the chaining sensor's wait), and the load average.

Bound: QuickBooks probe period (5 s; the daemon evaluates sensors every 5 s, so up to ~10 s) + one extraction run +
the chaining sensor (a daemon loop, ~5 s) + one reconciliation run; each run is a fresh process (imports ~8 s on
this machine) started by the run queue within a second. Aim: under a minute.

    python -m tests.bench.bench_latency            # one change, 1 tenant, 60 invoices
    python -m tests.bench.bench_latency --rounds 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]


def _materialized_after(instance, key: list[str], after: float) -> tuple[float, dict] | None:
    """(timestamp, metadata) of the first materialization of `key` by a run created after the first change-triggered
    extraction run created after `after` (epoch seconds), or None: a reconciliation already under way when the change
    was made (the previous round's write-back coming back as a change) does not count. Read from Dagster's event log,
    not the warehouse: a reader in another process would block DuckDB's single writer."""
    from dagster import AssetKey, AssetRecordsFilter, RunsFilter

    extractions = [r for r in instance.get_run_records(RunsFilter(created_after=datetime.fromtimestamp(after, UTC)))
                   if r.dagster_run.job_name.startswith("extract_")
                   and r.dagster_run.tags.get("ledgerlink/trigger") == "change"]
    if not extractions:
        return None
    since = min(r.create_timestamp for r in extractions)
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(key)), limit=20).records
    for record in sorted(records, key=lambda r: r.timestamp):
        run = instance.get_run_record_by_id(record.run_id)
        if record.timestamp > after and run is not None and run.create_timestamp > since:
            return record.timestamp, record.asset_materialization.metadata
    return None


def _breakdown(instance, after: float) -> str:
    """Where a round's time went: the first change-triggered extraction run created after `after` (epoch seconds)
    and the first reconciliation created after it, each as sensor wait / queue / process start / run."""
    from dagster import DagsterEventType, RunsFilter

    def phases(record, since: float) -> tuple[str, float | None]:
        created = record.create_timestamp.timestamp()
        starting = min((e.timestamp for e in instance.all_logs(record.dagster_run.run_id,
                                                                 of_type=DagsterEventType.PIPELINE_STARTING)),
                       default=None)
        start, end = record.start_time, record.end_time
        parts = [f"{created - since:.1f}"]
        parts += [f"{starting - created:.1f}" if starting else "?", f"{start - starting:.1f}" if start and starting
                  else "?", f"{end - start:.1f}" if end and start else "?"]
        return "/".join(parts), end

    records = sorted(instance.get_run_records(RunsFilter(created_after=datetime.fromtimestamp(after, UTC))),
                     key=lambda r: r.create_timestamp)
    extract = next((r for r in records if r.dagster_run.job_name.startswith("extract_")
                    and r.dagster_run.tags.get("ledgerlink/trigger") == "change"), None)
    if extract is None:
        return "no change run found"
    first, ended = phases(extract, after)
    follow = next((r for r in records if r.dagster_run.job_name == "reconcile_and_write_back"
                   and r.create_timestamp >= extract.create_timestamp), None)
    second = phases(follow, ended or after)[0] if follow is not None else "?"
    return f"extract probe/queue/start/run {first} s; reconcile chain/queue/start/run {second} s"


def _sensor_ticked(instance, name: str) -> bool:
    for state in instance.all_instigator_state():
        if state.name == name and state.instigator_data is not None and getattr(state.instigator_data, "cursor", None):
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=420.0, help="give up on a round after this many seconds")
    parser.add_argument("--gap", type=float, default=35.0, help="seconds between a write-back and the next change")
    args = parser.parse_args()

    from connectors.registry import dump_registry, load_registry
    from connectors.sandbox.demo_data import generate
    from connectors.sandbox.launcher import start_sandbox

    work = Path(tempfile.mkdtemp(prefix="ledgerlink-latency-"))
    generate(work / "fixtures", invoices=args.invoices, seed=11, tenants=1, discrepancies=False)
    box = start_sandbox(work / "fixtures", apps=["sequence", "quickbooks"])
    registry_path = work / "connections.yaml"
    dump_registry(box.registry_document(), registry_path)
    env = {**os.environ, **box.environment(), "LEDGERLINK_REGISTRY": str(registry_path),
           "LEDGERLINK_WAREHOUSE": str(work / "warehouse.duckdb"), "LEDGERLINK_STATE_DIR": str(work / "state"),
           "DAGSTER_HOME": str(work / "dagster")}
    os.environ.update(env)
    from dagster import DagsterInstance

    from assets.resources import Ledgerlink
    from pipelines import runtime

    daemon = None
    try:
        runtime.dagster_home()  # writes dagster.yaml with the pool limit
        started = time.perf_counter()
        results = runtime.materialize_all(echo=lambda line: None)
        print(f"set-up: first extraction and reconciliation in {time.perf_counter() - started:.1f} s "
              f"({'ok' if all(results.values()) else results})")
        registry = load_registry(registry_path)
        tenant = registry.tenants[0]
        key = f"{tenant}.quickbooks"
        resource = Ledgerlink()
        with duckdb.connect(str(resource.warehouse), read_only=True) as con:
            candidates = [r[0] for r in con.execute(
                "select app_id from reconcile.links where tenant = ? and app = 'quickbooks' and entity = 'invoice' "
                "and app_id not in (select app_id from reconcile.mismatches where app_id is not null) "
                "order by app_id", [tenant]).fetchall()]
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                  cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=open(work / "daemon.log", "wb"))
        instance = DagsterInstance.get()
        waited = time.perf_counter()
        while not _sensor_ticked(instance, "connection_changes"):
            if time.perf_counter() - waited > args.timeout or daemon.poll() is not None:
                raise SystemExit(f"connection_changes never ticked; see {work / 'daemon.log'}")
            time.sleep(1)
        print(f"daemon up, connection_changes ticked after {time.perf_counter() - waited:.1f} s")
        figures = []
        for round_ in range(args.rounds):
            invoice_id = candidates[round_]
            with resource.client(registry.get(key)) as client:
                before = client.read("Invoice", invoice_id)
                moved = (date.fromisoformat(before["DueDate"]) + timedelta(days=9)).isoformat()
                client.update("Invoice", {"Id": invoice_id, "SyncToken": before["SyncToken"], "DueDate": moved},
                              request_id=f"latency-{round_}-{invoice_id}")
                changed, changed_at = time.perf_counter(), time.time()
                reconciled = written = None
                found = 0
                while time.perf_counter() - changed < args.timeout and written is None:
                    if reconciled is None:
                        event = _materialized_after(instance, ["reconcile", "mismatches"], changed_at)
                        if event is not None:
                            reconciled, meta = event[0] - changed_at, event[1]
                            found = meta["mismatches_total"].value if "mismatches_total" in meta else "?"
                    if client.read("Invoice", invoice_id)["DueDate"] == before["DueDate"]:
                        written = time.perf_counter() - changed
                    time.sleep(0.5)
            figures.append((reconciled, written))
            print(f"round {round_ + 1}: invoice {invoice_id} due {before['DueDate']} -> {moved}: reconciled "
                  f"({found} mismatches) in "
                  f"{reconciled if reconciled is None else f'{reconciled:.1f}'} s, written back in "
                  f"{written if written is None else f'{written:.1f}'} s; load {os.getloadavg()[0]:.2f}")
            print(f"  {_breakdown(instance, changed_at)}")
            if round_ + 1 < args.rounds:
                time.sleep(args.gap)  # the write-back's own change goes round too (it is a change)
        done = [f for f in figures if f[0] is not None and f[1] is not None]
        if done:
            print(f"change -> reconciled: max {max(f[0] for f in done):.1f} s; change -> written back: "
                  f"max {max(f[1] for f in done):.1f} s  (aim < 60 s)")
        if len(done) < len(figures):
            print(f"{len(figures) - len(done)} rounds timed out; daemon log: {work / 'daemon.log'}")
    finally:
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
        box.stop()
        print(f"work dir: {work}")


if __name__ == "__main__":
    main()
