"""A backfill launched from the real Dagster UI, end to end: `dagster dev` (webserver + daemon, which a backfill
needs) on the sandbox, driven by Debian's Chromium through Playwright (headless), as an operator would.

Extraction partitions are dynamic, one per connection `<tenant>.<app>` (`<app>_connections`,
assets/partitions.py). Covered: the extraction job's asset graph, its
"Materialize all" dialog, where "All" selects every tenant of that app (asserted against the registry) and
"Custom" a subset; the subset (two of three tenants) is launched as a backfill and must succeed on the
backfill page, whose screenshot is kept. Then the instance must hold one successful run per chosen partition
and the warehouse the extracted rows of exactly those tenants (the third stays untouched).

Then a date window (assets/extract/window.py: daily partitions, single-run backfill policy): the `window_backfill`
job's asset graph, "Materialize all", a range typed in the partition picker, one run for the whole range, shown as
succeeded (screenshot kept); the tenant left untouched above then holds exactly its records changed in the window.

Only the subset is executed: every partition is a run of its own (a run worker and, with the multiprocess
executor, a step worker: two interpreters importing the code location) and their steps take the `warehouse`
pool one at a time, so "All" (the same backfill machinery) would add a run, 1-2 min on a contended machine.
Schedules and sensors other than the registry's are stopped first: they would add runs of their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest

from assets.reports.screenshot import CHROMIUM, CHROMIUM_ARGS, can_screenshot
from connectors.registry import dump_registry, load_registry
from connectors.sandbox.demo_data import generate
from connectors.sandbox.launcher import start_sandbox

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(can_screenshot() is not None, reason=f"no browser: {can_screenshot()}")]

REPO = Path(__file__).resolve().parents[2]
APP = "quickbooks"
JOB = f"extract_{APP}"
LOCATION = "pipelines.definitions"  # workspace.yaml: python_module pipelines.definitions
# Generous: on the shared 2-core machine at load 10-15, `dagster dev` was ready after 76-104 s and the
# two-run backfill took 115-255 s (a run's time is mostly importing the code location, twice).
STARTUP_TIMEOUT = float(os.environ.get("LEDGERLINK_UI_STARTUP_TIMEOUT", 240))
BACKFILL_TIMEOUT = float(os.environ.get("LEDGERLINK_UI_BACKFILL_TIMEOUT", 480))

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status partitionNames numPartitions }
    ... on PythonError { message }
  }
}"""
BACKFILLS_QUERY = "query { partitionBackfillsOrError(limit: 5) { ... on PartitionBackfills { results { id } } } }"
AUTOMATIONS_QUERY = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { sensors { id name sensorState { status } } schedules { id name scheduleState { status } } }
    }
  }
}"""
STOP_SENSOR = "mutation($id: String) { stopSensor(id: $id) { __typename } }"
STOP_SCHEDULE = "mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }"
# the one automation the test wants: it keeps the partitions in step with the registry (and agrees with them)
KEEP_RUNNING = {"connection_partitions_sensor"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """`dagster dev` in its own session (STACK.md: it ignores signals in the background of a script), stopped
    through its process group so the webserver, daemon, code server and run workers all go."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=env, start_new_session=True, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.process.poll() is None, f"dagster dev exited:\n{self.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                # the code location must be loaded too, not just the webserver
                body = self.graphql("query { workspaceOrError { ... on Workspace { locationEntries { "
                                    "locationOrLoadError { __typename } } } } }")
                entries = body["workspaceOrError"]["locationEntries"]
                if entries and all(e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] ==
                                   "RepositoryLocation" for e in entries):
                    return time.monotonic() - started
            time.sleep(1)
        raise AssertionError(f"dagster dev not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def stop_automations(self, keep: set[str]) -> list[str]:
        """Stops the schedules and sensors (but `keep`): they would start runs of their own in this instance
        (a sync every 15 minutes, reconciliation after extraction, which also takes the warehouse's write
        lock), and the test needs its backfill's runs alone. Returns what it stopped."""
        stopped = []
        for repo in self.graphql(AUTOMATIONS_QUERY)["repositoriesOrError"]["nodes"]:
            for kind, mutation, state in (("sensors", STOP_SENSOR, "sensorState"),
                                          ("schedules", STOP_SCHEDULE, "scheduleState")):
                for item in repo[kind]:
                    if item["name"] not in keep and item[state]["status"] == "RUNNING":
                        self.graphql(mutation, {"id": item["id"]})
                        stopped.append(item["name"])
        return stopped

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        # whatever is left of the group (children outlive `dagster dev` while they shut down)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Three tenants' QuickBooks sandbox, its registry, a temporary warehouse and DAGSTER_HOME with the
    project's dagster.yaml, the connection partitions added, and `dagster dev` serving all of it."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from assets.partitions import CONNECTION_PARTITIONS
    from pipelines.runtime import DAGSTER_YAML

    work = tmp_path_factory.mktemp("ui_backfill")
    fixtures = work / "fixtures"
    generate(fixtures, invoices=12, seed=3, tenants=3, discrepancies=False, xero=False)
    box = start_sandbox(fixtures, apps=[APP])
    dev = None
    try:
        registry_path = work / "connections.yaml"
        dump_registry(box.registry_document(), registry_path)
        registry = load_registry(registry_path)
        home = work / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
        # what the registry sensor would do on its first tick, done up front so the dialog lists them at once
        instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        instance.add_dynamic_partitions(CONNECTION_PARTITIONS[APP].name, registry.keys(APP))
        env = {**os.environ, **box.environment(), "DAGSTER_HOME": str(home),
               "LEDGERLINK_REGISTRY": str(registry_path), "LEDGERLINK_WAREHOUSE": str(work / "warehouse.duckdb"),
               "LEDGERLINK_STATE_DIR": str(work / "state")}
        dev = DagsterDev(env, work / "dagster_dev.log")
        ready = dev.wait_ready(STARTUP_TIMEOUT)
        print(f"dagster dev ready in {ready:.1f} s on {dev.url}; stopped: {dev.stop_automations(KEEP_RUNNING)}")
        # the first visit's "join the community" modal would cover the page
        dev.graphql("mutation { setNuxSeen }")
        yield {"dev": dev, "instance": instance, "registry": registry, "fixtures": fixtures,
               "warehouse": work / "warehouse.duckdb"}
    finally:
        if dev is not None:
            dev.stop()
        box.stop()


@pytest.fixture
def page(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)  # a contended machine renders slowly
            yield page
        finally:
            browser.close()


def dismiss_modal(page) -> None:
    """Closes a first-visit modal if one shows anyway (the NUX is marked seen through GraphQL)."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count() and skip.first.is_visible():
        skip.first.click()


def choose_partitions(page, dialog, wanted: list[str], unwanted: list[str]) -> None:
    """In "Custom" mode: each partition is a tag with a close icon; missing ones are picked from the list."""
    from playwright.sync_api import expect

    dialog.get_by_role("button", name="Custom", exact=True).click()
    for key in unwanted:
        tag = dialog.get_by_title(key, exact=True)
        if tag.count():
            tag.first.locator("xpath=..").get_by_role("img", name="close").click()
        expect(tag).to_have_count(0)
    for key in wanted:
        tag = dialog.get_by_title(key, exact=True)
        if not tag.count():
            dialog.locator("[aria-haspopup]").first.click()  # the tag selector opens the partition list
            page.get_by_role("menuitem").filter(has_text=key).first.click()
            # close the list by clicking the dialog's title (Escape could close the dialog itself)
            dialog.get_by_text(re.compile(r"^Launch runs", re.I)).first.click()
        expect(tag.first).to_be_visible()


def launched_backfill_id(page, dev: DagsterDev, before: set[str]) -> str:
    """The toast's "View" link (`/runs/b/<id>`); failing that, the newest backfill GraphQL knows."""
    link = page.locator("a[href*='/runs/b/']")
    with contextlib.suppress(Exception):
        link.first.wait_for(timeout=30_000)
        return link.first.get_attribute("href").rstrip("/").rsplit("/", 1)[1]
    ids = [b["id"] for b in dev.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]]
    new = [i for i in ids if i not in before]
    assert new, "no backfill was created"
    return new[0]


