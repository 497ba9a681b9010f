"""The companies of a set of deals, read live from several CRMs at once, each with its own batch read:

  HubSpot     POST /crm/v4/associations/deals/companies/batch/read (1,000 deals a call: the links, primary
              flagged by association type 5), then POST /crm/v3/objects/companies/batch/read (100 a call),
              after one GET of the company properties (the portal's custom ones are read too);
  Salesforce  SOQL `SELECT Id, AccountId FROM Opportunity WHERE Id IN (...)`, then `SELECT <every field>
              FROM Account WHERE Id IN (...)` (200 ids a query: the sObject Collections size), after one
              describe of Account;
  Attio       POST /v2/objects/deals/records/query with filter `{"record_id": {"$in": [...]}}` (500 a call:
              Attio's default page), then the same on companies, after one GET of the company attributes.

`companies_of_deals` groups the deals by connection (tenant, app), reads the connections concurrently (a thread
each, one client per connection), and maps the companies it reads with the same per-app field maps and
per-tenant settings as unified.companies (assets/unified/{hubspot,salesforce,attio}.py), so a live row and a
warehouse row of the same company look alike. The answer: one row per (deal, company) link with the
company's unified columns (null when the linked company could not be read, e.g. deleted meanwhile); a deal with
no company has no row.

The asset `crm/deal_companies_live` runs it for deals chosen in its run config (default: every deal of
unified.deals) and writes `crm.deal_companies_live`.

Simplifications: ids are read as given (a HubSpot id missing from a batch read is just absent); the answer is
not validated against the contracts nor quarantined (it is a live look-up, unified.* stays the checked model).
"""


import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from assets.extract.attio import ATTIO_CURRENCIES, flatten_record, object_shape
from assets.extract.flatten import frame_to_tables, read_records, records_frame
from assets.extract.hubspot import COLLECTIONS as HUBSPOT_COLLECTIONS
from assets.extract.hubspot import STANDARD_PROPERTIES
from assets.extract.loading import CURRENCIES
from assets.extract.salesforce import OBJECTS as SALESFORCE_OBJECTS
from assets.extract.salesforce import select_fields
from assets.resources import Ledgerlink
from assets.unified import attio, hubspot, mapping, salesforce
from assets.warehouse import WAREHOUSE_POOL, connect, read_table, replace_tables
from checks.unified import MODEL
from connectors.hubspot import DEAL_TO_COMPANY_PRIMARY, MAX_ASSOCIATION_BATCH, MAX_BATCH
from connectors.salesforce import COLLECTION_MAX

CRMS = ("hubspot", "salesforce", "attio")
BATCH_SIZES = {"hubspot": MAX_BATCH, "hubspot_associations": MAX_ASSOCIATION_BATCH, "salesforce": COLLECTION_MAX,
               "attio": 500}
MAX_WORKERS = 6
_MODULES = {"hubspot": hubspot, "salesforce": salesforce, "attio": attio}
_RAW_COMPANIES = {"hubspot": "companies", "salesforce": "account", "attio": "companies"}
_SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")  # never quoted into SOQL otherwise

LINKS: dict[str, pl.DataType] = {"tenant": pl.String(), "app": pl.String(), "deal_id": pl.String(),
                                 "company_id": pl.String(), "is_primary": pl.Boolean()}
COMPANY_COLUMNS = [c for c in MODEL["companies"].columns if c not in ("tenant", "app", "id")]
SCHEMA: dict[str, pl.DataType] = {**LINKS, **{c: MODEL["companies"].columns[c].dtype.type for c in COMPANY_COLUMNS}}

Clients = Mapping[tuple[str, str], Any]  # (tenant, app) -> an open client of that connection


