"""Sequence (billing platform) emulator: the 2024-07-30 API as described in ../shared/vendors/sequence.md and
the vendor's OpenAPI document (../shared/specs/sequence/openapi.json).

What it serves
  auth        HTTP Basic (client id/secret per tenant, see identity.sequence_credentials); `Sequence-Version`
              echoed on every answer, unknown versions refused with 400 UnrecognisedApiVersion
  paging      every list: limit 1-100, opaque `after`/`before` cursors, sortOrder ASC|DESC (default DESC,
              newest created first), {"items": [...], "pagination": {"after", "before", "totalResultSize"}}
  customers   list/get/create/update/archive, contacts, aliases (POST /customer-aliases honours the
              Idempotency-Key header, the only endpoint whose spec declares one), by-alias look-up
  invoices    list/get/create/put/patch/delete, line items and groups as sub-resources, finalize, send,
              finalize-and-send, mark-as-sent, draft, void, payment status, PATCH of sent invoices
  credit notes list/get/create/put/delete, line items and groups, the same status machine, applications
              with optimistic concurrency (409 VersionConflictResponse)
  products    list/get/create/put/archive;  tax categories (older spec) list/get;  invoice payment settings

Fixture records are served exactly as given, even when they break the contract (an unknown currency, a missing
field): the extraction tests rely on seeing bad records. Records the emulator creates follow the contract:
money as decimal strings at the currency's minor units, absent optional fields omitted (the spec has no nulls).

Lists stay fast on large tenants: each collection keeps its records in created order, a cursor is the sort key
of the page's boundary record (so a page is a bisect plus a slice), serialized records are cached as bytes, and
line items and groups are indexed by their parent.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

import orjson
import pycountry
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from connectors.sandbox.emulator import (
    Emulator,
    EmulatorError,
    RateLimits,
    RequestContext,
    json_response,
)
from connectors.sandbox.identity import sequence_credentials

API_VERSIONS = ("2024-01-01", "2024-05-09", "2024-07-30")
LATEST_API_VERSION = "2024-07-30"
DEFAULT_PAGE_SIZE = 20  # the spec documents only the 1-100 range; 20 is an assumption
MAX_PAGE_SIZE = 100

# Vendor enums, from the OpenAPI document (Currency is Sequence's supported list, not all of ISO 4217).
CURRENCIES = frozenset(
    "AED ARS AUD BRL BGN CAD CHF CLP CNY COP CZK DKK EGP EUR GBP HKD ILS INR ISK JPY KRW MXN NOK NZD PLN SAR SEK "
    "SGD THB USD UYU ZAR".split()
)
ZERO_DECIMAL_CURRENCIES = frozenset({"CLP", "ISK", "JPY", "KRW"})  # ISO 4217 minor units = 0
INVOICE_STATUSES = ("IN_PROGRESS", "DRAFT", "FINAL", "SENT", "VOIDED")
PAYMENT_STATUSES = ("UNPAID", "PARTIALLY_PAID", "PAID", "UNCOLLECTIBLE")
CREDIT_NOTE_STATUSES = ("DRAFT", "FINAL", "IN_PROGRESS", "SENT", "VOIDED")
TAX_STATUSES = ("TAXED", "TAX_EXEMPT", "REVERSE_CHARGED")
CUSTOMER_STATUSES = ("DRAFT", "ACTIVE")
BILLING_PREFERENCES = ("PRIMARY", "STANDARD", "NONE")
PAYMENT_OPTIONS = ("BANK_TRANSFER", "LINK")
PAYMENT_PROVIDERS = ("STRIPE", "GOCARDLESS", "NONE")
RATE_DISPLAYS = ("ABSOLUTE", "PERCENTAGE")
REVENUE_CLASSIFICATIONS = ("PREPAYMENT", "EARNED", "BURNDOWN")
REVENUE_RECOGNITION_METHODS = ("STRAIGHT_LINE", "POINT_IN_TIME", "USAGE", "MILESTONE")
INTEGRATION_SERVICES = (
    "Amazon_Redshift", "GoCardless", "Google_BigQuery", "Google_Sheets", "HubSpot", "NetSuite", "QuickBooks_Online",
    "Salesforce", "Slack", "Snowflake", "Stripe", "Xero", "Avalara", "Anrok", "Attio", "Numeral", "Rillet", "Sphere",
)
EDITABLE_STATUSES = frozenset({"DRAFT", "IN_PROGRESS"})  # delete, PUT, PATCH and line edits
VOIDABLE_SENT_PAYMENT_STATUSES = frozenset({"UNPAID", "UNCOLLECTIBLE"})

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")
_ERROR_TYPES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "notFound", 405: "methodNotAllowed",
    409: "conflict", 429: "rateLimitExceeded", 500: "internalServerError", 502: "badGateway",
    503: "serviceUnavailable", 504: "gatewayTimeout",
}


# ----- time and money ---------------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _epoch(value: Any) -> float:
    """A record's created instant as a sort key; missing or malformed sorts oldest instead of crashing."""
    moment = _parse_instant(value)
    return moment.timestamp() if moment else 0.0


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _money(amount: Decimal, currency: Any) -> str:
    """Decimal string at the currency's minor units, half up (e.g. "1200.00", "1200" for JPY)."""
    exponent = Decimal(1) if currency in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")
    return str(amount.quantize(exponent, rounding=ROUND_HALF_UP))


def _amount(record: dict, field: str) -> Decimal:
    return _decimal(record.get(field)) or Decimal(0)


# ----- cursors ------------------------------------------------------------------------------------------------------
def _encode_cursor(sort_tag: str, key: tuple) -> str:
    parts = [["d", str(part)] if isinstance(part, Decimal) else part for part in key]
    return base64.b64encode(orjson.dumps({"s": sort_tag, "k": parts})).decode()


