"""Benchmark: extract the companies, contacts and deals of each CRM (HubSpot, Salesforce, Attio) from its emulator
into DuckDB (raw_<app>), at a realistic size (50,000 companies per CRM by default, with their contacts and deals).

Per CRM, side by side, in one run, on the same emulator process and the same data:
  ledgerlink    our dlt source (assets/extract/<app>.py; a first run: HubSpot's and Salesforce's complete sweep,
                Attio's sweep that is known complete)                                                  -> DuckDB
  dlt rest_api  dlt's own REST source at its fastest settings (parquet loader), configured for the CRM:
                HubSpot `after` cursor (paging.next.after, limit 100, the same properties as ours),
                Salesforce SOQL `query` following nextRecordsUrl (the same fields as ours),
                Attio POST records/query with limit/offset in the body and no paging metadata (stops at an empty
                page; the same created_at sort as ours)                                                -> DuckDB
  floor         the same pages fetched over raw httpx, nothing parsed (the next cursor is cut out of the bytes)
Both loads must hold the emulator's record counts (checked). Reported per CRM: seconds, records/s, ours/peer
(how many times the peer's speed ours reaches) and ours/floor. HubSpot's deal->company links (ours reads them
with the batch associations API) are left out so that both contenders read the same three objects; ours still
reads the archived listings (its delete signal), which the peer does not.

Fixtures: the demo generator's CRM records (connectors/sandbox/demo_data.py, ~160 companies per CRM) are cloned
until the size is reached, each clone with its own ids (HubSpot digit ids shifted, Salesforce ids made by the
emulator's own make_id, UUIDs re-prefixed) and references rewritten to match, so links stay consistent; the
cloning works on the JSON text (no per-record Python), which keeps 50,000 companies per CRM to a few seconds.
Each CRM's emulator runs alone in its own process while it is measured. Rate limits are off on both sides.
The Attio emulator sorts and filters the whole object for every page it answers (offset paging), so at 50,000
companies its own time grows with the square of the size and dominates all three contenders (see the floor);
`--companies 10000 --app attio` measures the clients rather than the emulator.

    make bench                                   # 50,000 companies per CRM
    python -m tests.bench.bench_extract_crm --companies 5000 --app attio
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from connectors.sandbox import identity
from tests.bench.harness import (TENANT, TIMEOUT, Floor, bench_workdir, emulator, peer_load, print_table,
    refresh_grant, run_contenders, summary, timed_load, write_result)

PORT_BASE = 8840  # apart from the other benchmarks' ports (bench_writeback uses 8820..)
CRMS = ("hubspot", "salesforce", "attio")
OBJECTS = {"hubspot": ("companies", "contacts", "deals"), "salesforce": ("account", "contact", "opportunity"),
           "attio": ("companies", "people", "deals")}
# fixture collections cloned per copy (records) and copied once (definitions)
CLONED = {"hubspot": ("companies", "contacts", "deals", "associations"),
          "salesforce": ("Account", "Contact", "Opportunity"), "attio": ("companies", "people", "deals")}
COPIED = {"hubspot": ("properties",), "salesforce": ("FieldDefinition",), "attio": ("attributes",)}
COMPANIES = {"hubspot": "companies", "salesforce": "Account", "attio": "companies"}
HUBSPOT_PAGE = 100  # HubSpot's listing maximum
ATTIO_PAGE = 500  # ours (assets/extract/attio.py PAGE_SIZE)
ATTIO_SORT = [{"direction": "asc", "attribute": "created_at"}]

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HUBSPOT_ID = re.compile(rb'(?<=")\d{6,13}(?=")')
_SALESFORCE_ID = re.compile(rb"\b[0-9A-Za-z]{18}\b")


# ---- fixtures -----------------------------------------------------------------------------------------------


def _cloner(app: str, base: dict[str, list[dict]]) -> Callable[[bytes], Callable[[int], bytes]]:
    """For a collection's JSON text, a function giving its copy k: every record id and every UUID (Sequence
    customer ids, Attio record and actor ids) replaced by copy k's, everywhere it occurs (ids, references, URLs)."""
    id_field = "Id" if app == "salesforce" else "id"
    ids = [str(r[id_field]) for name in CLONED[app] if name != "associations" for r in base.get(name, [])
           if isinstance(r.get(id_field), str)]
    # an Attio record's workspace and object ids name the workspace itself: they stay
    keep = {str(r["id"][key]).encode() for name in CLONED[app] for r in base.get(name, [])
            if isinstance(r.get("id"), dict) for key in ("workspace_id", "object_id")}
    if app == "salesforce":
        from connectors.sandbox.salesforce import make_id  # the emulator's own ids (prefix, pod, checksum)

        index = {i.encode(): n for n, i in enumerate(ids)}

        def new_id(raw: bytes, k: int) -> bytes:
            return make_id(raw[:3].decode(), 62**8 + k * 1_000_000 + index[raw]).encode()

        pattern = _SALESFORCE_ID
    else:
        index = {i.encode(): 0 for i in ids if i.isdigit()}  # HubSpot's digit ids (Attio's are UUIDs)

        def new_id(raw: bytes, k: int) -> bytes:
            return str(int(raw) + k * 10**11).encode()  # above every base id, so copies sort after each other

        pattern = _HUBSPOT_ID

    def clone(text: bytes) -> Callable[[int], bytes]:
        # the text is cut once at every id it holds; copy k is the pieces joined with copy k's ids
        pieces: list[bytes] = []
        ids_at: list[bytes] = []  # the id between pieces[i] and pieces[i + 1]
        last = 0
        found = sorted([(m.start(), m.end(), m[0]) for m in pattern.finditer(text) if m[0] in index]
                       + [(m.start(), m.end(), m[0]) for m in _UUID.finditer(text) if m[0] not in keep])
        for start, end, raw in found:
            pieces.append(text[last:start])
            ids_at.append(raw)
            last = end
        pieces.append(text[last:])

        def copy(k: int) -> bytes:
            if k == 0:
                return text
            out: list[bytes] = [b""] * (2 * len(pieces) - 1)
            out[0::2] = pieces
            out[1::2] = [b"%08x" % k + raw[8:] if len(raw) == 36 else new_id(raw, k) for raw in ids_at]
            return b"".join(out)

        return copy

    return clone


