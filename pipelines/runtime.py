"""What the CLI does, as plain functions (the tests call them too): paths, the sandbox with its registry,
in-process materializations on a persistent Dagster instance, and read-only SQL."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import duckdb

from assets.resources import DEFAULT_REGISTRY, DEFAULT_STATE_DIR, DEFAULT_WAREHOUSE
from connectors.registry import dump_registry, load_registry

DATA = Path("data")
FIXTURES = DATA / "fixtures"
REGISTRY = Path(DEFAULT_REGISTRY)
DEMO_INVOICES = 300

class _QuietArrowHints(logging.Filter):
    """dlt warns on every page that Arrow's nullability differs from its schema's (its keys are NOT NULL,
    Polars' columns are nullable); the data is unaffected, so that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "several column hints were different" not in record.getMessage()


def quiet_logs() -> None:
    logging.getLogger("dlt").addFilter(_QuietArrowHints())
    # httpx logs whole URLs at INFO; keep it to warnings
    logging.getLogger("httpx").setLevel(logging.WARNING)


DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    # DuckDB allows one writing process per file: the `warehouse` pool admits one op at a time.
    default_limit: 1
    granularity: op
    # One more run may start while another holds the pool: its process start (importing Dagster, dlt, Polars:
    # ~8 s here) overlaps that run, and its first step waits for the pool, highest `dagster/priority` first.
    op_granularity_run_buffer: 1
run_queue:
  # a queued run starts within a second (default 5 s): the near-real-time loop queues two runs per change
  dequeue_interval_seconds: 1
  dequeue_use_threads: true
sensors:
  # the change probes (network) never delay the chaining sensor's tick
  use_threads: true
  num_workers: 4
"""
# What earlier versions wrote: such a file (unedited) is brought up to date, an edited one is left alone.
_OLD_DAGSTER_YAMLS = (DAGSTER_YAML.split("    granularity: op")[0],)


def warehouse_path() -> Path:
    return Path(os.environ.get("LEDGERLINK_WAREHOUSE") or DEFAULT_WAREHOUSE)


def report_path() -> Path:
    from assets.reports.assets import default_report_path

    return default_report_path(warehouse_path())


def state_dir() -> Path:
    return Path(os.environ.get("LEDGERLINK_STATE_DIR") or DEFAULT_STATE_DIR)


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or (DATA / "dagster")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text() in _OLD_DAGSTER_YAMLS:
        config.write_text(DAGSTER_YAML)
    return home


def dagster_environment() -> dict[str, str]:
    return {"DAGSTER_HOME": str(dagster_home())}


def generate_fixtures(out: Path, *, invoices: int, tenants: int, seed: int, clean: bool) -> dict:
    from connectors.sandbox.demo_data import generate

    if out.exists():
        shutil.rmtree(out)
    manifest = generate(out, invoices=invoices, seed=seed, tenants=tenants, discrepancies=not clean)
    return manifest if isinstance(manifest, dict) else manifest.to_dict()


def reset_demo_state() -> None:
    """The demo starts from nothing: its warehouse, dlt state and tokens (the emulators start fresh too)."""
    for path in (warehouse_path(), Path(str(warehouse_path()) + ".wal")):
        path.unlink(missing_ok=True)
    shutil.rmtree(state_dir(), ignore_errors=True)


@contextlib.contextmanager
def open_sandbox(fixtures: Path, registry: Path, *, rate_limits: bool = False, port_base: int = 0,
                 apps: Iterable[str] | None = None) -> Iterator:
    from connectors.sandbox.launcher import DEFAULT_PORTS, start_sandbox

    ports = {app: (port_base + i if port_base else 0) for i, app in enumerate(DEFAULT_PORTS)}
    box = start_sandbox(fixtures, ports=ports, rate_limits=rate_limits, apps=apps)
    try:
        dump_registry(box.registry_document(), registry)
        # Fresh emulators know only their initial refresh tokens: forget tokens rotated by an earlier sandbox.
        forget_tokens(box.registry_document())
        yield box
    finally:
        box.stop()


def forget_tokens(registry_doc: dict) -> None:
    from connectors.auth import TokenStore

    store_path = state_dir() / "tokens.json"
    if not store_path.exists():
        return
    store = TokenStore(store_path)
    for tenant, body in registry_doc.get("tenants", {}).items():
        for app in body.get("connections", {}):
            store.delete(f"{tenant}.{app}")


def sync_partitions(instance=None) -> dict[str, list[str]]:
    """Adds the registry's connections and tenants as partitions (the sensor does the same inside `dagster dev`)."""
    from dagster import DagsterInstance

    from assets.partitions import CONNECTION_PARTITIONS, TENANT_PARTITIONS

    os.environ.update(dagster_environment())
    instance = instance or DagsterInstance.get()
    registry = load_registry(REGISTRY if not os.environ.get("LEDGERLINK_REGISTRY") else Path(os.environ["LEDGERLINK_REGISTRY"]))
    keys = {}
    for app, partitions in CONNECTION_PARTITIONS.items():
        wanted = registry.keys(app)
        have = set(instance.get_dynamic_partitions(partitions.name))
        missing = [k for k in wanted if k not in have]
        if missing:
            instance.add_dynamic_partitions(partitions.name, missing)
        keys[app] = wanted
    have = set(instance.get_dynamic_partitions(TENANT_PARTITIONS.name))
    if missing := [t for t in registry.tenants if t not in have]:
        instance.add_dynamic_partitions(TENANT_PARTITIONS.name, missing)
    return keys


def materialize_all(*, apps: Iterable[str] | None = None, partitions: Iterable[str] | None = None,
                    echo: Callable[[str], None] = print) -> dict[str, bool]:
    """Materializes each app's extraction assets for each connection, one run per connection, then per tenant
    the unified model and the reconciliation in one run of its partition (`results["reconcile <tenant>"]`),
    recorded in the persistent Dagster instance (so the UI shows them).
    A failing connection, or tenant, does not stop the others."""
    from dagster import DagsterInstance, materialize

    from assets.extract.assets import RAW_ASSETS
    from assets.reconcile.assets import RECONCILE_ASSETS
    from assets.unified.assets import UNIFIED_ASSETS
    from pipelines.definitions import defs

    os.environ.update(dagster_environment())
    quiet_logs()
    instance = DagsterInstance.get()
    keys = sync_partitions(instance)
    wanted_apps = set(apps or keys)
    only = set(partitions or ())
    resources = defs.resources
    results: dict[str, bool] = {}
    for app, assets_def in RAW_ASSETS.items():
        if app not in wanted_apps:
            continue
        for key in keys[app]:
            if only and key not in only:
                continue
            echo(f"[extract] {key} ...")
            result = materialize(
                [assets_def], instance=instance, partition_key=key, resources=resources, raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
                tags={"ledgerlink/connection": key},
            )
            results[key] = result.success
            echo(f"[extract] {key} {'ok' if result.success else 'FAILED (see the run in the Dagster UI)'}")
    # then per tenant (its `tenants` partition), in a run of its own: its unified model, then its links and
    # mismatches; a tenant that fails fails its own run, the others go on
    for tenant in tenants_of_registry(keys):
        echo(f"[reconcile] {tenant}: unified model and reconciliation ...")
        result = materialize([*UNIFIED_ASSETS, *RECONCILE_ASSETS], instance=instance, resources=resources,
                             partition_key=tenant, raise_on_error=False,
                             run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
        results[f"reconcile {tenant}"] = result.success
        echo(f"[reconcile] {tenant} {'ok' if result.success else 'FAILED (see the run in the Dagster UI)'}")
    # keep last: the checks and the report read what every step above wrote
    results.update(check_and_report(instance, resources, echo))
    return results


def tenants_of_registry(keys: dict[str, list[str]]) -> list[str]:
    """The tenants that have a connection, from sync_partitions' answer."""
    from assets.partitions import tenants_of

    return tenants_of(k for app_keys in keys.values() for k in app_keys)


def check_and_report(instance, resources, echo: Callable[[str], None] = print) -> dict[str, bool]:
    """The data-quality checks of the unified tables in a run of their own, then the report in another (it
    shows what the checks quarantined). A failing check is a finding, not a failure here: its rows are in
    reconcile.quarantine and in the report; only a check that could not run fails `results["checks"]`. (In a
    run that also materializes what depends on a checked table, a failing blocking check holds that back.)"""
    from dagster import AssetSelection, materialize

    from assets.quality.asset_checks import QUALITY_CHECKS
    from assets.reports.assets import REPORT_ASSETS
    from assets.unified.assets import UNIFIED_ASSETS

    logs = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    echo("[checks] data quality of the unified tables ...")
    # failing blocking checks fail their steps by design: keep their tracebacks off the console, say it below
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    checked = materialize([*UNIFIED_ASSETS, *QUALITY_CHECKS], selection=AssetSelection.checks(*QUALITY_CHECKS),
                          instance=instance, resources=resources, raise_on_error=False, run_config=quiet)
    evaluations = checked.get_asset_check_evaluations()
    failed = sorted(f"{e.asset_key.path[-1]}.{e.check_name} ({e.metadata['failing_rows'].value})"
                    for e in evaluations if not e.passed)
    broken = [f for f in checked.get_step_failure_events()
              if f.step_failure_data.error.cls_name != "DagsterAssetCheckFailedError"]
    echo(f"[checks] {len(evaluations) - len(failed)} of {len(evaluations)} passed"
         + (f"; failing rows quarantined in reconcile.quarantine: {', '.join(failed)}" if failed else "")
         + ("; SOME CHECKS COULD NOT RUN (see the run in the Dagster UI)" if broken else ""))
    for failure in broken:
        echo(f"[checks] {failure.step_key}: {failure.step_failure_data.error.message.strip()}")
    echo("[report] data-quality report ...")
    reported = materialize(REPORT_ASSETS, instance=instance, resources=resources, raise_on_error=False,
                           run_config=logs)
    path = next((e.materialization.metadata["path"].value for e in reported.get_asset_materialization_events()
                 if "path" in e.materialization.metadata), None)
    echo(f"[report] {path}" if reported.success else "[report] FAILED (see the run in the Dagster UI)")
    return {"checks": not broken, "report": reported.success}


def write_report(*, out: Path | None = None, warehouse: Path | None = None):
    """`ledgerlink report`: the data-quality report from the current warehouse, without Dagster."""
    from assets.reports.assets import write_report as build
    from connectors.registry import RegistryError

    registry_path = Path(os.environ.get("LEDGERLINK_REGISTRY") or REGISTRY)
    try:
        registry = load_registry(registry_path)
    except RegistryError:
        registry = None  # links then point at the vendors' web apps
    return build(warehouse or warehouse_path(), out, registry=registry)


def describe_warehouse(path: Path) -> str:
    if not path.exists():
        return f"warehouse {path} does not exist yet"
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema like 'raw_%' and table_schema not like '%_staging' and table_name not like '_dlt%' "
            "order by 1, 2"
        ).fetchall()
        lines = [f"warehouse {path}:"]
        for schema, table in tables:
            counts = con.execute(
                f'select tenant, count(*) from "{schema}"."{table}" group by 1 order by 1'
            ).fetchall() if table != "rejected_records" else con.execute(
                f'select tenant || \' \' || collection, count(*) from "{schema}"."{table}" group by 1 order by 1'
            ).fetchall()
            per = ", ".join(f"{t} {n}" for t, n in counts)
            lines.append(f"  {schema}.{table:<34} {sum(n for _, n in counts):>8}  ({per})")
    return "\n".join(lines)


def run_sql(query: str, path: Path, fmt: str = "table") -> str:
    import polars as pl

    if not path.exists():
        raise FileNotFoundError(f"warehouse {path} does not exist; run `make demo` or `ledgerlink materialize`")
    with duckdb.connect(str(path), read_only=True) as con:
        relation = con.sql(query)
        frame = relation.pl() if relation is not None else pl.DataFrame()
    if fmt == "csv":
        return frame.write_csv()
    if fmt == "json":
        return frame.write_json() + "\n"
    with pl.Config(tbl_rows=200, tbl_cols=50, fmt_str_lengths=60, tbl_width_chars=200):
        return f"{frame}\n"


# ----------------------------------------------------------------------------------------------------------
# Write-back: plan, apply, re-sync, and the demo's second reconciliation
# ----------------------------------------------------------------------------------------------------------


def registry_file() -> Path:
    return Path(os.environ.get("LEDGERLINK_REGISTRY") or REGISTRY)


def _writeback_context():
    from assets.resources import Ledgerlink

    resource = Ledgerlink()
    return resource, resource.registry()


def show_plan(*, tenant: str | None = None, invoice: str | None = None) -> list[str]:
    """`ledgerlink plan`: the writes the current warehouse asks for, per tenant with reasons (nothing recorded)."""
    from assets.writeback.assets import plan_lines, plan_writes

    resource, registry = _writeback_context()
    planned = plan_writes(resource.warehouse, registry, tenants=[tenant] if tenant else None, invoice=invoice,
                          record=False)
    return plan_lines(planned)


def apply_writes(*, tenant: str | None = None, write: bool = False, echo: Callable[[str], None] = print):
    """`ledgerlink apply`: plans into writeback.outbox, then sends what is pending (dry run outside the sandbox
    unless `write`). Safe to kill and run again: nothing is written twice."""
    from assets.writeback.assets import apply_writes as send, plan_writes

    resource, registry = _writeback_context()
    tenants = [tenant] if tenant else None
    planned = plan_writes(resource.warehouse, registry, tenants=tenants)
    echo(f"[plan] {planned.plan.height} writes ({planned.merge.summary()})")
    result = send(resource.warehouse, registry, resource.token_store(), allow_writes=write, tenants=tenants,
                  registry_path=registry_file(), echo=echo)
    echo(f"[apply] {result.summary()}")
    return result


def resync_invoice(invoice: str, *, write: bool = False, echo: Callable[[str], None] = print):
    """`ledgerlink resync INVOICE`: re-plans one Sequence invoice and re-sends it (and what it waits for)."""
    from assets.writeback.assets import plan_lines, resync

    resource, registry = _writeback_context()
    planned, result = resync(resource.warehouse, registry, resource.token_store(), invoice, allow_writes=write,
                             registry_path=registry_file(), echo=echo)
    for line in plan_lines(planned):
        echo(line)
    echo(f"[resync] {result.summary()}")
    return planned, result


def write_back(instance, resources, echo: Callable[[str], None] = print, *, allow_writes: bool = False) -> bool:
    """The write-back assets (plan, then apply), one run per tenant (its partition), recorded in the Dagster
    instance; a tenant whose write-back fails does not stop the others'."""
    from dagster import materialize

    from assets.writeback.assets import APPLY_KEY, PLAN_KEY, WRITEBACK_ASSETS

    echo("[writeback] plan and apply ...")
    planned = skipped = 0
    applied: dict[str, int] = {}
    ok = True
    for tenant in tenants_of_registry(sync_partitions(instance)):
        result = materialize(WRITEBACK_ASSETS, instance=instance, resources=resources, partition_key=tenant,
                             raise_on_error=False,
                             run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                                         "ops": {"writeback__apply": {"config": {"allow_writes": allow_writes}}}})
        meta = {tuple(e.materialization.asset_key.path): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
        plan, done = meta.get(tuple(PLAN_KEY.path), {}), meta.get(tuple(APPLY_KEY.path), {})
        if "writes_planned" in plan:
            planned, skipped = planned + plan["writes_planned"].value, skipped + plan["writes_skipped"].value
        for key in ("confirmed", "failed", "skipped", "waiting", "requests_total"):
            if key in done:
                applied[key] = applied.get(key, 0) + done[key].value
        if not result.success:
            echo(f"[writeback] {tenant} FAILED (see the run in the Dagster UI)")
        ok = ok and result.success
    echo(f"[writeback] planned {planned} writes ({skipped} refused by a contract or waiting on one)")
    for line in outbox_summary(warehouse_path()):
        echo(f"[writeback]   {line}")
    if applied:
        echo("[writeback] " + ", ".join(f"{applied.get(k, 0)} {k}"
                                        for k in ("confirmed", "failed", "skipped", "waiting"))
             + f", {applied.get('requests_total', 0)} HTTP requests")
    echo(f"[writeback] {'ok' if ok else 'FAILED (see the runs in the Dagster UI)'}")
    return ok


def outbox_summary(warehouse: Path) -> list[str]:
    """One line per tenant: its writes by app and operation, with their states."""
    if not warehouse.exists():
        return []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        if not con.execute("select count(*) from information_schema.tables where table_schema = 'writeback' "
                           "and table_name = 'outbox'").fetchall()[0][0]:
            return []
        rows = con.execute("select tenant, app, operation, count(*), count(*) filter (where state = 'confirmed') "
                           "from writeback.outbox group by all order by all").fetchall()
    lines: dict[str, list[str]] = {}
    for tenant, app, operation, n, confirmed in rows:
        lines.setdefault(tenant, []).append(f"{app} {operation} {confirmed}/{n}")
    return [f"{tenant}: " + ", ".join(parts) + " (confirmed/all)" for tenant, parts in lines.items()]


def _replan():
    from assets.writeback.assets import plan_writes

    resource, registry = _writeback_context()
    return plan_writes(resource.warehouse, registry, record=False)


def mismatches_by_action(warehouse: Path) -> dict[str, int]:
    if not warehouse.exists():
        return {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        exists = con.execute("select count(*) from information_schema.tables where table_schema = 'reconcile' "
                             "and table_name = 'mismatches'").fetchall()[0][0]
        if not exists:
            return {}
        return dict(con.execute("select proposed_action, count(*) from reconcile.mismatches group by 1 "
                                "order by 2 desc").fetchall())


MAX_DEMO_ROUNDS = 3
WRITTEN_BACK_APPS = ("quickbooks", "xero", "sequence", "hubspot", "salesforce", "attio")  # write-back plans for these
CRM_APPS = ("hubspot", "salesforce", "attio")


def _unplanned_by_app(warehouse: Path) -> dict[str, int]:
    """Mismatches a write would fix, in apps write-back does not plan for yet (the CRMs)."""
    from assets.writeback.plan import WRITE_ACTIONS

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(con.execute(
            "select app, count(*) from reconcile.mismatches where proposed_action in (select unnest(?)) "
            "and app not in (select unnest(?)) group by 1 order by 1",
            [list(WRITE_ACTIONS), list(WRITTEN_BACK_APPS)]).fetchall())


def _crm_written(warehouse: Path) -> dict[str, int]:
    """Confirmed writes on the CRMs' behalf: their companies' fields, new companies, customers imported from them."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return dict(con.execute(
            "select counterpart_app, count(*) from writeback.outbox where state = 'confirmed' "
            "and counterpart_app in (select unnest(?)) group by 1 order by 1", [list(CRM_APPS)]).fetchall())


def demo_write_back(echo: Callable[[str], None] = print) -> dict[str, bool]:
    """After the first reconciliation: plan -> apply on the sandbox -> extract, unify and reconcile again, and say
    what is left: no write should remain to make; what remains needs a person (review, settings) or was refused
    by a payload contract, with the reason."""
    from dagster import DagsterInstance

    from assets.writeback.plan import WRITE_ACTIONS
    from pipelines.definitions import defs

    def writable(counts: dict[str, int]) -> int:
        return sum(n for action, n in counts.items() if action in WRITE_ACTIONS)

    before = mismatches_by_action(warehouse_path())
    echo(f"[writeback] reconciliation found {sum(before.values())} mismatches; {writable(before)} a write can fix ("
         + ", ".join(f"{a} {n}" for a, n in before.items() if a in WRITE_ACTIONS) + ")")
    ok, results = True, {}
    # A customer imported into Sequence from one accounting system is created in the tenant's other one by the
    # next round (its Sequence id exists only once the import is confirmed), so the loop runs until nothing is
    # left to write, at most MAX_DEMO_ROUNDS times.
    for round_number in range(1, MAX_DEMO_ROUNDS + 1):
        ok = write_back(DagsterInstance.get(), defs.resources, echo) and ok
        echo("[writeback] extracting, unifying and reconciling again ...")
        results.update({f"after-writeback {k}": v for k, v in materialize_all(echo=echo).items()})
        after = mismatches_by_action(warehouse_path())
        planned = _replan()
        rows = planned.plan.join(planned.states, on="idempotency_key", how="left").to_dicts()
        # still to write: a planned row not confirmed yet; refused: a row a contract (or a dependency) holds back
        to_write = [r for r in rows if r["state"] == "planned" and r["outbox_state"] != "confirmed"]
        refused = [r for r in rows if r["state"] == "skipped"]
        if not to_write or round_number == MAX_DEMO_ROUNDS:
            break
        echo(f"[writeback] round {round_number + 1}: {len(to_write)} writes follow from round {round_number}'s "
             "imports (a customer imported from one system is created in the tenant's other one) ...")
    people = ", ".join(f"{a} {n}" for a, n in after.items() if a not in WRITE_ACTIONS)
    if not to_write:
        echo(f"[demo] no write left to make: {writable(before)} mismatches a write could fix before, "
             f"0 writes left to make now." + (f" Left for a person: {people}." if people else ""))
        written = _crm_written(warehouse_path())
        if written:
            echo("[demo] CRM mismatches written back: " + ", ".join(f"{app} {n}" for app, n in written.items())
                 + " writes confirmed (company fields, new companies, customers imported from closed-won deals)")
        unplanned = _unplanned_by_app(warehouse_path())
        if unplanned:
            echo("[demo] not written back (no write-back for these apps): " + ", ".join(
                f"{app} {n}" for app, n in unplanned.items()) + " mismatches a write would fix")
    else:
        echo(f"[demo] {len(to_write)} writes still to make after write-back:")
        for r in to_write:
            echo(f"  {r['tenant']} {r['app']} {r['operation']} {r['entity']} {r['sequence_id'] or r['app_id']}: "
                 f"{r['reason']}")
    for r in refused:
        echo(f"[demo] refused, needs a person: {r['tenant']} {r['app']} {r['operation']} {r['entity']} "
             f"{r['sequence_id'] or r['app_id']}: {r['error']}")
    return {"writeback": ok and not to_write, **results}