def _decode_cursor(sort_tag: str, cursor: str) -> tuple | None:
    try:
        payload = orjson.loads(base64.b64decode(cursor, validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("s") != sort_tag or not isinstance(payload.get("k"), list):
        return None
    key: list[Any] = []
    for part in payload["k"]:
        if isinstance(part, list) and len(part) == 2 and part[0] == "d":
            number = _decimal(part[1])
            if number is None:
                return None
            key.append(number)
        elif isinstance(part, (int, float, str)):
            key.append(part)
        else:
            return None
    return tuple(key)


@dataclass(frozen=True)
class _PageRequest:
    limit: int
    descending: bool
    after: tuple | None
    before: tuple | None


Entry = tuple[tuple, str]  # (sort key, record key); lists of entries are kept in ascending key order


def _entry_key(entry: Entry) -> tuple:
    return entry[0]


def _page(entries: list[Entry], page: _PageRequest) -> tuple[list[Entry], tuple | None, tuple | None]:
    """One page of `entries` (ascending) read in the requested direction; returns the page and the keys for the
    next (`after`) and previous (`before`) cursors. Positions come from bisecting on the cursor key, so a page
    costs O(log n) whatever the size, and records created meanwhile cause neither duplicates nor gaps."""
    n = len(entries)
    if page.after is not None:
        if page.descending:
            start = n - bisect_left(entries, page.after, key=_entry_key)
        else:
            start = bisect_right(entries, page.after, key=_entry_key)
        end = min(n, start + page.limit)
    elif page.before is not None:
        if page.descending:
            end = n - bisect_right(entries, page.before, key=_entry_key)
        else:
            end = bisect_left(entries, page.before, key=_entry_key)
        start = max(0, end - page.limit)
    else:
        start, end = 0, min(n, page.limit)
    # `start`/`end` count positions in reading order; a descending read walks the ascending list backwards.
    chunk = entries[n - end : n - start][::-1] if page.descending else entries[start:end]
    after = chunk[-1][0] if chunk and end < n else None
    before = chunk[0][0] if chunk and start > 0 else None
    return chunk, after, before


# ----- storage ------------------------------------------------------------------------------------------------------
class _Table:
    """One collection of one tenant: records in created order, their serialized bytes, and cached filtered views.

    Records are addressed by a record key: the record's `id` when it is a unique string (so GET /x/{id} finds it),
    otherwise a private key, so a fixture record without a usable id is still listed."""

    def __init__(self, created_field: str | None, row: Callable[[dict], dict] | None = None):
        self.created_field = created_field
        self.records: dict[str, dict] = {}
        self.entries: list[Entry] = []
        self._keys: dict[str, tuple] = {}
        self._seq = 0
        self._row = row
        self._bytes: dict[str, bytes] = {}
        self._row_bytes: dict[str, bytes] = {}
        self._views: OrderedDict[Any, tuple[int, list[Entry]]] = OrderedDict()
        self.version = 0

    def load(self, records: Iterable[dict]) -> None:
        for record in records:
            rkey, key = self._assign(record, None)
            self.entries.append((key, rkey))
        self.entries.sort(key=_entry_key)
        self.version += 1

    def _assign(self, record: dict, created: float | None) -> tuple[str, tuple]:
        self._seq += 1
        rid = record.get("id")
        rkey = rid if isinstance(rid, str) and rid not in self.records else f"\x00row{self._seq}"
        if created is None:
            created = _epoch(record.get(self.created_field)) if self.created_field else 0.0
        key = (created, self._seq)
        self.records[rkey] = record
        self._keys[rkey] = key
        return rkey, key

    def insert(self, record: dict, created: float | None = None) -> str:
        rkey, key = self._assign(record, created)
        position = bisect_right(self.entries, key, key=_entry_key)
        self.entries.insert(position, (key, rkey))
        self.version += 1
        return rkey

    def get(self, rkey: str) -> dict | None:
        return self.records.get(rkey)

    def key(self, rkey: str) -> tuple:
        return self._keys[rkey]

    def touch(self, rkey: str) -> None:
        """Call after changing a record in place: drops its cached bytes and every cached view."""
        self._bytes.pop(rkey, None)
        self._row_bytes.pop(rkey, None)
        self.version += 1

    def delete(self, rkey: str) -> dict | None:
        record = self.records.pop(rkey, None)
        if record is None:
            return None
        key = self._keys.pop(rkey)
        position = bisect_left(self.entries, key, key=_entry_key)
        del self.entries[position]
        self.touch(rkey)
        return record

    def bytes_of(self, rkey: str) -> bytes:
        cached = self._bytes.get(rkey)
        if cached is None:
            cached = self._bytes[rkey] = orjson.dumps(self.records[rkey])
        return cached

    def row_bytes_of(self, rkey: str) -> bytes:
        """The record as a list row (e.g. customers without contacts and status)."""
        if self._row is None:
            return self.bytes_of(rkey)
        cached = self._row_bytes.get(rkey)
        if cached is None:
            cached = self._row_bytes[rkey] = orjson.dumps(self._row(self.records[rkey]))
        return cached

    def view(self, cache_key: Any, build: Callable[[], list[Entry]]) -> list[Entry]:
        """A filtered and/or re-sorted list of entries, rebuilt only after the table changed, so paging through
        a filtered list scans the collection once, not once per page."""
        cached = self._views.get(cache_key)
        if cached is not None and cached[0] == self.version:
            self._views.move_to_end(cache_key)
            return cached[1]
        entries = build()
        self._views[cache_key] = (self.version, entries)
        if len(self._views) > 16:
            self._views.popitem(last=False)
        return entries


class _Children:
    """Parent id -> child record keys in creation order (line items and groups by invoice or credit note)."""

    def __init__(self) -> None:
        self._by_parent: dict[str, list[str]] = {}

    def add(self, parent: Any, rkey: str) -> None:
        if isinstance(parent, str):
            self._by_parent.setdefault(parent, []).append(rkey)

    def of(self, parent: str) -> list[str]:
        return self._by_parent.get(parent, [])

    def remove(self, parent: Any, rkey: str) -> None:
        children = self._by_parent.get(parent) if isinstance(parent, str) else None
        if children and rkey in children:
            children.remove(rkey)

    def drop(self, parent: str) -> list[str]:
        return self._by_parent.pop(parent, [])


def _customer_row(record: dict) -> dict:
    """GET /customers rows carry neither contacts nor status (vendor notes §4)."""
    return {k: v for k, v in record.items() if k not in ("contacts", "status")}


class _TenantData:
    def __init__(self, tenant: str, fixtures: dict[str, list[dict]]):
        self.tenant = tenant
        self.customers = _Table("createdAt", row=_customer_row)
        self.customer_aliases = _Table("createdAt")
        self.invoices = _Table("createdAt")
        self.line_item_groups = _Table(None)
        self.line_items = _Table(None)
        self.credit_notes = _Table(None)  # the CreditNote schema has no createdAt: fixture order, then creation
        self.credit_note_line_item_groups = _Table(None)
        self.credit_note_line_items = _Table(None)
        self.products = _Table("createdAt")
        self.tax_categories = _Table(None)
        self.payment_settings = _Table(None)
        self.groups_by_invoice = _Children()
        self.lines_by_invoice = _Children()
        self.groups_by_credit_note = _Children()
        self.lines_by_credit_note = _Children()
        self.settings_by_invoice: dict[str, str] = {}
        self.alias_by_value: dict[str, str] = {}
        self.sent_on: dict[str, str] = {}  # invoice id -> date sent through the emulator (sentAfter/sentBefore)
        self.credited: dict[str, Decimal] = {}  # invoice id -> credit notes applied through the emulator
        self.idempotent_replies: dict[str, tuple[int, bytes]] = {}
        self._counters: dict[str, int] = {}

        def records(name: str) -> list[dict]:
            return _private_copy([r for r in fixtures.get(name, []) if isinstance(r, dict)])

        self.customers.load(records("customers"))
        self.customer_aliases.load(records("customer-aliases"))
        self.invoices.load(records("invoices"))
        self.line_item_groups.load(records("line-item-groups"))
        self.line_items.load(records("line-items"))
        self.credit_notes.load(records("credit-notes"))
        self.credit_note_line_item_groups.load(records("credit-note-line-item-groups"))
        self.credit_note_line_items.load(records("credit-note-line-items"))
        self.products.load(records("products"))
        self.tax_categories.load(records("tax-categories"))
        self.account_id = self._find_account_id()
        settings = records("invoice-payment-settings")
        for record in settings:
            record.setdefault("sequenceAccountId", self.account_id)  # the fixture format leaves it out
        self.payment_settings.load(settings)

        for _, rkey in self.line_item_groups.entries:
            self.groups_by_invoice.add(self.line_item_groups.records[rkey].get("invoiceId"), rkey)
        for _, rkey in self.line_items.entries:
            self.lines_by_invoice.add(self.line_items.records[rkey].get("invoiceId"), rkey)
        for _, rkey in self.credit_note_line_item_groups.entries:
            self.groups_by_credit_note.add(self.credit_note_line_item_groups.records[rkey].get("creditNoteId"), rkey)
        for _, rkey in self.credit_note_line_items.entries:
            self.lines_by_credit_note.add(self.credit_note_line_items.records[rkey].get("creditNoteId"), rkey)
        for rkey, record in self.payment_settings.records.items():
            if isinstance(record.get("invoiceId"), str):
                self.settings_by_invoice[record["invoiceId"]] = rkey
        for rkey, record in self.customer_aliases.records.items():
            if isinstance(record.get("value"), str):
                self.alias_by_value[record["value"]] = rkey

    def _find_account_id(self) -> str:
        for table in (self.invoices, self.credit_notes, self.customer_aliases):
            for record in table.records.values():
                if isinstance(record.get("sequenceAccountId"), str):
                    return record["sequenceAccountId"]
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox:sequence-account:{self.tenant}"))

    def next_number(self, prefix: str, table: _Table, field: str) -> str:
        """Next document number after the highest one in the fixtures (INV00043 after INV00042)."""
        if prefix not in self._counters:
            highest = 0
            for record in table.records.values():
                value = record.get(field)
                match = _TRAILING_NUMBER.match(value) if isinstance(value, str) else None
                if match and match.group(1) == prefix:
                    highest = max(highest, int(match.group(2)))
            self._counters[prefix] = highest
        self._counters[prefix] += 1
        return f"{prefix}{self._counters[prefix]:05d}"


def _private_copy(records: list[dict]) -> list[dict]:
    """The emulator's own copies of the caller's records, so the fixtures (perhaps shared with another emulator
    or with a test's expectations) never change. Shallow on purpose: a deep copy of 100k invoices costs seconds,
    and handlers only ever assign top-level fields (nested lists are rebuilt, never appended to in place)."""
    return [dict(record) for record in records]


# ----- request validation -------------------------------------------------------------------------------------------
class _Body:
    """Reads a JSON request body field by field and collects every problem, so one answer names them all."""

    def __init__(self, data: Any):
        self.data = data if isinstance(data, dict) else {}
        self.errors: list[dict] = []
        if not isinstance(data, dict):
            self.fail("", "request body must be a JSON object")

    def fail(self, key: str, message: str) -> None:
        self.errors.append({"code": "validationError", "message": message, "key": key, "errors": []})

    def string(self, key: str, *, required: bool = False, source: dict | None = None, prefix: str = "") -> str | None:
        data = self.data if source is None else source
        value = data.get(key)
        if value is None:
            if required:
                self.fail(prefix + key, f"{prefix + key} should not be blank")
            return None
        if not isinstance(value, str):
            self.fail(prefix + key, f"{prefix + key} must be a string")
            return None
        if required and not value.strip():
            self.fail(prefix + key, f"{prefix + key} should not be blank")
            return None
        return value

    def choice(self, key: str, allowed: Iterable[str], *, required: bool = False, source: dict | None = None,
               prefix: str = "") -> str | None:
        value = self.string(key, required=required, source=source, prefix=prefix)
        allowed = tuple(allowed)
        if value is not None and value not in allowed:
            self.fail(prefix + key, f"{prefix + key} must be one of {', '.join(allowed)}")
            return None
        return value

    def day(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not _is_date(value):
            self.fail(key, f"{key} must be a date formatted yyyy-MM-dd")
            return None
        return value

    def decimal_string(self, key: str, *, required: bool = False) -> Decimal | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        number = _decimal(value)
        if number is None:
            self.fail(key, f"{key} must be a decimal number as a string, e.g. \"12.50\"")
        return number

    def strings(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"{key} must be a list of strings")
            return None
        return value

    def choices(self, key: str, allowed: Iterable[str]) -> list[str] | None:
        values = self.strings(key)
        allowed = tuple(allowed)
        if values is not None and any(v not in allowed for v in values):
            self.fail(key, f"{key} items must be among {', '.join(allowed)}")
            return None
        return values

    def objects(self, key: str, *, required: bool = False) -> list[dict] | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, f"{key} must be provided")
            return None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"{key} must be a list of objects")
            return None
        return value

    def pairs(self, key: str, key_field: str = "key", value_field: str = "value",
              allowed_keys: Iterable[str] | None = None, *, required: bool = False) -> list[dict] | None:
        """A list of {key, value} string pairs (metadata, externalIds, integrationIds)."""
        items = self.objects(key, required=required)
        if items is None:
            return None
        allowed = tuple(allowed_keys) if allowed_keys is not None else None
        cleaned = []
        for i, item in enumerate(items):
            k, v = item.get(key_field), item.get(value_field)
            if not isinstance(k, str) or not isinstance(v, str):
                self.fail(f"{key}[{i}]", f"{key}[{i}] needs string {key_field} and {value_field}")
            elif allowed is not None and k not in allowed:
                self.fail(f"{key}[{i}].{key_field}", f"{key}[{i}].{key_field} must be one of {', '.join(allowed)}")
            else:
                cleaned.append({key_field: k, value_field: v})
        return cleaned

    def address(self, key: str, *, required: bool = False) -> dict | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, f"{key} must be provided")
            return None
        if not isinstance(value, dict):
            self.fail(key, f"{key} must be an object")
            return None
        before = len(self.errors)
        prefix = f"{key}."
        for field in ("line1", "town", "postcode"):
            self.string(field, required=True, source=value, prefix=prefix)
        for field in ("line2", "state"):
            self.string(field, source=value, prefix=prefix)
        country = self.string("country", required=True, source=value, prefix=prefix)
        if country is not None and not (len(country) == 2 and country.isupper()
                                        and pycountry.countries.get(alpha_2=country) is not None):
            self.fail(prefix + "country", f"{prefix}country must be an ISO 3166-1 alpha-2 code")
        if country in ("US", "CA") and not value.get("state"):
            self.fail(prefix + "state", f"{prefix}state is required for addresses in {country}")
        if len(self.errors) > before:
            return None
        fields = ("line1", "line2", "town", "state", "postcode", "country")
        return {k: value[k] for k in fields if value.get(k) is not None}

    def inclusive_range(self, key: str) -> dict | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not _is_date(value.get("start")) or not _is_date(value.get("endInclusive")):
            self.fail(key, f"{key} must be {{\"start\": yyyy-MM-dd, \"endInclusive\": yyyy-MM-dd}}")
            return None
        return {"start": value["start"], "endInclusive": value["endInclusive"]}


def _filter_args(request: Request) -> tuple:
    """The query arguments that select and order a list (not the paging ones): the key of a cached view."""
    return tuple(sorted((k, v) for k, v in request.args.items(multi=True)
                        if k not in ("limit", "after", "before", "sortOrder")))


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


# ----- list filters -------------------------------------------------------------------------------------------------
Predicate = Callable[[dict], bool]


def _field_in(field: str, values: frozenset[str]) -> Predicate:
    return lambda r: isinstance(r.get(field), str) and r[field] in values


def _field_not_in(field: str, values: frozenset[str]) -> Predicate:
    return lambda r: not (isinstance(r.get(field), str) and r[field] in values)


def _day_at_least(field: str, bound: str) -> Predicate:
    return lambda r: isinstance(r.get(field), str) and r[field][:10] >= bound


def _day_at_most(field: str, bound: str) -> Predicate:
    return lambda r: isinstance(r.get(field), str) and r[field][:10] <= bound


def _contains(field: str, needle: str) -> Predicate:
    needle = needle.casefold()
    return lambda r: isinstance(r.get(field), str) and needle in r[field].casefold()


def _text_part(value: Any) -> tuple:
    return (1, value.casefold()) if isinstance(value, str) else (0, "")


def _number_part(value: Any) -> tuple:
    number = _decimal(value)
    return (1, number) if number is not None else (0, Decimal(0))


# sortBy option -> sort part of the key, per list. Sorting by text is case-insensitive [assumed].
INVOICE_SORTS: dict[str, Callable[[dict], tuple]] = {
    "CUSTOMER_LEGAL_COMPANY_NAME": lambda r: _text_part(r.get("customerLegalCompanyName")),
    "GROSS_TOTAL": lambda r: _number_part(r.get("grossTotal")),
    "ACCOUNTING_DATE": lambda r: _text_part(r.get("accountingDate")),
    "DUE_DATE": lambda r: _text_part(r.get("dueDate")),
    "ISSUE_DATE": lambda r: _text_part(r.get("issueDate")),
}
CREDIT_NOTE_SORTS: dict[str, Callable[[dict], tuple]] = {
    "GROSS_TOTAL": lambda r: _number_part(r.get("grossTotal")),
    "CREDIT_NOTE_NUMBER": lambda r: _text_part(r.get("creditNoteNumber")),
    "STATUS": lambda r: _text_part(r.get("status")),
}


