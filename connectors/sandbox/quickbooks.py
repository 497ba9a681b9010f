"""QuickBooks Online Accounting API v3, emulated on loopback (vendor notes: shared/vendors/quickbooks.md).

Served paths (all JSON):
  POST /oauth2/v1/tokens/bearer                       refresh_token grant; refresh tokens rotate
  GET|POST /v3/company/<realm>/query                  SELECT * | count(*) ... (see quickbooks_query)
  GET  /v3/company/<realm>/cdc?entities=&changedSince=
  GET  /v3/company/<realm>/<entity>/<id>              read one
  POST /v3/company/<realm>/<entity>[?operation=void|delete|update&include=void]   create / update / void / delete
  GET  /v3/company/<realm>/companyinfo/<realm>, GET|POST /preferences, GET /exchangerate
  POST /v3/company/<realm>/batch                      up to 30 BatchItemRequest

State per tenant (realm = identity.quickbooks_realm_id(tenant)) lives in one `_Table` per entity: rows sorted
by numeric Id, each caching its serialized bytes, so a page of 1000 invoices is a slice plus a byte join.
Fixture records are served exactly as given, even malformed ones (a missing Id, a string amount): they are
never rewritten unless a client writes them.

Where the vendor notes leave a behaviour open, the emulator picks the strict or the simple reading:
- requestid keeps successful answers only; a request that failed (validation, 5010) runs again on retry;
- entity names in queries are case-sensitive, and so are property names (unknown ones: 4001);
- CDC returns the oldest 1000 changes across the asked entities; writes carry sub-second change times, so a
  cursor taken from a response `time` never skips a same-second write (MetaData still shows whole seconds);
- tax: line amounts are net; TaxCode -> TaxRate percentages are applied per rate (US automated sales tax is
  not modelled: without resolvable codes the client's TxnTaxDetail.TotalTax stands);
- an invoice or credit memo with payments applied cannot be voided or deleted (6000) until they are removed;
- a customer's Balance follows its documents without a new SyncToken; a payment revises the invoices it
  settles (Balance, LinkedTxn, SyncToken + 1);
- Preferences updates merge nested groups field by field.
"""

from __future__ import annotations

import bisect
import gc
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple

import orjson
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from connectors.sandbox import identity
from connectors.sandbox.emulator import Emulator, EmulatorError, RateLimits, RequestContext, json_response
from connectors.sandbox.quickbooks_query import (
    COMPANY_TZ,
    Query,
    QuerySyntaxError,
    QueryValidationError,
    compile_where,
    instant,
    parse_query,
    referenced_paths,
    sort_key,
)

log = logging.getLogger(__name__)

MIN_MINOR_VERSION = 75
ACCESS_TOKEN_SECONDS = 3600
REFRESH_TOKEN_SECONDS = 8726400
CDC_MAX_LOOKBACK_SECONDS = 30 * 86400
CDC_MAX_OBJECTS = 1000
BATCH_MAX_ITEMS = 30
REQUEST_ID_MAX = 50
BATCH_REQUEST_ID_MAX = 36
BATCH_ID_MAX_WITH_REQUEST_ID = 10
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
CENT = Decimal("0.01")

# Fixture collection (lowercase, also the URL segment) -> entity name on the wire.
ENTITY_NAMES = {
    "customer": "Customer", "invoice": "Invoice", "creditmemo": "CreditMemo", "payment": "Payment",
    "item": "Item", "account": "Account", "taxcode": "TaxCode", "taxrate": "TaxRate",
    "companyinfo": "CompanyInfo", "preferences": "Preferences", "exchangerate": "ExchangeRate",
}
WRITABLE = frozenset({"Customer", "Invoice", "CreditMemo", "Payment", "Item", "Account"})
NAME_LISTS = frozenset({"Customer", "Item", "Account", "TaxCode", "TaxRate"})  # soft-deleted via Active=false
DELETABLE = frozenset({"Invoice", "CreditMemo", "Payment"})
CDC_REFUSED = frozenset({"TaxCode", "TaxRate", "JournalCode", "TaxAgency", "TimeActivity"})
# Real entities this sandbox holds no data for: queries and CDC answer them empty instead of failing.
UNHELD_ENTITIES = frozenset(
    "Vendor Employee Bill BillPayment Estimate SalesReceipt RefundReceipt JournalEntry Deposit Purchase "
    "PurchaseOrder Transfer VendorCredit Class Department Term PaymentMethod Attachable Budget".split()
)

# Top-level property names per entity, from the official XSDs (shared/specs/quickbooks, IntuitEntity attributes
# included). The conformance test checks these against the XSD; they decide 2010 on writes and 4001 in queries.
_ENTITY_BASE = "Id SyncToken MetaData CustomField AttachableRef domain status sparse"
_TXN = (
    "DocNumber TxnDate DepartmentRef CurrencyRef ExchangeRate PrivateNote TxnStatus LinkedTxn Line TxnTaxDetail "
    "TxnSource TaxFormType TaxFormNum TransactionLocationType Tag TxnApprovalInfo RecurDataRef RecurringInfo "
    "ProjectRef TotalCostAmount HomeTotalCostAmount"
)
_SALES_TXN = (
    "AutoDocNumber CustomerRef CustomerMemo BillAddr ShipAddr FreeFormAddress ShipFromAddr RemitToRef ClassRef "
    "SalesTermRef DueDate SalesRepRef PONumber FOB ShipMethodRef ShipDate TrackingNum GlobalTaxCalculation "
    "TotalAmt HomeTotalAmt ApplyTaxAfterDiscount ShippingTaxIncludedInTotalTax TemplateRef PrintStatus "
    "EmailStatus BillEmail BillEmailCc BillEmailBcc ARAccountRef Balance HomeBalance FinanceCharge "
    "PaymentMethodRef PaymentRefNum PaymentType CheckPayment CreditCardPayment DepositToAccountRef DeliveryInfo "
    "DiscountRate DiscountAmt GovtTxnRefIdentifier TaxExemptionRef"
)
FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(f"{_ENTITY_BASE} {names}".split())
    for name, names in {
        "Customer": (
            "IntuitId Organization Title GivenName MiddleName FamilyName Suffix FullyQualifiedName CompanyName "
            "DisplayName PrintOnCheckName UserId Active V4IDPseudonym PrimaryPhone AlternatePhone Mobile Fax "
            "PrimaryEmailAddr WebAddr OtherContactInfo DefaultTaxCodeRef Taxable BillAddr ShipAddr OtherAddr "
            "ContactName AltContactName Notes Job BillWithParent RootCustomerRef ParentRef Level CustomerTypeRef "
            "SalesTermRef SalesRepRef TaxGroupCodeRef TaxRateRef PaymentMethodRef CCDetail PriceLevelRef Balance "
            "OpenBalanceDate BalanceWithJobs CreditLimit AcctNum CurrencyRef OverDueBalance TotalRevenue "
            "TotalExpense PreferredDeliveryMethod ResaleNum JobInfo TDSEnabled CustomerEx SecondaryTaxIdentifier "
            "ARAccountRef PrimaryTaxIdentifier TaxExemptionReasonId IsProject BusinessNumber GSTIN "
            "GSTRegistrationType IsCISContractor ClientCompanyId ClientEntityId Source TaxRegime"
        ),
        "Invoice": (
            f"{_TXN} {_SALES_TXN} Deposit AllowIPNPayment AllowOnlinePayment AllowOnlineCreditCardPayment "
            "AllowOnlineACHPayment AllowOnlinePayPalPayment EInvoiceStatus ECloudStatusTimeStamp CfdiUse "
            "Exportation GlobalInfo invoiceStatus callToAction invoiceStatusLog InvoiceEx LessCIS InvoiceLink "
            "PaymentDetailsMessage ConvenienceFeeDetail InvoiceLinkSecurityCode InvoiceLinkExpiryDate "
            "AutoPayEligible SchedulePayEligible ScheduledPaymentId GratuityEnabled FinancingProductType "
            "SubscriptionPaymentsSetting"
        ),
        "CreditMemo": f"{_TXN} {_SALES_TXN} RemainingCredit InvoiceRef CreditMemoEx",
        "Payment": (
            f"{_TXN} CustomerRef RemitToRef ARAccountRef DepositToAccountRef PaymentMethodRef PaymentRefNum "
            "PaymentType CheckPayment CreditCardPayment TotalAmt UnappliedAmt ProcessPayment PaymentEx"
        ),
        "Item": (
            "Name Sku Description Active SubItem ParentRef Level FullyQualifiedName Taxable SalesTaxIncluded "
            "PercentBased UnitPrice RatePercent Type PaymentMethodRef UOMSetRef IncomeAccountRef PurchaseDesc "
            "PurchaseTaxIncluded PurchaseCost ExpenseAccountRef COGSAccountRef AssetAccountRef PrefVendorRef "
            "AvgCost TrackQtyOnHand QtyOnHand QtyOnPurchaseOrder QtyOnSalesOrder ReorderPoint ManPartNum "
            "DepositToAccountRef SalesTaxCodeRef PurchaseTaxCodeRef InvStartDate BuildPoint PrintGroupedItems "
            "SpecialItem SpecialItemType ItemGroupDetail ItemAssemblyDetail AbatementRate ReverseChargeRate "
            "ServiceType ItemCategoryType ItemEx TaxClassificationRef UQCDisplayText UQCId ClassRef Source "
            "DeferredRevenue"
        ),
        "Account": (
            "Name SubAccount ParentRef Description FullyQualifiedName AccountAlias TxnLocationType Active "
            "Classification AccountType AccountSubType AccountPurposes AcctNum AcctNumExtn BankNum OpeningBalance "
            "OpeningBalanceDate CurrentBalance CurrentBalanceWithSubAccounts CurrencyRef TaxAccount TaxCodeRef "
            "OnlineBankingEnabled FIName JournalCodeRef AccountEx"
        ),
        "TaxCode": (
            "Name Description Active Hidden Taxable TaxGroup SalesTaxRateList PurchaseTaxRateList "
            "AdjustmentTaxRateList TaxCodeEx TaxCodeConfigType"
        ),
        "TaxRate": (
            "Name Description Active RateValue AgencyRef TaxReturnLineRef EffectiveTaxRate SpecialTaxType "
            "DisplayType TaxRateEx OriginalTaxRate"
        ),
        "CompanyInfo": (
            "CompanyName LegalName CompanyAddr CustomerCommunicationAddr LegalAddr CompanyEmailAddr "
            "CustomerCommunicationEmailAddr CompanyURL PrimaryPhone OtherContactInfo CompanyFileName FlavorStratum "
            "SampleFile CompanyUserId CompanyUserAdminEmail CompanyStartDate EmployerId FiscalYearStartMonth "
            "TaxYearStartMonth QBVersion Country ShipAddr OtherAddr Mobile Fax Email WebAddr LastImportedTime "
            "LastSyncTime SupportedLanguages DefaultTimeZone MultiByteCharsSupported NameValue "
            "FifoCalculationStatus CompanyInfoEx"
        ),
        "Preferences": (
            "AccountingInfoPrefs AdvancedInventoryPrefs ProductAndServicesPrefs SalesFormsPrefs EmailMessagesPrefs "
            "PrintDocumentPrefs VendorAndPurchasesPrefs TimeTrackingPrefs TaxPrefs FinanceChargesPrefs "
            "CurrencyPrefs ReportPrefs OtherPrefs"
        ),
        "ExchangeRate": "SourceCurrencyCode TargetCurrencyCode Rate AsOfDate ExchangeRateEx",
    }.items()
}
# Enumerations the emulator validates on writes (XSD simple types; the conformance test checks them).
ENUMS: dict[str, frozenset[str]] = {
    "EmailStatus": frozenset({"NotSet", "NeedToSend", "EmailSent"}),
    "PrintStatus": frozenset({"NotSet", "NeedToPrint", "PrintComplete"}),
    "GlobalTaxCalculation": frozenset({"TaxInclusive", "TaxExcluded", "NotApplicable"}),
    "ItemType": frozenset({
        "Assembly", "Category", "Fixed Asset", "Group", "Inventory", "NonInventory", "Other Charge", "Payment",
        "Service", "Subtotal", "Discount", "Tax", "Tax Group", "Bundle",
    }),
}
# AccountTypeEnum -> AccountClassificationEnum (QuickBooks derives Classification from the type).
ACCOUNT_CLASSIFICATION = {
    "Bank": "Asset", "Accounts Receivable": "Asset", "Other Current Asset": "Asset", "Fixed Asset": "Asset",
    "Other Asset": "Asset", "Accounts Payable": "Liability", "Credit Card": "Liability",
    "Other Current Liability": "Liability", "Long Term Liability": "Liability", "Equity": "Equity",
    "Income": "Revenue", "Other Income": "Revenue", "Cost of Goods Sold": "Expense", "Expense": "Expense",
    "Other Expense": "Expense", "Non-Posting": "Asset",
}
SYSTEM_FIELDS = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse", "status"})
# Fields only the server sets: dropped from request bodies; on a full update they are recomputed or carried over.
READ_ONLY: dict[str, frozenset[str]] = {
    "Invoice": frozenset({"TotalAmt", "Balance", "HomeTotalAmt", "HomeBalance", "LinkedTxn", "InvoiceLink"}),
    "CreditMemo": frozenset({"TotalAmt", "Balance", "HomeTotalAmt", "HomeBalance", "RemainingCredit", "LinkedTxn"}),
    "Payment": frozenset({"UnappliedAmt"}),
    "Customer": frozenset({"FullyQualifiedName", "BalanceWithJobs", "Level"}),
    "Item": frozenset({"FullyQualifiedName", "Level"}),
    "Account": frozenset({"FullyQualifiedName", "CurrentBalance", "CurrentBalanceWithSubAccounts", "Classification"}),
}
# Carried over from the stored record on a full update (system-maintained, not recomputed from the body).
KEPT_ON_FULL_UPDATE: dict[str, frozenset[str]] = {
    "Invoice": frozenset({"LinkedTxn"}),
    "CreditMemo": frozenset({"LinkedTxn"}),
    "Customer": frozenset({"Balance", "BalanceWithJobs"}),
    "Account": frozenset({"CurrentBalance", "CurrentBalanceWithSubAccounts"}),
}
# Writable on create only (opening balances); ignored on updates.
CREATE_ONLY: dict[str, frozenset[str]] = {
    "Customer": frozenset({"Balance", "OpenBalanceDate"}),
    "Account": frozenset({"OpeningBalance", "OpeningBalanceDate"}),
}


