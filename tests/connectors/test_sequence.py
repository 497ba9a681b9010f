"""SequenceClient against the Sequence emulator served over HTTP on loopback, with small inline fixtures."""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors.errors import (
    AuthenticationError,
    BadResponse,
    NotFound,
    RateLimited,
    ServerError,
    TransportFailure,
    ValidationFailed,
)
from connectors.http import RateLimiter
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.identity import sequence_credentials
from connectors.sandbox.sequence import SequenceEmulator
from connectors.sequence import SequenceClient

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ADDRESS = {"line1": "Hafenstrasse 5", "town": "Hamburg", "postcode": "20457", "country": "DE"}


def stamp(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def customer(i: int, **extra) -> dict:
    return {"id": f"cus-{i:02d}", "createdAt": stamp(i), "legalName": f"Customer {i} GmbH", "address": ADDRESS,
            "taxStatus": "TAXED", "status": "ACTIVE", "integrationIds": [], "customProperties": {},
            "contacts": [{"id": f"con-{i:02d}", "name": "Accounts", "email": f"ap@c{i}.example",
                          "billingPreference": "PRIMARY", "createdAt": stamp(i), "updatedAt": stamp(i)}], **extra}


def invoice(i: int, status: str, payment: str = "UNPAID", **extra) -> dict:
    return {"id": f"inv-{i}", "status": status, "paymentStatus": payment, "currency": "EUR",
            "customerId": "cus-01", "invoiceNumber": f"INV0000{i}", "accountingDate": "2025-03-02",
            "netTotal": "100.00", "totalTax": "0.00", "grossTotal": "100.00", "balance": "100.00",
            "balanceVersion": 0, "metadata": [], "createdAt": stamp(100 + i), "updatedAt": stamp(200 + i), **extra}


def fixtures() -> dict:
    acme = {
        "customers": [customer(i) for i in range(1, 7)] + [customer(7, archivedAt=stamp(50))],
        "customer-aliases": [{"id": "ali-1", "customerId": "cus-01", "value": "qb-1", "createdAt": stamp(1)}],
        "invoices": [invoice(1, "DRAFT"), invoice(2, "FINAL"), invoice(3, "SENT"), invoice(4, "SENT", "PAID"),
                     invoice(5, "VOIDED")],
        "line-item-groups": [{"id": "grp-1", "invoiceId": "inv-1", "title": "Platform", "index": 0,
                              "netTotal": "100.00", "totalTax": "0.00", "grossTotal": "100.00",
                              "taxCategory": {"id": "tax-std", "name": "Standard"}}],
        "line-items": [{"id": f"lin-{n}", "invoiceId": "inv-1", "groupId": "grp-1", "title": f"Fee {n}",
                        "quantity": "1", "rate": "25.00", "taxRate": "0.0", "netTotal": "25.00", "totalTax": "0.00",
                        "grossTotal": "25.00", "index": n, "externalIds": []} for n in range(4)],
        "tax-categories": [{"id": "tax-std", "name": "Standard"}, {"id": "tax-zero", "name": "Zero rated"}],
        "products": [{"id": f"prd-{n}", "name": f"Product {n}", "taxCategoryId": "tax-std",
                      "createdAt": stamp(n), "updatedAt": stamp(n)} for n in range(3)],
        "invoice-payment-settings": [{"id": "pay-1", "invoiceId": "inv-3", "customerId": "cus-01",
                                      "paymentProvider": "STRIPE"}],
        "credit-notes": [{"id": "crn-1", "status": "DRAFT", "invoiceId": "inv-3", "currency": "EUR",
                          "customerId": "cus-01", "netTotal": "10.00", "totalTax": "0.00", "grossTotal": "10.00"}],
    }
    globex = {"customers": [{**customer(1), "id": "globex-cus-1", "legalName": "Globex Corp"}]}
    return {"acme": acme, "globex": globex}


@pytest.fixture
def served():
    with ServedEmulator(SequenceEmulator(fixtures())) as served:
        yield served


@pytest.fixture
def control(served, control_for):
    return control_for(served.url)


@pytest.fixture
def client(served, fast_retry):
    with SequenceClient(served.url, *sequence_credentials("acme"), retry=fast_retry) as client:
        yield client


def ids(pages) -> list[str]:
    return [row["id"] for page in pages for row in page]


# ----- reads ---------------------------------------------------------------------------------------------------------


def test_iter_pages_follows_cursors_to_the_last_page(client, control):
    pages = list(client.iter_pages("/customers", {"includeArchived": "true"}, limit=2))
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert ids(pages) == [f"cus-{i:02d}" for i in range(7, 0, -1)]  # newest created first
    afters = [r["query"] for r in control.requests("/customers")]
    assert "after=" not in afters[0] and all("after=" in q for q in afters[1:])


def test_iter_customers_yields_full_records_in_list_order(client):
    pages = list(client.iter_customers())
    rows = [row for page in pages for row in page]
    assert [r["id"] for r in rows] == [f"cus-{i:02d}" for i in range(7, 0, -1)]
    assert all(r["contacts"][0]["email"].startswith("ap@") and r["status"] == "ACTIVE" for r in rows)
    assert rows[0]["archivedAt"] == stamp(50)  # archived customers are part of a sweep
    assert ids(client.iter_customers(include_archived=False)) == [f"cus-{i:02d}" for i in range(6, 0, -1)]


def test_invoice_reads(client):
    assert sorted(ids(client.iter_invoices(invoiceStatus="SENT"))) == ["inv-3", "inv-4"]
    assert len(ids(client.iter_invoices())) == 5
    assert client.get_invoice("inv-3")["paymentStatus"] == "UNPAID"
    assert sorted(line["id"] for line in client.list_invoice_lines("inv-1")) == ["lin-0", "lin-1", "lin-2", "lin-3"]
    assert [g["title"] for g in client.list_invoice_groups("inv-1")] == ["Platform"]
    assert client.get_invoice_payment_settings("inv-3")["paymentProvider"] == "STRIPE"
    assert client.get_invoice_payment_settings("inv-2") is None
    assert ids(client.iter_credit_notes()) == ["crn-1"]
    assert client.list_credit_note_lines("crn-1") == [] and client.list_credit_note_groups("crn-1") == []
    assert sorted(ids(client.iter_products())) == ["prd-0", "prd-1", "prd-2"]
    assert sorted(ids(client.iter_tax_categories())) == ["tax-std", "tax-zero"]


def test_lookups_that_find_nothing(client):
    assert client.get_customer_by_alias("qb-1")["id"] == "cus-01"
    assert client.get_customer_by_alias("qb-404") is None
    with pytest.raises(NotFound) as info:
        client.get_invoice("inv-404")
    assert str(info.value).startswith("sequence 404 [notFound] Invoice inv-404 not found (GET /invoices/inv-404)")


def test_another_tenants_records_are_invisible(client):
    with pytest.raises(NotFound):
        client.get_customer("globex-cus-1")


def test_incremental_sweep_on_updated_at(client):
    first = [row for page in client.iter_invoices() for row in page]
    watermark = max(datetime.fromisoformat(r["updatedAt"].replace("Z", "+00:00")) for r in first)
    at_watermark = {r["id"] for r in first if r["updatedAt"] == stamp(205)}
    client.set_payment_status("inv-3", "PAID")
    changed = ids(client.iter_invoices(updated_since=watermark))
    assert set(changed) == {"inv-3"} | at_watermark
    with pytest.raises(ValueError, match="timezone-aware"):
        list(client.iter_invoices(updated_since=datetime(2025, 1, 1)))


# ----- writes ---------------------------------------------------------------------------------------------------------


def test_create_an_invoice_end_to_end(client, control):
    body = {"legalName": "Nordwind GmbH", "address": ADDRESS, "taxStatus": "REVERSE_CHARGED",
            "contacts": [{"name": "AP", "email": "ap@nordwind.example", "billingPreference": "PRIMARY"}],
            "customerAliases": ["qb-58"]}
    created = client.create_customer(body)
    assert client.get_customer_by_alias("qb-58")["id"] == created["id"]
    updated = client.update_customer(created["id"], {**body, "label": "EU"})
    assert updated["label"] == "EU"
    product = client.create_product({"name": "Platform fee", "taxCategoryId": "tax-std"})
    draft = client.create_invoice({"customerId": created["id"], "currency": "EUR", "reference": "qb-inv-1042"})
    group = client.create_line_item_group(draft["id"], {"title": "Platform", "taxCategoryId": "tax-std"})
    client.create_line_item(draft["id"], {"title": "Platform fee", "quantity": "2", "rate": "600.00",
                                          "taxRate": "0.2", "externalIds": [], "groupId": group["id"],
                                          "productId": product["id"]})
    final = client.finalize_invoice(draft["id"])
    assert final["status"] == "FINAL" and final["grossTotal"] == "1440.00"
    assert client.set_payment_status(draft["id"], "PAID")["paymentStatus"] == "PAID"
    assert client.void_invoice(draft["id"])["status"] == "VOIDED"
    ops = [(w["op"], w["entity"]) for w in control.writes()]
    assert ops == [("create", "customer"), ("update", "customer"), ("create", "product"), ("create", "invoice"),
                   ("create", "line_item_group"), ("create", "line_item"), ("finalize", "invoice"),
                   ("payment_status", "invoice"), ("void", "invoice")]
    with pytest.raises(ValueError):
        client.set_payment_status(draft["id"], "SETTLED")


def test_validation_error_names_the_field_and_is_not_retried(client, control):
    with pytest.raises(ValidationFailed) as info:
        client.create_customer({"legalName": "", "address": ADDRESS, "taxStatus": "TAXED", "contacts": []})
    assert info.value.code == "validationError" and "legalName: legalName should not be blank" in str(info.value)
    assert len(control.requests("/customers")) == 1 and control.writes() == []


def test_wrong_credentials_and_unknown_version(served, fast_retry, control):
    client_id, secret = sequence_credentials("acme")
    with SequenceClient(served.url, client_id, "wrong-secret-value", retry=fast_retry) as bad:
        with pytest.raises(AuthenticationError) as info:
            bad.get_customer("cus-01")
    assert "wrong-secret-value" not in str(info.value) and len(control.requests("/customers")) == 1
    with SequenceClient(served.url, client_id, secret, version="1999-01-01", retry=fast_retry) as old:
        with pytest.raises(ValidationFailed) as info:
            old.get_customer("cus-01")
    assert info.value.code == "UnrecognisedApiVersion"


def test_customer_alias_with_an_idempotency_key_is_retried_and_written_once(client, control):
    control.fault("status", path="/customer-aliases", status=503, method="POST")
    alias = client.create_customer_alias("cus-02", "crm-2", label="CRM", idempotency_key="alias-cus-02-crm-2")
    again = client.create_customer_alias("cus-02", "crm-2", label="CRM", idempotency_key="alias-cus-02-crm-2")
    assert alias == again and alias["customerId"] == "cus-02"
    assert len(control.requests("/customer-aliases")) == 3
    assert [w["entity"] for w in control.writes()] == ["customer_alias"]


def test_a_create_is_not_resent_after_a_server_error(client, control):
    control.fault("status", path="/customers", status=500, method="POST")
    with pytest.raises(ServerError):
        client.create_customer({"legalName": "X", "address": ADDRESS, "taxStatus": "TAXED",
                                "contacts": [{"name": "A", "email": "a@x.example", "billingPreference": "PRIMARY"}]})
    assert len(control.requests("/customers")) == 1


# ----- faults ---------------------------------------------------------------------------------------------------------


def test_429_waits_for_retry_after(client, control):
    control.fault("status", path="/invoices/inv-2", status=429, retry_after="1")
    started = time.monotonic()
    assert client.get_invoice("inv-2")["id"] == "inv-2"
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in control.requests("/invoices/inv-2")] == [429, 200]