# ----- the emulator -------------------------------------------------------------------------------------------------
class SequenceEmulator(Emulator):
    app = "sequence"
    collections: ClassVar[frozenset[str]] = frozenset({
        "customers", "customer-aliases", "invoices", "line-item-groups", "line-items", "credit-notes",
        "credit-note-line-item-groups", "credit-note-line-items", "products", "tax-categories",
        "invoice-payment-settings",
    })
    default_limits = RateLimits(per_minute=1500, concurrent=0)

    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        client_id, client_secret = sequence_credentials(tenant)
        return {"client_id": client_id, "client_secret": client_secret}

    # ----- set-up -----------------------------------------------------------------------------------------------
    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        for tenant, collections in fixtures.items():
            unknown = set(collections) - self.collections
            if unknown:
                raise ValueError(
                    f"sequence fixtures of tenant {tenant!r}: unknown collections {sorted(unknown)}; "
                    f"known: {', '.join(sorted(self.collections))}"
                )
        self.data = {tenant: _TenantData(tenant, collections) for tenant, collections in fixtures.items()}
        self._credentials = {
            "{}:{}".format(*sequence_credentials(tenant)): tenant for tenant in fixtures
        }

    def routes(self) -> list[Rule]:
        def rule(path: str, handler: str, *methods: str) -> Rule:
            # Every route goes through `_route`, which serializes state changes and turns a crash on a bad
            # record into a 500 in Sequence's envelope instead of an HTML page.
            return Rule(path, endpoint="_route", methods=list(methods), defaults={"handler": handler})

        return [
            rule("/customers", "list_customers", "GET"),
            rule("/customers", "create_customer", "POST"),
            rule("/customers/by-alias/<alias>", "get_customer_by_alias", "GET"),
            rule("/customers/<id>", "get_customer", "GET"),
            rule("/customers/<id>", "update_customer", "PUT"),
            rule("/customers/<id>/archive", "archive_customer", "POST"),
            rule("/customers/<id>/aliases", "list_customer_aliases_of", "GET"),
            rule("/customers/<id>/contacts", "list_contacts", "GET"),
            rule("/customer-aliases", "list_customer_aliases", "GET"),
            rule("/customer-aliases", "create_customer_alias", "POST"),
            rule("/invoices", "list_invoices", "GET"),
            rule("/invoices", "create_invoice", "POST"),
            rule("/invoices/<id>", "get_invoice", "GET"),
            rule("/invoices/<id>", "put_invoice", "PUT"),
            rule("/invoices/<id>", "patch_invoice", "PATCH"),
            rule("/invoices/<id>", "delete_invoice", "DELETE"),
            rule("/invoices/<id>/sent", "patch_sent_invoice", "PATCH"),
            rule("/invoices/<id>/line-items", "list_invoice_lines", "GET"),
            rule("/invoices/<id>/line-items", "create_invoice_line", "POST"),
            rule("/invoices/<id>/line-items/<line>", "update_invoice_line", "PUT"),
            rule("/invoices/<id>/line-items/<line>", "delete_invoice_line", "DELETE"),
            rule("/invoices/<id>/line-item-groups", "list_invoice_groups", "GET"),
            rule("/invoices/<id>/line-item-groups", "create_invoice_group", "POST"),
            rule("/invoices/<id>/line-item-groups/<group>", "update_invoice_group", "PUT"),
            rule("/invoices/<id>/line-item-groups/<group>", "delete_invoice_group", "DELETE"),
            rule("/invoices/<id>/finalize", "finalize_invoice", "POST"),
            rule("/invoices/<id>/send", "send_invoice", "POST"),
            rule("/invoices/<id>/finalize-and-send", "finalize_and_send_invoice", "POST"),
            rule("/invoices/<id>/mark-as-sent", "mark_invoice_as_sent", "POST"),
            rule("/invoices/<id>/draft", "redraft_invoice", "POST"),
            rule("/invoices/<id>/void", "void_invoice", "POST"),
            rule("/invoices/<id>/payment-status", "set_payment_status", "PUT"),
            rule("/credit-notes", "list_credit_notes", "GET"),
            rule("/credit-notes", "create_credit_note", "POST"),
            rule("/credit-notes/<id>", "get_credit_note", "GET"),
            rule("/credit-notes/<id>", "put_credit_note", "PUT"),
            rule("/credit-notes/<id>", "delete_credit_note", "DELETE"),
            rule("/credit-notes/<id>/line-items", "list_credit_note_lines", "GET"),
            rule("/credit-notes/<id>/line-items", "create_credit_note_line", "POST"),
            rule("/credit-notes/<id>/line-item-groups", "list_credit_note_groups", "GET"),
            rule("/credit-notes/<id>/line-item-groups", "create_credit_note_group", "POST"),
            rule("/credit-notes/<id>/finalize", "finalize_credit_note", "POST"),
            rule("/credit-notes/<id>/send", "send_credit_note", "POST"),
            rule("/credit-notes/<id>/finalize-and-send", "finalize_and_send_credit_note", "POST"),
            rule("/credit-notes/<id>/mark-as-sent", "mark_credit_note_as_sent", "POST"),
            rule("/credit-notes/<id>/void", "void_credit_note", "POST"),
            rule("/credit-note-applications", "apply_credit_note", "POST"),
            rule("/products", "list_products", "GET"),
            rule("/products", "create_product", "POST"),
            rule("/products/<id>", "get_product", "GET"),
            rule("/products/<id>", "put_product", "PUT"),
            rule("/products/<id>/archive", "archive_product", "POST"),
            rule("/tax-categories", "list_tax_categories", "GET"),
            rule("/tax-categories/<id>", "get_tax_category", "GET"),
            rule("/payments/settings/invoices", "create_invoice_payment_settings", "POST"),
            rule("/payments/settings/invoices/for-invoice/<id>", "get_payment_settings_for_invoice", "GET"),
            rule("/payments/settings/invoices/<id>", "get_invoice_payment_settings", "GET"),
        ]

    # ----- Sequence's answers to the base class -----------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Echo `Sequence-Version` on every API answer (faults and errors included); not on the control plane."""
        if environ.get("PATH_INFO", "").startswith("/_sandbox/"):
            return super().__call__(environ, start_response)
        version = environ.get("HTTP_SEQUENCE_VERSION") or LATEST_API_VERSION
        if version not in API_VERSIONS:  # refused in authenticate(); nothing to echo
            return super().__call__(environ, start_response)

        def start_with_version(status: str, headers: list, exc_info: Any = None) -> Callable:
            headers = [(k, v) for k, v in headers if k.lower() != "sequence-version"]
            headers.append(("Sequence-Version", version))
            return start_response(status, headers, exc_info)

        return super().__call__(environ, start_with_version)

    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        version = request.headers.get("Sequence-Version")
        if version is not None and version not in API_VERSIONS:
            raise EmulatorError(self._error(
                400, "UnrecognisedApiVersion",
                f"No matching API version found. Requested '{version}'; supported: {', '.join(API_VERSIONS)}.",
            ))
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        tenant = None
        if scheme.lower() == "basic" and encoded:
            try:
                tenant = self._credentials.get(base64.b64decode(encoded.strip(), validate=True).decode())
            except (binascii.Error, UnicodeDecodeError):
                tenant = None
        if tenant is None:
            raise EmulatorError(self._error(401, "unauthorized", "Invalid or missing API credentials"))
        return RequestContext(tenant=tenant, extra={"version": version or LATEST_API_VERSION})

    def error_response(self, status: int, message: str) -> Response:
        return self._error(status, _ERROR_TYPES.get(status, "error"), message)

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        response = self._error(429, "rateLimitExceeded", "Rate limit exceeded. Please retry later.")
        if reason == "injected" and retry_after is not None:
            # Sequence sends no Retry-After; a test may still arm a 429 fault that carries one.
            response.headers["Retry-After"] = retry_after
        return response

    def idempotency_key(self, request: Request) -> str | None:
        return request.headers.get("Idempotency-Key")

    # ----- plumbing ---------------------------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, kind: str, message: str, errors: list[dict] | None = None) -> Response:
        body: dict[str, Any] = {"type": kind, "message": message}
        if errors is not None:
            body["errors"] = errors
        return json_response({"error": body}, status=status)

    def _fail(self, status: int, message: str) -> EmulatorError:
        return EmulatorError(self.error_response(status, message))

    def _invalid(self, errors: list[dict]) -> EmulatorError:
        return EmulatorError(self._error(400, "validationError", "Request data validation failed", errors))

    def _invalid_one(self, key: str, message: str) -> EmulatorError:
        return self._invalid([{"code": "validationError", "message": message, "key": key, "errors": []}])

    def _route(self, request: Request, ctx: RequestContext, handler: str, **args: Any) -> Response:
        with self.lock:  # one request at a time mutates or reads a tenant's state: simple and consistent
            try:
                return getattr(self, handler)(request, self.data[ctx.tenant], **args)
            except EmulatorError:
                raise
            except Exception as exc:  # a bad fixture record must not take the emulator down
                return self._error(500, "internalServerError", f"sandbox: {type(exc).__name__}: {exc}")

    def _body(self, request: Request) -> _Body:
        if not request.get_data():
            return _Body({})
        return _Body(self.json_body(request, lambda m: self._error(400, "badRequest", m)))

    def _check(self, body: _Body) -> None:
        if body.errors:
            raise self._invalid(body.errors)

    @staticmethod
    def _record_response(table: _Table, rkey: str, status: int = 200) -> Response:
        return Response(table.bytes_of(rkey), status=status, mimetype="application/json")

    def _find(self, table: _Table, rid: str, what: str) -> dict:
        record = table.get(rid)
        if record is None:
            raise self._fail(404, f"{what} {rid} not found")
        return record

    def _stamp(self, record: dict, field: str = "updatedAt") -> None:
        """Set a change timestamp that strictly increases per record, so change detection never misses an edit
        made within the same millisecond."""
        moment = _now()
        previous = _parse_instant(record.get(field))
        if previous is not None and moment <= previous:
            moment = previous + timedelta(milliseconds=1)
        record[field] = _iso(moment)

    # ----- paging -----------------------------------------------------------------------------------------------
    def _page_request(self, request: Request, sort_tag: str) -> _PageRequest:
        args = request.args
        limit_raw = args.get("limit")
        if limit_raw is None:
            limit = DEFAULT_PAGE_SIZE
        else:
            try:
                limit = int(limit_raw)
            except ValueError:
                limit = 0
            if not 1 <= limit <= MAX_PAGE_SIZE:
                raise self._invalid_one("limit", f"limit must be between 1 and {MAX_PAGE_SIZE} (inclusive)")
        order = args.get("sortOrder", "DESC")
        if order not in ("ASC", "DESC"):
            raise self._invalid_one("sortOrder", "sortOrder must be ASC or DESC")
        if args.get("after") and args.get("before"):
            raise self._invalid_one("after", "use either after or before, not both")
        cursors = {}
        for name in ("after", "before"):
            raw = args.get(name)
            if raw:
                cursors[name] = _decode_cursor(sort_tag, raw)
                if cursors[name] is None:
                    raise self._invalid_one(name, f"{name} is not a valid pagination cursor")
        return _PageRequest(limit, order == "DESC", cursors.get("after"), cursors.get("before"))

    def _list(self, request: Request, table: _Table, entries: list[Entry], sort_tag: str = "created",
              rows: bool = False) -> Response:
        page = self._page_request(request, sort_tag)
        try:
            chunk, after, before = _page(entries, page)
        except TypeError:  # a cursor whose key does not compare with this list's keys
            name = "after" if page.after else "before"
            raise self._invalid_one(name, "pagination cursor does not fit this list") from None
        serialize = table.row_bytes_of if rows else table.bytes_of
        pagination: dict[str, Any] = {}
        if after is not None:
            pagination["after"] = _encode_cursor(sort_tag, after)
        if before is not None:
            pagination["before"] = _encode_cursor(sort_tag, before)
        pagination["totalResultSize"] = len(entries)
        # Built from cached per-record bytes: serializing a page costs a join, not a re-encode.
        body = b'{"items":[' + b",".join(serialize(rkey) for _, rkey in chunk) + b'],"pagination":'
        body += orjson.dumps(pagination) + b"}"
        return Response(body, mimetype="application/json")

    def _filtered(self, table: _Table, predicates: list[Predicate], sort_by: str | None,
                  sorts: dict[str, Callable[[dict], tuple]], cache_key: Any) -> list[Entry]:
        if not predicates and sort_by is None:
            return table.entries  # the common case: no scan, no copy

        def build() -> list[Entry]:
            records = table.records
            entries = [e for e in table.entries if all(p(records[e[1]]) for p in predicates)]
            if sort_by is not None:
                part = sorts[sort_by]
                entries = [((*part(records[rkey]), *key), rkey) for key, rkey in entries]
                entries.sort(key=_entry_key)
            return entries

        return table.view(cache_key, build)

    def _children_entries(self, table: _Table, keys: list[str]) -> list[Entry]:
        return [(table.key(rkey), rkey) for rkey in keys]

    def _flag(self, request: Request, name: str) -> bool | None:
        raw = request.args.get(name)
        if raw is None:
            return None
        if raw.lower() not in ("true", "false"):
            raise self._invalid_one(name, f"{name} must be true or false")
        return raw.lower() == "true"

    def _csv(self, request: Request, name: str, allowed: Iterable[str] | None = None) -> frozenset[str] | None:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return None
        values = frozenset(v.strip() for v in raw.split(",") if v.strip())
        if allowed is not None:
            allowed = tuple(allowed)
            bad = sorted(values - set(allowed))
            if bad:
                raise self._invalid_one(
                    name, f"{name}: unknown value(s) {', '.join(bad)}; options: {', '.join(allowed)}")
        return values

    def _day_arg(self, request: Request, name: str) -> str | None:
        raw = request.args.get(name)
        if raw is None:
            return None
        if not _is_date(raw):
            raise self._invalid_one(name, f"{name} must be a date formatted yyyy-MM-dd")
        return raw

    def _sort_by(self, request: Request, sorts: dict[str, Callable[[dict], tuple]]) -> str | None:
        sort_by = request.args.get("sortBy")
        if sort_by is None or sort_by == "":
            return None
        if sort_by not in sorts:
            raise self._invalid_one("sortBy", f"sortBy must be one of {', '.join(sorts)}")
        return sort_by

    # ----- customers --------------------------------------------------------------------------------------------
    def list_customers(self, request: Request, data: _TenantData) -> Response:
        args = request.args
        predicates: list[Predicate] = []
        if not self._flag(request, "includeArchived"):
            predicates.append(lambda r: not r.get("archivedAt"))
        if args.get("legalName"):
            predicates.append(_contains("legalName", args["legalName"]))
        if args.get("label"):
            label = args["label"]
            predicates.append(lambda r: r.get("label") == label)
        if args.get("email"):
            email = args["email"].casefold()
            predicates.append(lambda r: any(
                isinstance(c, dict) and isinstance(c.get("email"), str) and c["email"].casefold() == email
                for c in (r.get("contacts") if isinstance(r.get("contacts"), list) else [])
            ))
        if args.get("alias"):
            alias_key = data.alias_by_value.get(args["alias"])
            alias = data.customer_aliases.get(alias_key) if alias_key else None
            owner = alias.get("customerId") if alias else None
            predicates.append(lambda r: owner is not None and r.get("id") == owner)
        billing_status = args.get("billingStatus")
        if billing_status is not None:
            if billing_status not in ("ACTIVE", "INACTIVE"):
                raise self._invalid_one("billingStatus", "billingStatus must be ACTIVE or INACTIVE")
            if billing_status == "ACTIVE":  # the sandbox has no billing schedules: nobody is billed
                predicates.append(lambda r: False)
        sort_by = args.get("sortBy") or None
        sorts: dict[str, Callable[[dict], tuple]] = {}
        if sort_by is not None:
            if not sort_by.startswith("customProperties."):
                raise self._invalid_one("sortBy", "sortBy supports customProperties.<key> (default: creation time)")
            prop = sort_by.removeprefix("customProperties.")
            sorts[sort_by] = lambda r: _text_part((r.get("customProperties") or {}).get(prop)
                                                  if isinstance(r.get("customProperties"), dict) else None)
        # Alias look-ups live in another table: its version is part of the key so a new alias is seen.
        cache_key = ("customers", _filter_args(request), data.customer_aliases.version)
        entries = self._filtered(data.customers, predicates, sort_by, sorts, cache_key)
        return self._list(request, data.customers, entries, sort_by or "created", rows=True)

    def get_customer(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.customers, id, "Customer")
        return self._record_response(data.customers, id)

    def get_customer_by_alias(self, request: Request, data: _TenantData, alias: str) -> Response:
        alias_key = data.alias_by_value.get(alias)
        owner = data.customer_aliases.records[alias_key].get("customerId") if alias_key else None
        customer = data.customers.get(owner) if isinstance(owner, str) else None
        if customer is None:
            raise self._fail(404, f"No customer found with alias {alias}")
        return json_response(_legacy_customer(customer))

    def list_contacts(self, request: Request, data: _TenantData, id: str) -> Response:
        customer = self._find(data.customers, id, "Customer")
        include_archived = self._flag(request, "includeArchived")
        contacts = customer.get("contacts") if isinstance(customer.get("contacts"), list) else []
        if not include_archived:
            contacts = [c for c in contacts if not (isinstance(c, dict) and c.get("archivedAt"))]
        return json_response({"items": contacts})

    def create_customer(self, request: Request, data: _TenantData) -> Response:
        body = self._body(request)
        fields = self._customer_fields(body, data, None)
        now = _iso(_now())
        record: dict[str, Any] = {"id": str(uuid.uuid4()), "createdAt": now, "organizations": []}
        record.update(fields["record"])
        record["contacts"] = _contacts(fields["contacts"], [], now)
        record.setdefault("status", "ACTIVE")
        record.setdefault("customProperties", {})
        record.setdefault("integrationIds", [])
        data.customers.insert(record)
        for value in fields["aliases"]:
            self._add_alias(data, record["id"], value, None)
        self.record_write(data.tenant, "create", "customer", record["id"], legalName=record["legalName"],
                          aliases=fields["aliases"])
        return self._record_response(data.customers, record["id"], 201)

    def update_customer(self, request: Request, data: _TenantData, id: str) -> Response:
        customer = self._find(data.customers, id, "Customer")
        body = self._body(request)
        fields = self._customer_fields(body, data, id)
        for optional in ("url", "domain", "label"):  # PUT replaces the whole customer
            customer.pop(optional, None)
        customer.update(fields["record"])
        existing = customer.get("contacts") if isinstance(customer.get("contacts"), list) else []
        customer["contacts"] = _contacts(fields["contacts"], existing, _iso(_now()))
        for value in fields["aliases"]:
            if value not in data.alias_by_value:
                self._add_alias(data, id, value, None)
        data.customers.touch(id)
        self.record_write(data.tenant, "update", "customer", id, legalName=customer.get("legalName"))
        return self._record_response(data.customers, id)

    def _customer_fields(self, body: _Body, data: _TenantData, customer_id: str | None) -> dict[str, Any]:
        """Validates a CreateOrUpdateCustomerRequest; PUT and POST share it."""
        record: dict[str, Any] = {}
        legal_name = body.string("legalName", required=True)
        address = body.address("address", required=True)
        tax_status = body.choice("taxStatus", TAX_STATUSES, required=True)
        contacts = body.objects("contacts", required=True)
        valid_contacts: list[dict] = []
        for i, contact in enumerate(contacts or []):
            prefix = f"contacts[{i}]."
            name = body.string("name", required=True, source=contact, prefix=prefix)
            email = body.string("email", required=True, source=contact, prefix=prefix)
            if email is not None and "@" not in email:
                body.fail(prefix + "email", f"{prefix}email must be an email address")
            preference = body.choice("billingPreference", BILLING_PREFERENCES, required=True, source=contact,
                                     prefix=prefix)
            valid_contacts.append({"name": name, "email": email, "billingPreference": preference})
        preferences = [c["billingPreference"] for c in valid_contacts]
        if any(p in ("PRIMARY", "STANDARD") for p in preferences) and "PRIMARY" not in preferences:
            body.fail("contacts", "at least one contact must have billingPreference PRIMARY")
        url = body.string("url")
        label = body.string("label")
        status = body.choice("status", CUSTOMER_STATUSES)
        aliases = list(dict.fromkeys(body.strings("customerAliases") or []))
        for value in aliases:
            owner_key = data.alias_by_value.get(value)
            owner = data.customer_aliases.records[owner_key].get("customerId") if owner_key else None
            if owner is not None and owner != customer_id:
                body.fail("customerAliases", f"alias {value} already belongs to another customer")
        integration_ids = body.pairs("integrationIds", key_field="service", value_field="id",
                                     allowed_keys=INTEGRATION_SERVICES)
        parent_id = body.string("parentId")
        if parent_id is not None and data.customers.get(parent_id) is None:
            body.fail("parentId", f"parent customer {parent_id} not found")
        properties = body.data.get("customProperties")
        if properties is not None and (
            not isinstance(properties, dict) or not all(isinstance(v, str) for v in properties.values())
        ):
            body.fail("customProperties", "customProperties must map keys to string values")
        self._check(body)
        record.update(legalName=legal_name, address=address, taxStatus=tax_status)
        if url is not None:
            record["url"] = url
            host = re.sub(r"^[a-z]+://", "", url).split("/")[0].removeprefix("www.")
            if host:
                record["domain"] = host
        if label is not None:
            record["label"] = label
        if status is not None:
            record["status"] = status
        if integration_ids is not None:
            record["integrationIds"] = [{**pair, "isPending": False} for pair in integration_ids]
        if properties is not None:
            record["customProperties"] = dict(properties)
        return {"record": record, "contacts": valid_contacts, "aliases": aliases}

    def archive_customer(self, request: Request, data: _TenantData, id: str) -> Response:
        customer = self._find(data.customers, id, "Customer")
        if not customer.get("archivedAt"):  # archiving twice changes nothing and writes nothing
            customer["archivedAt"] = _iso(_now())
            data.customers.touch(id)
            for rkey, invoice in data.invoices.records.items():
                if invoice.get("customerId") == id and invoice.get("isCustomerArchived") is not True:
                    invoice["isCustomerArchived"] = True
                    data.invoices.touch(rkey)
            self.record_write(data.tenant, "archive", "customer", id)
        return self._record_response(data.customers, id)

    # ----- customer aliases -------------------------------------------------------------------------------------
    def _add_alias(self, data: _TenantData, customer_id: str, value: str, label: str | None) -> str:
        record = {"id": str(uuid.uuid4()), "sequenceAccountId": data.account_id, "customerId": customer_id,
                  "value": value, "createdAt": _iso(_now())}
        if label is not None:
            record["label"] = label
        rkey = data.customer_aliases.insert(record)
        data.alias_by_value[value] = rkey
        return rkey

    def list_customer_aliases(self, request: Request, data: _TenantData) -> Response:
        predicates: list[Predicate] = []
        if request.args.get("value"):
            value = request.args["value"]
            predicates.append(lambda r: r.get("value") == value)
        cache_key = ("aliases", request.args.get("value"))
        entries = self._filtered(data.customer_aliases, predicates, None, {}, cache_key)
        return self._list(request, data.customer_aliases, entries)

    def list_customer_aliases_of(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.customers, id, "Customer")
        fields = ("id", "sequenceAccountId", "customerId", "value", "createdAt")
        items = [
            {k: alias[k] for k in fields if k in alias}
            for _, rkey in data.customer_aliases.entries
            if (alias := data.customer_aliases.records[rkey]).get("customerId") == id and not alias.get("archivedAt")
        ]
        return json_response({"items": items})

    def create_customer_alias(self, request: Request, data: _TenantData) -> Response:
        # The only Sequence endpoint with an Idempotency-Key (spec): a retry with the same key gets the first answer.
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in data.idempotent_replies:
            status, payload = data.idempotent_replies[key]
            return Response(payload, status=status, mimetype="application/json")
        body = self._body(request)
        customer_id = body.string("customerId", required=True)
        value = body.string("value", required=True)
        label = body.string("label")
        self._check(body)
        if data.customers.get(customer_id) is None:
            raise self._invalid_one("customerId", f"customer {customer_id} not found")
        if value in data.alias_by_value:
            raise self._fail(409, f"alias {value} already exists")
        rkey = self._add_alias(data, customer_id, value, label)
        self.record_write(data.tenant, "create", "customer_alias", rkey, customerId=customer_id, value=value)
        response = self._record_response(data.customer_aliases, rkey, 201)
        if key is not None:
            data.idempotent_replies[key] = (201, response.get_data())
        return response

    # ----- invoices ---------------------------------------------------------------------------------------------
    def list_invoices(self, request: Request, data: _TenantData) -> Response:
        predicates = self._invoice_predicates(request, data)
        sort_by = self._sort_by(request, INVOICE_SORTS)
        cache_key = ("invoices", _filter_args(request))
        entries = self._filtered(data.invoices, predicates, sort_by, INVOICE_SORTS, cache_key)
        return self._list(request, data.invoices, entries, sort_by or "created")

    def _invoice_predicates(self, request: Request, data: _TenantData) -> list[Predicate]:
        args = request.args
        predicates: list[Predicate] = []
        for name, field, allowed, include in (
            ("invoiceStatus", "status", INVOICE_STATUSES, True),
            ("excludeInvoiceStatus", "status", INVOICE_STATUSES, False),
            ("invoicePaymentStatus", "paymentStatus", PAYMENT_STATUSES, True),
            ("excludeInvoicePaymentStatus", "paymentStatus", PAYMENT_STATUSES, False),
            ("customerId", "customerId", None, True),
            ("excludeCustomerId", "customerId", None, False),
            ("billingScheduleId", "billingScheduleId", None, True),
            ("excludeBillingScheduleId", "billingScheduleId", None, False),
            ("invoiceCurrency", "currency", None, True),
            ("excludeInvoiceCurrency", "currency", None, False),
            ("invoiceNumber", "invoiceNumber", None, True),
            ("excludeInvoiceNumber", "invoiceNumber", None, False),
        ):
            values = self._csv(request, name, allowed)
            if values is not None:
                predicates.append(_field_in(field, values) if include else _field_not_in(field, values))
        # Date bounds are inclusive [assumed]; "invoice date" is issueDate (vendor notes §5).
        for name, field, at_least in (
            ("invoiceAfter", "issueDate", True), ("invoiceBefore", "issueDate", False),
            ("dueAfter", "dueDate", True), ("dueBefore", "dueDate", False),
        ):
            bound = self._day_arg(request, name)
            if bound is not None:
                predicates.append(_day_at_least(field, bound) if at_least else _day_at_most(field, bound))
        for name, at_least in (("sentAfter", True), ("sentBefore", False)):
            bound = self._day_arg(request, name)
            if bound is not None:
                predicates.append(self._sent_predicate(data, bound, at_least))
        if args.get("search"):
            predicates.append(_contains("invoiceNumber", args["search"]))
        if args.get("excludeSearch"):
            excluded = _contains("invoiceNumber", args["excludeSearch"])
            predicates.append(lambda r: not excluded(r))
        for name, include in (("netTotal", True), ("excludeNetTotal", False)):
            if args.get(name) is not None:
                target = _decimal(args[name])
                if target is None:
                    raise self._invalid_one(name, f"{name} must be a number")
                matches = (lambda r, t=target: _decimal(r.get("netTotal")) == t)
                predicates.append(matches if include else (lambda r, m=matches: not m(r)))
        return predicates

    @staticmethod
    def _sent_predicate(data: _TenantData, bound: str, at_least: bool) -> Predicate:
        """The sent date is not part of the invoice record: the emulator knows it for invoices it sent and
        otherwise uses the issue date of SENT invoices."""

        def sent_day(r: dict) -> str | None:
            if r.get("status") != "SENT":
                return None
            day = data.sent_on.get(r.get("id")) if isinstance(r.get("id"), str) else None
            day = day or r.get("issueDate")
            return day[:10] if isinstance(day, str) else None

        if at_least:
            return lambda r: (d := sent_day(r)) is not None and d >= bound
        return lambda r: (d := sent_day(r)) is not None and d <= bound

    def get_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.invoices, id, "Invoice")
        return self._record_response(data.invoices, id)

    def create_invoice(self, request: Request, data: _TenantData) -> Response:
        body = self._body(request)
        currency = body.choice("currency", sorted(CURRENCIES), required=True)
        customer_id = body.string("customerId", required=True)
        fields = self._invoice_fields(body)
        self._check(body)
        customer = data.customers.get(customer_id)
        if customer is None:
            raise self._invalid_one("customerId", f"customer {customer_id} not found")
        now = _now()
        zero = _money(Decimal(0), currency)
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()), "sequenceAccountId": data.account_id, "status": "DRAFT",
            "paymentStatus": "UNPAID", "currency": currency, "customerId": customer_id,
            "customerLegalCompanyName": customer.get("legalName", ""),
            "customerEmails": _billing_emails(customer),
            "customerBillingAddress": _address_of(customer),
            "customerShippingAddress": _address_of(customer),
            "accountingDate": now.date().isoformat(),
            "paymentOptions": ["BANK_TRANSFER"], "metadata": [],
            "netTotal": zero, "totalTax": zero, "grossTotal": zero, "balance": zero, "balanceVersion": 0,
            "creditNoteIds": [], "linkedServices": [], "integrationPaymentStatuses": {}, "paymentAllocations": [],
            "appliedCreditNotes": [], "appliedCreditGrants": [], "projectedCreditGrants": [],
            "isCustomerArchived": bool(customer.get("archivedAt")), "dueDateSource": "CALCULATED",
            "createdAt": _iso(now), "updatedAt": _iso(now),
        }
        if isinstance(customer.get("taxStatus"), str):
            record["customerTaxStatus"] = customer["taxStatus"]
        record.update(fields)
        if "dueDate" in fields:
            record["dueDateSource"] = "MANUAL"
        record["renderSettings"] = _render_settings(record["paymentOptions"])
        data.invoices.insert(record, created=now.timestamp())
        self.record_write(data.tenant, "create", "invoice", record["id"], customerId=customer_id,
                          reference=record.get("reference"), metadata=record["metadata"])
        return self._record_response(data.invoices, record["id"], 201)

    @staticmethod
    def _invoice_fields(body: _Body, *, allow_currency: bool = False) -> dict[str, Any]:
        """The optional, editable invoice fields of create, PUT and PATCH bodies, as given."""
        fields: dict[str, Any] = {}
        for key in ("purchaseOrderNumber", "reference", "memo", "customerLegalCompanyName", "billingScheduleId",
                    "billingRunId", "creditBalances"):
            if (value := body.string(key)) is not None:
                fields[key] = value
        for key in ("dueDate", "accountingDate"):
            if (value := body.day(key)) is not None:
                fields[key] = value
        if (emails := body.strings("customerEmails")) is not None:
            fields["customerEmails"] = emails
        for key in ("customerBillingAddress", "customerShippingAddress"):
            if (address := body.address(key)) is not None:
                fields[key] = address
        if (options := body.choices("paymentOptions", PAYMENT_OPTIONS)) is not None:
            fields["paymentOptions"] = options
        if (period := body.inclusive_range("billingPeriod")) is not None:
            fields["billingPeriod"] = period
        if (metadata := body.pairs("metadata")) is not None:
            fields["metadata"] = metadata
        if allow_currency and (currency := body.choice("currency", sorted(CURRENCIES))) is not None:
            fields["currency"] = currency
        return fields

    def _editable_invoice(self, data: _TenantData, id: str, action: str) -> dict:
        invoice = self._find(data.invoices, id, "Invoice")
        if invoice.get("status") not in EDITABLE_STATUSES:
            raise self._fail(400, f"Cannot {action}: invoice {id} is {invoice.get('status')}; "
                                  f"only DRAFT or IN_PROGRESS invoices can be changed")
        return invoice

    def put_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._editable_invoice(data, id, "update invoice")
        body = self._body(request)
        fields = self._invoice_fields(body, allow_currency=True)
        self._check(body)
        # PUT replaces the optional fields; the customer snapshot and accountingDate (required in answers) stay.
        for key in ("purchaseOrderNumber", "reference", "memo", "dueDate", "billingPeriod", "billingScheduleId",
                    "billingRunId", "creditBalances"):
            invoice.pop(key, None)
        invoice["metadata"] = []
        invoice["paymentOptions"] = ["BANK_TRANSFER"]
        invoice.update(fields)
        invoice["dueDateSource"] = "MANUAL" if "dueDate" in fields else "CALCULATED"
        invoice["renderSettings"] = _render_settings(invoice["paymentOptions"])
        if "currency" in fields:
            self._recompute_invoice(data, id)
        return self._changed_invoice(data, id, "update")

    def patch_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._editable_invoice(data, id, "update invoice")
        body = self._body(request)
        fields = self._invoice_fields(body)
        self._check(body)
        invoice.update(fields)
        if "dueDate" in fields:
            invoice["dueDateSource"] = "MANUAL"
        if "paymentOptions" in fields:
            invoice["renderSettings"] = _render_settings(invoice["paymentOptions"])
        return self._changed_invoice(data, id, "patch")

    def patch_sent_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._find(data.invoices, id, "Invoice")
        if invoice.get("status") != "SENT":
            raise self._fail(400, f"Invoice {id} is {invoice.get('status')}; this endpoint changes SENT invoices")
        body = self._body(request)
        purchase_order = body.string("purchaseOrderNumber")
        due_date = body.day("dueDate")
        self._check(body)
        if purchase_order is not None:
            invoice["purchaseOrderNumber"] = purchase_order
        if due_date is not None:
            invoice["dueDate"] = due_date
            invoice["dueDateSource"] = "MANUAL"
        return self._changed_invoice(data, id, "patch_sent")

    def delete_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._find(data.invoices, id, "Invoice")
        if invoice.get("status") not in EDITABLE_STATUSES:
            raise self._fail(400, f"Invoice {id} is {invoice.get('status')}; only DRAFT or IN_PROGRESS invoices "
                                  f"can be deleted (void it instead)")
        payload = data.invoices.bytes_of(id)
        data.invoices.delete(id)
        for rkey in data.lines_by_invoice.drop(id):
            data.line_items.delete(rkey)
        for rkey in data.groups_by_invoice.drop(id):
            data.line_item_groups.delete(rkey)
        if (settings_key := data.settings_by_invoice.pop(id, None)) is not None:
            data.payment_settings.delete(settings_key)
        self.record_write(data.tenant, "delete", "invoice", id)
        return Response(payload, mimetype="application/json")

    def _changed_invoice(self, data: _TenantData, id: str, op: str, **extra: Any) -> Response:
        invoice = data.invoices.records[id]
        self._stamp(invoice)
        data.invoices.touch(id)
        self.record_write(data.tenant, op, "invoice", id, status=invoice.get("status"),
                          paymentStatus=invoice.get("paymentStatus"), **extra)
        return self._record_response(data.invoices, id)

    # ----- invoice status machine ---------------------------------------------------------------------------------
    def _transition(self, data: _TenantData, id: str, op: str, allowed_from: tuple[str, ...], target: str) -> Response:
        invoice = self._find(data.invoices, id, "Invoice")
        status = invoice.get("status")
        if status not in allowed_from:
            raise self._fail(400, f"Cannot {op.replace('_', ' ')} invoice {id}: it is {status}; "
                                  f"allowed from {', '.join(allowed_from)}")
        today = _now().date().isoformat()
        if status in EDITABLE_STATUSES and target in ("FINAL", "SENT"):
            invoice.setdefault("issueDate", today)
            if not invoice.get("invoiceNumber"):
                invoice["invoiceNumber"] = data.next_number("INV", data.invoices, "invoiceNumber")
        if target == "SENT":
            data.sent_on[id] = today
        invoice["status"] = target
        return self._changed_invoice(data, id, op)

    def finalize_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._transition(data, id, "finalize", ("DRAFT", "IN_PROGRESS"), "FINAL")

    def send_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._transition(data, id, "send", ("FINAL",), "SENT")

    def finalize_and_send_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._transition(data, id, "finalize_and_send", ("DRAFT", "IN_PROGRESS"), "SENT")

    def mark_invoice_as_sent(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._transition(data, id, "mark_as_sent", ("DRAFT", "IN_PROGRESS", "FINAL"), "SENT")

    def redraft_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._transition(data, id, "draft", ("FINAL",), "DRAFT")

    def void_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._find(data.invoices, id, "Invoice")
        status, payment = invoice.get("status"), invoice.get("paymentStatus")
        if status == "SENT" and payment not in VOIDABLE_SENT_PAYMENT_STATUSES:
            raise self._fail(400, f"Cannot void invoice {id}: it is SENT and {payment}; only UNPAID or "
                                  f"UNCOLLECTIBLE sent invoices can be voided (issue a credit note instead)")
        return self._transition(data, id, "void", ("DRAFT", "FINAL", "SENT"), "VOIDED")

    def set_payment_status(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._find(data.invoices, id, "Invoice")
        body = self._body(request)
        payment_status = body.choice("paymentStatus", PAYMENT_STATUSES, required=True)
        self._check(body)
        if invoice.get("status") not in ("FINAL", "SENT"):
            raise self._fail(400, f"Cannot set the payment status of invoice {id}: it is {invoice.get('status')}; "
                                  f"only FINAL or SENT invoices have one")
        invoice["paymentStatus"] = payment_status
        # Balance follows what the status implies; partial and uncollectible keep the amount the emulator knows.
        if payment_status == "PAID":
            balance = Decimal(0)
        elif payment_status == "UNPAID":
            balance = _amount(invoice, "grossTotal") - data.credited.get(id, Decimal(0))
        else:
            balance = _decimal(invoice.get("balance"))
        if balance is not None:
            new_balance = _money(balance, invoice.get("currency"))
            if new_balance != invoice.get("balance"):
                invoice["balance"] = new_balance
                invoice["balanceVersion"] = _version(invoice) + 1
        return self._changed_invoice(data, id, "payment_status")

    # ----- invoice line items and groups --------------------------------------------------------------------------
    def list_invoice_lines(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.invoices, id, "Invoice")
        entries = self._children_entries(data.line_items, data.lines_by_invoice.of(id))
        return self._list(request, data.line_items, entries)

    def list_invoice_groups(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.invoices, id, "Invoice")
        entries = self._children_entries(data.line_item_groups, data.groups_by_invoice.of(id))
        return self._list(request, data.line_item_groups, entries)

    def create_invoice_group(self, request: Request, data: _TenantData, id: str) -> Response:
        self._editable_invoice(data, id, "add a line item group")
        fields = self._group_fields(self._body(request), data)
        currency = data.invoices.records[id].get("currency")
        zero = _money(Decimal(0), currency)
        record = {"id": str(uuid.uuid4()), "invoiceId": id, **fields,
                  "index": len(data.groups_by_invoice.of(id)), "netTotal": zero, "totalTax": zero, "grossTotal": zero}
        rkey = data.line_item_groups.insert(record)
        data.groups_by_invoice.add(id, rkey)
        self.record_write(data.tenant, "create", "line_item_group", rkey, invoiceId=id, title=record["title"])
        self._stamp(data.invoices.records[id])
        data.invoices.touch(id)
        return self._record_response(data.line_item_groups, rkey, 201)

    def update_invoice_group(self, request: Request, data: _TenantData, id: str, group: str) -> Response:
        self._editable_invoice(data, id, "change a line item group")
        record = self._child(data.line_item_groups, group, "invoiceId", id, "Line item group")
        body = self._body(request)
        fields = self._group_fields(body, data)
        index = body.data.get("index")
        for key in ("description", "taxCategory", "revenueRecognitionMethod", "revenueClassification",
                    "servicePeriod"):
            record.pop(key, None)
        record.update(fields)
        if isinstance(index, int) and not isinstance(index, bool):
            record["index"] = index
        data.line_item_groups.touch(group)
        self.record_write(data.tenant, "update", "line_item_group", group, invoiceId=id)
        self._stamp(data.invoices.records[id])
        data.invoices.touch(id)
        return self._record_response(data.line_item_groups, group)

    def delete_invoice_group(self, request: Request, data: _TenantData, id: str, group: str) -> Response:
        self._editable_invoice(data, id, "delete a line item group")
        self._child(data.line_item_groups, group, "invoiceId", id, "Line item group")
        payload = data.line_item_groups.bytes_of(group)
        # Lines of the group go with it [assumed].
        for rkey in list(data.lines_by_invoice.of(id)):
            if data.line_items.records[rkey].get("groupId") == group:
                data.lines_by_invoice.remove(id, rkey)
                data.line_items.delete(rkey)
        data.groups_by_invoice.remove(id, group)
        data.line_item_groups.delete(group)
        self.record_write(data.tenant, "delete", "line_item_group", group, invoiceId=id)
        self._recompute_invoice(data, id)
        self._stamp(data.invoices.records[id])
        data.invoices.touch(id)
        return Response(payload, mimetype="application/json")

    def _group_fields(self, body: _Body, data: _TenantData) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        title = body.string("title", required=True)
        description = body.string("description")
        tax_category_id = body.string("taxCategoryId")
        recognition = body.choice("revenueRecognitionMethod", REVENUE_RECOGNITION_METHODS)
        classification = body.choice("revenueClassification", REVENUE_CLASSIFICATIONS)
        period = body.inclusive_range("servicePeriod")
        tax_category = data.tax_categories.get(tax_category_id) if tax_category_id else None
        if tax_category_id is not None and tax_category is None:
            body.fail("taxCategoryId", f"tax category {tax_category_id} not found")
        self._check(body)
        fields["title"] = title
        if description is not None:
            fields["description"] = description
        if tax_category is not None:
            fields["taxCategory"] = {"id": tax_category_id, "name": str(tax_category.get("name", ""))}
        if recognition is not None:
            fields["revenueRecognitionMethod"] = recognition
        if classification is not None:
            fields["revenueClassification"] = classification
        if period is not None:
            fields["servicePeriod"] = period
        return fields

    def create_invoice_line(self, request: Request, data: _TenantData, id: str) -> Response:
        invoice = self._editable_invoice(data, id, "add a line item")
        body = self._body(request)
        fields = self._line_fields(body, data.groups_by_invoice.of(id), invoice, credit_note=False)
        record = {"id": str(uuid.uuid4()), "invoiceId": id, **fields}
        group = fields.get("groupId")
        siblings = [k for k in data.lines_by_invoice.of(id) if data.line_items.records[k].get("groupId") == group]
        record["index"] = len(siblings)
        rkey = data.line_items.insert(record)
        data.lines_by_invoice.add(id, rkey)
        self._recompute_invoice(data, id)
        self.record_write(data.tenant, "create", "line_item", rkey, invoiceId=id, title=record["title"],
                          netTotal=record["netTotal"])
        self._stamp(invoice)
        data.invoices.touch(id)
        return self._record_response(data.line_items, rkey, 201)

    def update_invoice_line(self, request: Request, data: _TenantData, id: str, line: str) -> Response:
        invoice = self._editable_invoice(data, id, "change a line item")
        record = self._child(data.line_items, line, "invoiceId", id, "Line item")
        fields = self._line_fields(self._body(request), data.groups_by_invoice.of(id), invoice, credit_note=False)
        index = record.get("index")
        record.clear()
        record.update({"id": line, "invoiceId": id, **fields, "index": index})
        data.line_items.touch(line)
        self._recompute_invoice(data, id)
        self.record_write(data.tenant, "update", "line_item", line, invoiceId=id)
        self._stamp(invoice)
        data.invoices.touch(id)
        return self._record_response(data.line_items, line)

    def delete_invoice_line(self, request: Request, data: _TenantData, id: str, line: str) -> Response:
        invoice = self._editable_invoice(data, id, "delete a line item")
        self._child(data.line_items, line, "invoiceId", id, "Line item")
        payload = data.line_items.bytes_of(line)
        data.lines_by_invoice.remove(id, line)
        data.line_items.delete(line)
        self._recompute_invoice(data, id)
        self.record_write(data.tenant, "delete", "line_item", line, invoiceId=id)
        self._stamp(invoice)
        data.invoices.touch(id)
        return Response(payload, mimetype="application/json")

    def _child(self, table: _Table, rkey: str, parent_field: str, parent: str, what: str) -> dict:
        record = table.get(rkey)
        if record is None or record.get(parent_field) != parent:
            raise self._fail(404, f"{what} {rkey} not found on {parent}")
        return record

    def _line_fields(self, body: _Body, group_keys: list[str], parent: dict, *, credit_note: bool) -> dict[str, Any]:
        """Validates a line item body (Stable20240101CreateOrUpdateLineItem, or the credit-note variant) and
        computes its totals: Decimal arithmetic, rounded half up to the document currency's minor units."""
        title = body.string("title", required=True)
        description = body.string("description")
        quantity = body.decimal_string("quantity", required=True)
        rate = body.decimal_string("rate", required=True)
        tax_rate = body.decimal_string("taxRate", required=True)
        if tax_rate is not None and not Decimal(0) <= tax_rate <= Decimal(1):
            # taxRate is a fraction ("0.2" = 20 %); "20" is the classic mistake, refused here on purpose.
            body.fail("taxRate", "taxRate must be a fraction between 0 and 1, e.g. \"0.2\" for 20%")
        external_ids = body.pairs("externalIds", allowed_keys=INTEGRATION_SERVICES, required=True)
        group_id = body.string("groupId")
        if group_id is not None and group_id not in group_keys:
            body.fail("groupId", f"line item group {group_id} not found on this document")
        rate_display = body.choice("rateDisplay", RATE_DISPLAYS)
        classification = body.choice("revenueClassification", REVENUE_CLASSIFICATIONS)
        recognition = body.choice("revenueRecognitionMethod", REVENUE_RECOGNITION_METHODS)
        id_fields = ("lineItemId", "productId") if credit_note else ("priceId", "productId", "creditGrantId")
        optional = {key: value for key in id_fields if (value := body.string(key)) is not None}
        if credit_note:  # credit-note lines: InclusiveDateRange, and the invoice lines they credit
            period = body.inclusive_range("servicePeriod")
            if (invoice_lines := body.strings("invoiceLineItemIds")) is not None:
                optional["invoiceLineItemIds"] = invoice_lines
        else:  # invoice lines: DateRange, or the older servicePeriodStart/End pair
            period = self._date_range(body, "servicePeriod")
            for key in ("servicePeriodStart", "servicePeriodEnd"):
                if (value := body.string(key)) is not None:
                    optional[key] = value
        self._check(body)
        currency = parent.get("currency")
        net = Decimal(_money(quantity * rate, currency))
        tax = Decimal(_money(net * tax_rate, currency))
        fields: dict[str, Any] = {"title": title}
        if description is not None:
            fields["description"] = description
        if group_id is not None:
            fields["groupId"] = group_id
        fields.update(
            quantity=body.data["quantity"], rate=body.data["rate"], taxRate=body.data["taxRate"],
            netTotal=_money(net, currency), totalTax=_money(tax, currency), grossTotal=_money(net + tax, currency),
            rateDisplay=rate_display or "ABSOLUTE", externalIds=external_ids,
        )
        if period is not None:
            fields["servicePeriod"] = period
        if classification is not None:
            fields["revenueClassification"] = classification
        if recognition is not None:
            fields["revenueRecognitionMethod"] = recognition
        fields.update(optional)
        return fields

    @staticmethod
    def _date_range(body: _Body, key: str) -> dict | None:
        value = body.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not _is_date(value.get("startDate")) or not _is_date(value.get("endDate")):
            body.fail(key, f"{key} must be {{\"startDate\": yyyy-MM-dd, \"endDate\": yyyy-MM-dd}}")
            return None
        return {"startDate": value["startDate"], "endDate": value["endDate"]}

    @staticmethod
    def _recompute(parent: dict, lines: list[dict], groups: list[tuple[str, dict]], groups_table: _Table) -> None:
        """Totals of groups and of the document from its lines; money stays Decimal and leaves as strings."""
        currency = parent.get("currency")
        per_group: dict[Any, list[Decimal]] = {}
        totals = [Decimal(0), Decimal(0)]
        for line in lines:
            net, tax = _amount(line, "netTotal"), _amount(line, "totalTax")
            bucket = per_group.setdefault(line.get("groupId"), [Decimal(0), Decimal(0)])
            bucket[0] += net
            bucket[1] += tax
            totals[0] += net
            totals[1] += tax
        for rkey, group in groups:
            net, tax = per_group.get(group.get("id"), [Decimal(0), Decimal(0)])
            new = {"netTotal": _money(net, currency), "totalTax": _money(tax, currency),
                   "grossTotal": _money(net + tax, currency)}
            if any(group.get(k) != v for k, v in new.items()):
                group.update(new)
                groups_table.touch(rkey)
        gross = totals[0] + totals[1]
        parent.update(netTotal=_money(totals[0], currency), totalTax=_money(totals[1], currency),
                      grossTotal=_money(gross, currency))
        balance = _money(gross, currency)
        if parent.get("balance") != balance:
            parent["balance"] = balance
            parent["balanceVersion"] = _version(parent) + 1

    def _recompute_invoice(self, data: _TenantData, id: str) -> None:
        invoice = data.invoices.records[id]
        lines = [data.line_items.records[k] for k in data.lines_by_invoice.of(id)]
        groups = [(k, data.line_item_groups.records[k]) for k in data.groups_by_invoice.of(id)]
        self._recompute(invoice, lines, groups, data.line_item_groups)

    # ----- credit notes -------------------------------------------------------------------------------------------
    def list_credit_notes(self, request: Request, data: _TenantData) -> Response:
        args = request.args
        predicates: list[Predicate] = []
        statuses = self._csv(request, "creditNoteStatus", CREDIT_NOTE_STATUSES)
        if statuses is not None:
            predicates.append(_field_in("status", statuses))
        customers = self._csv(request, "customerId")
        if customers is not None:
            predicates.append(_field_in("customerId", customers))
        if args.get("searchCreditNoteNumber"):
            predicates.append(_contains("creditNoteNumber", args["searchCreditNoteNumber"]))
        for name, at_least in (("sentAfter", True), ("sentBefore", False)):
            bound = self._day_arg(request, name)
            if bound is not None:
                check = _day_at_least("issueDate", bound) if at_least else _day_at_most("issueDate", bound)
                predicates.append(lambda r, c=check: r.get("status") == "SENT" and c(r))
        sort_by = self._sort_by(request, CREDIT_NOTE_SORTS)
        cache_key = ("credit-notes", _filter_args(request))
        entries = self._filtered(data.credit_notes, predicates, sort_by, CREDIT_NOTE_SORTS, cache_key)
        return self._list(request, data.credit_notes, entries, sort_by or "created")

    def get_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.credit_notes, id, "Credit note")
        return self._record_response(data.credit_notes, id)

    def create_credit_note(self, request: Request, data: _TenantData) -> Response:
        body = self._body(request)
        currency = body.choice("currency", sorted(CURRENCIES), required=True)
        customer_id = body.string("customerId", required=True)
        invoice_id = body.string("invoiceId")
        fields = self._credit_note_fields(body)
        self._check(body)
        customer = data.customers.get(customer_id)
        if customer is None:
            raise self._invalid_one("customerId", f"customer {customer_id} not found")
        invoice = data.invoices.get(invoice_id) if invoice_id else None
        if invoice_id is not None and invoice is None:
            raise self._invalid_one("invoiceId", f"invoice {invoice_id} not found")
        now = _now()
        zero = _money(Decimal(0), currency)
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()), "sequenceAccountId": data.account_id, "status": "DRAFT", "currency": currency,
            "customerId": customer_id, "customerEmails": _billing_emails(customer),
            "customerLegalCompanyName": customer.get("legalName", ""),
            "customerBillingAddress": _address_of(customer),
            "customerShippingAddress": _address_of(customer),
            "netTotal": zero, "totalTax": zero, "grossTotal": zero, "balance": zero, "balanceVersion": 0,
            "metadata": [], "linkedServices": [], "applications": [], "applicationStatus": "UNAPPLIED",
            "settings": {"generateCashCreditGrant": "DISABLED"}, "accountingDate": now.date().isoformat(),
        }
        if invoice is not None:
            record["invoiceId"] = invoice_id
            if isinstance(invoice.get("invoiceNumber"), str):
                record["invoiceNumber"] = invoice["invoiceNumber"]
        record.update(fields)
        data.credit_notes.insert(record, created=now.timestamp())
        if invoice is not None:
            linked = invoice.get("creditNoteIds")
            invoice["creditNoteIds"] = [*(linked if isinstance(linked, list) else []), record["id"]]
            self._stamp(invoice)
            data.invoices.touch(invoice_id)
        self.record_write(data.tenant, "create", "credit_note", record["id"], customerId=customer_id,
                          invoiceId=invoice_id)
        return self._record_response(data.credit_notes, record["id"], 201)

    @staticmethod
    def _credit_note_fields(body: _Body) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for key in ("purchaseOrderNumber", "memo", "customerLegalCompanyName", "customerTaxId",
                    "billingPeriodStart", "billingPeriodEnd"):
            if (value := body.string(key)) is not None:
                fields[key] = value
        if (value := body.day("accountingDate")) is not None:
            fields["accountingDate"] = value
        if (emails := body.strings("customerEmails")) is not None:
            fields["customerEmails"] = emails
        for key in ("customerBillingAddress", "customerShippingAddress"):
            if (address := body.address(key)) is not None:
                fields[key] = address
        if (metadata := body.pairs("metadata")) is not None:
            fields["metadata"] = metadata
        settings = body.data.get("settings")
        if settings is not None:
            preference = settings.get("generateCashCreditGrant") if isinstance(settings, dict) else None
            if preference not in ("ENABLED", "DISABLED"):
                body.fail("settings.generateCashCreditGrant", "generateCashCreditGrant must be ENABLED or DISABLED")
            else:
                fields["settings"] = {"generateCashCreditGrant": preference}
        return fields

    def _editable_credit_note(self, data: _TenantData, id: str, action: str) -> dict:
        note = self._find(data.credit_notes, id, "Credit note")
        if note.get("status") not in EDITABLE_STATUSES:
            raise self._fail(400, f"Cannot {action}: credit note {id} is {note.get('status')}; "
                                  f"only DRAFT credit notes can be changed")
        return note

    def put_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        note = self._editable_credit_note(data, id, "update credit note")
        body = self._body(request)
        fields = self._credit_note_fields(body)
        self._check(body)
        note.update(fields)
        return self._changed_credit_note(data, id, "update")

    def delete_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        note = self._editable_credit_note(data, id, "delete credit note")
        payload = data.credit_notes.bytes_of(id)
        data.credit_notes.delete(id)
        for rkey in data.lines_by_credit_note.drop(id):
            data.credit_note_line_items.delete(rkey)
        for rkey in data.groups_by_credit_note.drop(id):
            data.credit_note_line_item_groups.delete(rkey)
        invoice = data.invoices.get(note.get("invoiceId")) if isinstance(note.get("invoiceId"), str) else None
        if invoice is not None and isinstance(invoice.get("creditNoteIds"), list) and id in invoice["creditNoteIds"]:
            invoice["creditNoteIds"] = [n for n in invoice["creditNoteIds"] if n != id]
            self._stamp(invoice)
            data.invoices.touch(note["invoiceId"])
        self.record_write(data.tenant, "delete", "credit_note", id)
        return Response(payload, mimetype="application/json")

    def _changed_credit_note(self, data: _TenantData, id: str, op: str) -> Response:
        data.credit_notes.touch(id)
        self.record_write(data.tenant, op, "credit_note", id, status=data.credit_notes.records[id].get("status"))
        return self._record_response(data.credit_notes, id)

    def _credit_note_transition(self, data: _TenantData, id: str, op: str, allowed_from: tuple[str, ...],
                                target: str) -> Response:
        note = self._find(data.credit_notes, id, "Credit note")
        status = note.get("status")
        if status not in allowed_from:
            raise self._fail(400, f"Cannot {op.replace('_', ' ')} credit note {id}: it is {status}; "
                                  f"allowed from {', '.join(allowed_from)}")
        if status in EDITABLE_STATUSES and target in ("FINAL", "SENT"):
            note.setdefault("issueDate", _now().date().isoformat())
            if not note.get("creditNoteNumber"):
                note["creditNoteNumber"] = data.next_number("CN", data.credit_notes, "creditNoteNumber")
        note["status"] = target
        return self._changed_credit_note(data, id, op)

    def finalize_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._credit_note_transition(data, id, "finalize", ("DRAFT", "IN_PROGRESS"), "FINAL")

    def send_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._credit_note_transition(data, id, "send", ("FINAL",), "SENT")

    def finalize_and_send_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._credit_note_transition(data, id, "finalize_and_send", ("DRAFT", "IN_PROGRESS"), "SENT")

    def mark_credit_note_as_sent(self, request: Request, data: _TenantData, id: str) -> Response:
        return self._credit_note_transition(data, id, "mark_as_sent", ("DRAFT", "IN_PROGRESS", "FINAL"), "SENT")

    def void_credit_note(self, request: Request, data: _TenantData, id: str) -> Response:
        note = self._find(data.credit_notes, id, "Credit note")
        if note.get("applications"):
            raise self._fail(400, f"Cannot void credit note {id}: it has been applied to invoices")
        return self._credit_note_transition(data, id, "void", ("DRAFT", "FINAL", "SENT"), "VOIDED")

    def list_credit_note_lines(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.credit_notes, id, "Credit note")
        entries = self._children_entries(data.credit_note_line_items, data.lines_by_credit_note.of(id))
        return self._list(request, data.credit_note_line_items, entries)

    def list_credit_note_groups(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.credit_notes, id, "Credit note")
        entries = self._children_entries(data.credit_note_line_item_groups, data.groups_by_credit_note.of(id))
        return self._list(request, data.credit_note_line_item_groups, entries)

    def create_credit_note_group(self, request: Request, data: _TenantData, id: str) -> Response:
        note = self._editable_credit_note(data, id, "add a line item group")
        body = self._body(request)
        title = body.string("title", required=True)
        description = body.string("description")
        invoice_group = body.string("lineItemGroupId")
        self._check(body)
        zero = _money(Decimal(0), note.get("currency"))
        record: dict[str, Any] = {"id": str(uuid.uuid4()), "creditNoteId": id, "title": title}
        if invoice_group is not None:
            record["lineItemGroupId"] = invoice_group
        if description is not None:
            record["description"] = description
        record.update(index=len(data.groups_by_credit_note.of(id)), netTotal=zero, totalTax=zero, grossTotal=zero)
        rkey = data.credit_note_line_item_groups.insert(record)
        data.groups_by_credit_note.add(id, rkey)
        self.record_write(data.tenant, "create", "credit_note_line_item_group", rkey, creditNoteId=id)
        return self._record_response(data.credit_note_line_item_groups, rkey, 201)

    def create_credit_note_line(self, request: Request, data: _TenantData, id: str) -> Response:
        note = self._editable_credit_note(data, id, "add a line item")
        body = self._body(request)
        named = body.string("creditNoteId", required=True)
        if named is not None and named != id:
            body.fail("creditNoteId", "creditNoteId must match the credit note in the path")
        fields = self._line_fields(body, data.groups_by_credit_note.of(id), note, credit_note=True)
        record: dict[str, Any] = {"id": str(uuid.uuid4()), "creditNoteId": id, **fields}
        group = fields.get("groupId")
        siblings = [k for k in data.lines_by_credit_note.of(id)
                    if data.credit_note_line_items.records[k].get("groupId") == group]
        record["index"] = len(siblings)
        rkey = data.credit_note_line_items.insert(record)
        data.lines_by_credit_note.add(id, rkey)
        lines = [data.credit_note_line_items.records[k] for k in data.lines_by_credit_note.of(id)]
        groups = [(k, data.credit_note_line_item_groups.records[k]) for k in data.groups_by_credit_note.of(id)]
        self._recompute(note, lines, groups, data.credit_note_line_item_groups)
        data.credit_notes.touch(id)
        self.record_write(data.tenant, "create", "credit_note_line_item", rkey, creditNoteId=id,
                          netTotal=record["netTotal"])
        return self._record_response(data.credit_note_line_items, rkey, 201)

    def apply_credit_note(self, request: Request, data: _TenantData) -> Response:
        body = self._body(request)
        note_id = body.string("creditNoteId", required=True)
        invoice_id = body.string("invoiceId", required=True)
        currency = body.choice("currency", sorted(CURRENCIES), required=True)
        raw_amount = body.data.get("amount")
        amount = None
        if isinstance(raw_amount, (int, float)) and not isinstance(raw_amount, bool):
            amount = _decimal(str(raw_amount))  # via str: 50.1 stays 50.1, not its binary neighbour
        if amount is None or amount <= 0:
            body.fail("amount", "amount must be a positive number")
        versions = {}
        for key in ("creditNoteBalanceVersion", "invoiceBalanceVersion"):
            value = body.data.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                body.fail(key, f"{key} must be an integer")
            versions[key] = value
        self._check(body)
        note = self._find(data.credit_notes, note_id, "Credit note")
        invoice = self._find(data.invoices, invoice_id, "Invoice")
        stale = (versions["creditNoteBalanceVersion"] != _version(note)
                 or versions["invoiceBalanceVersion"] != _version(invoice))
        if stale:
            return json_response({
                "message": "Balance version mismatch. Re-read current versions and retry.",
                "currentInvoiceBalance": _balance(invoice), "currentCreditNoteBalance": _balance(note),
            }, status=409)
        if note.get("status") not in ("FINAL", "SENT") or invoice.get("status") not in ("FINAL", "SENT"):
            raise self._fail(400, "Credit notes apply only from a FINAL or SENT credit note "
                                  "to a FINAL or SENT invoice")
        if currency != note.get("currency") or currency != invoice.get("currency"):
            raise self._invalid_one("currency", "currency must match both the credit note and the invoice")
        if amount > _amount(note, "balance") or amount > _amount(invoice, "balance"):
            raise self._invalid_one("amount", "amount exceeds the credit note or the invoice balance")
        applied_at = _iso(_now())
        note["balance"] = _money(_amount(note, "balance") - amount, currency)
        note["balanceVersion"] = _version(note) + 1
        applications = note.get("applications") if isinstance(note.get("applications"), list) else []
        note["applications"] = [*applications, {
            "invoiceId": invoice_id, "amount": _money(amount, currency), "appliedAt": applied_at,
            **({"invoiceNumber": invoice["invoiceNumber"]} if isinstance(invoice.get("invoiceNumber"), str) else {}),
        }]
        note["applicationStatus"] = "FULLY_APPLIED" if _amount(note, "balance") == 0 else "PARTIALLY_APPLIED"
        invoice["balance"] = _money(_amount(invoice, "balance") - amount, currency)
        invoice["balanceVersion"] = _version(invoice) + 1
        invoice["paymentStatus"] = "PAID" if _amount(invoice, "balance") == 0 else "PARTIALLY_PAID"
        data.credited[invoice_id] = data.credited.get(invoice_id, Decimal(0)) + amount
        applied = invoice.get("appliedCreditNotes")
        if isinstance(applied, list) and not any(isinstance(a, dict) and a.get("id") == note_id for a in applied):
            totals = {k: note[k] for k in ("creditNoteNumber", "netTotal", "totalTax", "grossTotal") if k in note}
            invoice["appliedCreditNotes"] = [*applied, {"id": note_id, **totals, "lineItems": []}]
        self._stamp(invoice)
        data.credit_notes.touch(note_id)
        data.invoices.touch(invoice_id)
        transaction = str(uuid.uuid4())
        self.record_write(data.tenant, "apply", "credit_note_application", transaction, creditNoteId=note_id,
                          invoiceId=invoice_id, amount=_money(amount, currency))
        return json_response({
            "ledgerTransactionId": transaction, "creditNoteId": note_id, "invoiceId": invoice_id,
            "amount": float(amount), "currency": currency, "appliedAt": applied_at,
            "invoiceBalance": _balance(invoice), "creditNoteBalance": _balance(note),
        }, status=201)

    # ----- products, tax categories, payment settings ---------------------------------------------------------------
    def list_products(self, request: Request, data: _TenantData) -> Response:
        predicates: list[Predicate] = []
        name = request.args.get("name")
        if name:
            predicates.append(_contains("name", name))
        entries = self._filtered(data.products, predicates, None, {}, ("products", name))
        return self._list(request, data.products, entries)

    def get_product(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.products, id, "Product")
        return self._record_response(data.products, id)

    def _product_fields(self, body: _Body, data: _TenantData) -> dict[str, Any]:
        name = body.string("name", required=True)
        label = body.string("label")
        tax_category_id = body.string("taxCategoryId")
        if tax_category_id is not None and data.tax_categories.get(tax_category_id) is None:
            body.fail("taxCategoryId", f"tax category {tax_category_id} not found")
        self._check(body)
        fields = {"name": name}
        if label is not None:
            fields["label"] = label
        if tax_category_id is not None:
            fields["taxCategoryId"] = tax_category_id
        return fields

    def create_product(self, request: Request, data: _TenantData) -> Response:
        fields = self._product_fields(self._body(request), data)
        now = _now()
        record = {"id": str(uuid.uuid4()), **fields, "createdAt": _iso(now), "updatedAt": _iso(now)}
        data.products.insert(record, created=now.timestamp())
        self.record_write(data.tenant, "create", "product", record["id"], name=record["name"])
        return self._record_response(data.products, record["id"], 201)

    def put_product(self, request: Request, data: _TenantData, id: str) -> Response:
        product = self._find(data.products, id, "Product")
        fields = self._product_fields(self._body(request), data)
        product.pop("label", None)
        product.pop("taxCategoryId", None)
        product.update(fields)
        self._stamp(product)
        data.products.touch(id)
        self.record_write(data.tenant, "update", "product", id, name=product["name"])
        return self._record_response(data.products, id)

    def archive_product(self, request: Request, data: _TenantData, id: str) -> Response:
        product = self._find(data.products, id, "Product")
        if not product.get("archivedAt"):
            product["archivedAt"] = _iso(_now())
            self._stamp(product)
            data.products.touch(id)
            self.record_write(data.tenant, "archive", "product", id)
        answer = {k: product[k] for k in ("id", "name", "label", "createdAt", "updatedAt", "archivedAt")
                  if k in product}
        return json_response(answer)

    def list_tax_categories(self, request: Request, data: _TenantData) -> Response:
        return self._list(request, data.tax_categories, data.tax_categories.entries)

    def get_tax_category(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.tax_categories, id, "Tax category")
        return self._record_response(data.tax_categories, id)

    def get_payment_settings_for_invoice(self, request: Request, data: _TenantData, id: str) -> Response:
        rkey = data.settings_by_invoice.get(id)
        if rkey is None:
            raise self._fail(404, f"No payment settings for invoice {id}")
        return self._record_response(data.payment_settings, rkey)

    def get_invoice_payment_settings(self, request: Request, data: _TenantData, id: str) -> Response:
        self._find(data.payment_settings, id, "Invoice payment settings")
        return self._record_response(data.payment_settings, id)

    def create_invoice_payment_settings(self, request: Request, data: _TenantData) -> Response:
        body = self._body(request)
        invoice_id = body.string("invoiceId", required=True)
        customer_id = body.string("customerId")
        provider = body.choice("paymentProvider", PAYMENT_PROVIDERS, required=True)
        self._check(body)
        invoice = data.invoices.get(invoice_id)
        if invoice is None:
            raise self._invalid_one("invoiceId", f"invoice {invoice_id} not found")
        if invoice_id in data.settings_by_invoice:
            raise self._fail(409, f"invoice {invoice_id} already has payment settings; update them instead")
        record = {"id": str(uuid.uuid4()), "sequenceAccountId": data.account_id, "invoiceId": invoice_id,
                  "customerId": customer_id or invoice.get("customerId", ""), "paymentProvider": provider}
        rkey = data.payment_settings.insert(record)
        data.settings_by_invoice[invoice_id] = rkey
        self.record_write(data.tenant, "create", "invoice_payment_settings", rkey, invoiceId=invoice_id,
                          paymentProvider=provider)
        return self._record_response(data.payment_settings, rkey, 201)


