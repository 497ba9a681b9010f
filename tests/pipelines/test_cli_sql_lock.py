"""`ledgerlink sql` while another process writes the warehouse: it waits for the writer, and past its --wait says
so in one line instead of a traceback."""

import time

import duckdb
from click.testing import CliRunner

from pipelines.cli import main
from tests.assets.test_warehouse import hold_warehouse


def _warehouse(tmp_path):
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table seen as select 42 as answer")
    return path


def test_sql_waits_for_a_writer_then_answers(tmp_path):
    warehouse = _warehouse(tmp_path)
    with hold_warehouse(warehouse, "write", 1.0):
        started = time.monotonic()
        result = CliRunner().invoke(main, ["sql", "select answer from seen", "--warehouse", str(warehouse),
                                           "--format", "csv"])
        assert time.monotonic() - started > 0.6
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["answer", "42"]


def test_sql_past_its_wait_says_a_load_is_writing(tmp_path):
    warehouse = _warehouse(tmp_path)
    with hold_warehouse(warehouse, "write", 30) as writer:
        result = CliRunner().invoke(main, ["sql", "select 1", "--warehouse", str(warehouse), "--wait", "0.3"])
    assert result.exit_code == 1
    assert f"being written by process {writer.pid}" in result.output and "try again" in result.output
    assert "Traceback" not in result.output
