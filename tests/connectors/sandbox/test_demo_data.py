"""The demo-data generator: deterministic, internally consistent, vendor-exact, and honest about what it plants.

The clean fixture is checked with a small reference reconciliation (both apps must agree everywhere), the
planted one by checking that every manifest entry is visible in the records it names.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pycountry
import pytest
import xmlschema
from jsonschema import Draft7Validator

from connectors.sandbox.demo_data import (
    CRM_APPS,
    CRM_COLLECTIONS,
    CRM_SYNC_FIELDS,
    DISCREPANCY_KINDS,
    QUICKBOOKS_COLLECTIONS,
    REFERENCE_TIME,
    SEQUENCE_COLLECTIONS,
    WINDOW_DAYS,
    XERO_COLLECTIONS,
    generate,
    main,
    tenant_slugs,
)
from connectors.sandbox import identity
from connectors.sandbox.launcher import start_sandbox

SPECS = Path("/work/shared/specs")
NO_CRM = {"hubspot": False, "salesforce": False, "attio": False}
INVOICES = 270
SEED = 11

MONEY = re.compile(r"^-?\d+\.\d{2}$")
DECIMAL_TEXT = re.compile(r"^-?\d+(\.\d+)?$")
SEQ_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
QBO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}-0[78]:00$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CENT = Decimal("0.01")

Data = dict[str, dict[str, dict[str, list[dict]]]]


def _load(root: Path) -> tuple[dict, dict, Data]:
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    settings = orjson.loads((root / "settings.json").read_bytes())
    data: Data = {}
    for tenant in manifest["tenants"]:
        data[tenant] = {
            app: {c: orjson.loads((root / tenant / app / f"{c}.json").read_bytes()) for c in collections}
            for app, collections in (("sequence", SEQUENCE_COLLECTIONS), ("quickbooks", QUICKBOOKS_COLLECTIONS))
        }
    return manifest, settings, data


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def _qd(value: Any) -> Decimal:
    """A QuickBooks JSON number as Decimal (via str, so 0.1 stays 0.1)."""
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return Decimal(str(value))


def _qbo_link(record: dict) -> str | None:
    for link in record["linkedServices"]:
        if link["externalService"] == "QuickBooks_Online":
            return link["externalId"]
    return None


def _customer_link(record: dict) -> str | None:
    for link in record["integrationIds"]:
        if link["service"] == "QuickBooks_Online":
            return link["id"]
    return None


def _invalid_records(manifest: dict) -> set[tuple[str, str, str | None]]:
    return {(d["tenant"], d["app"], d["app_id"] if d["app"] == "quickbooks" else d["sequence_id"])
            for d in manifest["discrepancies"] if d["kind"] == "invalid"}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Data]:
    root = tmp_path_factory.mktemp("dirty")
    # QuickBooks only: the Xero side is checked by the tests at the end (on fixtures with Xero on)
    returned = generate(root, invoices=INVOICES, seed=SEED, xero=False, **NO_CRM)
    loaded = _load(root)
    assert returned == loaded[0]
    return loaded


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Data]:
    root = tmp_path_factory.mktemp("clean")
    generate(root, invoices=INVOICES, seed=SEED, discrepancies=False, xero=False, **NO_CRM)
    return _load(root)


# ---------------------------------------------------------------------------------------------------------------
# Determinism, layout, counts
# ---------------------------------------------------------------------------------------------------------------


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_output(tmp_path: Path) -> None:
    generate(tmp_path / "a", invoices=120, seed=3, tenants=4)
    generate(tmp_path / "b", invoices=120, seed=3, tenants=4)
    generate(tmp_path / "c", invoices=120, seed=4, tenants=4)
    a, b, c = (_tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c  # the seed matters


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "serial", invoices=90, seed=2, workers=1)
    generate(tmp_path / "parallel", invoices=90, seed=2, workers=3)
    assert _tree_bytes(tmp_path / "serial") == _tree_bytes(tmp_path / "parallel")


def test_tenant_slugs_cycle_profiles_with_suffixes() -> None:
    assert tenant_slugs(5) == ["acme-uk", "globex-us", "nordwind-de", "acme-uk-2", "globex-us-2"]


def test_counts_in_manifest_equal_files(dirty: tuple[dict, dict, Data]) -> None:
    manifest, settings, data = dirty
    assert manifest["tenants"] == ["acme-uk", "globex-us", "nordwind-de"] == list(settings)
    assert manifest["seed"] == SEED and manifest["invoices"] == INVOICES
    for tenant, apps in data.items():
        for app, collections in apps.items():
            assert manifest["counts"][tenant][app] == {c: len(r) for c, r in collections.items()}
    assert sum(len(apps["sequence"]["invoices"]) for apps in data.values()) == INVOICES
    for apps in data.values():
        assert len(apps["quickbooks"]["companyinfo"]) == len(apps["quickbooks"]["preferences"]) == 1


def test_rerun_replaces_tenants_of_the_previous_run(tmp_path: Path) -> None:
    generate(tmp_path, invoices=20, tenants=4)
    assert (tmp_path / "acme-uk-2").is_dir()
    generate(tmp_path, invoices=20, tenants=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["acme-uk", "globex-us"]


def test_cli_writes_a_clean_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--invoices", "30", "--seed", "5", "--tenants", "2", "--clean"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["discrepancies"] == [] and manifest["tenants"] == ["acme-uk", "globex-us"]
    assert "30 Sequence invoices" in capsys.readouterr().out


def test_settings_refer_to_existing_records(clean: tuple[dict, dict, Data]) -> None:
    _, settings, data = clean
    for tenant, s in settings.items():
        seq, qbo = data[tenant]["sequence"], data[tenant]["quickbooks"]
        assert s["invoice_date"] in ("issue", "accounting")
        assert s["home_currency"] == qbo["preferences"][0]["CurrencyPrefs"]["HomeCurrency"]["value"]
        assert s["multi_currency"] == qbo["preferences"][0]["CurrencyPrefs"]["MultiCurrencyEnabled"]
        codes = {c["Id"]: c for c in qbo["taxcode"]}
        assert set(s["tax_codes"]) == {c["id"] for c in seq["tax-categories"]}
        for code in [*s["tax_codes"].values(), s["fallback_tax_code"], s["exempt_tax_code"],
                     s["reverse_charge_tax_code"]]:
            assert codes[code]["Active"] is True
        items = {i["Id"]: i for i in qbo["item"]}
        accounts = {a["Id"]: a for a in qbo["account"]}
        products = {p["id"]: p for p in seq["products"]}
        assert set(s["items"]) == set(products)  # clean: every product is mapped
        for product_id, mapping in s["items"].items():
            item = items[mapping["item_id"]]
            assert item["Name"] == products[product_id]["name"]
            account = accounts[item["IncomeAccountRef"]["value"]]
            assert account["AccountType"] == "Income" and account["AcctNum"] == mapping["account_code"]
        if tenant.startswith("globex-us"):
            assert set(s["tax_codes"].values()) <= {"TAX", "NON"}
            assert s["exempt_tax_code"] == s["reverse_charge_tax_code"] == "NON"


# ---------------------------------------------------------------------------------------------------------------
# Money and totals
# ---------------------------------------------------------------------------------------------------------------


def test_sequence_money_and_quantities_are_decimal_strings(dirty: tuple[dict, dict, Data]) -> None:
    _, _, data = dirty
    for apps in data.values():
        seq = apps["sequence"]
        for collection in ("invoices", "line-item-groups", "line-items", "credit-notes",
                           "credit-note-line-item-groups", "credit-note-line-items"):
            for record in seq[collection]:
                for key in ("netTotal", "totalTax", "grossTotal", "balance"):
                    if key in record:
                        assert MONEY.match(record[key]), (collection, key, record[key])
                for key in ("quantity", "rate", "taxRate"):
                    if key in record:
                        assert DECIMAL_TEXT.match(record[key]), (collection, key, record[key])
                for key in ("createdAt", "updatedAt"):
                    if key in record:
                        assert SEQ_TIME.match(record[key])
        for invoice in seq["invoices"]:
            for allocation in invoice["paymentAllocations"]:
                assert MONEY.match(allocation["amount"])


def _check_sequence_totals(seq: dict[str, list[dict]]) -> None:
    for parent, groups_c, lines_c, key in (("invoices", "line-item-groups", "line-items", "invoiceId"),
                                           ("credit-notes", "credit-note-line-item-groups",
                                            "credit-note-line-items", "creditNoteId")):
        lines_by: dict[str, list[dict]] = {}
        for line in seq[lines_c]:
            quantity, rate = Decimal(line["quantity"]), Decimal(line["rate"])
            net = Decimal(line["netTotal"])
            assert net == _round(quantity * rate)
            assert Decimal(line["totalTax"]) == _round(net * Decimal(line["taxRate"]))
            assert Decimal(line["grossTotal"]) == net + Decimal(line["totalTax"])
            lines_by.setdefault(line[key], []).append(line)
        groups_by: dict[str, list[dict]] = {}
        for group in seq[groups_c]:
            groups_by.setdefault(group[key], []).append(group)
            members = [ln for ln in lines_by[group[key]] if ln["groupId"] == group["id"]]
            assert members
            for total in ("netTotal", "totalTax", "grossTotal"):
                assert Decimal(group[total]) == sum(Decimal(m[total]) for m in members)
        for record in seq[parent]:
            lines = lines_by[record["id"]]
            assert {ln["groupId"] for ln in lines} == {g["id"] for g in groups_by[record["id"]]}
            for total in ("netTotal", "totalTax", "grossTotal"):
                assert Decimal(record[total]) == sum(Decimal(ln[total]) for ln in lines), record["id"]


def _check_qbo_totals(qbo: dict[str, list[dict]], invalid_ids: set) -> None:
    totals = {}
    for entity in ("invoice", "creditmemo"):
        for doc in qbo[entity]:
            if doc.get("Id") is None or doc["Id"] in invalid_ids:
                continue
            sales = [ln for ln in doc["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
            (subtotal,) = [ln for ln in doc["Line"] if ln["DetailType"] == "SubTotalLineDetail"]
            for line in sales:
                detail = line["SalesItemLineDetail"]
                assert _qd(line["Amount"]) == _round(_qd(detail["Qty"]) * _qd(detail["UnitPrice"]))
            assert _qd(subtotal["Amount"]) == sum(_qd(ln["Amount"]) for ln in sales)
            tax = doc["TxnTaxDetail"]
            assert _qd(tax["TotalTax"]) == sum((_qd(t["Amount"]) for t in tax.get("TaxLine", [])), Decimal(0))
            total = _qd(doc["TotalAmt"])
            assert total == _qd(subtotal["Amount"]) + _qd(tax["TotalTax"])
            if "HomeTotalAmt" in doc:
                assert _qd(doc["HomeTotalAmt"]) == _round(total * _qd(doc["ExchangeRate"]))
            if entity == "invoice":
                paid = bool(doc["LinkedTxn"])
                assert _qd(doc["Balance"]) == (0 if paid or doc.get("PrivateNote") == "Voided" else total)
                totals[doc["Id"]] = total
    for payment in qbo["payment"]:
        assert _qd(payment["TotalAmt"]) == sum(_qd(ln["Amount"]) for ln in payment["Line"])
        for line in payment["Line"]:
            (linked,) = line["LinkedTxn"]
            assert linked["TxnType"] == "Invoice" and _qd(line["Amount"]) == totals[linked["TxnId"]]


def test_totals_equal_sum_of_lines_on_clean_data(clean: tuple[dict, dict, Data]) -> None:
    _, _, data = clean
    for apps in data.values():
        _check_sequence_totals(apps["sequence"])
        _check_qbo_totals(apps["quickbooks"], set())


def test_each_app_stays_internally_consistent_where_discrepancies_are_planted(
        dirty: tuple[dict, dict, Data]) -> None:
    manifest, _, data = dirty
    invalid = _invalid_records(manifest)
    for tenant, apps in data.items():
        _check_sequence_totals(apps["sequence"])
        _check_qbo_totals(apps["quickbooks"], {i for t, a, i in invalid if t == tenant and a == "quickbooks"})


@pytest.mark.parametrize("fixture", ["clean", "dirty"])
def test_customer_balances_follow_open_documents(fixture: str, request: pytest.FixtureRequest) -> None:
    manifest, _, data = request.getfixturevalue(fixture)
    invalid = _invalid_records(manifest)
    for tenant, apps in data.items():
        qbo = apps["quickbooks"]
        open_by: dict[str, Decimal] = {}
        for doc in qbo["invoice"]:
            if "Id" not in doc or (tenant, "quickbooks", doc["Id"]) in invalid:
                continue  # contract-breaking records are not part of QuickBooks' books
            ref = doc["CustomerRef"]["value"]
            open_by[ref] = open_by.get(ref, Decimal(0)) + _qd(doc["Balance"])
        for memo in qbo["creditmemo"]:
            ref = memo["CustomerRef"]["value"]
            open_by[ref] = open_by.get(ref, Decimal(0)) - _qd(memo["RemainingCredit"])
        for customer in qbo["customer"]:
            assert _qd(customer["Balance"]) == open_by.get(customer["Id"], Decimal(0))


def test_timestamps_are_fixed_to_the_reference_time(dirty: tuple[dict, dict, Data]) -> None:
    """Nothing depends on the clock: every update lies before REFERENCE_TIME, invoices within the window."""
    _, _, data = dirty
    window_start = REFERENCE_TIME - timedelta(days=WINDOW_DAYS + 3)
    for apps in data.values():
        for invoice in apps["sequence"]["invoices"]:
            updated = datetime.fromisoformat(invoice["updatedAt"].replace("Z", "+00:00"))
            assert window_start <= updated <= REFERENCE_TIME
        for collection in ("invoice", "payment", "creditmemo", "customer", "item"):
            for record in apps["quickbooks"][collection]:
                assert QBO_TIME.match(record["MetaData"]["LastUpdatedTime"])
                updated = datetime.fromisoformat(record["MetaData"]["LastUpdatedTime"])
                assert updated <= REFERENCE_TIME
                assert datetime.fromisoformat(record["MetaData"]["CreateTime"]) <= updated
        recent = [datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"]) for r in apps["quickbooks"]["invoice"]]
        assert min(recent) >= window_start and max(recent) >= REFERENCE_TIME - timedelta(days=5)


# ---------------------------------------------------------------------------------------------------------------
# The clean fixture: both apps agree (a small reference reconciliation)
# ---------------------------------------------------------------------------------------------------------------


def _expected_tax_code(settings: dict, customer: dict, group: dict) -> str:
    if customer["taxStatus"] == "TAX_EXEMPT":
        return settings["exempt_tax_code"]
    if customer["taxStatus"] == "REVERSE_CHARGED":
        return settings["reverse_charge_tax_code"]
    category = group.get("taxCategory")
    return settings["tax_codes"].get(category["id"], settings["fallback_tax_code"]) if category \
        else settings["fallback_tax_code"]


def test_clean_fixture_plants_nothing_and_both_apps_agree(clean: tuple[dict, dict, Data]) -> None:
    manifest, settings, data = clean
    assert manifest["discrepancies"] == []
    for tenant, apps in data.items():
        seq, qbo, s = apps["sequence"], apps["quickbooks"], settings[tenant]
        qbo_customers = {c["Id"]: c for c in qbo["customer"]}
        qbo_invoices = {i["Id"]: i for i in qbo["invoice"]}
        seq_customers = {c["id"]: c for c in seq["customers"]}
        groups = {g["id"]: g for g in seq["line-item-groups"]}
        lines_by: dict[str, list[dict]] = {}
        for line in seq["line-items"]:
            lines_by.setdefault(line["invoiceId"], []).append(line)
        provider = {r["invoiceId"]: r["paymentProvider"] for r in seq["invoice-payment-settings"]}
        product_item = {pid: m["item_id"] for pid, m in s["items"].items()}

        linked_customers = set()
        for customer in seq["customers"]:
            qbo_id = _customer_link(customer)
            if customer["status"] == "DRAFT":
                assert qbo_id is None  # not approved yet: never synced, and not a discrepancy
                continue
            twin = qbo_customers[qbo_id]
            linked_customers.add(qbo_id)
            (primary,) = [c for c in customer["contacts"] if c["billingPreference"] == "PRIMARY"]
            address = customer["address"]
            assert twin["DisplayName"] == customer["legalName"]
            assert twin["PrimaryEmailAddr"]["Address"] == primary["email"]
            assert (twin["BillAddr"]["Line1"], twin["BillAddr"]["City"], twin["BillAddr"]["PostalCode"],
                    twin["BillAddr"]["Country"], twin["BillAddr"].get("CountrySubDivisionCode")) == \
                   (address["line1"], address["town"], address["postcode"], address["country"], address.get("state"))
            assert twin["Active"] is ("archivedAt" not in customer)
        assert linked_customers == set(qbo_customers)

        linked_invoices = set()
        for invoice in seq["invoices"]:
            qbo_id = _qbo_link(invoice)
            if invoice["status"] == "DRAFT":
                assert qbo_id is None
                continue
            twin = qbo_invoices[qbo_id]
            linked_invoices.add(qbo_id)
            customer = seq_customers[invoice["customerId"]]
            assert twin["CustomerRef"]["value"] == _customer_link(customer)
            assert twin["DocNumber"] == invoice["invoiceNumber"]
            date_field = "issueDate" if s["invoice_date"] == "issue" else "accountingDate"
            assert twin["TxnDate"] == invoice[date_field]
            assert twin["DueDate"] == invoice["dueDate"]
            assert twin["CurrencyRef"]["value"] == invoice["currency"] == qbo_customers[
                twin["CustomerRef"]["value"]]["CurrencyRef"]["value"]
            assert twin.get("CustomerMemo", {}).get("value") == invoice.get("memo")
            assert (twin["BillAddr"]["PostalCode"], twin["BillAddr"]["Country"]) == \
                   (customer["address"]["postcode"], customer["address"]["country"])
            assert twin["BillEmail"]["Address"] in (s["merchant_email"], invoice["customerEmails"][0])
            if invoice["status"] == "SENT":
                assert twin["BillEmail"]["Address"] == s["merchant_email"]
            if invoice["status"] == "FINAL":
                assert twin["BillEmail"]["Address"] == invoice["customerEmails"][0]
            voided = twin.get("PrivateNote") == "Voided"
            assert voided is (invoice["status"] == "VOIDED")
            if voided:
                assert twin["TotalAmt"] == 0
                continue
            assert _qd(twin["TotalAmt"]) == Decimal(invoice["grossTotal"])
            assert _qd(twin["TxnTaxDetail"]["TotalTax"]) == Decimal(invoice["totalTax"])
            assert (invoice["paymentStatus"] == "PAID") is (twin["Balance"] == 0) is bool(twin["LinkedTxn"])
            if "LINK" in invoice["paymentOptions"]:
                assert provider[invoice["id"]] in ("STRIPE", "GOCARDLESS")
            sales = [ln for ln in twin["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
            lines = sorted(lines_by[invoice["id"]], key=lambda ln: ln["index"])
            assert len(sales) == len(lines)
            for line, q in zip(lines, sales, strict=True):
                detail = q["SalesItemLineDetail"]
                group = groups[line["groupId"]]
                assert line["externalIds"] == [{"key": "QuickBooks_Online", "value": f"{qbo_id}-{q['Id']}"}]
                assert q["Description"] == f"{group['title']}: {line['title']}"
                assert _qd(detail["Qty"]) == Decimal(line["quantity"])
                assert _qd(detail["UnitPrice"]) == Decimal(line["rate"])
                assert _qd(q["Amount"]) == Decimal(line["netTotal"])
                assert detail["ItemRef"]["value"] == product_item[line["productId"]]
                assert detail["TaxCodeRef"]["value"] == _expected_tax_code(s, customer, group)
        assert linked_invoices == set(qbo_invoices)

        memos = {m["Id"]: m for m in qbo["creditmemo"]}
        linked_memos = set()
        for note in seq["credit-notes"]:
            qbo_id = _qbo_link(note)
            if note["status"] == "DRAFT":
                assert qbo_id is None
                continue
            linked_memos.add(qbo_id)
            assert memos[qbo_id]["DocNumber"] == note["creditNoteNumber"]
            assert _qd(memos[qbo_id]["TotalAmt"]) == Decimal(note["grossTotal"])
        assert linked_memos == set(memos)
        paid_qbo = {ln["LinkedTxn"][0]["TxnId"] for p in qbo["payment"] for ln in p["Line"]}
        assert paid_qbo == {i["Id"] for i in qbo["invoice"] if i["LinkedTxn"]}


def test_clean_fixture_uses_every_tax_path(clean: tuple[dict, dict, Data]) -> None:
    """Taxed, exempt and reverse-charged customers, the fallback code and home-currency conversion all occur."""
    _, settings, data = clean
    for tenant, apps in data.items():
        s, seq, qbo = settings[tenant], apps["sequence"], apps["quickbooks"]
        assert {c["taxStatus"] for c in seq["customers"]} >= ({"TAXED", "TAX_EXEMPT"} if "us" in tenant
                                                              else {"TAXED", "TAX_EXEMPT", "REVERSE_CHARGED"})
        used = {ln["SalesItemLineDetail"]["TaxCodeRef"]["value"] for i in qbo["invoice"] for ln in i["Line"]
                if ln["DetailType"] == "SalesItemLineDetail"}
        assert {s["fallback_tax_code"], s["exempt_tax_code"]} <= used
        assert {"GB", "US", "DE"} & {c["address"]["country"] for c in seq["customers"]}
        if s["multi_currency"]:
            assert any("HomeTotalAmt" in i for i in qbo["invoice"]) and qbo["exchangerate"]
            assert len({i["CurrencyRef"]["value"] for i in qbo["invoice"]}) > 1
        else:
            assert not qbo["exchangerate"] and all("ExchangeRate" not in i for i in qbo["invoice"])
        statuses = {i["status"] for i in seq["invoices"]}
        assert statuses == {"DRAFT", "FINAL", "SENT", "VOIDED"}
        assert {i["paymentStatus"] for i in seq["invoices"]} == {"PAID", "UNPAID"}


# ---------------------------------------------------------------------------------------------------------------
# The planted fixture: every manifest entry is real
# ---------------------------------------------------------------------------------------------------------------


class _Index:
    def __init__(self, apps: dict[str, dict[str, list[dict]]], settings: dict) -> None:
        seq, qbo = apps["sequence"], apps["quickbooks"]
        self.s = settings
        self.seq = {name: {r["id"]: r for r in seq[name]} for name in
                    ("customers", "invoices", "credit-notes", "products", "tax-categories")}
        self.qbo = {name: {r["Id"]: r for r in qbo[name] if "Id" in r} for name in
                    ("customer", "invoice", "creditmemo", "item", "account", "taxcode")}
        self.qbo_invoices = qbo["invoice"]
        self.invoice_numbers = {i.get("invoiceNumber") for i in seq["invoices"]}
        self.doc_numbers = {i.get("DocNumber") for i in qbo["invoice"]}
        self.memo_numbers = {m.get("DocNumber") for m in qbo["creditmemo"]}
        self.lines: dict[str, list[dict]] = {}
        for line in seq["line-items"]:
            self.lines.setdefault(line["invoiceId"], []).append(line)
        self.cn_lines: dict[str, list[dict]] = {}
        for line in seq["credit-note-line-items"]:
            self.cn_lines.setdefault(line["creditNoteId"], []).append(line)
        self.provider = {r["invoiceId"]: r["paymentProvider"] for r in seq["invoice-payment-settings"]}
        self.linked_customers = {_customer_link(c) for c in seq["customers"]}


_SEQ_COLLECTION = {"customer": "customers", "invoice": "invoices", "credit_note": "credit-notes",
                   "product": "products", "tax_category": "tax-categories"}
_QBO_COLLECTION = {"customer": "customer", "invoice": "invoice", "credit_note": "creditmemo", "product": "item",
                   "tax_category": "taxcode"}


def _line_differs(seq_lines: list[dict], qbo_doc: dict, field: str, index: _Index) -> bool:
    sales = [ln for ln in qbo_doc["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    for line, q in zip(sorted(seq_lines, key=lambda ln: ln["index"]), sales, strict=True):
        detail = q["SalesItemLineDetail"]
        if field == "line.quantity" and _qd(detail["Qty"]) != Decimal(line["quantity"]):
            return True
        if field == "line.rate" and _qd(detail["UnitPrice"]) != Decimal(line["rate"]):
            return True
        if field == "line.description" and not q["Description"].endswith(": " + line["title"]):
            return True
        mapping = index.s["items"].get(line["productId"])  # unmapped products sync with the default item
        if field == "line.item" and mapping and detail["ItemRef"]["value"] != mapping["item_id"]:
            return True
        untaxed = {"NON"} | {code for code, record in index.qbo["taxcode"].items() if not record["Taxable"]}
        if field == "line.tax_code" and Decimal(line["taxRate"]) > 0 and detail["TaxCodeRef"]["value"] in untaxed:
            return True  # a taxable Sequence line booked under a code that charges no tax
    return False


def _check_invoice_plant(d: dict, index: _Index) -> None:
    kind, field = d["kind"], d["field"]
    inv = index.seq["invoices"].get(d["sequence_id"]) if d["sequence_id"] else None
    doc = index.qbo["invoice"].get(d["app_id"]) if d["app_id"] else None
    if kind == "invalid":
        if field == "Id":
            (number,) = re.findall(r"DocNumber=(\d+)", d["detail"])
            assert any(i.get("DocNumber") == number and "Id" not in i for i in index.qbo_invoices)
        elif field == "TotalAmt":
            assert isinstance(doc["TotalAmt"], str)
            with pytest.raises(ArithmeticError):
                Decimal(doc["TotalAmt"])
        else:
            assert d["app"] == "sequence" and inv["currency"] == "XYZ"
        return
    if kind == "missing_in_sequence":
        assert doc["DocNumber"] not in index.invoice_numbers
        return
    assert inv is not None
    if kind in ("missing_in_app", "currency_differs"):
        assert doc is None and inv["status"] in ("FINAL", "SENT") and inv["linkedServices"] == []
        assert inv["invoiceNumber"] not in index.doc_numbers
        if kind == "currency_differs":
            (customer_ref,) = re.findall(r"QuickBooks customer (\d+)", d["detail"])
            assert index.qbo["customer"][customer_ref]["CurrencyRef"]["value"] != inv["currency"]
            assert index.seq["customers"][inv["customerId"]]["integrationIds"][0]["id"] == customer_ref
        return
    assert doc is not None
    if kind == "unlinked_candidate":
        assert inv["linkedServices"] == [] and doc["DocNumber"] == inv["invoiceNumber"]
        return
    assert _qbo_link(inv) == doc["Id"]
    qbo_paid = bool(doc["LinkedTxn"]) and doc["Balance"] == 0
    if kind == "stripe_link_ignored":
        assert inv["paymentStatus"] == "UNPAID" and qbo_paid
        assert "LINK" in inv["paymentOptions"] and index.provider[inv["id"]] == "STRIPE"
    elif kind == "status_differs" and field == "payment_status":
        assert (inv["paymentStatus"] == "PAID") != qbo_paid
        assert index.provider.get(inv["id"]) != "STRIPE"
    elif kind == "status_differs":
        assert (inv["status"] == "VOIDED") != (doc.get("PrivateNote") == "Voided")
    else:
        assert kind == "field_differs"
        if field.startswith("line."):
            assert _line_differs(index.lines[inv["id"]], doc, field, index), d
        else:
            seq_value = {"due_date": inv["dueDate"], "memo": inv.get("memo"), "number": inv["invoiceNumber"],
                         "billing_email": index.s["merchant_email"],
                         "invoice_date": inv["issueDate" if index.s["invoice_date"] == "issue" else
                                             "accountingDate"]}[field]
            app_value = {"due_date": doc["DueDate"], "memo": doc.get("CustomerMemo", {}).get("value"),
                         "number": doc["DocNumber"], "billing_email": doc["BillEmail"]["Address"],
                         "invoice_date": doc["TxnDate"]}[field]
            assert seq_value != app_value, d


def _check_customer_plant(d: dict, index: _Index) -> None:
    kind, field = d["kind"], d["field"]
    customer = index.seq["customers"].get(d["sequence_id"]) if d["sequence_id"] else None
    twin = index.qbo["customer"].get(d["app_id"]) if d["app_id"] else None
    if kind in ("importable", "not_importable"):
        assert customer is None and twin["Id"] not in index.linked_customers
        addr = twin.get("BillAddr", {})
        complete = bool(twin.get("PrimaryEmailAddr")) and all(addr.get(k) for k in ("Line1", "City", "PostalCode")) \
            and len(addr.get("Country", "")) == 2
        assert complete is (kind == "importable")
        return
    assert customer is not None
    if kind == "missing_in_app":
        assert customer["integrationIds"] == [] or _customer_link(customer) is None
        assert customer["legalName"] not in {c["DisplayName"] for c in index.qbo["customer"].values()}
    elif kind == "unlinked_candidate":
        assert _customer_link(customer) is None and twin["DisplayName"] == customer["legalName"]
    else:
        assert kind == "field_differs" and _customer_link(customer) == twin["Id"]
        (primary,) = [c["email"] for c in customer["contacts"] if c["billingPreference"] == "PRIMARY"]
        pairs = {"name": (customer["legalName"], twin["DisplayName"]),
                 "billing_email": (primary, twin["PrimaryEmailAddr"]["Address"]),
                 "billing_address.line1": (customer["address"]["line1"], twin["BillAddr"]["Line1"]),
                 "billing_address.city": (customer["address"]["town"], twin["BillAddr"]["City"]),
                 "billing_address.postal_code": (customer["address"]["postcode"], twin["BillAddr"]["PostalCode"])}
        seq_value, app_value = pairs[field]
        assert seq_value != app_value


def _check_catalog_plant(d: dict, index: _Index) -> None:
    kind = d["kind"]
    if d["entity"] == "tax_category":
        assert kind == "tax_code_unresolved"
        code = index.s["tax_codes"][d["sequence_id"]]
        assert code not in index.qbo["taxcode"] or index.qbo["taxcode"][code]["Active"] is False
        return
    product = index.seq["products"][d["sequence_id"]]
    if kind in ("product_unmapped", "item_name_not_unique"):
        assert product["id"] not in index.s["items"]
    if kind == "item_name_not_unique":
        assert index.qbo["item"][d["app_id"]]["Name"] == product["name"]
    if kind == "item_account_differs":
        item = index.qbo["item"][index.s["items"][product["id"]]["item_id"]]
        account = index.qbo["account"][item["IncomeAccountRef"]["value"]]
        assert account["AcctNum"] != index.s["items"][product["id"]]["account_code"]


def test_every_planted_discrepancy_refers_to_existing_records(dirty: tuple[dict, dict, Data]) -> None:
    manifest, settings, data = dirty
    ids = [d["id"] for d in manifest["discrepancies"]]
    assert len(ids) == len(set(ids))
    indexes = {tenant: _Index(apps, settings[tenant]) for tenant, apps in data.items()}
    for d in manifest["discrepancies"]:
        assert set(d) == {"id", "tenant", "app", "entity", "kind", "field", "sequence_id", "app_id", "detail"}
        assert d["kind"] in DISCREPANCY_KINDS and d["detail"]
        index = indexes[d["tenant"]]
        if d["sequence_id"] is not None:
            assert d["sequence_id"] in index.seq[_SEQ_COLLECTION[d["entity"]]], d
        if d["app_id"] is not None:
            assert d["app_id"] in index.qbo[_QBO_COLLECTION[d["entity"]]], d
        if d["entity"] == "invoice":
            _check_invoice_plant(d, index)
        elif d["entity"] == "customer":
            _check_customer_plant(d, index)
        elif d["entity"] == "credit_note":
            note = index.seq["credit-notes"][d["sequence_id"]]
            if d["kind"] == "missing_in_app":
                assert note["linkedServices"] == [] and note["creditNoteNumber"] not in index.memo_numbers
            elif d["field"] == "number":
                assert index.qbo["creditmemo"][d["app_id"]]["DocNumber"] != note["creditNoteNumber"]
            else:
                assert _line_differs(index.cn_lines[note["id"]], index.qbo["creditmemo"][d["app_id"]], d["field"],
                                     index)
        else:
            _check_catalog_plant(d, index)


def test_every_kind_is_planted_in_every_tenant(dirty: tuple[dict, dict, Data]) -> None:
    manifest, _, _ = dirty
    for tenant in manifest["tenants"]:
        kinds = [d["kind"] for d in manifest["discrepancies"] if d["tenant"] == tenant]
        assert set(kinds) == set(DISCREPANCY_KINDS), tenant
        fields = {d["field"] for d in manifest["discrepancies"] if d["tenant"] == tenant and d["entity"] == "invoice"}
        assert fields >= {"due_date", "memo", "invoice_date", "number", "billing_email", "line.description",
                          "line.quantity", "line.rate", "line.tax_code", "line.item", "currency",
                          "payment_status", "status"}
        for kind in DISCREPANCY_KINDS:
            assert kinds.count(kind) >= 2 or kind == "importable" and kinds.count(kind) >= 1, (tenant, kind)


def test_each_record_carries_at_most_one_plant(dirty: tuple[dict, dict, Data]) -> None:
    manifest, _, _ = dirty
    seen = set()
    for d in manifest["discrepancies"]:
        if d["entity"] in ("invoice", "customer", "credit_note") and d["kind"] != "invalid":
            key = (d["tenant"], d["entity"], d["sequence_id"], d["app_id"])
            assert key not in seen, d
            seen.add(key)


# ---------------------------------------------------------------------------------------------------------------
# Vendor contracts: Sequence OpenAPI schemas, QuickBooks Finance.xsd
# ---------------------------------------------------------------------------------------------------------------

_SEQUENCE_SCHEMAS = {
    "customers": "Customer",
    "invoices": "InvoiceResponse",
    "line-item-groups": "LineItemGroupResponseModel",
    "line-items": "Stable20240101LineItemResponse",
    "credit-notes": "CreditNote",
    "credit-note-line-item-groups": "ListCreditNoteLineItemGroupEndpointProductListCreditNoteLineItemGroupResponseModel",
    "credit-note-line-items": "ListCreditNoteLineItemEndpointProductListCreditNoteLineItemResponseModel",
    "products": "Stable20240730ProductResponse",
    "tax-categories": "TaxCategoryResponse",
    "invoice-payment-settings": "GetInvoiceSettingsEndpointProductGetInvoiceSettingsResponseModel",
}


@pytest.fixture(scope="module")
def openapi() -> dict:
    return orjson.loads((SPECS / "sequence" / "openapi.json").read_bytes())


def _unknown_keys(value: Any, schema: dict, spec: dict, path: str) -> list[str]:
    """Keys the schema does not declare (jsonschema alone would accept them: no additionalProperties: false)."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    problems = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                problems.append(f"{path}.{key}")
            else:
                problems += _unknown_keys(item, schema["properties"][key], spec, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            problems += _unknown_keys(item, schema["items"], spec, f"{path}[{n}]")
    return problems


def test_sequence_records_match_the_openapi_schemas(dirty: tuple[dict, dict, Data], openapi: dict) -> None:
    manifest, _, data = dirty
    bad_currency = {d["sequence_id"] for d in manifest["discrepancies"] if d["app"] == "sequence"}
    for collection, schema_name in _SEQUENCE_SCHEMAS.items():
        validator = Draft7Validator({"$ref": f"#/components/schemas/{schema_name}",
                                     "components": openapi["components"]})
        schema = openapi["components"]["schemas"][schema_name]
        checked = 0
        for apps in data.values():
            for record in apps["sequence"][collection][:60]:
                errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(record)]
                if record.get("id") in bad_currency:
                    assert errors and all("XYZ" in e for e in errors)  # the planted contract break
                    continue
                assert not errors, (collection, record.get("id"), errors[:3])
                assert not _unknown_keys(record, schema, openapi, collection)
                checked += 1
        assert checked, collection
    # The planted XYZ invoice exists in every tenant, further down the files than the sample reaches or not.
    for apps in data.values():
        assert any(i["currency"] == "XYZ" for i in apps["sequence"]["invoices"])