def make_fixtures(work: Path, companies: int, apps: tuple[str, ...]) -> dict[str, tuple[Path, dict[str, int]]]:
    """One fixture folder per CRM (an emulator loads every file of its folder): <root>/bench/<app>/..., with the
    records per object it holds."""
    from connectors.sandbox.demo_data import generate

    base_root = work / "base"
    generate(base_root, invoices=3000, tenants=3, seed=11, discrepancies=False, xero=False)
    made = {}
    for app in apps:
        source = next(d / app for d in sorted(base_root.iterdir()) if (d / app).is_dir())
        base = {f.stem: orjson.loads(f.read_bytes()) for f in source.glob("*.json")}
        copies = max(1, round(companies / len(base[COMPANIES[app]])))
        clone = _cloner(app, base)
        folder = work / f"fixtures-{app}" / TENANT / app
        folder.mkdir(parents=True)
        for name, records in base.items():
            if name in COPIED[app] or not records:
                (folder / f"{name}.json").write_bytes(orjson.dumps(records))
                continue
            copy = clone(orjson.dumps(records)[1:-1])
            (folder / f"{name}.json").write_bytes(b"[" + b",".join(copy(k) for k in range(copies)) + b"]")
        # every record is live (the demo archives none): the emulator's counts are the copies'
        counts = {obj: copies * len(base[name]) for obj, name in zip(OBJECTS[app], CLONED[app], strict=False)}
        made[app] = (work / f"fixtures-{app}", counts)
    shutil.rmtree(base_root)
    return made


# ---- HubSpot ------------------------------------------------------------------------------------------------


def _hubspot_client(url: str):
    from connectors.http import RateLimiter
    from connectors.hubspot import HubSpotClient

    return HubSpotClient(url, identity.hubspot_access_token(TENANT), limiter=RateLimiter())


