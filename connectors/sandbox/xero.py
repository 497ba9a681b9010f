"""Xero Accounting API 2.0 (and the identity endpoints it needs), emulated on loopback
(vendor notes: shared/vendors/xero.md; contract: shared/specs/xero/xero_accounting.yaml, xero-identity.yaml).

Served paths (JSON only; the emulator root stands for both identity.xero.com and api.xero.com):
  POST /connect/token                         form, HTTP Basic client id/secret, grant_type=refresh_token;
                                              refresh tokens rotate (the used one dies), access tokens last 30 min
  GET  /connections (/Connections)            the tenant the access token was granted for
  GET  /api.xro/2.0/<Resource>                Contacts, Invoices, CreditNotes, Payments (paged: page, pageSize),
                                              Items, Accounts, TaxRates, Currencies, Organisation (not paged);
                                              where, order, If-Modified-Since, IDs, InvoiceNumbers, ContactIDs,
                                              Statuses, searchTerm, includeArchived, summaryOnly
  GET  /api.xro/2.0/<Resource>/<id or number> Contacts (ContactID|ContactNumber), Invoices (InvoiceID|InvoiceNumber),
                                              CreditNotes, Payments, Items (ItemID|Code), Accounts, TaxRates (TaxType)
  PUT  /api.xro/2.0/<Resource>                create many: Contacts, Invoices, CreditNotes, Payments, Items
  POST /api.xro/2.0/<Resource>                create or update many (Contacts by ContactID, else Name; Invoices by
                                              InvoiceID, else InvoiceNumber; Items by ItemID, else Code)
  POST /api.xro/2.0/<Resource>/<id>           update one; Payments only {"Status": "DELETED"}
  DELETE /api.xro/2.0/Items/<ItemID>          hard delete (204)
  PUT  /api.xro/2.0/CreditNotes/<id>/Allocations  apply credit to invoices (RemainingCredit, AmountCredited, PAID)
Every accounting call needs a live Bearer token (401 otherwise) and `xero-tenant-id` naming that token's tenant
(403 otherwise). Answers are Xero's envelope {Id, Status, ProviderName, DateTimeUTC, <Plural>} plus `pagination`
on paged lists; writes accept `summarizeErrors=false` (200, per-element HasErrors/ValidationErrors) and otherwise
answer a 400 ValidationException and apply nothing; `Idempotency-Key` (<= 128 chars) replays the first answer
for 6 minutes (a different request under the same key: 400). Rate limits (when enabled): 60/min, 5 concurrent,
5,000/day per tenant -> 429 with Retry-After and X-Rate-Limit-Problem minute|concurrent|daily.

Write log (/_sandbox/writes): one entry per changed record, only for committed changes (never for a replay or
a rolled-back batch), each with `idempotency_key` (the request's Idempotency-Key or null); ops: create, update,
archive (contact), void, delete (invoice/credit note/payment status, or an item removed), paid (an invoice a
payment or allocation settled; the entry carries payment_id / credit_note_id), allocate (credit note).

Fixture records (<tenant>/xero/<collection>.json: contacts, invoices, credit-notes, payments, items, accounts,
tax-rates, currencies, organisation) are served exactly as given; only records a client writes are rebuilt.
Money is computed as Decimal and written as exact JSON numbers.

Known simplifications (where the notes leave behaviour open, the strict or the simple reading):
- JSON only (Xero defaults to XML); access tokens are opaque strings, not JWTs; no refresh-token grace period;
  one connection (tenant) per refresh token; `unitdp`, `createdByMyApp`, attachments, PDFs are ignored/absent;
- paged resources are always paged (page 1 when `page` is absent); pageSize is 1..1000 (larger is capped);
  lists are in creation order unless `order` is given; an unparseable If-Modified-Since is a 400;
- `where` is the subset in connectors/sandbox/xero_where.py; property names are checked against the spec's
  schema fields; anything else is a 400 QueryParseException (ErrorNumber 16);
- Contacts without includeArchived=true hide ARCHIVED ones in lists; contact Balances are not maintained;
- tax: TaxRates.EffectiveRate per line (Exclusive: on top; Inclusive: contained; NoTax: none), rounded half-up
  to cents per line; a line without TaxType takes its account's TaxType, else no tax;
- status machine: DRAFT/SUBMITTED -> DRAFT, SUBMITTED, AUTHORISED, DELETED; AUTHORISED -> VOIDED only without
  payments/credits; PAID, VOIDED, DELETED refuse every change; a part-paid invoice refuses line changes;
- Payments apply to invoices only (not credit notes, no refunds), BankAmount = Amount (the bank account's
  currency is not converted); allocations cannot be deleted;
  Accounts/TaxRates/Currencies writes and the app-wide 10,000/min limit (only reported in
  X-AppMinLimit-Remaining) are not emulated; rate windows roll (Xero's are fixed);
  a concurrent-limit 429 also carries Retry-After: 1.
"""

from __future__ import annotations

import copy
import hashlib
import math
import secrets
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import orjson
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from connectors.sandbox import identity
from connectors.sandbox.emulator import Emulator, EmulatorError, RateLimits, RequestContext
from connectors.sandbox.xero_where import WhereError, compile_order, compile_where, order_key, parse_ms_date

ACCESS_TOKEN_SECONDS = 1800
REFRESH_TOKEN_SECONDS = 60 * 86400
IDEMPOTENCY_SECONDS = 360
IDEMPOTENCY_KEY_MAX = 128
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PER_DAY = 5000
DAY_SECONDS = 86400.0
APP_PER_MINUTE = 10000
API = "/api.xro/2.0"
TOKEN_PATH = "/connect/token"
PROVIDER_NAME = "Ledgerlink Sandbox"
ZERO_ID = "00000000-0000-0000-0000-000000000000"
CENT = Decimal("0.01")
NOT_FOUND_TEXT = "The resource you're looking for cannot be found"

# Property names per type, from the spec's schemas (the conformance test checks them); `where`/`order` refuse others.
_FIELDS = {
    "Contact": (
        "ContactID MergedToContactID ContactNumber AccountNumber ContactStatus Name FirstName LastName CompanyNumber "
        "EmailAddress ContactPersons BankAccountDetails TaxNumber TaxNumberType AccountsReceivableTaxType "
        "AccountsPayableTaxType Addresses Phones IsSupplier IsCustomer SalesDefaultLineAmountType "
        "PurchasesDefaultLineAmountType DefaultCurrency XeroNetworkKey SalesDefaultAccountCode "
        "PurchasesDefaultAccountCode SalesTrackingCategories PurchasesTrackingCategories TrackingCategoryName "
        "TrackingCategoryOption PaymentTerms UpdatedDateUTC ContactGroups Website BrandingTheme BatchPayments "
        "Discount Balances Attachments HasAttachments ValidationErrors HasValidationErrors StatusAttributeString"
    ),
    "Invoice": (
        "Type Contact LineItems Date DueDate LineAmountTypes InvoiceNumber Reference BrandingThemeID Url "
        "CurrencyCode CurrencyRate Status SentToContact ExpectedPaymentDate PlannedPaymentDate CISDeduction CISRate "
        "SubTotal TotalTax Total TotalDiscount InvoiceID RepeatingInvoiceID HasAttachments IsDiscounted Payments "
        "Prepayments Overpayments AmountDue AmountPaid FullyPaidOnDate AmountCredited UpdatedDateUTC "
        "UpdatedDateUTCString CreditNotes Attachments HasErrors StatusAttributeString ValidationErrors Warnings "
        "InvoiceAddresses"
    ),
    "CreditNote": (
        "Type Contact Date DueDate Status LineAmountTypes LineItems SubTotal TotalTax Total CISDeduction CISRate "
        "UpdatedDateUTC UpdatedDateUTCString CurrencyCode FullyPaidOnDate CreditNoteID CreditNoteNumber Reference "
        "SentToContact CurrencyRate RemainingCredit Allocations AppliedAmount Payments BrandingThemeID "
        "StatusAttributeString HasAttachments HasErrors ValidationErrors Warnings InvoiceAddresses"
    ),
    "Payment": (
        "Invoice CreditNote Prepayment Overpayment InvoiceNumber CreditNoteNumber BatchPayment Account Code Date "
        "CurrencyRate Amount BankAmount Reference IsReconciled Status PaymentType UpdatedDateUTC "
        "UpdatedDateUTCString PaymentID BatchPaymentID BankAccountNumber Particulars Details HasAccount "
        "HasValidationErrors StatusAttributeString ValidationErrors Warnings"
    ),
    "Item": (
        "Code InventoryAssetAccountCode Name IsSold IsPurchased Description PurchaseDescription PurchaseDetails "
        "SalesDetails IsTrackedAsInventory TotalCostPool QuantityOnHand UpdatedDateUTC ItemID StatusAttributeString "
        "ValidationErrors"
    ),
    "Account": (
        "Code Name AccountID Type BankAccountNumber Status Description BankAccountType CurrencyCode TaxType "
        "EnablePaymentsToAccount ShowInExpenseClaims Class SystemAccount ReportingCode ReportingCodeName "
        "HasAttachments UpdatedDateUTC AddToWatchlist ValidationErrors"
    ),
    "TaxRate": (
        "Name TaxType TaxComponents Status ReportTaxType CanApplyToAssets CanApplyToEquity CanApplyToExpenses "
        "CanApplyToLiabilities CanApplyToRevenue DisplayTaxRate EffectiveRate"
    ),
    "Currency": "Code Description",
    "Organisation": (
        "OrganisationID APIKey Name LegalName PaysTax Version OrganisationType BaseCurrency CountryCode IsDemoCompany "
        "OrganisationStatus RegistrationNumber EmployerIdentificationNumber TaxNumber FinancialYearEndDay "
        "FinancialYearEndMonth SalesTaxBasis SalesTaxPeriod DefaultSalesTax DefaultPurchasesTax PeriodLockDate "
        "EndOfYearLockDate CreatedDateUTC Timezone OrganisationEntityType ShortCode Class Edition LineOfBusiness "
        "Addresses Phones ExternalLinks PaymentTerms"
    ),
}
# The date string twins Xero adds beside some dates are filterable too.
_TWINS = {"Invoice": "DateString DueDateString", "CreditNote": "DateString DueDateString"}
SCHEMA_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(f"{fields} {_TWINS.get(name, '')}".split()) for name, fields in _FIELDS.items()
}


