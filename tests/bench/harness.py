"""What the extraction benchmarks share (bench_extract: QuickBooks, bench_extract_xero: Xero, bench_extract_crm:
HubSpot, Salesforce, Attio): an emulator in its own process, one OAuth refresh per run, timed dlt loads (ours and
the dlt rest_api peer at its fastest settings), a floor that only fetches (and parses) the same pages, the row
counts both loads must agree on, and the printed table. Each benchmark keeps only what is particular to its app.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dlt
import duckdb
import httpx

TENANT = "bench"
TIMEOUT = 120  # a page can take seconds to answer on a CPU-contended machine (httpx's default is 5 s)


@contextlib.contextmanager
def bench_workdir(prefix: str) -> Iterator[Path]:
    """A scratch folder for fixtures, warehouses and dlt state, removed afterwards; dlt quiet and offline."""
    from pipelines.runtime import quiet_logs

    quiet_logs()
    # the peer's schema inference warns per untyped column of every child table: noise in a benchmark's output
    logging.getLogger("dlt").setLevel(logging.ERROR)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def app_url(app: str, port_base: int) -> str:
    from connectors.sandbox.launcher import DEFAULT_PORTS

    # pipelines.runtime.open_sandbox numbers the ports in DEFAULT_PORTS order from --port-base
    return f"http://127.0.0.1:{port_base + list(DEFAULT_PORTS).index(app)}"


@contextlib.contextmanager
def emulator(fixtures: Path, registry: Path, *, app: str, port_base: int, startup: float = 300) -> Iterator[str]:
    """The app's emulator in its own process (so it never competes with the extractor for the GIL), for the
    duration of the block; yields its base URL."""
    url = app_url(app, port_base)
    with contextlib.suppress(httpx.TransportError):
        httpx.get(url, timeout=1)
        # whatever answers there would pass the health check below in place of ours
        raise RuntimeError(f"{url} is already taken (another benchmark or sandbox?)")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--fixtures", str(fixtures), "--registry", str(registry),
         "--port-base", str(port_base), "--app", app],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + startup  # loading hundreds of MB of fixtures on a contended machine
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the {app} emulator exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {app} emulator did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()


_TOKENS: dict[str, dict] = {}


def refresh_grant(token_url: str, refresh_token: str, client_id: str, client_secret: str) -> dict:
    """One refresh per token endpoint for the whole run (QuickBooks and Xero rotate the refresh token on every
    refresh): the token response, with its access_token and new refresh_token."""
    if token_url not in _TOKENS:
        response = httpx.post(token_url, data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                              auth=(client_id, client_secret), timeout=TIMEOUT)
        response.raise_for_status()
        _TOKENS[token_url] = response.json()
    return _TOKENS[token_url]


def count_rows(warehouse: Path, tables: list[str]) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchall()[0][0] for t in tables}


def timed_load(pipeline: dlt.Pipeline, source, warehouse: Path, tables: list[str], **run: object) -> dict:
    """Seconds of one pipeline.run (extract, normalize, load) and the row counts it left."""
    started = time.perf_counter()
    pipeline.run(source, **run)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **count_rows(warehouse, tables)}


def peer_load(name: str, source, work: Path, dataset: str, tables: list[str]) -> dict:
    """The peer, dlt's rest_api source, into stock dlt duckdb at its fastest loader (parquet)."""
    warehouse = work / f"peer_{name}.duckdb"
    pipeline = dlt.pipeline(pipeline_name=f"peer_rest_api_{name}", destination=dlt.destinations.duckdb(str(warehouse)),
                            dataset_name=dataset, pipelines_dir=str(work / "peer-state"))
    return timed_load(pipeline, source, warehouse, tables, loader_file_format="parquet")


def run_contenders(floor: Callable[[], dict], peer: Callable[[], dict], ours: Callable[[], dict], label: str = ""
                    ) -> tuple[dict, dict, dict]:
    """The floor, then the peer, then ours, always in this order, on the same emulator process."""
    results = []
    for name, run in (("floor", floor), ("peer (dlt rest_api, parquet)", peer), ("ledgerlink", ours)):
        print(f"{label}{name} ...", flush=True)
        results.append(run())
    return results[0], results[1], results[2]


class Floor:
    """Times the floor: the same pages fetched (and, if asked, parsed), nothing loaded."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.fetch_seconds = self.parse_seconds = 0.0

    def fetch(self, send: Callable[[], httpx.Response]) -> bytes:
        t0 = time.perf_counter()
        response = send()
        response.raise_for_status()
        body = response.content
        self.fetch_seconds += time.perf_counter() - t0
        return body

    def parse(self, parse: Callable[[bytes], object], body: bytes):
        t0 = time.perf_counter()
        parsed = parse(body)
        self.parse_seconds += time.perf_counter() - t0
        return parsed

    def result(self, **extra: object) -> dict:
        return {"seconds": time.perf_counter() - self.started, "fetch_seconds": self.fetch_seconds,
                "parse_seconds": self.parse_seconds, **extra}


def summary(records: int, rows: int, ours: dict, peer: dict, floor: dict, unit: str) -> dict:
    """The result record of one comparison: per second figures, ours/peer and ours/floor."""
    return {
        unit: records,
        "rows": rows,
        "ledgerlink": {**ours, f"{unit}_per_s": records / ours["seconds"], "rows_per_s": rows / ours["seconds"]},
        "peer_dlt_rest_api_parquet": {**peer, f"{unit}_per_s": records / peer["seconds"],
                                      "rows_per_s": rows / peer["seconds"]},
        "floor_fetch_and_parse": {**floor, f"{unit}_per_s": records / floor["seconds"]},
        "speedup_vs_peer": peer["seconds"] / ours["seconds"],
        "ours_over_floor": ours["seconds"] / floor["seconds"],
    }


def print_table(result: dict, unit: str, ours_rows: int, peer_rows: int, floor_label: str = "fetch + parse only"
                ) -> None:
    records, ours, peer, floor = (result[unit], result["ledgerlink"], result["peer_dlt_rest_api_parquet"],
                                  result["floor_fetch_and_parse"])
    per_s = f"{unit}/s"
    print(f"{'':<28}{'seconds':>9}{per_s:>12}{'rows':>10}")
    print(f"{'ledgerlink':<28}{ours['seconds']:>9.2f}{records / ours['seconds']:>12,.0f}{ours_rows:>10}")
    print(f"{'dlt rest_api (parquet)':<28}{peer['seconds']:>9.2f}{records / peer['seconds']:>12,.0f}{peer_rows:>10}")
    print(f"{'floor: ' + floor_label:<28}{floor['seconds']:>9.2f}{records / floor['seconds']:>12,.0f}")
    print(f"  (of which fetching {floor['fetch_seconds']:.2f} s, parsing {floor['parse_seconds']:.2f} s)")


def write_result(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