def test_5xx_then_success(client, control):
    control.fault("status", path="/invoices", status=503, times=2)
    assert len(ids(client.iter_invoices())) == 5
    assert [r["status"] for r in control.requests("/invoices")] == [503, 503, 200]


def test_connection_reset_is_retried(client, control):
    control.fault("reset", path="/customers/cus-03")
    assert client.get_customer("cus-03")["id"] == "cus-03"
    assert len(control.requests("/customers/cus-03")) == 2


def test_truncated_page(client, control):
    control.fault("truncate", path="/invoices")
    assert len(ids(client.iter_invoices())) == 5  # transient: the retry gets the whole page

    control.fault("truncate", path="/invoices", times=-1)
    with pytest.raises((TransportFailure, BadResponse)) as info:
        list(client.iter_invoices())
    control.clear_faults()
    message = str(info.value)
    assert message.startswith("sequence ") and "(GET /invoices)" in message and "cut short" in message
    assert len(control.requests("/invoices")) == 2 + client.retry.max_attempts


def test_client_limiter_keeps_under_the_apps_throttle(served, control, fast_retry):
    # Sequence's 429 carries no Retry-After, so quick backoff alone cannot wait out a window...
    control.rate_limits(enabled=True, per_minute=3, window_seconds=1)
    with SequenceClient(served.url, *sequence_credentials("acme"), retry=fast_retry, limiter=None) as eager:
        with pytest.raises(RateLimited) as info:
            for i in range(1, 6):
                eager.get_customer(f"cus-{i:02d}")
    assert info.value.retriable and info.value.retry_after is None

    # ...while a client-side limiter matching the app's quota never meets a 429.

    control.rate_limits(enabled=True, per_minute=3, window_seconds=1)  # fresh window
    control.clear_log()
    limiter = RateLimiter(per_minute=3, period=2.0)  # a wide margin over the app's 1 s window: robust under load
    with SequenceClient(served.url, *sequence_credentials("acme"), retry=fast_retry, limiter=limiter) as polite:
        for i in range(1, 6):
            polite.get_customer(f"cus-{i:02d}")
    assert [r["status"] for r in control.requests()] == [200] * 5


def test_cursor_loop_is_reported():
    def looping(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [{"id": "x"}], "pagination": {"after": "same-cursor"}})

    client = SequenceClient("https://sequence.test", "id", "secret", transport=httpx.MockTransport(looping))
    with pytest.raises(BadResponse, match="cursor loop"):
        list(client.iter_pages("/customers"))


def test_secrets_never_reach_logs_or_errors(served, control, fast_retry, caplog):
    client_id, secret = sequence_credentials("acme")
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    control.fault("status", path="/customers", status=503)
    with caplog.at_level(logging.DEBUG):
        with SequenceClient(served.url, client_id, secret, retry=fast_retry) as client:
            ids(client.iter_customers())
            with pytest.raises(NotFound) as info:
                client.get_customer("nobody")
        with SequenceClient(served.url, client_id, "not-" + secret, retry=fast_retry) as bad:
            with pytest.raises(AuthenticationError) as denied:
                bad.get_invoice("inv-1")
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert "GET /customers" in logged
    for text in (logged, str(info.value), str(denied.value), repr(denied.value)):
        assert secret not in text and basic not in text and "Authorization" not in text