def hubspot_properties(url: str) -> dict[str, list[str]]:
    """The properties ours requests per object (standard + custom), so that the peer and floor ask the same."""
    from assets.extract.hubspot import _Reader

    with _hubspot_client(url) as client:
        reader = _Reader(client, TENANT, lambda m: None)
        return {obj: reader._properties(obj)[0] for obj in OBJECTS["hubspot"]}


def hubspot_ours(url: str, work: Path, tables: list[str]) -> dict:
    from assets.extract.hubspot import hubspot_source
    from assets.extract.loading import make_pipeline

    warehouse = work / "ours_hubspot.duckdb"
    pipeline = make_pipeline("hubspot", TENANT, warehouse, work / "state")
    with _hubspot_client(url) as client:
        client.list_properties("companies")  # the connection outside the timing, as for the peer
        source = hubspot_source(client, TENANT, progress=lambda m: None).with_resources(*OBJECTS["hubspot"])
        return timed_load(pipeline, source, warehouse, tables)


def hubspot_peer(url: str, work: Path, tables: list[str], properties: dict[str, list[str]]) -> dict:
    from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {"base_url": f"{url}/", "auth": {"type": "bearer", "token": identity.hubspot_access_token(TENANT)}},
        "resources": [{
            "name": obj,
            "endpoint": {"path": f"crm/v3/objects/{obj}", "data_selector": "results",
                         "params": {"limit": HUBSPOT_PAGE, "properties": ",".join(properties[obj])},
                         "paginator": JSONResponseCursorPaginator(cursor_path="paging.next.after",
                                                                  cursor_param="after")},
            "primary_key": "id", "write_disposition": "merge",
        } for obj in OBJECTS["hubspot"]],
    })
    return peer_load("hubspot", source, work, "raw_hubspot", tables)


def hubspot_floor(url: str, properties: dict[str, list[str]]) -> dict:
    floor = Floor()
    after = re.compile(rb'"after":"([^"]+)"')
    headers = {"Authorization": f"Bearer {identity.hubspot_access_token(TENANT)}"}
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as client:
        for obj in OBJECTS["hubspot"]:
            params = {"limit": HUBSPOT_PAGE, "properties": ",".join(properties[obj])}
            while True:
                body = floor.fetch(lambda: client.get(f"/crm/v3/objects/{obj}", params=params))  # noqa: B023
                found = after.search(body[-300:])  # paging comes last in HubSpot's answer
                if not found:
                    break
                params = {**params, "after": found[1].decode()}
    return floor.result()


# ---- Salesforce ---------------------------------------------------------------------------------------------

SF_TOKEN_PATH = "/services/oauth2/token"


def salesforce_tokens(url: str) -> dict:
    return refresh_grant(url + SF_TOKEN_PATH, identity.salesforce_initial_refresh_token(TENANT),
                         identity.SALESFORCE_CLIENT_ID, identity.SALESFORCE_CLIENT_SECRET)


def _salesforce_client(url: str, work: Path):
    from connectors.auth import OAuth2RefreshAuth, TokenStore
    from connectors.salesforce import SalesforceClient

    auth = OAuth2RefreshAuth(url + SF_TOKEN_PATH, identity.SALESFORCE_CLIENT_ID, identity.SALESFORCE_CLIENT_SECRET,
                             TokenStore(work / "tokens.json"), f"{TENANT}.salesforce",
                             initial_refresh_token=identity.salesforce_initial_refresh_token(TENANT),
                             app="salesforce")
    return SalesforceClient(url, auth)


def salesforce_soql(url: str, work: Path) -> dict[str, str]:
    """The SOQL ours sends per object (every described field), so that the peer and floor ask the same."""
    from assets.extract.salesforce import OBJECTS as SOBJECTS
    from assets.extract.salesforce import select_fields

    with _salesforce_client(url, work) as client:
        return {name: f"SELECT {', '.join(select_fields(client, o.name))} FROM {o.name}"
                for name, o in SOBJECTS.items()}


