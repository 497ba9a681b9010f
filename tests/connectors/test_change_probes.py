"""The cheap change signals the near-real-time sensor polls (`<client>.changed_since(instant)`), over HTTP to the
emulators: nothing changed -> None; a change made through the app's API -> its instant; asked again from that
instant -> None (so one change triggers one run). Attio has no cheap signal (it relies on the schedule)."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from connectors.auth import TokenStore
from connectors.clients import build_client
from connectors.registry import parse_registry
from connectors.sandbox.launcher import start_sandbox
from connectors.sandbox.salesforce import make_id


def probe_cycle(client, change) -> None:
    start = datetime.now(UTC)
    assert client.changed_since(start) is None
    change()
    seen = client.changed_since(start - timedelta(seconds=1))
    assert seen is not None and seen >= start - timedelta(seconds=1)
    assert client.changed_since(seen) is None


@pytest.fixture(scope="module")
def clients(extraction):
    tenant = extraction.registry.tenants[0]

    def make(app: str):
        return extraction.resource.client(extraction.registry.get(f"{tenant}.{app}"))

    return make


def test_quickbooks_cdc_signal(clients):
    with clients("quickbooks") as client:
        invoice = next(r for page in client.iter_query("Invoice") for r in page)

        def change():
            client.update("Invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"],
                                      "CustomerMemo": {"value": "probe"}}, request_id="probe-upd-1")

        probe_cycle(client, change)


def test_xero_if_modified_since_signal(clients):
    with clients("xero") as client:
        contact = client.get_page("Contacts", page=1, page_size=1).records[0]
        probe_cycle(client, lambda: client.update("Contacts", contact["ContactID"], {"EmailAddress": "probe@x.example"},
                                                  idempotency_key="probe-upd-1"))


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """HubSpot and Salesforce are not in the demo fixtures: one company, one account of their own."""
    root = tmp_path_factory.mktemp("crm")
    stamp = "2025-03-05T10:39:50.000Z"
    for app, name, rows in (
        ("hubspot", "companies", [{"id": "101", "properties": {"name": "Nordwind GmbH"}, "createdAt": stamp,
                                   "updatedAt": stamp, "archived": False}]),
        ("salesforce", "Account", [{"Id": make_id("001", 1), "Name": "Nordwind GmbH",
                                    "SystemModstamp": "2025-03-05T10:39:50.000+0000"}]),
    ):
        (root / "acme" / app).mkdir(parents=True, exist_ok=True)
        (root / "acme" / app / f"{name}.json").write_bytes(orjson.dumps(rows))
    with start_sandbox(root, apps=["hubspot", "salesforce"]) as box:
        registry = parse_registry(box.registry_document())
        store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
        yield lambda app: build_client(registry.get(f"acme.{app}"), token_store=store, environ=box.environment())


def test_hubspot_search_signal(crm):
    with crm("hubspot") as client:
        company = next(r for page in client.iter_pages("companies") for r in page)
        probe_cycle(client, lambda: client.update("companies", company["id"], {"name": "Probe GmbH"}))


def test_salesforce_systemmodstamp_signal(crm):
    with crm("salesforce") as client:
        account = next(client.query("SELECT Id FROM Account LIMIT 1"))
        probe_cycle(client, lambda: client.update("Account", account["Id"], {"Name": "Probe AG"}))


def test_sequence_newest_invoices_signal(clients):
    with clients("sequence") as client:
        unpaid = next(r for page in client.iter_invoices(invoiceStatus="SENT", invoicePaymentStatus="UNPAID")
                      for r in page)
        probe_cycle(client, lambda: client.set_payment_status(unpaid["id"], "PAID"))
