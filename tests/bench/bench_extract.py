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
import shutil
import time
from pathlib import Path

import httpx
import orjson

from connectors.sandbox import identity
from tests.bench.harness import (TENANT, TIMEOUT, Floor, bench_workdir, emulator, peer_load, print_table,
    refresh_grant, run_contenders, summary, timed_load, write_result)

PORT_BASE = 8789
TABLES = ["raw_quickbooks.invoice", "raw_quickbooks.invoice__line"]


def make_fixtures(root: Path, invoices: int) -> None:
    from connectors.sandbox.demo_data import generate

    generate(root, invoices=invoices, tenants=1, seed=11, discrepancies=False)
    tenant_dir = next(p for p in root.iterdir() if p.is_dir())
    # the benchmark reads QuickBooks only; keep the tenant name stable
    shutil.rmtree(tenant_dir / "sequence", ignore_errors=True)
    tenant_dir.rename(root / TENANT)


def tokens(url: str) -> dict:
    return refresh_grant(f"{url}/oauth2/v1/tokens/bearer", identity.quickbooks_initial_refresh_token(TENANT),
                         identity.QUICKBOOKS_CLIENT_ID, identity.QUICKBOOKS_CLIENT_SECRET)


def run_ours(url: str, work: Path) -> dict:
    from assets.extract.loading import make_pipeline
    from assets.extract.quickbooks import quickbooks_source
    from connectors.auth import OAuth2RefreshAuth, TokenStore
    from connectors.quickbooks import QuickBooksClient

    store = TokenStore(work / "tokens.json")
    token = tokens(url)
    store.put(f"{TENANT}.qbo", {"access_token": token["access_token"], "refresh_token": token["refresh_token"],
                                "expires_at": time.time() + 3000})
    auth = OAuth2RefreshAuth(f"{url}/oauth2/v1/tokens/bearer", identity.QUICKBOOKS_CLIENT_ID,
                             identity.QUICKBOOKS_CLIENT_SECRET, store, f"{TENANT}.qbo")
    warehouse = work / "ours.duckdb"
    pipeline = make_pipeline("quickbooks", TENANT, warehouse, work / "state")
    with QuickBooksClient(url, identity.quickbooks_realm_id(TENANT), auth) as client:
        client.get_json("companyinfo/" + identity.quickbooks_realm_id(TENANT))  # token outside the timing
        source = quickbooks_source(client, TENANT, progress=lambda m: None).with_resources("invoice")
        return timed_load(pipeline, source, warehouse, TABLES)


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

    realm = identity.quickbooks_realm_id(TENANT)
    source = rest_api_source({
        "client": {"base_url": f"{url}/v3/company/{realm}/",
                   "auth": {"type": "bearer", "token": tokens(url)["access_token"]}},
        "resources": [{
            "name": "invoice",
            "endpoint": {"path": "query", "params": {"minorversion": 75}, "data_selector": "QueryResponse.Invoice",
                         "paginator": QueryPaginator(1000)},
            "primary_key": "Id", "write_disposition": "merge",
        }],
    })
    return peer_load("quickbooks", source, work, "raw_quickbooks", TABLES)


def run_floor(url: str, total: int) -> dict:
    realm = identity.quickbooks_realm_id(TENANT)
    floor = Floor()
    with httpx.Client(base_url=f"{url}/v3/company/{realm}/", timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {tokens(url)['access_token']}"}) as client:
        for start in range(1, total + 1, 1000):
            query = f"select * from Invoice ORDERBY Id STARTPOSITION {start} MAXRESULTS 1000"
            floor.parse(orjson.loads, floor.fetch(lambda: client.get("query", params={"minorversion": 75,
                                                                                       "query": query})))
    return floor.result()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("data/bench/extract.json"))
    args = parser.parse_args(argv)
    with bench_workdir("ledgerlink-bench-") as work:
        print(f"generating {args.invoices} invoices ...", flush=True)
        make_fixtures(work / "fixtures", args.invoices)
        with emulator(work / "fixtures", work / "connections.yaml", app="quickbooks", port_base=PORT_BASE) as url:
            total = httpx.get(f"{url}/v3/company/{identity.quickbooks_realm_id(TENANT)}/query",
                              params={"query": "select count(*) from Invoice", "minorversion": 75},
                              headers={"Authorization": f"Bearer {tokens(url)['access_token']}"},
                              timeout=TIMEOUT).json()
            invoices = total["QueryResponse"]["totalCount"]
            print(f"emulator ready with {invoices} invoices", flush=True)
            floor, peer, ours = run_contenders(lambda: run_floor(url, invoices), lambda: run_peer(url, work),
                                               lambda: run_ours(url, work))
        rows = sum(ours[t] for t in TABLES)
        result = summary(invoices, rows, ours, peer, floor, "invoices")
        write_result(args.out, result)
        print()
        print_table(result, "invoices", rows, sum(peer[t] for t in TABLES))
        print(f"\nledgerlink is {result['speedup_vs_peer']:.1f}x the peer; {result['ours_over_floor']:.2f}x the floor. "
              f"Results: {args.out}")


if __name__ == "__main__":
    main()