# ----- faults ---------------------------------------------------------------------------------------------------

def _now_text(epoch: float) -> str:
    """The envelope "time": company time zone, milliseconds."""
    return datetime.fromtimestamp(epoch, COMPANY_TZ).isoformat(timespec="milliseconds")


def _meta_time(epoch: float) -> str:
    """MetaData timestamps: company time zone, whole seconds (as QuickBooks writes them)."""
    return datetime.fromtimestamp(int(epoch), COMPANY_TZ).isoformat()


class QboFault(EmulatorError):
    """A QuickBooks Fault. Raised anywhere inside a handler; batch items catch it and embed `fault_body()`."""

    def __init__(self, status: int, fault_type: str, code: str, message: str, detail: str = "", element: str = ""):
        Exception.__init__(self, f"{code} {message}: {detail}")
        self.status, self.fault_type, self.code = status, fault_type, code
        self.message, self.detail, self.element = message, detail, element
        self.headers: dict[str, str] = {}

    def fault_body(self) -> dict:
        error = {"Message": self.message, "Detail": self.detail, "code": self.code, "element": self.element}
        return {"Error": [error], "type": self.fault_type}

    @property  # type: ignore[override]  # built on demand, so the "time" is when it is sent
    def response(self) -> Response:
        return json_response({"Fault": self.fault_body(), "time": _now_text(time.time())}, self.status, self.headers)


def _validation(code: str, message: str, detail: str, element: str = "") -> QboFault:
    return QboFault(400, "ValidationFault", code, message, detail, element)


def _invalid_property(detail: str, element: str = "") -> QboFault:
    return _validation("2010", "Request has invalid or unsupported property", detail, element)


def _required(element: str) -> QboFault:
    return _validation(
        "2020", "Required param missing, need to supply the required value for the API",
        f"Required parameter {element} is missing in the request", element,
    )


def _invalid_reference(kind: str, value: Any, element: str) -> QboFault:
    return _validation("2500", "Invalid Reference Id", f"Invalid Reference Id : {kind} id {value} not found", element)


def _not_found(entity: str, entity_id: Any) -> QboFault:
    return _validation(
        "610", "Object Not Found",
        f"Object Not Found : Something you're trying to use has been made inactive. Check the fields with "
        f"accounts, customers, items, vendors or employees. ({entity} {entity_id})",
    )


def _stale(entity: str, entity_id: Any) -> QboFault:
    return _validation(
        "5010", "Stale Object Error",
        f"Stale Object Error : You and root were working on this at the same time. root finished before you "
        f"did, so your work was not saved. ({entity} {entity_id})",
    )


def _business(detail: str, element: str = "") -> QboFault:
    return _validation(
        "6000", "A business validation error has occurred while processing your request",
        f"Business Validation Error: {detail}", element,
    )


def _duplicate_name(existing_id: Any) -> QboFault:
    return _validation("6240", "Duplicate Name Exists Error", f"The name supplied already exists. : Id={existing_id}")


def _unsupported(detail: str) -> QboFault:
    return _validation("500", "Unsupported Operation", f"Operation {detail} is not supported.")


def _query_fault(exc: Exception) -> QboFault:
    if isinstance(exc, QuerySyntaxError):
        return _validation("4000", "Error parsing query", f"QueryParserError: {exc}")
    return _validation("4001", "Invalid query", f"QueryValidationError: {exc}")


def _authentication_fault(detail: str) -> QboFault:
    fault = QboFault(401, "AuthenticationFault", "3200",
                     "message=AuthenticationFailed; errorCode=003200; statusCode=401", detail)
    fault.headers["WWW-Authenticate"] = 'Bearer realm="Intuit", error="invalid_token"'
    return fault


def _authorization_fault(detail: str) -> QboFault:
    return QboFault(403, "AuthorizationFault", "3100",
                    "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403", detail)


def _system_fault(detail: str, status: int = 500) -> QboFault:
    return QboFault(status, "SystemFault", "10000", "An application error has occurred while processing your request",
                    f"System Failure Error: {detail}")


# ----- small value helpers --------------------------------------------------------------------------------------

def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an in-memory fixture holding a non-JSON type: serve its text rather than fail
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def _clone(value: Any) -> Any:
    return orjson.loads(_dumps(value))