@pytest.fixture(scope="module")
def finance_xsd() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SPECS / "quickbooks" / "Finance.xsd"))


def _xsd_problems(value: Any, xsd_type: Any, path: str) -> list[str]:
    """Walks a QuickBooks JSON record against its XSD type: names, nesting, arrays and JSON types."""
    if xsd_type.is_simple():
        primitive = xsd_type.primitive_type.local_name
        if primitive == "decimal":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif primitive == "boolean":
            ok = isinstance(value, bool)
        elif primitive == "date":
            ok = isinstance(value, str) and bool(DATE.match(value))
        elif primitive == "dateTime":
            ok = isinstance(value, str) and bool(QBO_TIME.match(value))
        else:
            ok = isinstance(value, str)
        enumeration = getattr(xsd_type, "enumeration", None)
        if ok and enumeration:
            ok = value in enumeration
        return [] if ok else [f"{path}: {value!r} is not a valid {primitive}"]
    if not isinstance(value, dict):
        return [f"{path}: expected an object"]
    problems = []
    attributes = set(xsd_type.attributes)
    if xsd_type.has_simple_content():  # ReferenceType, MemoRef: {"value": ..., <attributes>}
        for key in value:
            if key not in attributes | {"value"}:
                problems.append(f"{path}.{key}: not in {xsd_type.name}")
        return problems
    elements = {e.local_name: e for e in xsd_type.content.iter_elements()}
    for key, item in value.items():
        if key in attributes:
            continue
        element = elements.get(key)
        if element is None:
            problems.append(f"{path}.{key}: no such element in {xsd_type.local_name}")
            continue
        if element.max_occurs is None or element.max_occurs > 1:
            if not isinstance(item, list):
                problems.append(f"{path}.{key}: expected an array")
                continue
            for n, entry in enumerate(item):
                problems += _xsd_problems(entry, element.type, f"{path}.{key}[{n}]")
        else:
            problems += _xsd_problems(item, element.type, f"{path}.{key}")
    return problems


