"""Benchmark: write-back (`ledgerlink apply --write`) against the emulators with their real rate limits on.

The sandbox runs in its own process with `--rate-limits` (QuickBooks 500/min, 10 in flight, every batch item
counted; Sequence 1,500/min). Demo fixtures with planted discrepancies are extracted, unified, reconciled and
planned in this process (as the tests do); then `python -m pipelines.cli apply --write` is timed in a subprocess
and the emulators' own request logs are read.

Reported: HTTP requests (all, and writes per app), the minimum the batch sizes allow, their ratio
(target <= 1.1), seconds per 1,000 writes, failed writes (target 0) and 429s seen.

The minimum, from the outbox as planned:
  QuickBooks  rows are sent in dependency waves, per tenant; a wave's independent writes go 30 to a batch call,
              so the minimum is sum over (tenant, wave) of ceil(QuickBooks writes in it / 30). `link` rows to
              QuickBooks are local (no request) and are not counted.
  Sequence    no batch endpoint and no idempotency key: one request per write, plus the look-up the design
              requires before it (issue item 4): an import looks the customer up by alias before its create
              (2), a link reads the customer before its PUT (the PUT replaces it whole) (2); mark_paid is one
              PUT on its first send (1).
  Token refreshes (one per connection) are counted in "all requests" but not in the minimum of writes.

    make bench                                # 5,000 invoices, 1 tenant (~1,400 writes)
    python -m tests.bench.bench_writeback --invoices 6000 --tenants 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import orjson
import polars as pl

PORT_BASE = 8820
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SEQUENCE_REQUESTS_PER_WRITE = {"mark_paid": 1, "import": 2, "link": 2}


def start_sandbox(fixtures: Path, registry: Path) -> tuple[subprocess.Popen, dict[str, str], dict[str, str]]:
    """The emulators in their own process with the real rate limits; returns their urls and secrets."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--fixtures", str(fixtures), "--registry", str(registry),
         "--port-base", str(PORT_BASE), "--rate-limits"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    urls: dict[str, str] = {}
    env: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("Ctrl-C"):
            break
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        elif "http://" in line:
            app, url = line.split()
            urls[app] = url
    else:
        raise RuntimeError("sandbox did not start")
    for url in urls.values():
        for _ in range(300):
            try:
                if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    return process, urls, env


def prepare(fixtures: Path, registry_path: Path, work: Path):
    """Extraction -> unified -> reconcile -> plan, in this process (as tests/conftest.py sets it up)."""
    from dagster import DagsterInstance, materialize
    from dagster_dlt import DagsterDltResource

    from assets.extract.assets import RAW_ASSETS
    from assets.partitions import CONNECTION_PARTITIONS
    from assets.reconcile.assets import RECONCILE_ASSETS
    from assets.resources import Ledgerlink
    from assets.unified.assets import UNIFIED_ASSETS
    from assets.writeback.assets import plan_writes
    from connectors.registry import load_registry

    registry = load_registry(registry_path)
    resource = Ledgerlink(registry_path=str(registry_path), warehouse_path=str(work / "wh.duckdb"),
                          state_dir=str(work / "state"))
    instance = DagsterInstance.ephemeral()
    for app, partitions in CONNECTION_PARTITIONS.items():
        instance.add_dynamic_partitions(partitions.name, registry.keys(app))
    for key in registry.keys():
        assets_def = RAW_ASSETS[key.rsplit(".", 1)[1]]
        assert materialize([assets_def], instance=instance, partition_key=key,
                           resources={"dlt": DagsterDltResource(), "ledgerlink": resource}).success, key
    assert materialize(UNIFIED_ASSETS, instance=instance, resources={"ledgerlink": resource}).success
    assert materialize(RECONCILE_ASSETS, instance=instance, resources={"ledgerlink": resource}).success
    plan_writes(Path(resource.warehouse_path), resource.registry())
    return resource


def read_outbox(warehouse: Path) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql("select * from writeback.outbox").pl()


def waves(rows: list[dict]) -> dict[str, int]:
    """Each pending row's dependency wave, as apply sends them: 0 when all it depends on is done already."""
    pending = {r["idempotency_key"]: r for r in rows}
    depth: dict[str, int] = {}

    def of(key: str) -> int:
        if key not in depth:
            deps = [d for d in (pending[key]["depends_on"] or []) if d in pending]
            depth[key] = 1 + max((of(d) for d in deps), default=-1)
        return depth[key]

    return {key: of(key) for key in pending}


def minimum_requests(planned: pl.DataFrame) -> dict:
    rows = planned.filter(pl.col("state") == "planned").to_dicts()
    wave = waves(rows)
    qbo = Counter((r["tenant"], wave[r["idempotency_key"]]) for r in rows
                  if r["app"] == "quickbooks" and r["operation"] != "link")
    seq_ops = Counter(r["operation"] for r in rows if r["app"] == "sequence")
    return {
        "quickbooks_writes": sum(qbo.values()),
        "quickbooks_waves": len({w for _, w in qbo}),
        "quickbooks_min_requests": sum(math.ceil(n / 30) for n in qbo.values()),
        "quickbooks_local_links": sum(1 for r in rows if r["app"] == "quickbooks" and r["operation"] == "link"),
        "sequence_writes": dict(seq_ops),
        "sequence_min_requests": sum(SEQUENCE_REQUESTS_PER_WRITE.get(op, 1) * n for op, n in seq_ops.items()),
        "planned_rows": len(rows),
    }


