"""Benchmark: reconcile N synthetic invoice pairs (Sequence vs QuickBooks) field by field.

Side by side, in one run, from the same two parquet files per size:
  ledgerlink   the reconcile step's own code (assets/reconcile/mismatches.py), called as `_document_mismatches`
               calls it, no bench-only path: `_pairs` checks each link (pair, conflict, dangling; records found by
               row number on one hash of the keys, checked on the real keys), `field_mismatches` compares the
               pairs by those row numbers, reading each compared column when its field is compared (`columnwise`,
               its default), and the records on one side only are `_pairs`' unlinked rows; the files scanned, the
               keys first, never both inputs whole
  DuckDB SQL   plain SQL: full outer join on the link, one UNION ALL branch per field, IS DISTINCT FROM on
               normalised values, reading the parquet files directly with all threads
  DuckDB SQL + pre-check   the same, given the shortcut ledgerlink's diff takes (only pairs whose raw values
               differ are normalised): for reference, so the comparison is of engines as well as of algorithms
  pandas       merge(how="outer", indicator=True), then one vectorised comparison per field (Arrow dtypes)
All apply the reconciliation's rules: text trimmed, inner whitespace collapsed, empty = null; e-mails case-folded;
amounts at each side's currency's minor units (CLDR via babel: 2 digits for GBP/EUR/USD, 0 for JPY); two nulls
agree, one null differs; values reported as the reconciliation prints them.

Each contender runs in its own fresh process (--repeat times, interleaved; the fastest run is reported, the
machine may be shared): wall and CPU seconds as it timed itself (CPU: user + system, every thread), peak RSS as the
kernel's high-water mark for that process (wait4), engine imports excluded. Reading the two files alone is
measured in another process and reported apart. Every contender must report exactly the differences the generator
planted (per field) and the very same rows (key, field, both values as text), or the run fails before printing a
figure.

Same start for every contender: right before each measured process the two files are read once through (by the
parent, outside every timing), so each begins with its inputs in the page cache. Without it a later contender
could read from disk: this VM's kernel pages out file pages left idle for about a minute (DAMON proactive
reclaim), i.e. during any long contender before it. The JSON records for each run the share of the files cached
at its start, its major page faults (reads from disk), its system CPU seconds and the load average. At 10M pairs
the system share is mostly page faults on fresh memory (each engine holds several GiB; in this VM a fault on a
page the host has taken back costs more than on bare metal): all engines pay it, in proportion to their memory.

Data (Polars expressions, seeded, no numpy): N pairs linked 1:1 by the QuickBooks id; ~1 % only in Sequence
(unlinked), ~1 % only in QuickBooks, ~5 % differing in one field, spread over every compared field. Noise that
must not count: e-mail case and surrounding whitespace, doubled spaces in memos, sub-minor-unit digits on the
Decimal(38, 9) amounts (at most 0.0004, never a rounding tie, so half-even and half-away rounding agree).

    make bench                                            # 1M and 10M pairs
    python -m tests.bench.bench_reconcile --pairs 10000   # a quick look (seconds)
    python -m tests.bench.bench_reconcile --repeat 3      # best of three per contender
    python -m tests.bench.bench_reconcile --pairs 10000000 --contenders ledgerlink duckdb pandas --pandas-limit 1500
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

MONEY = pl.Decimal(38, 9)
TENANTS = 8
CONTENDERS = ["ledgerlink", "duckdb", "duckdb_precheck", "pandas"]
LABELS = {"ledgerlink": "ledgerlink (Polars)", "duckdb": "DuckDB SQL", "duckdb_precheck": "DuckDB SQL + pre-check",
          "pandas": "pandas merge"}
SHORT = {"ledgerlink": "ours", "duckdb": "DuckDB", "duckdb_precheck": "DuckDB+pre", "pandas": "pandas"}
AMOUNTS = ["net_total", "gross_total", "balance"]
FIELDS = ["number", "customer_id", "currency", "invoice_date", "due_date", "memo", "billing_email", *AMOUNTS, "status"]
# the two record-level kinds, counted beside the fields
MISSING = ["missing_in_app", "missing_in_sequence"]
KEY = ["tenant", "sequence_id", "app_id"]
RESULT_COLUMNS = [*KEY, "field", "sequence_value", "app_value"]
CHUNK = 1_000_000  # pairs generated per step, so generating 10M pairs stays within a couple of GiB
PANDAS_LIMIT_SECONDS = 600


def currency_scales() -> dict[str, int]:
    """Minor units per currency, from CLDR (babel) as the reconciliation takes them."""
    from babel.numbers import get_currency_precision

    return {code: get_currency_precision(code) for code in ("GBP", "EUR", "USD", "JPY")}


# ---------------------------------------------------------------------------------------------------- the data


def _draw(seed: int, salt: int) -> pl.Expr:
    """A pseudo-random u64 per pair: Polars' seeded hash of the pair index, so the data is the same on every
    run with the locked Polars (and needs no numpy)."""
    return pl.col("i").hash(seed * 1_000_003 + salt)


def _money(minor: pl.Expr, scale: pl.Expr, nanos: pl.Expr | int = 0) -> pl.Expr:
    """An amount in minor units at `scale` (plus noise in 1e-9 units) as Decimal(38, 9), built from integers so
    it is exact."""
    units = minor * pl.lit(10, pl.Int64).pow(9 - scale) + nanos
    return units.cast(MONEY) / pl.lit(1_000_000_000).cast(MONEY)


def _truth(start: int, stop: int, pairs: int, seed: int) -> pl.DataFrame:
    """Pairs start..stop-1 as they should be on both sides, with each pair's role and planted field."""
    scales = currency_scales()
    bucket = _draw(seed, 3) % 100
    currency = (pl.when(bucket < 5).then(pl.lit("JPY")).when(bucket < 40).then(pl.lit("GBP"))
                .when(bucket < 70).then(pl.lit("EUR")).otherwise(pl.lit("USD")))
    customer = (_draw(seed, 2) % max(pairs // 10, 1)).cast(pl.String).str.zfill(8)
    status = _draw(seed, 8) % 10
    role = _draw(seed, 9) % 100
    pick = pl.lit(FIELDS).list.get((_draw(seed, 10) % len(FIELDS)).cast(pl.Int64))
    return pl.LazyFrame().select(i=pl.int_range(start, stop, dtype=pl.Int64)).with_columns(
        tenant=pl.format("tenant_{}", _draw(seed, 1) % TENANTS),
        id=pl.format("inv_{}", pl.col("i").cast(pl.String).str.zfill(10)),
        app_id=(pl.col("i") + 1000).cast(pl.String),  # QuickBooks ids are numeric strings
        number=pl.format("INV-{}", pl.col("i").cast(pl.String).str.zfill(8)),
        customer_id=pl.format("cus_{}", customer),
        currency=currency,
        invoice_date=pl.lit(dt.date(2024, 1, 1)) + pl.duration(days=_draw(seed, 4) % 730),
        memo=pl.when(_draw(seed, 6) % 4 == 0).then(None)
        .otherwise(pl.format("Thank you for your business (order {})", pl.col("i"))),
        billing_email=pl.format("billing.{}@customer-{}.example.com", customer, _draw(seed, 1) % TENANTS),
        net_total_minor=(_draw(seed, 7) % 500_000 + 100).cast(pl.Int64),
        status=pl.when(status < 6).then(pl.lit("OPEN")).when(status < 9).then(pl.lit("PAID"))
        .otherwise(pl.lit("VOID")),
        role=pl.when(role == 0).then(pl.lit("sequence_only")).when(role == 1).then(pl.lit("app_only"))
        .when(role < 7).then(pl.lit("differs")).otherwise(pl.lit("clean")),
        # a new currency on a JPY invoice would also move its amounts' minor unit: plant the memo instead
        planted=pl.when(role.is_between(2, 6)).then(
            pl.when((pick == "currency") & (currency == "JPY")).then(pl.lit("memo")).otherwise(pick)),
    ).with_columns(
        scale=pl.col("currency").replace_strict(scales, return_dtype=pl.Int64),
        due_date=pl.col("invoice_date") + pl.duration(days=15 * (_draw(seed, 5) % 3 + 1)),
        gross_total_minor=pl.col("net_total_minor") + pl.col("net_total_minor") * 20 // 100,
    ).with_columns(
        balance_minor=pl.when(pl.col("status") == "OPEN").then(pl.col("gross_total_minor")).otherwise(0),
    ).collect()


def _sequence_side(truth: pl.DataFrame) -> pl.DataFrame:
    return truth.lazy().filter(pl.col("role") != "app_only").select(
        "tenant", pl.lit("sequence").alias("app"), "id",
        # the link, as reconcile.links has it; an unlinked Sequence invoice has none
        pl.when(pl.col("role") != "sequence_only").then(pl.col("app_id")).alias("app_id"),
        "number", "customer_id", "currency", "invoice_date", "due_date", "memo", "billing_email",
        *(_money(pl.col(f"{a}_minor"), pl.col("scale")).alias(a) for a in AMOUNTS),
        "status",
    ).collect()


def _quickbooks_side(truth: pl.DataFrame, seed: int) -> pl.DataFrame:
    def planted(field: str) -> pl.Expr:
        return (pl.col("planted") == field).fill_null(False)

    def changed(field: str, value: pl.Expr) -> pl.Expr:
        return pl.when(planted(field)).then(value).otherwise(pl.col(field)).alias(field)

    def amount(field: str) -> pl.Expr:
        # one minor unit more when planted; on 1 in 10 rows up to 0.0004 of noise either way, far from a tie
        noise = pl.when(_draw(seed, 12) % 10 == 0).then(
            (_draw(seed, 13 + AMOUNTS.index(field)) % 400_000 + 1).cast(pl.Int64)
            * pl.when(_draw(seed, 17) % 2 == 0).then(1).otherwise(-1)).otherwise(0)
        return _money(pl.col(f"{field}_minor") + planted(field).cast(pl.Int64), pl.col("scale"), noise).alias(field)

    email = changed("billing_email", pl.format("someone.else.{}", pl.col("billing_email")))
    memo = changed("memo", pl.coalesce(pl.format("{} (edited)", pl.col("memo")), pl.lit("Edited memo")))
    return truth.lazy().filter(pl.col("role") != "sequence_only").select(
        "tenant", pl.lit("quickbooks").alias("app"), pl.col("app_id").alias("id"),
        changed("number", pl.format("{}-B", pl.col("number"))),
        changed("customer_id", pl.format("{}x", pl.col("customer_id"))),
        changed("currency", pl.col("currency").replace({"GBP": "EUR", "EUR": "USD", "USD": "GBP"})),
        changed("invoice_date", pl.col("invoice_date") + pl.duration(days=1)),
        changed("due_date", pl.col("due_date") + pl.duration(days=1)),
        # noise, not a difference: a fifth of the memos with doubled inner spaces and a trailing one
        pl.when(_draw(seed, 18) % 5 == 0).then(pl.format("{} ", memo.str.replace_all(" ", "  ", literal=True)))
        .otherwise(memo).alias("memo"),
        # noise, not a difference: a third of the addresses upper-cased inside stray whitespace
        pl.when(_draw(seed, 11) % 3 == 0).then(pl.format("  {} ", email.str.to_uppercase())).otherwise(email)
        .alias("billing_email"),
        *(amount(a) for a in AMOUNTS),
        changed("status", pl.col("status").replace({"OPEN": "PAID", "PAID": "OPEN", "VOID": "OPEN"})),
    ).sort(pl.col("id").hash(seed)).collect()  # QuickBooks lists in its own order


def generate(pairs: int, seed: int, sequence_path: Path, quickbooks_path: Path) -> dict[str, int]:
    """Write both sides to parquet; return how many mismatch rows each field (and each missing kind) must have."""
    import pyarrow.parquet as pq

    expected = dict.fromkeys([*FIELDS, *MISSING], 0)
    writers: dict[Path, pq.ParquetWriter] = {}
    try:
        for start in range(0, pairs, CHUNK):
            truth = _truth(start, min(start + CHUNK, pairs), pairs, seed)
            sides = ((sequence_path, _sequence_side(truth)), (quickbooks_path, _quickbooks_side(truth, seed)))
            for path, side in sides:
                table = side.to_arrow()
                if path not in writers:
                    writers[path] = pq.ParquetWriter(path, table.schema, compression="zstd")
                writers[path].write_table(table, row_group_size=256_000)
            for field, count in truth.group_by("planted").len().drop_nulls().iter_rows():
                expected[field] += count
            expected["missing_in_app"] += truth["role"].eq("sequence_only").sum()
            expected["missing_in_sequence"] += truth["role"].eq("app_only").sum()
    finally:
        for writer in writers.values():
            writer.close()
    return expected


# ----------------------------------------------------------------------------------------------- the contenders
# Each goes from the two parquet files to the mismatch rows in memory, under the reconciliation's rules (what
# assets/reconcile/mismatches.py does for these compare kinds): text trimmed with inner whitespace collapsed and
# empty as null; e-mails also case-folded; amounts as whole minor units of each side's currency; two nulls agree,
# one null differs. Values are reported as the reconciliation prints them: cleaned text (e-mails keep their case),
# amounts at minor units ("1834.20", JPY "1200"), ISO dates. A record on one side only is one row whose field is
# its kind (missing_in_app / missing_in_sequence), without values.

APP = "quickbooks"
COMPARE = {"number": "text", "customer_id": "code", "currency": "code", "invoice_date": "date", "due_date": "date",
           "memo": "text", "billing_email": "text_ci", "net_total": "money", "gross_total": "money",
           "balance": "money", "status": "code"}


def ledgerlink_specs() -> list:
    from assets.reconcile.mismatches import FieldSpec

    labels = {"number": "invoice number", "customer_id": "customer", "invoice_date": "invoice date",
              "due_date": "due date", "billing_email": "customer email", "net_total": "net total",
              "gross_total": "total", "balance": "balance"}
    status = {"kind": "status_differs", "action": "review"}
    return [FieldSpec(field, labels.get(field, field), field, field, compare=compare,
                      **(status if field == "status" else {}))
            for field, compare in COMPARE.items()]


def run_ledgerlink(sequence_path: Path, quickbooks_path: Path) -> pl.DataFrame:
    """As the reconcile step runs it (assets/reconcile/mismatches.py: `_document_mismatches`), from the two files:
    each link of reconcile.links checked by `_pairs` (a pair, a conflict or dangling; its records found by row
    number on a hash of the keys, checked on the real keys), `field_mismatches` over the pairs' row numbers
    (`rows`, reading each compared column when its field is compared: `columnwise`, the default), and the records
    on one side only as `_pairs` gives them (`unlinked_sequence`, `unlinked_app`: the rows no link to a present
    twin names), every column of reconcile.mismatches built (reasons included). The subject naming an invoice in
    reasons is an expression evaluated on the rows that differ (and on the unpaired ones), as the reconciliation
    passes it: not a column computed for every invoice up front. What the reconciliation does beyond a diff (status
    rules, match candidates, lines) is not part of it, as the peers do none of it."""
    from assets.reconcile.mismatches import _document_subject, _pairs, field_mismatches

    # the subject naming an invoice in reasons, as the reconciliation words it ("Invoice INV-00000042")
    subject = _document_subject("invoice")
    # Both files scanned: the keys (and the number naming an invoice) read first, every compared column when its
    # field is compared (projection pushdown decodes each column once), so neither input is ever held whole, as
    # DuckDB streams them. The keys' rows are the files' rows, in order: row numbers into one are into the other.
    sequence_scan, app_scan = pl.scan_parquet(sequence_path), pl.scan_parquet(quickbooks_path)
    sequence_keys = sequence_scan.select("tenant", "id", "app_id", "number").collect()
    app_keys = app_scan.select("tenant", "app", "id").collect()
    sequence = pl.concat([sequence_keys.lazy(), sequence_scan.drop(sequence_keys.columns)], how="horizontal")
    app = pl.concat([app_keys.lazy(), app_scan.drop(app_keys.columns)], how="horizontal")
    # reconcile.links for these invoices (what Sequence stores: its linkedServices)
    links = sequence_keys.lazy().filter(pl.col("app_id").is_not_null()).select(
        "tenant", pl.lit(APP).alias("app"), pl.lit("invoice").alias("entity"), pl.col("id").alias("sequence_id"),
        "app_id", pl.lit("linked_service").alias("method"))
    pairs = _pairs(links, "invoice", sequence_keys.lazy(), app_keys.lazy(), subject, APP)
    fields = field_mismatches(sequence, app, pairs.pairs, ledgerlink_specs(), entity="invoice", subject=subject,
                              rows=pairs.index)

    def one_side(frame: pl.LazyFrame, kind: str, sequence_id: pl.Expr, app_id: pl.Expr, reason: pl.Expr):
        none = pl.lit(None, pl.String)
        return frame.select(
            "tenant", pl.lit(APP).alias("app"), pl.lit("invoice").alias("entity"), sequence_id.alias("sequence_id"),
            app_id.alias("app_id"), pl.lit(kind).alias("kind"), none.alias("field"), none.alias("sequence_value"),
            none.alias("app_value"), pl.lit("review").alias("proposed_action"), reason.alias("reason"))

    return pl.concat([
        fields, pairs.rows,  # link conflicts and dangling links (none here)
        one_side(pairs.unlinked_sequence, "missing_in_app", pl.col("id"),
                 pl.lit(None, pl.String), pl.concat_str([subject, pl.lit(" is not in QuickBooks.")])),
        one_side(pairs.unlinked_app, "missing_in_sequence", pl.lit(None, pl.String),
                 pl.col("id"),
                 pl.concat_str([pl.lit("QuickBooks invoice "), pl.col("id"), pl.lit(" is not in Sequence.")])),
    ], how="vertical").collect()


def _duckdb_sql(sequence_path: Path, quickbooks_path: Path, precheck: bool = False) -> str:
    """The plain diff: normalised values computed once per pair (in the CTE, which DuckDB materialises once),
    compared per field. With `precheck`, the shortcut ledgerlink's diff takes: a branch normalises only the pairs
    whose raw values differ (equal raw values cannot differ once normalised)."""
    scales = currency_scales()

    def digits(currency: str) -> str:
        return f"CASE {currency} " + " ".join(f"WHEN '{c}' THEN {d}" for c, d in scales.items()) + " ELSE 2 END"

    def per_scale(column: str, currency: str, each: str) -> str:
        # round() wants a constant scale, so one branch per scale in use
        cases = " ".join(f"WHEN {d} THEN {each.format(x=f'round({column}, {d})', d=d)}"
                         for d in sorted(set(scales.values())))
        return f"CASE {digits(currency)} {cases} END"

    def cleaned(column: str) -> str:
        return f"nullif(trim(regexp_replace({column}, '\\s+', ' ', 'g')), '')"

    def compared(field: str, side: str) -> str:
        column, currency = f"{side}{field}", f"{side}currency"
        match COMPARE[field]:
            case "text" | "code":
                return cleaned(column)
            case "text_ci":
                return f"lower({cleaned(column)})"
            case "money":
                # each branch cast back to one type: CASE would unify DECIMAL(38,0) and (38,2) to (38,0) and
                # silently drop the cents
                return per_scale(column, currency, "{x}::DECIMAL(38, 9)")
            case _:
                return column

    def shown(field: str, side: str) -> str:
        column, currency = f"{side}{field}", f"{side}currency"
        match COMPARE[field]:
            case "text" | "code" | "text_ci":
                return cleaned(column)
            case "money":
                return per_scale(column, currency, "{x}::DECIMAL(38, {d})::VARCHAR")
            case _:
                return f"{column}::VARCHAR"

    # the pairs carry each side's raw values (display text is made for differing rows only) and, for the plain
    # diff, the normalised ones
    columns = [f"s.{c} AS s_{c}, q.{c} AS q_{c}" for c in sorted({"currency", *FIELDS})]
    if not precheck:
        columns += [f"{compared(f, 's.')} AS s_{f}_cmp, {compared(f, 'q.')} AS q_{f}_cmp" for f in FIELDS]

    def differs(f: str) -> str:
        if precheck:
            return f"s_{f} IS DISTINCT FROM q_{f} AND {compared(f, 's_')} IS DISTINCT FROM {compared(f, 'q_')}"
        return f"s_{f}_cmp IS DISTINCT FROM q_{f}_cmp"

    branches = "\n    UNION ALL ".join(
        f"SELECT tenant, sequence_id, app_id, '{f}', {shown(f, 's_')}, {shown(f, 'q_')} FROM pairs "
        f"WHERE linked AND {differs(f)}" for f in FIELDS)
    column_list = ",\n      ".join(columns)
    return f"""
    WITH pairs AS (
      SELECT coalesce(s.tenant, q.tenant) AS tenant, s.id AS sequence_id, q.id AS app_id,
             s.id IS NOT NULL AND q.id IS NOT NULL AS linked, q.id IS NULL AS missing_in_app,
             s.id IS NULL AS missing_in_sequence,
      {column_list}
      FROM read_parquet('{sequence_path}') AS s
      FULL OUTER JOIN read_parquet('{quickbooks_path}') AS q ON s.tenant = q.tenant AND s.app_id = q.id
    )
    SELECT tenant, sequence_id, app_id, 'missing_in_app' AS field, NULL::VARCHAR AS sequence_value,
           NULL::VARCHAR AS app_value FROM pairs WHERE missing_in_app
    UNION ALL SELECT tenant, sequence_id, app_id, 'missing_in_sequence', NULL, NULL FROM pairs WHERE missing_in_sequence
    UNION ALL {branches}
    """


def run_duckdb(sequence_path: Path, quickbooks_path: Path, precheck: bool = False):
    import duckdb

    # in memory, every core, the files read by DuckDB's own parquet reader; DuckDB's planner materialises the
    # CTE once (forcing MATERIALIZED was slower, and so was normalising inside each branch without the pre-check)
    with duckdb.connect() as con:
        return con.sql(_duckdb_sql(sequence_path, quickbooks_path, precheck)).to_arrow_table()


def run_duckdb_precheck(sequence_path: Path, quickbooks_path: Path):
    return run_duckdb(sequence_path, quickbooks_path, precheck=True)


def _read_pandas(path: Path):
    import pandas as pd

    # Arrow dtypes: Decimal(38, 9) stays decimal and vectorised (the numpy default would hold decimal.Decimal
    # objects, which only per-row Python can round)
    return pd.read_parquet(path, dtype_backend="pyarrow")


def run_pandas(sequence_path: Path, quickbooks_path: Path):
    import pandas as pd
    import pyarrow as pa

    scales = currency_scales()
    both = _read_pandas(sequence_path).merge(
        _read_pandas(quickbooks_path), how="outer", left_on=["tenant", "app_id"], right_on=["tenant", "id"],
        suffixes=("_s", "_q"), indicator=True)
    # the key as the other contenders report it: both sides' own ids (the link column is the QuickBooks id)
    both = both.drop(columns="app_id").rename(columns={"id_s": "sequence_id", "id_q": "app_id"}, errors="raise")
    text = pd.ArrowDtype(pa.string())

    def per_scale(amount, currency, each):
        scale = currency.map(scales)
        out = pd.Series(None, index=amount.index, dtype=each(amount, 2).dtype)
        for d in sorted(set(scales.values())):
            out = out.mask(scale == d, each(amount, d))
        return out

    def cleaned(column):
        column = column.str.replace(r"\s+", " ", regex=True).str.strip()
        return column.mask(column == "")

    def compared(field, side):
        column = both[f"{field}_{side}"]
        match COMPARE[field]:
            case "text" | "code":
                return cleaned(column)
            case "text_ci":
                return cleaned(column).str.lower()
            case "money":
                return per_scale(column, both[f"currency_{side}"], lambda x, d: x.round(d))
            case _:
                return column

    def shown(field, side, rows):
        column = both.loc[rows, f"{field}_{side}"]
        match COMPARE[field]:
            case "text" | "code" | "text_ci":
                return cleaned(column)
            case "money":
                return per_scale(column, both.loc[rows, f"currency_{side}"],
                                 lambda x, d: x.round(d).astype(pd.ArrowDtype(pa.decimal128(38, d))).astype(text))
            case _:
                return column.astype(text)

    def no_value(rows):
        return pd.Series(None, index=rows.index, dtype=text)

    parts = [both.loc[both["_merge"] == side, KEY].assign(field=kind, sequence_value=no_value, app_value=no_value)
             for side, kind in (("left_only", "missing_in_app"), ("right_only", "missing_in_sequence"))]
    linked = both["_merge"] == "both"
    for field in FIELDS:
        left, right = compared(field, "s"), compared(field, "q")
        # IS DISTINCT FROM: one null differs, two nulls agree
        differs = linked & (left != right).fillna(True).astype(bool) & ~(left.isna() & right.isna())
        parts.append(both.loc[differs, KEY].assign(
            field=field, sequence_value=shown(field, "s", differs), app_value=shown(field, "q", differs)))
    return pd.concat(parts, ignore_index=True)[RESULT_COLUMNS]


def load_ledgerlink(sequence_path: Path, quickbooks_path: Path) -> None:
    pl.read_parquet(sequence_path), pl.read_parquet(quickbooks_path)


def load_duckdb(sequence_path: Path, quickbooks_path: Path) -> None:
    import duckdb

    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE s AS FROM read_parquet('{sequence_path}')")
        con.execute(f"CREATE TABLE q AS FROM read_parquet('{quickbooks_path}')")


def load_pandas(sequence_path: Path, quickbooks_path: Path) -> None:
    _read_pandas(sequence_path), _read_pandas(quickbooks_path)


ENGINE_MODULES = {"ledgerlink": ["assets.reconcile.mismatches", "babel.numbers"],
                  "duckdb": ["duckdb", "pyarrow", "babel.numbers"],
                  "duckdb_precheck": ["duckdb", "pyarrow", "babel.numbers"],
                  "pandas": ["pandas", "pyarrow", "babel.numbers"]}
RUNS = {"ledgerlink": run_ledgerlink, "duckdb": run_duckdb, "duckdb_precheck": run_duckdb_precheck,
        "pandas": run_pandas}
LOADS = {"ledgerlink": load_ledgerlink, "duckdb": load_duckdb, "duckdb_precheck": load_duckdb, "pandas": load_pandas}


def as_polars(result) -> pl.DataFrame:
    """Any contender's result as RESULT_COLUMNS (text), for the agreement check; reconcile.mismatches rows name a
    missing record by their kind (field null)."""
    if isinstance(result, pl.DataFrame):
        frame = result
    elif hasattr(result, "to_parquet") and not hasattr(result, "schema"):  # pandas
        frame = pl.from_pandas(result)
    else:
        frame = pl.from_arrow(result)
    if "kind" in frame.columns:
        frame = frame.with_columns(field=pl.coalesce("field", "kind"))
    return frame.select(pl.col(c).cast(pl.String) for c in RESULT_COLUMNS)


# ------------------------------------------------------------------------------------------- one process each


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def child(role: str, work: Path, pairs: int, seed: int) -> dict:
    """What one measured process does: its own wall and CPU seconds; the parent reads its peak memory."""
    import importlib

    sequence_path, quickbooks_path = work / "sequence.parquet", work / "quickbooks.parquet"
    for module in ENGINE_MODULES.get(role.removeprefix("load:"), []):
        importlib.import_module(module)  # importing the engine is not part of its time
    started, cpu = time.perf_counter(), _cpu_seconds()
    if role == "generate":
        expected = generate(pairs, seed, sequence_path, quickbooks_path)
        return {"seconds": time.perf_counter() - started, "expected": expected,
                "sequence_rows": pl.scan_parquet(sequence_path).select(pl.len()).collect().item(),
                "quickbooks_rows": pl.scan_parquet(quickbooks_path).select(pl.len()).collect().item()}
    if role.startswith("load:"):
        LOADS[role.removeprefix("load:")](sequence_path, quickbooks_path)
    else:
        result = RUNS[role](sequence_path, quickbooks_path)
    timed = {"seconds": time.perf_counter() - started, "cpu_seconds": _cpu_seconds() - cpu}
    if not role.startswith("load:"):
        # written after the clock stops, for the agreement check
        rows = as_polars(result)
        rows.write_parquet(work / f"{role}.mismatches.parquet")
        timed["mismatches"] = rows.height
    return timed


def cached_share(paths: list[Path]) -> float | None:
    """The share of the files' pages in the page cache (mmap + mincore, Linux), or None where that cannot be asked."""
    try:
        import ctypes
        import mmap

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        resident = total = 0
        for path in paths:
            size = path.stat().st_size
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = (ctypes.c_ubyte * pages)()
            with path.open("rb") as file:
                address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, file.fileno(), 0)
                if address in (None, ctypes.c_void_p(-1).value):
                    return None
                try:
                    if libc.mincore(address, size, vector) != 0:
                        return None
                finally:
                    libc.munmap(address, size)
            resident += sum(v & 1 for v in bytes(vector))
            total += pages
        return resident / total if total else None
    except (OSError, AttributeError, ValueError):  # not Linux, or no libc to ask: only a figure for the record
        return None


def warm(paths: list[Path]) -> None:
    """Read the files once through, so the next contender starts with them in the page cache like every other."""
    for path in paths:
        with path.open("rb", buffering=0) as file:
            while file.read(1 << 24):
                pass


def measure(role: str, work: Path, pairs: int, seed: int, timeout: float, memory_limit: int) -> dict:
    """Run `role` in a fresh interpreter, its inputs read once just before (the same warm page cache for every
    contender); its wall seconds (as it timed itself) and its peak RSS (kernel high-water mark from wait4, i.e.
    this child only). Killed past `timeout` or past `memory_limit` bytes."""
    import psutil

    inputs = [work / "sequence.parquet", work / "quickbooks.parquet"]
    start = {}
    if role != "generate":
        warm(inputs)
        start = {"cached_at_start": cached_share(inputs), "load_average_at_start": os.getloadavg()[0]}
    result_path = work / f"{role.replace(':', '-')}.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.bench_reconcile", "--child", role, "--work", str(work),
         "--pairs", str(pairs), "--seed", str(seed), "--out", str(result_path)])
    watched = psutil.Process(process.pid)
    started, killed = time.monotonic(), None
    while True:
        # wait4, not Popen.poll: only wait4 hands back the finished child's own rusage
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            rss = watched.memory_info().rss
        except psutil.NoSuchProcess:
            rss = 0
        elapsed = time.monotonic() - started
        if killed is None and elapsed > timeout:
            killed = f"still running after {timeout:.0f} s"
        elif killed is None and rss > memory_limit:
            killed = (f"its memory (RSS) passed {memory_limit / 2**30:.1f} GiB, 85 % of this machine's, "
                      f"after {elapsed:.0f} s")
        if killed and process.returncode is None:
            process.kill()
        time.sleep(0.1)
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    if killed:
        return {"not_run": f"stopped: {killed}", "peak_mib": peak_mib}
    if process.returncode != 0:
        raise RuntimeError(f"{role} at {pairs:,} pairs failed (exit {process.returncode})")
    # the whole process (imports too): where its time went besides computing
    process_usage = {"process_system_seconds": usage.ru_stime, "process_user_seconds": usage.ru_utime,
                     "major_page_faults": usage.ru_majflt, "minor_page_faults": usage.ru_minflt}
    return {**json.loads(result_path.read_text()), "peak_mib": peak_mib, **start, **process_usage}


