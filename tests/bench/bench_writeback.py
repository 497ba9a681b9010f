"""Benchmark: write-back (`ledgerlink apply --write`) against the emulators with their real rate limits on.

The sandbox runs in its own process with `--rate-limits` (QuickBooks 500/min, 10 in flight, every batch item
counted; Xero 60/min, 5 in flight, 5,000/day per organisation; Sequence 1,500/min). Demo fixtures with planted
discrepancies (the UK and DE tenants keep their books in QuickBooks and Xero) are extracted, unified, reconciled
and planned in this process (as the tests do); then `python -m pipelines.cli apply --write` is timed in a
subprocess and the emulators' own request logs are read. QuickBooks and Xero are measured by the same harness,
in the same apply, on the same Sequence data: each is the other's named peer.

Reported per app: writes, HTTP write requests, the minimum the batch sizes allow and their ratio (target <= 1.1),
429s, failed writes (target 0), and seconds per 1,000 writes. An app's seconds are the gaps between consecutive
answers (over every app's request log) charged to the app whose answer ends the gap: its request, the client's
pacing before it and the outbox work around it (the gap before the first answer, start-up and planning, is
charged to no app).

The minimum, from the outbox as planned:
  QuickBooks  rows are sent in dependency waves, per tenant; a wave's independent writes go 30 to a batch call,
              so the minimum is sum over (tenant, wave) of ceil(QuickBooks writes in it / 30). `link` rows to
              QuickBooks are local (no request) and are not counted.
  Xero        many elements per request (<= 50), one collection and method per request (PUT creates, POST
              updates): sum over (tenant, wave, collection, method) of ceil(writes / 50). Also shown: the floor
              without waves, sum over (tenant, collection, method) of ceil(writes / 50), and the named peer that
              sends one element per request (the naive writer: one request per write, so at 60/min at least one
              second per write).
  Sequence    no batch endpoint and no idempotency key: one request per write, plus the look-up the design
              requires before it (issue item 4): an import looks the customer up by alias before its create
              (2), a link reads the customer before its PUT (the PUT replaces it whole) (2); mark_paid is one
              PUT on its first send (1).
  Token refreshes (one per connection) are counted in "all requests" but not in the minimum of writes. Other
  apps' writes (the CRMs) are timed and counted, but not in the ratio.

Xero's per-minute limit bounds the wall time, so the apply waits until the minute window the extraction used
has passed (the rate limits are the real ones: no scaled clock).

    make bench                                # 5,000 invoices, 1 tenant
    python -m tests.bench.bench_writeback --invoices 2000 --tenants 1   # 93 writes (22 Xero), ~7 min
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
XERO_ELEMENTS = 50  # per request (connectors/xero.py MAX_ELEMENTS)
# as assets/writeback/xero.py groups a wave's rows: one collection and method per request
XERO_COLLECTIONS = {"customer": "Contacts", "invoice": "Invoices", "credit_note": "CreditNotes", "product": "Items"}
XERO_CREATES = ("create", "create_item")
XERO_PER_MINUTE = 60
ACCOUNTING = ("quickbooks", "xero")


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
    from assets.partitions import CONNECTION_PARTITIONS, materialize_tenants
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
    assert materialize_tenants(UNIFIED_ASSETS, instance=instance, resources={"ledgerlink": resource}).success
    assert materialize_tenants(RECONCILE_ASSETS, instance=instance, resources={"ledgerlink": resource}).success
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
    xero = Counter((r["tenant"], wave[r["idempotency_key"]], XERO_COLLECTIONS[r["entity"]],
                    "PUT" if r["operation"] in XERO_CREATES else "POST") for r in rows if r["app"] == "xero")
    xero_flat = Counter((t, c, m) for (t, _w, c, m), n in xero.items() for _ in range(n))
    seq_ops = Counter(r["operation"] for r in rows if r["app"] == "sequence")
    return {
        "quickbooks_writes": sum(qbo.values()),
        "quickbooks_waves": len({w for _, w in qbo}),
        "quickbooks_min_requests": sum(math.ceil(n / 30) for n in qbo.values()),
        "quickbooks_local_links": sum(1 for r in rows if r["app"] == "quickbooks" and r["operation"] == "link"),
        "xero_writes": sum(xero.values()),
        "xero_waves": len({w for _, w, _, _ in xero}),
        "xero_by_collection": {f"{m} {c}": n for (c, m), n in sorted(
            Counter((c, m) for (_t, _w, c, m), n in xero.items() for _ in range(n)).items())},
        "xero_min_requests": sum(math.ceil(n / XERO_ELEMENTS) for n in xero.values()),
        "xero_min_requests_without_waves": sum(math.ceil(n / XERO_ELEMENTS) for n in xero_flat.values()),
        "sequence_writes": dict(seq_ops),
        "sequence_min_requests": sum(SEQUENCE_REQUESTS_PER_WRITE.get(op, 1) * n for op, n in seq_ops.items()),
        "other_writes": dict(Counter(r["app"] for r in rows if r["app"] not in (*ACCOUNTING, "sequence"))),
        "planned_rows": len(rows),
    }


def request_logs(urls: dict[str, str]) -> dict[str, list[dict]]:
    return {app: httpx.get(f"{url}/_sandbox/requests", timeout=60).json() for app, url in urls.items()}


def _route(app: str, r: dict) -> str:
    if app in ACCOUNTING:  # QuickBooks' entity or batch, Xero's collection
        return f"{r['method']} {r['path'].split('/')[-1]}"
    return r["method"]


def request_counts(urls: dict[str, str], logs: dict[str, list[dict]]) -> dict:
    out = {}
    for app, log in logs.items():
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
            "by_route": dict(Counter(_route(app, r) for r in api).most_common(8)),
        }
        out[app]["write_log"] = len(httpx.get(f"{urls[app]}/_sandbox/writes", timeout=60).json())
    return out


def seconds_by_app(logs: dict[str, list[dict]]) -> dict[str, float]:
    """Each gap between consecutive answers (all apps' request logs merged) charged to the app whose answer
    ends it; the gap before the first answer (start-up, planning) is charged to none."""
    answers = sorted((r["at"], app) for app, log in logs.items() for r in log)
    out: Counter = Counter()
    for (before, _), (at, app) in zip(answers, answers[1:], strict=False):
        out[app] += at - before
    return dict(out)


def naive_seconds(writes: int) -> float:
    """The least time one request per write takes at Xero's 60 per rolling minute: each 60 past the first
    60 wait out a minute."""
    return max(0, math.ceil(writes / XERO_PER_MINUTE) - 1) * 60.0


def wait_for_xero_minute(logs: dict[str, list[dict]]) -> float:
    """Seconds slept so that the apply starts with Xero's minute window empty (the extraction used it)."""
    last = max((r["at"] for r in logs.get("xero", [])), default=None)
    pause = 0.0 if last is None else max(0.0, last + 61 - time.time())
    time.sleep(pause)
    return pause


def app_figures(app: str, writes: int, minimum: int, counts: dict, final: pl.DataFrame,
                seconds: dict[str, float]) -> dict:
    """One app's row of the report: its write requests against its minimum, 429s, failed writes, time."""
    c = counts.get(app, {})
    requests = c.get("api", 0) if app == "sequence" else c.get("writes", 0)
    spent = seconds.get(app, 0.0)
    return {"writes": writes, "requests": requests, "minimum": minimum,
            "ratio": requests / minimum if minimum else None, "all_requests": c.get("all", 0),
            "status_429": c.get("status_429", 0),
            "failed_writes": final.filter((pl.col("app") == app) & (pl.col("state") == "failed")).height,
            "seconds": spent, "seconds_per_1000_writes": spent / writes * 1000 if writes else None,
            "requests_per_1000_writes": requests / writes * 1000 if writes else None}


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
            paused = wait_for_xero_minute(request_logs(urls))
            for url in urls.values():
                httpx.delete(f"{url}/_sandbox/log").raise_for_status()
            env = {**os.environ, "LEDGERLINK_REGISTRY": str(registry_path), "LEDGERLINK_WAREHOUSE": str(warehouse),
                   "LEDGERLINK_STATE_DIR": resource.state_dir}
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "apply", "--write"], env=env,
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
            logs = request_logs(urls)
            counts = request_counts(urls, logs)
        finally:
            os.killpg(sandbox.pid, 15)
            sandbox.wait(timeout=30)
        final = read_outbox(warehouse)
        states = dict(Counter(final["state"]))
        failed = states.get("failed", 0)
        writes_done = minimum["planned_rows"]
        spent = seconds_by_app(logs)
        apps = {
            "quickbooks": app_figures("quickbooks", minimum["quickbooks_writes"], minimum["quickbooks_min_requests"],
                                      counts, final, spent),
            "xero": app_figures("xero", minimum["xero_writes"], minimum["xero_min_requests"], counts, final, spent),
            "sequence": app_figures("sequence", sum(minimum["sequence_writes"].values()),
                                    minimum["sequence_min_requests"], counts, final, spent),
        }
        measured = sum(a["requests"] for a in apps.values())
        floor = sum(a["minimum"] for a in apps.values())
        xero, qbo = apps["xero"], apps["quickbooks"]
        # the named peers of Xero's batching, on the same data: the naive one-element-per-request writer (one
        # request per write; past the first 60, every 60 more wait out a minute), and QuickBooks' batch of 30 in
        # the same apply
        naive_floor = naive_seconds(xero["writes"])
        peers = {
            "xero_naive_one_per_request": {"requests": xero["writes"], "min_seconds_at_60_per_min": naive_floor},
            "xero_requests_vs_naive": xero["requests"] / xero["writes"] if xero["writes"] else None,
            "xero_seconds_vs_naive_floor": xero["seconds"] / naive_floor if naive_floor else None,
            "xero_vs_quickbooks_requests_per_1000_writes": (
                xero["requests_per_1000_writes"] / qbo["requests_per_1000_writes"]
                if xero["requests_per_1000_writes"] and qbo["requests_per_1000_writes"] else None),
            "xero_vs_quickbooks_seconds_per_1000_writes": (
                xero["seconds_per_1000_writes"] / qbo["seconds_per_1000_writes"]
                if xero["seconds_per_1000_writes"] and qbo["seconds_per_1000_writes"] else None),
        }
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
            "apps": apps,
            "peers": peers,
            "seconds_by_app": spent,
            "measured_requests": {**{app: a["requests"] for app, a in apps.items()}, "total": measured},
            "minimum_requests": floor,
            "ratio_to_minimum": measured / floor if floor else None,
            "status_429": sum(c["status_429"] for c in counts.values()),
            "prepare_seconds": prepare_seconds,
            "paused_for_xero_minute_seconds": paused,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"\n{'':<12}{'writes':>8}{'requests':>10}{'minimum':>9}{'ratio':>7}{'all reqs':>10}{'429s':>6}"
              f"{'failed':>8}{'s':>8}{'s/1k writes':>13}")
        for app, a in apps.items():
            print(f"{app:<12}{a['writes']:>8}{a['requests']:>10}{a['minimum']:>9}{a['ratio'] or 0:>7.2f}"
                  f"{a['all_requests']:>10}{a['status_429']:>6}{a['failed_writes']:>8}{a['seconds']:>8.1f}"
                  f"{a['seconds_per_1000_writes'] or 0:>13.1f}")
        others = {app: c for app, c in counts.items() if app not in apps}
        for app, c in others.items():
            print(f"{app:<12}{minimum['other_writes'].get(app, 0):>8}{c['writes']:>10}{'-':>9}{'-':>7}{c['all']:>10}"
                  f"{c['status_429']:>6}{'':>8}{spent.get(app, 0):>8.1f}")
        print(f"{'total':<12}{writes_done:>8}{measured:>10}{floor:>9}{result['ratio_to_minimum'] or 0:>7.2f}"
              f"{sum(c['all'] for c in counts.values()):>10}{result['status_429']:>6}{failed:>8}{seconds:>8.1f}"
              f"{result['seconds_per_1000_writes'] or 0:>13.1f}")
        print(f"\nxero by collection {minimum['xero_by_collection']}; minimum without waves "
              f"{minimum['xero_min_requests_without_waves']} ({minimum['xero_waves']} waves)")
        if xero["writes"]:
            versus = (f"ratio {peers['xero_seconds_vs_naive_floor']:.3f}" if naive_floor else
                      "fewer than 60 writes wait for nothing")
            print(f"xero vs its peers on the same data: {xero['requests']} requests for {xero['writes']} writes, "
                  f"{peers['xero_requests_vs_naive']:.3f} of the naive one-element-per-request writer's "
                  f"{xero['writes']}; {xero['seconds']:.1f} s against the naive writer's floor at 60/min of "
                  f"{naive_floor:.0f} s ({versus}); vs QuickBooks' "
                  f"batch of 30 in the same apply: requests per 1,000 writes x"
                  f"{peers['xero_vs_quickbooks_requests_per_1000_writes'] or 0:.2f}, seconds per 1,000 writes x"
                  f"{peers['xero_vs_quickbooks_seconds_per_1000_writes'] or 0:.2f}")
        print(f"\napply: {seconds - sum(spent.values()):.1f} s of it before the first answer (start-up, planning)")
        print(f"apply: {seconds:.1f} s for {writes_done} writes = {result['seconds_per_1000_writes'] or 0:.1f} s "
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