def _decimal(value: Any) -> Decimal | None:
    """A JSON number (or numeric string, which Intuit's JSON binding also accepts) as Decimal; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _amount(value: Any, element: str) -> Decimal:
    number = _decimal(value)
    if number is None:
        raise _invalid_property(f"{element} must be a number, got {value!r}", element)
    return number


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _number(value: Decimal) -> float:
    return float(value)


def _ref(value: Any) -> str | None:
    """The id inside a reference object {"value": "58", "name": ...}."""
    if isinstance(value, dict):
        inner = value.get("value")
        if isinstance(inner, (str, int)) and not isinstance(inner, bool) and str(inner) != "":
            return str(inner)
    return None


def _dig(record: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


def _next_sync_token(current: Any) -> str:
    text = str(current)
    return str(int(text) + 1) if text.isascii() and text.isdigit() else "1"


def _applied_amount(name: str, record: dict) -> Decimal:
    """Money already settled against an invoice or credit memo by payments (an invoice's Deposit excluded)."""
    total = _decimal(record.get("TotalAmt"))
    open_amount = _decimal(record.get("RemainingCredit" if name == "CreditMemo" else "Balance"))
    if total is None or open_amount is None:
        return Decimal(0)
    deposit = (_decimal(record.get("Deposit")) or Decimal(0)) if name == "Invoice" else Decimal(0)
    return total - open_amount - deposit


def _list(value: Any) -> list:
    """A stored list property, or [] when a malformed record holds something else there."""
    return value if isinstance(value, list) else []


def _truthy_flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# ----- storage --------------------------------------------------------------------------------------------------

_UNSET: Any = object()


class _Row:
    """One stored record, its serialized bytes (dropped on change, rebuilt on the next read) and when it last
    changed."""

    __slots__ = ("record", "key", "_blob", "_changed_at")

    def __init__(self, record: dict, key: tuple, changed_at: float | None = _UNSET):
        self.record = record
        self.key = key
        self._blob: bytes | None = None
        self._changed_at = changed_at

    @property
    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = _dumps(self.record)
        return self._blob

    @property
    def changed_at(self) -> float | None:
        """When the row last changed. Writes keep sub-second precision, so a CDC cursor taken from a response
        `time` never skips a write made in the same second; fixture rows use their LastUpdatedTime."""
        if self._changed_at is _UNSET:
            stamp = _dig(self.record, "MetaData", "LastUpdatedTime")
            self._changed_at = instant(stamp) if isinstance(stamp, str) else None
        return self._changed_at

    def replace(self, record: dict, changed_at: float | None = None) -> None:
        self.record = record
        self._blob = None
        if changed_at is not None:
            self._changed_at = changed_at


def _id_key(record: dict, sequence: int) -> tuple[int, int, str]:
    """Numeric Ids in numeric order first, then odd Ids as text, then rows without an Id in fixture order."""
    rid = record.get("Id")
    if isinstance(rid, str) and rid.isascii() and rid.isdigit():
        return (0, int(rid), "")
    if isinstance(rid, int) and not isinstance(rid, bool):
        return (0, rid, "")
    if rid is not None:
        return (1, 0, str(rid))
    return (2, sequence, "")


def _id_text(record: dict) -> str | None:
    rid = record.get("Id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None
    return str(rid)


class _Table:
    """The rows of one entity in one company, kept in Id order, with cached orderings and WHERE results.

    `version` moves on every change; cached orderings and filter results remember the version they were built
    at, so a paging loop over 100k rows filters and sorts once and then only slices."""

    FILTER_CACHE_SIZE = 16

    def __init__(self, entity: str, records: Iterable[Any]):
        self.entity = entity
        self.rows: list[_Row] = []
        self.by_id: dict[str, _Row] = {}
        self.version = 0
        self.tombstones: list[tuple[float, bytes]] = []
        self._orders: dict[tuple, tuple[int, list[_Row]]] = {}
        self._filtered: OrderedDict[tuple, tuple[int, list[_Row]]] = OrderedDict()
        self._sequence = 0
        for record in records:
            if not isinstance(record, dict):
                log.warning("quickbooks sandbox: skipping a %s fixture that is not an object", entity)
                continue
            self._sequence += 1
            self.rows.append(_Row(record, _id_key(record, self._sequence)))
        self.rows.sort(key=lambda row: row.key)
        for row in self.rows:
            rid = _id_text(row.record)
            if rid is not None:
                self.by_id.setdefault(rid, row)
            # Serialize now rather than on first read: a one-pass extraction would otherwise pay it on every page.
            row._blob = _dumps(row.record)

    def get(self, entity_id: Any) -> _Row | None:
        return self.by_id.get(str(entity_id))

    def max_numeric_id(self) -> int:
        numeric = [row.key[1] for row in self.rows if row.key[0] == 0]
        return max(numeric, default=0)

    def insert(self, record: dict, changed_at: float) -> _Row:
        self._sequence += 1
        row = _Row(record, _id_key(record, self._sequence), changed_at)
        if not self.rows or self.rows[-1].key < row.key:
            self.rows.append(row)  # new Ids are always the highest: the common case is an append
        else:
            bisect.insort(self.rows, row, key=lambda r: r.key)
        rid = _id_text(record)
        if rid is not None:
            self.by_id[rid] = row
        self.changed()
        return row

    def remove(self, row: _Row, deleted_at: float, tombstone: dict) -> None:
        index = bisect.bisect_left(self.rows, row.key, key=lambda r: r.key)
        while self.rows[index] is not row:
            index += 1
        del self.rows[index]
        rid = _id_text(row.record)
        if rid is not None and self.by_id.get(rid) is row:
            del self.by_id[rid]
        self.tombstones.append((deleted_at, _dumps(tombstone)))
        self.changed()

    def changed(self) -> None:
        self.version += 1

    @staticmethod
    def _sorted(rows: list[_Row], order: tuple[tuple[str, bool], ...]) -> list[_Row]:
        if not order or order == (("Id", False),):
            return rows
        rows = list(rows)
        # Stable sorts from the last key to the first; ties keep Id order, so pages never shuffle.
        for path, descending in reversed(order):
            key = sort_key(path)
            rows.sort(key=lambda row: key(row.record), reverse=descending)
        return rows

    def ordered(self, order: tuple[tuple[str, bool], ...]) -> list[_Row]:
        if not order or order == (("Id", False),):
            return self.rows
        cached = self._orders.get(order)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        rows = self._sorted(self.rows, order)
        self._orders[order] = (self.version, rows)
        return rows

    def select(self, query: Query, hide_inactive: bool) -> list[_Row]:
        """The rows a query matches, in its order. Filtering runs first (in Id order) and only the matches get
        sorted, so an incremental window over a large table stays cheap; the result is kept for the paging
        loop that follows."""
        if not query.conditions and not hide_inactive:
            return self.ordered(query.order)
        cache_key = (query.conditions, query.order, hide_inactive)
        cached = self._filtered.get(cache_key)
        if cached is not None and cached[0] == self.version:
            self._filtered.move_to_end(cache_key)
            return cached[1]
        predicate = compile_where(query.conditions) if query.conditions else None
        selected = self._sorted([
            row for row in self.rows
            if (not hide_inactive or row.record.get("Active") is not False)
            and (predicate is None or predicate(row.record))
        ], query.order)
        self._filtered[cache_key] = (self.version, selected)
        while len(self._filtered) > self.FILTER_CACHE_SIZE:
            self._filtered.popitem(last=False)
        return selected


class _Company:
    """One realm: its tables, its id sequence and its requestid replay cache."""

    def __init__(self, tenant: str, collections: dict[str, list]):
        self.tenant = tenant
        self.realm = identity.quickbooks_realm_id(tenant)
        self.tables: dict[str, _Table] = {}
        for collection, name in ENTITY_NAMES.items():
            records = collections.get(collection) or []
            self.tables[name] = _Table(name, records if isinstance(records, list) else [])
        for collection in collections:
            if collection not in ENTITY_NAMES:
                log.warning("quickbooks sandbox: tenant %s has unknown collection %r (ignored)", tenant, collection)
        # One id sequence per company keeps Ids unique across entities, as transaction Ids are in QuickBooks.
        self._next_id = max(table.max_numeric_id() for table in self.tables.values()) + 1
        self._next_doc_number: dict[str, int] = {}
        self.replays: dict[str, tuple[int, bytes]] = {}

    def table(self, name: str) -> _Table:
        return self.tables[name]

    def allocate_id(self) -> str:
        value = self._next_id
        self._next_id += 1
        return str(value)

    def allocate_doc_number(self, entity: str) -> str:
        if entity not in self._next_doc_number:
            numbers = [
                int(doc) for row in self.tables[entity].rows
                if isinstance(doc := row.record.get("DocNumber"), str) and doc.isascii() and doc.isdigit()
            ]
            self._next_doc_number[entity] = max(numbers, default=1000) + 1
        value = self._next_doc_number[entity]
        self._next_doc_number[entity] = value + 1
        return str(value)

    def single(self, entity: str) -> _Row | None:
        rows = self.tables[entity].rows
        return rows[0] if rows else None

    @property
    def preferences(self) -> dict:
        row = self.single("Preferences")
        return row.record if row is not None else {}

    @property
    def home_currency(self) -> str:
        return _ref(_dig(self.preferences, "CurrencyPrefs", "HomeCurrency")) or "USD"

    @property
    def multicurrency(self) -> bool:
        return _dig(self.preferences, "CurrencyPrefs", "MultiCurrencyEnabled") is True

    @property
    def custom_txn_numbers(self) -> bool:
        # Absent preference -> honour DocNumber, so hand-written fixtures without Preferences behave sensibly.
        return _dig(self.preferences, "SalesFormsPrefs", "CustomTxnNumbers") is not False

    def exchange_rate(self, currency: str, as_of: str | None) -> Decimal | None:
        best: tuple[str, Decimal] | None = None
        for row in self.tables["ExchangeRate"].rows:
            record = row.record
            if record.get("SourceCurrencyCode") != currency:
                continue
            target = record.get("TargetCurrencyCode")
            if target not in (None, self.home_currency):
                continue
            day = record.get("AsOfDate") if isinstance(record.get("AsOfDate"), str) else ""
            rate = _decimal(record.get("Rate"))
            if rate is None or (as_of is not None and day > as_of):
                continue
            if best is None or day > best[0]:
                best = (day, rate)
        return best[1] if best else None

    def tax_rates(self, tax_code_id: str) -> list[tuple[str, Decimal]]:
        """(TaxRate Id, percent) of a TaxCode's sales rates; malformed parts are skipped."""
        code = self.tables["TaxCode"].get(tax_code_id)
        details = _dig(code.record if code else None, "SalesTaxRateList", "TaxRateDetail")
        rates = []
        for detail in details if isinstance(details, list) else []:
            rate_id = _ref(_dig(detail, "TaxRateRef"))
            rate_row = self.tables["TaxRate"].get(rate_id) if rate_id else None
            percent = _decimal(rate_row.record.get("RateValue")) if rate_row else None
            if rate_id and percent is not None:
                rates.append((rate_id, percent))
        return rates


# ----- the emulator ---------------------------------------------------------------------------------------------

Effect = Callable[[str, float], None]  # runs after a write is stored: (entity id, now)


class _Applied(NamedTuple):
    """One executed write: what the write log records and what the response carries."""

    op: str  # create, update, void, delete
    entity_id: str | None
    body: Any  # the stored row's bytes (orjson.Fragment), or the small "Deleted" object
    sync_token: Any

    @classmethod
    def of(cls, op: str, row: _Row) -> _Applied:
        return cls(op, _id_text(row.record), orjson.Fragment(row.blob), row.record.get("SyncToken"))


class QuickBooksEmulator(Emulator):
    app: ClassVar[str] = "quickbooks"
    collections: ClassVar[frozenset[str]] = frozenset(ENTITY_NAMES)
    default_limits: ClassVar[RateLimits] = RateLimits(per_minute=500, concurrent=10)

    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        return {"client_id": identity.QUICKBOOKS_CLIENT_ID, "client_secret": identity.QUICKBOOKS_CLIENT_SECRET,
                "refresh_token": identity.quickbooks_initial_refresh_token(tenant)}

    @classmethod
    def connection_options(cls, tenant: str) -> dict[str, Any]:
        return {"realm_id": identity.quickbooks_realm_id(tenant)}

    def __init__(self, fixtures: dict[str, dict[str, list[dict]]], *, rate_limits: bool = False,
                 clock: Callable[[], float] = time.time):
        self.clock = clock  # injectable, so tests can age tokens and CDC windows
        super().__init__(fixtures, rate_limits=rate_limits)

    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        self.companies: dict[str, _Company] = {}
        self.company_by_realm: dict[str, _Company] = {}
        # Fixtures can be millions of objects; a cyclic GC pass mid-load frees nothing and costs ~1 s per 100k
        # invoices, so collection waits until loading is done.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for tenant, collections in fixtures.items():
                company = _Company(tenant, collections if isinstance(collections, dict) else {})
                self.companies[tenant] = company
                self.company_by_realm[company.realm] = company
        finally:
            if collecting:
                gc.enable()
        self.refresh_tokens: dict[str, str] = {
            identity.quickbooks_initial_refresh_token(tenant): tenant for tenant in fixtures
        }
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (tenant, expires at)

    def routes(self) -> list[Rule]:
        company = "/v3/company/<realm>"
        return [
            Rule(TOKEN_PATH, methods=["POST"], endpoint="oauth_token"),
            Rule(f"{company}/query", methods=["GET", "POST"], endpoint="query"),
            Rule(f"{company}/cdc", methods=["GET"], endpoint="cdc"),
            Rule(f"{company}/batch", methods=["POST"], endpoint="batch"),
            Rule(f"{company}/companyinfo/<company_id>", methods=["GET"], endpoint="read_company_info"),
            Rule(f"{company}/preferences", methods=["GET"], endpoint="read_preferences"),
            Rule(f"{company}/preferences", methods=["POST"], endpoint="update_preferences"),
            Rule(f"{company}/exchangerate", methods=["GET"], endpoint="read_exchange_rate"),
            Rule(f"{company}/<entity>/<entity_id>", methods=["GET"], endpoint="read_entity"),
            Rule(f"{company}/<entity>", methods=["POST"], endpoint="write_entity"),
        ]

    # ----- auth --------------------------------------------------------------------------------------------------
    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        if request.path == TOKEN_PATH:
            return RequestContext(tenant="-")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _authentication_fault("Authorization header missing or not a Bearer token")
        with self.lock:
            grant = self.access_tokens.get(token.strip())
        if grant is None or grant[1] <= self.clock():
            raise _authentication_fault("Token expired or revoked")
        tenant = grant[0]
        company = self.company_by_realm.get(url_args.get("realm", ""))
        if company is None or company.tenant != tenant:
            raise _authorization_fault(f"The access token is not authorized for realm {url_args.get('realm')}")
        self._check_minor_version(request)
        return RequestContext(tenant=tenant, extra={"company": company})

    @staticmethod
    def _check_minor_version(request: Request) -> None:
        raw = request.args.get("minorversion")
        if raw is None:
            return
        if not (raw.isascii() and raw.isdigit()) or int(raw) < MIN_MINOR_VERSION:
            raise _validation(
                "2010", "Invalid minorversion",
                f"minorversion={raw} is not supported; the minimum supported minor version is {MIN_MINOR_VERSION}",
                "minorversion",
            )

    def expire_tokens(self) -> None:
        with self.lock:
            self.access_tokens.clear()

    def idempotency_key(self, request: Request) -> str | None:
        return request.args.get("requestid")

    def oauth_token(self, request: Request, ctx: RequestContext) -> Response:
        auth = request.authorization
        if (auth is None or auth.type != "basic" or auth.username != identity.QUICKBOOKS_CLIENT_ID
                or auth.password != identity.QUICKBOOKS_CLIENT_SECRET):
            return json_response({"error": "invalid_client"}, 401)
        grant_type = request.form.get("grant_type")
        if grant_type != "refresh_token":
            return json_response({"error": "unsupported_grant_type"}, 400)
        with self.lock:
            tenant = self.refresh_tokens.pop(request.form.get("refresh_token", ""), None)
            if tenant is None:
                return json_response({"error": "invalid_grant"}, 400)
            # Rotation: the token just used is gone; only the new one works from now on.
            refresh_token = f"sandbox-refresh-{tenant}-{secrets.token_urlsafe(18)}"
            access_token = f"sandbox-access-{secrets.token_urlsafe(24)}"
            self.refresh_tokens[refresh_token] = tenant
            self.access_tokens[access_token] = (tenant, self.clock() + ACCESS_TOKEN_SECONDS)
        body = {
            "access_token": access_token, "refresh_token": refresh_token, "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_SECONDS, "x_refresh_token_expires_in": REFRESH_TOKEN_SECONDS,
        }
        return json_response(body, headers={"Cache-Control": "no-store"})

    # ----- error shapes ------------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> Response:
        if status == 401:
            return _authentication_fault(message).response
        if status == 403:
            return _authorization_fault(message).response
        if status == 429:
            return self.throttled_response("injected", None)
        if status >= 500:
            return _system_fault(message, status).response
        if status in (404, 405):
            fault = _unsupported(message)
        else:
            fault = _invalid_property(message)
        fault.status = status
        return fault.response

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        fault = QboFault(429, "SERVICE", "3001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                         "The request limit was reached. Try again later")
        if reason == "injected" and retry_after is not None:  # Intuit sends none; only an armed fault asks for one
            fault.headers["Retry-After"] = retry_after
        return fault.response

    def expired_token_response(self) -> Response:
        return _authentication_fault("Token expired").response

    # ----- envelopes ---------------------------------------------------------------------------------------------
    def _envelope(self, body: dict, status: int = 200) -> Response:
        body["time"] = _now_text(self.clock())
        return Response(orjson.dumps(body), status=status, mimetype="application/json")

    @staticmethod
    def _rows_fragment(rows: Iterable[_Row]) -> orjson.Fragment:
        return orjson.Fragment(b"[" + b",".join(row.blob for row in rows) + b"]")

    # ----- reads -------------------------------------------------------------------------------------------------
    def query(self, request: Request, ctx: RequestContext, realm: str) -> Response:
        if request.method == "POST":
            content_type = (request.mimetype or "").lower()
            if content_type not in ("application/text", "text/plain", ""):
                raise _invalid_property(
                    f"POST /query takes the statement as Content-Type application/text, not {content_type}")
            text = request.get_data(as_text=True)
        else:
            text = request.args.get("query", "")
        if not text.strip():
            raise _required("query")
        with self.lock:
            payload = self._run_query(ctx.extra["company"], text)
            return self._envelope({"QueryResponse": payload})

    def _run_query(self, company: _Company, text: str) -> dict:
        try:
            query = parse_query(text.strip())
        except (QuerySyntaxError, QueryValidationError) as exc:
            raise _query_fault(exc) from None
        table = company.tables.get(query.entity)
        if table is None:
            if query.entity in UNHELD_ENTITIES:
                return {"totalCount": 0} if query.count else {}
            raise _query_fault(QueryValidationError(
                f"{query.entity} is not a queryable entity (entity names are case-sensitive)"))
        known = FIELDS[query.entity]
        for path in referenced_paths(query):
            if path.split(".", 1)[0] not in known:
                raise _query_fault(QueryValidationError(f"property '{path}' is not queryable on {query.entity}"))
        hide_inactive = query.entity in NAME_LISTS and not query.mentions("Active")
        rows = table.select(query, hide_inactive)
        if query.count:
            return {"totalCount": len(rows)}
        offset = query.start_position - 1
        page = rows[offset:offset + query.max_results]
        if not page:
            return {}
        return {query.entity: self._rows_fragment(page), "startPosition": query.start_position,
                "maxResults": len(page)}

    def cdc(self, request: Request, ctx: RequestContext, realm: str) -> Response:
        company: _Company = ctx.extra["company"]
        entities_param = request.args.get("entities", "")
        since_param = request.args.get("changedSince", "")
        if not entities_param.strip():
            raise _required("entities")
        if not since_param.strip():
            raise _required("changedSince")
        since = instant(since_param.strip())
        if since is None:
            raise _invalid_property(f"changedSince {since_param!r} is not a date or dateTime", "changedSince")
        now = self.clock()
        if since < now - CDC_MAX_LOOKBACK_SECONDS:
            raise _invalid_property(
                f"Operation cdc with changedSince date {since_param} which is older than fixed days is not "
                f"supported. (at most 30 days back)", "changedSince")
        by_lower = {name.lower(): name for name in [*ENTITY_NAMES.values(), *UNHELD_ENTITIES, *CDC_REFUSED]}
        names: list[str] = []
        for raw in entities_param.split(","):
            name = by_lower.get(raw.strip().lower())
            if name is None:
                raise _invalid_property(f"Operation cdc is not supported for entity {raw.strip()!r}", "entities")
            if name in CDC_REFUSED or name in ("CompanyInfo", "Preferences", "ExchangeRate"):
                raise _unsupported(f"cdc for {name}")
            if name not in names:
                names.append(name)
        with self.lock:
            changes: list[tuple[float, int, bytes]] = []
            for position, name in enumerate(names):
                table = company.tables.get(name)
                if table is None:
                    continue
                for row in table.rows:
                    changed_at = row.changed_at
                    if changed_at is not None and changed_at >= since:
                        changes.append((changed_at, position, row.blob))
                changes.extend((at, position, blob) for at, blob in table.tombstones if at >= since)
            # Oldest first, capped: a caller that gets exactly the cap knows to narrow its window.
            changes.sort(key=lambda change: (change[0], change[1]))
            del changes[CDC_MAX_OBJECTS:]
            grouped: dict[int, list[bytes]] = {}
            for _, position, blob in changes:
                grouped.setdefault(position, []).append(blob)
            responses: list[dict] = [
                {names[position]: orjson.Fragment(b"[" + b",".join(blobs) + b"]"), "startPosition": 1,
                 "maxResults": len(blobs)}
                for position, blobs in sorted(grouped.items())
            ]
            return self._envelope({"CDCResponse": [{"QueryResponse": responses or [{}]}]})

    def read_entity(self, request: Request, ctx: RequestContext, realm: str, entity: str, entity_id: str) -> Response:
        name = ENTITY_NAMES.get(entity.lower())
        if name is None or name in ("Preferences", "ExchangeRate"):
            raise _unsupported(f"GET /{entity}/{entity_id}")
        with self.lock:
            row = ctx.extra["company"].table(name).get(entity_id)
            if row is None:
                raise _not_found(name, entity_id)
            return self._envelope({name: orjson.Fragment(row.blob)})

    def read_company_info(self, request: Request, ctx: RequestContext, realm: str, company_id: str) -> Response:
        company: _Company = ctx.extra["company"]
        with self.lock:
            row = company.single("CompanyInfo")
            if row is None or company_id not in (realm, _id_text(row.record)):
                raise _not_found("CompanyInfo", company_id)
            return self._envelope({"CompanyInfo": orjson.Fragment(row.blob)})

    def read_preferences(self, request: Request, ctx: RequestContext, realm: str) -> Response:
        with self.lock:
            row = ctx.extra["company"].single("Preferences")
            if row is None:
                raise _not_found("Preferences", "")
            return self._envelope({"Preferences": orjson.Fragment(row.blob)})

    def read_exchange_rate(self, request: Request, ctx: RequestContext, realm: str) -> Response:
        company: _Company = ctx.extra["company"]
        currency = request.args.get("sourcecurrencycode") or request.args.get("sourceCurrencyCode")
        as_of = request.args.get("asofdate") or request.args.get("asOfDate")
        if not currency:
            raise _required("sourcecurrencycode")
        with self.lock:
            if not company.multicurrency:
                raise _business("Exchange rates are only available when multicurrency is enabled")
            best: _Row | None = None
            for row in company.table("ExchangeRate").rows:
                record = row.record
                day = record.get("AsOfDate")
                if record.get("SourceCurrencyCode") != currency or not isinstance(day, str):
                    continue
                if as_of is not None and day > as_of:
                    continue
                if best is None or day > best.record["AsOfDate"]:
                    best = row
            if best is None:
                raise _not_found("ExchangeRate", f"{currency} {as_of or ''}".strip())
            return self._envelope({"ExchangeRate": orjson.Fragment(best.blob)})

    # ----- write endpoints ---------------------------------------------------------------------------------------
    def write_entity(self, request: Request, ctx: RequestContext, realm: str, entity: str) -> Response:
        name = ENTITY_NAMES.get(entity.lower())
        if name not in WRITABLE:
            raise _unsupported(f"POST /{entity}")
        operation = (request.args.get("operation") or "").lower() or None
        include = (request.args.get("include") or "").lower() or None
        company: _Company = ctx.extra["company"]

        def run(request_id: str | None) -> Response:
            applied = self._write(company, name, operation, include, self._json_body(request))
            self._record(company, name, applied, request_id)
            return self._envelope({name: applied.body})

        return self._idempotent(company, request, run, REQUEST_ID_MAX)

    def update_preferences(self, request: Request, ctx: RequestContext, realm: str) -> Response:
        company: _Company = ctx.extra["company"]

        def run(request_id: str | None) -> Response:
            applied = _Applied.of("update", self._update_preferences(company, self._json_body(request)))
            self._record(company, "Preferences", applied, request_id)
            return self._envelope({"Preferences": applied.body})

        return self._idempotent(company, request, run, REQUEST_ID_MAX)

    def batch(self, request: Request, ctx: RequestContext, realm: str) -> Response:
        company: _Company = ctx.extra["company"]

        def run(request_id: str | None) -> Response:
            body = self._json_body(request)
            items = body.get("BatchItemRequest") if isinstance(body, dict) else None
            if not isinstance(items, list) or not items:
                raise _required("BatchItemRequest")
            if len(items) > BATCH_MAX_ITEMS:
                raise _invalid_property(
                    f"Batch has {len(items)} BatchItemRequest; the maximum is {BATCH_MAX_ITEMS}", "BatchItemRequest")
            seen: set[str] = set()
            for item in items:
                bid = item.get("bId") if isinstance(item, dict) else None
                if not isinstance(bid, str) or not bid:
                    raise _required("bId")
                if bid in seen:
                    raise _invalid_property(f"Duplicate bId {bid}", "bId")
                if request_id is not None and len(bid) > BATCH_ID_MAX_WITH_REQUEST_ID:
                    raise _invalid_property(
                        f"bId {bid!r} is longer than {BATCH_ID_MAX_WITH_REQUEST_ID} characters (requestid is set)",
                        "bId")
                seen.add(bid)
            # The batch call itself was counted once; every further item counts against the per-minute limit.
            self._charge_requests(company.tenant, len(items) - 1)
            responses = [self._batch_item(company, item, request_id) for item in items]
            return self._envelope({"BatchItemResponse": responses})

        return self._idempotent(company, request, run, BATCH_REQUEST_ID_MAX)

    def _batch_item(self, company: _Company, item: dict, request_id: str | None) -> dict:
        bid = item["bId"]
        try:
            if "Query" in item:
                if not isinstance(item["Query"], str):
                    raise _invalid_property("Query must be a string", "Query")
                return {"bId": bid, "QueryResponse": self._run_query(company, item["Query"])}
            names = [key for key in item if key in WRITABLE]
            if len(names) != 1:
                raise _invalid_property(
                    "A BatchItemRequest carries exactly one of Query or an entity "
                    f"({', '.join(sorted(WRITABLE))})", "BatchItemRequest")
            name = names[0]
            operation = str(item.get("operation") or "").lower() or None
            options = str(item.get("optionsData") or "").lower()
            include = None
            if operation == "create" and isinstance(item[name], dict) and "Id" in item[name]:
                raise _invalid_property("operation create takes no Id", "Id")
            if operation in ("create", "update"):
                if options == "void":
                    operation, include = ("update", "void") if name == "Payment" else ("void", None)
                else:
                    operation = None  # plain create/update, told apart by the Id
            elif operation == "void" and name == "Payment":
                operation, include = "update", "void"
            elif operation not in (None, "delete", "void"):
                raise _unsupported(f"{operation} on {name} in batch")
            applied = self._write(company, name, operation, include, item[name])
            self._record(company, name, applied, request_id, bId=bid)
            return {"bId": bid, name: applied.body}
        except QboFault as fault:
            return {"bId": bid, "Fault": fault.fault_body()}

    # ----- idempotency, logs, throttling -------------------------------------------------------------------------
    def _idempotent(self, company: _Company, request: Request, run: Callable[[str | None], Response],
                    max_length: int) -> Response:
        """Runs a write once per (realm, requestid); a repeat gets the original bytes back and changes nothing.
        Only successful answers are kept, so a request that failed validation can be retried as is."""
        request_id = request.args.get("requestid")
        if request_id is not None and not 0 < len(request_id) <= max_length:
            raise _invalid_property(f"requestid must be 1 to {max_length} characters long", "requestid")
        with self.lock:
            if request_id is not None and request_id in company.replays:
                status, body = company.replays[request_id]
                return Response(body, status=status, mimetype="application/json")
            response = run(request_id)
            if request_id is not None and 200 <= response.status_code < 300:
                company.replays[request_id] = (response.status_code, response.get_data())
            return response

    def _record(self, company: _Company, name: str, applied: _Applied, request_id: str | None, **extra: Any) -> None:
        """The write log entry (replays never get here: they return before executing anything)."""
        self.record_write(company.tenant, applied.op, name, applied.entity_id, request_id=request_id,
                          sync_token=applied.sync_token, **extra)

    def _charge_requests(self, tenant: str, count: int) -> None:
        """Counts extra requests (batch items) against the per-minute window the base class keeps."""
        limits = self.limits
        if not limits.enabled or not limits.per_minute or count <= 0:
            return
        now = time.monotonic()
        with self.lock:
            window = self._windows[tenant]
            while window and window[0] <= now - limits.window_seconds:
                window.popleft()
            if len(window) + count > limits.per_minute:
                raise EmulatorError(self.throttled_response("minute", None))
            window.extend([now] * count)

    def _json_body(self, request: Request) -> Any:
        return self.json_body(request, lambda message: _invalid_property(message).response)

    # ----- the write engine --------------------------------------------------------------------------------------
    def _write(self, company: _Company, name: str, operation: str | None, include: str | None,
               body: Any) -> _Applied:
        """Validates one write completely, then applies it (no partial writes on a Fault)."""
        if not isinstance(body, dict):
            raise _invalid_property(f"The {name} body must be a JSON object")
        unknown = sorted(key for key in body if key not in FIELDS[name])
        if unknown:
            raise _invalid_property(
                f'Property Name:Unrecognized field "{unknown[0]}" specified is unsupported or invalid', unknown[0])
        try:
            if operation == "delete":
                if name not in DELETABLE:
                    raise _unsupported(f"delete on {name} (make it inactive with a sparse update of Active)")
                entity_id, deleted = self._delete(company, name, body)
                return _Applied("delete", entity_id, deleted, None)
            if operation == "void" or include == "void":
                if not ((name == "Invoice" and operation == "void")
                        or (name == "Payment" and operation == "update" and include == "void")):
                    raise _unsupported(f"void on {name} with operation={operation} include={include}")
                return _Applied.of("void", self._void(company, name, body))
            if operation not in (None, "create", "update"):
                raise _unsupported(f"{operation} on {name}")
            if body.get("Id") in (None, ""):
                if operation == "update":
                    raise _required("Id")
                return _Applied.of("create", self._create(company, name, body))
            return _Applied.of("update", self._update(company, name, body))
        except QboFault:
            raise
        except Exception as exc:  # a bug or a record too malformed to work with: answer, don't crash
            log.exception("quickbooks sandbox: %s write failed", name)
            raise _system_fault(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _writable(name: str, body: dict, *, update: bool) -> dict:
        dropped = READ_ONLY.get(name, frozenset()) | (CREATE_ONLY.get(name, frozenset()) if update else frozenset())
        return {k: _clone(v) for k, v in body.items() if k not in SYSTEM_FIELDS and k not in dropped}

    def _create(self, company: _Company, name: str, body: dict) -> _Row:
        record, effect = self._normalize(company, name, self._writable(name, body, update=False), None)
        now = self.clock()
        entity_id = company.allocate_id()
        stamp = _meta_time(now)
        stored = {"domain": "QBO", "sparse": False, "Id": entity_id, "SyncToken": "0",
                  "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp}, **record}
        row = company.table(name).insert(stored, now)
        if effect is not None:
            effect(entity_id, now)
        return row

    def _existing(self, company: _Company, name: str, body: dict) -> _Row:
        """The stored row a write names, after the SyncToken check (optimistic locking)."""
        row = company.table(name).get(body.get("Id"))
        if row is None:
            raise _not_found(name, body.get("Id"))
        sent = body.get("SyncToken")
        if sent is None or sent == "":
            raise _required("SyncToken")
        if str(sent) != str(row.record.get("SyncToken")):
            raise _stale(name, body.get("Id"))
        return row

    def _update(self, company: _Company, name: str, body: dict) -> _Row:
        row = self._existing(company, name, body)
        old = row.record
        writable = self._writable(name, body, update=True)
        if _truthy_flag(body.get("sparse")):
            draft = {k: _clone(v) for k, v in old.items() if k not in SYSTEM_FIELDS}
            draft.update(writable)
        else:
            # Full update: whatever the client left out is cleared, except what only the server maintains.
            draft = {k: _clone(old[k]) for k in KEPT_ON_FULL_UPDATE.get(name, ()) if k in old}
            draft.update(writable)
        record, effect = self._normalize(company, name, draft, row)
        now = self.clock()
        self._store_revision(company, name, row, record, now)
        if effect is not None:
            effect(_id_text(row.record) or "", now)
        return row

    def _store_revision(self, company: _Company, name: str, row: _Row, record: dict, now: float) -> None:
        """Writes a new revision of a row: SyncToken + 1, LastUpdatedTime now, CreateTime kept."""
        old = row.record
        meta = dict(old["MetaData"]) if isinstance(old.get("MetaData"), dict) else {}
        meta.setdefault("CreateTime", _meta_time(now))
        meta["LastUpdatedTime"] = _meta_time(now)
        stored = {"domain": old.get("domain", "QBO"), "sparse": False, "Id": old.get("Id"),
                  "SyncToken": _next_sync_token(old.get("SyncToken")), "MetaData": meta, **record}
        row.replace(stored, now)
        company.table(name).changed()

    def _normalize(self, company: _Company, name: str, draft: dict, row: _Row | None) -> tuple[dict, Effect | None]:
        old = row.record if row is not None else None
        if name in ("Invoice", "CreditMemo"):
            return self._normalize_sales(company, name, draft, old)
        if name == "Payment":
            return self._normalize_payment(company, draft, old)
        if name == "Customer":
            return self._normalize_customer(company, draft, row), None
        if name == "Item":
            return self._normalize_item(company, draft, row), None
        return self._normalize_account(company, draft, row), None

    # ----- shared validation -------------------------------------------------------------------------------------
    def _require_ref(self, company: _Company, record: dict, element: str, entity: str,
                     required: bool = True) -> _Row | None:
        value = record.get(element)
        if value is None:
            if required:
                raise _required(element)
            return None
        entity_id = _ref(value)
        if entity_id is None:
            raise _invalid_property(f"{element} must be a reference object {{\"value\": \"<Id>\"}}", element)
        target = company.table(entity).get(entity_id)
        if target is None:
            raise _invalid_reference(entity, entity_id, element)
        return target

    def _check_tax_code_ref(self, company: _Company, value: Any, element: str) -> str | None:
        if value is None:
            return None
        code = _ref(value)
        if code is None:
            raise _invalid_property(f"{element} must be a reference object", element)
        # US companies use the literal TAX / NON codes; everyone else references TaxCode Ids.
        if code not in ("TAX", "NON") and company.table("TaxCode").get(code) is None:
            raise _invalid_reference("TaxCode", code, element)
        return code

    @staticmethod
    def _check_enum(record: dict, element: str, enum: str) -> None:
        value = record.get(element)
        if value is not None and value not in ENUMS[enum]:
            raise _invalid_property(f"{element} {value!r} is not one of {', '.join(sorted(ENUMS[enum]))}", element)

    @staticmethod
    def _check_bool(record: dict, element: str) -> None:
        if element in record and not isinstance(record[element], bool):
            raise _invalid_property(f"{element} must be true or false", element)

    @staticmethod
    def _unique_name(table: _Table, field: str, name: str, own: _Row | None) -> None:
        wanted = name.casefold()
        for other in table.rows:
            value = other.record.get(field)
            if other is not own and isinstance(value, str) and value.strip().casefold() == wanted:
                raise _duplicate_name(other.record.get("Id"))

    def _currency(self, company: _Company, draft: dict, customer: dict, txn_date: str) -> Decimal | None:
        """Sets CurrencyRef (defaulting to the customer's) and returns the exchange rate to home currency
        when multicurrency is on (None otherwise)."""
        home = company.home_currency
        customer_currency = _ref(customer.get("CurrencyRef")) or home
        currency = _ref(draft.get("CurrencyRef")) or customer_currency
        if currency != customer_currency:
            raise _business(
                f"The transaction currency ({currency}) must be the customer's currency ({customer_currency})",
                "CurrencyRef")
        if not company.multicurrency and currency != home:
            raise _business(f"Multicurrency is not enabled; transactions must be in {home}", "CurrencyRef")
        ref = {"value": currency}
        name = _dig(draft, "CurrencyRef", "name") or _dig(customer, "CurrencyRef", "name")
        if isinstance(name, str):
            ref["name"] = name
        draft["CurrencyRef"] = ref
        if not company.multicurrency:
            draft.pop("ExchangeRate", None)
            return None
        if currency == home:
            rate = Decimal(1)
        elif draft.get("ExchangeRate") is not None:
            rate = _amount(draft["ExchangeRate"], "ExchangeRate")
            if rate <= 0:
                raise _invalid_property("ExchangeRate must be positive", "ExchangeRate")
        else:
            rate = company.exchange_rate(currency, txn_date) or Decimal(1)
        draft["ExchangeRate"] = float(rate)
        return rate

    def _today(self) -> str:
        return datetime.fromtimestamp(self.clock(), COMPANY_TZ).date().isoformat()

    def _txn_date(self, draft: dict, element: str = "TxnDate") -> str:
        value = draft.get(element)
        if value is None:
            draft[element] = value = self._today()
        if not isinstance(value, str) or instant(value) is None or len(value) != 10:
            raise _invalid_property(f"{element} must be a date YYYY-MM-DD, got {value!r}", element)
        return value

    # ----- Invoice and CreditMemo --------------------------------------------------------------------------------
    def _normalize_sales(self, company: _Company, name: str, draft: dict, old: dict | None) -> tuple[dict, Effect]:
        customer_row = self._require_ref(company, draft, "CustomerRef", "Customer")
        assert customer_row is not None
        customer_id = _ref(draft["CustomerRef"])
        lines = draft.get("Line")
        if not isinstance(lines, list) or not any(
                isinstance(line, dict) and line.get("DetailType") != "SubTotalLineDetail" for line in lines):
            raise _required("Line")
        txn_date = self._txn_date(draft)
        if name == "Invoice":
            if draft.get("DueDate") is None:
                draft["DueDate"] = txn_date
            self._txn_date(draft, "DueDate")
        rate = self._currency(company, draft, customer_row.record, txn_date)
        for element, enum in (("EmailStatus", "EmailStatus"), ("PrintStatus", "PrintStatus"),
                              ("GlobalTaxCalculation", "GlobalTaxCalculation")):
            self._check_enum(draft, element, enum)

        priced, subtotal, discount, taxable = self._price_lines(company, lines)
        draft["Line"] = priced
        tax = self._apply_tax(company, draft, taxable)
        total = _money(subtotal - discount + tax)

        # Payments already applied survive an update: Balance = new total - applied - deposit.
        applied = _applied_amount(name, old) if old is not None else Decimal(0)
        deposit = _amount(draft["Deposit"], "Deposit") if name == "Invoice" and "Deposit" in draft else Decimal(0)
        balance = _money(total - applied - deposit)
        if balance < 0:
            raise _business(f"The new total {total} is less than the {applied + deposit} already applied to it",
                            "Line")
        draft["TotalAmt"] = _number(total)
        draft["Balance"] = _number(balance)
        if name == "CreditMemo":
            draft["RemainingCredit"] = _number(balance)
        if rate is not None:
            draft["HomeTotalAmt"] = _number(_money(total * rate))
            draft["HomeBalance"] = _number(_money(balance * rate))
        else:
            draft.pop("HomeTotalAmt", None)
            draft.pop("HomeBalance", None)
        draft.setdefault("LinkedTxn", [])
        draft.setdefault("EmailStatus", "NotSet")
        draft.setdefault("PrintStatus", "NotSet")
        self._doc_number(company, name, draft, old)

        open_field = "RemainingCredit" if name == "CreditMemo" else "Balance"
        old_open = (_decimal(old.get(open_field)) or Decimal(0)) if old is not None else Decimal(0)
        old_customer = _ref(old.get("CustomerRef")) if old is not None else None
        sign = 1 if name == "Invoice" else -1  # an open credit memo lowers what the customer owes

        def effect(entity_id: str, now: float) -> None:
            # The customer's open balance follows its documents (no SyncToken change on the customer).
            if old_customer and old_customer != customer_id:
                self._adjust_customer_balance(company, old_customer, -sign * old_open)
                self._adjust_customer_balance(company, customer_id, sign * balance)
            else:
                self._adjust_customer_balance(company, customer_id, sign * (balance - old_open))
        return draft, effect

    def _doc_number(self, company: _Company, name: str, draft: dict, old: dict | None) -> None:
        auto = _truthy_flag(draft.pop("AutoDocNumber", None))
        if company.custom_txn_numbers and not auto:
            return  # the client's DocNumber (or none) stands
        if old is not None and isinstance(old.get("DocNumber"), str):
            draft["DocNumber"] = old["DocNumber"]  # an assigned number never changes
        else:
            draft["DocNumber"] = company.allocate_doc_number(name)

    def _price_lines(self, company: _Company, lines: list) -> tuple[list[dict], Decimal, Decimal, list]:
        """Computes line amounts, drops any SubTotal line the client sent and appends the server's own.
        Returns (lines, subtotal, discount, [(amount, tax code)])."""
        used_ids = {line["Id"] for line in lines if isinstance(line, dict) and isinstance(line.get("Id"), str)}
        next_id = 1
        priced: list[dict] = []
        subtotal = discount = Decimal(0)
        taxable: list[tuple[Decimal, str | None]] = []
        for index, source in enumerate(lines):
            element = f"Line[{index}]"
            if not isinstance(source, dict):
                raise _invalid_property(f"{element} must be an object", element)
            detail_type = source.get("DetailType")
            if detail_type == "SubTotalLineDetail":
                continue
            if detail_type is None:
                raise _required(f"{element}.DetailType")
            line = dict(source)
            if detail_type == "SalesItemLineDetail":
                detail = line.get(detail_type)
                detail = dict(detail) if isinstance(detail, dict) else {}
                self._require_ref(company, detail, "ItemRef", "Item", required=False)
                code = self._check_tax_code_ref(company, detail.get("TaxCodeRef"), "TaxCodeRef")
                amount = self._sales_line_amount(line, detail, element)
                line[detail_type] = detail
                subtotal += amount
                taxable.append((amount, code))
            elif detail_type == "DiscountLineDetail":
                detail = line.get(detail_type) if isinstance(line.get(detail_type), dict) else {}
                percent = _decimal(detail.get("DiscountPercent"))
                if detail.get("PercentBased") is True and percent is not None:
                    amount = _money(subtotal * percent / 100)
                elif "Amount" in line:
                    amount = _money(_amount(line["Amount"], f"{element}.Amount"))
                else:
                    raise _required(f"{element}.Amount")
                discount += amount
            elif detail_type == "GroupLineDetail":
                if "Amount" not in line:
                    raise _required(f"{element}.Amount")
                amount = _money(_amount(line["Amount"], f"{element}.Amount"))
                subtotal += amount
            elif detail_type == "DescriptionOnly":
                amount = _money(_amount(line.get("Amount", 0), f"{element}.Amount"))
            else:
                raise _invalid_property(f"{element}.DetailType {detail_type!r} is not valid on a sales form", element)
            line["Amount"] = _number(amount)
            if not isinstance(line.get("Id"), str):
                while str(next_id) in used_ids:
                    next_id += 1
                line["Id"] = str(next_id)
                used_ids.add(line["Id"])
            line["LineNum"] = len(priced) + 1
            priced.append(line)
        priced.append({"Amount": _number(_money(subtotal)), "DetailType": "SubTotalLineDetail",
                       "SubTotalLineDetail": {}})
        return priced, subtotal, discount, taxable

    @staticmethod
    def _sales_line_amount(line: dict, detail: dict, element: str) -> Decimal:
        qty = _decimal(detail.get("Qty")) if "Qty" in detail else None
        price = _decimal(detail.get("UnitPrice")) if "UnitPrice" in detail else None
        if "Qty" in detail and qty is None:
            raise _invalid_property(f"{element}.SalesItemLineDetail.Qty must be a number", "Qty")
        if "UnitPrice" in detail and price is None:
            raise _invalid_property(f"{element}.SalesItemLineDetail.UnitPrice must be a number", "UnitPrice")
        if "Amount" in line:
            amount = _money(_amount(line["Amount"], f"{element}.Amount"))
            if qty is not None and price is not None and _money(qty * price) != amount:
                raise _validation("6070", "Amount is not equal to UnitPrice * Qty",
                                  f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}", "Amount")
            if qty is not None and price is None and qty != 0:
                detail["UnitPrice"] = _number(amount / qty)
            return amount
        if qty is not None and price is not None:
            return _money(qty * price)
        raise _required(f"{element}.Amount")

    def _apply_tax(self, company: _Company, draft: dict, taxable: list[tuple[Decimal, str | None]]) -> Decimal:
        """Tax from TaxCode -> TaxRate when the codes resolve (non-US Ids, or TAX with TxnTaxCodeRef); otherwise
        the TotalTax the client sent (US automated sales tax is not modelled). Amounts are net of tax."""
        given = draft.get("TxnTaxDetail") if isinstance(draft.get("TxnTaxDetail"), dict) else {}
        if draft.get("GlobalTaxCalculation") == "NotApplicable":
            draft["TxnTaxDetail"] = {"TotalTax": 0}
            return Decimal(0)
        txn_code = self._check_tax_code_ref(company, given.get("TxnTaxCodeRef"), "TxnTaxCodeRef")
        per_rate: dict[str, list[Decimal]] = {}  # rate id -> [percent, net]
        for amount, code in taxable:
            code_id = txn_code if code == "TAX" else code
            if code_id in (None, "NON", "TAX"):
                continue
            for rate_id, percent in company.tax_rates(code_id):
                per_rate.setdefault(rate_id, [percent, Decimal(0)])[1] += amount
        detail: dict[str, Any] = {}
        if "TxnTaxCodeRef" in given:
            detail["TxnTaxCodeRef"] = given["TxnTaxCodeRef"]
        if per_rate:
            tax_lines, total = [], Decimal(0)
            for rate_id, (percent, net) in per_rate.items():
                tax = _money(net * percent / 100)
                total += tax
                tax_lines.append({"Amount": _number(tax), "DetailType": "TaxLineDetail", "TaxLineDetail": {
                    "TaxRateRef": {"value": rate_id}, "PercentBased": True, "TaxPercent": _number(percent),
                    "NetAmountTaxable": _number(_money(net))}})
            detail["TotalTax"] = _number(total)
            detail["TaxLine"] = tax_lines
        else:
            total = _money(_amount(given.get("TotalTax", 0), "TxnTaxDetail.TotalTax"))
            detail["TotalTax"] = _number(total)
        draft["TxnTaxDetail"] = detail
        return total

    def _adjust_customer_balance(self, company: _Company, customer_id: str | None, delta: Decimal) -> None:
        row = company.table("Customer").get(customer_id) if customer_id else None
        if row is None or delta == 0:
            return
        balance = _decimal(row.record.get("Balance"))
        if balance is None and "Balance" in row.record:
            return  # a malformed fixture balance stays as it is
        record = dict(row.record)
        record["Balance"] = _number(_money((balance or Decimal(0)) + delta))
        if "BalanceWithJobs" in record or "Balance" not in row.record:
            record["BalanceWithJobs"] = record["Balance"]
        row.replace(record)
        company.table("Customer").changed()

    # ----- Payment -----------------------------------------------------------------------------------------------
    @staticmethod
    def _applications(record: dict | None) -> dict[tuple[str, str], Decimal]:
        """What a payment applies, per (TxnType, TxnId); tolerant of malformed stored payments."""
        applied: dict[tuple[str, str], Decimal] = {}
        lines = record.get("Line") if isinstance(record, dict) else None
        for line in lines if isinstance(lines, list) else []:
            links = line.get("LinkedTxn") if isinstance(line, dict) else None
            amount = _decimal(line.get("Amount")) if isinstance(line, dict) else None
            if not isinstance(links, list) or not links or amount is None or not isinstance(links[0], dict):
                continue
            key = (str(links[0].get("TxnType")), str(links[0].get("TxnId")))
            applied[key] = applied.get(key, Decimal(0)) + amount
        return applied

    def _normalize_payment(self, company: _Company, draft: dict, old: dict | None) -> tuple[dict, Effect]:
        customer_row = self._require_ref(company, draft, "CustomerRef", "Customer")
        assert customer_row is not None
        customer_id = _ref(draft["CustomerRef"])
        if draft.get("TotalAmt") is None:
            raise _required("TotalAmt")
        total = _money(_amount(draft["TotalAmt"], "TotalAmt"))
        if total < 0:
            raise _invalid_property("TotalAmt must not be negative", "TotalAmt")
        txn_date = self._txn_date(draft)
        self._currency(company, draft, customer_row.record, txn_date)
        self._require_ref(company, draft, "DepositToAccountRef", "Account", required=False)
        lines = draft.get("Line", [])
        if not isinstance(lines, list):
            raise _invalid_property("Line must be a list", "Line")
        for index, line in enumerate(lines):
            element = f"Line[{index}]"
            if not isinstance(line, dict):
                raise _invalid_property(f"{element} must be an object", element)
            if "Amount" not in line:
                raise _required(f"{element}.Amount")
            amount = _money(_amount(line["Amount"], f"{element}.Amount"))
            if amount < 0:
                raise _invalid_property(f"{element}.Amount must not be negative", element)
            line["Amount"] = _number(amount)
            links = line.get("LinkedTxn", [])
            if not isinstance(links, list) or len(links) > 1:
                raise _business(f"{element} must link exactly one transaction", "LinkedTxn")
            for link in links:
                txn_type, txn_id = (link.get("TxnType"), link.get("TxnId")) if isinstance(link, dict) else (None, None)
                if txn_type not in ("Invoice", "CreditMemo"):
                    raise _invalid_property(f"{element}.LinkedTxn.TxnType must be Invoice or CreditMemo", "TxnType")
                target = company.table(txn_type).get(txn_id)
                if target is None:
                    raise _invalid_reference(txn_type, txn_id, "LinkedTxn")
                if _ref(target.record.get("CustomerRef")) != customer_id:
                    raise _business(f"{txn_type} {txn_id} belongs to another customer", "LinkedTxn")

        new_apps = self._applications(draft)
        old_apps = self._applications(old)
        for (txn_type, txn_id), amount in new_apps.items():
            delta = amount - old_apps.get((txn_type, txn_id), Decimal(0))
            target = company.table(txn_type).get(txn_id)
            open_field = "Balance" if txn_type == "Invoice" else "RemainingCredit"
            open_amount = _decimal(target.record.get(open_field)) if target else None
            if open_amount is None or delta > open_amount:
                raise _business(f"The amount applied to {txn_type} {txn_id} ({amount}) is more than its open "
                                f"balance ({open_amount})", "Line")
        applied = sum((a for (t, _), a in new_apps.items() if t == "Invoice"), Decimal(0)) - sum(
            (a for (t, _), a in new_apps.items() if t == "CreditMemo"), Decimal(0))
        if applied > total:
            raise _business(f"The payment TotalAmt {total} is less than the {applied} applied", "TotalAmt")
        draft["TotalAmt"] = _number(total)
        draft["UnappliedAmt"] = _number(_money(total - applied))
        old_total = (_decimal(old.get("TotalAmt")) or Decimal(0)) if old is not None else Decimal(0)
        old_customer = _ref(old.get("CustomerRef")) if old is not None else None

        def effect(payment_id: str, now: float) -> None:
            self._settle(company, payment_id, old_apps, new_apps, now)
            if old_customer and old_customer != customer_id:
                self._adjust_customer_balance(company, old_customer, old_total)
                self._adjust_customer_balance(company, customer_id, -total)
            else:
                self._adjust_customer_balance(company, customer_id, old_total - total)
        return draft, effect

    def _settle(self, company: _Company, payment_id: str, old_apps: dict, new_apps: dict, now: float) -> None:
        """Moves the open balance of every invoice / credit memo whose applied amount changed, and keeps their
        LinkedTxn pointing at the payment. Each such document gets a new revision, as in QuickBooks."""
        for key in set(old_apps) | set(new_apps):
            delta = new_apps.get(key, Decimal(0)) - old_apps.get(key, Decimal(0))
            txn_type, txn_id = key
            row = company.table(txn_type).get(txn_id)
            if row is None:
                continue
            record = _clone(row.record)
            for field in ("Balance", "RemainingCredit") if txn_type == "CreditMemo" else ("Balance",):
                current = _decimal(record.get(field))
                if current is not None:
                    record[field] = _number(_money(current - delta))
            rate = _decimal(record.get("ExchangeRate"))
            balance = _decimal(record.get("Balance"))
            if "HomeBalance" in record and rate is not None and balance is not None:
                record["HomeBalance"] = _number(_money(balance * rate))
            links = [link for link in _list(record.get("LinkedTxn")) if not (
                isinstance(link, dict) and link.get("TxnType") == "Payment" and link.get("TxnId") == payment_id)]
            if new_apps.get(key, Decimal(0)) != 0:
                links.append({"TxnId": payment_id, "TxnType": "Payment"})
            record["LinkedTxn"] = links
            if delta != 0 or links != row.record.get("LinkedTxn"):
                body = {k: v for k, v in record.items() if k not in SYSTEM_FIELDS}
                self._store_revision(company, txn_type, row, body, now)

    # ----- name lists --------------------------------------------------------------------------------------------
    def _normalize_customer(self, company: _Company, draft: dict, row: _Row | None) -> dict:
        name = draft.get("DisplayName")
        if name is not None and not isinstance(name, str):
            raise _invalid_property("DisplayName must be a string", "DisplayName")
        if not (name or "").strip():
            parts = [draft.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")]
            name = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
            if not name and isinstance(draft.get("CompanyName"), str):
                name = draft["CompanyName"].strip()
            if not name:
                raise _required("DisplayName")
        name = name.strip()
        # Unique across active and inactive customers (QuickBooks also checks vendors and employees).
        self._unique_name(company.table("Customer"), "DisplayName", name, row)
        draft["DisplayName"] = name
        self._check_bool(draft, "Active")
        self._check_bool(draft, "Taxable")
        draft.setdefault("Active", True)
        draft.setdefault("PrintOnCheckName", name)
        parent = self._require_ref(company, draft, "ParentRef", "Customer", required=False)
        parent_name = parent.record.get("FullyQualifiedName") if parent else None
        draft["FullyQualifiedName"] = f"{parent_name}:{name}" if isinstance(parent_name, str) else name
        self._check_tax_code_ref(company, draft.get("DefaultTaxCodeRef"), "DefaultTaxCodeRef")
        home = company.home_currency
        currency = _ref(draft.get("CurrencyRef")) or home
        if currency != home and not company.multicurrency:
            raise _business(f"Multicurrency is not enabled; customers use {home}", "CurrencyRef")
        old = row.record if row is not None else None
        if old is not None and currency != (_ref(old.get("CurrencyRef")) or home) and self._has_transactions(
                company, _id_text(old)):
            raise _business("The currency of a customer with transactions cannot change", "CurrencyRef")
        currency_name = _dig(draft, "CurrencyRef", "name")
        draft["CurrencyRef"] = {"value": currency}
        if isinstance(currency_name, str):
            draft["CurrencyRef"]["name"] = currency_name
        if old is None:  # the opening balance; afterwards only the customer's documents move it
            balance = _decimal(draft.get("Balance", 0))
            if balance is None:
                raise _invalid_property("Balance must be a number", "Balance")
            draft["Balance"] = draft["BalanceWithJobs"] = _number(balance)
        return draft

    @staticmethod
    def _has_transactions(company: _Company, customer_id: str | None) -> bool:
        return any(
            _ref(row.record.get("CustomerRef")) == customer_id
            for name in ("Invoice", "CreditMemo", "Payment") for row in company.table(name).rows
        )

    def _normalize_item(self, company: _Company, draft: dict, row: _Row | None) -> dict:
        name = draft.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise _required("Name")
        name = name.strip()
        self._unique_name(company.table("Item"), "Name", name, row)
        draft["Name"] = name
        draft.setdefault("Type", "Service")
        self._check_enum(draft, "Type", "ItemType")
        for flag in ("Active", "Taxable", "TrackQtyOnHand"):
            self._check_bool(draft, flag)
        draft.setdefault("Active", True)
        needs_income = draft["Type"] in ("Service", "NonInventory", "Inventory")
        self._require_ref(company, draft, "IncomeAccountRef", "Account", required=needs_income)
        inventory = draft["Type"] == "Inventory"
        self._require_ref(company, draft, "ExpenseAccountRef", "Account", required=inventory)
        self._require_ref(company, draft, "AssetAccountRef", "Account", required=inventory)
        self._require_ref(company, draft, "COGSAccountRef", "Account", required=False)
        if inventory:
            for element in ("QtyOnHand", "InvStartDate"):
                if draft.get(element) is None:
                    raise _required(element)
            draft["TrackQtyOnHand"] = True
        for element in ("SalesTaxCodeRef", "PurchaseTaxCodeRef"):
            self._check_tax_code_ref(company, draft.get(element), element)
        if "UnitPrice" in draft:
            _amount(draft["UnitPrice"], "UnitPrice")
        parent = self._require_ref(company, draft, "ParentRef", "Item", required=False)
        parent_name = parent.record.get("FullyQualifiedName") if parent else None
        draft["FullyQualifiedName"] = f"{parent_name}:{name}" if isinstance(parent_name, str) else name
        if parent is not None:
            draft["SubItem"] = True
        return draft

    def _normalize_account(self, company: _Company, draft: dict, row: _Row | None) -> dict:
        name = draft.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise _required("Name")
        name = name.strip()
        self._unique_name(company.table("Account"), "Name", name, row)
        draft["Name"] = name
        account_type = draft.get("AccountType")
        if account_type is None:
            raise _required("AccountType")
        if account_type not in ACCOUNT_CLASSIFICATION:
            raise _invalid_property(f"AccountType {account_type!r} is not a valid account type", "AccountType")
        draft["Classification"] = ACCOUNT_CLASSIFICATION[account_type]
        self._check_bool(draft, "Active")
        draft.setdefault("Active", True)
        currency = _ref(draft.get("CurrencyRef")) or company.home_currency
        draft["CurrencyRef"] = {"value": currency}
        parent = self._require_ref(company, draft, "ParentRef", "Account", required=False)
        parent_name = parent.record.get("FullyQualifiedName") if parent else None
        draft["FullyQualifiedName"] = f"{parent_name}:{name}" if isinstance(parent_name, str) else name
        draft["SubAccount"] = parent is not None
        if row is None:
            opening = _decimal(draft.get("OpeningBalance")) if "OpeningBalance" in draft else Decimal(0)
            draft["CurrentBalance"] = _number(opening or Decimal(0))
        elif "CurrentBalance" not in draft:
            draft["CurrentBalance"] = 0
        return draft

    # ----- void, delete, preferences -----------------------------------------------------------------------------
    def _void(self, company: _Company, name: str, body: dict) -> _Row:
        row = self._existing(company, name, body)
        old = row.record
        now = self.clock()
        if name == "Payment":
            voided = {k: _clone(v) for k, v in old.items() if k not in SYSTEM_FIELDS}
            for line in _list(voided.get("Line")):
                if isinstance(line, dict):
                    line["Amount"] = 0
            voided.update(TotalAmt=0, UnappliedAmt=0, PrivateNote="Voided")
            old_apps = self._applications(old)
            new_apps = {key: Decimal(0) for key in old_apps}
            old_total = _decimal(old.get("TotalAmt")) or Decimal(0)
            self._store_revision(company, name, row, voided, now)
            self._settle(company, _id_text(old) or "", old_apps, new_apps, now)
            self._adjust_customer_balance(company, _ref(old.get("CustomerRef")), old_total)
            return row
        balance = _decimal(old.get("Balance"))
        if _applied_amount(name, old) != 0:
            raise _business("This invoice has payments applied; delete or void the payments first", "Id")
        voided = {k: _clone(v) for k, v in old.items() if k not in SYSTEM_FIELDS}
        for line in _list(voided.get("Line")):
            if not isinstance(line, dict):
                continue
            line["Amount"] = 0
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict) and "Qty" in detail:
                detail["Qty"] = 0
        tax_detail = voided.get("TxnTaxDetail")
        if isinstance(tax_detail, dict):
            tax_detail["TotalTax"] = 0
            for tax_line in _list(tax_detail.get("TaxLine")):
                if isinstance(tax_line, dict):
                    tax_line["Amount"] = 0
        voided.update(TotalAmt=0, Balance=0, PrivateNote="Voided")
        for field in ("HomeTotalAmt", "HomeBalance"):
            if field in voided:
                voided[field] = 0
        self._store_revision(company, name, row, voided, now)
        self._adjust_customer_balance(company, _ref(old.get("CustomerRef")), -(balance or Decimal(0)))
        return row

    def _delete(self, company: _Company, name: str, body: dict) -> tuple[str | None, dict]:
        row = self._existing(company, name, body)
        old = row.record
        entity_id = _id_text(old)
        now = self.clock()
        customer_id = _ref(old.get("CustomerRef"))
        total = _decimal(old.get("TotalAmt")) or Decimal(0)
        if name == "Payment":
            old_apps = self._applications(old)
            self._settle(company, entity_id or "", old_apps, {key: Decimal(0) for key in old_apps}, now)
            self._adjust_customer_balance(company, customer_id, total)
        else:
            if _applied_amount(name, old) != 0:
                raise _business(f"This {name} has linked transactions; remove them first", "Id")
            open_amount = _decimal(old.get("RemainingCredit" if name == "CreditMemo" else "Balance"))
            sign = 1 if name == "Invoice" else -1
            self._adjust_customer_balance(company, customer_id, -sign * (open_amount or Decimal(0)))
        tombstone = {"Id": entity_id, "domain": "QBO", "status": "Deleted",
                     "MetaData": {"LastUpdatedTime": _meta_time(now)}}
        company.table(name).remove(row, now, tombstone)
        return entity_id, {"Id": entity_id, "status": "Deleted", "domain": "QBO"}

    def _update_preferences(self, company: _Company, body: Any) -> _Row:
        if not isinstance(body, dict):
            raise _invalid_property("The Preferences body must be a JSON object")
        unknown = sorted(key for key in body if key not in FIELDS["Preferences"])
        if unknown:
            raise _invalid_property(f'Property Name:Unrecognized field "{unknown[0]}"', unknown[0])
        row = company.single("Preferences")
        if row is None:
            raise _not_found("Preferences", body.get("Id"))
        sent = body.get("SyncToken")
        if sent is None:
            raise _required("SyncToken")
        if str(sent) != str(row.record.get("SyncToken", "0")):
            raise _stale("Preferences", body.get("Id"))
        old = row.record
        changes = {k: v for k, v in body.items() if k not in SYSTEM_FIELDS}
        currency = changes.get("CurrencyPrefs") if isinstance(changes.get("CurrencyPrefs"), dict) else {}
        if company.multicurrency and currency.get("MultiCurrencyEnabled") is False:
            raise _business("Multicurrency cannot be turned off once it is on", "MultiCurrencyEnabled")
        new_home = _ref(currency.get("HomeCurrency"))
        if company.multicurrency and new_home is not None and new_home != company.home_currency:
            raise _business("The home currency cannot change once multicurrency is on", "HomeCurrency")
        # Preferences only take sparse updates: nested groups merge field by field.
        merged = _deep_merge({k: v for k, v in old.items() if k not in SYSTEM_FIELDS}, _clone(changes))
        self._store_revision(company, "Preferences", row, merged, self.clock())
        return row


def _deep_merge(base: dict, changes: dict) -> dict:
    result = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result