_QBO_TYPES = {"customer": "Customer", "invoice": "Invoice", "creditmemo": "CreditMemo", "payment": "Payment",
              "item": "Item", "account": "Account", "taxcode": "TaxCode", "taxrate": "TaxRate",
              "companyinfo": "CompanyInfo", "preferences": "Preferences", "exchangerate": "ExchangeRate"}


def test_quickbooks_records_match_finance_xsd(dirty: tuple[dict, dict, Data],
                                              finance_xsd: xmlschema.XMLSchema) -> None:
    manifest, _, data = dirty
    invalid = _invalid_records(manifest)
    for tenant, apps in data.items():
        for collection, type_name in _QBO_TYPES.items():
            xsd_type = finance_xsd.types[type_name]
            for record in apps["quickbooks"][collection][:80]:
                if (tenant, "quickbooks", record.get("Id")) in invalid or "Id" not in record and collection == \
                        "invoice":
                    continue
                assert record.get("domain") == "QBO"
                assert not _xsd_problems(record, xsd_type, f"{tenant}/{collection}/{record.get('Id')}")
                if "Id" in record and collection != "taxcode":
                    assert record["Id"].isdigit()


def test_quickbooks_invalid_records_break_the_contract(dirty: tuple[dict, dict, Data],
                                                       finance_xsd: xmlschema.XMLSchema) -> None:
    manifest, _, data = dirty
    for d in manifest["discrepancies"]:
        if d["kind"] == "invalid" and d["field"] == "TotalAmt":
            (record,) = [i for i in data[d["tenant"]]["quickbooks"]["invoice"] if i.get("Id") == d["app_id"]]
            assert _xsd_problems(record, finance_xsd.types["Invoice"], "invoice")