def agreement(work: Path, ran: list[str], expected: dict[str, int]) -> dict[str, int]:
    """Every contender found exactly the planted mismatches, and the same rows with the same values."""
    frames = {name: pl.read_parquet(work / f"{name}.mismatches.parquet").sort(RESULT_COLUMNS, nulls_last=True)
              for name in ran}
    for name, frame in frames.items():
        by_field = dict(frame.group_by("field").len().iter_rows())
        wrong = {f: (by_field.get(f, 0), n) for f, n in expected.items() if by_field.get(f, 0) != n}
        unknown = set(by_field) - set(expected)
        if wrong or unknown:
            raise AssertionError(f"{name}: per-field counts differ from the plants (found, planted): {wrong}"
                                 f"{f'; unknown fields {unknown}' if unknown else ''}")
    first, *others = ran
    for name in others:
        if not frames[first].equals(frames[name], null_equal=True):
            only = frames[first].join(frames[name], on=RESULT_COLUMNS, how="anti", nulls_equal=True)
            raise AssertionError(f"{first} and {name} agree on counts but not on rows, e.g.\n{only.head(5)}")
    return dict(sorted(expected.items()))


# ------------------------------------------------------------------------------------------------------ the run


def pandas_projection(pairs: int, measured: list[tuple[int, dict]], memory_limit: int,
                      limit: int = PANDAS_LIMIT_SECONDS) -> str | None:
    """Why pandas would not finish at `pairs`, projected linearly from its largest smaller run of at least 1M
    pairs (smaller runs are mostly fixed costs); None to run it. Up to 1M pairs it always runs."""
    smaller = [(n, run) for n, run in measured if 1_000_000 <= n < pairs and "seconds" in run]
    if pairs <= 1_000_000 or not smaller:
        return None
    n, run = max(smaller, key=lambda item: item[0])
    seconds, peak = run["seconds"] * pairs / n, run["peak_mib"] * 2**20 * pairs / n
    if seconds > limit:
        return f"projected {seconds:.0f} s from {n:,} pairs (limit {limit} s)"
    if peak > memory_limit:
        return f"projected peak {peak / 2**30:.1f} GiB from {n:,} pairs (limit {memory_limit / 2**30:.1f} GiB)"
    return None


