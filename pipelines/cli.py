"""`ledgerlink`: the command line. click because it is already in Dagster's dependency tree and gives
grouped commands, typed options and --help for free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click


class _LazyRuntime:
    """pipelines.runtime, imported on first use: it brings Dagster and dlt (seconds to import), which
    `ledgerlink apply` does not need (its plain functions are in assets.writeback.run), so it starts fast."""

    def __getattr__(self, name: str):
        from pipelines import runtime as module

        return getattr(module, name)


runtime = _LazyRuntime()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Ledgerlink keeps Sequence in agreement with its merchants' accounting systems and CRMs."""


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=lambda: runtime.FIXTURES, show_default=True)
@click.option("--invoices", type=int, default=lambda: runtime.DEMO_INVOICES, show_default=True,
              help="Sequence invoices across all tenants.")
@click.option("--tenants", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--clean", is_flag=True, help="Plant no discrepancies (both sides agree).")
def generate(out: Path, invoices: int, tenants: int, seed: int, clean: bool) -> None:
    """Write a deterministic demo company set in the sandbox fixture layout."""
    manifest = runtime.generate_fixtures(out, invoices=invoices, tenants=tenants, seed=seed, clean=clean)
    click.echo(f"fixtures: {out} ({manifest['invoices']} invoices, tenants: {', '.join(manifest['tenants'])}, "
               f"{len(manifest['discrepancies'])} planted discrepancies in manifest.json)")


@main.command()
@click.option("--fixtures", type=click.Path(path_type=Path), default=lambda: runtime.FIXTURES, show_default=True)
@click.option("--registry", type=click.Path(path_type=Path), default=lambda: runtime.REGISTRY, show_default=True)
@click.option("--rate-limits/--no-rate-limits", default=False, show_default=True,
              help="Enforce each app's real rate limits.")
@click.option("--port-base", type=int, default=8711, show_default=True)
@click.option("--app", "apps", multiple=True, help="Only these apps (default: every app in the fixtures).")
def sandbox(fixtures: Path, registry: Path, rate_limits: bool, port_base: int, apps: tuple[str, ...]) -> None:
    """Serve the emulators of every app in a fixture folder on 127.0.0.1 until interrupted."""
    with runtime.open_sandbox(fixtures, registry, rate_limits=rate_limits, port_base=port_base,
                              apps=apps or None) as box:
        for app, url in box.urls.items():
            click.echo(f"{app:<11} {url}")
        click.echo(f"registry: {registry}\nsecrets (sandbox only) for your shell:")
        for name, value in box.environment().items():
            click.echo(f"  export {name}={value}")
        click.echo("Ctrl-C stops the sandbox.")
        _wait_for_interrupt()


@main.command()
@click.option("--invoices", type=int, default=lambda: runtime.DEMO_INVOICES, show_default=True)
@click.option("--tenants", type=int, default=3, show_default=True)
def demo(invoices: int, tenants: int) -> None:
    """Fresh demo: generate data, start the sandbox, materialize every asset, write back on the sandbox and
    reconcile again, say what the warehouse holds and what is left."""
    started = time.perf_counter()
    runtime.reset_demo_state()
    manifest = runtime.generate_fixtures(runtime.FIXTURES, invoices=invoices, tenants=tenants, seed=7, clean=False)
    click.echo(f"[demo] generated {manifest['invoices']} invoices for {', '.join(manifest['tenants'])} "
               f"in {runtime.FIXTURES}")
    with runtime.open_sandbox(runtime.FIXTURES, runtime.REGISTRY, port_base=0) as box:
        click.echo("[demo] sandbox: " + ", ".join(f"{app} {url}" for app, url in box.urls.items()))
        os.environ.update(box.environment())
        results = runtime.materialize_all(echo=click.echo)
        # the loop closes: plan -> apply on the sandbox -> extract, unify, reconcile again
        results.update(runtime.demo_write_back(echo=click.echo))
    click.echo(runtime.describe_warehouse(runtime.warehouse_path()))
    report = runtime.report_path()
    if report.exists():
        click.echo(f"[demo] data-quality report: {report.resolve()}")
        _screenshot(report)
    failed = [key for key, ok in results.items() if not ok]
    click.echo(f"[demo] done in {time.perf_counter() - started:.1f} s. Warehouse: {runtime.warehouse_path()}  "
               f"(try: ledgerlink sql \"select tenant, count(*) from raw_quickbooks.invoice group by 1\")")
    click.echo(f"[demo] Dagster run history: {runtime.dagster_home()}  (make dev opens the UI)")
    if failed:
        raise click.ClickException(f"materialization failed for {', '.join(failed)}")


@main.command()
@click.option("--app", "apps", multiple=True, help="Only these apps (default: all).")
@click.option("--partition", "partitions", multiple=True, help="Only these connections, e.g. acme-uk.quickbooks.")
def materialize(apps: tuple[str, ...], partitions: tuple[str, ...]) -> None:
    """Materialize the extraction assets of the registered connections, in-process."""
    results = runtime.materialize_all(apps=apps or None, partitions=partitions or None, echo=click.echo)
    if not all(results.values()):
        raise click.ClickException("some partitions failed: " + ", ".join(k for k, ok in results.items() if not ok))


@main.command()
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--invoices", type=int, default=lambda: runtime.DEMO_INVOICES, show_default=True)
def dev(port: int, invoices: int) -> None:
    """Open the Dagster UI on the sandbox (generates demo data if there is none)."""
    if not (runtime.FIXTURES / "manifest.json").exists():
        runtime.generate_fixtures(runtime.FIXTURES, invoices=invoices, tenants=3, seed=7, clean=False)
    with runtime.open_sandbox(runtime.FIXTURES, runtime.REGISTRY, port_base=8711) as box:
        env = {**os.environ, **box.environment(), **runtime.dagster_environment()}
        runtime.sync_partitions()
        # handlers first: a signal arriving while dagster starts must still stop the tree it started
        _stop_on_signals()
        process = None
        try:
            # A new session, so the whole process tree stops on our signal (STACK.md: `dagster dev` ignores
            # SIGINT/SIGTERM when started in the background of a script).
            process = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml",
                                        "-p", str(port)], env=env, start_new_session=True)
            click.echo(f"[dev] Dagster UI on http://127.0.0.1:{port}  sandbox: {box.urls}  (Ctrl-C stops both)")
            click.echo("[dev] on: schedules incremental_sync_<app> (every 15 min), complete_sweep_<app> (02:00 UTC); "
                       "sensors connection_changes (30 s), reconcile_after_sync, connection_partitions_sensor")
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Default: reports/data_quality.html beside the warehouse.")
@click.option("--warehouse", type=click.Path(path_type=Path), default=None,
              help="Default: $LEDGERLINK_WAREHOUSE or data/warehouse.duckdb.")
