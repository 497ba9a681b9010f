"""Per-tenant overrides from the registry settings: a tenant remaps a field or adds custom fields with no code
change, and only its own rows change."""

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pytest

from assets.unified import quickbooks, sequence
from assets.unified.build import build
from assets.unified.mapping import PROBLEM_COLUMNS, MappingError
from checks.unified import MODEL


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


CUSTOMERS = frame([
    {"tenant": "acme-uk", "id": "c1", "legal_name": "Acme", "custom_properties__vat": "GB123", "tax_id": None},
    {"tenant": "globex-us", "id": "c2", "legal_name": "Globex", "custom_properties__vat": "US999", "tax_id": "EIN-1"},
])
INVOICES = frame([
    {"tenant": tenant, "id": f"i-{tenant}", "customer_id": "c", "status": "SENT", "payment_status": "UNPAID",
     "currency": "GBP", "issue_date": "2025-06-01", "accounting_date": "2025-05-31", "purchase_order_number": "PO-7"}
    for tenant in ("acme-uk", "globex-us")])
SETTINGS = {
    "acme-uk": {
        "merchant_email": "billing@acme.example",
        "field_mappings": {"sequence": {"customer": {"tax_id": "custom_properties__vat"},
                                        "invoice": {"issue_date": "accounting_date"}},
                           "quickbooks": {"invoice": {"memo": "private_note"}}},
        "custom_fields": {"sequence": {"invoice": ["purchase_order_number", "not_loaded_yet"]},
                          "quickbooks": {"customer": ["web_addr__uri"]}},
    },
    "globex-us": {"merchant_email": "ar@globex.example"},
}


def collected(lazy: pl.LazyFrame, table: str) -> dict[str, dict]:
    out = lazy.collect()
    assert out.filter(pl.col(PROBLEM_COLUMNS[0]).is_not_null()).height == 0
    body = out.drop(PROBLEM_COLUMNS)
    MODEL[table].validate(body, lazy=True)
    return {row["tenant"]: row for row in body.to_dicts()}


def test_a_tenant_remaps_a_field_and_only_its_rows_change():
    raw = {"customers": CUSTOMERS, "invoices": INVOICES}
    customers = collected(sequence.customers(raw, SETTINGS), "customers")
    assert customers["acme-uk"]["tax_id"] == "GB123"  # from its customProperties, as its settings say
    assert customers["globex-us"]["tax_id"] == "EIN-1"  # the default mapping
    invoices = collected(sequence.invoices(raw, SETTINGS), "invoices")
    # the override is read with the contract's type (a date) like any mapped column
    assert invoices["acme-uk"]["issue_date"] == date(2025, 5, 31)
    assert invoices["globex-us"]["issue_date"] == date(2025, 6, 1)


def test_overrides_apply_to_quickbooks_too():
    raw = {"invoice": frame([
        {"tenant": tenant, "id": "1", "total_amt": Decimal(1), "balance": Decimal(1), "currency_ref__value": "GBP",
         "customer_memo__value": "Thanks", "private_note": "  Internal note "} for tenant in ("acme-uk", "globex-us")])}
    invoices = collected(quickbooks.invoices(raw, SETTINGS), "invoices")
    assert (invoices["acme-uk"]["memo"], invoices["globex-us"]["memo"]) == ("Internal note", "Thanks")


def test_a_tenant_adds_custom_fields_by_naming_raw_columns():
    raw = {"invoices": INVOICES}
    got = collected(sequence.custom_fields(raw, SETTINGS), "custom_fields")
    assert got == {"acme-uk": {"tenant": "acme-uk", "app": "sequence", "entity": "invoice", "id": "i-acme-uk",
                               "field": "purchase_order_number", "value": "PO-7"}}  # a column not loaded yet: none
    qbo = {"customer": frame([{"tenant": t, "id": "1", "display_name": "A", "web_addr__uri": "https://a.example/"}
                              for t in ("acme-uk", "globex-us")])}
    rows = quickbooks.custom_fields(qbo, SETTINGS).collect()
    assert rows.select("tenant", "entity", "field", "value").rows() == \
        [("acme-uk", "customer", "web_addr__uri", "https://a.example/")]


def test_the_build_reads_overrides_from_the_settings_it_is_given():
    result = build({"sequence": {"customers": CUSTOMERS}}, SETTINGS, detected_at=datetime.now(UTC))
    assert dict(result.tables["customers"].select("tenant", "tax_id").rows()) == {"acme-uk": "GB123",
                                                                                  "globex-us": "EIN-1"}
    assert result.quarantine.height == 0


@pytest.mark.parametrize(("override", "message"), [
    ({"nickname": "legal_name"}, "has no column 'nickname'"),
    ({"id": "legal_name"}, "key columns cannot be remapped"),
    ({"name": ["legal_name"]}, "name one raw column"),
])
def test_a_bad_override_is_a_loud_error_naming_the_tenant_and_place(override, message):
    settings = {"acme-uk": {"field_mappings": {"sequence": {"customer": override}}}}
    with pytest.raises(MappingError, match=message) as caught:
        sequence.customers({"customers": CUSTOMERS}, settings)
    assert "tenant acme-uk: settings.field_mappings.sequence.customer" in str(caught.value)


def test_custom_fields_settings_must_list_columns():
    settings = {"acme-uk": {"custom_fields": {"sequence": {"customer": "custom_properties__vat"}}}}
    with pytest.raises(MappingError, match="expected a list of raw column names"):
        sequence.custom_fields({"customers": CUSTOMERS}, settings)


def test_a_remapped_column_is_read_from_the_override_only():
    raw = {"invoices": INVOICES.with_columns(issue_date=pl.lit("not a date"))}
    out = sequence.invoices(raw, SETTINGS).collect()
    problems = dict(out.select("tenant", PROBLEM_COLUMNS[0]).rows())
    assert problems == {"acme-uk": None, "globex-us": "issue_date"}  # acme-uk reads accounting_date instead