def salesforce_ours(url: str, work: Path, tables: list[str]) -> dict:
    from assets.extract.loading import make_pipeline
    from assets.extract.salesforce import salesforce_source

    warehouse = work / "ours_salesforce.duckdb"
    pipeline = make_pipeline("salesforce", TENANT, warehouse, work / "state")
    with _salesforce_client(url, work) as client:
        client.count("Account")  # token and connection outside the timing, as for the peer
        return timed_load(pipeline, salesforce_source(client, TENANT, progress=lambda m: None), warehouse, tables)


def _salesforce_data_url(url: str) -> str:
    from connectors.salesforce import API_VERSION

    return f"{salesforce_tokens(url).get('instance_url') or url}/services/data/{API_VERSION}/"


def salesforce_peer(url: str, work: Path, tables: list[str], soql: dict[str, str]) -> dict:
    from dlt.sources.helpers.rest_client.paginators import JSONLinkPaginator
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {"base_url": _salesforce_data_url(url),
                   "auth": {"type": "bearer", "token": salesforce_tokens(url)["access_token"]}},
        "resources": [{
            "name": obj,
            "endpoint": {"path": "query", "params": {"q": query}, "data_selector": "records",
                         "paginator": JSONLinkPaginator(next_url_path="nextRecordsUrl")},
            "primary_key": "Id", "write_disposition": "merge",
        } for obj, query in soql.items()],
    })
    return peer_load("salesforce", source, work, "raw_salesforce", tables)


def salesforce_floor(url: str, soql: dict[str, str]) -> dict:
    floor = Floor()
    next_url = re.compile(rb'"nextRecordsUrl":"([^"]+)"')
    headers = {"Authorization": f"Bearer {salesforce_tokens(url)['access_token']}"}
    data = _salesforce_data_url(url)
    with httpx.Client(headers=headers, timeout=TIMEOUT) as client:
        for query in soql.values():
            body = floor.fetch(lambda: client.get(data + "query", params={"q": query}))  # noqa: B023
            while found := next_url.search(body[:400]):  # nextRecordsUrl comes before the records
                body = floor.fetch(lambda: client.get(httpx.URL(data).join(found[1].decode())))  # noqa: B023
    return floor.result()


# ---- Attio --------------------------------------------------------------------------------------------------


def attio_ours(url: str, work: Path, tables: list[str]) -> dict:
    from assets.extract.attio import attio_source
    from assets.extract.loading import make_pipeline
    from connectors.attio import AttioClient
    from connectors.http import RateLimiter

    warehouse = work / "ours_attio.duckdb"
    pipeline = make_pipeline("attio", TENANT, warehouse, work / "state")
    with AttioClient(url, identity.attio_access_token(TENANT), limiter=RateLimiter()) as client:
        client.list_attributes("companies")  # the connection outside the timing, as for the peer
        return timed_load(pipeline, attio_source(client, TENANT, progress=lambda m: None), warehouse, tables)


def attio_peer(url: str, work: Path, tables: list[str]) -> dict:
    from dlt.sources.helpers.rest_client.paginators import OffsetPaginator
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {"base_url": f"{url}/", "auth": {"type": "bearer", "token": identity.attio_access_token(TENANT)}},
        "resources": [{
            "name": obj,
            "endpoint": {"path": f"v2/objects/{obj}/records/query", "method": "POST", "data_selector": "data",
                         "json": {"sorts": ATTIO_SORT},
                         # no total, no has_more: the only end of the list is an empty page
                         "paginator": OffsetPaginator(limit=ATTIO_PAGE, offset_param=None, offset_body_path="offset",
                                                      limit_param=None, limit_body_path="limit", total_path=None,
                                                      stop_after_empty_page=True)},
            # Attio's id is an object {workspace_id, object_id, record_id}: dlt flattens it to id__record_id
            "primary_key": "id__record_id", "write_disposition": "merge",
        } for obj in OBJECTS["attio"]],
    })
    return peer_load("attio", source, work, "raw_attio", tables)