# ----- record helpers -----------------------------------------------------------------------------------------------
def _contacts(requested: list[dict], existing: list[Any], now: str) -> list[dict]:
    """Contacts for a create or a PUT (which replaces them all); a contact whose email is unchanged keeps its id
    and creation time [assumed]."""
    previous = {c["email"].casefold(): c for c in existing
                if isinstance(c, dict) and isinstance(c.get("email"), str)}
    contacts = []
    for contact in requested:
        kept = previous.get(contact["email"].casefold())
        contacts.append({
            "id": kept["id"] if kept and isinstance(kept.get("id"), str) else str(uuid.uuid4()),
            **contact,
            "createdAt": kept["createdAt"] if kept and isinstance(kept.get("createdAt"), str) else now,
            "updatedAt": now,
        })
    return contacts


def _billing_emails(customer: dict) -> list[str]:
    """Emails of the contacts that receive billing mail (PRIMARY first, then STANDARD)."""
    contacts = [c for c in customer.get("contacts") or [] if isinstance(c, dict) and not c.get("archivedAt")]
    ordered = sorted(contacts, key=lambda c: c.get("billingPreference") != "PRIMARY")
    return [c["email"] for c in ordered
            if c.get("billingPreference") in ("PRIMARY", "STANDARD") and isinstance(c.get("email"), str)]


