"""Sequence (sequencehq.com) billing API client: HTTP Basic, cursor paging, the `{"error": {...}}` envelope.

List endpoints page with `after` cursors; every `iter_*` method yields one page (a list of records) at a time,
which is what loaders want. Sequence has no idempotency key except on customer aliases, so plain creates are
never re-sent after an unclear outcome (see `AppClient.request`); callers look a record up by alias or
reference before creating it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from connectors.errors import AppError, Conflict, NotFound
from connectors.http import AppClient, RateLimiter

DEFAULT_VERSION = "2024-07-30"
MAX_PAGE_SIZE = 100
PAYMENT_STATUSES = frozenset({"UNPAID", "PARTIALLY_PAID", "PAID", "UNCOLLECTIBLE"})


def _segment(value: str) -> str:
    """One path segment, escaped so that an id or alias can never reach another route."""
    if not value:
        raise ValueError("an id or alias must not be empty")
    return quote(str(value), safe="")


class SequenceClient(AppClient):
    app = "sequence"

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        version: str = DEFAULT_VERSION,
        detail_workers: int = 4,
        **kw: Any,
    ):
        # 1,500 requests/min per key (older docs say 100/min: pass a stricter limiter if the account is old).
        kw.setdefault("limiter", RateLimiter(per_minute=1500))
        headers = {"Sequence-Version": version, **(kw.pop("headers", None) or {})}
        super().__init__(base_url, auth=httpx.BasicAuth(client_id, client_secret), headers=headers, **kw)
        self.version = version
        self.detail_workers = detail_workers

    # ----- errors ------------------------------------------------------------------------------------------------

    def decode_error(self, response: httpx.Response) -> AppError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            message = str(error.get("message") or response.reason_phrase or "error")
            problems = [
                f"{item.get('key')}: {item.get('message')}" if item.get("key") else str(item.get("message"))
                for item in error.get("errors") or []
                if isinstance(item, dict) and item.get("message")
            ]
            return self.make_error(response, message, code=error.get("type"), detail="; ".join(problems) or None)
        if response.status_code == 409 and isinstance(body, dict):
            # Credit-note application conflicts carry the current balances instead of the envelope.
            return self.make_error(response, str(body.get("message") or "version conflict"), cls=Conflict,
                                   code="balanceVersion")
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return self.make_error(response, body["message"])
        return super().decode_error(response)

    # ----- paging ------------------------------------------------------------------------------------------------

    def iter_pages(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int = MAX_PAGE_SIZE
    ) -> Iterator[list[dict]]:
        """Every page of a list endpoint, following `pagination.after` until it is absent."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query["limit"] = limit
        seen: set[str] = set()
        while True:
            items, after, response = self.send_parsed("GET", path, self._parse_page, params=query)
            yield items
            if not after:
                return
            if after in seen:
                # A cursor we already followed: the listing would never end.
                raise self.bad_response(response, f"pagination cursor loop: 'after' repeats after {len(seen)} pages")
            seen.add(after)
            query["after"] = after

    def _parse_page(self, response: httpx.Response) -> tuple[list[dict], str | None, httpx.Response]:
        body = self.parse_json(response)
        items = body.get("items")
        if not isinstance(items, list):
            raise self.bad_response(response, "expected a list page with an 'items' array")
        pagination = body.get("pagination")
        return items, pagination.get("after") if isinstance(pagination, dict) else None, response

    def _all(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict]:
        return [row for page in self.iter_pages(path, params) for row in page]

    # ----- reads ---------------------------------------------------------------------------------------------------

    def iter_customers(self, *, include_archived: bool = True, **filters: Any) -> Iterator[list[dict]]:
        """Pages of full customer records, in list order. List rows lack contacts and status, so each row is
        re-read with GET /customers/{id} on a small thread pool. Archived customers are included by default:
        their `archivedAt` is how a deletion shows."""
        params = {"includeArchived": "true" if include_archived else None, **filters}
        with ThreadPoolExecutor(max_workers=self.detail_workers, thread_name_prefix="sequence-customer") as pool:
            for page in self.iter_pages("/customers", params):
                yield list(pool.map(lambda row: self.get_customer(row["id"]), page))

    def iter_invoices(self, *, updated_since: datetime | None = None, **filters: Any) -> Iterator[list[dict]]:
        """Pages of invoices (filters as the API names them, e.g. invoiceStatus="SENT", customerId=…).

        Sequence has no server-side "updated since": with `updated_since` this is a full sweep that keeps rows
        whose `updatedAt` is at or after it (inclusive, so an equal timestamp is never lost). Pages may be empty.
        """
        if updated_since is not None and updated_since.tzinfo is None:
            raise ValueError("updated_since must be timezone-aware (UTC)")
        for page in self.iter_pages("/invoices", filters):
            if updated_since is None:
                yield page
            else:
                yield [row for row in page if _at_or_after(row.get("updatedAt"), updated_since)]

    def changed_since(self, instant: datetime) -> datetime | None:
        """The cheap change signal the near-real-time sensor polls (pipelines/sensors.py). Sequence has no
        "updated since" filter and no sort by updatedAt, so this reads ONE page of the newest invoices and of the
        newest credit notes (lists are newest-created first) and returns their newest `updatedAt` later than
        `instant`, or None. It sees new documents and changes to recent ones; a change to an older document waits
        for the schedule."""
        newest: datetime | None = None
        for path in ("/invoices", "/credit-notes"):
            items, _, _ = self.send_parsed("GET", path, self._parse_page, params={"limit": MAX_PAGE_SIZE})
            for row in items:
                value = row.get("updatedAt")
                if not isinstance(value, str):
                    continue
                stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if stamp > instant and (newest is None or stamp > newest):
                    newest = stamp
        return newest

    def list_invoice_lines(self, invoice_id: str) -> list[dict]:
        return self._all(f"/invoices/{_segment(invoice_id)}/line-items")

    def list_invoice_groups(self, invoice_id: str) -> list[dict]:
        return self._all(f"/invoices/{_segment(invoice_id)}/line-item-groups")

    def iter_credit_notes(self, **filters: Any) -> Iterator[list[dict]]:
        return self.iter_pages("/credit-notes", filters)

    def list_credit_note_lines(self, credit_note_id: str) -> list[dict]:
        return self._all(f"/credit-notes/{_segment(credit_note_id)}/line-items")

    def list_credit_note_groups(self, credit_note_id: str) -> list[dict]:
        return self._all(f"/credit-notes/{_segment(credit_note_id)}/line-item-groups")

    def iter_products(self, **filters: Any) -> Iterator[list[dict]]:
        return self.iter_pages("/products", filters)

    def iter_tax_categories(self) -> Iterator[list[dict]]:
        return self.iter_pages("/tax-categories")

    def get_invoice_payment_settings(self, invoice_id: str) -> dict | None:
        """The invoice's own payment-provider settings, or None when it has none (it inherits)."""
        try:
            return self.get_json(f"/payments/settings/invoices/for-invoice/{_segment(invoice_id)}")
        except NotFound:
            return None

    def get_customer(self, customer_id: str) -> dict:
        return self.get_json(f"/customers/{_segment(customer_id)}")

    def get_customer_by_alias(self, alias: str) -> dict | None:
        """The customer an alias points at, or None. This endpoint answers in the spec's older Customer20240509
        shape (`email`, `contactName`, `billingEmails` instead of `contacts`): use it to find the id, then
        `get_customer` for the full record."""
        try:
            return self.get_json(f"/customers/by-alias/{_segment(alias)}")
        except NotFound:
            return None

    def get_invoice(self, invoice_id: str) -> dict:
        return self.get_json(f"/invoices/{_segment(invoice_id)}")

    def get_product(self, product_id: str) -> dict:
        return self.get_json(f"/products/{_segment(product_id)}")

    # ----- writes --------------------------------------------------------------------------------------------------
    # Creates are POSTs without an idempotency key: re-sent only if they provably never arrived.
    # State transitions (finalize, void, payment status) are safe to repeat: a repeat is refused, not doubled.

    def create_customer(self, body: Mapping[str, Any]) -> dict:
        return self.request_json("POST", "/customers", json=body)

    def update_customer(self, customer_id: str, body: Mapping[str, Any]) -> dict:
        """PUT replaces the customer's contacts (and customProperties, if given): send the whole record."""
        return self.request_json("PUT", f"/customers/{_segment(customer_id)}", json=body)

    def create_customer_alias(
        self, customer_id: str, value: str, *, label: str | None = None, idempotency_key: str | None = None
    ) -> dict:
        """Links an external key (e.g. "qb-58") to a customer. With an idempotency key the call is safe to retry."""
        body = {"customerId": customer_id, "value": value, **({"label": label} if label else {})}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request_json("POST", "/customer-aliases", json=body, headers=headers)

    def create_invoice(self, body: Mapping[str, Any]) -> dict:
        return self.request_json("POST", "/invoices", json=body)

    def create_line_item_group(self, invoice_id: str, body: Mapping[str, Any]) -> dict:
        return self.request_json("POST", f"/invoices/{_segment(invoice_id)}/line-item-groups", json=body)

    def create_line_item(self, invoice_id: str, body: Mapping[str, Any]) -> dict:
        return self.request_json("POST", f"/invoices/{_segment(invoice_id)}/line-items", json=body)

    def finalize_invoice(self, invoice_id: str) -> dict:
        return self.request_json("POST", f"/invoices/{_segment(invoice_id)}/finalize", idempotent=True)

    def void_invoice(self, invoice_id: str) -> dict:
        return self.request_json("POST", f"/invoices/{_segment(invoice_id)}/void", idempotent=True)

    def delete_invoice(self, invoice_id: str) -> None:
        """Deletes a DRAFT (or IN_PROGRESS) invoice; Sequence refuses it for any other status."""
        self.request("DELETE", f"/invoices/{_segment(invoice_id)}", idempotent=True)

    def set_payment_status(self, invoice_id: str, status: str) -> dict:
        if status not in PAYMENT_STATUSES:
            raise ValueError(f"payment status must be one of {', '.join(sorted(PAYMENT_STATUSES))}, not {status!r}")
        return self.request_json("PUT", f"/invoices/{_segment(invoice_id)}/payment-status",
                                 json={"paymentStatus": status})

    def create_product(self, body: Mapping[str, Any]) -> dict:
        return self.request_json("POST", "/products", json=body)


def _at_or_after(value: Any, since: datetime) -> bool:
    if not isinstance(value, str):
        return True  # no timestamp: keep it rather than silently drop a possibly changed row
    return datetime.fromisoformat(value.replace("Z", "+00:00")) >= since