# ---------------------------------------------------------------------------------------------------------------
# Xero (the UK and DE tenants also connect it)
# ---------------------------------------------------------------------------------------------------------------

XERO_TENANTS = ("acme-uk", "nordwind-de")
MS_DATE = re.compile(r"^/Date\((\d+)\+0000\)/$")
XERO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00$")
XERO_STATUSES = {"DRAFT", "AUTHORISED", "PAID", "VOIDED", "DELETED"}


def _xload(root: Path) -> tuple[dict, dict, Data]:
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    settings = orjson.loads((root / "settings.json").read_bytes())
    data: Data = {}
    for tenant in manifest["tenants"]:
        data[tenant] = {}
        for app, collections in (("sequence", SEQUENCE_COLLECTIONS), ("quickbooks", QUICKBOOKS_COLLECTIONS),
                                 ("xero", XERO_COLLECTIONS)):
            folder = root / tenant / app
            if folder.is_dir():
                data[tenant][app] = {c: orjson.loads((folder / f"{c}.json").read_bytes()) for c in collections}
    return manifest, settings, data


@pytest.fixture(scope="module")
def xdirty_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every app on (Xero and the CRMs): the default."""
    root = tmp_path_factory.mktemp("xdirty")
    returned = generate(root, invoices=INVOICES, seed=SEED)
    assert returned == orjson.loads((root / "manifest.json").read_bytes())
    return root


@pytest.fixture(scope="module")
def xdirty(xdirty_root: Path) -> tuple[dict, dict, Data]:
    return _xload(xdirty_root)


@pytest.fixture(scope="module")
def xclean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xclean")
    generate(root, invoices=INVOICES, seed=SEED, discrepancies=False)
    return root


@pytest.fixture(scope="module")
def xclean(xclean_root: Path) -> tuple[dict, dict, Data]:
    return _xload(xclean_root)


def _xd(value: Any) -> Decimal:
    """A Xero JSON number as Decimal, which must already be rounded to minor units."""
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return Decimal(str(value))


def _ms_day(value: str) -> str:
    ms = int(MS_DATE.match(value).group(1))  # type: ignore[union-attr]
    return datetime.fromtimestamp(ms / 1000, tz=REFERENCE_TIME.tzinfo).strftime("%Y-%m-%dT%H:%M:%S")


def _xero_link(links: list[dict], key: str, service: str) -> str | None:
    found = [link for link in links if link[key] == "Xero"]
    assert len(found) <= 1
    return found[0][service] if found else None


def _strip_xero(value: Any) -> Any:
    if isinstance(value, list):
        return [_strip_xero(v) for v in value if not (isinstance(v, dict) and "Xero" in (
            v.get("service"), v.get("key"), v.get("externalService")))]
    if isinstance(value, dict):
        return {k: _strip_xero(v) for k, v in value.items()}
    return value


def _array_bytes(records: list) -> bytes:
    """The generator's on-disk form of a JSON array (one record per line)."""
    return b"[" + (b"\n" + b",\n".join(orjson.dumps(r) for r in records) + b"\n]\n" if records else b"]\n")