@click.option("--screenshot", is_flag=True, help="Also save a PNG of the page beside it (needs /usr/bin/chromium).")
def report(out: Path | None, warehouse: Path | None, screenshot: bool) -> None:
    """Build the data-quality report from the current warehouse (read-only, without Dagster); print where it is
    and a summary per tenant."""
    from assets.reports.report import summary_lines

    try:
        built = runtime.write_report(out=out, warehouse=warehouse)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report: {built.path}  ({built.seconds:.1f} s)")
    for line in summary_lines(built.report):
        click.echo(f"  {line}")
    if screenshot:
        _screenshot(built.path)


def _screenshot(html: Path) -> None:
    from assets.reports.screenshot import can_screenshot, screenshot

    why_not = can_screenshot()
    if why_not:
        click.echo(f"no screenshot: {why_not}")
        return
    click.echo(f"screenshot: {screenshot(html, html.with_suffix('.png'))}")


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--warehouse", type=click.Path(path_type=Path), default=None, help="Default: $LEDGERLINK_WAREHOUSE or data/warehouse.duckdb.")
@click.option("--wait", "wait", type=float, default=15.0, show_default=True,
              help="Seconds to wait for a load that is writing the warehouse before giving up.")
def sql(query: str, fmt: str, warehouse: Path | None, wait: float) -> None:
    """Run ad-hoc SQL over the warehouse (read-only). The warehouse is opened for the query only, so a load
    that starts meanwhile just waits for it; while a load is writing, the query waits up to --wait seconds.
    (It reads the live file, not a copy: a consistent copy would need the same lock.)"""
    import duckdb

    from assets.warehouse import wait_for_warehouse

    path = warehouse or runtime.warehouse_path()
    try:
        click.echo(wait_for_warehouse(lambda: runtime.run_sql(query, path, fmt), path, read_only=True, wait=wait),
                   nl=False)
    except (FileNotFoundError, duckdb.Error) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant with QuickBooks).")
def plan(tenant: str | None) -> None:
    """Show every write that would bring Sequence and the connected apps into agreement, per tenant with its
    reason, from the current warehouse (nothing is recorded or sent)."""
    for line in _writeback(lambda: runtime.show_plan(tenant=tenant)):
        click.echo(line)


@main.command()
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--write", is_flag=True, help="Write to apps that are not the sandbox too (default there: dry run).")
def apply(tenant: str | None, write: bool) -> None:
    """Plan into writeback.outbox and send the pending writes, exactly once (safe to interrupt and run again).
    The sandbox (loopback) is written to; anything else only with --write."""
    from assets.writeback.run import apply_from_environment

    result = _writeback(lambda: apply_from_environment(tenant=tenant, write=write, echo=click.echo))
    if result.counts.get("failed"):
        raise click.ClickException(f"{result.counts['failed']} writes failed (see writeback.outbox.error)")


@main.command()
@click.argument("invoice")
@click.option("--write", is_flag=True, help="Write to apps that are not the sandbox too (default there: dry run).")
def resync(invoice: str, write: bool) -> None:
    """Re-plan and re-send one Sequence invoice (and what it waits for: its customer, its items), as Sequence's
    dashboard does for a failed sync."""
    _, result = _writeback(lambda: runtime.resync_invoice(invoice, write=write, echo=click.echo))
    if result.counts.get("failed"):
        raise click.ClickException(f"{result.counts['failed']} writes failed (see writeback.outbox.error)")


def _writeback(run):
    """Runs a write-back verb; a missing warehouse or registry, or a busy warehouse, is one line, not a trace."""
    import duckdb

    from connectors.registry import RegistryError

    try:
        return run()
    except (FileNotFoundError, RegistryError, duckdb.Error) as exc:
        raise click.ClickException(str(exc)) from None


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop a long-running command, even when it was started in the background of a
    script (which starts it with SIGINT ignored, so Python would never raise KeyboardInterrupt)."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _wait_for_interrupt() -> None:
    _stop_on_signals()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

