import duckdb
from click.testing import CliRunner

from pipelines.cli import main


def test_sql_reads_the_warehouse_in_each_format(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema raw_quickbooks; create table raw_quickbooks.invoice (tenant varchar, total_amt decimal(38,9))")
        con.execute("insert into raw_quickbooks.invoice values ('acme', 12.50), ('acme', 1.25), ('globex', 3)")
    runner = CliRunner()
    query = "select tenant, sum(total_amt) as total from raw_quickbooks.invoice group by 1 order by 1"
    table = runner.invoke(main, ["sql", query, "--warehouse", str(warehouse)])
    assert table.exit_code == 0, table.output
    assert "acme" in table.output and "13.75" in table.output
    csv = runner.invoke(main, ["sql", query, "--warehouse", str(warehouse), "--format", "csv"])
    assert csv.output.splitlines() == ["tenant,total", "acme,13.750000000", "globex,3.000000000"]


def test_sql_on_a_missing_warehouse_says_how_to_make_one(tmp_path):
    result = CliRunner().invoke(main, ["sql", "select 1", "--warehouse", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "make demo" in result.output


def test_a_bad_query_is_a_one_line_error_naming_the_problem(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    duckdb.connect(str(warehouse)).close()
    result = CliRunner().invoke(main, ["sql", "select * from raw_quickbooks.nope", "--warehouse", str(warehouse)])
    assert result.exit_code == 1 and "nope" in result.output and "Traceback" not in result.output
