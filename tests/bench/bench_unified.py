"""Benchmark: raw -> unified for one tenant with N invoices a side (Sequence and QuickBooks), 3 lines each.

Raw frames are synthesised with Polars in the raw layer's shape (table and column names, Decimal money, JSON
text arrays, QuickBooks offsets), so the timing is the mapping's alone, not extraction's. Reported: the lazy
mappings collected (map), and the whole build (map + Pandera validation + quarantine).

    python -m tests.bench.bench_unified                 # 100,000 invoices a side
    python -m tests.bench.bench_unified --invoices 20000
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import polars as pl

from assets.unified.build import build, map_apps

TENANT = "bench"
LINES = 3
D = pl.Decimal(38, 9)


def _ids(prefix: str, n: int) -> pl.Expr:
    return pl.format(prefix + "{}", pl.int_range(n, dtype=pl.Int64))


def synthetic_raw(invoices: int) -> dict[str, dict[str, pl.DataFrame]]:
    n, customers = invoices, max(10, invoices // 7)
    base = pl.DataFrame({"i": range(n)}).lazy()
    money = (pl.col("i") % 5000 + 100).cast(D)
    seq_invoices = base.select(
        tenant=pl.lit(TENANT), id=pl.format("inv-{}", "i"), customer_id=pl.format("cus-{}", pl.col("i") % customers),
        status=pl.col("i").mod(4).replace_strict({0: "DRAFT", 1: "FINAL", 2: "SENT", 3: "VOIDED"}),
        payment_status=pl.when(pl.col("i") % 3 == 0).then(pl.lit("PAID")).otherwise(pl.lit("UNPAID")),
        currency=pl.lit("GBP"), invoice_number=pl.format("INV{}", "i"), issue_date=pl.lit("2025-06-01"),
        accounting_date=pl.lit("2025-06-01"), due_date=pl.lit("2025-07-01"), memo=pl.lit(" Thanks "),
        customer_emails=pl.lit('["ap@x.example"]'), customer_billing_address__line1=pl.lit("1 High Street"),
        customer_billing_address__town=pl.lit("London"), customer_billing_address__postcode=pl.lit("EC1V 1AA"),
        customer_billing_address__country=pl.lit("GB"), net_total=money, total_tax=money / 5,
        gross_total=money * 6 / 5, balance=money, payment_options=pl.lit('["BANK_TRANSFER","LINK"]'),
        linked_services=pl.format('[{{"externalId":"{}","externalService":"QuickBooks_Online"}}]', "i"),
        created_at=pl.lit("2025-06-01T10:00:00Z"), updated_at=pl.lit("2025-06-02T10:00:00Z"),
    ).collect()
    lines = pl.DataFrame({"i": range(n * LINES)}).lazy().with_columns(doc=pl.col("i") // LINES, k=pl.col("i") % LINES)
    seq_groups = lines.select(tenant=pl.lit(TENANT), id=pl.format("grp-{}", "i"), invoice_id=pl.format("inv-{}", "doc"),
                              title=pl.lit("Platform"), tax_category__id=pl.lit("cat-std")).collect()
    seq_lines = lines.select(
        tenant=pl.lit(TENANT), id=pl.format("line-{}", "i"), invoice_id=pl.format("inv-{}", "doc"),
        group_id=pl.format("grp-{}", "i"), title=pl.lit("Seats, June 2025"), quantity=(pl.col("k") + 1).cast(D),
        rate=pl.lit("0.0004").cast(D), tax_rate=pl.lit("0.2").cast(D), index=pl.col("k").cast(D),
        net_total=pl.lit("12.50").cast(D), product_id=pl.lit("prod-1"),
        external_ids=pl.format('[{{"key":"QuickBooks_Online","value":"{}-{}"}}]', "doc", pl.col("k") + 1),
    ).collect()
    seq_customers = pl.DataFrame({"i": range(customers)}).lazy().select(
        tenant=pl.lit(TENANT), id=pl.format("cus-{}", "i"), legal_name=pl.format("Customer {} Ltd", "i"),
        address__line1=pl.lit("1 High Street"), address__town=pl.lit("London"), address__postcode=pl.lit("EC1V"),
        address__country=pl.lit("GB"), tax_status=pl.lit("TAXED"), status=pl.lit("ACTIVE"),
        created_at=pl.lit("2024-01-01T00:00:00Z"), custom_properties__tier=pl.lit("gold")).collect()
    contacts = seq_customers.select("tenant", _customers_id="id", email=pl.lit("AP@x.example"),
                                    billing_preference=pl.lit("PRIMARY"), _index=pl.lit(0, pl.Int64))
    integration = seq_customers.select("tenant", _customers_id="id", service=pl.lit("QuickBooks_Online"),
                                       id=pl.int_range(customers).cast(pl.String), _index=pl.lit(0, pl.Int64))
    qbo_invoices = base.select(
        tenant=pl.lit(TENANT), id=pl.col("i").cast(pl.String), doc_number=pl.format("INV{}", "i"),
        txn_date=pl.lit("2025-06-01"), due_date=pl.lit("2025-07-01"),
        customer_ref__value=(pl.col("i") % customers).cast(pl.String), bill_email__address=pl.lit("ap@x.example"),
        bill_addr__line1=pl.lit("1 High Street"), bill_addr__city=pl.lit("London"),
        bill_addr__postal_code=pl.lit("EC1V 1AA"), bill_addr__country=pl.lit("United Kingdom"),
        currency_ref__value=pl.lit("GBP"), exchange_rate=pl.lit(1).cast(D), txn_tax_detail__total_tax=money / 5,
        total_amt=money * 6 / 5, balance=pl.when(pl.col("i") % 3 == 0).then(pl.lit(0).cast(D)).otherwise(money),
        meta_data__create_time=pl.lit("2025-03-05T11:20:40-08:00"),
        meta_data__last_updated_time=pl.lit("2025-06-05T11:20:40-07:00"),
    ).collect()
    qbo_lines = lines.select(
        tenant=pl.lit(TENANT), _invoice_id=pl.col("doc").cast(pl.String), id=(pl.col("k") + 1).cast(pl.String),
        line_num=pl.col("k") + 1, description=pl.lit("Platform: Seats, June 2025"), amount=pl.lit("12.50").cast(D),
        detail_type=pl.lit("SalesItemLineDetail"), sales_item_line_detail__item_ref__value=pl.lit("5"),
        sales_item_line_detail__qty=(pl.col("k") + 1).cast(D), sales_item_line_detail__unit_price=pl.lit(1).cast(D),
        sales_item_line_detail__tax_code_ref__value=pl.lit("2"),
    ).collect()
    qbo_customers = pl.DataFrame({"i": range(customers)}).lazy().select(
        tenant=pl.lit(TENANT), id=pl.col("i").cast(pl.String), display_name=pl.format("Customer {} Ltd", "i"),
        taxable=pl.lit(True), bill_addr__country=pl.lit("GB"), currency_ref__value=pl.lit("GBP"),
        primary_email_addr__address=pl.lit("ap@x.example"), active=pl.lit(True),
        meta_data__create_time=pl.lit("2023-12-16T21:10:30-08:00")).collect()
    taxcode = pl.DataFrame({"tenant": [TENANT], "id": ["2"], "name": ["20.0% S"], "active": [True],
                            "sales_tax_rate_list__tax_rate_detail": ['[{"TaxRateRef":{"value":"1"}}]']})
    taxrate = pl.DataFrame({"tenant": [TENANT], "id": ["1"]}).with_columns(rate_value=pl.lit(20).cast(D))
    return {
        "sequence": {"invoices": seq_invoices, "line_items": seq_lines, "line_item_groups": seq_groups,
                     "customers": seq_customers, "customers__contacts": contacts,
                     "customers__integration_ids": integration},
        "quickbooks": {"invoice": qbo_invoices, "invoice__line": qbo_lines, "customer": qbo_customers,
                       "taxcode": taxcode, "taxrate": taxrate},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=100_000)
    args = parser.parse_args()
    raw = synthetic_raw(args.invoices)
    rows_in = sum(frame.height for tables in raw.values() for frame in tables.values())
    started = time.perf_counter()
    lazy = map_apps(raw, {})
    mapped = pl.collect_all(list(lazy.values()))
    mapped_s = time.perf_counter() - started
    started = time.perf_counter()
    result = build(raw, {}, detected_at=datetime.now(UTC))
    build_s = time.perf_counter() - started
    rows_out = sum(frame.height for frame in result.tables.values())
    assert rows_out == sum(frame.height for frame in mapped) and result.quarantine.height == 0
    print(f"{args.invoices:,} invoices a side, {rows_in:,} raw rows -> {rows_out:,} unified rows")
    print(f"  map (lazy mappings collected)        {mapped_s:6.2f} s  {rows_out / mapped_s:>12,.0f} rows/s")
    print(f"  build (map + validate + quarantine)  {build_s:6.2f} s  {rows_out / build_s:>12,.0f} rows/s")


if __name__ == "__main__":
    main()
