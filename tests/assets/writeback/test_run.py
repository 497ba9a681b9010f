"""`ledgerlink apply` starts without Dagster and dlt (the SIGKILL test starts it dozens of times), and the
Dagster-free copies it reads through agree with the originals."""

import subprocess
import sys

import duckdb

from assets import resources
from assets.reconcile import assets as reconcile
from assets.writeback import inputs, run


def test_the_apply_verb_imports_neither_dagster_nor_dlt():
    probe = ("import sys, pipelines.cli, assets.writeback.run; "
             "print(sorted(m for m in ('dagster', 'dlt', 'pipelines.runtime', 'assets.resources') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_light_copies_agree_with_the_originals():
    assert (run.DEFAULT_WAREHOUSE, run.DEFAULT_REGISTRY, run.DEFAULT_STATE_DIR) == \
        (resources.DEFAULT_WAREHOUSE, resources.DEFAULT_REGISTRY, resources.DEFAULT_STATE_DIR)
    assert (inputs.LINKS_TABLE, inputs.MISMATCHES_TABLE) == (reconcile.LINKS_TABLE, reconcile.MISMATCHES_TABLE)
    assert set(inputs.PLAN_TABLES) <= set(reconcile.UNIFIED_INPUTS)
    with duckdb.connect() as con:
        con.execute("create schema unified")
        con.execute("create table unified.invoices as select 't1' as tenant, 'quickbooks' as app, '7' as id, "
                    "42 as extra")
        light, original = inputs.read_unified(con), reconcile.read_unified(con)
    for table in inputs.PLAN_TABLES:
        assert light[table].collect().equals(original[table].collect()), table
    assert light["invoices"].collect().height == 1 and "extra" not in light["invoices"].collect_schema()