def attio_floor(url: str) -> dict:
    floor = Floor()
    headers = {"Authorization": f"Bearer {identity.attio_access_token(TENANT)}"}
    empty = re.compile(rb'^\{\s*"data"\s*:\s*\[\s*\]')
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as client:
        for obj in OBJECTS["attio"]:
            offset = 0
            while True:
                body = floor.fetch(lambda: client.post(  # noqa: B023
                    f"/v2/objects/{obj}/records/query",
                    json={"sorts": ATTIO_SORT, "limit": ATTIO_PAGE, "offset": offset}))  # noqa: B023
                if empty.match(body):
                    break
                offset += ATTIO_PAGE
    return floor.result()


# ---- the run ------------------------------------------------------------------------------------------------


def measure(app: str, fixtures: Path, counts: dict[str, int], work: Path, port_base: int = PORT_BASE) -> dict:
    records = sum(counts.values())
    tables = [f"raw_{app}.{obj}" for obj in OBJECTS[app]]
    with emulator(fixtures, work / f"connections-{app}.yaml", app=app, port_base=port_base) as url:
        print(f"{app}: emulator ready with {counts}", flush=True)
        if app == "hubspot":
            properties = hubspot_properties(url)
            contenders = (lambda: hubspot_floor(url, properties), lambda: hubspot_peer(url, work, tables, properties),
                          lambda: hubspot_ours(url, work, tables))
        elif app == "salesforce":
            soql = salesforce_soql(url, work)
            contenders = (lambda: salesforce_floor(url, soql), lambda: salesforce_peer(url, work, tables, soql),
                          lambda: salesforce_ours(url, work, tables))
        else:
            contenders = (lambda: attio_floor(url), lambda: attio_peer(url, work, tables),
                          lambda: attio_ours(url, work, tables))
        floor, peer, ours = run_contenders(*contenders, label=f"{app}: ")
    for name, got in (("ledgerlink", ours), ("dlt rest_api", peer)):
        for obj, table in zip(OBJECTS[app], tables, strict=True):
            if got[table] != counts[obj]:
                raise SystemExit(f"{app}: {name} loaded {got[table]} {obj}, the emulator holds {counts[obj]}")
    result = {**summary(records, records, ours, peer, floor, "records"), "counts": counts,
              "ours_over_peer_rows_per_s": (records / ours["seconds"]) / (records / peer["seconds"]),
              "load_average_after": os.getloadavg()}
    print(f"\n{app}: {records} records ({', '.join(f'{n} {o}' for o, n in counts.items())})")
    print_table(result, "records", records, records, floor_label="fetch only")
    print(f"  ours/peer {result['ours_over_peer_rows_per_s']:.2f}x the rows/s; ours/floor "
          f"{result['ours_over_floor']:.2f}x the time; load average {os.getloadavg()[0]:.1f}\n", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=50_000, help="companies per CRM (contacts and deals follow)")
    parser.add_argument("--app", dest="apps", action="append", choices=CRMS, help="only this CRM (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("data/bench/extract_crm.json"))
    parser.add_argument("--port-base", type=int, default=PORT_BASE)
    args = parser.parse_args(argv)
    apps = tuple(args.apps or CRMS)
    with bench_workdir("ledgerlink-bench-crm-") as work:
        started = time.perf_counter()
        print(f"generating {args.companies} companies per CRM ({', '.join(apps)}) ...", flush=True)
        made = make_fixtures(work, args.companies, apps)
        print(f"fixtures in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f}", flush=True)
        results = {app: measure(app, *made[app], work, args.port_base) for app in apps}
        write_result(args.out, {"companies_per_crm": args.companies, "cpus": os.cpu_count(), "crms": results})
        print(f"{'':<12}{'records':>9}{'ours rec/s':>12}{'peer rec/s':>12}{'ours/peer':>11}{'ours/floor':>12}")
        for app, r in results.items():
            print(f"{app:<12}{r['records']:>9}{r['ledgerlink']['records_per_s']:>12,.0f}"
                  f"{r['peer_dlt_rest_api_parquet']['records_per_s']:>12,.0f}{r['ours_over_peer_rows_per_s']:>10.2f}x"
                  f"{r['ours_over_floor']:>11.2f}x")
        print(f"Results: {args.out}")


if __name__ == "__main__":
    main()
