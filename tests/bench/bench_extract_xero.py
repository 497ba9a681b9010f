"""Benchmark: extract N Xero sales invoices with their line items from the emulator into DuckDB.

The Xero twin of bench_extract (QuickBooks), side by side, in one run, on the same emulator process and the
same generated data (tenant 0 of the demo generator connects Xero: 100,000 invoices give ~92,000 in Xero):
  ledgerlink    our dlt source (assets/extract/xero.py, raw_xero.invoices + invoices__line_items)  -> DuckDB
  dlt rest_api  dlt's own REST source at its fastest settings (parquet loader), configured for Xero:
                page/pageSize=1000, the xero-tenant-id header, the bearer token from /connect/token,
                the same where/order/includeArchived as ours                                         -> DuckDB
  floor         the same pages fetched and parsed (orjson), nothing loaded
Both loads must hold the same invoice and line counts (checked). Reported: seconds, invoices/s, rows/s
(invoices + lines), the ratio to the peer and the distance from the floor.

Xero allows 60 calls/min per tenant; the emulator's limits are off here (as for every contender), and our
client keeps only Xero's 5-in-flight cap, so the figures measure the code, not the quota. At the real quota a
92-page read cannot finish in under ~32 s past the first minute's 60 calls, whoever reads it.

The emulator filters (`where`) and sorts (`order`) the whole collection for every page it answers, so at 92,000
invoices its own time dominates all three contenders (the floor's fetching seconds). The time each contender
spends beyond that (its seconds less the floor's fetching) is reported too: it is what the client costs
(an estimate, meaningful only when the machine's load stays the same through the run).

    make bench                              # 100,000 invoices
    python -m tests.bench.bench_extract_xero --invoices 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dlt
import httpx
import orjson

from connectors.sandbox import identity
from tests.bench.bench_extract import TENANT, count_rows, make_fixtures

PORT_BASE = 8800  # apart from bench_extract's 8789.., so the two can never meet on a port
WHERE = 'Type=="ACCREC"'
ORDER = "InvoiceID ASC"
PAGE_SIZE = 1000
TIMEOUT = 120  # a page can take seconds to answer on a CPU-contended machine (httpx's default is 5 s)
TABLES = ["raw_xero.invoices", "raw_xero.invoices__line_items"]


def xero_url() -> str:
    from connectors.sandbox.launcher import DEFAULT_PORTS

    # pipelines.runtime.open_sandbox numbers the ports in DEFAULT_PORTS order from --port-base
    return f"http://127.0.0.1:{PORT_BASE + list(DEFAULT_PORTS).index('xero')}"


def start_emulator(fixtures: Path, registry: Path) -> subprocess.Popen:
    """The emulator in its own process, so it never competes with the extractor for the GIL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--fixtures", str(fixtures), "--registry", str(registry),
         "--port-base", str(PORT_BASE), "--app", "xero"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = xero_url()
    deadline = time.monotonic() + 300  # loading ~150 MB of invoices on a contended machine
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Xero emulator exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    os.killpg(process.pid, 15)
    raise RuntimeError("emulator did not start")


_TOKENS: dict = {}


def access_token(url: str) -> str:
    """One refresh for the whole benchmark (Xero rotates the refresh token on every refresh)."""
    if _TOKENS:
        return _TOKENS["access_token"]
    response = httpx.post(
        f"{url}/connect/token",
        data={"grant_type": "refresh_token", "refresh_token": identity.xero_initial_refresh_token(TENANT)},
        auth=(identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET), timeout=TIMEOUT,
    )
    response.raise_for_status()
    _TOKENS.update(response.json())
    return _TOKENS["access_token"]


def api_headers(url: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token(url)}", "xero-tenant-id": identity.xero_tenant_id(TENANT),
            "Accept": "application/json"}


def query(page: int | None = None) -> dict:
    """The invoice read as ledgerlink sends it (assets/extract/xero.py COLLECTIONS["invoices"])."""
    params = {"includeArchived": "true", "where": WHERE, "order": ORDER, "pageSize": PAGE_SIZE}
    return params if page is None else {**params, "page": page}