def wait_for_success_on_page(page, dev: DagsterDev, backfill_id: str, timeout: float) -> dict:
    """The backfill page until its status reads succeeded; GraphQL says early whether it failed instead."""
    page.goto(f"{dev.url}/runs/b/{backfill_id}")
    # the "Status" field of the page's header (the runs table has a "Succeeded" column too)
    status = page.get_by_text("Status", exact=True).locator("xpath=..")
    succeeded = re.compile(r"\b(Succeeded|Completed|Success)\b", re.I)
    started, last_reload, state = time.monotonic(), time.monotonic(), {}
    while time.monotonic() - started < timeout:
        state = dev.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        assert state.get("status") not in ("FAILED", "CANCELED", "COMPLETED_FAILED", "FAILING", "CANCELING"), \
            f"backfill {backfill_id}: {state}\n{dev.log_tail()}"
        texts: list[str] = []
        with contextlib.suppress(Exception):  # the page may be between renders
            texts = status.all_inner_texts()
        if any(succeeded.search(text) for text in texts):
            state = dev.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
            assert state.get("status") == "COMPLETED_SUCCESS", state
            return state
        if time.monotonic() - last_reload > 20:  # the page polls too, a reload makes sure
            page.reload()
            last_reload = time.monotonic()
        page.wait_for_timeout(3_000)
    raise AssertionError(f"backfill {backfill_id} not shown as succeeded after {timeout:.0f} s: {state}\n"
                         f"{dev.log_tail()}")