def test_xero_leaves_quickbooks_byte_identical_and_only_adds_links_to_sequence(tmp_path: Path) -> None:
    for discrepancies in (True, False):
        off, on = tmp_path / f"off{discrepancies}", tmp_path / f"on{discrepancies}"
        generate(off, invoices=150, seed=5, tenants=4, discrepancies=discrepancies, xero=False, **NO_CRM)
        generate(on, invoices=150, seed=5, tenants=4, discrepancies=discrepancies, **NO_CRM)
        before, after = _tree_bytes(off), _tree_bytes(on)
        assert not any("/xero/" in name for name in before)
        xero_files = {name for name in after if "/xero/" in name}
        assert {name.split("/")[0] for name in xero_files} == {"acme-uk", "nordwind-de", "acme-uk-2"}
        assert before.keys() == after.keys() - xero_files
        changed = 0
        for name, content in before.items():
            if name.endswith("manifest.json") or name.endswith("settings.json"):
                continue
            if "/quickbooks/" in name or not name.startswith(("acme-uk", "nordwind-de")):
                assert after[name] == content, name  # QuickBooks, and every file of the QuickBooks-only tenant
            else:
                changed += after[name] != content
                assert _array_bytes(_strip_xero(orjson.loads(after[name]))) == content, name
        assert changed >= 5  # customers, invoices, line items, credit notes, credit-note lines carry Xero links
        m_off, m_on = orjson.loads(before["manifest.json"]), orjson.loads(after["manifest.json"])
        assert [d for d in m_on["discrepancies"] if d["app"] != "xero"] == m_off["discrepancies"]
        for tenant, apps in m_off["counts"].items():
            assert {a: c for a, c in m_on["counts"][tenant].items() if a != "xero"} == apps
        s_off, s_on = orjson.loads(before["settings.json"]), orjson.loads(after["settings.json"])
        assert {t: {k: v for k, v in body.items() if k != "apps"} for t, body in s_on.items()} == s_off
        assert set(s_on["acme-uk"]["apps"]) == {"xero"} and "apps" not in s_on["globex-us"]


def test_xero_files_exist_for_the_uk_and_de_tenants_only(xdirty: tuple[dict, dict, Data]) -> None:
    manifest, settings, data = xdirty
    for tenant, apps in data.items():
        assert ("xero" in apps) is (tenant in XERO_TENANTS), tenant
        assert ("xero" in manifest["counts"][tenant]) is (tenant in XERO_TENANTS)
        for app, collections in apps.items():
            assert manifest["counts"][tenant][app] == {c: len(r) for c, r in collections.items()}
    for tenant in XERO_TENANTS:
        x = data[tenant]["xero"]
        assert len(x["organisation"]) == 1 and x["organisation"][0]["BaseCurrency"] == settings[tenant]["home_currency"]
        for collection in XERO_COLLECTIONS:
            assert x[collection], (tenant, collection)


def _xero_index(x: dict[str, list[dict]]) -> dict[str, Any]:
    return {
        "contacts": {c["ContactID"]: c for c in x["contacts"]},
        "items": {i["Code"]: i for i in x["items"]},
        "accounts": {a["Code"]: a for a in x["accounts"]},
        "tax": {t["TaxType"]: t for t in x["tax-rates"]},
        "currencies": {c["Code"] for c in x["currencies"]},
        "invoices": {i["InvoiceID"]: i for i in x["invoices"] if "InvoiceID" in i},
        "credit_notes": {c["CreditNoteID"]: c for c in x["credit-notes"]},
    }


@pytest.mark.parametrize("fixture", ["xclean", "xdirty"])
def test_xero_totals_equal_the_sum_of_lines_and_references_exist(fixture: str,
                                                                 request: pytest.FixtureRequest) -> None:
    _, _, data = request.getfixturevalue(fixture)
    for tenant in XERO_TENANTS:
        x = data[tenant]["xero"]
        ix = _xero_index(x)
        docs = [(d, "ACCREC") for d in x["invoices"]] + [(d, "ACCRECCREDIT") for d in x["credit-notes"]]
        for doc, kind in docs:
            assert doc["Type"] == kind and doc["Status"] in XERO_STATUSES and doc["LineAmountTypes"] == "Exclusive"
            assert doc["Contact"]["ContactID"] in ix["contacts"]
            assert doc["Contact"]["Name"] == ix["contacts"][doc["Contact"]["ContactID"]]["Name"]
            assert doc["CurrencyCode"] in ix["currencies"]
            subtotal = tax = Decimal(0)
            for line in doc["LineItems"]:
                amount, rate = _xd(line["LineAmount"]), Decimal(str(line["UnitAmount"]))
                assert amount == _round(Decimal(str(line["Quantity"])) * rate)
                percent = Decimal(str(ix["tax"][line["TaxType"]]["EffectiveRate"]))
                assert _xd(line["TaxAmount"]) == _round(amount * percent / 100)
                assert line["AccountCode"] in ix["accounts"]
                assert ix["accounts"][line["AccountCode"]]["Class"] == "REVENUE"
                if "ItemCode" in line:
                    assert ix["items"][line["ItemCode"]]["ItemID"] == line["Item"]["ItemID"]
                    assert line["AccountCode"] == ix["items"][line["ItemCode"]]["SalesDetails"]["AccountCode"]
                subtotal += amount
                tax += _xd(line["TaxAmount"])
            assert _xd(doc["SubTotal"]) == subtotal and _xd(doc["TotalTax"]) == tax
            if isinstance(doc["Total"], str):
                continue  # the planted contract-breaking record
            total = _xd(doc["Total"])
            assert total == subtotal + tax
            if kind == "ACCREC":
                paid = sum((_xd(p["Amount"]) for p in doc["Payments"]), Decimal(0))
                assert _xd(doc["AmountPaid"]) == paid
                if doc["Status"] in ("VOIDED", "DELETED"):
                    assert _xd(doc["AmountDue"]) == 0 and paid == 0
                else:
                    assert _xd(doc["AmountDue"]) + paid == total
                    assert (doc["Status"] == "PAID") is (paid == total) is ("FullyPaidOnDate" in doc)
            else:
                assert _xd(doc["RemainingCredit"]) == total
        for payment in x["payments"]:
            invoice = ix["invoices"][payment["Invoice"]["InvoiceID"]]
            assert [p["PaymentID"] for p in invoice["Payments"]] == [payment["PaymentID"]]
            assert payment["Amount"] == invoice["Total"] and payment["Account"]["Code"] in ix["accounts"]
            assert ix["accounts"][payment["Account"]["Code"]]["EnablePaymentsToAccount"] is True
            assert payment["Invoice"]["InvoiceNumber"] == invoice["InvoiceNumber"]
            assert _xd(payment["BankAmount"]) == _round(_xd(payment["Amount"]) / Decimal(str(payment["CurrencyRate"])))
        assert sum(len(i["Payments"]) for i in x["invoices"]) == len(x["payments"])
        for item in x["items"]:
            assert item["SalesDetails"]["AccountCode"] in ix["accounts"]
            assert item["SalesDetails"]["TaxType"] in ix["tax"]
            assert len(item["Code"]) <= 30 and len(item["Name"]) <= 50
        for contact in x["contacts"]:
            assert contact["DefaultCurrency"] in ix["currencies"]
            assert contact["AccountsReceivableTaxType"] in ix["tax"]
            assert [a["AddressType"] for a in contact["Addresses"]] == ["POBOX", "STREET"]
        assert len({i["Name"] for i in x["items"]}) == len(x["items"])
        assert len({c["Name"] for c in x["contacts"]}) == len(x["contacts"])


def test_xero_dates_have_consistent_twins(xdirty: tuple[dict, dict, Data]) -> None:
    _, _, data = xdirty
    latest = int(REFERENCE_TIME.timestamp() * 1000)
    for tenant in XERO_TENANTS:
        x = data[tenant]["xero"]
        for collection in ("invoices", "credit-notes", "payments", "contacts", "items", "accounts"):
            for record in x[collection]:
                stamps = [record["UpdatedDateUTC"]] + [p["Date"] for p in record.get("Payments", [])]
                for field in ("Date", "FullyPaidOnDate"):
                    if field in record:
                        stamps.append(record[field])
                for stamp in stamps:
                    assert MS_DATE.match(stamp) and int(MS_DATE.match(stamp).group(1)) <= latest, stamp
                if "DueDate" in record:  # may lie ahead
                    assert MS_DATE.match(record["DueDate"]) and record["DueDate"] >= record["Date"]
                if "UpdatedDateUTCString" in record:
                    assert _ms_day(record["UpdatedDateUTC"]) + "Z" == record["UpdatedDateUTCString"]
                for field in ("Date", "DueDate"):
                    if f"{field}String" in record:
                        assert XERO_DAY.match(record[f"{field}String"])
                        assert _ms_day(record[field]) == record[f"{field}String"]
                if collection in ("invoices", "credit-notes"):
                    assert "DateString" in record and (collection == "credit-notes" or "DueDateString" in record)


