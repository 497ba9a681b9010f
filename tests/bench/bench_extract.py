"""Benchmark: extract N QuickBooks invoices with their lines from the emulator into DuckDB.

Side by side, in one run, on the same emulator process and the same data:
  ledgerlink  our dlt source (Polars JSON -> Arrow, pages fetched 4 ahead)          -> DuckDB
  dlt rest_api  dlt's own REST source, at its fastest settings (parquet loader)    -> DuckDB
  floor       the same pages fetched and parsed (orjson), nothing loaded
Reported: invoices/s and rows/s (invoices + lines), the ratio to the peer, and the distance from the floor.

    make bench                         # 100,000 invoices
    python -m tests.bench.bench_extract --invoices 20000
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
import duckdb
import httpx
import orjson

from connectors.sandbox import identity

TENANT = "bench"
PORT = 8790
TIMEOUT = 120  # a page can take seconds to answer on a CPU-contended machine (httpx's default is 5 s)


def make_fixtures(root: Path, invoices: int) -> None:
    from connectors.sandbox.demo_data import generate

    generate(root, invoices=invoices, tenants=1, seed=11, discrepancies=False)
    tenant_dir = next(p for p in root.iterdir() if p.is_dir())
    # the benchmark reads QuickBooks only; keep the tenant name stable
    shutil.rmtree(tenant_dir / "sequence", ignore_errors=True)
    tenant_dir.rename(root / TENANT)


def start_emulator(fixtures: Path, registry: Path) -> subprocess.Popen:
    """The emulator in its own process, so it never competes with the extractor for the GIL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--fixtures", str(fixtures), "--registry", str(registry),
         "--port-base", str(PORT - 1), "--app", "quickbooks"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{PORT}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("emulator did not start")


_TOKENS: dict = {}


def access_token(url: str) -> str:
    """One refresh for the whole benchmark (QuickBooks rotates the refresh token on every refresh)."""
    if _TOKENS:
        return _TOKENS["access_token"]
    response = httpx.post(
        f"{url}/oauth2/v1/tokens/bearer",
        data={"grant_type": "refresh_token", "refresh_token": identity.quickbooks_initial_refresh_token(TENANT)},
        auth=(identity.QUICKBOOKS_CLIENT_ID, identity.QUICKBOOKS_CLIENT_SECRET), timeout=TIMEOUT,
    )
    response.raise_for_status()
    _TOKENS.update(response.json())
    return _TOKENS["access_token"]


def count_rows(warehouse: Path, tables: list[str]) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f"select count(*) from {t}").fetchall()[0][0] for t in tables}


def run_ours(url: str, work: Path) -> dict:
    from assets.extract.loading import make_pipeline
    from assets.extract.quickbooks import quickbooks_source
    from connectors.auth import OAuth2RefreshAuth, TokenStore
    from connectors.quickbooks import QuickBooksClient

    store = TokenStore(work / "tokens.json")
    access_token(url)
    store.put(f"{TENANT}.qbo", {"access_token": _TOKENS["access_token"], "refresh_token": _TOKENS["refresh_token"],
                                "expires_at": time.time() + 3000})
    auth = OAuth2RefreshAuth(f"{url}/oauth2/v1/tokens/bearer", identity.QUICKBOOKS_CLIENT_ID,
                             identity.QUICKBOOKS_CLIENT_SECRET, store, f"{TENANT}.qbo")
    warehouse = work / "ours.duckdb"
    pipeline = make_pipeline("quickbooks", TENANT, warehouse, work / "state")
    with QuickBooksClient(url, identity.quickbooks_realm_id(TENANT), auth) as client:
        client.get_json("companyinfo/" + identity.quickbooks_realm_id(TENANT))  # token outside the timing
        source = quickbooks_source(client, TENANT, progress=lambda m: None).with_resources("invoice")
        started = time.perf_counter()
        pipeline.run(source)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, **count_rows(warehouse, ["raw_quickbooks.invoice", "raw_quickbooks.invoice__line"])}


class QueryPaginator:
    """QuickBooks pages inside its query text (STARTPOSITION/MAXRESULTS), which no stock paginator writes."""

    def __new__(cls, page_size: int):
        from dlt.sources.helpers.rest_client.paginators import BasePaginator

        class _Paginator(BasePaginator):
            def __init__(self) -> None:
                super().__init__()
                self.start = 1

            def init_request(self, request) -> None:
                self._set(request)

            def update_state(self, response, data=None) -> None:
                self._has_next_page = bool(data) and len(data) >= page_size
                self.start += page_size

            def update_request(self, request) -> None:
                self._set(request)

            def _set(self, request) -> None:
                request.params["query"] = (f"select * from Invoice ORDERBY Id STARTPOSITION {self.start} "
                                           f"MAXRESULTS {page_size}")

        return _Paginator()