def fixture_count(fixtures: Path, tenant: str, collection: str) -> int:
    path = fixtures / tenant / APP / f"{collection}.json"
    return len(orjson.loads(path.read_bytes())) if path.exists() else 0


def test_a_backfill_launched_from_the_asset_graph_succeeds_for_the_chosen_tenants(stack, page, tmp_path):
    dev, registry = stack["dev"], stack["registry"]
    every = sorted(registry.keys(APP))
    assert len(every) == 3, every
    wanted, unwanted = every[:2], every[2:]
    timings: dict[str, float] = {}

    # the job's asset graph: the app's raw tables, each with its connection partitions
    started = time.monotonic()
    page.goto(f"{dev.url}/locations/{LOCATION}/jobs/{JOB}")
    dismiss_modal(page)
    page.get_by_text(re.compile("View as Asset Graph", re.I)).first.wait_for()
    page.get_by_text("invoice", exact=True).first.wait_for()
    page.get_by_role("button", name=re.compile(r"\bMaterialize\b")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(re.compile("Partition selection", re.I)).first.wait_for()

    # "All": every tenant of this app, exactly the registry's connections
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text(re.compile(rf"\b{len(every)} partitions\b")).first.wait_for()
    # then a subset: two tenants of three
    choose_partitions(page, dialog, wanted, unwanted)
    dialog.get_by_text(re.compile(rf"\b{len(wanted)} partitions\b")).first.wait_for()
    page.screenshot(path=str(tmp_path / "launch_dialog.png"))
    before = {b["id"] for b in dev.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]}
    dialog.get_by_role("button", name=re.compile(r"Launch.*backfill", re.I)).click()
    backfill_id = launched_backfill_id(page, dev, before)
    timings["ui"] = time.monotonic() - started

    state = wait_for_success_on_page(page, dev, backfill_id, BACKFILL_TIMEOUT)
    timings["backfill"] = time.monotonic() - started - timings["ui"]
    assert sorted(state["partitionNames"]) == wanted
    page.get_by_text(re.compile(rf"\b{len(wanted)} partitions\b")).first.wait_for()
    shot = tmp_path / "backfill_succeeded.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, len(data)
    if os.environ.get("LEDGERLINK_UI_BACKFILL_SCREENSHOT"):  # a copy for people to look at
        target = Path(os.environ["LEDGERLINK_UI_BACKFILL_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    # the instance: one successful run per chosen partition, all in this backfill
    from dagster import DagsterRunStatus, RunsFilter

    runs = stack["instance"].get_runs(filters=RunsFilter.for_backfill(backfill_id))
    assert sorted(r.tags.get("dagster/partition") for r in runs) == wanted
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    assert all(r.job_name == JOB for r in runs)

    # the warehouse: the chosen tenants' rows as the sandbox serves them, nothing of the other tenant
    with duckdb.connect(str(stack["warehouse"]), read_only=True) as con:
        def count(table: str, tenant: str) -> int:
            return con.execute(f"select count(*) from raw_{APP}.{table} where tenant = ?", [tenant]).fetchone()[0]

        for key in every:
            tenant = key.rsplit(".", 1)[0]
            for collection in ("invoice", "customer", "item"):
                expected = fixture_count(stack["fixtures"], tenant, collection) if key in wanted else 0
                assert count(collection, tenant) == expected, (key, collection)
            if key in wanted:
                assert count("invoice", tenant) > 0
    print(f"UI backfill timings: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}")


# ----------------------------------------------------------------------------------------------------------
# A date-window re-read (assets/extract/window.py), launched the same way
# ----------------------------------------------------------------------------------------------------------

WINDOW_JOB = "window_backfill"
WINDOW_FIRST, WINDOW_LAST = "2025-06-01", "2025-06-15"  # the demo data's changes fall in May-June 2025
WINDOW_COLLECTIONS = ("invoice", "customer", "item", "payment", "creditmemo", "account")


def changed_in_window(fixtures: Path, tenant: str, collection: str) -> int:
    """Records of a fixture whose MetaData.LastUpdatedTime (UTC) falls on a day of the window."""
    from datetime import UTC, datetime

    path = fixtures / tenant / APP / f"{collection}.json"
    records = orjson.loads(path.read_bytes()) if path.exists() else []
    days = [datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"]).astimezone(UTC).date().isoformat()
            for r in records]
    return sum(WINDOW_FIRST <= day <= WINDOW_LAST for day in days)


def launch_window_backfill(page, dev: DagsterDev, tmp_path: Path, days: int) -> str:
    """The window job's asset graph -> "Materialize all" -> the range typed in the partition picker -> launch."""
    from playwright.sync_api import expect

    page.goto(f"{dev.url}/locations/{LOCATION}/jobs/{WINDOW_JOB}")
    dismiss_modal(page)
    page.get_by_text(f"window_{APP}", exact=True).first.wait_for()
    page.get_by_role("button", name=re.compile(r"\bMaterialize\b")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(re.compile("Partition selection", re.I)).first.wait_for()
    # the dialog offers only the last 90 days at first; the window may be older
    show_all = dialog.get_by_text("Show all partitions", exact=True)
    with contextlib.suppress(Exception):  # the notice comes with the partition keys, or not at all
        show_all.first.wait_for(timeout=20_000)
    if show_all.count():
        show_all.first.click()
        expect(show_all).to_have_count(0)
    # the partition picker's text input takes ranges as Dagster writes them: [first...last]
    range_input = dialog.locator("input[data-testid='dimension-range-input'], "
                                 "[data-testid='dimension-range-input'] input")
    if not range_input.count():
        range_input = dialog.locator("input[type='text'], input:not([type])")
    range_input.first.fill(f"[{WINDOW_FIRST}...{WINDOW_LAST}]")
    range_input.first.press("Enter")
    dialog.get_by_text(re.compile(rf"\b{days} partitions\b")).first.wait_for()
    page.screenshot(path=str(tmp_path / "window_launch_dialog.png"))
    before = {b["id"] for b in dev.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]}
    dialog.get_by_role("button", name=re.compile(r"Launch.*backfill", re.I)).click()
    return launched_backfill_id(page, dev, before)


def test_a_date_window_backfill_launched_from_the_asset_graph_rereads_that_window(stack, page, tmp_path):
    """The `window_backfill` job's asset graph (one window asset per app), "Materialize all", a date range typed in
    the partition picker, launched as ONE run (single-run backfill policy), shown as succeeded. The tenant the first
    test left empty then holds exactly its records changed within the window; the sync history has the window."""
    from datetime import UTC, datetime

    from dagster import DagsterRunStatus, RunsFilter

    dev, registry = stack["dev"], stack["registry"]
    every = sorted(registry.keys(APP))
    days = 15
    started = time.monotonic()
    try:
        backfill_id = launch_window_backfill(page, dev, tmp_path, days)
    except Exception:  # what the page showed, for whoever reads the failure
        page.screenshot(path=str(tmp_path / "window_failure.png"), full_page=True)
        (tmp_path / "window_failure.html").write_text(page.content())
        print(f"page at failure: {tmp_path / 'window_failure.png'}")
        raise
    ui = time.monotonic() - started

    state = wait_for_success_on_page(page, dev, backfill_id, BACKFILL_TIMEOUT)
    assert state["numPartitions"] == days, state
    shot = tmp_path / "window_backfill_succeeded.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, len(data)
    if os.environ.get("LEDGERLINK_UI_WINDOW_SCREENSHOT"):  # a copy for people to look at
        target = Path(os.environ["LEDGERLINK_UI_WINDOW_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    # single-run policy: the whole range is one run
    runs = stack["instance"].get_runs(filters=RunsFilter.for_backfill(backfill_id))
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS, [(r.run_id, r.status) for r in runs]
    assert (runs[0].tags.get("dagster/asset_partition_range_start"),
            runs[0].tags.get("dagster/asset_partition_range_end")) == (WINDOW_FIRST, WINDOW_LAST)

    with duckdb.connect(str(stack["warehouse"]), read_only=True) as con:
        # the tenant the first test did not extract: exactly what changed in the window, nothing else
        untouched = every[-1].rsplit(".", 1)[0]
        expected = {c: changed_in_window(stack["fixtures"], untouched, c) for c in WINDOW_COLLECTIONS}
        assert 0 < sum(expected.values()) < sum(fixture_count(stack["fixtures"], untouched, c)
                                                for c in WINDOW_COLLECTIONS)
        for collection, count in expected.items():
            found = con.execute(f"select count(*) from raw_{APP}.{collection} where tenant = ?",
                                [untouched]).fetchone()[0]
            assert found == count, (collection, found, count)
        history = con.execute("select connection, status, window_start, window_end from ops.sync_runs "
                              "where run_id = ?", [runs[0].run_id]).fetchall()
    assert sorted(h[0] for h in history) == every
    assert {h[1] for h in history} == {"success"}
    assert {(h[2], h[3]) for h in history} == {(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 16, tzinfo=UTC))}
    print(f"UI window backfill: ui {ui:.1f} s, backfill {time.monotonic() - started - ui:.1f} s")
