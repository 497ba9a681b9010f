"""The SIGKILL harness shared by test_sigkill.py (QuickBooks) and test_xero_sigkill.py (Xero): extract, unify,
reconcile and plan as the assets do; then run `ledgerlink apply --write` in its own process, SIGKILL it at seeded
random points (the emulators slowed down so that there are points to land on), and run it again until a run ends
by itself; one more run must then send nothing. What the tests assert on is returned: the planned and final
outbox, every run, and the emulators' own write logs before and after that last clean run.

Where a kill lands is a `Trigger`: the clock starts at the run's first served request (`FirstRequest`), or at
the start of its k-th request to one app (`NthStart`, to land kills during that app's requests)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import httpx
import polars as pl

from assets.partitions import materialize_tenants
from assets.reconcile.assets import RECONCILE_ASSETS
from assets.writeback.assets import plan_writes

MAX_RUNS = 60


def bytecode_cached(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the apply processes with Python's bytecode cached in a directory of its own: a machine
    that sets PYTHONDONTWRITEBYTECODE (as CI containers often do) would otherwise compile every module of Dagster,
    Polars, dlt and the project again in each of the dozen runs (seconds each, none of it what is tested). The
    cache is outside the checkout, checked against each source's mtime, and written atomically (safe to share)."""
    env = {k: v for k, v in environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / f"ledgerlink-pycache-{os.getuid()}"))
    return env


def writes(box, app: str) -> list[dict]:
    return httpx.get(f"{box.urls[app]}/_sandbox/writes").json()


def fault(box, app: str, **body) -> None:
    httpx.post(f"{box.urls[app]}/_sandbox/faults", json=body).raise_for_status()


def clear_faults(box, app: str) -> None:
    httpx.delete(f"{box.urls[app]}/_sandbox/faults").raise_for_status()


def outbox(warehouse) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql("select * from writeback.outbox").pl()


def prepare(ext) -> pl.DataFrame:
    """Extract every connection, unify, reconcile and plan into the outbox; returns the outbox as planned."""
    ext.extract_all()
    assert ext.run_unified().success
    assert materialize_tenants(RECONCILE_ASSETS, instance=ext.instance,
                               resources={"ledgerlink": ext.resource}).success
    plan_writes(ext.warehouse, ext.resource.registry())
    return outbox(ext.warehouse)


class FirstRequest:
    """The clock starts when the run's first request to any of `apps` has been served (the process needs seconds
    to import and plan before it sends anything). Counted in-process (_Starts at the end of each request): polling
    the emulators' request logs over HTTP every few milliseconds took the GIL and a core from the very emulators
    and process being timed."""

    def __init__(self, box, apps: tuple[str, ...]):
        self.counters = []
        for app in apps:
            served = box.served[app]
            served.server.app = _Starts(served.server.app, "/", served_only=True)
            self.counters.append(served.server.app)

    def served(self) -> int:
        return sum(c.started for c in self.counters)

    def arm(self, rng: random.Random) -> None:
        self.before = self.served()

    def wait(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None and self.served() == self.before:
            time.sleep(0.002)


class _Starts:
    """WSGI middleware in front of a served emulator: counts requests as they START (the request log only has
    them once answered), for paths containing `marker` (the control plane /_sandbox/ never counts);
    `served_only`: once answered instead."""

    def __init__(self, app: Callable, marker: str, *, served_only: bool = False):
        self.app, self.marker, self.served_only = app, marker, served_only
        self.started = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        counted = self.marker in path and not path.startswith("/_sandbox/")
        if counted and not self.served_only:
            with self.lock:
                self.started += 1
        answer = self.app(environ, start_response)
        if counted and self.served_only:
            with self.lock:
                self.started += 1
        return answer


class NthStart:
    """The clock starts when the run's k-th request to `app` (a path containing `marker`) starts, k drawn from
    1..`upto`: with that app slowed down, a short delay lands the kill while the request is in flight (the
    emulator still executes it: the answer is what is lost). A run that sends fewer ends by itself."""

    def __init__(self, box, app: str, marker: str, upto: int):
        served = box.served[app]
        self.counter = _Starts(served.server.app, marker)
        served.server.app = self.counter  # werkzeug's handler calls server.app for every request
        self.upto = upto

    def arm(self, rng: random.Random) -> None:
        self.target = self.counter.started + rng.randint(1, self.upto)

    def wait(self, proc: subprocess.Popen) -> None:
        while proc.poll() is None and self.counter.started < self.target:
            time.sleep(0.002)


def kill_until_done(ext, planned: pl.DataFrame, *, trigger, delay: tuple[float, float], slow: dict[str, dict],
                    seed: int, logged: tuple[str, ...], max_kills: int | None = None) -> dict[str, Any]:
    """Kills `ledgerlink apply --write` at `trigger` + uniform(`delay`) seconds until a run ends by itself, with
    `slow` faults armed (app -> fault body); `logged`: the apps whose write logs are returned; after `max_kills`
    kills (each run costs seconds of start-up and planning) the next run is left to finish."""
    box, warehouse = ext.box, ext.warehouse
    env = {**bytecode_cached(os.environ), **box.environment(), "LEDGERLINK_REGISTRY": ext.resource.registry_path,
           "LEDGERLINK_WAREHOUSE": ext.resource.warehouse_path, "LEDGERLINK_STATE_DIR": ext.resource.state_dir}
    command = [sys.executable, "-m", "pipelines.cli", "apply", "--write"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    for app, body in slow.items():
        fault(box, app, **{"kind": "slow", "times": -1, **body})
    rng = random.Random(seed)
    runs: list[dict] = []
    finished = None
    while finished is None:
        assert len(runs) < MAX_RUNS, runs
        spare = max_kills is not None and sum(r["killed"] for r in runs) >= max_kills
        trigger.arm(rng)
        proc = start()
        began = time.monotonic()
        if not spare:
            trigger.wait(proc)
        sending = time.monotonic()
        wait = rng.uniform(*delay)
        try:
            proc.wait(timeout=None if spare else wait)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            runs.append({"killed": True, "delay": wait, "writes": sum(len(writes(box, app)) for app in logged)})
            continue
        out, _ = proc.communicate(timeout=120)
        runs.append({"killed": False, "returncode": proc.returncode, "out": out,
                     "elapsed": time.monotonic() - began, "sending": time.monotonic() - sending})
        if proc.returncode != 0:
            raise AssertionError(f"apply ended by itself with {proc.returncode}:\n{out}")
        finished = runs[-1]
    for app in slow:
        clear_faults(box, app)
    logs = {app: writes(box, app) for app in logged}
    final = outbox(warehouse)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    after = {app: writes(box, app) for app in logged}
    return {"ext": ext, "planned": planned, "runs": runs, "logs": logs, "outbox": final, "again": again,
            "after": after}