def ours_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("assets.reconcile") is None or \
            importlib.util.find_spec("assets.reconcile.mismatches") is None:
        return "assets.reconcile.mismatches does not exist yet"
    return None


def ours_source() -> dict[str, str]:
    """Which version of the reconciliation was measured (it may be edited while the benchmark runs)."""
    import hashlib

    root = Path(__file__).resolve().parents[2] / "assets" / "reconcile"
    return {f"assets/reconcile/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in sorted(root.glob("*.py"))}


def print_size(size: dict) -> None:
    pairs, runs = size["pairs"], size["contenders"]
    print(f"\n{pairs:,} pairs ({size['sequence_rows']:,} Sequence and {size['quickbooks_rows']:,} QuickBooks "
          f"invoices; {sum(size['expected'].values()):,} mismatches planted; generated in "
          f"{size['generate_seconds']:.1f} s; 1-min load average {size['load_average_1min']['min']:.1f}-"
          f"{size['load_average_1min']['max']:.1f} on {os.cpu_count()} cores)")
    ran = [n for n in CONTENDERS if "seconds" in runs[n]]
    header = "".join(f"{'x ' + SHORT[n]:>13}" for n in ran)
    print(f"{'':<24}{'seconds':>9}{'cpu s':>8}{'peak MiB':>10}{'mismatches':>12}{'load s':>8}{'load MiB':>10}{header}")
    for name in CONTENDERS:
        run = runs[name]
        if "seconds" not in run:
            print(f"{LABELS[name]:<24}  not run: {run['not_run']}")
            continue
        ratios = "".join(f"{runs[peer]['seconds'] / run['seconds']:>13.2f}" for peer in ran)
        print(f"{LABELS[name]:<24}{run['seconds']:>9.2f}{run['cpu_seconds']:>8.1f}{run['peak_mib']:>10,.0f}"
              f"{run['mismatches']:>12,}{run['load_seconds']:>8.2f}{run['load_peak_mib']:>10,.0f}{ratios}")
    print("  (x <peer>: how many times faster than that peer; cpu s: all threads; load: reading both files alone)")
    for name in ran:
        run = runs[name]
        cached = f"{run['cached_at_start']:.0%}" if run.get("cached_at_start") is not None else "?"
        print(f"  {SHORT[name]}: inputs {cached} in page cache at start, {run['major_page_faults']:,} major page "
              f"faults, {run['process_system_seconds']:.1f} s system CPU, load average "
              f"{run['load_average_at_start']:.1f} at start")
    for target, verdict in size["targets"].items():
        print(f"  {target}: {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender and size, interleaved; the "
                        "fastest is reported (the machine may be shared)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pandas-limit", type=int, default=PANDAS_LIMIT_SECONDS,
                        help="seconds pandas may take at a size before it is stopped (and its projection from a "
                        "smaller size skips it); a loaded machine may need more")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=CONTENDERS,
                        help="which to run (default: all); the targets need ledgerlink, duckdb and pandas")
    parser.add_argument("--out", type=Path, default=Path("data/bench/reconcile.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.out.write_text(json.dumps(child(args.child, args.work, args.pairs[0], args.seed)))
        sys.stdout.flush()
        # skip interpreter teardown: with Arrow's and Polars' thread pools alive it can abort the process
        # ("terminate called without an active exception") after the work is done and reported
        os._exit(0)

    import duckdb
    import pandas
    import psutil

    memory_limit = int(psutil.virtual_memory().total * 0.85)
    source = ours_source()
    root = Path(tempfile.mkdtemp(prefix="ledgerlink-bench-reconcile-"))
    sizes: list[dict] = []
    pandas_runs: list[tuple[int, dict]] = []
    try:
        for pairs in sorted(args.pairs):
            work = root / str(pairs)
            work.mkdir()
            print(f"{pairs:,} pairs: generating ...", flush=True)
            generated = measure("generate", work, pairs, args.seed, 3600, memory_limit)
            reasons = {"ledgerlink": ours_missing(),
                       "pandas": pandas_projection(pairs, pandas_runs, memory_limit, args.pandas_limit),
                       **{name: "not asked for (--contenders)" for name in CONTENDERS if name not in args.contenders}}
            skipped = {name: reason for name, reason in reasons.items() if reason}
            timeouts = {name: args.pandas_limit if name == "pandas" else 3600 for name in CONTENDERS}
            loads: dict[str, dict] = {}
            for name in CONTENDERS:
                same = next((other for other in loads if LOADS[other] is LOADS[name]), None)
                if name not in skipped:
                    loads[name] = loads[same] if same else \
                        measure(f"load:{name}", work, pairs, args.seed, timeouts[name], memory_limit)
            attempts: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
            stopped: dict[str, dict] = {}
            load_average = [os.getloadavg()[0]]
            for attempt in range(args.repeat):
                for name in CONTENDERS:
                    if name in skipped:
                        continue
                    print(f"  {LABELS[name]} (run {attempt + 1} of {args.repeat}) ...", flush=True)
                    run = measure(name, work, pairs, args.seed, timeouts[name], memory_limit)
                    if "not_run" in run:
                        skipped[name] = run["not_run"]
                        stopped[name] = run
                    else:
                        attempts[name].append(run)
                    load_average.append(os.getloadavg()[0])
            ran = [name for name in CONTENDERS if name not in skipped]
            agreement(work, ran, generated["expected"])  # raises unless every contender found the same rows
            runs: dict[str, dict] = {name: {"not_run": reason, **({"peak_mib_when_stopped": stopped[name]["peak_mib"]}
                                                                 if name in stopped else {})}
                                     for name, reason in skipped.items()}
            for name in ran:
                best = min(attempts[name], key=lambda run: run["seconds"])
                runs[name] = {"seconds": best["seconds"], "cpu_seconds": best["cpu_seconds"],
                              "peak_mib": max(run["peak_mib"] for run in attempts[name]),
                              "mismatches": best["mismatches"],
                              "load_seconds": loads[name]["seconds"], "load_peak_mib": loads[name]["peak_mib"],
                              "all_seconds": [run["seconds"] for run in attempts[name]],
                              **{key: best.get(key) for key in ("cached_at_start", "load_average_at_start",
                                                                "process_system_seconds", "process_user_seconds",
                                                                "major_page_faults", "minor_page_faults")}}
            if "pandas" in ran:
                pandas_runs.append((pairs, runs["pandas"]))
            targets = {}
            if "ledgerlink" in ran and "duckdb" in ran:
                x = runs["duckdb"]["seconds"] / runs["ledgerlink"]["seconds"]
                targets["no slower than DuckDB"] = f"{'met' if x >= 1 else 'NOT met'} ({x:.2f}x DuckDB's speed)"
            if "ledgerlink" in ran and "pandas" in ran:
                x = runs["pandas"]["seconds"] / runs["ledgerlink"]["seconds"]
                targets[">= 5x faster than pandas"] = f"{'met' if x >= 5 else 'NOT met'} ({x:.1f}x)"
            if "ledgerlink" in ran and "duckdb_precheck" in ran:
                x = runs["duckdb_precheck"]["seconds"] / runs["ledgerlink"]["seconds"]
                targets["(for reference) vs DuckDB given the same pre-check"] = f"{x:.2f}x its speed"
            size = {"pairs": pairs, "sequence_rows": generated["sequence_rows"],
                    "quickbooks_rows": generated["quickbooks_rows"], "generate_seconds": generated["seconds"],
                    "expected": generated["expected"], "agreed": ran, "contenders": runs, "targets": targets,
                    "load_average_1min": {"min": min(load_average), "max": max(load_average)}}
            sizes.append(size)
            print_size(size)
            shutil.rmtree(work)
        result = {
            "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
            "versions": {"polars": pl.__version__, "duckdb": duckdb.__version__, "pandas": pandas.__version__},
            "seed": args.seed,
            "repeat": args.repeat,
            "ledgerlink_source_sha256": source,
            "ledgerlink_source_changed_during_run": source != ours_source(),
            "measured": "seconds: wall time from the two parquet files to the mismatch rows in memory, each "
                        "contender in its own process (fastest of `repeat` interleaved runs; cpu_seconds of that "
                        "run, all threads); peak_mib: that process's max RSS (wait4), the largest over the runs; "
                        "load: reading both files alone into the engine, in another process; every process "
                        "starts with both files read once just before (page cache warm for all alike): "
                        "cached_at_start, major_page_faults and process_system_seconds (whole process) say so",
            "sizes": sizes,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        if result["ledgerlink_source_changed_during_run"]:
            print("\nWARNING: assets/reconcile changed while the benchmark ran; its figures mix versions.")
        print(f"\nEvery contender reported the same mismatch rows, exactly the planted ones. Results: {args.out}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