def run_ours(url: str, work: Path) -> dict:
    from assets.extract.loading import make_pipeline
    from assets.extract.xero import xero_source
    from connectors.auth import OAuth2RefreshAuth, TokenStore
    from connectors.http import RateLimiter
    from connectors.xero import XeroClient

    store = TokenStore(work / "tokens.json")
    access_token(url)
    key = f"{TENANT}.xero"
    store.put(key, {"access_token": _TOKENS["access_token"], "refresh_token": _TOKENS["refresh_token"],
                    "expires_at": time.time() + 1500})
    auth = OAuth2RefreshAuth(f"{url}/connect/token", identity.XERO_CLIENT_ID, identity.XERO_CLIENT_SECRET,
                             store, key, app="xero")
    warehouse = work / "ours.duckdb"
    pipeline = make_pipeline("xero", TENANT, warehouse, work / "state")
    # Xero's 60/min is a quota, not our speed: off like the emulator's; its 5-in-flight cap stays.
    limiter = RateLimiter(max_concurrent=5)
    with XeroClient(url, identity.xero_tenant_id(TENANT), auth, limiter=limiter) as client:
        client.organisation()  # connection and token outside the timing, as for the peer
        source = xero_source(client, TENANT, progress=lambda m: None).with_resources("invoices")
        started = time.perf_counter()
        pipeline.run(source)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, **count_rows(warehouse, TABLES)}


def run_peer(url: str, work: Path) -> dict:
    from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator
    from dlt.sources.rest_api import rest_api_source

    token = access_token(url)
    source = rest_api_source({
        "client": {"base_url": f"{url}/api.xro/2.0/", "auth": {"type": "bearer", "token": token},
                   "headers": {"xero-tenant-id": identity.xero_tenant_id(TENANT), "Accept": "application/json"}},
        "resources": [{
            "name": "invoices",
            "endpoint": {
                "path": "Invoices",
                "params": query(),
                "data_selector": "Invoices",
                # Xero's page/pageSize, stopping at pagination.pageCount
                "paginator": PageNumberPaginator(base_page=1, page_param="page", total_path="pagination.pageCount"),
            },
            "primary_key": "InvoiceID", "write_disposition": "merge",
        }],
    })
    warehouse = work / "peer.duckdb"
    pipeline = dlt.pipeline(pipeline_name="peer_rest_api_xero", destination=dlt.destinations.duckdb(str(warehouse)),
                            dataset_name="raw_xero", pipelines_dir=str(work / "peer-state"))
    started = time.perf_counter()
    pipeline.run(source, loader_file_format="parquet")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **count_rows(warehouse, TABLES)}


def run_floor(url: str, pages: int) -> dict:
    headers = api_headers(url)
    started = time.perf_counter()
    fetched = parsed = 0.0
    invoices = 0
    with httpx.Client(base_url=f"{url}/api.xro/2.0/", headers=headers, timeout=TIMEOUT) as client:
        for page in range(1, pages + 1):
            t0 = time.perf_counter()
            response = client.get("Invoices", params=query(page))
            response.raise_for_status()
            body = response.content
            t1 = time.perf_counter()
            invoices += len(orjson.loads(body)["Invoices"])
            fetched += t1 - t0
            parsed += time.perf_counter() - t1
    return {"seconds": time.perf_counter() - started, "fetch_seconds": fetched, "parse_seconds": parsed,
            "invoices": invoices}