@dataclass(frozen=True)
class Resource:
    url: str  # path segment, e.g. "CreditNotes"
    collection: str  # fixture file stem
    plural: str  # envelope key
    type_name: str  # schema name
    id_field: str | None
    alt_key: str | None = None  # a second natural key for /<Resource>/<key>
    paged: bool = False
    modified_since: bool = True
    writable: bool = False


RESOURCES: dict[str, Resource] = {
    r.url.lower(): r
    for r in (
        Resource("Contacts", "contacts", "Contacts", "Contact", "ContactID", "ContactNumber", paged=True,
                 writable=True),
        Resource("Invoices", "invoices", "Invoices", "Invoice", "InvoiceID", "InvoiceNumber", paged=True,
                 writable=True),
        Resource("CreditNotes", "credit-notes", "CreditNotes", "CreditNote", "CreditNoteID", "CreditNoteNumber",
                 paged=True, writable=True),
        Resource("Payments", "payments", "Payments", "Payment", "PaymentID", paged=True, writable=True),
        Resource("Items", "items", "Items", "Item", "ItemID", "Code", writable=True),
        Resource("Accounts", "accounts", "Accounts", "Account", "AccountID"),
        Resource("TaxRates", "tax-rates", "TaxRates", "TaxRate", "TaxType", modified_since=False),
        Resource("Currencies", "currencies", "Currencies", "Currency", "Code", modified_since=False),
        Resource("Organisation", "organisation", "Organisations", "Organisation", "OrganisationID",
                 modified_since=False),
    )
}
BY_COLLECTION = {r.collection: r for r in RESOURCES.values()}
ALLOCATIONS = Resource("Allocations", "allocations", "Allocations", "Allocation", "AllocationID", writable=True)

# Per resource: (query parameter, record path) comma-list filters the spec documents.
LIST_FILTERS: dict[str, tuple[tuple[str, tuple[str, ...], bool], ...]] = {
    # (param, path, case-insensitive)
    "Contacts": (("IDs", ("ContactID",), True),),
    "Invoices": (("IDs", ("InvoiceID",), True), ("InvoiceNumbers", ("InvoiceNumber",), False),
                 ("ContactIDs", ("Contact", "ContactID"), True), ("Statuses", ("Status",), False)),
}
SEARCH_FIELDS = {
    "Contacts": ("Name", "FirstName", "LastName", "ContactNumber", "CompanyNumber", "EmailAddress"),
    "Invoices": ("InvoiceNumber", "Reference"),
}
SUMMARY_DROPS = {
    "Contacts": ("Addresses", "Phones", "ContactPersons", "ContactGroups", "PaymentTerms", "Balances"),
    "Invoices": ("LineItems", "Payments", "CreditNotes", "Prepayments", "Overpayments"),
}
DOC_STATUSES = ("DRAFT", "SUBMITTED", "DELETED", "AUTHORISED", "PAID", "VOIDED")
LINE_AMOUNT_TYPES = {"exclusive": "Exclusive", "inclusive": "Inclusive", "notax": "NoTax"}


# ----- values -----------------------------------------------------------------------------------------------------

def _decimal_default(value: Any) -> Any:
    if isinstance(value, Decimal):  # exact digits on the wire, never a float round trip
        return orjson.Fragment(format(value, "f").encode())
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_decimal_default)


