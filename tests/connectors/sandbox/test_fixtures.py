import orjson
import pytest

from connectors.sandbox.fixtures import FixtureLayoutError, load_fixtures

KNOWN = {"sequence": frozenset({"customers", "invoices"}), "quickbooks": frozenset({"invoice"})}


def write(path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value if isinstance(value, bytes) else orjson.dumps(value))


def test_a_folder_in_the_layout_loads_by_tenant_app_and_collection(tmp_path):
    write(tmp_path / "acme" / "sequence" / "customers.json", [{"id": "c1"}])
    write(tmp_path / "acme" / "quickbooks" / "invoice.json", [{"Id": "1"}, {"Id": "2"}])
    write(tmp_path / "manifest.json", {})
    fixtures = load_fixtures(tmp_path, KNOWN)
    assert fixtures == {"acme": {"sequence": {"customers": [{"id": "c1"}]},
                                 "quickbooks": {"invoice": [{"Id": "1"}, {"Id": "2"}]}}}


def test_a_folder_off_the_layout_is_refused_with_every_problem_named(tmp_path):
    write(tmp_path / "acme" / "sequence" / "customers.json", {"items": []})  # an envelope, not an array
    write(tmp_path / "acme" / "sequence" / "payments.json", [])  # no such collection
    write(tmp_path / "acme" / "stripe" / "charges.json", [])  # no such app
    write(tmp_path / "acme" / "quickbooks" / "invoice.json", b"[{\"Id\": ")  # broken JSON
    write(tmp_path / "Bad Tenant" / "sequence" / "customers.json", [])
    write(tmp_path / "acme" / "quickbooks" / "notes.txt", b"x")
    write(tmp_path / "stray.json", [])
    with pytest.raises(FixtureLayoutError) as err:
        load_fixtures(tmp_path, KNOWN)
    message = str(err.value)
    for expected in (
        "acme/sequence/customers.json: expected a JSON array of records, found dict",
        "acme/sequence/payments.json: unknown collection 'payments' for sequence",
        "acme/stripe/: unknown app 'stripe'",
        "acme/quickbooks/invoice.json: not valid JSON",
        "Bad Tenant/: tenant folder names are lowercase",
        "acme/quickbooks/notes.txt: expected <collection>.json files only",
        "stray.json: a file at the top level",
    ):
        assert expected in message


def test_a_missing_or_empty_folder_is_refused(tmp_path):
    with pytest.raises(FixtureLayoutError, match="does not exist"):
        load_fixtures(tmp_path / "nope", KNOWN)
    with pytest.raises(FixtureLayoutError, match="no tenant folders"):
        load_fixtures(tmp_path, KNOWN)