def test_clean_xero_is_what_the_integration_wrote(xclean: tuple[dict, dict, Data]) -> None:
    manifest, settings, data = xclean
    assert manifest["discrepancies"] == []
    for tenant in XERO_TENANTS:
        s, xs = settings[tenant], settings[tenant]["apps"]["xero"]
        seq, x = data[tenant]["sequence"], data[tenant]["xero"]
        ix = _xero_index(x)
        contacts_by_number = {c["ContactNumber"]: c for c in x["contacts"] if "ContactNumber" in c}
        customers = {c["id"]: c for c in seq["customers"]}
        for customer in seq["customers"]:
            contact_id = _xero_link(customer["integrationIds"], "service", "id")
            assert (contact_id is not None) is (_customer_link(customer) is not None)
            if contact_id is None:
                continue
            contact = ix["contacts"][contact_id]
            assert contacts_by_number[customer["id"]] is contact
            assert contact["Name"] == customer["legalName"]
            primary = next(c["email"] for c in customer["contacts"] if c["billingPreference"] == "PRIMARY")
            assert contact["EmailAddress"] == primary
            pobox, address = contact["Addresses"][0], customer["address"]
            assert (pobox["AddressLine1"], pobox["City"], pobox["PostalCode"], pobox["Country"]) == (
                address["line1"], address["town"], address["postcode"], address["country"])
        assert len(contacts_by_number) == len(x["contacts"])  # clean: every contact is a linked customer
        groups = {g["id"]: g for g in seq["line-item-groups"]}
        lines: dict[str, list[dict]] = {}
        for line in seq["line-items"]:
            lines.setdefault(line["invoiceId"], []).append(line)
        products = {p["id"]: p for p in seq["products"]}
        linked = set()
        for invoice in seq["invoices"]:
            xero_id = _xero_link(invoice["linkedServices"], "externalService", "externalId")
            assert (xero_id is not None) is (invoice["status"] != "DRAFT")
            if xero_id is None:
                continue
            linked.add(xero_id)
            twin = ix["invoices"][xero_id]
            customer = customers[invoice["customerId"]]
            assert twin["Contact"]["ContactID"] == _xero_link(customer["integrationIds"], "service", "id")
            assert twin["InvoiceNumber"] == invoice["invoiceNumber"] and twin["CurrencyCode"] == invoice["currency"]
            day = invoice["issueDate"] if s["invoice_date"] == "issue" else invoice["accountingDate"]
            assert twin["DateString"] == f"{day}T00:00:00" and twin["DueDateString"] == f"{invoice['dueDate']}T00:00:00"
            expected = {"VOIDED": "VOIDED"}.get(invoice["status"], "PAID" if invoice["paymentStatus"] == "PAID"
                                                else "AUTHORISED")
            assert twin["Status"] == expected
            assert _xd(twin["Total"]) == Decimal(invoice["grossTotal"])
            assert _xd(twin["TotalTax"]) == Decimal(invoice["totalTax"])
            rate = Decimal(str(twin["CurrencyRate"]))
            assert (rate == 1) is (invoice["currency"] == s["home_currency"])
            ordered = sorted(lines[invoice["id"]], key=lambda ln: ln["index"])
            assert len(ordered) == len(twin["LineItems"])
            for line, xline in zip(ordered, twin["LineItems"], strict=True):
                assert _xero_link(line["externalIds"], "key", "value") == xline["LineItemID"]
                assert xline["Description"] == f"{groups[line['groupId']]['title']}: {line['title']}"
                assert Decimal(str(xline["Quantity"])) == Decimal(line["quantity"])
                assert Decimal(str(xline["UnitAmount"])) == Decimal(line["rate"])
                assert _xd(xline["LineAmount"]) == Decimal(line["netTotal"])
                assert _xd(xline["TaxAmount"]) == Decimal(line["totalTax"])
                mapping = xs["items"].get(line["productId"])
                if mapping is None:
                    assert "ItemCode" not in xline and xline["AccountCode"] == xs["default_account_code"]
                else:
                    assert (xline["ItemCode"], xline["AccountCode"]) == (mapping["item_code"], mapping["account_code"])
                # the seed's tax rules, with the Xero connection's own tax types
                status = invoice["customerTaxStatus"]
                category = groups[line["groupId"]].get("taxCategory")
                if status == "TAXED":
                    want = xs["tax_codes"].get(category["id"]) if category else None
                    want = want or xs["fallback_tax_code"]
                else:
                    want = xs["exempt_tax_code"] if status == "TAX_EXEMPT" else xs["reverse_charge_tax_code"]
                assert xline["TaxType"] == want, (line, xline)
                assert products[line["productId"]]
        assert linked == set(ix["invoices"])  # no invoice only Xero has
        for note in seq["credit-notes"]:
            xero_id = _xero_link(note["linkedServices"], "externalService", "externalId")
            assert (xero_id is not None) is (note["status"] != "DRAFT")
            if xero_id is not None:
                twin = ix["credit_notes"][xero_id]
                assert twin["CreditNoteNumber"] == note["creditNoteNumber"]
                assert _xd(twin["Total"]) == Decimal(note["grossTotal"])


def _xero_line_differs(seq_lines: list[dict], groups: dict, twin: dict, field: str) -> bool:
    ordered = sorted(seq_lines, key=lambda ln: ln["index"])
    pairs = list(zip(ordered, twin["LineItems"], strict=True))
    if field == "line.description":
        return any(x["Description"] != f"{groups[s['groupId']]['title']}: {s['title']}" for s, x in pairs)
    if field == "line.quantity":
        return any(Decimal(str(x["Quantity"])) != Decimal(s["quantity"]) for s, x in pairs)
    if field == "line.rate":
        return any(Decimal(str(x["UnitAmount"])) != Decimal(s["rate"]) for s, x in pairs)
    if field == "line.tax_code":
        return any(_xd(x["TaxAmount"]) != Decimal(s["totalTax"]) for s, x in pairs)
    return False


def test_every_planted_xero_discrepancy_is_in_the_files(xdirty: tuple[dict, dict, Data]) -> None:
    manifest, settings, data = xdirty
    planted = [d for d in manifest["discrepancies"] if d["app"] == "xero"]
    ids = [d["id"] for d in manifest["discrepancies"]]
    assert len(ids) == len(set(ids))
    assert {d["tenant"] for d in planted} == set(XERO_TENANTS)
    for tenant in XERO_TENANTS:
        kinds = {d["kind"] for d in planted if d["tenant"] == tenant}
        assert kinds == set(DISCREPANCY_KINDS) - {"currency_differs"}, tenant  # a Xero contact's currency is a default
    for d in planted:
        assert d["kind"] in DISCREPANCY_KINDS and d["detail"]
        tenant, sid, aid, field = d["tenant"], d["sequence_id"], d["app_id"], d["field"]
        seq, x, xs = data[tenant]["sequence"], data[tenant]["xero"], settings[tenant]["apps"]["xero"]
        ix = _xero_index(x)
        customers = {c["id"]: c for c in seq["customers"]}
        invoices = {i["id"]: i for i in seq["invoices"]}
        notes = {n["id"]: n for n in seq["credit-notes"]}
        stored_contacts = {_xero_link(c["integrationIds"], "service", "id") for c in seq["customers"]}
        stored_invoices = {_xero_link(i["linkedServices"], "externalService", "externalId") for i in seq["invoices"]}
        entity, kind = d["entity"], d["kind"]
        if entity == "customer":
            contact = ix["contacts"].get(aid) if aid else None
            if kind == "missing_in_app":
                assert _xero_link(customers[sid]["integrationIds"], "service", "id") is None and aid is None
                assert all(c.get("ContactNumber") != sid and c["Name"] != customers[sid]["legalName"]
                           for c in x["contacts"])
            elif kind == "unlinked_candidate":
                assert _xero_link(customers[sid]["integrationIds"], "service", "id") is None
                assert contact["Name"] == customers[sid]["legalName"] and "ContactNumber" not in contact
            elif kind in ("importable", "not_importable"):
                assert sid is None and aid not in stored_contacts and "ContactNumber" not in contact
                pobox = contact["Addresses"][0]
                complete = bool(contact.get("EmailAddress")) and all(pobox.get(k) for k in (
                    "AddressLine1", "City", "PostalCode")) and len(pobox.get("Country", "")) == 2
                assert complete is (kind == "importable"), d
            else:
                customer, pobox = customers[sid], contact["Addresses"][0]
                assert _xero_link(customer["integrationIds"], "service", "id") == aid
                seq_value, app_value = {
                    "name": (customer["legalName"], contact["Name"]),
                    "billing_email": (customer["contacts"][0]["email"], contact.get("EmailAddress")),
                    "billing_address.line1": (customer["address"]["line1"], pobox["AddressLine1"]),
                    "billing_address.city": (customer["address"]["town"], pobox["City"]),
                    "billing_address.postal_code": (customer["address"]["postcode"], pobox["PostalCode"]),
                }[field]
                assert seq_value != app_value, d
        elif entity == "invoice":
            twin = ix["invoices"].get(aid) if aid else None
            invoice = invoices.get(sid) if sid else None
            if kind == "invalid":
                broken = [i for i in x["invoices"] if "InvoiceID" not in i or isinstance(i["Total"], str)]
                assert field in ("InvoiceID", "Total") and len(broken) == 2
                if field == "Total":
                    assert isinstance(twin["Total"], str)
            elif kind == "missing_in_sequence":
                assert sid is None and aid not in stored_invoices and twin["Status"] == "AUTHORISED"
                assert twin["InvoiceNumber"] not in {i.get("invoiceNumber") for i in seq["invoices"]}
            elif kind == "missing_in_app":
                assert aid is None and invoice["status"] in ("FINAL", "SENT")
                assert _xero_link(invoice["linkedServices"], "externalService", "externalId") is None
                assert invoice["invoiceNumber"] not in {i.get("InvoiceNumber") for i in x["invoices"]}
            elif kind == "unlinked_candidate":
                assert _xero_link(invoice["linkedServices"], "externalService", "externalId") is None
                assert twin["InvoiceNumber"] == invoice["invoiceNumber"]
            else:
                assert _xero_link(invoice["linkedServices"], "externalService", "externalId") == aid
                if field == "status":
                    assert (invoice["status"] == "VOIDED") is not (twin["Status"] == "VOIDED"), d
                elif field == "payment_status":
                    assert (invoice["paymentStatus"] == "PAID") is not (twin["Status"] == "PAID"), d
                    if kind == "stripe_link_ignored":
                        assert "LINK" in invoice["paymentOptions"] and twin["Status"] == "PAID"
                elif field == "invoice_date":
                    day = invoice["issueDate"] if settings[tenant]["invoice_date"] == "issue" \
                        else invoice["accountingDate"]
                    assert twin["DateString"] != f"{day}T00:00:00"
                elif field == "due_date":
                    assert twin["DueDateString"] != f"{invoice['dueDate']}T00:00:00"
                elif field == "number":
                    assert twin["InvoiceNumber"] != invoice["invoiceNumber"]
                elif field == "line.item":
                    lines = [ln for ln in seq["line-items"] if ln["invoiceId"] == sid]
                    got = {ln["LineItemID"]: ln.get("ItemCode") for ln in twin["LineItems"]}
                    assert any(xs["items"].get(ln["productId"], {}).get("item_code")
                               != got[_xero_link(ln["externalIds"], "key", "value")] for ln in lines)
                else:
                    groups = {g["id"]: g for g in seq["line-item-groups"] if g["invoiceId"] == sid}
                    lines = [ln for ln in seq["line-items"] if ln["invoiceId"] == sid]
                    assert _xero_line_differs(lines, groups, twin, field), d
        elif entity == "credit_note":
            note = notes[sid]
            if kind == "missing_in_app":
                assert _xero_link(note["linkedServices"], "externalService", "externalId") is None
                assert note["creditNoteNumber"] not in {c["CreditNoteNumber"] for c in x["credit-notes"]}
            elif field == "number":
                assert ix["credit_notes"][aid]["CreditNoteNumber"] != note["creditNoteNumber"]
            else:
                lines = [ln for ln in seq["credit-note-line-items"] if ln["creditNoteId"] == sid]
                twin = ix["credit_notes"][aid]
                assert any(Decimal(str(xl["UnitAmount"])) != Decimal(ln["rate"])
                           for ln, xl in zip(sorted(lines, key=lambda ln: ln["index"]), twin["LineItems"],
                                             strict=True))
        elif entity == "product":
            items_by_id = {i["ItemID"]: i for i in x["items"]}
            if kind == "product_unmapped":
                assert sid not in xs["items"] and aid is None
            elif kind == "item_name_not_unique":
                name = next(p["name"] for p in seq["products"] if p["id"] == sid)
                assert sid not in xs["items"] and items_by_id[aid]["Name"] == name
            else:
                assert items_by_id[aid]["SalesDetails"]["AccountCode"] != xs["items"][sid]["account_code"]
        else:
            assert entity == "tax_category" and kind == "tax_code_unresolved"
            code = xs["tax_codes"][sid]
            assert code not in ix["tax"] or ix["tax"][code]["Status"] != "ACTIVE"


