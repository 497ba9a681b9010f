"""Extraction into a temporary warehouse, through real Dagster materializations, from the emulators over HTTP."""

import duckdb
import httpx
import orjson
import pytest


def table_count(warehouse, table: str, tenant: str) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(f"select count(*) from {table} where tenant = ?", [tenant]).fetchall()[0][0]


def query(warehouse, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def invalid_ids(manifest: dict, tenant: str, app: str) -> set:
    return {d["app_id"] if app == "quickbooks" else d["sequence_id"]
            for d in manifest["discrepancies"] if d["kind"] == "invalid" and d["tenant"] == tenant and d["app"] == app}


def loaded_rows(result) -> dict[str, int]:
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        value = materialization.metadata.get("rows_loaded")
        rows[materialization.asset_key.path[-1]] = value.value if value is not None else 0
    return rows


@pytest.fixture(scope="module")
def first_run(extraction):
    for key in extraction.registry.keys():
        assert extraction.run(key).success, key
    return extraction


def test_counts_equal_the_fixture_less_the_rejected_records(first_run):
    ext = first_run
    for tenant in ext.registry.tenants:
        for app, collection, table, id_col in [
            ("quickbooks", "invoice", "raw_quickbooks.invoice", "id"),
            ("quickbooks", "customer", "raw_quickbooks.customer", "id"),
            ("quickbooks", "payment", "raw_quickbooks.payment", "id"),
            ("quickbooks", "item", "raw_quickbooks.item", "id"),
            ("quickbooks", "taxcode", "raw_quickbooks.taxcode", "id"),
            ("sequence", "invoices", "raw_sequence.invoices", "id"),
            ("sequence", "customers", "raw_sequence.customers", "id"),
            ("sequence", "line-items", "raw_sequence.line_items", "id"),
            ("sequence", "products", "raw_sequence.products", "id"),
        ]:
            records = ext.fixture_records(tenant, app, collection)
            rejected = query(ext.warehouse, f"select count(*) from raw_{app}.rejected_records "
                                            "where tenant = ? and collection = ?", [tenant, collection])[0][0] \
                if collection in ("invoice", "invoices") else 0
            assert table_count(ext.warehouse, table, tenant) + rejected == len(records), (tenant, collection)
        lines = sum(len(r.get("Line", [])) for r in ext.fixture_records(tenant, "quickbooks", "invoice") if r.get("Id"))
        loaded_lines = table_count(ext.warehouse, "raw_quickbooks.invoice__line", tenant)
        assert 0 < loaded_lines <= lines


def test_bad_records_are_reported_with_tenant_collection_id_and_field_and_the_rest_loads(first_run):
    ext = first_run
    apps = ("quickbooks", "sequence", "xero")  # the apps the demo data plants contract breaks in
    rows = query(ext.warehouse, " union all ".join(
        f"select tenant, app, collection, record_id, field, reason from raw_{app}.rejected_records" for app in apps))
    assert rows, "the demo data plants contract-breaking records"
    for tenant, app, collection, record_id, field, reason in rows:
        assert tenant in ext.registry.tenants and app in apps and collection and field and reason
    planted = {(d["tenant"], d["app"]) for d in ext.manifest["discrepancies"] if d["kind"] == "invalid"}
    assert {(t, a) for t, a, *_ in rows} == planted
    fields = {field for *_, field, _ in rows}
    assert {"Id", "TotalAmt", "currency", "InvoiceID", "Total"} <= fields


def test_money_is_decimal_and_every_row_carries_its_tenant(first_run):
    ext = first_run
    types = dict(query(ext.warehouse, "select column_name, data_type from information_schema.columns "
                                      "where table_schema = 'raw_quickbooks' and table_name = 'invoice'"))
    assert types["total_amt"].startswith("DECIMAL") and types["balance"].startswith("DECIMAL")
    seq_types = dict(query(ext.warehouse, "select column_name, data_type from information_schema.columns "
                                          "where table_schema = 'raw_sequence' and table_name = 'invoices'"))
    assert seq_types["gross_total"].startswith("DECIMAL")
    for table in ("raw_quickbooks.invoice", "raw_quickbooks.invoice__line", "raw_sequence.customers"):
        assert query(ext.warehouse, f"select count(*) from {table} where tenant is null")[0][0] == 0


def test_second_run_loads_only_changes_and_deletes_come_from_cdc(first_run):
    ext = first_run
    tenant = ext.registry.tenants[0]
    connection = ext.registry.get(f"{tenant}.quickbooks")
    # invoices with no linked payment: QuickBooks refuses to delete one that has
    ids = [r[0] for r in query(ext.warehouse, "select id from raw_quickbooks.invoice where tenant = ? and id not in "
                                              "(select _invoice_id from raw_quickbooks.invoice__linked_txn) "
                                              "order by cast(id as integer) limit 2", [tenant])]
    with ext.resource.client(connection) as client:
        changed = client.read("Invoice", ids[0])
        client.update("Invoice", {"Id": changed["Id"], "SyncToken": changed["SyncToken"],
                                  "CustomerMemo": {"value": "changed by the test"}}, request_id="test-upd-1")
        gone = client.read("Invoice", ids[1])
        client.delete("Invoice", gone["Id"], gone["SyncToken"], request_id="test-del-1")
    result = ext.run(f"{tenant}.quickbooks")
    rows = loaded_rows(result)
    assert rows["invoice"] == 2  # the update and the tombstone, nothing else
    assert rows.get("customer", 0) == 0
    assert query(ext.warehouse, "select customer_memo__value from raw_quickbooks.invoice where tenant = ? and id = ?",
                 [tenant, ids[0]]) == [("changed by the test",)]
    assert query(ext.warehouse, "select count(*) from raw_quickbooks.invoice where tenant = ? and id = ?",
                 [tenant, ids[1]]) == [(0,)]
    assert query(ext.warehouse, "select count(*) from raw_quickbooks.invoice__line where tenant = ? and _invoice_id = ?",
                 [tenant, ids[1]]) == [(0,)]
    # the other tenant's rows are untouched
    other = ext.registry.tenants[1]
    assert table_count(ext.warehouse, "raw_quickbooks.invoice", other) > 0

    seq = ext.registry.get(f"{tenant}.sequence")
    with ext.resource.client(seq) as client:
        unpaid = next(r for page in client.iter_invoices(invoiceStatus="SENT", invoicePaymentStatus="UNPAID")
                      for r in page)
        client.set_payment_status(unpaid["id"], "PAID")
    rows = loaded_rows(ext.run(f"{tenant}.sequence"))
    assert rows["invoices"] == 1 and rows.get("customers", 0) == 0
    assert rows["line_items"] >= 1  # the changed invoice's lines are re-read, and only those
    assert query(ext.warehouse, "select payment_status from raw_sequence.invoices where tenant = ? and id = ?",
                 [tenant, unpaid["id"]]) == [("PAID",)]


def test_a_draft_deleted_in_sequence_goes_only_after_a_complete_sweep(first_run):
    ext = first_run
    tenant = ext.registry.tenants[0]
    key = f"{tenant}.sequence"
    draft = query(ext.warehouse, "select i.id from raw_sequence.invoices i join raw_sequence.line_items l "
                                 "on l.tenant = i.tenant and l.invoice_id = i.id where i.tenant = ? and "
                                 "i.status = 'DRAFT' limit 1", [tenant])[0][0]
    with ext.resource.client(ext.registry.get(key)) as client:
        client.delete_invoice(draft)
    url = ext.box.urls["sequence"]
    # a sweep cut short (the app fails mid-list) must not be read as "everything else was deleted"
    httpx.post(f"{url}/_sandbox/faults", json={"kind": "status", "status": 500, "times": -1,
                                               "path": "/invoices?"}).raise_for_status()
    try:
        assert not ext.run(key, raise_on_error=False).success
    finally:
        httpx.delete(f"{url}/_sandbox/faults").raise_for_status()
    assert query(ext.warehouse, "select count(*) from raw_sequence.invoices where tenant = ?", [tenant])[0][0] > 1
    assert query(ext.warehouse, "select count(*) from raw_sequence.invoices where id = ?", [draft]) == [(1,)]
    # a complete sweep removes the draft and its lines, and nothing else
    before = query(ext.warehouse, "select count(*) from raw_sequence.invoices where tenant = ?", [tenant])[0][0]
    assert ext.run(key).success
    assert query(ext.warehouse, "select count(*) from raw_sequence.invoices where id = ?", [draft]) == [(0,)]
    assert query(ext.warehouse, "select count(*) from raw_sequence.line_items where invoice_id = ?", [draft]) == [(0,)]
    assert query(ext.warehouse, "select count(*) from raw_sequence.invoices where tenant = ?",
                 [tenant])[0][0] == before - 1


def test_a_failing_app_gives_a_clear_error_and_loses_nothing(first_run):
    ext = first_run
    tenant = ext.registry.tenants[1]
    key = f"{tenant}.quickbooks"
    before = table_count(ext.warehouse, "raw_quickbooks.invoice", tenant)
    url = ext.box.urls["quickbooks"]
    httpx.post(f"{url}/_sandbox/faults", json={"kind": "truncate", "times": -1, "path": "/cdc"}).raise_for_status()
    try:
        result = ext.run(key, raise_on_error=False)
    finally:
        httpx.delete(f"{url}/_sandbox/faults").raise_for_status()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "quickbooks" in message and "cdc" in message.lower()
    assert table_count(ext.warehouse, "raw_quickbooks.invoice", tenant) == before
    assert ext.run(key).success  # once the app answers again, the next run picks up where it was
    # both runs are in the warehouse's sync history, the failure with its reason
    runs = query(ext.warehouse, "select status, error, rows_loaded from ops.sync_runs where connection = ? "
                                "order by started_at desc limit 2", [key])
    assert [r[0] for r in runs] == ["success", "failed"]
    assert "cdc" in runs[1][1].lower() and runs[0][1] is None


def test_every_sync_run_is_recorded_with_rows_per_table(first_run):
    ext = first_run
    runs = query(ext.warehouse, "select connection, status, rows_loaded, tables from ops.sync_runs "
                                "where status = 'success' order by started_at")
    assert {r[0] for r in runs} == set(ext.registry.keys())
    first = next(r for r in runs if r[0].endswith(".quickbooks"))
    tables = orjson.loads(first[3])
    assert first[2] == sum(tables.values()) > 0 and tables["invoice"] > 0


def test_no_secret_reaches_the_warehouse_the_state_or_the_run_logs(first_run):
    ext = first_run
    secrets = [value for value in ext.box.environment().values() if len(value) >= 8]
    tokens = ext.resource.token_store()
    for key in ext.registry.keys("quickbooks"):
        stored = tokens.get(key) or {}
        secrets += [stored[k] for k in ("access_token", "refresh_token") if stored.get(k)]
    assert secrets
    blobs = [ext.warehouse.read_bytes()]
    blobs += [p.read_bytes() for p in ext.resource.state.rglob("*") if p.is_file() and p.name != "tokens.json"]
    for run in ext.instance.get_runs():
        blobs += [str(entry).encode() for entry in ext.instance.all_logs(run.run_id)]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in blobs), "a secret was written outside the token store"