def run_peer(url: str, work: Path) -> dict:
    from dlt.sources.rest_api import rest_api_source

    token = access_token(url)
    realm = identity.quickbooks_realm_id(TENANT)
    source = rest_api_source({
        "client": {"base_url": f"{url}/v3/company/{realm}/", "auth": {"type": "bearer", "token": token}},
        "resources": [{
            "name": "invoice",
            "endpoint": {"path": "query", "params": {"minorversion": 75}, "data_selector": "QueryResponse.Invoice",
                         "paginator": QueryPaginator(1000)},
            "primary_key": "Id", "write_disposition": "merge",
        }],
    })
    warehouse = work / "peer.duckdb"
    pipeline = dlt.pipeline(pipeline_name="peer_rest_api", destination=dlt.destinations.duckdb(str(warehouse)),
                            dataset_name="raw_quickbooks", pipelines_dir=str(work / "peer-state"))
    started = time.perf_counter()
    pipeline.run(source, loader_file_format="parquet")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **count_rows(warehouse, ["raw_quickbooks.invoice", "raw_quickbooks.invoice__line"])}


def run_floor(url: str, total: int) -> dict:
    token = access_token(url)
    realm = identity.quickbooks_realm_id(TENANT)
    started = time.perf_counter()
    fetched = parsed = 0.0
    with httpx.Client(base_url=f"{url}/v3/company/{realm}/", headers={"Authorization": f"Bearer {token}"},
                      timeout=TIMEOUT) as client:
        for start in range(1, total + 1, 1000):
            t0 = time.perf_counter()
            body = client.get("query", params={"minorversion": 75, "query": f"select * from Invoice ORDERBY Id "
                                                                           f"STARTPOSITION {start} MAXRESULTS 1000"}).content
            t1 = time.perf_counter()
            orjson.loads(body)
            fetched += t1 - t0
            parsed += time.perf_counter() - t1
    return {"seconds": time.perf_counter() - started, "fetch_seconds": fetched, "parse_seconds": parsed}


def main(argv: list[str] | None = None) -> None:
    from pipelines.runtime import quiet_logs

    quiet_logs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("data/bench/extract.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    work = Path(tempfile.mkdtemp(prefix="ledgerlink-bench-"))
    try:
        print(f"generating {args.invoices} invoices ...", flush=True)
        make_fixtures(work / "fixtures", args.invoices)
        emulator = start_emulator(work / "fixtures", work / "connections.yaml")
        url = f"http://127.0.0.1:{PORT}"
        try:
            total = httpx.get(f"{url}/v3/company/{identity.quickbooks_realm_id(TENANT)}/query",
                              params={"query": "select count(*) from Invoice", "minorversion": 75},
                              headers={"Authorization": f"Bearer {access_token(url)}"}, timeout=TIMEOUT).json()
            invoices = total["QueryResponse"]["totalCount"]
            print(f"emulator ready with {invoices} invoices; floor ...", flush=True)
            floor = run_floor(url, invoices)
            print("peer (dlt rest_api, parquet) ...", flush=True)
            peer = run_peer(url, work)
            print("ledgerlink ...", flush=True)
            ours = run_ours(url, work)
        finally:
            os.killpg(emulator.pid, 15)
        rows = ours["raw_quickbooks.invoice"] + ours["raw_quickbooks.invoice__line"]
        result = {
            "invoices": invoices,
            "rows": rows,
            "ledgerlink": {**ours, "invoices_per_s": invoices / ours["seconds"], "rows_per_s": rows / ours["seconds"]},
            "peer_dlt_rest_api_parquet": {**peer, "invoices_per_s": invoices / peer["seconds"]},
            "floor_fetch_and_parse": {**floor, "invoices_per_s": invoices / floor["seconds"]},
            "speedup_vs_peer": peer["seconds"] / ours["seconds"],
            "ours_over_floor": ours["seconds"] / floor["seconds"],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"\n{'':<28}{'seconds':>9}{'invoices/s':>12}{'rows':>10}")
        print(f"{'ledgerlink':<28}{ours['seconds']:>9.2f}{invoices / ours['seconds']:>12,.0f}{rows:>10}")
        prow = peer['raw_quickbooks.invoice'] + peer['raw_quickbooks.invoice__line']
        print(f"{'dlt rest_api (parquet)':<28}{peer['seconds']:>9.2f}{invoices / peer['seconds']:>12,.0f}{prow:>10}")
        print(f"{'floor: fetch + parse only':<28}{floor['seconds']:>9.2f}{invoices / floor['seconds']:>12,.0f}")
        print(f"  (of which fetching {floor['fetch_seconds']:.2f} s, parsing {floor['parse_seconds']:.2f} s)")
        print(f"\nledgerlink is {result['speedup_vs_peer']:.1f}x the peer; {result['ours_over_floor']:.2f}x the floor. "
              f"Results: {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