def test_xero_records_match_the_openapi_schemas(xdirty: tuple[dict, dict, Data]) -> None:
    import yaml

    spec = yaml.load((SPECS / "xero" / "xero_accounting.yaml").read_text(),
                     Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # the C loader when built: 10x faster
    schemas = {"contacts": "Contact", "invoices": "Invoice", "credit-notes": "CreditNote", "payments": "Payment",
               "items": "Item", "accounts": "Account", "tax-rates": "TaxRate", "currencies": "Currency",
               "organisation": "Organisation"}
    _, _, data = xdirty
    for tenant in XERO_TENANTS:
        for collection, name in schemas.items():
            validator = Draft7Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})
            for record in data[tenant]["xero"][collection]:
                errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(record)]
                if collection == "invoices" and isinstance(record["Total"], str):
                    assert errors, record  # the planted contract-breaking record (a locale-formatted Total)
                    continue
                assert not errors, (tenant, collection, errors[:5])


# ----- CRMs: HubSpot, Salesforce, Attio -------------------------------------------------------------------------

CRM_TENANTS = {"acme-uk": {"hubspot", "attio"}, "globex-us": {"salesforce"}, "nordwind-de": {"attio"}}
COUNTRY_BY_NAME = {c.name: c.alpha_2 for c in pycountry.countries}


def _crm_load(root: Path, tenant: str, app: str) -> dict[str, list[dict]]:
    return {c: orjson.loads((root / tenant / app / f"{c}.json").read_bytes()) for c in CRM_COLLECTIONS[app]}


def _attio_first(values: dict, slug: str, field: str = "value") -> Any:
    found = values.get(slug) or []
    return found[0].get(field) if found else None


def _crm_view(app: str, raw: dict[str, list[dict]]) -> dict[str, Any]:
    """One shape for the three CRMs: companies by id, deals (company id, won/lost/open, amount), contact emails."""
    f = CRM_SYNC_FIELDS[app]
    companies, deals, emails = {}, [], {}
    if app == "hubspot":
        for c in raw["companies"]:
            p = c["properties"]
            assert all(isinstance(v, str) for v in p.values()), p  # every HubSpot property value is a string
            companies[c["id"]] = {
                "name": p["name"], "domain": p.get("domain"), "line1": p.get("address"), "city": p.get("city"),
                "postcode": p.get("zip"), "country": COUNTRY_BY_NAME.get(p.get("country")),
                "seq_id": p.get(f["sequence_customer_id"]), "status": p.get(f["billing_status"]),
                "mrr": Decimal(p[f["mrr"]]) if p.get(f["mrr"]) is not None else None}
        primary = {link["from"]["id"]: link["to"][0]["toObjectId"] for link in raw["associations"]}
        for d in raw["deals"]:
            p = d["properties"]
            stage = {"closedwon": "won", "closedlost": "lost"}.get(p["dealstage"], "open")
            deals.append((primary[d["id"]], stage, Decimal(p["amount"]), p["closedate"][:10]))
        for person in raw["contacts"]:
            emails.setdefault(person["properties"]["associatedcompanyid"], []).append(
                person["properties"].get("email"))
    elif app == "salesforce":
        for a in raw["Account"]:
            companies[a["Id"]] = {
                "name": a["Name"], "domain": (a.get("Website") or "").removeprefix("https://").rstrip("/") or None,
                "line1": (a["BillingStreet"] or "").split("\n")[0] or None, "city": a["BillingCity"],
                "postcode": a["BillingPostalCode"], "country": COUNTRY_BY_NAME.get(a["BillingCountry"]),
                "seq_id": a[f["sequence_customer_id"]], "status": a[f["billing_status"]],
                "mrr": Decimal(str(a[f["mrr"]])) if a[f["mrr"]] is not None else None}
            assert a["BillingAddress"]["postalCode"] == a["BillingPostalCode"]  # compound and components agree
        for o in raw["Opportunity"]:
            stage = "won" if o["IsWon"] else "lost" if o["IsClosed"] else "open"
            assert o["IsWon"] == (o["StageName"] == "Closed Won")
            deals.append((o["AccountId"], stage, Decimal(str(o["Amount"])), o["CloseDate"]))
        for person in raw["Contact"]:
            emails.setdefault(person["AccountId"], []).append(person["Email"])
    else:
        for c in raw["companies"]:
            v = c["values"]
            assert all(isinstance(items, list) for items in v.values())  # values are arrays of value objects
            location = (v.get("primary_location") or [{}])[0]
            mrr = _attio_first(v, f["mrr"], "currency_value")
            companies[c["id"]["record_id"]] = {
                "name": _attio_first(v, "name"), "domain": _attio_first(v, "domains", "domain"),
                "line1": location.get("line_1"), "city": location.get("locality"),
                "postcode": location.get("postcode"), "country": location.get("country_code"),
                "seq_id": _attio_first(v, f["sequence_customer_id"]),
                "status": (_attio_first(v, f["billing_status"], "option") or {}).get("title"),
                "mrr": Decimal(str(mrr)) if mrr is not None else None}
        for d in raw["deals"]:
            v = d["values"]
            title = _attio_first(v, "stage", "status")["title"]
            stage = {"Won 🎉": "won", "Lost": "lost"}.get(title, "open")
            deals.append((_attio_first(v, "associated_company", "target_record_id"), stage,
                          Decimal(str(_attio_first(v, "value", "currency_value"))), _attio_first(v, "close_date")))
        for person in raw["people"]:
            v = person["values"]
            emails.setdefault(_attio_first(v, "company", "target_record_id"), []).append(
                _attio_first(v, "email_addresses", "email_address"))
    return {"companies": companies, "deals": deals, "emails": emails}


def _sequence_truth(seq: dict[str, list[dict]]) -> tuple[dict[str, dict], dict[str, Decimal]]:
    """Sequence customers by id and their MRR as the generator defines it (net billed, issued, last 30 days)."""
    customers = {c["id"]: c for c in seq["customers"]}
    since = (REFERENCE_TIME - timedelta(days=30)).date().isoformat()
    mrr: dict[str, Decimal] = {}
    for invoice in seq["invoices"]:
        if invoice["status"] in ("FINAL", "SENT") and invoice.get("issueDate", "") >= since:
            mrr[invoice["customerId"]] = mrr.get(invoice["customerId"], Decimal(0)) + Decimal(invoice["netTotal"])
    return customers, mrr


def _expected_status(customer: dict) -> str:
    return "archived" if customer.get("archivedAt") else "active"


def test_crm_files_exist_for_the_right_tenants_and_counts_match(xdirty_root: Path) -> None:
    manifest = orjson.loads((xdirty_root / "manifest.json").read_bytes())
    settings = orjson.loads((xdirty_root / "settings.json").read_bytes())
    for tenant in manifest["tenants"]:
        present = {app for app in CRM_APPS if (xdirty_root / tenant / app).is_dir()}
        assert present == CRM_TENANTS[tenant], tenant
        assert set(manifest["counts"][tenant]) & set(CRM_APPS) == present
        for app in present:
            raw = _crm_load(xdirty_root, tenant, app)
            assert manifest["counts"][tenant][app] == {c: len(r) for c, r in raw.items()}
            assert all(raw[c] for c in CRM_COLLECTIONS[app]), (tenant, app)
            own = settings[tenant]["apps"][app]
            assert own["sync_fields"] == CRM_SYNC_FIELDS[app]
            assert set(own["link_fields"]) == {app}


def test_crms_change_no_other_byte_and_each_flag_works_alone(tmp_path: Path) -> None:
    off, on, hubspot_off = tmp_path / "off", tmp_path / "on", tmp_path / "no-hubspot"
    generate(off, invoices=150, seed=5, tenants=4, **NO_CRM)
    generate(on, invoices=150, seed=5, tenants=4)
    generate(hubspot_off, invoices=150, seed=5, tenants=4, hubspot=False)
    before, after, partial = _tree_bytes(off), _tree_bytes(on), _tree_bytes(hubspot_off)
    crm_files = {n for n in after if n.split("/")[1:2] and n.split("/")[1] in CRM_APPS}
    assert {(n.split("/")[0], n.split("/")[1]) for n in crm_files} == {
        ("acme-uk", "hubspot"), ("acme-uk", "attio"), ("globex-us", "salesforce"), ("nordwind-de", "attio"),
        ("acme-uk-2", "hubspot"), ("acme-uk-2", "attio")}
    assert before.keys() == after.keys() - crm_files
    for name, content in before.items():
        if name not in ("manifest.json", "settings.json"):
            assert after[name] == content, name
    assert partial.keys() == after.keys() - {n for n in crm_files if "/hubspot/" in n}
    assert all(partial[n] == after[n] for n in partial if "/attio/" in n or "/salesforce/" in n)
    m_off, m_on = orjson.loads(before["manifest.json"]), orjson.loads(after["manifest.json"])
    assert [d for d in m_on["discrepancies"] if d["app"] not in CRM_APPS] == m_off["discrepancies"]
    for tenant, apps in m_off["counts"].items():
        assert {a: c for a, c in m_on["counts"][tenant].items() if a not in CRM_APPS} == apps
    s_off, s_on = orjson.loads(before["settings.json"]), orjson.loads(after["settings.json"])
    for tenant, body in s_on.items():
        apps = {a: v for a, v in body.get("apps", {}).items() if a not in CRM_APPS}
        assert {k: v for k, v in body.items() if k != "apps"} | ({"apps": apps} if apps else {}) == s_off[tenant]
    # The CLI switch gives the same bytes as the flags.
    cli = tmp_path / "cli"
    assert main([str(cli), "--invoices", "150", "--seed", "5", "--tenants", "4", "--no-crm"]) == 0
    assert _tree_bytes(cli) == before