def _ms_date(ms: int, offset: bool = True) -> str:
    return f"/Date({ms}+0000)/" if offset else f"/Date({ms})/"


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _dec(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _zero(value: Any) -> Decimal:
    return _dec(value) or Decimal(0)


def _same_id(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()


def _number_after(prefix: str, value: Any) -> int:
    if isinstance(value, str) and value.startswith(prefix) and value[len(prefix):].isdigit():
        return int(value[len(prefix):])
    return 0


class Invalid(Exception):
    """One element's validation failures (Xero's ValidationErrors messages)."""

    def __init__(self, *messages: str):
        super().__init__("; ".join(messages))
        self.messages = list(messages)


def _problem(status: int, title: str, detail: str) -> Response:
    """Xero's identity-layer error shape (401/403/429/5xx)."""
    body = {"Type": None, "Title": title, "Status": status, "Detail": detail, "Instance": str(uuid.uuid4()),
            "Extensions": {}}
    return Response(_dumps(body), status=status, mimetype="application/json")


def _api_error(number: int, kind: str, message: str, elements: list | None = None, status: int = 400) -> Response:
    body: dict[str, Any] = {"ErrorNumber": number, "Type": kind, "Message": message}
    if elements is not None:
        body["Elements"] = elements
    return Response(_dumps(body), status=status, mimetype="application/json")


def _validation(message: str, elements: list | None = None) -> EmulatorError:
    return EmulatorError(_api_error(10, "ValidationException", message, elements if elements is not None else []))


def _not_found() -> EmulatorError:
    return EmulatorError(Response(NOT_FOUND_TEXT, status=404, mimetype="text/plain"))


# ----- state --------------------------------------------------------------------------------------------------------

class _Table:
    """Records in creation order, keyed by their id (fixture rows without one get a private key)."""

    def __init__(self, resource: Resource, records: list):
        self.resource = resource
        self.rows: dict[str, dict] = {}
        for n, record in enumerate(records):
            if not isinstance(record, dict):
                continue
            key = record.get(resource.id_field) if resource.id_field else None
            key = key.lower() if isinstance(key, str) and key else f"#fixture-{n}"
            if key in self.rows:
                key = f"{key}#dup-{n}"
            self.rows[key] = record

        # field -> value -> row key, built on first exact lookup and kept current by store/remove (a write
        # batch on a 100k-invoice tenant must not scan every invoice per element)
        self._indexes: dict[str, dict[str, str]] = {}
        self._updated_ms: dict[str, int | None] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self.version = 0  # moves on every store/remove: list answers cached under an older one are stale
        self.listings: dict[tuple, list[dict]] = {}  # a list query (minus paging) -> its filtered, sorted rows

    def get(self, record_id: Any) -> dict | None:
        return self.rows.get(record_id.lower()) if isinstance(record_id, str) else None

    def find(self, path: str, value: Any, *, fold: bool = False) -> dict | None:
        if not isinstance(value, str) or value == "":
            return None
        if not fold:
            key = self._index(path).get(value)
            return self.rows.get(key) if key is not None else None
        want = value.lower()
        for record in self.rows.values():
            have = record.get(path)
            if isinstance(have, str) and have.lower() == want:
                return record
        return None

    def highest_number(self, path: str, prefix: str) -> int:
        """The largest N among values `<prefix>N` of a field (the next automatic document number follows it)."""
        if (path, prefix) not in self._counters:
            self._counters[(path, prefix)] = max(
                (_number_after(prefix, v) for v in self._index(path)), default=0)
        return self._counters[(path, prefix)]

    def _index(self, path: str) -> dict[str, str]:
        index = self._indexes.get(path)
        if index is None:
            index = {}
            for key, record in self.rows.items():
                value = record.get(path)
                if isinstance(value, str):
                    index.setdefault(value, key)
            self._indexes[path] = index
        return index

    def store(self, key: str, record: dict) -> None:
        self.remove(key)
        self.rows[key] = record
        self.version += 1
        self.listings.clear()
        for (path, prefix), highest in self._counters.items():
            self._counters[(path, prefix)] = max(highest, _number_after(prefix, record.get(path)))
        for path, index in self._indexes.items():
            value = record.get(path)
            if isinstance(value, str):
                index.setdefault(value, key)

    def remove(self, key: str) -> dict | None:
        old = self.rows.pop(key, None)
        self._updated_ms.pop(key, None)
        self.version += 1
        self.listings.clear()
        if old is not None:
            for path, index in self._indexes.items():
                value = old.get(path)
                if isinstance(value, str) and index.get(value) == key:
                    del index[value]
        return old

    def updated_ms(self, key: str, record: dict) -> int | None:
        """UpdatedDateUTC in epoch ms, parsed once per stored revision (If-Modified-Since scans every row)."""
        if key not in self._updated_ms:
            moment = parse_ms_date(record.get("UpdatedDateUTC"))
            self._updated_ms[key] = None if moment is None else round(moment.timestamp() * 1000)
        return self._updated_ms[key]


class _Org:
    def __init__(self, tenant: str, collections: dict[str, list]):
        self.tenant = tenant
        self.tenant_id = identity.xero_tenant_id(tenant)
        self.tables = {r.collection: _Table(r, collections.get(r.collection) or []) for r in RESOURCES.values()}
        # Idempotency-Key -> (fingerprint, status, body, content type, expires at)
        self.replays: dict[str, tuple[str, int, bytes, str, float]] = {}
        self.last_change_ms = 0

    def table(self, collection: str) -> _Table:
        return self.tables[collection]

    @property
    def organisation(self) -> dict:
        rows = list(self.tables["organisation"].rows.values())
        return rows[0] if rows else {}

    @property
    def base_currency(self) -> str:
        base = self.organisation.get("BaseCurrency")
        if isinstance(base, str) and base:
            return base
        codes = [c.get("Code") for c in self.tables["currencies"].rows.values()]
        return next((c for c in codes if isinstance(c, str)), "USD")

    @property
    def name(self) -> str:
        name = self.organisation.get("Name")
        return name if isinstance(name, str) and name else self.tenant


class _Batch:
    """What a write request changed, so a failed all-or-nothing request can be rolled back and a committed one
    logged."""

    def __init__(self) -> None:
        self.undo: list[tuple[_Table, str, dict | None, bool]] = []
        self.log: list[tuple[str, str, str | None, dict]] = []

    def put(self, table: _Table, record: dict, op: str, *, silent: bool = False, **extra: Any) -> None:
        key = str(record[table.resource.id_field]).lower()  # type: ignore[index]
        self.undo.append((table, key, table.rows.get(key), key in table.rows))
        table.store(key, record)
        if not silent:
            self.log.append((op, table.resource.type_name, record.get(table.resource.id_field), extra))

    def delete(self, table: _Table, key: str, record_id: str) -> None:
        self.undo.append((table, key, table.remove(key), True))
        self.log.append(("delete", table.resource.type_name, record_id, {}))

    def mark(self) -> tuple[int, int]:
        return len(self.undo), len(self.log)

    def rollback(self, to: tuple[int, int] = (0, 0)) -> None:
        while len(self.undo) > to[0]:
            table, key, previous, existed = self.undo.pop()
            if existed and previous is not None:
                table.store(key, previous)
            else:
                table.remove(key)
        del self.log[to[1]:]


# ----- the emulator ---------------------------------------------------------------------------------------------------

class XeroEmulator(Emulator):
    app: ClassVar[str] = "xero"
    collections: ClassVar[frozenset[str]] = frozenset(BY_COLLECTION)
    default_limits: ClassVar[RateLimits] = RateLimits(per_minute=60, concurrent=5)

    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        return {"client_id": identity.XERO_CLIENT_ID, "client_secret": identity.XERO_CLIENT_SECRET,
                "refresh_token": identity.xero_initial_refresh_token(tenant)}

    @classmethod
    def connection_options(cls, tenant: str) -> dict[str, Any]:
        return {"xero_tenant_id": identity.xero_tenant_id(tenant)}

    def __init__(self, fixtures: dict[str, dict[str, list[dict]]], *, rate_limits: bool = False,
                 clock: Callable[[], float] = time.time, per_day: int = PER_DAY):
        self.clock = clock  # injectable: tests age tokens, idempotency keys and rate windows
        self.per_day = per_day
        self._day_windows: dict[str, deque[float]] = defaultdict(deque)
        super().__init__(fixtures, rate_limits=rate_limits)

    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        self.orgs = {tenant: _Org(tenant, cols if isinstance(cols, dict) else {}) for tenant, cols in fixtures.items()}
        self.org_by_tenant_id = {org.tenant_id: org for org in self.orgs.values()}
        self.refresh_tokens: dict[str, str] = {identity.xero_initial_refresh_token(t): t for t in fixtures}
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (tenant, expires at)

    def routes(self) -> list[Rule]:
        return [
            Rule(TOKEN_PATH, methods=["POST"], endpoint="oauth_token"),
            Rule("/connections", methods=["GET"], endpoint="connections"),
            Rule("/Connections", methods=["GET"], endpoint="connections"),
            Rule(f"{API}/<resource>", methods=["GET"], endpoint="list_resource"),
            Rule(f"{API}/<resource>", methods=["PUT"], endpoint="put_resource"),
            Rule(f"{API}/<resource>", methods=["POST"], endpoint="post_resource"),
            Rule(f"{API}/<resource>/<key>", methods=["GET"], endpoint="get_resource"),
            Rule(f"{API}/<resource>/<key>", methods=["POST"], endpoint="post_one"),
            Rule(f"{API}/<resource>/<key>", methods=["DELETE"], endpoint="delete_resource"),
            Rule(f"{API}/<resource>/<key>/Allocations", methods=["PUT"], endpoint="put_allocations"),
        ]

    # ----- auth ---------------------------------------------------------------------------------------------------
    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        if request.path == TOKEN_PATH:
            return RequestContext(tenant="-")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise EmulatorError(_problem(401, "Unauthorized", "AuthenticationUnsuccessful"))
        with self.lock:
            grant = self.access_tokens.get(token.strip())
        now = self.clock()
        if grant is None:
            raise EmulatorError(_problem(401, "Unauthorized", "AuthenticationUnsuccessful"))
        if grant[1] <= now:
            expired = datetime.fromtimestamp(grant[1], UTC).strftime("%m/%d/%Y %H:%M:%S")
            raise EmulatorError(_problem(401, "Unauthorized", f"TokenExpired: token expired at {expired}"))
        tenant = grant[0]
        if request.path.lower() == "/connections":
            return RequestContext(tenant=tenant, extra={"org": self.orgs[tenant]})
        org = self.org_by_tenant_id.get(request.headers.get("xero-tenant-id", "").strip().lower())
        if org is None or org.tenant != tenant:
            raise EmulatorError(_problem(403, "Forbidden", "AuthenticationUnsuccessful"))
        return RequestContext(tenant=tenant, extra={"org": org})

    def expire_tokens(self) -> None:
        with self.lock:
            self.access_tokens.clear()

    def idempotency_key(self, request: Request) -> str | None:
        return request.headers.get("Idempotency-Key")

    def oauth_token(self, request: Request, ctx: RequestContext) -> Response:
        auth = request.authorization
        if (auth is None or auth.type != "basic" or auth.username != identity.XERO_CLIENT_ID
                or auth.password != identity.XERO_CLIENT_SECRET):
            return Response(_dumps({"error": "invalid_client"}), status=400, mimetype="application/json")
        if request.form.get("grant_type") != "refresh_token":
            return Response(_dumps({"error": "unsupported_grant_type"}), status=400, mimetype="application/json")
        with self.lock:
            tenant = self.refresh_tokens.pop(request.form.get("refresh_token", ""), None)
            if tenant is None:
                return Response(_dumps({"error": "invalid_grant"}), status=400, mimetype="application/json")
            # Rotation: the token just used is gone; only the new one works from now on.
            refresh_token = f"sandbox-xero-refresh-{tenant}-{secrets.token_urlsafe(18)}"
            access_token = f"sandbox-xero-access-{secrets.token_urlsafe(24)}"
            self.refresh_tokens[refresh_token] = tenant
            self.access_tokens[access_token] = (tenant, self.clock() + ACCESS_TOKEN_SECONDS)
        body = {"id_token": None, "access_token": access_token, "expires_in": ACCESS_TOKEN_SECONDS,
                "token_type": "Bearer", "refresh_token": refresh_token,
                "scope": "offline_access accounting.transactions accounting.contacts accounting.settings"}
        body.pop("id_token")  # no openid scope is granted, so Xero sends none
        return Response(_dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"})

    def connections(self, request: Request, ctx: RequestContext) -> Response:
        org: _Org = ctx.extra["org"]
        connection_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"xero-connection:{org.tenant}"))
        body = [{"id": connection_id, "authEventId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"xero-auth:{org.tenant}")),
                 "tenantId": org.tenant_id, "tenantType": "ORGANISATION", "tenantName": org.name,
                 "createdDateUtc": "2025-01-01T00:00:00.0000000", "updatedDateUtc": "2025-01-01T00:00:00.0000000"}]
        return Response(_dumps(body), mimetype="application/json")

    # ----- error shapes --------------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> Response:
        if status == 401:
            return _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        if status == 403:
            return _problem(403, "Forbidden", "AuthenticationUnsuccessful")
        if status == 429:
            return self.throttled_response("injected", None)
        if status in (404, 405):
            return Response(NOT_FOUND_TEXT, status=status, mimetype="text/plain")
        if status >= 500:
            return _problem(status, "An error occurred", message)
        return _api_error(10, "ValidationException", message, [], status)

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        problem = {"injected": "minute"}.get(reason, reason)
        response = _problem(429, "Too Many Requests", f"Rate limit exceeded: {problem}")
        response.headers["X-Rate-Limit-Problem"] = problem
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def expired_token_response(self) -> Response:
        expired = datetime.fromtimestamp(self.clock(), UTC).strftime("%m/%d/%Y %H:%M:%S")
        return _problem(401, "Unauthorized", f"TokenExpired: token expired at {expired}")

    # ----- rate limits ---------------------------------------------------------------------------------------------
    @contextmanager
    def _throttle(self, key: str) -> Iterator[None]:
        """Per tenant: concurrent, per-minute and per-day windows on the injectable clock (token calls are free)."""
        if not self.limits.enabled or key == "-":
            yield
            return
        now = self.clock()
        with self.lock:
            minute, day = self._windows[key], self._day_windows[key]
            while minute and minute[0] <= now - self.limits.window_seconds:
                minute.popleft()
            while day and day[0] <= now - DAY_SECONDS:
                day.popleft()
            if self.limits.concurrent and self._in_flight[key] >= self.limits.concurrent:
                raise EmulatorError(self.throttled_response("concurrent", "1"))
            if self.limits.per_minute and len(minute) >= self.limits.per_minute:
                wait = max(1, math.ceil(minute[0] + self.limits.window_seconds - now))
                raise EmulatorError(self.throttled_response("minute", str(wait)))
            if self.per_day and len(day) >= self.per_day:
                wait = max(1, math.ceil(day[0] + DAY_SECONDS - now))
                raise EmulatorError(self.throttled_response("daily", str(wait)))
            minute.append(now)
            day.append(now)
            self._in_flight[key] += 1
        try:
            yield
        finally:
            with self.lock:
                self._in_flight[key] -= 1

    def _dispatch(self, request: Request) -> tuple[Response, str]:
        response, tenant = super()._dispatch(request)
        if self.limits.enabled and tenant != "-":
            with self.lock:
                response.headers["X-MinLimit-Remaining"] = str(
                    max(0, self.limits.per_minute - len(self._windows[tenant])))
                response.headers["X-DayLimit-Remaining"] = str(max(0, self.per_day - len(self._day_windows[tenant])))
                response.headers["X-AppMinLimit-Remaining"] = str(
                    max(0, APP_PER_MINUTE - sum(len(w) for w in self._windows.values())))
        return response, tenant

    def _control(self, request: Request) -> Response:
        response = super()._control(request)
        if request.method == "PUT" and request.path.rstrip("/") == "/_sandbox/rate-limits":
            with self.lock:
                self._day_windows.clear()
        return response

    # ----- envelopes -----------------------------------------------------------------------------------------------
    def _envelope(self, resource: Resource, records: list, pagination: dict | None = None) -> Response:
        body: dict[str, Any] = {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": PROVIDER_NAME,
                                "DateTimeUTC": _ms_date(int(self.clock() * 1000), offset=False)}
        if pagination is not None:
            body["pagination"] = pagination
        body[resource.plural] = records
        return Response(_dumps(body), mimetype="application/json")

    @staticmethod
    def _resource(name: str) -> Resource:
        resource = RESOURCES.get(name.lower())
        if resource is None:
            raise _not_found()
        return resource

    # ----- reads ---------------------------------------------------------------------------------------------------
    def list_resource(self, request: Request, ctx: RequestContext, resource: str) -> Response:
        res = self._resource(resource)
        org: _Org = ctx.extra["org"]
        args = request.args
        paged = res.paged
        page = self._positive_int(args.get("page"), "page", 1) if paged else 1
        page_size = min(self._positive_int(args.get("pageSize"), "pageSize", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
        since = self._if_modified_since(request) if res.modified_since else None
        where = order = None
        try:
            if args.get("where", "").strip():
                where = compile_where(args["where"], SCHEMA_FIELDS[res.type_name], res.type_name)
            if args.get("order", "").strip():
                order = compile_order(args["order"], SCHEMA_FIELDS[res.type_name], res.type_name)
        except WhereError as exc:
            raise EmulatorError(_api_error(16, "QueryParseException", str(exc))) from None
        table = org.table(res.collection)
        # Paging through a big list asks the same query once per page: its filtered, sorted rows are kept until
        # the table (or anything in the organisation) changes, so page N costs a slice, not a sort of every row.
        query = (tuple(sorted((k, v) for k, v in args.items(multi=True) if k not in ("page", "pageSize",
                                                                                    "summaryOnly"))),
                 since, org.last_change_ms, table.version)
        with self.lock:
            cached = table.listings.get(query)
        if cached is not None:
            return self._page(res, cached, paged, page, page_size, args)
        with self.lock:
            if since is not None:  # filter on the cached instants first: the cheapest cut on big tables
                since_ms = since.timestamp() * 1000
                rows = [r for k, r in table.rows.items() if (ms := table.updated_ms(k, r)) is not None
                        and ms > since_ms]
            else:
                rows = list(table.rows.values())
        if res.url == "Contacts" and args.get("includeArchived", "").lower() != "true":
            rows = [r for r in rows if r.get("ContactStatus") != "ARCHIVED"]
        for param, path, fold in LIST_FILTERS.get(res.url, ()):
            raw = args.get(param)
            if raw is None or not raw.strip():
                continue
            wanted = {v.strip().lower() if fold else v.strip() for v in raw.split(",") if v.strip()}
            rows = [r for r in rows if self._path_in(r, path, wanted, fold)]
        term = args.get("searchTerm", "").strip().lower()
        if term and res.url in SEARCH_FIELDS:
            rows = [r for r in rows
                    if any(isinstance(r.get(f), str) and term in r[f].lower() for f in SEARCH_FIELDS[res.url])]
        try:
            if where is not None:
                rows = [r for r in rows if where(r)]
        except WhereError as exc:
            raise EmulatorError(_api_error(16, "QueryParseException", str(exc))) from None
        if order:
            for path, descending in reversed(order):  # stable sorts, last key first
                rows.sort(key=lambda r, p=path: order_key(r, p), reverse=descending)
        with self.lock:
            if len(table.listings) > 64:  # a few live queries at a time; never grows without bound
                table.listings.clear()
            table.listings[query] = rows
        return self._page(res, rows, paged, page, page_size, args)

    def _page(self, res: Resource, rows: list[dict], paged: bool, page: int, page_size: int, args: Any) -> Response:
        pagination = None
        if paged:
            total = len(rows)
            pagination = {"page": page, "pageSize": page_size, "pageCount": math.ceil(total / page_size),
                          "itemCount": total}
            rows = rows[(page - 1) * page_size: page * page_size]
        if args.get("summaryOnly", "").lower() == "true" and res.url in SUMMARY_DROPS:
            rows = [{k: v for k, v in r.items() if k not in SUMMARY_DROPS[res.url]} for r in rows]
        return self._envelope(res, rows, pagination)

    @staticmethod
    def _path_in(record: dict, path: tuple[str, ...], wanted: set[str], fold: bool) -> bool:
        value: Any = record
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return isinstance(value, str) and (value.lower() if fold else value) in wanted

    @staticmethod
    def _positive_int(raw: str | None, name: str, default: int) -> int:
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise _validation(f"The '{name}' parameter must be a positive whole number, not '{raw}'")
        return int(raw)

    @staticmethod
    def _if_modified_since(request: Request) -> datetime | None:
        raw = request.headers.get("If-Modified-Since")
        if raw is None or not raw.strip():
            return None
        moment = parse_ms_date(raw.strip())
        if moment is None:
            try:
                moment = parsedate_to_datetime(raw).astimezone(UTC)
            except (TypeError, ValueError, IndexError):
                moment = None
        if moment is None:
            raise _validation(f"The If-Modified-Since header '{raw}' is not a valid date")
        return moment

    def _lookup(self, org: _Org, res: Resource, key: str) -> dict | None:
        table = org.table(res.collection)
        record = table.get(key)
        if record is None and res.alt_key:
            record = table.find(res.alt_key, key)
        return record

    def get_resource(self, request: Request, ctx: RequestContext, resource: str, key: str) -> Response:
        res = self._resource(resource)
        if res.url in ("Currencies", "Organisation"):
            raise _not_found()
        with self.lock:
            record = self._lookup(ctx.extra["org"], res, key)
        if record is None:
            raise _not_found()
        return self._envelope(res, [record])

    # ----- writes ---------------------------------------------------------------------------------------------------
    def put_resource(self, request: Request, ctx: RequestContext, resource: str) -> Response:
        return self._write(request, ctx, self._resource(resource), "create", None)

    def post_resource(self, request: Request, ctx: RequestContext, resource: str) -> Response:
        return self._write(request, ctx, self._resource(resource), "upsert", None)

    def post_one(self, request: Request, ctx: RequestContext, resource: str, key: str) -> Response:
        return self._write(request, ctx, self._resource(resource), "update", key)

    def put_allocations(self, request: Request, ctx: RequestContext, resource: str, key: str) -> Response:
        if self._resource(resource).url != "CreditNotes":
            raise _not_found()
        return self._write(request, ctx, ALLOCATIONS, "allocate", key)

    def delete_resource(self, request: Request, ctx: RequestContext, resource: str, key: str) -> Response:
        res = self._resource(resource)
        if res.url != "Items":
            raise EmulatorError(Response(NOT_FOUND_TEXT, status=405, mimetype="text/plain"))
        org: _Org = ctx.extra["org"]
        with self.lock:
            table = org.table("items")
            record = self._lookup(org, res, key)
            if record is None:
                raise _not_found()
            batch = _Batch()
            batch.delete(table, str(record["ItemID"]).lower(), record["ItemID"])
            self._commit(org, batch, request)
        return Response(status=204)

    def _write(self, request: Request, ctx: RequestContext, res: Resource, mode: str, key: str | None) -> Response:
        if not res.writable:
            raise EmulatorError(Response(NOT_FOUND_TEXT, status=405, mimetype="text/plain"))
        org: _Org = ctx.extra["org"]
        idem = request.headers.get("Idempotency-Key")
        if idem is not None and not 0 < len(idem) <= IDEMPOTENCY_KEY_MAX:
            raise _validation(f"The Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX} characters long")
        fingerprint = hashlib.sha256(
            b"\0".join([request.method.encode(), request.path.lower().encode(), request.query_string,
                        request.get_data()])).hexdigest()
        with self.lock:
            now = self.clock()
            if idem is not None:
                for stale in [k for k, v in org.replays.items() if v[4] <= now]:
                    del org.replays[stale]
                cached = org.replays.get(idem)
                if cached is not None:
                    if cached[0] != fingerprint:
                        raise _validation("The Idempotency-Key has already been used for a different request")
                    return Response(cached[2], status=cached[1], mimetype=cached[3])
            try:
                response = self._apply(request, org, res, mode, key)
            except EmulatorError as exc:
                response = exc.response
            if idem is not None and response.status_code < 500:
                org.replays[idem] = (fingerprint, response.status_code, response.get_data(),
                                     response.mimetype or "application/json", now + IDEMPOTENCY_SECONDS)
            return response

    def _apply(self, request: Request, org: _Org, res: Resource, mode: str, key: str | None) -> Response:
        body = self.json_body(request, lambda m: _api_error(10, "ValidationException", m, []))
        if isinstance(body, dict) and isinstance(body.get(res.plural), list):
            elements = body[res.plural]
        elif isinstance(body, dict):
            elements = [body]
        elif isinstance(body, list):
            elements = body
        else:
            raise _validation("The request body must be a JSON object")
        handler: Callable[[_Org, dict, str, _Batch], dict]
        if mode == "allocate":
            note = self._lookup(org, RESOURCES["creditnotes"], key or "")
            if note is None:
                raise _not_found()
            note_id = note["CreditNoteID"]

            def handler(org: _Org, element: dict, mode: str, batch: _Batch) -> dict:
                return self._allocate(org, note_id, element, batch)
        else:
            handler = getattr(self, f"_write_{res.collection.replace('-', '_')}")
            if key is not None:
                target = self._lookup(org, res, key)
                if target is None:
                    raise _not_found()
                if len(elements) != 1 or not isinstance(elements[0], dict):
                    raise _validation(f"POST /{res.url}/{key} takes exactly one element")
                elements = [{**elements[0], res.id_field: target[res.id_field]}]  # type: ignore[index]
        summarize = request.args.get("summarizeErrors", "true").lower() != "false"
        batch = _Batch()
        results: list[tuple[dict, list[str] | None]] = []
        for element in elements:
            mark = batch.mark()
            try:
                if not isinstance(element, dict):
                    raise Invalid("Each element must be a JSON object")
                results.append((handler(org, element, mode, batch), None))
            except Invalid as exc:
                batch.rollback(mark)  # an element's own partial effects never survive its failure
                results.append((element if isinstance(element, dict) else {}, exc.messages))
        failed = [(el, errs) for el, errs in results if errs is not None]
        if failed and summarize:
            batch.rollback()
            raise _validation("A validation exception occurred",
                              [self._error_element(res, el, errs) for el, errs in failed])
        self._commit(org, batch, request)
        out = []
        for record, errors in results:
            if errors is None:
                out.append({**record, "StatusAttributeString": "OK"} if not summarize else record)
            else:
                out.append({**self._error_element(res, record, errors), "StatusAttributeString": "ERROR"})
        return self._envelope(res, out)

    @staticmethod
    def _error_element(res: Resource, element: dict, errors: list[str]) -> dict:
        echo = {k: v for k, v in element.items() if k not in ("ValidationErrors", "HasErrors")}
        if res.id_field and res.id_field.endswith("ID") and not isinstance(echo.get(res.id_field), str):
            echo[res.id_field] = ZERO_ID
        echo["HasErrors"] = True
        if res.url in ("Contacts", "Payments"):
            echo["HasValidationErrors"] = True
        echo["ValidationErrors"] = [{"Message": m} for m in errors]
        return echo

    def _commit(self, org: _Org, batch: _Batch, request: Request) -> None:
        key = request.headers.get("Idempotency-Key")
        for op, entity, record_id, extra in batch.log:
            self.record_write(org.tenant, op, entity, record_id, idempotency_key=key, **extra)

    # ----- shared write helpers -------------------------------------------------------------------------------------
    def _stamp(self, org: _Org, record: dict, twin: bool) -> None:
        """Bumps UpdatedDateUTC, strictly increasing per organisation so no change shares a cursor instant."""
        ms = max(int(self.clock() * 1000), org.last_change_ms + 1)
        org.last_change_ms = ms
        record["UpdatedDateUTC"] = _ms_date(ms)
        if twin:
            record["UpdatedDateUTCString"] = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).date()

    @staticmethod
    def _parse_day(value: Any, name: str) -> date:
        if isinstance(value, str):
            moment = parse_ms_date(value)
            if moment is None:
                try:
                    return date.fromisoformat(value.strip()[:10])
                except ValueError:
                    pass
            else:
                return moment.date()
        raise Invalid(f"{name} is not a valid date: {value!r}")

    @staticmethod
    def _set_day(record: dict, name: str, day: date) -> None:
        record[name] = _ms_date(_day_ms(day))
        record[f"{name}String"] = f"{day.isoformat()}T00:00:00"

    @staticmethod
    def _check_length(element: dict, name: str, limit: int, errors: list[str]) -> None:
        value = element.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            errors.append(f"{name} must be text of at most {limit} characters")

    def _tax_rate(self, org: _Org, tax_type: Any) -> Decimal | None:
        record = org.table("tax-rates").get(tax_type) if isinstance(tax_type, str) else None
        if record is None:
            return None
        return _dec(record.get("EffectiveRate")) or _dec(record.get("DisplayTaxRate")) or Decimal(0)

    # ----- contacts -------------------------------------------------------------------------------------------------
    def _write_contacts(self, org: _Org, element: dict, mode: str, batch: _Batch) -> dict:
        table = org.table("contacts")
        existing = None
        given_id = element.get("ContactID")
        if given_id is not None and mode != "create":
            existing = table.get(given_id)
            if existing is None:
                raise Invalid(f"Contact with ContactID {given_id} could not be found")
        if existing is None and mode == "upsert" and isinstance(element.get("Name"), str):
            existing = next((r for r in table.rows.values() if isinstance(r.get("Name"), str)
                             and r["Name"].strip().lower() == element["Name"].strip().lower()), None)
        errors: list[str] = []
        name = element.get("Name", existing.get("Name") if existing else None)
        if not isinstance(name, str) or not name.strip():
            errors.append("The contact name must be specified.")
        self._check_length(element, "Name", 255, errors)
        self._check_length(element, "ContactNumber", 50, errors)
        self._check_length(element, "AccountNumber", 50, errors)
        self._check_length(element, "EmailAddress", 255, errors)
        email = element.get("EmailAddress")
        if isinstance(email, str) and email and ("@" not in email or " " in email.strip()):
            errors.append("Email address must be valid.")
        status = element.get("ContactStatus")
        if status is not None and status not in ("ACTIVE", "ARCHIVED", "GDPRREQUEST"):
            errors.append(f"ContactStatus '{status}' is not valid")
        currency = element.get("DefaultCurrency")
        if currency is not None and org.table("currencies").rows and org.table("currencies").get(currency) is None:
            errors.append(f"The currency code {currency} is not valid for this organisation")
        own = existing.get("ContactID") if existing else None
        if isinstance(name, str) and name.strip() and (existing is None or "Name" in element):
            clash = next((r for r in table.rows.values() if r.get("ContactStatus", "ACTIVE") == "ACTIVE"
                          and isinstance(r.get("Name"), str) and r["Name"].strip().lower() == name.strip().lower()
                          and not _same_id(r.get("ContactID"), own)), None)
            if clash is not None:
                errors.append(f"The contact name {name} is already assigned to another contact. The contact name "
                              "must be unique across all active contacts.")
        number = element.get("ContactNumber")
        if isinstance(number, str) and number:
            clash = next((r for r in table.rows.values() if r.get("ContactNumber") == number
                          and not _same_id(r.get("ContactID"), own)), None)
            if clash is not None:
                errors.append(f"The contact number {number} is already assigned to another contact.")
        if errors:
            raise Invalid(*errors)
        writable = {k: copy.deepcopy(v) for k, v in element.items()
                    if k not in ("ContactID", "UpdatedDateUTC", "Balances", "HasValidationErrors", "ValidationErrors",
                                 "StatusAttributeString", "HasAttachments", "IsCustomer", "IsSupplier")}
        if existing is None:
            record: dict[str, Any] = {
                "ContactID": str(uuid.uuid4()), "ContactStatus": "ACTIVE", "Name": name, "Addresses": [],
                "Phones": [], "ContactGroups": [], "ContactPersons": [], "IsSupplier": False, "IsCustomer": False,
                "HasAttachments": False, "HasValidationErrors": False,
            }
            record.update(writable)
            self._stamp(org, record, twin=False)
            batch.put(table, record, "create")
            return record
        record = {**copy.deepcopy(existing), **writable}
        if record == existing:
            return existing
        self._stamp(org, record, twin=False)
        batch.put(table, record, "archive" if writable.get("ContactStatus") == "ARCHIVED"
                  and existing.get("ContactStatus") != "ARCHIVED" else "update")
        return record

    # ----- items ----------------------------------------------------------------------------------------------------
    def _write_items(self, org: _Org, element: dict, mode: str, batch: _Batch) -> dict:
        table = org.table("items")
        existing = None
        if element.get("ItemID") is not None and mode != "create":
            existing = table.get(element["ItemID"])
            if existing is None:
                raise Invalid(f"Item with ItemID {element['ItemID']} could not be found")
        if existing is None and mode == "upsert":
            existing = table.find("Code", element.get("Code"))
        errors: list[str] = []
        code = element.get("Code", existing.get("Code") if existing else None)
        if not isinstance(code, str) or not code.strip():
            errors.append("Item Code must be specified")
        self._check_length(element, "Code", 30, errors)
        self._check_length(element, "Name", 50, errors)
        self._check_length(element, "Description", 4000, errors)
        own = existing.get("ItemID") if existing else None
        if isinstance(code, str) and code:
            clash = next((r for r in table.rows.values() if r.get("Code") == code
                          and not _same_id(r.get("ItemID"), own)), None)
            if clash is not None:
                errors.append(f"Item code '{code}' already exists")
        for group in ("SalesDetails", "PurchaseDetails"):
            details = element.get(group)
            if details is None:
                continue
            if not isinstance(details, dict):
                errors.append(f"{group} must be an object")
                continue
            if "UnitPrice" in details and _dec(details["UnitPrice"]) is None:
                errors.append(f"{group}.UnitPrice must be a number")
            self._check_account_code(org, details.get("AccountCode"), errors)
            tax = details.get("TaxType")
            if tax is not None and org.table("tax-rates").rows and org.table("tax-rates").get(tax) is None:
                errors.append(f"The TaxType code '{tax}' does not exist or cannot be used for this type of "
                              "transaction.")
        if errors:
            raise Invalid(*errors)
        writable = {k: copy.deepcopy(v) for k, v in element.items()
                    if k not in ("ItemID", "UpdatedDateUTC", "ValidationErrors", "StatusAttributeString")}
        for group in ("SalesDetails", "PurchaseDetails"):
            if isinstance(writable.get(group), dict) and "UnitPrice" in writable[group]:
                writable[group]["UnitPrice"] = _dec(writable[group]["UnitPrice"])
        if existing is None:
            record: dict[str, Any] = {"ItemID": str(uuid.uuid4()), "Code": code,
                                      "IsSold": "SalesDetails" in element, "IsPurchased": "PurchaseDetails" in element,
                                      "IsTrackedAsInventory": False}
            record.update(writable)
            self._stamp(org, record, twin=False)
            batch.put(table, record, "create")
            return record
        record = {**copy.deepcopy(existing), **writable}
        if record == existing:
            return existing
        self._stamp(org, record, twin=False)
        batch.put(table, record, "update")
        return record

    @staticmethod
    def _check_account_code(org: _Org, code: Any, errors: list[str]) -> dict | None:
        if code is None:
            return None
        accounts = org.table("accounts")
        account = accounts.find("Code", code if isinstance(code, str) else str(code))
        if account is None and accounts.rows:
            errors.append(f"Account code '{code}' is not a valid code for this document.")
        return account

    # ----- invoices and credit notes --------------------------------------------------------------------------------
    def _write_invoices(self, org: _Org, element: dict, mode: str, batch: _Batch) -> dict:
        return self._write_document(org, element, mode, batch, RESOURCES["invoices"])

    def _write_credit_notes(self, org: _Org, element: dict, mode: str, batch: _Batch) -> dict:
        return self._write_document(org, element, mode, batch, RESOURCES["creditnotes"])

    def _write_document(self, org: _Org, element: dict, mode: str, batch: _Batch, res: Resource) -> dict:
        is_invoice = res.url == "Invoices"
        table = org.table(res.collection)
        id_field, number_field = res.id_field, res.alt_key
        assert id_field and number_field
        word = "Invoice" if is_invoice else "Credit Note"
        existing = None
        if element.get(id_field) is not None and mode != "create":
            existing = table.get(element[id_field])
            if existing is None:
                raise Invalid(f"{word} with {id_field} {element[id_field]} could not be found")
        if existing is None and mode == "upsert" and element.get(number_field):
            existing = table.find(number_field, element.get(number_field))
        if existing is not None:
            return self._update_document(org, element, existing, batch, res)
        errors: list[str] = []
        types = ("ACCREC", "ACCPAY") if is_invoice else ("ACCRECCREDIT", "ACCPAYCREDIT")
        doc_type = element.get("Type")
        if doc_type not in types:
            errors.append(f"{word} Type must be one of {', '.join(types)}")
        status = element.get("Status", "DRAFT")
        if status not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
            errors.append(f"{word} not of valid status for creation")
        contact = self._resolve_contact(org, element.get("Contact"), errors, batch)
        record: dict[str, Any] = {"Type": doc_type, id_field: str(uuid.uuid4())}
        number = element.get(number_field)
        if number is not None and (not isinstance(number, str) or len(number) > 255):
            errors.append(f"{number_field} must be text of at most 255 characters")
        elif isinstance(number, str) and number.strip():
            if doc_type in ("ACCREC", "ACCRECCREDIT") and table.find(number_field, number) is not None:
                errors.append(f"{'Invoice' if is_invoice else 'Credit Note'} # must be unique.")
        elif doc_type in ("ACCREC", "ACCRECCREDIT"):
            number = self._next_number(table, number_field, "INV-" if is_invoice else "CN-")
        fields = self._document_fields(org, element, None, errors, res)
        if status == "AUTHORISED" and not fields["LineItems"]:
            errors.append(f"{word}s must have at least one line item to be approved")
        if errors:
            raise Invalid(*errors)
        if number:
            record[number_field] = number
        if isinstance(element.get("Reference"), str):
            record["Reference"] = element["Reference"]
        record.update({"Status": status, "LineAmountTypes": fields["LineAmountTypes"], "Contact": contact})
        self._set_day(record, "Date", fields["Date"])
        if fields["DueDate"] is not None:
            self._set_day(record, "DueDate", fields["DueDate"])
        record.update({"CurrencyCode": fields["CurrencyCode"], "CurrencyRate": fields["CurrencyRate"],
                       "LineItems": fields["LineItems"], "SubTotal": fields["SubTotal"],
                       "TotalTax": fields["TotalTax"], "Total": fields["Total"]})
        for extra in ("Url", "SentToContact", "BrandingThemeID", "ExpectedPaymentDate", "PlannedPaymentDate"):
            if extra in element:
                record[extra] = copy.deepcopy(element[extra])
        if is_invoice:
            record.update({"AmountDue": fields["Total"], "AmountPaid": Decimal("0.00"),
                           "AmountCredited": Decimal("0.00"), "IsDiscounted": fields["IsDiscounted"],
                           "Payments": [], "CreditNotes": [], "Prepayments": [], "Overpayments": []})
        else:
            record.update({"RemainingCredit": fields["Total"], "Allocations": [], "Payments": []})
        record.setdefault("SentToContact", False)
        record.update({"HasAttachments": False, "HasErrors": False})
        self._stamp(org, record, twin=True)
        batch.put(table, record, "create")
        if doc_type == "ACCREC" and contact.get("ContactID"):
            self._mark_customer(org, contact["ContactID"], batch)
        return record

    @staticmethod
    def _next_number(table: _Table, field: str, prefix: str) -> str:
        return f"{prefix}{table.highest_number(field, prefix) + 1:04d}"

    @staticmethod
    def _mark_customer(org: _Org, contact_id: str, batch: _Batch) -> None:
        # Xero flips IsCustomer without bumping UpdatedDateUTC (vendor notes, "Caveat"): no stamp, no log entry
        contacts = org.table("contacts")
        contact = contacts.get(contact_id)
        if contact is not None and contact.get("IsCustomer") is False:
            batch.put(contacts, {**contact, "IsCustomer": True}, "", silent=True)

    def _resolve_contact(self, org: _Org, given: Any, errors: list[str], batch: _Batch) -> dict:
        if not isinstance(given, dict) or not (given.get("ContactID") or given.get("Name")):
            errors.append("A Contact must be specified for this type of transaction")
            return {}
        contacts = org.table("contacts")
        if given.get("ContactID"):
            found = contacts.get(given["ContactID"])
            if found is None:
                errors.append(f"Contact with ContactID {given['ContactID']} could not be found")
                return {}
        else:
            found = contacts.find("Name", given["Name"], fold=True)
            if found is None and not errors:  # Xero creates a contact for an unknown name
                found = {"ContactID": str(uuid.uuid4()), "ContactStatus": "ACTIVE", "Name": given["Name"],
                         "Addresses": [], "Phones": [], "ContactGroups": [], "ContactPersons": [],
                         "IsSupplier": False, "IsCustomer": False, "HasAttachments": False,
                         "HasValidationErrors": False}
                self._stamp(org, found, twin=False)
                batch.put(contacts, found, "create")
            elif found is None:
                return {}
        return {"ContactID": found.get("ContactID"), "Name": found.get("Name")}

    def _document_fields(self, org: _Org, element: dict, old: dict | None, errors: list[str],
                         res: Resource) -> dict[str, Any]:
        """Dates, currency and priced lines of a document, from the element over the stored record."""
        out: dict[str, Any] = {}
        try:
            out["Date"] = (self._parse_day(element["Date"], "Date") if "Date" in element
                           else (self._parse_day(old["Date"], "Date") if old and old.get("Date") else self._today()))
        except Invalid as exc:
            errors.extend(exc.messages)
            out["Date"] = self._today()
        out["DueDate"] = None
        if element.get("DueDate") is not None:
            try:
                out["DueDate"] = self._parse_day(element["DueDate"], "DueDate")
            except Invalid as exc:
                errors.extend(exc.messages)
        raw_types = element.get("LineAmountTypes", (old or {}).get("LineAmountTypes", "Exclusive"))
        amount_types = LINE_AMOUNT_TYPES.get(str(raw_types).lower())
        if amount_types is None:
            errors.append(f"LineAmountTypes '{raw_types}' is not valid (Exclusive, Inclusive, NoTax)")
            amount_types = "Exclusive"
        out["LineAmountTypes"] = amount_types
        currency = element.get("CurrencyCode", (old or {}).get("CurrencyCode", org.base_currency))
        currencies = org.table("currencies")
        if currencies.rows and currencies.get(currency) is None:
            errors.append(f"The currency code {currency} is not valid for this organisation")
        out["CurrencyCode"] = currency
        rate = element.get("CurrencyRate", (old or {}).get("CurrencyRate"))
        if rate is None:
            # Xero would look up its daily rate for a foreign currency; the sandbox has none, so 1
            out["CurrencyRate"] = Decimal("1.000000")
        elif (number := _dec(rate)) is None or number <= 0:
            errors.append("CurrencyRate must be a positive number")
            out["CurrencyRate"] = Decimal(1)
        else:
            out["CurrencyRate"] = number
        lines = element.get("LineItems", (old or {}).get("LineItems", []))
        if not isinstance(lines, list):
            errors.append("LineItems must be a list")
            lines = []
        priced, subtotal, tax, discounted = self._price_lines(org, lines, amount_types, errors)
        out.update({"LineItems": priced, "SubTotal": subtotal, "TotalTax": tax, "Total": subtotal + tax,
                    "IsDiscounted": discounted})
        return out

    def _price_lines(self, org: _Org, lines: list, amount_types: str,
                     errors: list[str]) -> tuple[list[dict], Decimal, Decimal, bool]:
        priced: list[dict] = []
        subtotal = tax_total = Decimal("0.00")
        discounted = False
        items, rates = org.table("items"), org.table("tax-rates")
        for n, line in enumerate(lines, 1):
            if not isinstance(line, dict):
                errors.append(f"Line item {n} must be an object")
                continue
            out = copy.deepcopy(line)
            quantity = _dec(line.get("Quantity", 1))
            unit = _dec(line.get("UnitAmount", 0))
            discount = _dec(line.get("DiscountRate", 0)) if line.get("DiscountRate") is not None else Decimal(0)
            if quantity is None or unit is None or discount is None:
                errors.append(f"Line item {n}: Quantity, UnitAmount and DiscountRate must be numbers")
                continue
            if not (line.get("Description") or line.get("ItemCode")):
                errors.append("Description needs to be specified for each line item")
            item_code = line.get("ItemCode")
            if item_code is not None and items.find("Code", item_code) is None:
                errors.append(f"Item code '{item_code}' is not valid")
            account = self._check_account_code(org, line.get("AccountCode"), errors)
            tax_type = line.get("TaxType")
            if tax_type is None and account is not None:
                tax_type = account.get("TaxType")
            if amount_types == "NoTax":
                rate = Decimal(0)
                tax_type = tax_type or "NONE"
            elif tax_type is None:
                rate = Decimal(0)
            else:
                found = self._tax_rate(org, tax_type)
                if found is None and rates.rows:
                    errors.append(f"The TaxType code '{tax_type}' does not exist or cannot be used for this type of "
                                  "transaction.")
                rate = found or Decimal(0)
            amount = _money(quantity * unit * (1 - discount / 100))
            if amount_types == "Inclusive":
                tax = _money(amount * rate / (100 + rate)) if rate else Decimal("0.00")
                net = amount - tax
            else:
                tax = _money(amount * rate / 100)
                net = amount
            out.update({"Quantity": quantity, "UnitAmount": unit, "LineAmount": amount, "TaxAmount": tax})
            if tax_type is not None:
                out["TaxType"] = tax_type
            if discount:
                out["DiscountRate"] = discount
                discounted = True
            out.setdefault("LineItemID", str(uuid.uuid4()))
            out.setdefault("Tracking", [])
            priced.append(out)
            subtotal += net
            tax_total += tax
        return priced, subtotal, tax_total, discounted

    def _update_document(self, org: _Org, element: dict, existing: dict, batch: _Batch, res: Resource) -> dict:
        is_invoice = res.url == "Invoices"
        word = "Invoice" if is_invoice else "Credit Note"
        current = existing.get("Status")
        wanted = element.get("Status", current)
        if current in ("PAID", "VOIDED", "DELETED"):
            raise Invalid(f"{word} not of valid status for modification")
        if wanted not in DOC_STATUSES or wanted == "PAID":
            raise Invalid(f"{word} Status '{wanted}' cannot be set")
        settled = (_zero(existing.get("AmountPaid")) + _zero(existing.get("AmountCredited")) if is_invoice
                   else _zero(existing.get("Total")) - _zero(existing.get("RemainingCredit")))
        if current in ("DRAFT", "SUBMITTED"):
            if wanted == "VOIDED":
                raise Invalid(f"{word} not of valid status for modification. Only AUTHORISED documents can be "
                              "voided; DRAFT and SUBMITTED ones are DELETED instead")
        elif current == "AUTHORISED":
            if wanted in ("DRAFT", "SUBMITTED", "DELETED"):
                raise Invalid(f"{word} not of valid status for modification. An AUTHORISED document can only be "
                              "VOIDED")
            if wanted == "VOIDED" and settled > 0:
                raise Invalid(f"{word} not of valid status for modification. This document has payments or credits "
                              "allocated to it; remove them before voiding")
        repricing = any(k in element for k in ("LineItems", "LineAmountTypes", "CurrencyCode"))
        if repricing and settled > 0:
            raise Invalid("This document cannot be edited as it has a payment or credit note allocated to it.")
        errors: list[str] = []
        record = copy.deepcopy(existing)
        if "Contact" in element:
            contact = self._resolve_contact(org, element["Contact"], errors, batch)
            if contact:
                record["Contact"] = contact
        number_field = res.alt_key
        assert number_field
        number = element.get(number_field)
        if isinstance(number, str) and number and number != existing.get(number_field):
            clash = org.table(res.collection).find(number_field, number)
            if clash is not None:
                errors.append(f"{word} # must be unique.")
            record[number_field] = number
        if repricing or "Date" in element or "DueDate" in element or "CurrencyRate" in element:
            fields = self._document_fields(org, element, existing, errors, res)
            if "Date" in element:
                self._set_day(record, "Date", fields["Date"])
            if fields["DueDate"] is not None:
                self._set_day(record, "DueDate", fields["DueDate"])
            if repricing:
                record.update({k: fields[k] for k in ("LineAmountTypes", "CurrencyCode", "LineItems", "SubTotal",
                                                       "TotalTax", "Total")})
                if is_invoice:
                    record["AmountDue"] = fields["Total"] - settled
                    record["IsDiscounted"] = fields["IsDiscounted"]
                else:
                    record["RemainingCredit"] = fields["Total"]
            if "CurrencyRate" in element:
                record["CurrencyRate"] = fields["CurrencyRate"]
        if errors:
            raise Invalid(*errors)
        for plain in ("Reference", "Url", "SentToContact", "BrandingThemeID", "ExpectedPaymentDate",
                      "PlannedPaymentDate"):
            if plain in element:
                record[plain] = copy.deepcopy(element[plain])
        record["Status"] = wanted
        if wanted in ("VOIDED", "DELETED"):
            if is_invoice:
                record["AmountDue"] = Decimal("0.00")
            else:
                record["RemainingCredit"] = Decimal("0.00")
        if record == existing:
            return existing
        self._stamp(org, record, twin=True)
        op = {"VOIDED": "void", "DELETED": "delete"}.get(wanted, "update") if wanted != current else "update"
        batch.put(org.table(res.collection), record, op)
        return record

    # ----- payments -------------------------------------------------------------------------------------------------
    def _write_payments(self, org: _Org, element: dict, mode: str, batch: _Batch) -> dict:
        payments = org.table("payments")
        if mode == "update" or (mode == "upsert" and element.get("PaymentID")):
            existing = payments.get(element.get("PaymentID"))
            if existing is None:
                raise Invalid(f"Payment with PaymentID {element.get('PaymentID')} could not be found")
            if element.get("Status") != "DELETED" or set(element) - {"PaymentID", "Status"}:
                raise Invalid("A payment can only be deleted: send {\"Status\": \"DELETED\"}")
            return self._delete_payment(org, existing, batch)
        errors: list[str] = []
        invoices = org.table("invoices")
        ref = element.get("Invoice")
        invoice = None
        if element.get("CreditNote") is not None:
            errors.append("Payments against credit notes are not supported by this sandbox")
        elif isinstance(ref, dict) and ref.get("InvoiceID"):
            invoice = invoices.get(ref["InvoiceID"])
        elif isinstance(ref, dict) and ref.get("InvoiceNumber"):
            invoice = invoices.find("InvoiceNumber", ref["InvoiceNumber"])
        elif element.get("InvoiceNumber"):
            invoice = invoices.find("InvoiceNumber", element["InvoiceNumber"])
        else:
            errors.append("You must specify an Invoice, CreditNote, Prepayment or Overpayment for the payment")
        if invoice is None and not errors:
            errors.append("Invoice could not be found")
        account_ref = element.get("Account")
        account = None
        accounts = org.table("accounts")
        if isinstance(account_ref, dict) and account_ref.get("AccountID"):
            account = accounts.get(account_ref["AccountID"])
        elif isinstance(account_ref, dict) and account_ref.get("Code"):
            account = accounts.find("Code", str(account_ref["Code"]))
        elif element.get("Code"):
            account = accounts.find("Code", str(element["Code"]))
        if account is None:
            errors.append("Account could not be found")
        elif account.get("Type") != "BANK" and account.get("EnablePaymentsToAccount") is not True:
            errors.append(f"Payments can only be made to BANK accounts or accounts with EnablePaymentsToAccount "
                          f"(account {account.get('Code')})")
        amount = _dec(element.get("Amount"))
        if amount is None or amount <= 0:
            errors.append("Payment amount must be greater than zero")
        try:
            day = self._parse_day(element["Date"], "Date") if element.get("Date") is not None else self._today()
        except Invalid as exc:
            errors.extend(exc.messages)
            day = self._today()
        if invoice is not None:
            if invoice.get("Status") != "AUTHORISED":
                errors.append("Payment can only be made against Authorised documents")
            elif amount is not None and amount > _zero(invoice.get("AmountDue")):
                errors.append("Payment amount exceeds the amount outstanding on this document")
        rate = element.get("CurrencyRate", (invoice or {}).get("CurrencyRate", 1))
        if _dec(rate) is None or _dec(rate) <= 0:  # type: ignore[operator]
            errors.append("CurrencyRate must be a positive number")
        if errors:
            raise Invalid(*errors)
        assert invoice is not None and account is not None and amount is not None
        amount = _money(amount)
        payment: dict[str, Any] = {"PaymentID": str(uuid.uuid4())}
        self._set_day(payment, "Date", day)
        del payment["DateString"]  # Xero sends no string twin for a payment's Date
        payment.update({
            "BankAmount": amount, "Amount": amount, "Reference": element.get("Reference", ""),
            "CurrencyRate": _dec(rate), "PaymentType": "ACCPAYPAYMENT" if invoice.get("Type") == "ACCPAY"
            else "ACCRECPAYMENT", "Status": "AUTHORISED", "HasAccount": True, "IsReconciled":
            element.get("IsReconciled") is True, "HasValidationErrors": False,
            "Account": {"AccountID": account.get("AccountID"), "Code": account.get("Code")},
            "Invoice": {"Type": invoice.get("Type"), "InvoiceID": invoice.get("InvoiceID"),
                        "InvoiceNumber": invoice.get("InvoiceNumber"), "Contact": invoice.get("Contact"),
                        "CurrencyCode": invoice.get("CurrencyCode"), "Payments": [], "CreditNotes": [],
                        "Prepayments": [], "Overpayments": [], "HasErrors": False, "IsDiscounted": False,
                        "LineItems": []},
        })
        self._stamp(org, payment, twin=True)
        batch.put(payments, payment, "create")
        updated = copy.deepcopy(invoice)
        paid = _zero(invoice.get("AmountPaid")) + amount
        due = _zero(invoice.get("AmountDue")) - amount
        updated["AmountPaid"], updated["AmountDue"] = paid, due
        updated["Payments"] = [*(invoice.get("Payments") or []), {
            "PaymentID": payment["PaymentID"], "Date": payment["Date"], "Amount": amount,
            "Reference": payment["Reference"], "CurrencyRate": payment["CurrencyRate"], "HasAccount": True,
            "HasValidationErrors": False}]
        if due == 0:
            updated["Status"] = "PAID"
            updated["FullyPaidOnDate"] = payment["Date"]
        self._stamp(org, updated, twin=True)
        batch.put(invoices, updated, "paid" if due == 0 else "update", payment_id=payment["PaymentID"])
        return payment

    def _delete_payment(self, org: _Org, existing: dict, batch: _Batch) -> dict:
        if existing.get("Status") == "DELETED":
            raise Invalid("This payment has already been deleted")
        payment = {**copy.deepcopy(existing), "Status": "DELETED"}
        self._stamp(org, payment, twin=True)
        batch.put(org.table("payments"), payment, "delete")
        invoice_id = (existing.get("Invoice") or {}).get("InvoiceID")
        invoice = org.table("invoices").get(invoice_id)
        if invoice is not None:
            amount = _zero(existing.get("Amount"))
            updated = copy.deepcopy(invoice)
            updated["AmountPaid"] = _zero(invoice.get("AmountPaid")) - amount
            updated["AmountDue"] = _zero(invoice.get("AmountDue")) + amount
            updated["Payments"] = [p for p in invoice.get("Payments") or []
                                   if not _same_id(p.get("PaymentID"), existing.get("PaymentID"))]
            if updated.get("Status") == "PAID":
                updated["Status"] = "AUTHORISED"
                updated.pop("FullyPaidOnDate", None)
            self._stamp(org, updated, twin=True)
            batch.put(org.table("invoices"), updated, "update", payment_id=existing.get("PaymentID"))
        return payment

    # ----- credit note allocations -------------------------------------------------------------------------------
    def _allocate(self, org: _Org, note_id: str, element: dict, batch: _Batch) -> dict:
        """Applies part of an AUTHORISED credit note to an AUTHORISED invoice of the same contact."""
        notes, invoices = org.table("credit-notes"), org.table("invoices")
        note = notes.get(note_id)
        assert note is not None
        errors: list[str] = []
        ref = element.get("Invoice")
        invoice = None
        if isinstance(ref, dict) and ref.get("InvoiceID"):
            invoice = invoices.get(ref["InvoiceID"])
        elif isinstance(ref, dict) and ref.get("InvoiceNumber"):
            invoice = invoices.find("InvoiceNumber", ref["InvoiceNumber"])
        if invoice is None:
            errors.append("Invoice could not be found")
        amount = _dec(element.get("Amount"))
        if amount is None or amount <= 0:
            errors.append("Allocation amount must be greater than zero")
        if note.get("Status") != "AUTHORISED":
            errors.append("Credit note must be AUTHORISED to be allocated")
        remaining = _zero(note.get("RemainingCredit"))
        if amount is not None and amount > remaining:
            errors.append("The amount being allocated exceeds the remaining credit on the credit note")
        if invoice is not None:
            if invoice.get("Status") != "AUTHORISED":
                errors.append("Credit notes can only be allocated to AUTHORISED invoices")
            elif amount is not None and amount > _zero(invoice.get("AmountDue")):
                errors.append("The amount being allocated exceeds the amount outstanding on the invoice")
            invoice_contact = (invoice.get("Contact") or {}).get("ContactID")
            if not _same_id(invoice_contact, (note.get("Contact") or {}).get("ContactID")):
                errors.append("The credit note and the invoice must belong to the same contact")
        try:
            day = self._parse_day(element["Date"], "Date") if element.get("Date") is not None else self._today()
        except Invalid as exc:
            errors.extend(exc.messages)
            day = self._today()
        if errors:
            raise Invalid(*errors)
        assert invoice is not None and amount is not None
        amount = _money(amount)
        allocation: dict[str, Any] = {"AllocationID": str(uuid.uuid4()), "Amount": amount,
                                      "Date": _ms_date(_day_ms(day)),
                                      "Invoice": {"InvoiceID": invoice["InvoiceID"],
                                                  "InvoiceNumber": invoice.get("InvoiceNumber")}}
        updated_note = copy.deepcopy(note)
        updated_note["RemainingCredit"] = remaining - amount
        updated_note["Allocations"] = [*(note.get("Allocations") or []), allocation]
        if updated_note["RemainingCredit"] == 0:
            updated_note["Status"] = "PAID"
            updated_note["FullyPaidOnDate"] = allocation["Date"]
        self._stamp(org, updated_note, twin=True)
        batch.put(notes, updated_note, "allocate", allocation_id=allocation["AllocationID"],
                  invoice_id=invoice["InvoiceID"])
        updated = copy.deepcopy(invoice)
        updated["AmountCredited"] = _zero(invoice.get("AmountCredited")) + amount
        updated["AmountDue"] = _zero(invoice.get("AmountDue")) - amount
        updated["CreditNotes"] = [*(invoice.get("CreditNotes") or []), {
            "CreditNoteID": note["CreditNoteID"], "CreditNoteNumber": note.get("CreditNoteNumber"),
            "AppliedAmount": amount, "Date": allocation["Date"], "Total": note.get("Total")}]
        if updated["AmountDue"] == 0:
            updated["Status"] = "PAID"
            updated["FullyPaidOnDate"] = allocation["Date"]
        self._stamp(org, updated, twin=True)
        batch.put(invoices, updated, "paid" if updated["AmountDue"] == 0 else "update",
                  credit_note_id=note["CreditNoteID"])
        return {**allocation, "CreditNote": {"CreditNoteID": note["CreditNoteID"],
                                             "CreditNoteNumber": note.get("CreditNoteNumber")}}