def _chunks(ids: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _frame(tables: list[Any], table: str) -> pl.DataFrame:
    frames = [pl.from_arrow(t.tables[table]) for t in tables if table in t.tables]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


# ----- one connection each -----------------------------------------------------------------------------------

def _hubspot(client: Any, tenant: str, deal_ids: list[str],
             sizes: Mapping[str, int]) -> tuple[list[dict], pl.DataFrame]:
    links: list[dict] = []
    for chunk in _chunks(deal_ids, sizes["hubspot_associations"]):
        for deal_id, found in client.batch_read_associations("deals", "companies", chunk).items():
            for link in found:
                types = {int(t["typeId"]) for t in link.get("associationTypes") or []}
                links.append({"deal_id": deal_id, "company_id": str(link["toObjectId"]),
                              "is_primary": DEAL_TO_COMPANY_PRIMARY in types})
    company_ids = list(dict.fromkeys(link["company_id"] for link in links))
    if not company_ids:
        return links, pl.DataFrame()
    known = {d["name"]: d for d in client.list_properties("companies") if not d.get("archived")}
    names = [n for n in STANDARD_PROPERTIES["companies"] if n in known]
    names += sorted(n for n, d in known.items() if not d.get("hubspotDefined") and n not in names)
    shape = HUBSPOT_COLLECTIONS["companies"].shape
    pages = [frame_to_tables(records_frame(client.batch_read("companies", chunk, properties=names).results), shape,
                             tenant, CURRENCIES)
             for chunk in _chunks(company_ids, sizes["hubspot"])]
    return links, _frame(pages, shape.table)


def _soql_ids(ids: list[str]) -> str:
    bad = [i for i in ids if not _SALESFORCE_ID.match(i)]
    if bad:
        raise ValueError(f"not Salesforce ids: {bad[:3]}")
    return ", ".join(f"'{i}'" for i in ids)


def _salesforce(client: Any, tenant: str, deal_ids: list[str],
                sizes: Mapping[str, int]) -> tuple[list[dict], pl.DataFrame]:
    links = [{"deal_id": r["Id"], "company_id": r["AccountId"], "is_primary": True}
             for chunk in _chunks(deal_ids, sizes["salesforce"])
             for r in client.query(f"SELECT Id, AccountId FROM Opportunity WHERE Id IN ({_soql_ids(chunk)})")
             if r.get("AccountId")]
    account_ids = list(dict.fromkeys(link["company_id"] for link in links))
    if not account_ids:
        return links, pl.DataFrame()
    fields = ", ".join(select_fields(client, "Account"))
    shape = SALESFORCE_OBJECTS["account"].shape
    pages = []
    for chunk in _chunks(account_ids, sizes["salesforce"]):
        for page in client.query_pages(f"SELECT {fields} FROM Account WHERE Id IN ({_soql_ids(chunk)})"):
            frame = read_records(page.body, ("records",)).drop("attributes", strict=False)
            pages.append(frame_to_tables(frame, shape, tenant, CURRENCIES))
    return links, _frame(pages, shape.table)


def _attio_target(record: Mapping[str, Any], slug: str) -> str | None:
    for value in (record.get("values") or {}).get(slug) or []:
        if isinstance(value, dict) and value.get("active_until") is None and value.get("target_record_id"):
            return str(value["target_record_id"])
    return None


def _attio_query(client: Any, obj: str, ids: list[str]) -> list[dict]:
    return client.query(obj, filter={"record_id": {"$in": ids}}, limit=len(ids))


def _attio(client: Any, tenant: str, deal_ids: list[str], sizes: Mapping[str, int]) -> tuple[list[dict], pl.DataFrame]:
    links = []
    for chunk in _chunks(deal_ids, sizes["attio"]):
        for record in _attio_query(client, "deals", chunk):
            company = _attio_target(record, "associated_company")
            if company:
                links.append({"deal_id": str(record["id"]["record_id"]), "company_id": company, "is_primary": True})
    company_ids = list(dict.fromkeys(link["company_id"] for link in links))
    if not company_ids:
        return links, pl.DataFrame()
    attributes = {a["api_slug"]: a for a in client.list_attributes("companies") if a.get("api_slug")}
    shape = object_shape("companies", attributes)
    pages = [frame_to_tables(records_frame([flatten_record(r, attributes)
                                            for r in _attio_query(client, "companies", chunk)]),
                             shape, tenant, ATTIO_CURRENCIES)
             for chunk in _chunks(company_ids, sizes["attio"])]
    return links, _frame(pages, shape.table)


_READERS: dict[str, Callable[..., tuple[list[dict], pl.DataFrame]]] = {
    "hubspot": _hubspot, "salesforce": _salesforce, "attio": _attio}


# ----- all of them ---------------------------------------------------------------------------------------------

def _deal_keys(deals: pl.DataFrame) -> dict[tuple[str, str], list[str]]:
    id_column = "deal_id" if "deal_id" in deals.columns else "id"
    missing = {"tenant", "app", id_column} - set(deals.columns)
    if missing:
        raise ValueError(f"deals need columns tenant, app and id (or deal_id); missing {sorted(missing)}")
    keys = deals.select("tenant", "app", pl.col(id_column).cast(pl.String).alias("deal_id")).drop_nulls().unique(
        maintain_order=True)
    unknown = set(keys.get_column("app").unique()) - set(CRMS)
    if unknown:
        raise ValueError(f"not CRMs: {sorted(unknown)} (deals come from {', '.join(CRMS)})")
    return {(tenant, app): frame.get_column("deal_id").to_list()
            for (tenant, app), frame in keys.group_by("tenant", "app", maintain_order=True)}


def companies_of_deals(source: Ledgerlink | Clients, deals: pl.DataFrame, *,
                       settings: mapping.Settings | None = None, batch_sizes: Mapping[str, int] | None = None,
                       max_workers: int = MAX_WORKERS) -> pl.DataFrame:
    """The companies of `deals` (columns tenant, app, id or deal_id), read live from each deal's CRM: one row per
    (deal, company) link with the company's unified columns (SCHEMA).

    `source` is the Ledgerlink resource (each connection's client from the registry, opened and closed here; each
    app maps with its connection's settings) or a mapping (tenant, app) -> an open client (then `settings`,
    tenant -> settings, apply to every app)."""
    groups = _deal_keys(deals)
    sizes = {**BATCH_SIZES, **(batch_sizes or {})}
    own_settings: dict[str, dict[str, Any]] = {app: dict(settings or {}) for app in CRMS}
    registry = source.registry() if isinstance(source, Ledgerlink) else None
    if registry is not None:
        for tenant, app in groups:
            own_settings[app][tenant] = registry.get(f"{tenant}.{app}").settings or {}

    def read(key: tuple[str, str]) -> tuple[tuple[str, str], list[dict], pl.DataFrame]:
        tenant, app = key
        if registry is not None:
            opened = source.client(registry.get(f"{tenant}.{app}"))
        else:
            opened = nullcontext(source[key])
        with opened as client:
            links, companies = _READERS[app](client, tenant, groups[key], sizes)
        return key, links, companies

    links: list[dict] = []
    raw: dict[str, list[pl.DataFrame]] = {app: [] for app in CRMS}
    if groups:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(groups))),
                                thread_name_prefix="crm-companies") as pool:
            for (tenant, app), found, companies in pool.map(read, groups):
                links += [{"tenant": tenant, "app": app, **link} for link in found]
                if companies.height:
                    raw[app].append(companies)
    link_frame = pl.DataFrame(links, schema=LINKS).unique(subset=["tenant", "app", "deal_id", "company_id"],
                                                          maintain_order=True)
    mapped = [_MODULES[app].companies({_RAW_COMPANIES[app]: pl.concat(frames, how="diagonal_relaxed")},
                                      own_settings[app]).drop(mapping.PROBLEM_COLUMNS)
              for app, frames in raw.items() if frames]
    companies = (pl.concat(pl.collect_all(mapped), how="vertical") if mapped
                 else pl.DataFrame(schema={"tenant": pl.String, "app": pl.String, "id": pl.String,
                                           **{c: SCHEMA[c] for c in COMPANY_COLUMNS}}))
    companies = companies.unique(subset=["tenant", "app", "id"], maintain_order=True)
    return (link_frame.join(companies.rename({"id": "company_id"}), on=["tenant", "app", "company_id"], how="left")
            .select(list(SCHEMA)).cast(SCHEMA))