def test_clean_crms_agree_with_sequence(xclean_root: Path) -> None:
    manifest = orjson.loads((xclean_root / "manifest.json").read_bytes())
    assert manifest["discrepancies"] == []
    for tenant, apps in CRM_TENANTS.items():
        seq = {c: orjson.loads((xclean_root / tenant / "sequence" / f"{c}.json").read_bytes())
               for c in ("customers", "invoices")}
        customers, mrr = _sequence_truth(seq)
        active = {cid for cid, c in customers.items() if c["status"] != "DRAFT"}
        for app in apps:
            view = _crm_view(app, _crm_load(xclean_root, tenant, app))
            linked = {c["seq_id"]: (cid, c) for cid, c in view["companies"].items() if c["seq_id"]}
            assert set(linked) == active, (tenant, app)  # every Sequence customer, once
            won_by_company = {d[0] for d in view["deals"] if d[1] == "won"}
            for seq_id, (cid, company) in linked.items():
                customer = customers[seq_id]
                address = customer["address"]
                assert (company["name"], company["line1"], company["city"], company["postcode"],
                        company["country"]) == (customer["legalName"], address["line1"], address["town"],
                                                address["postcode"], address["country"]), (app, seq_id)
                assert company["status"] == _expected_status(customer)
                assert company["mrr"] == mrr.get(seq_id, Decimal(0)), (app, seq_id)
                assert cid in won_by_company  # the deal that made them a customer
                contact_emails = {c["email"] for c in customer["contacts"] if c["billingPreference"] != "NONE"}
                assert contact_emails <= set(view["emails"][cid])
            prospects = set(view["companies"]) - {cid for cid, _ in linked.values()}
            assert prospects and not prospects & won_by_company  # prospects only: no closed-won deal yet
            assert all(d[0] in view["companies"] for d in view["deals"])
            assert all(d[3] <= REFERENCE_TIME.date().isoformat() for d in view["deals"] if d[1] != "open")


def test_every_planted_crm_discrepancy_is_in_the_files(xdirty_root: Path) -> None:
    manifest = orjson.loads((xdirty_root / "manifest.json").read_bytes())
    planted = [d for d in manifest["discrepancies"] if d["app"] in CRM_APPS]
    assert {(d["tenant"], d["app"]) for d in planted} == {(t, a) for t, apps in CRM_TENANTS.items() for a in apps}
    assert {d["kind"] for d in planted} <= set(DISCREPANCY_KINDS)
    for tenant, apps in CRM_TENANTS.items():
        seq = {c: orjson.loads((xdirty_root / tenant / "sequence" / f"{c}.json").read_bytes())
               for c in ("customers", "invoices")}
        customers, mrr = _sequence_truth(seq)
        for app in apps:
            mine = [d for d in planted if d["tenant"] == tenant and d["app"] == app]
            kinds = {(d["kind"], d["field"]) for d in mine}
            assert kinds == {("missing_in_app", None), ("unlinked_candidate", None), ("importable", None),
                             ("not_importable", "billing_email"), ("not_importable", "billing_address.postal_code"),
                             *(("field_differs", f) for f in ("name", "billing_address.line1", "billing_address.city",
                                                             "billing_address.postal_code", "billing_status", "mrr"))}
            view = _crm_view(app, _crm_load(xdirty_root, tenant, app))
            companies = view["companies"]
            by_seq = {c["seq_id"]: cid for cid, c in companies.items() if c["seq_id"]}
            won = {d[0] for d in view["deals"] if d[1] == "won"}
            planted_seq = {d["sequence_id"] for d in mine if d["sequence_id"]}
            planted_app = {d["app_id"] for d in mine if d["app_id"]}
            for d in mine:
                sid, aid = d["sequence_id"], d["app_id"]
                if d["kind"] == "missing_in_app":
                    assert sid in customers and sid not in by_seq and aid is None
                    name = customers[sid]["legalName"]
                    assert all(c["name"] != name for c in companies.values()), d
                    continue
                company = companies[aid]
                if d["kind"] in ("importable", "not_importable"):
                    assert sid is None and company["seq_id"] is None and aid in won, d
                    assert company["name"] not in {c["legalName"] for c in customers.values()}
                    emails = [e for e in view["emails"].get(aid, []) if e]
                    complete = bool(emails) and all(company[k] for k in ("line1", "city", "postcode", "country"))
                    assert complete is (d["kind"] == "importable"), d
                    if d["field"] == "billing_email":
                        assert not emails
                    elif d["field"]:
                        assert company["postcode"] is None
                elif d["kind"] == "unlinked_candidate":
                    customer = customers[sid]
                    assert company["seq_id"] is None and sid not in by_seq, d
                    assert company["name"] == customer["legalName"] and company["status"] is None
                else:  # field_differs: linked, and exactly that field differs
                    customer = customers[sid]
                    assert by_seq[sid] == aid, d
                    address = customer["address"]
                    expected = {"name": customer["legalName"], "billing_address.line1": address["line1"],
                                "billing_address.city": address["town"],
                                "billing_address.postal_code": address["postcode"],
                                "billing_status": _expected_status(customer), "mrr": mrr.get(sid, Decimal(0))}
                    got = {"name": company["name"], "billing_address.line1": company["line1"],
                           "billing_address.city": company["city"], "billing_address.postal_code": company["postcode"],
                           "billing_status": company["status"], "mrr": company["mrr"]}
                    assert {k for k in expected if expected[k] != got[k]} == {d["field"]}, d
            # Nothing else disagrees: unplanted linked companies match Sequence, unplanted CRM-only ones are prospects.
            for cid, company in companies.items():
                if cid in planted_app:
                    continue
                if company["seq_id"] is None:
                    assert cid not in won and company["name"] not in {c["legalName"] for c in customers.values()}
                    continue
                customer = customers[company["seq_id"]]
                assert company["seq_id"] not in planted_seq
                assert (company["name"], company["postcode"], company["status"], company["mrr"]) == (
                    customer["legalName"], customer["address"]["postcode"], _expected_status(customer),
                    mrr.get(company["seq_id"], Decimal(0)))
            missing = {sid for sid, c in customers.items() if c["status"] != "DRAFT" and sid not in by_seq}
            assert missing == {d["sequence_id"] for d in mine if d["kind"] in ("missing_in_app", "unlinked_candidate")}


def test_crm_fixtures_load_in_the_emulators_and_serve_a_page(xdirty_root: Path) -> None:
    manifest = orjson.loads((xdirty_root / "manifest.json").read_bytes())
    with start_sandbox(xdirty_root, apps=CRM_APPS) as box:
        assert set(box.urls) == set(CRM_APPS)
        for tenant in ("acme-uk", "nordwind-de"):
            counts = manifest["counts"][tenant]
            headers = {"Authorization": f"Bearer {identity.attio_access_token(tenant)}"}
            for obj in ("companies", "people", "deals"):
                page = httpx.post(f"{box.urls['attio']}/v2/objects/{obj}/records/query", headers=headers,
                                  json={"limit": 1000}, timeout=10)
                assert page.status_code == 200, page.text
                assert len(page.json()["data"]) == min(1000, counts["attio"][obj])
            won = httpx.post(f"{box.urls['attio']}/v2/objects/deals/records/query", headers=headers,
                             json={"filter": {"stage": "Won 🎉"}}, timeout=10).json()["data"]
            assert won and all(r["values"]["stage"][0]["status"]["title"] == "Won 🎉" for r in won)
        headers = {"Authorization": f"Bearer {identity.hubspot_access_token('acme-uk')}"}
        page = httpx.get(f"{box.urls['hubspot']}/crm/v3/objects/companies", headers=headers, timeout=10,
                         params={"limit": 100, "properties": "name,sequence_customer_id,sequence_mrr"})
        assert page.status_code == 200, page.text
        results = page.json()["results"]
        assert len(results) == min(100, manifest["counts"]["acme-uk"]["hubspot"]["companies"])
        assert any(r["properties"]["sequence_customer_id"] for r in results)
        deal_id = orjson.loads((xdirty_root / "acme-uk" / "hubspot" / "deals.json").read_bytes())[0]["id"]
        links = httpx.get(f"{box.urls['hubspot']}/crm/v4/objects/deals/{deal_id}/associations/companies",
                          headers=headers, timeout=10)
        assert links.status_code == 200 and links.json()["results"], links.text
        token = httpx.post(f"{box.urls['salesforce']}/services/oauth2/token", data={
            "grant_type": "refresh_token", "refresh_token": identity.salesforce_initial_refresh_token("globex-us"),
            "client_id": identity.SALESFORCE_CLIENT_ID, "client_secret": identity.SALESFORCE_CLIENT_SECRET},
            timeout=10).json()
        soql = ("SELECT Id, Name, BillingAddress, Sequence_Customer_Id__c, Sequence_MRR__c FROM Account "
                "WHERE Sequence_Customer_Id__c != null")
        answer = httpx.get(f"{token['instance_url']}/services/data/v62.0/query", params={"q": soql}, timeout=10,
                           headers={"Authorization": f"Bearer {token['access_token']}"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["totalSize"] > 0 and body["records"][0]["BillingAddress"]["city"]
        won = httpx.get(f"{token['instance_url']}/services/data/v62.0/query", timeout=10,
                        params={"q": "SELECT Id, AccountId, Amount FROM Opportunity WHERE IsWon = true"},
                        headers={"Authorization": f"Bearer {token['access_token']}"})
        assert won.status_code == 200 and won.json()["totalSize"] > 0, won.text