def _legacy_customer(customer: dict) -> dict:
    """GET /customers/by-alias/{alias} answers with the 2024-05-09 customer shape (Customer20240509 in the spec):
    one `email`, `contactName` and `billingEmails` instead of contacts."""
    contacts = [c for c in customer.get("contacts") or [] if isinstance(c, dict)]
    primary = next((c for c in contacts if c.get("billingPreference") == "PRIMARY"), contacts[0] if contacts else {})
    answer = {k: customer[k] for k in ("id", "createdAt", "legalName", "address", "url", "label", "integrationIds",
                                       "archivedAt", "taxStatus") if customer.get(k) is not None}
    answer["email"] = primary.get("email", "")
    if primary.get("name"):
        answer["contactName"] = primary["name"]
    answer["billingEmails"] = _billing_emails(customer)
    return answer


def _address_of(customer: dict) -> dict:
    """A copy of the customer's address for a document's billing/shipping snapshot."""
    address = customer.get("address")
    return dict(address) if isinstance(address, dict) else {}


def _render_settings(payment_options: list[str]) -> dict:
    return {"paymentLinkDisplay": "SHOW_PAYMENT_LINK" if "LINK" in payment_options else "HIDE_PAYMENT_LINK"}


def _version(record: dict) -> int:
    version = record.get("balanceVersion")
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def _balance(record: dict) -> dict:
    """BalanceResponse: the spec types `value` as a JSON number."""
    return {"value": float(_amount(record, "balance")), "currency": record.get("currency"),
            "version": _version(record)}