def main(argv: list[str] | None = None) -> None:
    from pipelines.runtime import quiet_logs

    quiet_logs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000, help="Sequence invoices generated (~92%% reach Xero)")
    parser.add_argument("--out", type=Path, default=Path("data/bench/extract_xero.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix="ledgerlink-bench-xero-"))
    try:
        print(f"generating {args.invoices} invoices ...", flush=True)
        make_fixtures(work / "fixtures", args.invoices)
        if not (work / "fixtures" / TENANT / "xero").is_dir():
            raise SystemExit("the generator gave the benchmark tenant no Xero organisation")
        emulator = start_emulator(work / "fixtures", work / "connections.yaml")
        url = xero_url()
        try:
            first = httpx.get(f"{url}/api.xro/2.0/Invoices", params=query(1), headers=api_headers(url),
                              timeout=TIMEOUT).json()
            invoices, pages = first["pagination"]["itemCount"], first["pagination"]["pageCount"]
            print(f"emulator ready with {invoices} Xero sales invoices in {pages} pages; floor ...", flush=True)
            floor = run_floor(url, pages)
            print("peer (dlt rest_api, parquet) ...", flush=True)
            peer = run_peer(url, work)
            print("ledgerlink ...", flush=True)
            ours = run_ours(url, work)
        finally:
            os.killpg(emulator.pid, 15)
        for name, got in (("ledgerlink", ours), ("dlt rest_api", peer)):
            if got["raw_xero.invoices"] != invoices:
                raise SystemExit(f"{name} loaded {got['raw_xero.invoices']} invoices, the emulator holds {invoices}")
        if ours["raw_xero.invoices__line_items"] != peer["raw_xero.invoices__line_items"]:
            raise SystemExit(f"line items differ: ledgerlink {ours['raw_xero.invoices__line_items']}, "
                             f"dlt rest_api {peer['raw_xero.invoices__line_items']}")
        if floor["invoices"] != invoices:
            raise SystemExit(f"the floor read {floor['invoices']} invoices, the emulator holds {invoices}")
        rows = ours["raw_xero.invoices"] + ours["raw_xero.invoices__line_items"]
        load = os.getloadavg()
        result = {
            "invoices": invoices,
            "pages": pages,
            "rows": rows,
            "ledgerlink": {**ours, "invoices_per_s": invoices / ours["seconds"], "rows_per_s": rows / ours["seconds"]},
            "peer_dlt_rest_api_parquet": {**peer, "invoices_per_s": invoices / peer["seconds"]},
            "floor_fetch_and_parse": {**floor, "invoices_per_s": invoices / floor["seconds"]},
            "speedup_vs_peer": peer["seconds"] / ours["seconds"],
            "ours_over_floor": ours["seconds"] / floor["seconds"],
            # each contender waits for the same answers one page at a time: what is left is its own cost
            "client_seconds_beyond_fetch": {"ledgerlink": ours["seconds"] - floor["fetch_seconds"],
                                            "peer": peer["seconds"] - floor["fetch_seconds"],
                                            "floor": floor["parse_seconds"]},
            "load_average": load,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"\nXero: {invoices} sales invoices, {rows} rows with line items")
        print(f"{'':<28}{'seconds':>9}{'invoices/s':>12}{'rows':>10}")
        print(f"{'ledgerlink':<28}{ours['seconds']:>9.2f}{invoices / ours['seconds']:>12,.0f}{rows:>10}")
        prow = peer["raw_xero.invoices"] + peer["raw_xero.invoices__line_items"]
        print(f"{'dlt rest_api (parquet)':<28}{peer['seconds']:>9.2f}{invoices / peer['seconds']:>12,.0f}{prow:>10}")
        print(f"{'floor: fetch + parse only':<28}{floor['seconds']:>9.2f}{invoices / floor['seconds']:>12,.0f}")
        print(f"  (of which fetching {floor['fetch_seconds']:.2f} s, parsing {floor['parse_seconds']:.2f} s)")
        beyond = result["client_seconds_beyond_fetch"]
        print(f"  beyond the emulator's answering time: ledgerlink {beyond['ledgerlink']:.2f} s, "
              f"dlt rest_api {beyond['peer']:.2f} s, floor {beyond['floor']:.2f} s")
        print(f"\nledgerlink is {result['speedup_vs_peer']:.1f}x the peer; {result['ours_over_floor']:.2f}x the floor. "
              f"Load average {load[0]:.1f}. Results: {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
