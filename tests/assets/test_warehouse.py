"""The single-writer DuckDB warehouse under real concurrency: another PROCESS holds the file's lock (DuckDB's lock
is per process, so only a subprocess shows it) while this one writes, through `connect` and through a dlt load."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from assets.extract.loading import make_pipeline
from assets.warehouse import LOCK_WAIT_ENV, WarehouseBusy, connect

_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
print("holding", flush=True)
time.sleep(float(sys.argv[3]))
con.close()
"""


@contextlib.contextmanager
def hold_warehouse(path: Path, mode: str, seconds: float) -> Iterator[subprocess.Popen]:
    """Another process opens the warehouse ("read" or "write") and keeps it for `seconds`; yields once it holds."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), mode, str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table seen (n integer); insert into seen values (1)")
    return path


def test_a_writer_waits_for_a_reader_in_another_process_then_writes(warehouse: Path):
    with hold_warehouse(warehouse, "read", 1.5):
        started = time.monotonic()
        with connect(warehouse) as con:
            waited = time.monotonic() - started
            con.execute("insert into seen values (2)")
    assert waited > 1.0  # the lock came free only when the reader let go
    with connect(warehouse, read_only=True) as con:
        assert con.execute("select count(*) from seen").fetchone() == (2,)


def test_a_dlt_load_waits_for_a_reader_in_another_process(warehouse: Path, tmp_path: Path):
    pipeline = make_pipeline("quickbooks", "acme", warehouse, tmp_path / "state")
    with hold_warehouse(warehouse, "read", 1.5):
        # without waiting, dlt's first open (its state sync) fails on the reader's lock
        info = pipeline.run([{"tenant": "acme", "id": "1"}, {"tenant": "acme", "id": "2"}], table_name="invoice")
    assert not info.has_failed_jobs
    with connect(warehouse, read_only=True) as con:
        assert con.execute("select count(*) from raw_quickbooks.invoice").fetchone() == (2,)


def test_past_the_bound_a_writer_says_who_holds_the_warehouse(warehouse: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(LOCK_WAIT_ENV, "0.4")
    pipeline = make_pipeline("quickbooks", "acme", warehouse, tmp_path / "state")
    with hold_warehouse(warehouse, "read", 30) as reader:
        started = time.monotonic()
        with pytest.raises(WarehouseBusy) as busy:
            with connect(warehouse):
                pass
        assert time.monotonic() - started < 5
        with pytest.raises(PipelineStepFailed) as failed:
            pipeline.run([{"tenant": "acme", "id": "1"}], table_name="invoice")
    for message in (str(busy.value), str(failed.value)):
        assert f"process {reader.pid}" in message and "stayed locked" in message and LOCK_WAIT_ENV in message


def test_a_reader_waits_for_a_writer_in_another_process(warehouse: Path):
    with hold_warehouse(warehouse, "write", 1.0):
        started = time.monotonic()
        with connect(warehouse, read_only=True) as con:
            assert time.monotonic() - started > 0.6
            assert con.execute("select count(*) from seen").fetchone() == (1,)