def request_counts(urls: dict[str, str]) -> dict:
    out = {}
    for app, url in urls.items():
        log = httpx.get(f"{url}/_sandbox/requests", timeout=60).json()
        auth = [r for r in log if "oauth" in r["path"] or "token" in r["path"]]
        api = [r for r in log if r not in auth]
        out[app] = {
            "all": len(log),
            "token": len(auth),
            "api": len(api),
            "writes": sum(1 for r in api if r["method"] in WRITE_METHODS),
            "reads": sum(1 for r in api if r["method"] not in WRITE_METHODS),
            "status_429": sum(1 for r in log if r["status"] == 429),
            "status_5xx": sum(1 for r in log if r["status"] >= 500),
            "by_route": dict(Counter(f"{r['method']} {r['path'].split('/')[-1] if app == 'quickbooks' else r['path']}"
                                     for r in api).most_common(8)) if app == "quickbooks" else
            dict(Counter(r["method"] for r in api)),
        }
        out[app]["write_log"] = len(httpx.get(f"{url}/_sandbox/writes", timeout=60).json())
    return out


def main(argv: list[str] | None = None) -> None:
    from pipelines.runtime import quiet_logs

    quiet_logs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=5000)
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("data/bench/writeback.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix="ledgerlink-bench-wb-"))
    saved = dict(os.environ)
    try:
        from connectors.sandbox.demo_data import generate

        print(f"generating {args.invoices} invoices, {args.tenants} tenant(s) ...", flush=True)
        generate(work / "fixtures", invoices=args.invoices, tenants=args.tenants, seed=7, discrepancies=True)
        registry_path = work / "connections.yaml"
        sandbox, urls, secrets = start_sandbox(work / "fixtures", registry_path)
        try:
            os.environ.update(secrets)
            print("extract, unify, reconcile, plan (rate limits on) ...", flush=True)
            t0 = time.perf_counter()
            resource = prepare(work / "fixtures", registry_path, work)
            prepare_seconds = time.perf_counter() - t0
            warehouse = Path(resource.warehouse_path)
            planned = read_outbox(warehouse)
            minimum = minimum_requests(planned)
            print(f"plan: {minimum['planned_rows']} writes ({prepare_seconds:.0f} s to get there); apply ...",
                  flush=True)
            for url in urls.values():
                httpx.delete(f"{url}/_sandbox/log").raise_for_status()
            env = {**os.environ, "LEDGERLINK_REGISTRY": str(registry_path), "LEDGERLINK_WAREHOUSE": str(warehouse),
                   "LEDGERLINK_STATE_DIR": resource.state_dir}
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "apply", "--write"], env=env,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
            counts = request_counts(urls)
        finally:
            os.killpg(sandbox.pid, 15)
            sandbox.wait(timeout=30)
        final = read_outbox(warehouse)
        states = dict(Counter(final["state"]))
        failed = states.get("failed", 0)
        writes_done = minimum["planned_rows"]
        qbo, seq = counts.get("quickbooks", {}), counts.get("sequence", {})
        qbo_writes, seq_requests = qbo.get("writes", 0), seq.get("api", 0)
        measured = qbo_writes + seq_requests
        floor = minimum["quickbooks_min_requests"] + minimum["sequence_min_requests"]
        result = {
            "invoices": args.invoices, "tenants": args.tenants,
            "planned_writes": writes_done,
            "apply_seconds": seconds,
            "seconds_per_1000_writes": seconds / writes_done * 1000 if writes_done else None,
            "apply_returncode": proc.returncode,
            "apply_output_tail": proc.stdout[-2000:] + proc.stderr[-2000:],
            "outbox_states": states,
            "failed_writes": failed,
            "minimum": minimum,
            "requests": counts,
            "measured_requests": {"quickbooks_write_calls": qbo_writes, "sequence_requests": seq_requests,
                                  "total": measured},
            "minimum_requests": floor,
            "ratio_to_minimum": measured / floor if floor else None,
            "status_429": sum(c["status_429"] for c in counts.values()),
            "prepare_seconds": prepare_seconds,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"\n{'':<14}{'writes':>8}{'requests':>10}{'minimum':>9}{'ratio':>7}{'all reqs':>10}{'429s':>6}")
        print(f"{'quickbooks':<14}{minimum['quickbooks_writes']:>8}{qbo_writes:>10}"
              f"{minimum['quickbooks_min_requests']:>9}"
              f"{qbo_writes / max(1, minimum['quickbooks_min_requests']):>7.2f}{qbo.get('all', 0):>10}"
              f"{qbo.get('status_429', 0):>6}")
        seq_n = sum(minimum["sequence_writes"].values())
        print(f"{'sequence':<14}{seq_n:>8}{seq_requests:>10}{minimum['sequence_min_requests']:>9}"
              f"{seq_requests / max(1, minimum['sequence_min_requests']):>7.2f}{seq.get('all', 0):>10}"
              f"{seq.get('status_429', 0):>6}")
        print(f"{'total':<14}{writes_done:>8}{measured:>10}{floor:>9}{result['ratio_to_minimum'] or 0:>7.2f}"
              f"{sum(c['all'] for c in counts.values()):>10}{result['status_429']:>6}")
        print(f"\napply: {seconds:.1f} s for {writes_done} writes = {result['seconds_per_1000_writes'] or 0:.1f} s "
              f"per 1,000 writes; outbox {states}; failed {failed} (target 0); "
              f"ratio {result['ratio_to_minimum'] or 0:.3f} (target <= 1.1). Results: {args.out}")
        if proc.returncode != 0:
            print(f"apply exited {proc.returncode}:\n{result['apply_output_tail']}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