# ----- the asset -------------------------------------------------------------------------------------------------

LIVE_TABLE = "crm.deal_companies_live"


class DealCompaniesConfig(Config):
    """Which deals (of unified.deals): empty lists mean all."""

    tenants: list[str] = []
    apps: list[str] = []
    deal_ids: list[str] = []


@asset(key=AssetKey(["crm", "deal_companies_live"]), deps=[AssetKey(["unified", "deals"])], group_name="crm",
       pool=WAREHOUSE_POOL, kinds={"polars", "duckdb"})
def deal_companies_live(context: AssetExecutionContext, config: DealCompaniesConfig,
                        ledgerlink: Ledgerlink) -> MaterializeResult:
    """The companies of the chosen deals, read now from each CRM with its batch read (crm.companies_of_deals);
    writes crm.deal_companies_live."""
    with connect(ledgerlink.warehouse, read_only=True) as con:
        deals = read_table(con, "unified.deals")
    deals = deals.select("tenant", "app", "id") if deals.width else pl.DataFrame(schema={
        "tenant": pl.String, "app": pl.String, "id": pl.String})
    for column, wanted in (("tenant", config.tenants), ("app", config.apps), ("id", config.deal_ids)):
        if wanted:
            deals = deals.filter(pl.col(column).is_in(wanted))
    frame = companies_of_deals(ledgerlink, deals)
    replace_tables(ledgerlink.warehouse, {LIVE_TABLE: frame})
    by_app = {app: rows for app, rows in frame.group_by("app").len().sort("app").iter_rows()}
    context.log.info(f"{LIVE_TABLE}: {frame.height} links of {deals.height} deals")
    return MaterializeResult(metadata={"deals": MetadataValue.int(deals.height),
                                       "rows": MetadataValue.int(frame.height),
                                       "rows_by_app": MetadataValue.json(by_app)})


CRM_ASSETS = [deal_companies_live]
