"""Deterministic demo data for the sandbox: Sequence (billing), its merchants' QuickBooks Online and Xero, and
their CRMs (HubSpot, Salesforce, Attio).

`generate()` writes the fixture layout the emulators load (see DESIGN.md, "Sandbox fixtures"):

    <out>/<tenant>/sequence/<collection>.json     JSON arrays of records exactly as the Sequence API returns them
    <out>/<tenant>/quickbooks/<collection>.json   JSON arrays of records exactly as QuickBooks Online returns them
    <out>/<tenant>/xero/<collection>.json         the same for Xero (UK and DE tenants only; every tenant has QBO)
    <out>/<tenant>/{hubspot,salesforce,attio}/    CRM records as each emulator loads them (CRM_TENANT_COUNTRIES)
    <out>/settings.json                           per-tenant integration settings (the seed document's settings;
                                                  each connection's own under "apps"."xero" / "apps"."<crm>")
    <out>/manifest.json                           record counts and every planted discrepancy

How the data is made: one consistent "truth" is generated per tenant, and every QuickBooks record is what
Sequence's integration would have written for it (the seed document's field table: invoice date by issue or
accounting date, merchant email on sent invoices, "[group]: [line]" descriptions, tax code resolution, item
mapping, home-currency conversion). With `discrepancies=True` the two sides are then made to disagree on
purpose, each disagreement listed once in the manifest under its most specific kind.

Xero mirrors the QuickBooks integration: a contact per linked customer (ContactNumber = Sequence customer id),
an ACCREC invoice per finalised/sent invoice (InvoiceNumber, Date by the invoice-date setting, "[group]: [line]"
descriptions, ItemCode/AccountCode from the Xero item mapping, TaxType by the seed's tax rules with the Xero
connection's tax types, CurrencyCode/CurrencyRate), an ACCRECCREDIT credit note per issued credit note, one
payment per paid invoice. Sequence stores the Xero ids as it does QuickBooks' (customer integrationIds service
"Xero", invoice/credit-note linkedServices externalService "Xero", line externalIds key "Xero" = LineItemID),
appended after the QuickBooks entries. Xero plants are the QuickBooks kinds that apply (not currency_differs: a
Xero contact's currency is only a default; no memo/billing-email fields: Xero invoices have none), listed with
app "xero" after the tenant's other discrepancies. Simplifications: credit notes are never allocated; no
prepayments/overpayments; Xero-only records are a few invoices (one a DELETED draft, not a discrepancy),
contacts and two contract-breaking invoices; TaxTypes for the DE (GLOBAL-version) org are OUTPUT/NONE/TAX00n.

CRMs: the UK tenant connects HubSpot AND Attio (one tenant, deals from two CRMs), the US tenant Salesforce, the
DE tenant Attio. Each CRM holds one company per non-draft Sequence customer (name, domain, billing address:
HubSpot address/city/zip/state/country properties, Salesforce's compound BillingAddress with line 2 on a second
street line, Attio's primary_location; HubSpot and Salesforce countries as names, Attio's as alpha-2), linked by a
custom field holding the Sequence customer id (CRM_SYNC_FIELDS: HubSpot property `sequence_customer_id`,
Salesforce external-id field `Sequence_Customer_Id__c` declared in FieldDefinition, Attio unique attribute
`sequence_customer_id`) next to the fields write-back keeps up to date: billing status ("active" | "archived" by
Sequence's archivedAt) and MRR (the net total of the customer's issued, FINAL/SENT, invoices with an issue date in
the 30 days before the reference date, in the customer's currency). Contacts are the customer's billing contacts
(Sequence emails, CRM-made person names) plus often the champion who signed; deals are the closed-won deal that
made the customer (closed before the customer's creation), sometimes an earlier lost one and an open renewal or
expansion, each with its company as primary association; amounts as each app writes money (HubSpot strings,
Salesforce JSON numbers, Attio currency values). Companies only the CRM has are prospects (open/lost deals only:
not discrepancies) and, planted, closed-won ones: `importable` (contact email and complete address) or
`not_importable` (field billing_email: no contact email; billing_address.postal_code). Other CRM plants, all with
entity "customer": `missing_in_app` (no CRM company), `unlinked_candidate` (same name and domain, empty id
field), `field_differs` with field name, billing_address.line1/.city/.postal_code, billing_status or mrr (a stale
write-back value). The settings under "apps"."<crm>" are `sync_fields` (Sequence concept -> CRM field),
`link_fields` (the raw column of the id field, for the unified model's links) and, for Attio, whose deals have no
close date, `field_mappings` of its `close_date` attribute. Simplifications: HubSpot keeps no line 2 (its
emulator has no address2); contact->company links live in the contact (associatedcompanyid, AccountId, company);
a tenant's two CRMs hold the same companies (drawn independently); no owners, pipelines or custom stages.

Everything derives from `random.Random` seeded by (seed, tenant) and a fixed reference time, so the same
arguments give byte-identical files; Xero draws from its own stream seeded by (seed, tenant, "xero"), so
turning it on or off never changes a QuickBooks byte, and Sequence only gains the Xero link entries. Each CRM
draws from (seed, tenant, app) after everything else is written and writes only its own folder (Sequence stores
no CRM ids: the CRM's id field is the link), so with or without CRMs every other file is byte-identical. Money is
`Decimal`, rounded half-up to minor units; floats appear only when QuickBooks/Xero JSON numbers are emitted.
Records are streamed to disk one by one, so 200k invoices fit in memory and take tens of seconds (the CRMs add
about a fifth; Attio's verbose value objects are most of it).
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import multiprocessing
import os
import random
import shutil
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence as Seq
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypedDict

import orjson
import pycountry

__all__ = [
    "ATTIO_COLLECTIONS",
    "CRM_APPS",
    "CRM_COLLECTIONS",
    "CRM_SYNC_FIELDS",
    "CRM_TENANT_COUNTRIES",
    "DISCREPANCY_KINDS",
    "HUBSPOT_COLLECTIONS",
    "QUICKBOOKS_COLLECTIONS",
    "REFERENCE_TIME",
    "SALESFORCE_COLLECTIONS",
    "SEQUENCE_COLLECTIONS",
    "XERO_COLLECTIONS",
    "Discrepancy",
    "Manifest",
    "generate",
    "main",
    "tenant_slugs",
]

# Every timestamp is placed relative to this instant (never now()), so output does not depend on the clock.
REFERENCE_TIME = datetime(2025, 6, 30, 17, 0, 0, tzinfo=timezone.utc)
WINDOW_DAYS = 60  # invoices are issued, and records updated, within this many days before REFERENCE_TIME

SEQUENCE_COLLECTIONS = (
    "customers",
    "invoices",
    "line-item-groups",
    "line-items",
    "credit-notes",
    "credit-note-line-item-groups",
    "credit-note-line-items",
    "products",
    "tax-categories",
    "invoice-payment-settings",
)
QUICKBOOKS_COLLECTIONS = (
    "customer",
    "invoice",
    "creditmemo",
    "payment",
    "item",
    "account",
    "taxcode",
    "taxrate",
    "companyinfo",
    "preferences",
    "exchangerate",
)
XERO_COLLECTIONS = (
    "contacts",
    "invoices",
    "credit-notes",
    "payments",
    "items",
    "accounts",
    "tax-rates",
    "currencies",
    "organisation",
)
HUBSPOT_COLLECTIONS = ("companies", "contacts", "deals", "associations", "properties")
SALESFORCE_COLLECTIONS = ("Account", "Contact", "Opportunity", "FieldDefinition")
ATTIO_COLLECTIONS = ("companies", "people", "deals", "attributes")
CRM_COLLECTIONS = {"hubspot": HUBSPOT_COLLECTIONS, "salesforce": SALESFORCE_COLLECTIONS, "attio": ATTIO_COLLECTIONS}
CRM_APPS = tuple(CRM_COLLECTIONS)
# Which tenant profiles connect which CRM: the UK tenant runs HubSpot AND Attio (deals from two CRMs at once).
CRM_TENANT_COUNTRIES = {"hubspot": frozenset({"GB"}), "salesforce": frozenset({"US"}),
                        "attio": frozenset({"GB", "DE"})}
CRM_LABELS = {"hubspot": "HubSpot", "salesforce": "Salesforce", "attio": "Attio"}
# The company fields write-back keeps up to date from Sequence, per CRM (settings "apps".<crm>.sync_fields).
CRM_SYNC_FIELDS = {
    "hubspot": {"sequence_customer_id": "sequence_customer_id", "billing_status": "sequence_billing_status",
                "mrr": "sequence_mrr"},
    "salesforce": {"sequence_customer_id": "Sequence_Customer_Id__c", "billing_status": "Sequence_Billing_Status__c",
                   "mrr": "Sequence_MRR__c"},
    "attio": {"sequence_customer_id": "sequence_customer_id", "billing_status": "sequence_billing_status",
              "mrr": "sequence_mrr"},
}
DISCREPANCY_KINDS = (
    "missing_in_app",
    "missing_in_sequence",
    "field_differs",
    "status_differs",
    "unlinked_candidate",
    "invalid",
    "importable",
    "not_importable",
    "product_unmapped",
    "item_name_not_unique",
    "item_account_differs",
    "tax_code_unresolved",
    "currency_differs",
    "stripe_link_ignored",
)


class Discrepancy(TypedDict):
    id: str
    tenant: str
    app: str  # the app holding the record that breaks a contract (invalid) or the connected app otherwise
    entity: str  # customer | invoice | credit_note | product | tax_category
    kind: str  # one of DISCREPANCY_KINDS
    field: str | None
    sequence_id: str | None
    app_id: str | None
    detail: str


class Manifest(TypedDict):
    seed: int
    invoices: int
    reference_date: str
    tenants: list[str]
    counts: dict[str, dict[str, dict[str, int]]]
    discrepancies: list[Discrepancy]


# ----------------------------------------------------------------------------------------------------------
# Money, numbers and time
# ----------------------------------------------------------------------------------------------------------

_ZERO = Decimal("0.00")  # sums start at two decimals, so a zero balance prints as "0.00"
_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)
_QBO_SERVICE_URL = "https://app.qbo.intuit.com/app"


def _money(value: Decimal) -> Decimal:
    """Round to minor units (all currencies generated here have two)."""
    return value.quantize(_CENT, ROUND_HALF_UP)


def _plain(value: Decimal) -> str:
    """Shortest decimal string without exponent: 2 -> "2", 2.50 -> "2.5" (Sequence quantities)."""
    text = format(value.normalize(), "f")
    return text


def _rate_text(value: Decimal) -> str:
    """Sequence rate: at least two decimals ("1200.00"), more when the price has them ("0.0004")."""
    return str(value) if value.as_tuple().exponent <= -2 else str(value.quantize(_CENT))


def _fraction_text(percent: Decimal) -> str:
    """Sequence taxRate is a fraction string: 20 % -> "0.2"."""
    return "0.0" if not percent else _plain(percent / _HUNDRED)


def _qbo_qty(value: Decimal) -> int | float:
    """QuickBooks numbers: whole quantities/percentages as integers, others as floats."""
    return int(value) if value == value.to_integral_value() else float(value)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY = 86_400
_REF_TS = int(REFERENCE_TIME.timestamp())
_REF_DAY = _REF_TS // _DAY + _EPOCH_ORDINAL


def _day_start(day: int) -> int:
    return (day - _EPOCH_ORDINAL) * _DAY


class _Clock:
    """Formats epoch seconds and day ordinals the way each vendor does (cached per day: this is the hot path)."""

    _TIMES_OF_DAY: list[str] = []  # "00:00:00" ... "23:59:59", built on first use

    def __init__(self) -> None:
        self._dates: dict[int, str] = {}
        self._dst: dict[int, tuple[int, int]] = {}
        if not _Clock._TIMES_OF_DAY:
            _Clock._TIMES_OF_DAY = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
        self._times = _Clock._TIMES_OF_DAY

    def date(self, day: int) -> str:
        text = self._dates.get(day)
        if text is None:
            text = self._dates[day] = date.fromordinal(day).isoformat()
        return text

    def _wall(self, ts: int) -> str:
        day, seconds = divmod(ts, _DAY)
        return f"{self.date(day + _EPOCH_ORDINAL)}T{self._times[seconds]}"

    def seq(self, ts: int) -> str:
        """Sequence timestamps: ISO-8601 UTC with Z."""
        return self._wall(ts) + "Z"

    def qbo(self, ts: int) -> str:
        """QuickBooks MetaData times: US Pacific wall time with its offset (-08:00, or -07:00 in summer)."""
        year = date.fromordinal(ts // _DAY + _EPOCH_ORDINAL).year
        bounds = self._dst.get(year)
        if bounds is None:
            bounds = self._dst[year] = self._us_dst_bounds(year)
        if bounds[0] <= ts < bounds[1]:
            return self._wall(ts - 7 * 3600) + "-07:00"
        return self._wall(ts - 8 * 3600) + "-08:00"

    @staticmethod
    def _us_dst_bounds(year: int) -> tuple[int, int]:
        # US rule: from the second Sunday of March 02:00 PST to the first Sunday of November 02:00 PDT.
        march8 = date(year, 3, 8).toordinal()
        start = march8 + (6 - date.fromordinal(march8).weekday()) % 7
        nov1 = date(year, 11, 1).toordinal()
        end = nov1 + (6 - date.fromordinal(nov1).weekday()) % 7
        return _day_start(start) + 10 * 3600, _day_start(end) + 9 * 3600


_MONTHS = tuple(calendar.month_name)


@lru_cache(maxsize=4096)
def _month_label(day: int) -> str:
    d = date.fromordinal(day)
    return f"{_MONTHS[d.month]} {d.year}"


@lru_cache(maxsize=4096)
def _month_bounds(day: int) -> tuple[int, int]:
    d = date.fromordinal(day)
    first = date(d.year, d.month, 1).toordinal()
    return first, first + calendar.monthrange(d.year, d.month)[1] - 1


class _Random(random.Random):
    """random.Random with cheaper randint/choice (the stdlib ones cost ~1.5 us a call, too much at 200k invoices).

    Still a pure function of the seed; int(random() * n) is unbiased enough for demo data.
    """

    def randint(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + int(self.random() * (b - a + 1))

    def choice(self, seq: Seq[Any]) -> Any:  # type: ignore[override]
        return seq[int(self.random() * len(seq))]

    def pick(self, population: Seq[Any], cum_weights: Seq[float]) -> Any:
        """One weighted draw (random.choices without its per-call overhead)."""
        return population[bisect.bisect_right(cum_weights, self.random() * cum_weights[-1])]


_VARIANT = "89ab"


def _uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from the generator's own random stream (uuid4() would not be reproducible)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _cumulative(weights: Seq[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


# ----------------------------------------------------------------------------------------------------------
# Tenant profiles and reference data (pure data)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TaxCodeSpec:
    key: str
    name: str
    percent: str
    special: str = "NONE"  # SpecialTaxType of its sales rate
    active: bool = True


@dataclass(frozen=True)
class _Profile:
    slug: str
    company: str
    legal_name: str
    country: str
    currency: str
    multi_currency: bool
    us_sales_tax: bool  # US automated sales tax: line codes are the literals TAX / NON
    invoice_date: str  # "issue" | "accounting": which Sequence date becomes the QuickBooks TxnDate
    merchant_email: str
    fiscal_month: str
    timezone: str
    address: tuple[str, str, str, str | None]  # line1, city, postcode, state
    customer_countries: tuple[tuple[str, int], ...]
    anchors: tuple[tuple[str, str], ...]  # (country, tax status) of the first customers: every path always occurs
    tax_codes: tuple[_TaxCodeSpec, ...]  # non-US only; US codes come from _US_STATE_TAX
    categories: tuple[tuple[str, str, str | None], ...]  # role, Sequence tax category name, tax code key
    role_alias: tuple[tuple[str, str], ...]  # product tax roles this profile books under another role
    fallback_code: str
    exempt_code: str
    reverse_charge_code: str
    zero_code: str  # what a mis-mapped taxable line ends up with (line.tax_code discrepancy)
    inactive_code: str
    tax_agency: str
    tax_account: str
    payment_ref: str
    fx_base: tuple[tuple[str, str], ...]  # foreign currency -> home units per foreign unit


_UK = _Profile(
    slug="acme-uk",
    company="Acme Cloud Ltd",
    legal_name="Acme Cloud Limited",
    country="GB",
    currency="GBP",
    multi_currency=True,
    us_sales_tax=False,
    invoice_date="issue",
    merchant_email="billing@acmecloud.example",
    fiscal_month="April",
    timezone="Europe/London",
    address=("1 Finsbury Avenue", "London", "EC2M 2PF", None),
    customer_countries=(("GB", 60), ("IE", 8), ("DE", 7), ("FR", 7), ("NL", 6), ("US", 12)),
    anchors=(("GB", "TAXED"), ("GB", "TAX_EXEMPT"), ("IE", "REVERSE_CHARGED"), ("US", "TAX_EXEMPT")),
    tax_codes=(
        _TaxCodeSpec("std", "20.0% S", "20"),
        _TaxCodeSpec("red", "5.0% R", "5"),
        _TaxCodeSpec("zero", "0.0% Z", "0", "ZERO_RATE"),
        _TaxCodeSpec("exempt", "Exempt", "0", "ZERO_RATE"),
        _TaxCodeSpec("novat", "No VAT", "0", "ZERO_RATE"),
        _TaxCodeSpec("rc", "Reverse Charge", "0", "REVERSE_CHARGE"),
        _TaxCodeSpec("old", "17.5% S", "17.5", active=False),
    ),
    categories=(
        ("std", "Standard rated", "std"),
        ("energy", "Reduced rate", "red"),
        ("books", "Zero rated", "zero"),
        ("exempt", "Exempt supplies", "exempt"),
    ),
    role_alias=(),
    fallback_code="std",
    exempt_code="novat",
    reverse_charge_code="rc",
    zero_code="zero",
    inactive_code="old",
    tax_agency="HM Revenue & Customs",
    tax_account="VAT Control",
    payment_ref="BACS",
    fx_base=(("EUR", "0.8512"), ("USD", "0.7874")),
)
_US = _Profile(
    slug="globex-us",
    company="Globex Analytics Inc.",
    legal_name="Globex Analytics, Inc.",
    country="US",
    currency="USD",
    multi_currency=False,
    us_sales_tax=True,
    invoice_date="accounting",
    merchant_email="ar@globexanalytics.example",
    fiscal_month="January",
    timezone="America/New_York",
    address=("350 Fifth Avenue", "New York", "10118", "NY"),
    customer_countries=(("US", 86), ("GB", 6), ("DE", 4), ("FR", 4)),
    anchors=(("US", "TAXED"), ("US", "TAX_EXEMPT"), ("GB", "TAX_EXEMPT")),
    tax_codes=(),
    categories=(
        ("std", "Taxable SaaS", "TAX"),
        ("services", "Professional services", "NON"),
        ("books", "Tangible goods", "TAX"),
        ("exempt", "Non-taxable items", "NON"),
    ),
    role_alias=(("energy", "books"),),
    fallback_code="TAX",
    exempt_code="NON",
    reverse_charge_code="NON",
    zero_code="NON",
    inactive_code="legacy",
    tax_agency="New York State Department of Taxation and Finance",
    tax_account="Sales Tax Payable",
    payment_ref="ACH",
    fx_base=(),
)
_DE = _Profile(
    slug="nordwind-de",
    company="Nordwind Software GmbH",
    legal_name="Nordwind Software GmbH",
    country="DE",
    currency="EUR",
    multi_currency=True,
    us_sales_tax=False,
    invoice_date="accounting",
    merchant_email="rechnungen@nordwind-software.example",
    fiscal_month="January",
    timezone="Europe/Berlin",
    address=("Hafenstraße 5", "Hamburg", "20457", None),
    customer_countries=(("DE", 60), ("FR", 8), ("NL", 8), ("ES", 5), ("IE", 4), ("GB", 8), ("US", 7)),
    anchors=(("DE", "TAXED"), ("DE", "TAX_EXEMPT"), ("FR", "REVERSE_CHARGED"), ("GB", "TAX_EXEMPT"),
             ("US", "TAX_EXEMPT")),
    tax_codes=(
        _TaxCodeSpec("std", "19% USt", "19"),
        _TaxCodeSpec("red", "7% USt", "7"),
        _TaxCodeSpec("free", "Steuerfrei", "0", "ZERO_RATE"),
        _TaxCodeSpec("nst", "Nicht steuerbar", "0", "ZERO_RATE"),
        _TaxCodeSpec("rc", "Reverse Charge §13b", "0", "REVERSE_CHARGE"),
        _TaxCodeSpec("old", "16% USt (2020)", "16", active=False),
    ),
    categories=(
        ("std", "Regelsteuersatz", "std"),
        ("books", "Ermäßigter Steuersatz", "red"),
        ("exempt", "Steuerbefreit", "free"),
    ),
    role_alias=(("energy", "std"),),
    fallback_code="std",
    exempt_code="nst",
    reverse_charge_code="rc",
    zero_code="free",
    inactive_code="old",
    tax_agency="Finanzamt Hamburg",
    tax_account="Umsatzsteuer",
    payment_ref="SEPA",
    fx_base=(("GBP", "1.1748"), ("USD", "0.9251")),
)
_PROFILES = (_UK, _US, _DE)

# US automated sales tax: a taxed customer's rate comes from the state (code id assigned per tenant).
_US_STATE_TAX = (
    ("NY", "New York City", "8.875"),
    ("CA", "San Francisco", "8.625"),
    ("TX", "Austin", "8.25"),
    ("WA", "Seattle", "10.25"),
    ("MA", "Massachusetts", "6.25"),
    ("IL", "Chicago", "10.25"),
    ("CO", "Denver", "8.81"),
    ("FL", "Miami-Dade", "7"),
)

# Product catalogue: name, group title, tax role, income account, quantity kind, low, high, rate decimals,
# recurring. A group title always carries one tax role, because Sequence keeps the tax category on the group.
_CATALOG = (
    ("Platform fee", "Platform", "std", "subs", "one", "400", "4000", 0, True),
    ("Additional seats", "Platform", "std", "subs", "seats", "8", "45", 2, True),
    ("API calls", "Usage", "std", "usage", "usage", "0.0004", "0.0025", 4, True),
    ("Data storage (GB)", "Usage", "std", "usage", "storage", "0.05", "0.30", 2, True),
    ("Premium support", "Support", "std", "support", "one", "150", "1500", 0, True),
    ("Onboarding workshop", "Professional services", "services", "services", "few", "750", "2500", 0, False),
    ("Consulting hours", "Professional services", "services", "services", "hours", "110", "240", 0, False),
    ("Printed manuals", "Materials", "books", "other", "units", "15", "80", 2, False),
    ("Device insurance", "Insurance", "exempt", "other", "one", "20", "200", 2, True),
    ("Energy pass-through", "Utilities", "energy", "other", "kwh", "0.18", "0.35", 3, True),
)
_CATALOG_WEIGHTS = (30, 18, 15, 8, 10, 6, 8, 3, 3, 4)
_LINE_COUNT_WEIGHTS = _cumulative((35, 35, 20, 10))  # lines per invoice: 1, 2, 3, 4
# Products that may be left unmapped when discrepancies are planted (never the core subscription lines).
_UNMAPPABLE = ("Data storage (GB)", "Printed manuals", "Device insurance", "Energy pass-through")
# QuickBooks items that predate the integration; two Sequence products reuse their names when planted.
_LEGACY_ITEMS = (("Consulting", "services"), ("Training", "services"), ("Hardware", "other"))

_ACCOUNTS = (
    # key, AcctNum, name, AccountType, AccountSubType, Classification
    ("ar", "1100", "Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable", "Asset"),
    ("bank", "1200", "Business Current Account", "Bank", "Checking", "Asset"),
    ("tax", "2200", None, "Other Current Liability", "GlobalTaxPayable", "Liability"),
    ("subs", "4000", "Subscription Revenue", "Income", "ServiceFeeIncome", "Revenue"),
    ("usage", "4010", "Usage Revenue", "Income", "ServiceFeeIncome", "Revenue"),
    ("services", "4020", "Professional Services Income", "Income", "ServiceFeeIncome", "Revenue"),
    ("support", "4030", "Support Revenue", "Income", "ServiceFeeIncome", "Revenue"),
    ("other", "4040", "Other Income", "Income", "OtherPrimaryIncome", "Revenue"),
    ("sales", "4090", "Sales", "Income", "SalesOfProductIncome", "Revenue"),
)

# QuickBooks currency display names (its own vocabulary); codes are checked against ISO 4217 via pycountry.
_QBO_CURRENCY_NAMES = {"GBP": "British Pound Sterling", "EUR": "Euro", "USD": "United States Dollar"}
_COUNTRY_CURRENCY = {"GB": "GBP", "US": "USD", "DE": "EUR", "FR": "EUR", "NL": "EUR", "IE": "EUR", "ES": "EUR"}
_EU = frozenset({"DE", "FR", "NL", "IE", "ES"})
_PRICE_FACTOR = {"GBP": Decimal(1), "EUR": Decimal("1.15"), "USD": Decimal("1.25")}

# ---- Xero reference data ---------------------------------------------------------------------------------
XERO_TENANT_COUNTRIES = frozenset({"GB", "DE"})  # the UK and DE profiles also connect Xero
# Sequence tax code spec key -> (Xero TaxType, rate name, ReportTaxType). UK orgs have Xero's fixed VAT types;
# a GLOBAL-version org (Germany) has OUTPUT/NONE and its own rates as TAX001, TAX002, ...
_XERO_TAX = {
    "GB": {"std": ("OUTPUT2", "20% (VAT on Income)", "OUTPUT"),
           "red": ("RROUTPUT", "5% (VAT on Income)", "OUTPUT"),
           "zero": ("ZERORATEDOUTPUT", "Zero Rated Income", "OUTPUT"),
           "exempt": ("EXEMPTOUTPUT", "Exempt Income", "EXEMPTOUTPUT"),
           "novat": ("NONE", "No VAT", "NONE"),
           "rc": ("ECZROUTPUTSERVICES", "Zero Rated EC Services", "ECOUTPUTSERVICES"),
           "old": ("TAX001", "17.5% (VAT on Income)", "OUTPUT")},
    "DE": {"std": ("OUTPUT", "19% USt", "OUTPUT"),
           "red": ("TAX001", "7% USt", "OUTPUT"),
           "free": ("TAX002", "Steuerfrei", "EXEMPTOUTPUT"),
           "nst": ("NONE", "Nicht steuerbar", "NONE"),
           "rc": ("TAX003", "Reverse Charge §13b", "OUTPUT"),
           "old": ("TAX004", "16% USt (2020)", "OUTPUT")},
}
_XERO_MISSING_TAX_TYPE = "TAX999"
# key (as in _ACCOUNTS), Code, Name (None = the profile's tax account), Type, Class, SystemAccount
_XERO_ACCOUNTS = (
    ("bank", "090", "Business Bank Account", "BANK", "ASSET", None),
    ("sales", "200", "Sales", "SALES", "REVENUE", None),
    ("subs", "210", "Subscription Revenue", "REVENUE", "REVENUE", None),
    ("usage", "211", "Usage Revenue", "REVENUE", "REVENUE", None),
    ("services", "220", "Professional Services Income", "REVENUE", "REVENUE", None),
    ("support", "230", "Support Revenue", "REVENUE", "REVENUE", None),
    ("other", "260", "Other Revenue", "OTHERINCOME", "REVENUE", None),
    ("ar", "610", "Accounts Receivable", "CURRENT", "ASSET", "DEBTORS"),
    ("tax", "820", None, "CURRLIAB", "LIABILITY", "GST"),
)
_XERO_DEFAULT_ACCOUNT = "sales"  # unmapped products' lines carry no ItemCode and this account
_XERO_ORG = {"GB": ("UK", "GMTSTANDARDTIME", "VAT"), "DE": ("GLOBAL", "WEUROPESTANDARDTIME", "USt")}
_XERO_CURRENCY_NAMES = {"GBP": "British Pound", "EUR": "Euro", "USD": "United States Dollar"}
_XERO_URL = "https://go.xero.com"
_XERO_RATE_STEP = Decimal("0.000001")
_XERO_ITEM_CODE = str.maketrans({" ": "-", "(": None, ")": None})

# Postcode patterns: "#" = digit, "A" = capital letter, anything else literal (US/FR/ES get digits appended).
_PLACES: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "GB": (("London", "EC1V #AA", None), ("London", "SE1 #AA", None), ("Manchester", "M1 #AA", None),
           ("Leeds", "LS1 #AA", None), ("Bristol", "BS1 #AA", None), ("Edinburgh", "EH2 #AA", None),
           ("Birmingham", "B3 #AA", None), ("Cambridge", "CB2 #AA", None)),
    "US": (("New York", "100", "NY"), ("San Francisco", "941", "CA"), ("Austin", "787", "TX"),
           ("Seattle", "981", "WA"), ("Boston", "021", "MA"), ("Chicago", "606", "IL"),
           ("Denver", "802", "CO"), ("Miami", "331", "FL")),
    "DE": (("Berlin", "10###", None), ("Hamburg", "20###", None), ("München", "80###", None),
           ("Köln", "50###", None), ("Frankfurt am Main", "60###", None), ("Leipzig", "04###", None)),
    "FR": (("Paris", "750", None), ("Lyon", "6900", None), ("Toulouse", "3100", None), ("Lille", "5900", None)),
    "NL": (("Amsterdam", "10## AA", None), ("Rotterdam", "30## AA", None), ("Utrecht", "35## AA", None)),
    "IE": (("Dublin", "D02 A###", None), ("Cork", "T12 A###", None), ("Galway", "H91 A###", None)),
    "ES": (("Madrid", "280", None), ("Barcelona", "080", None), ("Valencia", "460", None)),
}
_STREETS = {
    "GB": ("High Street", "Church Road", "Station Road", "Victoria Street", "Old Street", "King Street"),
    "US": ("Main Street", "Market Street", "Broadway", "Congress Avenue", "Pine Street", "Fifth Avenue"),
    "DE": ("Friedrichstraße", "Schillerstraße", "Bahnhofstraße", "Lindenallee", "Hauptstraße"),
    "FR": ("rue de la Paix", "boulevard Haussmann", "rue du Faubourg Saint-Honoré", "avenue Jean Jaurès"),
    "NL": ("Keizersgracht", "Herengracht", "Coolsingel", "Damrak"),
    "IE": ("Grafton Street", "Baggot Street Lower", "Patrick Street", "Harcourt Road"),
    "ES": ("Calle de Alcalá", "Passeig de Gràcia", "Gran Vía", "Calle Mayor"),
}
_STREET_NUMBER_FIRST = frozenset({"GB", "US", "FR", "IE"})
_LEGAL_SUFFIX = {
    "GB": ("Ltd", "Ltd", "plc"), "IE": ("Ltd", "DAC"), "US": ("Inc.", "LLC", "Corp."),
    "DE": ("GmbH", "GmbH", "AG"), "FR": ("SAS", "SARL"), "NL": ("B.V.",), "ES": ("S.L.", "S.A."),
}
_NAME_A = ("Blue", "North", "Bright", "Silver", "Quantum", "Harbor", "Granite", "Pixel", "Atlas", "Nimbus",
           "Cedar", "Falcon", "Meridian", "Orbit", "Summit", "Vertex", "Willow", "Zephyr", "Copper", "Beacon",
           "Cobalt", "Delta", "Ember", "Fjord", "Helix", "Iris", "Juniper", "Kestrel", "Lumen", "Maple",
           "Nova", "Onyx", "Prism", "Quill", "Raven", "Sable", "Tidal", "Umber", "Vela", "Wren")
_NAME_B = ("Analytics", "Logistics", "Labs", "Systems", "Health", "Retail", "Media", "Robotics", "Foods",
           "Energy", "Capital", "Software", "Networks", "Bio", "Studios", "Freight", "Security", "Payments",
           "Learning", "Mobility")
_NAME_C = ("Group", "Holdings", "Digital", "International", "Partners", "Solutions", "Europe", "Works")
_FIRST = ("Anna", "Ben", "Chloe", "David", "Elena", "Felix", "Grace", "Hugo", "Isla", "Jonas", "Karin",
          "Liam", "Maya", "Noah", "Olivia", "Pablo", "Quinn", "Rosa", "Sam", "Tara")
_LAST = ("Smith", "Müller", "Martin", "de Vries", "Murphy", "García", "Johnson", "Schmidt", "Bernard",
         "Jansen", "Kelly", "López", "Brown", "Fischer", "Dubois", "Bakker")
_MEMOS = ("Thank you for your business.", "Payment due within {terms} days.",
          "Please quote the invoice number with your payment.", "Questions? Reply to this email.")
_STALE_MEMO = "Thanks for your custom - see you next month."
_LABELS = ("Enterprise", "Mid-market", "SMB", "Startup")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def tenant_slugs(count: int) -> list[str]:
    """Tenant folder names: the three profiles, then the same profiles again with -2, -3 ... suffixes."""
    return [_PROFILES[i % 3].slug + (f"-{i // 3 + 1}" if i >= 3 else "") for i in range(count)]


def _ascii_slug(text: str) -> str:
    """Lowercase ASCII letters and digits only ("García" -> "garcia"), for email local parts and domains."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _pattern(rng: random.Random, pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "#":
            out.append(str(rng.randint(0, 9)))
        elif ch == "A":
            out.append(chr(65 + rng.randint(0, 25)))
        else:
            out.append(ch)
    return "".join(out)


# ----------------------------------------------------------------------------------------------------------
# Internal model
# ----------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _TaxCode:
    id: str
    name: str
    percent: Decimal
    rate_id: str | None
    active: bool
    spec: _TaxCodeSpec | None


@dataclass(slots=True)
class _Category:
    id: str
    name: str
    role: str


@dataclass(slots=True)
class _Account:
    id: str
    key: str
    number: str
    name: str
    ref: dict


@dataclass(slots=True)
class _Item:
    id: str
    name: str
    account: _Account
    ref: dict
    account_ref: dict
    product: _Product | None
    created_ts: int = 0


@dataclass(slots=True)
class _Product:
    id: str
    name: str
    group: str
    role: str
    category: _Category | None
    account_key: str
    qty_kind: str
    low: Decimal
    high: Decimal
    decimals: int
    recurring: bool
    weight: int
    item: _Item | None = None  # the QuickBooks item it is mapped to (None = unmapped)
    price_step: Decimal = Decimal(1)  # smallest price increment (10^-decimals)
    price_units: tuple[int, int] = (1, 1)  # low and high list price in price_step units

    def __post_init__(self) -> None:
        self.price_step = Decimal(1).scaleb(-self.decimals)
        self.price_units = (int(self.low / self.price_step), int(self.high / self.price_step))


@dataclass(slots=True)
class _Customer:
    seq_id: str
    role: str  # core | new | unlinked | draft | qbo_only
    name: str
    country: str
    state: str | None
    address: dict  # Sequence address
    tax_status: str
    currency: str
    contacts: list
    primary_email: str
    billing_emails: list
    domain: str | None
    created_ts: int
    archived_ts: int | None
    tax_id: str | None
    schedule_id: str | None
    state_tax: tuple | None  # (code id, rate id, percent) for taxed US customers
    weight: float = 1.0
    qbo_id: str | None = None
    linked: bool = False
    qbo_name: str = ""
    qbo_email: str | None = None
    qbo_addr: dict | None = None
    qbo_balance: Decimal = _ZERO
    qbo_created_ts: int = 0
    qbo_updated_ts: int = 0
    stripe_id: str | None = None
    label: str | None = None
    custom: dict | None = None
    bill_addr_ref: dict | None = None  # QuickBooks BillAddr as Sequence pushes it on invoices


@dataclass(slots=True)
class _XContact:
    """A Xero contact: the twin of a Sequence customer (linked or not) or a contact only Xero has."""

    id: str
    cust: _Customer
    linked: bool  # Sequence stores its ContactID (integrationIds) and Xero its Sequence id (ContactNumber)
    name: str
    email: str | None
    pobox: dict  # the billing address
    street: dict
    created_ts: int
    updated_ts: int
    outstanding: Decimal = _ZERO  # base currency
    overdue: Decimal = _ZERO


@dataclass(slots=True)
class _XDoc:
    """Ids of a Xero invoice or credit note, drawn before Sequence writes the lines that point at them."""

    id: str
    line_ids: list[str]
    linked: bool
    create_ts: int
    variant: str | None


class _InvoicePlan:
    """One Sequence invoice, decided before anything is written so discrepancies can be chosen by eligibility."""

    __slots__ = ("id", "cust", "status", "was_sent", "paid", "paid_day", "paid_ts", "provider", "link",
                 "settings_record", "issue", "acct", "due", "terms", "period", "created_ts", "final_ts", "event_ts",
                 "memo", "po", "reference", "lines", "currency", "number", "plant", "plant_detail", "credit_note",
                 "order")

    def __init__(self) -> None:
        self.plant: tuple[str, str | None, str] | None = None  # (kind, field, variant)
        self.plant_detail = ""
        self.credit_note: str | None = None  # credit-note status when one is issued against this invoice
        self.number: str | None = None
        self.paid = False
        self.paid_day: int | None = None
        self.paid_ts: int | None = None


_ISSUED = ("FINAL", "SENT")


class _ArrayWriter:
    """Streams one JSON array to disk, one record per line (small memory, diff-friendly, byte-stable)."""

    _BATCH = 2048  # records serialised per file write

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(b"[")
        self._pending: list[bytes] = []
        self.count = 0

    def write(self, record: dict) -> None:
        self._pending.append(orjson.dumps(record))
        if len(self._pending) == self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._fh.write((b",\n" if self.count else b"\n") + b",\n".join(self._pending))
            self.count += len(self._pending)
            self._pending = []

    def close(self) -> None:
        self._flush()
        self._fh.write(b"\n]\n" if self.count else b"]\n")
        self._fh.close()


# ----------------------------------------------------------------------------------------------------------
# One tenant
# ----------------------------------------------------------------------------------------------------------


class _Tenant:
    """Generates one tenant: its reference data, customers, invoice plans, plants, then streams every record.

    Order matters for reproducibility: all randomness comes from self.rng, consumed in a fixed sequence.
    """

    def __init__(self, slug: str, profile: _Profile, n_invoices: int, seed: int, plant: bool, out: Path,
                 xero: bool = False, crms: tuple[str, ...] = ()) -> None:
        self.slug = slug
        self.seed = seed
        self.p = profile
        self.n_invoices = n_invoices
        self.plant_on = plant
        self.out = out
        # A string seed is hashed with SHA-512 by random.Random: stable across runs and PYTHONHASHSEED.
        self.rng = _Random(f"ledgerlink-demo/{seed}/{slug}")
        # "Several of every kind": a couple per tenant, more on large data sets.
        self.scale = max(1, min(25, n_invoices // 2000))
        self.clock = _Clock()
        self.discrepancies: list[Discrepancy] = []
        self.counts: dict[str, dict[str, int]] = {"sequence": {}, "quickbooks": {}}
        # Xero draws from its own stream, so turning it on never shifts a Sequence or QuickBooks value.
        self.xero_on = xero
        self.xrng = _Random(f"ledgerlink-demo/{seed}/{slug}/xero")
        if xero:
            self.counts["xero"] = {}
        # Each CRM draws from its own stream too (see _Crm) and changes no other app's byte.
        self.crms = crms
        self.crm_settings: dict[str, dict] = {}
        for app in crms:
            self.counts[app] = {}
        self.account_id = _uuid(self.rng)  # sequenceAccountId
        self.home = profile.currency
        self._ids: dict[str, int] = {}
        self._tax_cache: dict[tuple, tuple] = {}
        self._writers: dict[tuple[str, str], _ArrayWriter] = {}
        self.payment_bundles: list[list] = []  # [payment id, currency, day, timestamp, customer]
        self.payment_lines: dict[str, list[tuple[str, Decimal]]] = {}  # payment id -> (invoice id, amount)
        self._open_bundle: dict[str, list] = {}
        self.bank_balance = _ZERO
        self.ar_balance = _ZERO
        self.invoice_number = 0
        self.credit_note_number = 0
        self.qbo_doc_number = 1000
        self.qbo_names: set[str] = set()

    # ---- ids and manifest -------------------------------------------------------------------------------

    def _next(self, counter: str, start: int = 1) -> str:
        value = self._ids.get(counter, start)
        self._ids[counter] = value + 1
        return str(value)

    def _txn_id(self) -> str:
        # Invoices, credit memos and payments share one transaction id sequence, as in QuickBooks.
        return self._next("txn", 130)

    def _plant(self, entity: str, kind: str, field: str | None, sequence_id: str | None, app_id: str | None,
               detail: str, app: str = "quickbooks") -> None:
        self.discrepancies.append({
            "id": f"{self.slug}-{len(self.discrepancies) + 1:04d}", "tenant": self.slug, "app": app,
            "entity": entity, "kind": kind, "field": field, "sequence_id": sequence_id, "app_id": app_id,
            "detail": detail,
        })

    def _meta(self, create_ts: int, update_ts: int | None = None) -> dict:
        return {"CreateTime": self.clock.qbo(create_ts), "LastUpdatedTime": self.clock.qbo(update_ts or create_ts)}

    def _ts_in_day(self, day: int, earliest: int = 0) -> int:
        """A business-hours instant on `day`, not before `earliest` and never after the reference time."""
        ts = _day_start(day) + 8 * 3600 + self.rng.randint(0, 9 * 3600)
        return min(max(ts, earliest), _REF_TS)

    def _recent_ts(self, after: int) -> int:
        """An update time within the last WINDOW_DAYS (or `after` when that is later)."""
        return max(after, _REF_TS - self.rng.randint(0, WINDOW_DAYS * _DAY))

    # ---- writing ----------------------------------------------------------------------------------------

    def _open_writers(self) -> None:
        apps = [("sequence", SEQUENCE_COLLECTIONS), ("quickbooks", QUICKBOOKS_COLLECTIONS)]
        if self.xero_on:
            apps.append(("xero", XERO_COLLECTIONS))
        apps += [(app, CRM_COLLECTIONS[app]) for app in self.crms]
        for app, names in apps:
            folder = self.out / self.slug / app
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                self._writers[app, name] = _ArrayWriter(folder / f"{name}.json")

    def _w(self, app: str, collection: str) -> Callable[[dict], None]:
        return self._writers[app, collection].write

    def _close_writers(self) -> None:
        for (app, name), writer in self._writers.items():
            writer.close()
            self.counts[app][name] = writer.count

    # ---- orchestration ----------------------------------------------------------------------------------

    def run(self) -> None:
        self._build_company()
        self._build_catalog()
        self._build_customers()
        plans = self._plan_invoices()
        if self.plant_on:
            self._plant_invoices(plans)
        self._plan_credit_notes(plans)
        if self.xero_on:
            self._x_prepare(plans)
        self._open_writers()
        try:
            self._write_reference_data()
            seq_inv, seq_groups, seq_lines = (self._w("sequence", c) for c in
                                              ("invoices", "line-item-groups", "line-items"))
            for plan in plans:
                self._emit_invoice(plan, seq_inv, seq_groups, seq_lines)
            if self.plant_on:
                self._emit_qbo_only_invoices()
                self._emit_invalid_qbo_invoices()
            self._emit_payments()
            self._emit_customers()
            self._emit_ledger_accounts()
            if self.xero_on:
                self._x_finish()
            for app in self.crms:
                crm = _Crm(self, app, plans)
                for d in crm.run():  # numbered after every other plant of the tenant
                    d["id"] = f"{self.slug}-{len(self.discrepancies) + 1:04d}"
                    self.discrepancies.append(d)
                self.crm_settings[app] = crm.settings()
        finally:
            self._close_writers()

    # ---- company, tax, accounts ------------------------------------------------------------------------

    def _build_company(self) -> None:
        p, rng = self.p, self.rng
        self.company_start_ts = _REF_TS - 3 * 365 * _DAY - rng.randint(0, 200) * _DAY
        self.qbo_home_ref = {"value": self.home, "name": _QBO_CURRENCY_NAMES[self.home]}
        # Ledger accounts: income accounts carry the AcctNum codes that settings.items refers to.
        self.accounts: dict[str, _Account] = {}
        for key, number, name, _type, _sub, _cls in _ACCOUNTS:
            name = name or p.tax_account
            acc_id = self._next("account")
            self.accounts[key] = _Account(acc_id, key, number, name, {"value": acc_id, "name": name})
        # Tax: QuickBooks tax rates and codes, the Sequence categories and their mapping.
        self.tax_codes: dict[str, _TaxCode] = {}  # by spec key (non-US) or literal id (US)
        self.tax_rates: list[dict] = []
        self.tax_code_records: list[dict] = []
        agency = {"value": "1", "name": p.tax_agency}
        meta = self._meta(self.company_start_ts)
        if p.us_sales_tax:
            for literal, taxable in (("TAX", True), ("NON", False)):
                self.tax_codes[literal] = _TaxCode(literal, literal, _ZERO, None, True, None)
                self.tax_code_records.append({
                    "Id": literal, "SyncToken": "0", "domain": "QBO", "sparse": False, "MetaData": meta,
                    "Name": literal, "Description": "Taxable" if taxable else "Non-taxable",
                    "Active": True, "Hidden": False, "Taxable": taxable, "TaxGroup": False})
            self.state_tax: dict[str, tuple] = {}
            for state, name, percent in _US_STATE_TAX + (("ZZ", "Legacy county tax", "1.5"),):
                rate_id = self._next("taxrate")
                code_id = self._next("taxcode", 2)
                active = state != "ZZ"
                self.tax_rates.append(self._tax_rate_record(rate_id, f"{name} sales tax", Decimal(percent),
                                                            "NONE", agency, active))
                self.tax_code_records.append(self._tax_code_record(code_id, name, rate_id, f"{name} sales tax",
                                                                   True, active))
                if active:
                    self.state_tax[state] = (code_id, rate_id, Decimal(percent))
                else:
                    self.tax_codes["legacy"] = _TaxCode(code_id, name, Decimal(percent), rate_id, False, None)
        else:
            for spec in p.tax_codes:
                rate_id = self._next("taxrate")
                code_id = self._next("taxcode", 2)
                percent = Decimal(spec.percent)
                self.tax_rates.append(self._tax_rate_record(rate_id, f"{spec.name} (sales)", percent, spec.special,
                                                            agency, spec.active))
                self.tax_code_records.append(self._tax_code_record(code_id, spec.name, rate_id,
                                                                   f"{spec.name} (sales)", bool(percent),
                                                                   spec.active))
                self.tax_codes[spec.key] = _TaxCode(code_id, spec.name, percent, rate_id, spec.active, spec)
        self.fallback = self.tax_codes[p.fallback_code]
        self.exempt = self.tax_codes[p.exempt_code]
        self.reverse_charge = self.tax_codes[p.reverse_charge_code]
        self.zero = self.tax_codes[p.zero_code]
        # Daily exchange rates (home units per foreign unit) over the whole window, as a random walk.
        self.fx: dict[tuple[str, int], Decimal] = {}
        self.fx_records: list[dict] = []
        first_day = _REF_DAY - WINDOW_DAYS - 50
        for currency, base in p.fx_base:
            rate = Decimal(base)
            for day in range(first_day, _REF_DAY + 1):
                rate = (rate * (1 + Decimal(rng.randint(-30, 30)) / 10_000)).quantize(Decimal("0.000001"))
                self.fx[currency, day] = rate
                ts = _day_start(day) + 6 * 3600 + rng.randint(0, 3600)
                self.fx_records.append({
                    "SyncToken": "0", "domain": "QBO", "sparse": False, "SourceCurrencyCode": currency,
                    "TargetCurrencyCode": self.home, "Rate": float(rate), "AsOfDate": self.clock.date(day),
                    "MetaData": {"LastUpdatedTime": self.clock.qbo(ts)}})

    def _tax_rate_record(self, rate_id: str, name: str, percent: Decimal, special: str, agency: dict,
                         active: bool) -> dict:
        return {"Id": rate_id, "SyncToken": "0", "domain": "QBO", "sparse": False,
                "MetaData": self._meta(self.company_start_ts), "Name": name, "Description": name,
                "Active": active, "RateValue": _qbo_qty(percent), "AgencyRef": agency,
                "SpecialTaxType": special, "DisplayType": "ReadOnly"}

    def _tax_code_record(self, code_id: str, name: str, rate_id: str, rate_name: str, taxable: bool,
                         active: bool) -> dict:
        return {"Id": code_id, "SyncToken": "0", "domain": "QBO", "sparse": False,
                "MetaData": self._meta(self.company_start_ts), "Name": name, "Description": name,
                "Active": active, "Hidden": False, "Taxable": taxable, "TaxGroup": False,
                "SalesTaxRateList": {"TaxRateDetail": [{"TaxRateRef": {"value": rate_id, "name": rate_name},
                                                        "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}]},
                "PurchaseTaxRateList": {"TaxRateDetail": []}}

    def _build_catalog(self) -> None:
        p, rng = self.p, self.rng
        catalog_ts = self.company_start_ts + 30 * _DAY
        # Sequence tax categories, mapped to QuickBooks tax codes in the integration settings.
        self.categories: dict[str, _Category] = {}
        self.tax_code_map: dict[str, str] = {}
        for role, name, code_key in p.categories:
            cat = _Category(_uuid(rng), name, role)
            self.categories[role] = cat
            self.tax_code_map[cat.id] = self.tax_codes[code_key].id
        self.extra_categories: list[_Category] = []
        if self.plant_on:
            # Categories whose mapping cannot resolve: an inactive code and a code id QuickBooks never had.
            inactive = self.tax_codes[p.inactive_code]
            for name, code_id, why in (
                ("Digital services (OSS)", inactive.id, f"mapped to inactive QuickBooks tax code {inactive.id} "
                                                        f"({inactive.name})"),
                ("Telecommunications", "999", "mapped to QuickBooks tax code 999, which does not exist"),
            ):
                cat = _Category(_uuid(rng), name, "unresolved")
                self.extra_categories.append(cat)
                self.tax_code_map[cat.id] = code_id
                self._plant("tax_category", "tax_code_unresolved", "tax_code", cat.id,
                            code_id if code_id != "999" else None, f"Tax category '{name}' is {why}.")
        aliases = dict(p.role_alias)
        # QuickBooks items: the default "Services" item, legacy items, then one per mapped product.
        self.items: list[_Item] = []
        self.item_records: list[dict] = []

        def new_item(name: str, account: _Account, product: _Product | None, created: int) -> _Item:
            item_id = self._next("item")
            item = _Item(item_id, name, account, {"value": item_id, "name": name}, account.ref, product, created)
            self.items.append(item)
            return item

        self.default_item = new_item("Services", self.accounts["sales"], None, self.company_start_ts)
        legacy = {name: new_item(name, self.accounts[acct], None, self.company_start_ts)
                  for name, acct in _LEGACY_ITEMS}
        self.products: list[_Product] = []
        unmapped: set[str] = set(rng.sample(_UNMAPPABLE, 2)) if self.plant_on else set()
        for (name, group, role, acct, kind, low, high, decimals, recurring), weight in zip(
                _CATALOG, _CATALOG_WEIGHTS, strict=True):
            role = aliases.get(role, role)
            prod = _Product(_uuid(rng), name, group, role, self.categories.get(role), acct, kind, Decimal(low),
                            Decimal(high), decimals, recurring, weight)
            if name not in unmapped:
                prod.item = new_item(name, self.accounts[acct], prod, catalog_ts)
            self.products.append(prod)
        self.extra_products: list[_Product] = []
        self.item_settings: dict[str, dict[str, str]] = {}
        for prod in self.products:
            if prod.item is not None:
                self.item_settings[prod.id] = {"item_id": prod.item.id, "account_code": prod.item.account.number}
        if self.plant_on:
            for prod in self.products:
                if prod.item is None:
                    self._plant("product", "product_unmapped", "item", prod.id, None,
                                f"Product '{prod.name}' has no QuickBooks item mapping; its synced lines use the "
                                f"default item '{self.default_item.name}' ({self.default_item.id}).")
            # New products named like items that already exist: linking them would create a duplicate name.
            for name in ("Consulting", "Training"):
                prod = _Product(_uuid(rng), name, "Professional services", "services",
                                self.categories.get("services"), "services", "hours", Decimal(100), Decimal(200),
                                0, False, 0)
                self.extra_products.append(prod)
                self._plant("product", "item_name_not_unique", "name", prod.id, legacy[name].id,
                            f"Product '{name}' is unmapped and a QuickBooks item named '{name}' "
                            f"({legacy[name].id}) already exists; creating its item would fail (names are unique).")
            # Mapped products whose QuickBooks item books to another income account than the settings say.
            mapped = [prod for prod in self.products if prod.item is not None and prod.name != "Platform fee"]
            for prod in rng.sample(mapped, 2):
                expected = prod.item.account
                other = self.accounts["other" if expected.key != "other" else "sales"]
                prod.item.account, prod.item.account_ref = other, other.ref
                self._plant("product", "item_account_differs", "account_code", prod.id, prod.item.id,
                            f"Settings book '{prod.name}' to account {expected.number} ({expected.name}); "
                            f"QuickBooks item {prod.item.id} uses {other.number} ({other.name}).")
        self.mapped_items = [prod.item for prod in self.products if prod.item is not None]
        self.product_weights = _cumulative([prod.weight for prod in self.products])
        self.product_records = []
        for prod in self.products + self.extra_products:
            created = (catalog_ts + rng.randint(0, 400 * _DAY) if prod.weight
                       else _REF_TS - rng.randint(2 * _DAY, 20 * _DAY))
            record = {"id": prod.id, "name": prod.name}
            if prod.weight:
                record["label"] = f"{prod.name} ({self.home})"
            if prod.category is not None:
                record["taxCategoryId"] = prod.category.id
            record["createdAt"] = self.clock.seq(created)
            record["updatedAt"] = self.clock.seq(self._recent_ts(created) if rng.random() < 0.3 else created)
            self.product_records.append(record)
            if prod.item is not None:
                prod.item.created_ts = created
        for item in self.items:
            created = item.created_ts
            record = {"Id": item.id, "SyncToken": "0", "domain": "QBO", "sparse": False,
                      "MetaData": self._meta(created + 120, self._recent_ts(created + 120)),
                      "Name": item.name, "Description": item.name, "Active": True,
                      "FullyQualifiedName": item.name, "Taxable": False, "UnitPrice": 0,
                      "Type": "Service", "IncomeAccountRef": item.account_ref, "PurchaseCost": 0,
                      "TrackQtyOnHand": False}
            prod = item.product
            if prod is not None:
                record["UnitPrice"] = float(_money(prod.low * self._price_factor(self.home)))
            if p.us_sales_tax:
                record["Taxable"] = bool(prod and prod.category and self.tax_code_map[prod.category.id] == "TAX")
            else:
                code = self.fallback
                if prod is not None and prod.category is not None:
                    code = self._code_by_id(self.tax_code_map[prod.category.id])
                record["Taxable"] = bool(code.percent)
                record["SalesTaxCodeRef"] = {"value": code.id, "name": code.name}
            self.item_records.append(record)
        self.tax_category_records = [{"id": c.id, "name": c.name}
                                     for c in list(self.categories.values()) + self.extra_categories]

    def _code_by_id(self, code_id: str) -> _TaxCode:
        for code in self.tax_codes.values():
            if code.id == code_id:
                return code
        raise KeyError(code_id)

    def _price_factor(self, currency: str) -> Decimal:
        return _PRICE_FACTOR.get(currency, Decimal(1))

    # ---- customers --------------------------------------------------------------------------------------

    def _build_customers(self) -> None:
        rng = self.rng
        self.customers: list[_Customer] = []
        self._names: set[str] = set()
        self._domains: set[str] = set()
        n_core = max(6, -(-self.n_invoices // 7))
        for n in range(n_core):
            created = _REF_TS - rng.randint(80, 720) * _DAY - rng.randint(0, _DAY)
            anchor = self.p.anchors[n] if n < len(self.p.anchors) else (None, None)
            cust = self._new_customer("core", created, *anchor)
            # Heavy-tailed invoice volume per customer; anchors are busy enough to always have invoices.
            cust.weight = max(3.0, rng.paretovariate(1.4)) if anchor[0] else rng.paretovariate(1.4)
            if rng.random() < 0.03 and not anchor[0]:
                cust.archived_ts = self._recent_ts(created + 30 * _DAY)
            self._link(cust, created)
            self.customers.append(cust)
        self.core = list(self.customers)
        self.cum_weights = _cumulative([cust.weight for cust in self.core])
        # Sequence customers still in DRAFT (extracted from a contract, not approved): never synced.
        for _ in range(2):
            cust = self._new_customer("draft", _REF_TS - rng.randint(1 * _DAY, 20 * _DAY))
            self.customers.append(cust)
        if not self.plant_on:
            return
        live = [c for c in self.core if c.archived_ts is None]
        victims = iter(rng.sample(live, min(len(live), 5 * self.scale)))
        for field in ("name", "billing_email", "billing_address.line1", "billing_address.city",
                      "billing_address.postal_code"):
            for _ in range(self.scale):
                cust = next(victims, None)
                if cust is not None:
                    self._plant_customer_field(cust, field)
        for _ in range(2 * self.scale):
            # New in Sequence, never linked or created in QuickBooks.
            cust = self._new_customer("new", _REF_TS - rng.randint(1 * _DAY, 25 * _DAY))
            self.customers.append(cust)
            self._plant("customer", "missing_in_app", None, cust.seq_id, None,
                        f"'{cust.name}' exists in Sequence only (no QuickBooks link or twin).")
        for _ in range(2 * self.scale):
            # Same company on both sides, but the Sequence customer was never linked.
            cust = self._new_customer("unlinked", _REF_TS - rng.randint(1 * _DAY, 40 * _DAY))
            self._twin(cust, cust.created_ts - rng.randint(30 * _DAY, 300 * _DAY))
            self.customers.append(cust)
            self._plant("customer", "unlinked_candidate", None, cust.seq_id, cust.qbo_id,
                        f"'{cust.name}' matches QuickBooks customer {cust.qbo_id} by name and email but "
                        f"has no integration id.")
        # QuickBooks-only customers: complete ones can be imported, incomplete ones cannot.
        variants = [("importable", None)] * (2 * self.scale)
        for field in ("billing_email", "billing_address.country", "billing_address.postal_code"):
            variants += [("not_importable", field)] * self.scale
        for kind, field in variants:
            cust = self._new_customer("qbo_only", _REF_TS - rng.randint(100 * _DAY, 900 * _DAY))
            self._twin(cust, cust.created_ts)
            if field == "billing_email":
                cust.qbo_email = None
                why = "has no primary email"
            elif field == "billing_address.country":
                cust.qbo_addr["Country"] = pycountry.countries.get(alpha_2=cust.country).name
                why = f"has country '{cust.qbo_addr['Country']}', not an alpha-2 code"
            elif field == "billing_address.postal_code":
                del cust.qbo_addr["PostalCode"]
                why = "has no postal code"
            else:
                why = "has a primary email and a complete address (line 1, city, postal code, alpha-2 country)"
            self.customers.append(cust)
            self._plant("customer", kind, field, None, cust.qbo_id,
                        f"QuickBooks customer '{cust.qbo_name}' is not in Sequence and {why}.")

    def _new_customer(self, role: str, created: int, country: str | None = None,
                      tax_status: str | None = None) -> _Customer:
        rng, p = self.rng, self.p
        if country is None:
            countries, weights = zip(*p.customer_countries, strict=True)
            country = rng.choices(countries, weights)[0]
        base = f"{rng.choice(_NAME_A)} {rng.choice(_NAME_B)}"
        suffix = rng.choice(_LEGAL_SUFFIX[country])
        name = f"{base} {suffix}"
        while name in self._names:
            name = f"{base} {rng.choice(_NAME_C)} {suffix}"
            if name in self._names:
                name = f"{base} {rng.randint(2, 999)} {suffix}"
        self._names.add(name)
        address = self._address(country)
        if tax_status is not None:
            pass
        elif country == p.country:
            tax_status = "TAXED" if rng.random() < (0.85 if p.us_sales_tax else 0.95) else "TAX_EXEMPT"
        elif not p.us_sales_tax and country in _EU:
            tax_status = "REVERSE_CHARGED"  # EU business customer accounts for the VAT itself
        else:
            tax_status = "TAX_EXEMPT"  # outside the scope of the merchant's tax
        currency = _COUNTRY_CURRENCY[country] if p.multi_currency else self.home
        slug = _ascii_slug(base)
        domain = f"{slug}.example"
        n = 2
        while domain in self._domains:
            domain = f"{slug}{n}.example"
            n += 1
        self._domains.add(domain)
        contacts, primary, billing = self._contacts(domain, created)
        state_tax = None
        if p.us_sales_tax and tax_status == "TAXED":
            state_tax = self.state_tax[address["state"]]
        tax_id = None
        if country != "US" and rng.random() < (0.9 if tax_status == "REVERSE_CHARGED" else 0.4):
            tax_id = self._vat_id(country)
        cust = _Customer(
            seq_id=_uuid(rng), role=role, name=name, country=country, state=address.get("state"),
            address=address, tax_status=tax_status, currency=currency, contacts=contacts, primary_email=primary,
            billing_emails=billing, domain=domain if rng.random() < 0.8 else None, created_ts=created,
            archived_ts=None, tax_id=tax_id, schedule_id=_uuid(rng) if rng.random() < 0.75 else None,
            state_tax=state_tax)
        cust.label = rng.choice(_LABELS) if rng.random() < 0.6 else None
        if rng.random() < 0.5:
            cust.custom = {"region": {"GB": "UK", "US": "NA"}.get(country, "EU"), "tier": rng.choice(
                ("gold", "silver", "bronze"))}
        if rng.random() < 0.3:
            cust.stripe_id = "cus_" + "".join(rng.choice(_ALNUM) for _ in range(14))
        return cust

    def _address(self, country: str) -> dict:
        rng = self.rng
        town, pattern, state = rng.choice(_PLACES[country])
        street = rng.choice(_STREETS[country])
        number = rng.randint(1, 240)
        line1 = f"{number} {street}" if country in _STREET_NUMBER_FIRST else f"{street} {number}"
        postcode = _pattern(rng, pattern)
        if country == "US":
            postcode += f"{rng.randint(1, 99):02d}"
        elif country == "FR":
            postcode += str(rng.randint(1, 9)) if len(pattern) == 4 else f"{rng.randint(1, 20):02d}"
        elif country == "ES":
            postcode += f"{rng.randint(1, 50):02d}"
        address = {"line1": line1}
        if rng.random() < 0.25:
            address["line2"] = rng.choice(("Suite 200", "Floor 3", "Unit 12", "Building B"))
        address["town"] = town
        if state:
            address["state"] = state
        address["postcode"] = postcode
        address["country"] = country
        return address

    def _contacts(self, domain: str, created: int) -> tuple[list, str, list]:
        rng = self.rng
        contacts = []
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        local = rng.choice(("ap", "accounts", "finance", "billing", "invoices", "accounts.payable"))
        primary = f"{local}@{domain}"
        billing = [primary]
        people = [("Accounts Payable", primary, "PRIMARY")]
        if rng.random() < 0.3:
            email = f"{_ascii_slug(first)}.{_ascii_slug(last)}@{domain}"
            if email != primary:
                people.append((f"{first} {last}", email, "STANDARD"))
                billing.append(email)
        if rng.random() < 0.2:
            other = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            people.append((other, f"cto@{domain}", "NONE"))
        for name, email, preference in people:
            ts = self.clock.seq(created)
            contacts.append({"id": _uuid(rng), "name": name, "email": email, "billingPreference": preference,
                             "createdAt": ts, "updatedAt": ts})
        return contacts, primary, billing

    def _vat_id(self, country: str) -> str:
        rng = self.rng
        digits = "".join(str(rng.randint(0, 9)) for _ in range(9))
        return {"GB": f"GB{digits}", "DE": f"DE{digits}", "FR": f"FR{digits[:2]}{digits}",
                "NL": f"NL{digits}B01", "IE": f"IE{digits[:7]}{chr(65 + rng.randint(0, 25))}",
                "ES": f"ES{chr(65 + rng.randint(0, 25))}{digits[:7]}{chr(65 + rng.randint(0, 25))}"}[country]

    def _twin(self, cust: _Customer, created: int) -> None:
        """Give the customer a QuickBooks record that agrees with Sequence."""
        cust.qbo_id = self._next("customer")
        cust.qbo_name = cust.name
        self.qbo_names.add(cust.name)
        cust.qbo_email = cust.primary_email
        cust.qbo_addr = self._qbo_address(cust.address)
        cust.qbo_created_ts = created
        cust.qbo_updated_ts = self._recent_ts(created)

    def _link(self, cust: _Customer, created: int) -> None:
        self._twin(cust, created + self.rng.randint(60, 1800))
        cust.linked = True
        cust.bill_addr_ref = self._qbo_address(cust.address, with_id=False)

    def _qbo_address(self, address: dict, with_id: bool = True) -> dict:
        addr: dict[str, Any] = {}
        if with_id:
            addr["Id"] = self._next("address")
        addr["Line1"] = address["line1"]
        if "line2" in address:
            addr["Line2"] = address["line2"]
        addr["City"] = address["town"]
        if "state" in address:
            addr["CountrySubDivisionCode"] = address["state"]
        addr["PostalCode"] = address["postcode"]
        addr["Country"] = address["country"]
        return addr

    def _plant_customer_field(self, cust: _Customer, field: str) -> None:
        rng = self.rng
        addr = cust.qbo_addr
        assert addr is not None
        if field == "name":
            short = cust.name.rsplit(" ", 1)[0]
            new = short if short not in self.qbo_names else f"{short} (old)"
            cust.qbo_name = new
            self.qbo_names.add(new)
            seq_value, app_value = cust.name, new
        elif field == "billing_email":
            local = "accounts" if not cust.primary_email.startswith("accounts@") else "finance"
            cust.qbo_email = f"{local}@{cust.primary_email.split('@', 1)[1]}"
            seq_value, app_value = cust.primary_email, cust.qbo_email
        elif field == "billing_address.line1":
            old = addr["Line1"]
            addr["Line1"] = old.replace(old.split(" ")[0], str(rng.randint(241, 999)), 1) \
                if cust.country in _STREET_NUMBER_FIRST else f"{old.rsplit(' ', 1)[0]} {rng.randint(241, 999)}"
            seq_value, app_value = cust.address["line1"], addr["Line1"]
        elif field == "billing_address.city":
            towns = [t for t, _, _ in _PLACES[cust.country] if t != cust.address["town"]]
            addr["City"] = rng.choice(towns)
            seq_value, app_value = cust.address["town"], addr["City"]
        else:
            new = cust.address["postcode"]
            while new == cust.address["postcode"]:
                new = self._address(cust.country)["postcode"]
            addr["PostalCode"] = new
            seq_value, app_value = cust.address["postcode"], new
        self._plant("customer", "field_differs", field, cust.seq_id, cust.qbo_id,
                    f"Sequence '{seq_value}' vs QuickBooks '{app_value}'.")

    # ---- invoice planning -------------------------------------------------------------------------------

    def _plan_invoices(self) -> list[_InvoicePlan]:
        rng, p = self.rng, self.p
        plans = []
        gocardless = 0.0 if p.us_sales_tax else 0.08
        n = self.n_invoices
        # Statuses by quota, not by independent draws, so even a small tenant has every status.
        statuses: list[str] = []
        for status, share in (("DRAFT", 0.08), ("VOIDED", 0.05), ("FINAL", 0.17)):
            statuses += [status] * max(1 if n >= 12 else 0, round(share * n))
        statuses = statuses[:n] + ["SENT"] * max(0, n - len(statuses))
        rng.shuffle(statuses)
        for i in range(n):
            plan = _InvoicePlan()
            plan.id = _uuid(rng)
            cust = plan.cust = rng.pick(self.core, self.cum_weights)
            plan.currency = cust.currency
            plan.status = statuses[i]
            plan.terms = rng.choice((14, 30, 30, 30, 45, 60))
            plan.memo = rng.choice(_MEMOS).format(terms=plan.terms) if rng.random() < 0.55 else None
            plan.po = f"PO-{rng.randint(1000, 99999)}" if rng.random() < 0.3 else None
            plan.reference = f"REF-{rng.randint(10000, 99999)}" if rng.random() < 0.15 else None
            roll = rng.random()
            plan.provider = "STRIPE" if roll < 0.25 else "GOCARDLESS" if roll < 0.25 + gocardless else None
            plan.link = plan.provider is not None
            plan.settings_record = plan.link or rng.random() < 0.1
            plan.was_sent = plan.status == "SENT" or (plan.status == "VOIDED" and rng.random() < 0.7)
            if plan.status == "DRAFT":
                plan.created_ts = _REF_TS - rng.randint(0, 12 * _DAY)
                plan.issue = None
                plan.acct = _REF_DAY + rng.randint(0, 10)
                plan.due = plan.acct + plan.terms
                plan.period = _month_bounds(plan.acct)
                plan.final_ts = None
                plan.event_ts = plan.created_ts
            else:
                issue = plan.issue = _REF_DAY - rng.randint(1, WINDOW_DAYS)
                plan.created_ts = self._ts_in_day(issue - rng.randint(0, 2))
                plan.final_ts = self._ts_in_day(issue, plan.created_ts)
                in_arrears = rng.random() < 0.4
                plan.period = _month_bounds(_month_bounds(issue)[0] - 1 if in_arrears else issue)
                roll = rng.random()
                plan.acct = issue if roll < 0.7 else plan.period[1] if in_arrears else plan.period[0]
                plan.due = issue + plan.terms
                plan.event_ts = plan.final_ts + (rng.randint(30, 900) if plan.was_sent else 0)
                age = _REF_DAY - issue
                # Older invoices are more likely paid: about half of a 60-day window is still open.
                if plan.status in _ISSUED and rng.random() < min(0.8, 0.05 + age / 60):
                    plan.paid = True
                    plan.paid_day = issue + rng.randint(1, age)
                    plan.paid_ts = self._ts_in_day(plan.paid_day, plan.event_ts)
                    plan.event_ts = plan.paid_ts
                elif plan.status == "VOIDED":
                    plan.event_ts = max(plan.event_ts, self._ts_in_day(issue + rng.randint(0, age), plan.event_ts))
            plan.lines = self._plan_lines(plan)
            plan.order = i
            plans.append(plan)
        # Invoice numbers follow issue order; drafts have none yet.
        for plan in sorted((pl for pl in plans if pl.issue is not None), key=lambda pl: (pl.issue, pl.final_ts,
                                                                                         pl.order)):
            self.invoice_number += 1
            plan.number = f"INV{self.invoice_number:05d}"
        plans.sort(key=lambda pl: (pl.created_ts, pl.order))
        return plans

    def _plan_lines(self, plan: _InvoicePlan) -> list[tuple]:
        rng = self.rng
        count = rng.pick((1, 2, 3, 4), _LINE_COUNT_WEIGHTS)
        chosen: list[_Product] = []
        for _ in range(count * 3):
            prod = rng.pick(self.products, self.product_weights)
            if prod not in chosen:
                chosen.append(prod)
                if len(chosen) == count:
                    break
        factor = self._price_factor(plan.currency)
        label = _month_label(plan.period[0])
        lines = []
        for prod in chosen:
            qty = self._quantity(prod.qty_kind)
            scale = prod.price_step
            units = rng.randint(prod.price_units[0], prod.price_units[1])
            rate = (Decimal(units) * scale * factor).quantize(scale, ROUND_HALF_UP)
            if prod.decimals == 0 and rate >= 100:
                rate = (rate / 25).quantize(Decimal(1), ROUND_HALF_UP) * 25  # list prices end in 25s
            title = f"{prod.name}, {label}" if prod.recurring else prod.name
            lines.append((prod, qty, rate, title))
        return lines

    def _quantity(self, kind: str) -> Decimal:
        rng = self.rng
        if kind == "one":
            return Decimal(1)
        if kind == "seats":
            return Decimal(rng.randint(5, 250))
        if kind == "usage":
            return Decimal(rng.randint(10, 5000) * 1000)
        if kind == "storage":
            return Decimal(rng.randint(50, 5000))
        if kind == "hours":
            return Decimal(rng.randint(4, 80)) / 2
        if kind == "few":
            return Decimal(rng.randint(1, 3))
        if kind == "units":
            return Decimal(rng.randint(1, 25))
        return Decimal(rng.randint(200, 20000))  # kwh

    # ---- tax resolution (the seed document's rules) -----------------------------------------------------

    def _tax_for(self, cust: _Customer, category: _Category | None) -> tuple:
        """(QuickBooks TaxCodeRef value, percent, fraction, Sequence taxRate text, QuickBooks TaxRateRef or None)."""
        key = (cust.tax_status, cust.state, category.id if category else None)
        hit = self._tax_cache.get(key)
        if hit is not None:
            return hit
        if cust.tax_status == "TAXED":
            # Taxed: the tax category's mapped code; no category (or no mapping) -> the fallback code.
            code_id = self.tax_code_map.get(category.id, self.fallback.id) if category else self.fallback.id
        elif cust.tax_status == "TAX_EXEMPT":
            code_id = self.exempt.id
        else:
            code_id = self.reverse_charge.id
        if self.p.us_sales_tax:
            if code_id == "TAX" and cust.state_tax is not None:
                percent, rate_id = cust.state_tax[2], cust.state_tax[1]
            else:
                code_id, percent, rate_id = "NON", _ZERO, None
        else:
            code = self._code_by_id(code_id)
            percent, rate_id = code.percent, code.rate_id
        fraction = percent / _HUNDRED
        hit = self._tax_cache[key] = (code_id, percent, fraction, _fraction_text(percent), rate_id)
        return hit

    # ---- choosing what to plant -------------------------------------------------------------------------

    def _plant_invoices(self, plans: list[_InvoicePlan]) -> None:
        rng = self.rng
        order = list(plans)
        rng.shuffle(order)
        s = self.scale

        def taxable_line(pl: _InvoicePlan) -> bool:
            return any(self._tax_for(pl.cust, prod.category)[1] > 0 for prod, *_ in pl.lines)

        def issued(pl: _InvoicePlan) -> bool:
            return pl.status in _ISSUED

        table: list[tuple[str, str | None, str, int, Callable[[_InvoicePlan], bool]]] = [
            ("invalid", "currency", "xyz", 1, lambda pl: pl.status == "DRAFT"),
            ("stripe_link_ignored", "payment_status", "stripe", 2 * s,
             lambda pl: issued(pl) and not pl.paid and pl.provider == "STRIPE"),
            ("status_differs", "status", "seq_void", 2 * s, lambda pl: pl.status == "VOIDED"),
            ("status_differs", "status", "qbo_void", 2 * s, lambda pl: issued(pl) and not pl.paid),
            ("status_differs", "payment_status", "qbo_paid", 2 * s,
             lambda pl: issued(pl) and not pl.paid and pl.provider != "STRIPE"),
            ("status_differs", "payment_status", "seq_paid", 2 * s,
             lambda pl: issued(pl) and pl.paid and pl.provider != "STRIPE"),
            ("currency_differs", "currency", "currency", 2 * s, lambda pl: issued(pl) and not pl.paid),
            ("missing_in_app", None, "missing", 2 * s, issued),
            ("unlinked_candidate", None, "unlinked", 2 * s, issued),
            ("field_differs", "invoice_date", "invoice_date", s, lambda pl: issued(pl) and pl.acct != pl.issue),
            ("field_differs", "memo", "memo", s, lambda pl: issued(pl) and pl.memo is not None),
            ("field_differs", "billing_email", "billing_email", s, lambda pl: pl.status == "SENT"),
            ("field_differs", "line.tax_code", "line.tax_code", s, lambda pl: issued(pl) and taxable_line(pl)),
            ("field_differs", "line.item", "line.item", s,
             lambda pl: issued(pl) and any(prod.item is not None for prod, *_ in pl.lines)),
            ("field_differs", "due_date", "due_date", s, issued),
            ("field_differs", "number", "number", s, issued),
            ("field_differs", "line.description", "line.description", s, issued),
            ("field_differs", "line.quantity", "line.quantity", s, issued),
            ("field_differs", "line.rate", "line.rate", s, issued),
        ]
        for kind, field, variant, count, eligible in table:
            picked = 0
            for plan in order:
                if picked == count:
                    break
                if plan.plant is None and eligible(plan):
                    plan.plant = (kind, field, variant)
                    picked += 1
            if variant == "currency":
                for plan in plans:
                    if plan.plant is not None and plan.plant[2] == "currency":
                        others = [c for c in _QBO_CURRENCY_NAMES if c != plan.cust.currency]
                        plan.currency = rng.choice(others)
            elif variant == "xyz":
                for plan in plans:
                    if plan.plant is not None and plan.plant[2] == "xyz":
                        plan.currency = "XYZ"

    def _plan_credit_notes(self, plans: list[_InvoicePlan]) -> None:
        rng = self.rng
        candidates = [pl for pl in plans if pl.status in _ISSUED and pl.plant is None]
        count = min(len(candidates), max(2, round(0.05 * len(candidates))) if candidates else 0)
        for plan in rng.sample(candidates, count):
            plan.credit_note = rng.choices(("SENT", "FINAL", "DRAFT"), (60, 30, 10))[0]
        issued = [pl for pl in candidates if pl.credit_note in _ISSUED]
        rng.shuffle(issued)
        self.credit_note_plants: dict[str, str] = {}
        if self.plant_on:
            slots = ["missing"] * self.scale + ["number"] * self.scale + ["line.rate"] * self.scale
            for plan, variant in zip(issued, slots, strict=False):
                self.credit_note_plants[plan.id] = variant

    # ---- emitting invoices ------------------------------------------------------------------------------

    def _emit_invoice(self, plan: _InvoicePlan, write_invoice: Callable, write_group: Callable,
                      write_line: Callable) -> None:
        rng, clock, cust = self.rng, self.clock, plan.cust
        variant = plan.plant[2] if plan.plant else None
        synced = plan.status != "DRAFT" and variant not in ("missing", "currency")
        linked = synced and variant != "unlinked"
        qbo_id = self._txn_id() if synced else None
        qbo_create_ts = min(_REF_TS, plan.final_ts + rng.randint(20, 600)) if synced else 0
        link_value = qbo_id if linked else None
        xero = self._x_begin(plan) if self.xero_on else None
        # Sequence lines and groups (the tax category lives on the group).
        groups: dict[str, list] = {}
        seq_lines = []
        net_total = tax_total = _ZERO
        for index, (prod, qty, rate, title) in enumerate(plan.lines):
            group = groups.get(prod.group)
            if group is None:  # [id, tax category, net, tax, index, title]
                group = groups[prod.group] = [_uuid(rng), prod.category, _ZERO, _ZERO, len(groups), prod.group]
            tax = self._tax_for(cust, prod.category)
            net = _money(qty * rate)
            line_tax = _money(net * tax[2])
            group[2] += net
            group[3] += line_tax
            net_total += net
            tax_total += line_tax
            line_id = _uuid(rng)
            record = {
                "id": line_id, "invoiceId": plan.id, "title": title, "quantity": _plain(qty),
                "rate": _rate_text(rate), "taxRate": tax[3],
                "servicePeriod": {"startDate": clock.date(plan.period[0]), "endDate": clock.date(plan.period[1])},
                "index": index, "groupId": group[0], "netTotal": str(net), "totalTax": str(line_tax),
                "grossTotal": str(net + line_tax), "rateDisplay": "ABSOLUTE",
                "externalIds": [{"key": "QuickBooks_Online", "value": f"{link_value}-{index + 1}"}]
                if link_value else [],
                "revenueClassification": "EARNED", "productId": prod.id,
            }
            if xero is not None and xero.linked:
                record["externalIds"].append({"key": "Xero", "value": xero.line_ids[index]})
            seq_lines.append((record, prod, qty, rate, title, tax, net, line_tax, group))
        gross_total = net_total + tax_total
        for group_id, category, g_net, g_tax, g_index, title in groups.values():
            record = {"id": group_id, "invoiceId": plan.id, "title": title, "index": g_index,
                      "netTotal": str(g_net), "totalTax": str(g_tax), "grossTotal": str(g_net + g_tax)}
            if category is not None:
                record["taxCategory"] = {"id": category.id, "name": category.name}
            write_group(record)
        for line in seq_lines:
            write_line(line[0])

        # QuickBooks twin, as the sync wrote it, then bent where a discrepancy is planted.
        qbo_void = (plan.status == "VOIDED" and variant != "seq_void") or variant == "qbo_void"
        qbo_paid = not qbo_void and synced and ((plan.paid and variant != "seq_paid")
                                                or variant in ("qbo_paid", "stripe"))
        payment_id = None
        qbo_update_ts = qbo_create_ts
        if synced:
            if plan.status == "SENT":
                qbo_update_ts += rng.randint(5, 60)  # the merchant-email update right after the create
            if qbo_paid:
                paid_day = plan.paid_day if plan.paid_day is not None else \
                    plan.issue + rng.randint(1, _REF_DAY - plan.issue)
                payment_id, pay_ts = self._bundle_payment(cust, plan.currency, paid_day, plan.issue, qbo_create_ts)
                qbo_update_ts = max(qbo_update_ts, pay_ts)
            if qbo_void:
                qbo_update_ts = max(qbo_update_ts, min(_REF_TS, plan.event_ts + rng.randint(10, 600)))
            qbo_record, total = self._qbo_invoice(plan, qbo_id, qbo_create_ts, qbo_update_ts, seq_lines, variant,
                                                  qbo_void, payment_id)
            if payment_id is not None:
                self.payment_lines[payment_id].append((qbo_id, total))
            self._w("quickbooks", "invoice")(qbo_record)

        # The Sequence invoice itself.
        updated_ts = max(plan.event_ts, plan.created_ts)
        balance = _ZERO if (plan.paid or plan.status == "VOIDED") else gross_total
        record: dict[str, Any] = {"id": plan.id, "sequenceAccountId": self.account_id}
        if cust.schedule_id:
            record["billingScheduleId"] = cust.schedule_id
        record["status"] = plan.status
        record["currency"] = plan.currency
        if plan.number:
            record["invoiceNumber"] = plan.number
        if plan.issue is not None:
            record["issueDate"] = clock.date(plan.issue)
        record["dueDate"] = clock.date(plan.due)
        if plan.po:
            record["purchaseOrderNumber"] = plan.po
        if plan.reference:
            record["reference"] = plan.reference
        record["customerEmails"] = cust.billing_emails
        record["customerLegalCompanyName"] = cust.name
        record["customerBillingAddress"] = cust.address
        record["customerShippingAddress"] = cust.address
        if plan.memo:
            record["memo"] = plan.memo
        record["paymentOptions"] = ["BANK_TRANSFER", "LINK"] if plan.link else ["BANK_TRANSFER"]
        record["billingPeriod"] = {"start": clock.date(plan.period[0]), "endInclusive": clock.date(plan.period[1])}
        record["customerId"] = cust.seq_id
        record["totalTax"] = str(tax_total)
        record["netTotal"] = str(net_total)
        record["grossTotal"] = str(gross_total)
        record["metadata"] = [{"key": "billing_run", "value": clock.date(plan.period[0])[:7]}] \
            if cust.schedule_id else []
        if cust.tax_id:
            record["customerTaxId"] = cust.tax_id
        record["paymentStatus"] = "PAID" if plan.paid else "UNPAID"
        record["createdAt"] = clock.seq(plan.created_ts)
        record["updatedAt"] = clock.seq(updated_ts)
        record["creditNoteIds"] = []
        record["linkedServices"] = [{"externalId": qbo_id, "externalService": "QuickBooks_Online",
                                     "syncTime": clock.seq(qbo_create_ts),
                                     "externalUrl": f"{_QBO_SERVICE_URL}/invoice?txnId={qbo_id}"}] if linked else []
        record["accountingDate"] = clock.date(plan.acct)
        record["customerTaxStatus"] = cust.tax_status
        record["renderSettings"] = {"paymentLinkDisplay": "SHOW_PAYMENT_LINK" if plan.link else "HIDE_PAYMENT_LINK"}
        record["isCustomerArchived"] = cust.archived_ts is not None
        record["balance"] = str(balance)
        record["balanceVersion"] = 1 if plan.paid else 0
        statuses: dict[str, str] = {}
        if plan.provider == "STRIPE":
            statuses["stripe"] = "PAID" if plan.paid else "PENDING"
        elif plan.provider == "GOCARDLESS":
            statuses["goCardless"] = "PAID" if plan.paid else "PENDING"
        record["integrationPaymentStatuses"] = statuses
        record["appliedCreditNotes"] = []
        record["appliedCreditGrants"] = []
        record["projectedCreditGrants"] = []
        allocations = []
        if plan.paid:
            paid_ts = plan.paid_ts
            allocations.append({"paymentId": _uuid(rng), "amount": str(gross_total), "allocatedAt": clock.seq(paid_ts),
                                "paidAt": clock.seq(paid_ts),
                                "origin": "STRIPE" if plan.provider == "STRIPE" else "MANUAL"})
        record["paymentAllocations"] = allocations
        record["paymentTermDays"] = plan.terms
        record["dueDateSource"] = "CALCULATED"
        if xero is not None:
            if xero.linked:
                record["linkedServices"].append(self._x_link(xero.id, "Invoice", xero.create_ts))
            self._x_emit_invoice(plan, seq_lines, xero)
        if plan.credit_note:
            credit_note_id = _uuid(rng)
            record["creditNoteIds"] = [credit_note_id]
            self._emit_credit_note(plan, credit_note_id, seq_lines)
        write_invoice(record)
        if plan.settings_record:
            self._w("sequence", "invoice-payment-settings")({
                "id": _uuid(rng), "sequenceAccountId": self.account_id, "invoiceId": plan.id,
                "customerId": cust.seq_id, "paymentProvider": plan.provider or "NONE"})
        if plan.plant:
            self._record_invoice_plant(plan, qbo_id)

    def _sales_lines(self, seq_lines: list, variant: str | None) -> tuple[list, str]:
        """QuickBooks line inputs for Sequence lines, with the planted line change applied; returns a detail."""
        rng = self.rng
        out = []
        for (record, prod, qty, rate, title, tax, _net, _tax, group) in seq_lines:
            item = prod.item or self.default_item
            description = f"{group[5]}: {title}"  # the seed's "[line item group]: [line item]"
            out.append([item, description, qty, rate, tax, record["id"]])
        detail = ""
        if variant and variant.startswith("line."):
            if variant == "line.tax_code":
                choices = [i for i, line in enumerate(out) if line[4][1] > 0]
            elif variant == "line.item":
                choices = [i for i, line in enumerate(out) if line[0] is not self.default_item]
            else:
                choices = list(range(len(out)))
            n = rng.choice(choices)
            line = out[n]
            where = f"line {n + 1} (Sequence line {line[5]}, QuickBooks Line.Id {n + 1})"
            if variant == "line.description":
                expected = line[1]
                line[1] = line[1].split(": ", 1)[1]
                detail = f"{where}: Sequence expects '{expected}', QuickBooks has '{line[1]}'."
            elif variant == "line.quantity":
                line[2] = line[2] + 1
                detail = f"{where}: quantity Sequence {_plain(line[2] - 1)} vs QuickBooks {_plain(line[2])}."
            elif variant == "line.rate":
                old = line[3]
                step = Decimal(1).scaleb(old.as_tuple().exponent)
                new = max((old * Decimal("1.1")).quantize(step, ROUND_HALF_UP), old + step)
                line[3] = new
                detail = f"{where}: rate Sequence {_rate_text(old)} vs QuickBooks {_rate_text(new)}."
            elif variant == "line.tax_code":
                old = line[4]
                new_code = self.zero
                line[4] = (new_code.id, _ZERO, _ZERO, "0.0", new_code.rate_id)
                detail = f"{where}: tax code expected {old[0]} vs QuickBooks {new_code.id} ({new_code.name})."
            elif variant == "line.item":
                old = line[0]
                line[0] = rng.choice([it for it in self.mapped_items if it is not old])
                detail = f"{where}: item expected {old.id} ({old.name}) vs QuickBooks {line[0].id} ({line[0].name})."
        return out, detail

    def _qbo_invoice(self, plan: _InvoicePlan, qbo_id: str, create_ts: int, update_ts: int, seq_lines: list,
                     variant: str | None, voided: bool, payment_id: str | None) -> tuple[dict, Decimal]:
        cust, clock = plan.cust, self.clock
        lines, plan_detail = self._sales_lines(seq_lines, variant)
        txn_day = plan.issue if self.p.invoice_date == "issue" else plan.acct
        due_day = plan.due
        doc_number = plan.number
        memo = plan.memo
        # Once an invoice is sent, Sequence overwrites the bill email with the merchant's so that QuickBooks
        # does not email the customer a second time; finalized-only invoices carry the primary billing contact.
        email = self.p.merchant_email if plan.was_sent else cust.primary_email
        if variant == "due_date":
            due_day += 14
            plan_detail = f"dueDate {clock.date(plan.due)} vs DueDate {clock.date(due_day)}."
        elif variant == "invoice_date":
            txn_day = plan.acct if self.p.invoice_date == "issue" else plan.issue
            plan_detail = (f"settings say invoice date = {self.p.invoice_date} date "
                           f"({clock.date(plan.issue if self.p.invoice_date == 'issue' else plan.acct)}); "
                           f"QuickBooks TxnDate {clock.date(txn_day)} is the other date.")
        elif variant == "number":
            doc_number = f"{plan.number}-1"
            plan_detail = f"invoiceNumber {plan.number} vs DocNumber {doc_number}."
        elif variant == "memo":
            memo = _STALE_MEMO
            plan_detail = f"memo '{plan.memo}' vs CustomerMemo '{memo}'."
        elif variant == "billing_email":
            email = cust.primary_email
            plan_detail = (f"sent invoice should carry the merchant email {self.p.merchant_email}; QuickBooks "
                           f"BillEmail is the customer's {email} (QuickBooks would email the customer again).")
        record, total = self._qbo_sales_doc(
            "Invoice", qbo_id, doc_number, cust, txn_day, due_day, plan.currency, lines, memo, email,
            create_ts, update_ts, voided, payment_id, service_day=plan.period[0])
        plan.plant_detail = plan_detail
        return record, total

    def _qbo_sales_doc(self, entity: str, qbo_id: str | None, doc_number: str | None, cust: _Customer,
                       txn_day: int, due_day: int | None, currency: str, lines: list, memo: str | None,
                       email: str | None, create_ts: int, update_ts: int, voided: bool, payment_id: str | None,
                       service_day: int | None = None, sync_token: int | None = None) -> tuple[dict, Decimal]:
        """An Invoice or CreditMemo as QuickBooks returns it; totals recomputed from its own lines."""
        clock = self.clock
        us = self.p.us_sales_tax
        qbo_lines = []
        subtotal = tax_total = _ZERO
        tax_lines: dict[str, list] = {}
        state_code = None
        for number, (item, description, qty, rate, tax, _seq_id) in enumerate(lines, 1):
            amount = _ZERO if voided else _money(qty * rate)
            line_tax = _money(amount * tax[2]) if tax[1] else _ZERO
            subtotal += amount
            tax_total += line_tax
            detail: dict[str, Any] = {}
            if service_day is not None:
                detail["ServiceDate"] = clock.date(service_day)
            detail["ItemRef"] = item.ref
            detail["UnitPrice"] = float(rate)
            detail["Qty"] = 0 if voided else _qbo_qty(qty)
            detail["ItemAccountRef"] = item.account_ref
            detail["TaxCodeRef"] = {"value": tax[0]}
            qbo_lines.append({"Id": str(number), "LineNum": number, "Description": description,
                              "Amount": float(amount), "DetailType": "SalesItemLineDetail",
                              "SalesItemLineDetail": detail})
            if tax[4] is not None:
                bucket = tax_lines.get(tax[4])
                if bucket is None:
                    bucket = tax_lines[tax[4]] = [tax[1], _ZERO, _ZERO]
                bucket[1] += amount
                bucket[2] += line_tax
                if us:
                    state_code = cust.state_tax[0] if cust.state_tax else None
        qbo_lines.append({"Amount": float(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        total = subtotal + tax_total
        txn_tax: dict[str, Any] = {}
        if state_code and not voided:
            txn_tax["TxnTaxCodeRef"] = {"value": state_code}
        txn_tax["TotalTax"] = float(tax_total)
        if tax_lines and not voided:
            txn_tax["TaxLine"] = [
                {"Amount": float(b[2]), "DetailType": "TaxLineDetail",
                 "TaxLineDetail": {"TaxRateRef": {"value": rate_id}, "PercentBased": True,
                                   "TaxPercent": _qbo_qty(b[0]), "NetAmountTaxable": float(b[1])}}
                for rate_id, b in tax_lines.items()]
        if sync_token is None:
            sync_token = (update_ts > create_ts) + (payment_id is not None) + voided
        record: dict[str, Any] = {}
        if qbo_id is not None:
            record["Id"] = qbo_id
        record["SyncToken"] = str(sync_token)
        record["domain"] = "QBO"
        record["sparse"] = False
        record["MetaData"] = self._meta(create_ts, update_ts)
        if doc_number:
            record["DocNumber"] = doc_number
        record["TxnDate"] = clock.date(txn_day)
        if due_day is not None:
            record["DueDate"] = clock.date(due_day)
        record["CustomerRef"] = {"value": cust.qbo_id, "name": cust.qbo_name}
        if email:
            record["BillEmail"] = {"Address": email}
        record["BillAddr"] = {"Id": self._next("address"), **(cust.bill_addr_ref or {})}
        if memo:
            record["CustomerMemo"] = {"value": memo}
        record["CurrencyRef"] = {"value": currency, "name": _QBO_CURRENCY_NAMES.get(currency, currency)}
        rate = Decimal(1)
        if self.p.multi_currency:
            rate = self.fx.get((currency, txn_day), Decimal(1))
            record["ExchangeRate"] = _qbo_qty(rate)
        record["Line"] = qbo_lines
        record["TxnTaxDetail"] = txn_tax
        if not us:
            record["GlobalTaxCalculation"] = "TaxExcluded"
        record["ApplyTaxAfterDiscount"] = False
        balance = _ZERO if (voided or payment_id is not None) else total
        record["TotalAmt"] = float(total)
        if entity == "CreditMemo":
            record["RemainingCredit"] = float(total)
        record["Balance"] = float(balance)
        if self.p.multi_currency and currency != self.home:
            record["HomeTotalAmt"] = float(_money(total * rate))
            if entity == "Invoice":
                record["HomeBalance"] = float(_money(balance * rate))
        record["PrintStatus"] = "NotSet"
        record["EmailStatus"] = "NotSet"
        if voided:
            record["PrivateNote"] = "Voided"
        if entity == "Invoice":
            record["LinkedTxn"] = [{"TxnId": payment_id, "TxnType": "Payment"}] if payment_id else []
        # Customer balance and receivables move with open documents (credits reduce them).
        sign = -1 if entity == "CreditMemo" else 1
        cust.qbo_balance += sign * balance
        self.ar_balance += sign * _money(balance * rate)
        return record, total

    def _bundle_payment(self, cust: _Customer, currency: str, day: int, issue_day: int,
                        not_before: int) -> tuple[str, int]:
        """Attach an invoice to a QuickBooks payment; now and then one payment settles two invoices."""
        rng = self.rng
        open_bundle = self._open_bundle.get(cust.seq_id)
        if open_bundle is not None and open_bundle[1] == currency and issue_day <= open_bundle[2] \
                and open_bundle[3] >= not_before and rng.random() < 0.35:
            del self._open_bundle[cust.seq_id]
            return open_bundle[0], open_bundle[3]
        payment_id = self._txn_id()
        pay_ts = self._ts_in_day(day, not_before + 60)
        bundle = [payment_id, currency, day, pay_ts, cust]
        self.payment_bundles.append(bundle)
        self.payment_lines[payment_id] = []
        self._open_bundle[cust.seq_id] = bundle
        return payment_id, pay_ts

    def _record_invoice_plant(self, plan: _InvoicePlan, qbo_id: str | None) -> None:
        kind, field, variant = plan.plant  # type: ignore[misc]
        cust = plan.cust
        detail = plan.plant_detail
        app = "quickbooks"
        if variant == "xyz":
            app = "sequence"
            field = "currency"
            detail = "Sequence invoice has currency 'XYZ', which is not an ISO 4217 code."
        elif variant == "missing":
            detail = f"{plan.status} invoice {plan.number} was never synced to QuickBooks."
        elif variant == "unlinked":
            detail = (f"QuickBooks invoice {qbo_id} has DocNumber {plan.number} and the linked customer, but the "
                      f"Sequence invoice has no linkedServices entry.")
        elif variant == "currency":
            detail = (f"Invoice {plan.number} is in {plan.currency}; its QuickBooks customer {cust.qbo_id} is in "
                      f"{cust.currency}, so the sync fails and the invoice is absent from QuickBooks.")
        elif variant == "seq_void":
            detail = f"Sequence VOIDED; QuickBooks invoice {qbo_id} is still open."
        elif variant == "qbo_void":
            detail = f"QuickBooks invoice {qbo_id} is voided; Sequence is {plan.status} and UNPAID."
        elif variant == "qbo_paid":
            provider = plan.provider or "none"
            detail = (f"QuickBooks invoice {qbo_id} is paid (Balance 0); Sequence is UNPAID "
                      f"(payment link provider: {provider}) -> mark paid in Sequence.")
        elif variant == "seq_paid":
            detail = f"Sequence is PAID; QuickBooks invoice {qbo_id} is open with no payment."
        elif variant == "stripe":
            detail = (f"QuickBooks invoice {qbo_id} is paid, but the Sequence invoice has a Stripe payment link: "
                      f"Sequence ignores QuickBooks payment status, so no paid write may be planned.")
        self._plant("invoice", kind, field, plan.id, qbo_id, detail, app=app)

    # ---- credit notes -----------------------------------------------------------------------------------

    def _emit_credit_note(self, plan: _InvoicePlan, cn_id: str, seq_lines: list) -> None:
        rng, clock, cust = self.rng, self.clock, plan.cust
        status = plan.credit_note
        variant = self.credit_note_plants.get(plan.id)
        issue = min(_REF_DAY, plan.issue + rng.randint(1, 20))
        created_ts = self._ts_in_day(issue, plan.final_ts + 60)
        number = None
        if status != "DRAFT":
            self.credit_note_number += 1
            number = f"CN{self.credit_note_number:05d}"
        synced = status != "DRAFT" and variant != "missing"
        qbo_id = self._txn_id() if synced else None
        qbo_ts = min(_REF_TS, created_ts + rng.randint(20, 600))
        credited = rng.sample(seq_lines, min(len(seq_lines), rng.choice((1, 1, 2))))
        credited.sort(key=lambda ln: ln[0]["index"])
        cn_groups: dict[str, list] = {}
        cn_lines = []
        net_total = tax_total = _ZERO
        for index, (line_rec, prod, qty, rate, title, tax, _n, _t, group) in enumerate(credited):
            if qty > 1 and qty == qty.to_integral_value() and rng.random() < 0.5:
                qty = Decimal(rng.randint(1, int(qty) - 1))
            net = _money(qty * rate)
            line_tax = _money(net * tax[2])
            net_total += net
            tax_total += line_tax
            g = cn_groups.get(group[0])
            if g is None:  # keyed by the invoice group it credits: [id, title, net, tax, index]
                g = cn_groups[group[0]] = [_uuid(rng), group[5], _ZERO, _ZERO, len(cn_groups)]
            g[2] += net
            g[3] += line_tax
            cn_lines.append((line_rec, prod, qty, rate, title, tax, net, line_tax, g, index))
        write_group = self._w("sequence", "credit-note-line-item-groups")
        for source_group_id, (gid, gtitle, g_net, g_tax, g_index) in cn_groups.items():
            write_group({"id": gid, "creditNoteId": cn_id, "lineItemGroupId": source_group_id, "title": gtitle,
                         "index": g_index, "netTotal": str(g_net), "totalTax": str(g_tax),
                         "grossTotal": str(g_net + g_tax)})
        write_line = self._w("sequence", "credit-note-line-items")
        xero = self._x_begin_credit_note(plan, cn_id, number, status, len(cn_lines), created_ts) \
            if self.xero_on else None
        qbo_inputs = []
        for (line_rec, prod, qty, rate, title, tax, net, line_tax, g, index) in cn_lines:
            line_id = _uuid(rng)
            line_record = {
                "id": line_id, "creditNoteId": cn_id, "groupId": g[0], "lineItemId": line_rec["id"],
                "title": title, "quantity": _plain(qty), "rate": _rate_text(rate), "taxRate": tax[3],
                "index": index, "netTotal": str(net), "totalTax": str(line_tax), "grossTotal": str(net + line_tax),
                "rateDisplay": "ABSOLUTE",
                "externalIds": [{"key": "QuickBooks_Online", "value": f"{qbo_id}-{index + 1}"}] if qbo_id else [],
                "servicePeriod": {"start": clock.date(plan.period[0]), "endInclusive": clock.date(plan.period[1])},
                "revenueClassification": "EARNED", "productId": prod.id}
            if xero is not None:
                line_record["externalIds"].append({"key": "Xero", "value": xero.line_ids[index]})
            write_line(line_record)
            qbo_inputs.append([prod.item or self.default_item, f"{g[1]}: {title}", qty, rate, tax, line_id])
        gross = net_total + tax_total
        record: dict[str, Any] = {"id": cn_id, "sequenceAccountId": self.account_id, "status": status,
                                  "invoiceId": plan.id, "invoiceNumber": plan.number}
        if cust.schedule_id:
            record["billingScheduleId"] = cust.schedule_id
        record["currency"] = plan.currency
        if status != "DRAFT":
            record["issueDate"] = clock.date(issue)
        if number:
            record["creditNoteNumber"] = number
        record["customerId"] = cust.seq_id
        record["customerEmails"] = cust.billing_emails
        record["customerLegalCompanyName"] = cust.name
        record["customerBillingAddress"] = cust.address
        record["customerShippingAddress"] = cust.address
        record["memo"] = f"Credit against {plan.number}"
        record["totalTax"] = str(tax_total)
        record["netTotal"] = str(net_total)
        record["grossTotal"] = str(gross)
        record["metadata"] = []
        if cust.tax_id:
            record["customerTaxId"] = cust.tax_id
        record["linkedServices"] = [{"externalId": qbo_id, "externalService": "QuickBooks_Online",
                                     "syncTime": clock.seq(qbo_ts),
                                     "externalUrl": f"{_QBO_SERVICE_URL}/creditmemo?txnId={qbo_id}"}] if qbo_id else []
        record["applicationStatus"] = "UNAPPLIED"
        record["balance"] = str(gross)
        record["balanceVersion"] = 0
        record["applications"] = []
        record["settings"] = {"generateCashCreditGrant": "DISABLED"}
        record["accountingDate"] = clock.date(issue)
        if xero is not None:
            record["linkedServices"].append(self._x_link(xero.id, "CreditNote", xero.create_ts))
            self._x_emit_credit_note(plan, record, cn_lines, xero)
        self._w("sequence", "credit-notes")(record)
        if not synced:
            if variant == "missing":
                self._plant("credit_note", "missing_in_app", None, cn_id, None,
                            f"{status} credit note {number} was never synced to QuickBooks.")
            return
        detail = ""
        doc_number = number
        if variant == "number":
            doc_number = f"{number}-1"
            detail = f"creditNoteNumber {number} vs DocNumber {doc_number}."
        elif variant == "line.rate":
            line = qbo_inputs[0]
            old = line[3]
            step = Decimal(1).scaleb(old.as_tuple().exponent)
            line[3] = max((old * Decimal("1.1")).quantize(step, ROUND_HALF_UP), old + step)
            detail = (f"line 1 (Sequence line {line[5]}, QuickBooks Line.Id 1): rate Sequence {_rate_text(old)} "
                      f"vs QuickBooks {_rate_text(line[3])}.")
        email = self.p.merchant_email if status == "SENT" else cust.primary_email
        txn_day = issue
        qbo_record, _ = self._qbo_sales_doc("CreditMemo", qbo_id, doc_number, cust, txn_day, None, plan.currency,
                                            qbo_inputs, record["memo"], email, qbo_ts, qbo_ts, False, None,
                                            service_day=plan.period[0], sync_token=0)
        self._w("quickbooks", "creditmemo")(qbo_record)
        if variant:
            self._plant("credit_note", "field_differs", variant, cn_id, qbo_id, detail)

    # ---- QuickBooks-only and broken records ------------------------------------------------------------

    def _qbo_only_inputs(self, cust: _Customer) -> list:
        rng = self.rng
        lines = []
        for item in rng.sample(self.mapped_items, rng.choice((1, 2))):
            prod = item.product
            tax = self._tax_for(cust, prod.category if prod else None)
            qty = Decimal(rng.randint(1, 10))
            rate = (Decimal(rng.randint(50, 900)) * self._price_factor(cust.currency)).quantize(_CENT)
            lines.append([item, f"{item.name} - ad hoc", qty, rate, tax, None])
        return lines

    def _emit_qbo_only_invoices(self) -> None:
        rng = self.rng
        live = [c for c in self.core if c.archived_ts is None] or self.core
        write = self._w("quickbooks", "invoice")
        for _ in range(2 * self.scale):
            cust = rng.choice(live)
            day = _REF_DAY - rng.randint(1, 30)
            ts = self._ts_in_day(day)
            self.qbo_doc_number += 1
            qbo_id = self._txn_id()
            record, _ = self._qbo_sales_doc("Invoice", qbo_id, str(self.qbo_doc_number), cust, day, day + 30,
                                            cust.currency, self._qbo_only_inputs(cust), None, cust.primary_email,
                                            ts, ts, False, None)
            write(record)
            self._plant("invoice", "missing_in_sequence", None, None, qbo_id,
                        f"QuickBooks invoice {qbo_id} (DocNumber {self.qbo_doc_number}) for '{cust.qbo_name}' was "
                        f"created in QuickBooks and has no Sequence counterpart.")

    def _emit_invalid_qbo_invoices(self) -> None:
        rng = self.rng
        live = [c for c in self.core if c.archived_ts is None] or self.core
        write = self._w("quickbooks", "invoice")
        for broken in ("Id", "TotalAmt"):
            cust = rng.choice(live)
            day = _REF_DAY - rng.randint(1, 30)
            ts = self._ts_in_day(day)
            self.qbo_doc_number += 1
            doc_number = str(self.qbo_doc_number)
            qbo_id = self._txn_id()
            balance_before = cust.qbo_balance, self.ar_balance
            record, total = self._qbo_sales_doc("Invoice", qbo_id, doc_number, cust, day, day + 30, cust.currency,
                                                self._qbo_only_inputs(cust), None, cust.primary_email, ts, ts,
                                                False, None)
            cust.qbo_balance, self.ar_balance = balance_before  # broken records do not count
            if broken == "Id":
                del record["Id"]
                self._plant("invoice", "invalid", "Id", None, None,
                            f"QuickBooks invoice DocNumber={doc_number} has no Id.")
            else:
                # A locale-formatted amount: a string, and not a number in any parser.
                whole, cents = f"{total:.2f}".split(".")
                record["TotalAmt"] = f"{int(whole):,}".replace(",", ".") + "," + cents
                self._plant("invoice", "invalid", "TotalAmt", None, qbo_id,
                            f"QuickBooks invoice {qbo_id} (DocNumber {doc_number}) has TotalAmt "
                            f"'{record['TotalAmt']}' (a non-numeric string).")
            write(record)

    # ---- payments, customers, reference data ------------------------------------------------------------

    def _emit_payments(self) -> None:
        write = self._w("quickbooks", "payment")
        bank = self.accounts["bank"]
        for payment_id, currency, day, pay_ts, cust in self.payment_bundles:
            applied = self.payment_lines[payment_id]
            total = sum((amount for _, amount in applied), _ZERO)
            record: dict[str, Any] = {
                "Id": payment_id, "SyncToken": "0", "domain": "QBO", "sparse": False,
                "MetaData": self._meta(pay_ts), "TxnDate": self.clock.date(day),
                "CustomerRef": {"value": cust.qbo_id, "name": cust.qbo_name},
                "CurrencyRef": {"value": currency, "name": _QBO_CURRENCY_NAMES.get(currency, currency)}}
            rate = Decimal(1)
            if self.p.multi_currency:
                rate = self.fx.get((currency, day), Decimal(1))
                record["ExchangeRate"] = _qbo_qty(rate)
            record["TotalAmt"] = float(total)
            record["UnappliedAmt"] = 0.0
            record["ProcessPayment"] = False
            record["PaymentRefNum"] = f"{self.p.payment_ref}-{int(payment_id) * 7 % 100000:05d}"
            record["DepositToAccountRef"] = bank.ref
            record["Line"] = [{"Amount": float(amount), "LinkedTxn": [{"TxnId": txn, "TxnType": "Invoice"}]}
                              for txn, amount in applied]
            self.bank_balance += _money(total * rate)
            write(record)

    def _emit_customers(self) -> None:
        write_seq = self._w("sequence", "customers")
        write_qbo = self._w("quickbooks", "customer")
        clock, p = self.clock, self.p
        for cust in sorted(self.customers, key=lambda c: (c.created_ts, c.seq_id)):
            if cust.role == "qbo_only":
                continue
            record: dict[str, Any] = {"id": cust.seq_id, "createdAt": clock.seq(cust.created_ts),
                                      "organizations": [], "legalName": cust.name, "address": cust.address}
            if cust.domain:
                record["url"] = f"https://{cust.domain}/"
                record["domain"] = cust.domain
            if cust.label:
                record["label"] = cust.label
            integrations = []
            if cust.linked:
                integrations.append({"service": "QuickBooks_Online", "id": cust.qbo_id,
                                     "lastSynced": clock.seq(cust.qbo_updated_ts), "isPending": False})
            if cust.stripe_id and cust.role == "core":
                integrations.append({"service": "Stripe", "id": cust.stripe_id,
                                     "lastSynced": clock.seq(cust.created_ts + 300), "isPending": False})
            xc = self.xc.get(cust.seq_id) if self.xero_on else None
            if xc is not None and xc.linked:
                integrations.append({"service": "Xero", "id": xc.id, "lastSynced": clock.seq(xc.updated_ts),
                                     "isPending": False})
            record["integrationIds"] = integrations
            if cust.archived_ts:
                record["archivedAt"] = clock.seq(cust.archived_ts)
            record["taxStatus"] = cust.tax_status
            record["contacts"] = cust.contacts
            record["status"] = "DRAFT" if cust.role == "draft" else "ACTIVE"
            record["customProperties"] = cust.custom or {}
            write_seq(record)
        qbo_customers = [c for c in self.customers if c.qbo_id is not None]
        qbo_customers.sort(key=lambda c: int(c.qbo_id))  # type: ignore[arg-type]
        for cust in qbo_customers:
            created = cust.qbo_created_ts
            record = {"Id": cust.qbo_id, "SyncToken": str(1 if cust.qbo_updated_ts > created else 0),
                      "domain": "QBO", "sparse": False, "MetaData": self._meta(created, cust.qbo_updated_ts),
                      "Taxable": cust.tax_status == "TAXED", "BillAddr": cust.qbo_addr, "Job": False,
                      "BillWithParent": False, "Balance": float(cust.qbo_balance),
                      "BalanceWithJobs": float(cust.qbo_balance),
                      "CurrencyRef": {"value": cust.currency, "name": _QBO_CURRENCY_NAMES[cust.currency]},
                      "PreferredDeliveryMethod": "Email", "IsProject": False,
                      "FullyQualifiedName": cust.qbo_name, "CompanyName": cust.qbo_name,
                      "DisplayName": cust.qbo_name, "PrintOnCheckName": cust.qbo_name,
                      "Active": cust.archived_ts is None}
            if cust.qbo_email:
                record["PrimaryEmailAddr"] = {"Address": cust.qbo_email}
            if cust.domain:
                record["WebAddr"] = {"URI": f"https://{cust.domain}/"}
            if not p.us_sales_tax:
                code = {"TAXED": self.fallback, "TAX_EXEMPT": self.exempt}.get(cust.tax_status, self.reverse_charge)
                record["DefaultTaxCodeRef"] = {"value": code.id}
            write_qbo(record)

    def _write_reference_data(self) -> None:
        p, clock = self.p, self.clock
        write = self._w("sequence", "products")
        for record in self.product_records:
            write(record)
        write = self._w("sequence", "tax-categories")
        for record in self.tax_category_records:
            write(record)
        write = self._w("quickbooks", "item")
        for record in self.item_records:
            write(record)
        write = self._w("quickbooks", "taxrate")
        for record in self.tax_rates:
            write(record)
        write = self._w("quickbooks", "taxcode")
        for record in self.tax_code_records:
            write(record)
        write = self._w("quickbooks", "exchangerate")
        for record in self.fx_records:
            write(record)
        line1, city, postcode, state = p.address
        addr: dict[str, Any] = {"Id": "1", "Line1": line1, "City": city}
        if state:
            addr["CountrySubDivisionCode"] = state
        addr["PostalCode"] = postcode
        addr["Country"] = p.country
        meta = self._meta(self.company_start_ts, self._recent_ts(self.company_start_ts))
        self._w("quickbooks", "companyinfo")({
            "Id": "1", "SyncToken": "4", "domain": "QBO", "sparse": False, "MetaData": meta,
            "CompanyName": p.company, "LegalName": p.legal_name, "CompanyAddr": addr,
            "CustomerCommunicationAddr": addr, "LegalAddr": addr,
            "CompanyEmailAddr": {"Address": p.merchant_email},
            "CustomerCommunicationEmailAddr": {"Address": p.merchant_email},
            "WebAddr": {"URI": f"https://{p.merchant_email.split('@')[1]}/"},
            "CompanyStartDate": clock.date(self.company_start_ts // _DAY + _EPOCH_ORDINAL),
            "FiscalYearStartMonth": p.fiscal_month, "Country": p.country, "SupportedLanguages": "en",
            "DefaultTimeZone": p.timezone, "Email": {"Address": p.merchant_email},
            "NameValue": [{"Name": "NeoEnabled", "Value": "true"},
                          {"Name": "IndustryType", "Value": "Software Publishers"},
                          {"Name": "OfferingSku", "Value": "QuickBooks Online Advanced"}]})
        tax_prefs: dict[str, Any] = {"UsingSalesTax": True}
        if p.us_sales_tax:
            tax_prefs["PartnerTaxEnabled"] = True
        else:
            tax_prefs["TaxGroupCodeRef"] = {"value": self.fallback.id}
        self._w("quickbooks", "preferences")({
            "Id": "1", "SyncToken": "6", "domain": "QBO", "sparse": False, "MetaData": meta,
            "AccountingInfoPrefs": {"UseAccountNumbers": True, "TrackDepartments": False,
                                    "ClassTrackingPerTxn": False, "ClassTrackingPerTxnLine": False,
                                    "FirstMonthOfFiscalYear": p.fiscal_month, "CustomerTerminology": "Customers"},
            "SalesFormsPrefs": {"CustomTxnNumbers": True, "AllowDeposit": False, "AllowDiscount": True,
                                "AllowServiceDate": True, "AllowShipping": False, "AutoApplyCredit": True,
                                "AutoApplyPayments": True},
            "TaxPrefs": tax_prefs,
            "CurrencyPrefs": {"MultiCurrencyEnabled": p.multi_currency, "HomeCurrency": self.qbo_home_ref}})

    def _emit_ledger_accounts(self) -> None:
        write = self._w("quickbooks", "account")
        meta = self._meta(self.company_start_ts, self._recent_ts(self.company_start_ts))
        balances = {"ar": self.ar_balance, "bank": self.bank_balance}
        for key, number, _name, acc_type, sub_type, classification in _ACCOUNTS:
            acc = self.accounts[key]
            balance = float(balances.get(key, _ZERO))
            write({"Id": acc.id, "SyncToken": "0", "domain": "QBO", "sparse": False, "MetaData": meta,
                   "Name": acc.name, "SubAccount": False, "FullyQualifiedName": acc.name, "Active": True,
                   "Classification": classification, "AccountType": acc_type, "AccountSubType": sub_type,
                   "AcctNum": number, "CurrentBalance": balance, "CurrentBalanceWithSubAccounts": balance,
                   "CurrencyRef": self.qbo_home_ref})

    # ---- Xero (UK and DE tenants) -----------------------------------------------------------------------
    # Every Xero record is what Sequence's integration would have written for the same truth (the seed's field
    # table, read for Xero), then bent where a Xero discrepancy is planted. Only self.xrng is drawn from here;
    # main-stream helpers (_address, _new_customer) run on it through _on_xrng.

    def _on_xrng(self, fn: Callable[..., Any], *args: Any) -> Any:
        saved, self.rng = self.rng, self.xrng
        try:
            return fn(*args)
        finally:
            self.rng = saved

    def _xplant(self, entity: str, kind: str, field: str | None, sequence_id: str | None, app_id: str | None,
                detail: str) -> None:
        # Numbered after the tenant's other discrepancies once everything is generated (see _x_finish).
        self.x_discrepancies.append({
            "id": "", "tenant": self.slug, "app": "xero", "entity": entity, "kind": kind, "field": field,
            "sequence_id": sequence_id, "app_id": app_id, "detail": detail})

    def _x_ts(self, ts: int) -> tuple[str, str]:
        return f"/Date({ts * 1000}+0000)/", self.clock.seq(ts)

    def _x_day(self, day: int) -> tuple[str, str]:
        return f"/Date({_day_start(day) * 1000}+0000)/", f"{self.clock.date(day)}T00:00:00"

    def _x_recent(self, after: int) -> int:
        return min(_REF_TS, max(after, _REF_TS - self.xrng.randint(0, WINDOW_DAYS * _DAY)))

    def _x_rate(self, currency: str, day: int) -> tuple[Decimal, Decimal]:
        """(Xero CurrencyRate = units of `currency` per base unit, home units per unit of `currency`)."""
        if currency == self.home:
            return Decimal(1), Decimal(1)
        fx = self.fx.get((currency, day), Decimal(1))
        return (1 / fx).quantize(_XERO_RATE_STEP, ROUND_HALF_UP), fx

    def _x_link(self, xero_id: str, kind: str, ts: int) -> dict:
        page = ("AccountsReceivable/View.aspx?InvoiceID" if kind == "Invoice"
                else "AccountsReceivable/ViewCreditNote.aspx?creditNoteID")
        return {"externalId": xero_id, "externalService": "Xero", "syncTime": self.clock.seq(ts),
                "externalUrl": f"{_XERO_URL}/{page}={xero_id}"}

    def _x_prepare(self, plans: list[_InvoicePlan]) -> None:
        """Xero's reference data, contacts and the choice of Xero plants, before anything is written."""
        x, p = self.xrng, self.p
        self.x_discrepancies: list[Discrepancy] = []
        self.x_payments: list[tuple] = []
        self.x_doc_number = 0
        self.x_org_id = _uuid(x)
        self.x_created_ts = self.company_start_ts + x.randint(1, 20) * _DAY
        # Tax rates, by the same spec keys as the QuickBooks codes (the Sequence side resolves the same way).
        specs = _XERO_TAX[p.country]
        self.x_tax: dict[str, str] = {}
        self.x_tax_records: list[dict] = []
        component = _XERO_ORG[p.country][2]
        for spec in p.tax_codes:
            tax_type, name, report = specs[spec.key]
            self.x_tax[spec.key] = tax_type
            rate = float(Decimal(spec.percent))
            self.x_tax_records.append({
                "Name": name, "TaxType": tax_type,
                "TaxComponents": [{"Name": component, "Rate": rate, "IsCompound": False, "IsNonRecoverable": False}],
                "Status": "ACTIVE" if spec.active else "ARCHIVED", "ReportTaxType": report,
                "CanApplyToAssets": True, "CanApplyToEquity": True, "CanApplyToExpenses": True,
                "CanApplyToLiabilities": True, "CanApplyToRevenue": True, "DisplayTaxRate": rate,
                "EffectiveRate": rate})
        self.x_tax_by_code = {code.id: self.x_tax[key] for key, code in self.tax_codes.items()}
        self.x_tax_map = {self.categories[role].id: self.x_tax[key] for role, _name, key in p.categories}
        if self.plant_on:
            inactive = self.x_tax[p.inactive_code]
            for cat, code in zip(self.extra_categories, (inactive, _XERO_MISSING_TAX_TYPE), strict=True):
                self.x_tax_map[cat.id] = code
                why = (f"mapped to archived Xero tax rate {code} ({specs[p.inactive_code][1]})" if code == inactive
                       else f"mapped to Xero tax type {code}, which does not exist")
                self._xplant("tax_category", "tax_code_unresolved", "tax_code", cat.id,
                             code if code == inactive else None, f"Tax category '{cat.name}' is {why}.")
        # Accounts (Xero's default chart numbering).
        self.x_accounts: dict[str, tuple] = {}
        for key, code, name, acc_type, acc_class, system in _XERO_ACCOUNTS:
            self.x_accounts[key] = (_uuid(x), code, name or p.tax_account, acc_type, acc_class, system)
        self.x_default_account = self.x_accounts[_XERO_DEFAULT_ACCOUNT][1]
        # Items: legacy ones, then one per mapped product (Code and Name are unique in Xero).
        catalog_ts = self.company_start_ts + 30 * _DAY
        self.x_items: dict[str, list] = {}  # product id -> [ItemID, Code, Name, account key, created, product]
        self.x_item_list: list[list] = []

        def new_item(name: str, account_key: str, product: _Product | None, created: int) -> list:
            item = [_uuid(x), name.upper().translate(_XERO_ITEM_CODE)[:30], name, account_key, created, product]
            self.x_item_list.append(item)
            return item

        legacy = {name: new_item(name, acct, None, self.x_created_ts) for name, acct in _LEGACY_ITEMS}
        unmapped = set(x.sample(_UNMAPPABLE, 2)) if self.plant_on else set()
        for prod in self.products:
            if prod.name not in unmapped:
                self.x_items[prod.id] = new_item(prod.name, prod.account_key, prod,
                                                 min(_REF_TS, catalog_ts + x.randint(0, 400 * _DAY)))
        self.x_item_settings = {pid: {"item_id": it[0], "item_code": it[1],
                                      "account_code": self.x_accounts[it[3]][1]} for pid, it in self.x_items.items()}
        if self.plant_on:
            for prod in self.products:
                if prod.id not in self.x_items:
                    self._xplant("product", "product_unmapped", "item", prod.id, None,
                                 f"Product '{prod.name}' has no Xero item mapping; its synced lines carry no ItemCode "
                                 f"and account {self.x_default_account}.")
            for prod in self.extra_products:
                item = legacy[prod.name]
                self._xplant("product", "item_name_not_unique", "name", prod.id, item[0],
                             f"Product '{prod.name}' is unmapped and a Xero item named '{prod.name}' ({item[0]}, "
                             f"Code {item[1]}) already exists; creating its item would fail (names are unique).")
            mapped = [prod for prod in self.products if prod.id in self.x_items and prod.name != "Platform fee"]
            for prod in x.sample(mapped, 2):
                item = self.x_items[prod.id]
                expected = self.x_accounts[item[3]]
                item[3] = "other" if item[3] != "other" else "sales"
                other = self.x_accounts[item[3]]
                self._xplant("product", "item_account_differs", "account_code", prod.id, item[0],
                             f"Settings book '{prod.name}' to account {expected[1]} ({expected[2]}); Xero item "
                             f"{item[1]} uses {other[1]} ({other[2]}).")
        self.x_mapped = [it for it in self.x_item_list if it[5] is not None]
        # Contacts: every linked Sequence customer, and twins of the never-linked ones.
        self.xc: dict[str, _XContact] = {}
        self.x_names: set[str] = set()
        for cust in self.customers:
            if cust.role == "core":
                self._x_contact(cust, cust.created_ts + x.randint(60, 1800), linked=True)
            elif cust.role == "unlinked":
                self._x_contact(cust, cust.created_ts - x.randint(30 * _DAY, 300 * _DAY), linked=False)
        self.x_invoice_plants: dict[str, tuple[str, str | None, str]] = {}
        self.x_cn_plants: dict[str, str] = {}
        if not self.plant_on:
            return
        for cust in self.customers:
            if cust.role == "new":
                self._xplant("customer", "missing_in_app", None, cust.seq_id, None,
                             f"'{cust.name}' exists in Sequence only (no Xero link or twin).")
            elif cust.role == "unlinked":
                xc = self.xc[cust.seq_id]
                self._xplant("customer", "unlinked_candidate", None, cust.seq_id, xc.id,
                             f"'{cust.name}' matches Xero contact {xc.id} by name and email but has no Xero "
                             f"integration id.")
        live = [c for c in self.core if c.archived_ts is None]
        victims = iter(x.sample(live, min(len(live), 5 * self.scale)))
        for field in ("name", "billing_email", "billing_address.line1", "billing_address.city",
                      "billing_address.postal_code"):
            for _ in range(self.scale):
                cust = next(victims, None)
                if cust is not None:
                    self._x_plant_contact_field(cust, field)
        # Invoices: the QuickBooks kinds that exist in Xero (it has no memo or bill email on invoices, and a
        # contact's currency is only a default, so currency_differs cannot happen).
        order = [pl for pl in plans if pl.plant is None]
        x.shuffle(order)
        s = self.scale

        def issued(pl: _InvoicePlan) -> bool:
            return pl.status in _ISSUED

        def taxable_line(pl: _InvoicePlan) -> bool:
            return any(self._tax_for(pl.cust, prod.category)[1] > 0 for prod, *_ in pl.lines)

        table: list[tuple[str, str | None, str, int, Callable[[_InvoicePlan], bool]]] = [
            ("stripe_link_ignored", "payment_status", "stripe", 2 * s,
             lambda pl: issued(pl) and not pl.paid and pl.provider == "STRIPE"),
            ("status_differs", "status", "seq_void", 2 * s, lambda pl: pl.status == "VOIDED"),
            ("status_differs", "status", "app_void", 2 * s, lambda pl: issued(pl) and not pl.paid),
            ("status_differs", "payment_status", "app_paid", 2 * s,
             lambda pl: issued(pl) and not pl.paid and pl.provider != "STRIPE"),
            ("status_differs", "payment_status", "seq_paid", 2 * s,
             lambda pl: issued(pl) and pl.paid and pl.provider != "STRIPE"),
            ("missing_in_app", None, "missing", 2 * s, issued),
            ("unlinked_candidate", None, "unlinked", 2 * s, issued),
            ("field_differs", "invoice_date", "invoice_date", s, lambda pl: issued(pl) and pl.acct != pl.issue),
            ("field_differs", "line.tax_code", "line.tax_code", s, lambda pl: issued(pl) and taxable_line(pl)),
            ("field_differs", "line.item", "line.item", s,
             lambda pl: issued(pl) and any(prod.id in self.x_items for prod, *_ in pl.lines)),
            ("field_differs", "due_date", "due_date", s, issued),
            ("field_differs", "number", "number", s, issued),
            ("field_differs", "line.description", "line.description", s, issued),
            ("field_differs", "line.quantity", "line.quantity", s, issued),
            ("field_differs", "line.rate", "line.rate", s, issued),
        ]
        for kind, field, variant, count, eligible in table:
            picked = 0
            for plan in order:
                if picked == count:
                    break
                if plan.id not in self.x_invoice_plants and eligible(plan):
                    self.x_invoice_plants[plan.id] = (kind, field, variant)
                    picked += 1
        credited = [pl for pl in plans if pl.credit_note in _ISSUED]
        x.shuffle(credited)
        slots = ["missing"] * s + ["number"] * s + ["line.rate"] * s
        for plan, variant in zip(credited, slots, strict=False):
            self.x_cn_plants[plan.id] = variant

    def _x_contact(self, cust: _Customer, created: int, linked: bool) -> _XContact:
        addr = cust.address
        pobox: dict[str, Any] = {"AddressType": "POBOX", "AddressLine1": addr["line1"]}
        if "line2" in addr:
            pobox["AddressLine2"] = addr["line2"]
        pobox["City"] = addr["town"]
        pobox["Region"] = addr.get("state", "")
        pobox["PostalCode"] = addr["postcode"]
        pobox["Country"] = addr["country"]  # Sequence writes the alpha-2 code (Xero's Country is free text)
        created = min(created, _REF_TS)
        xc = _XContact(_uuid(self.xrng), cust, linked, cust.name, cust.primary_email, pobox, dict(pobox),
                       created, self._x_recent(created))
        xc.street["AddressType"] = "STREET"
        self.x_names.add(cust.name)
        self.xc[cust.seq_id] = xc
        return xc

    def _x_plant_contact_field(self, cust: _Customer, field: str) -> None:
        x, xc = self.xrng, self.xc[cust.seq_id]
        addr = xc.pobox
        if field == "name":
            short = cust.name.rsplit(" ", 1)[0]
            xc.name = short if short not in self.x_names else f"{short} (old)"
            self.x_names.add(xc.name)
            seq_value, app_value = cust.name, xc.name
        elif field == "billing_email":
            local = "accounts" if not cust.primary_email.startswith("accounts@") else "finance"
            xc.email = f"{local}@{cust.primary_email.split('@', 1)[1]}"
            seq_value, app_value = cust.primary_email, xc.email
        elif field == "billing_address.line1":
            old = addr["AddressLine1"]
            addr["AddressLine1"] = old.replace(old.split(" ")[0], str(x.randint(241, 999)), 1) \
                if cust.country in _STREET_NUMBER_FIRST else f"{old.rsplit(' ', 1)[0]} {x.randint(241, 999)}"
            seq_value, app_value = cust.address["line1"], addr["AddressLine1"]
        elif field == "billing_address.city":
            addr["City"] = x.choice([t for t, _, _ in _PLACES[cust.country] if t != cust.address["town"]])
            seq_value, app_value = cust.address["town"], addr["City"]
        else:
            new = cust.address["postcode"]
            while new == cust.address["postcode"]:
                new = self._on_xrng(self._address, cust.country)["postcode"]
            addr["PostalCode"] = new
            seq_value, app_value = cust.address["postcode"], new
        self._xplant("customer", "field_differs", field, cust.seq_id, xc.id,
                     f"Sequence '{seq_value}' vs Xero '{app_value}'.")

    def _x_begin(self, plan: _InvoicePlan) -> _XDoc | None:
        """Ids of the Xero twin of an invoice (None when it was never synced), drawn before Sequence writes its
        lines so that they can carry the Xero line ids."""
        if plan.status == "DRAFT":
            return None
        plant = self.x_invoice_plants.get(plan.id)
        variant = plant[2] if plant else None
        if variant == "missing":
            self._xplant("invoice", "missing_in_app", None, plan.id, None,
                         f"{plan.status} invoice {plan.number} was never synced to Xero.")
            return None
        x = self.xrng
        doc = _XDoc(_uuid(x), [_uuid(x) for _ in plan.lines], variant != "unlinked",
                    min(_REF_TS, plan.final_ts + x.randint(20, 600)), variant)
        return doc

    def _x_lines(self, seq_lines: list) -> list[list]:
        """[Sequence line id, description, qty, rate, item or None, account code, TaxType, percent] per line."""
        out = []
        for (record, prod, qty, rate, title, tax, *_rest, group) in seq_lines:
            item = self.x_items.get(prod.id)
            account = self.x_accounts[item[3]][1] if item else self.x_default_account
            out.append([record["id"], f"{group[5]}: {title}", qty, rate, item, account, self.x_tax_by_code[tax[0]],
                        tax[1]])
        return out

    def _x_bend_line(self, lines: list[list], variant: str, line_ids: list[str]) -> str:
        x = self.xrng
        if variant == "line.tax_code":
            choices = [i for i, line in enumerate(lines) if line[7] > 0]
        elif variant == "line.item":
            choices = [i for i, line in enumerate(lines) if line[4] is not None]
        else:
            choices = list(range(len(lines)))
        n = x.choice(choices)
        line = lines[n]
        where = f"line {n + 1} (Sequence line {line[0]}, Xero LineItemID {line_ids[n]})"
        if variant == "line.description":
            expected = line[1]
            line[1] = line[1].split(": ", 1)[1]
            return f"{where}: Sequence expects '{expected}', Xero has '{line[1]}'."
        if variant == "line.quantity":
            line[2] = line[2] + 1
            return f"{where}: quantity Sequence {_plain(line[2] - 1)} vs Xero {_plain(line[2])}."
        if variant == "line.rate":
            old = line[3]
            step = Decimal(1).scaleb(old.as_tuple().exponent)
            line[3] = max((old * Decimal("1.1")).quantize(step, ROUND_HALF_UP), old + step)
            return f"{where}: rate Sequence {_rate_text(old)} vs Xero {_rate_text(line[3])}."
        if variant == "line.tax_code":
            old = line[6]
            line[6], line[7] = self.x_tax[self.p.zero_code], _ZERO
            return f"{where}: tax type expected {old} vs Xero {line[6]}."
        old_item = line[4]
        line[4] = x.choice([it for it in self.x_mapped if it is not old_item])
        line[5] = self.x_accounts[line[4][3]][1]
        return f"{where}: item expected {old_item[1]} ({old_item[2]}) vs Xero {line[4][1]} ({line[4][2]})."

    def _x_document(self, kind: str, doc_id: str, number: str | None, xc: _XContact, day: int, due: int | None,
                    currency: str, lines: list[list], line_ids: list[str], status: str, create_ts: int,
                    update_ts: int, reference: str | None) -> tuple[dict, Decimal, Decimal]:
        """An ACCREC invoice or ACCRECCREDIT credit note as Xero returns it; totals from its own lines."""
        items = []
        subtotal = total_tax = _ZERO
        for (_sid, description, qty, rate, item, account, tax_type, percent), line_id in zip(lines, line_ids,
                                                                                            strict=True):
            amount = _money(qty * rate)
            tax = _money(amount * percent / _HUNDRED) if percent else _ZERO
            subtotal += amount
            total_tax += tax
            line: dict[str, Any] = {"LineItemID": line_id, "Description": description, "Quantity": float(qty),
                                    "UnitAmount": float(rate)}
            if item is not None:
                line["ItemCode"] = item[1]
                line["Item"] = {"ItemID": item[0], "Name": item[2], "Code": item[1]}
            line["AccountCode"] = account
            line["TaxType"] = tax_type
            line["TaxAmount"] = float(tax)
            line["LineAmount"] = float(amount)
            line["Tracking"] = []
            items.append(line)
        total = subtotal + total_tax
        rate, _fx = self._x_rate(currency, day)
        date_ms, date_text = self._x_day(day)
        updated_ms, updated_text = self._x_ts(update_ts)
        record: dict[str, Any] = {"Type": kind}
        record["InvoiceID" if kind == "ACCREC" else "CreditNoteID"] = doc_id
        if number:
            record["InvoiceNumber" if kind == "ACCREC" else "CreditNoteNumber"] = number
        record["Reference"] = reference or ""
        record["Contact"] = {"ContactID": xc.id, "Name": xc.name}
        record["DateString"] = date_text
        record["Date"] = date_ms
        if due is not None:
            due_ms, due_text = self._x_day(due)
            record["DueDateString"] = due_text
            record["DueDate"] = due_ms
        record["Status"] = status
        record["LineAmountTypes"] = "Exclusive"  # Sequence prices are net of tax
        record["LineItems"] = items
        record["SubTotal"] = float(subtotal)
        record["TotalTax"] = float(total_tax)
        record["Total"] = float(total)
        record["CurrencyCode"] = currency
        record["CurrencyRate"] = float(rate)
        record["SentToContact"] = False  # Sequence emails its own invoices; Xero must not send them again
        record["HasAttachments"] = False
        record["UpdatedDateUTC"] = updated_ms
        record["UpdatedDateUTCString"] = updated_text
        return record, total, rate

    def _x_emit_invoice(self, plan: _InvoicePlan, seq_lines: list, doc: _XDoc) -> None:
        x, xc, variant = self.xrng, self.xc[plan.cust.seq_id], doc.variant
        lines = self._x_lines(seq_lines)
        detail = ""
        if variant is not None and variant.startswith("line."):
            detail = self._x_bend_line(lines, variant, doc.line_ids)
        day = plan.issue if self.p.invoice_date == "issue" else plan.acct
        due, number = plan.due, plan.number
        if variant == "invoice_date":
            day = plan.acct if self.p.invoice_date == "issue" else plan.issue
            detail = (f"settings say invoice date = {self.p.invoice_date} date "
                      f"({self.clock.date(plan.issue if self.p.invoice_date == 'issue' else plan.acct)}); "
                      f"Xero Date {self.clock.date(day)} is the other date.")
        elif variant == "due_date":
            due += 14
            detail = f"dueDate {self.clock.date(plan.due)} vs Xero DueDate {self.clock.date(due)}."
        elif variant == "number":
            number = f"{plan.number}-1"
            detail = f"invoiceNumber {plan.number} vs Xero InvoiceNumber {number}."
        voided = (plan.status == "VOIDED" and variant != "seq_void") or variant == "app_void"
        paid = not voided and ((plan.paid and variant != "seq_paid") or variant in ("app_paid", "stripe"))
        update_ts = doc.create_ts
        paid_day = pay_ts = None
        if paid:
            paid_day = plan.paid_day if plan.paid_day is not None else plan.issue + x.randint(1, _REF_DAY - plan.issue)
            pay_ts = min(_REF_TS, max(_day_start(paid_day) + 8 * 3600 + x.randint(0, 9 * 3600), doc.create_ts + 60))
            update_ts = pay_ts
        elif voided:
            update_ts = max(update_ts, min(_REF_TS, plan.event_ts + x.randint(10, 600)))
        status = "VOIDED" if voided else "PAID" if paid else "AUTHORISED"
        record, total, rate = self._x_document("ACCREC", doc.id, number, xc, day, due, plan.currency, lines,
                                               doc.line_ids, status, doc.create_ts, update_ts, plan.po)
        self._x_settle(record, total, rate, xc, due, paid_day, pay_ts, voided)
        self._w("xero", "invoices")(record)
        if variant is None:
            return
        kind, field, _ = self.x_invoice_plants[plan.id]
        if variant == "seq_void":
            detail = f"Sequence VOIDED; Xero invoice {doc.id} is still AUTHORISED."
        elif variant == "app_void":
            detail = f"Xero invoice {doc.id} is VOIDED; Sequence is {plan.status} and UNPAID."
        elif variant == "app_paid":
            detail = (f"Xero invoice {doc.id} is PAID (AmountDue 0); Sequence is UNPAID (payment link provider: "
                      f"{plan.provider or 'none'}) -> mark paid in Sequence.")
        elif variant == "seq_paid":
            detail = f"Sequence is PAID; Xero invoice {doc.id} is AUTHORISED with no payment."
        elif variant == "stripe":
            detail = (f"Xero invoice {doc.id} is PAID, but the Sequence invoice has a Stripe payment link: Sequence "
                      f"ignores Xero payment status, so no paid write may be planned.")
        elif variant == "unlinked":
            detail = (f"Xero invoice {doc.id} has InvoiceNumber {plan.number} and the linked contact, but the Sequence "
                      f"invoice has no Xero linkedServices entry.")
        self._xplant("invoice", kind, field, plan.id, doc.id, detail)

    def _x_settle(self, record: dict, total: Decimal, rate: Decimal, xc: _XContact, due: int,
                  paid_day: int | None, pay_ts: int | None, voided: bool) -> None:
        """Payments, amounts due and the contact's balance of one invoice (one payment settles it in full)."""
        payments = []
        if paid_day is not None:
            payment_id = _uuid(self.xrng)
            date_ms, _ = self._x_day(paid_day)
            reference = f"{self.p.payment_ref}-{self.xrng.randint(10000, 99999)}"
            payments.append({"PaymentID": payment_id, "Date": date_ms, "Amount": float(total),
                             "Reference": reference, "CurrencyRate": float(rate), "HasAccount": False,
                             "HasValidationErrors": False})
            self.x_payments.append((payment_id, record["InvoiceID"], record.get("InvoiceNumber"), xc,
                                    record["CurrencyCode"], paid_day, pay_ts, total, rate, reference))
        due_amount = _ZERO if (voided or paid_day is not None) else total
        paid_amount = total if paid_day is not None else _ZERO
        record["Payments"] = payments
        record["CreditNotes"] = []
        record["Prepayments"] = []
        record["Overpayments"] = []
        record["AmountDue"] = float(due_amount)
        record["AmountPaid"] = float(paid_amount)
        record["AmountCredited"] = 0.0
        record["IsDiscounted"] = False
        if paid_day is not None:
            record["FullyPaidOnDate"] = self._x_day(paid_day)[0]
        if due_amount:
            base = _money(due_amount / rate)
            xc.outstanding += base
            if due < _REF_DAY:
                xc.overdue += base

    def _x_begin_credit_note(self, plan: _InvoicePlan, cn_id: str, number: str | None, status: str, n_lines: int,
                             created_ts: int) -> _XDoc | None:
        if status == "DRAFT":
            return None
        if self.x_cn_plants.get(plan.id) == "missing":
            self._xplant("credit_note", "missing_in_app", None, cn_id, None,
                         f"{status} credit note {number} was never synced to Xero.")
            return None
        x = self.xrng
        return _XDoc(_uuid(x), [_uuid(x) for _ in range(n_lines)], True,
                     min(_REF_TS, created_ts + x.randint(20, 600)), self.x_cn_plants.get(plan.id))

    def _x_emit_credit_note(self, plan: _InvoicePlan, record: dict, cn_lines: list, doc: _XDoc) -> None:
        xc = self.xc[plan.cust.seq_id]
        lines = []
        for (_rec, prod, qty, rate, title, tax, _net, _tax, g, _index) in cn_lines:
            item = self.x_items.get(prod.id)
            account = self.x_accounts[item[3]][1] if item else self.x_default_account
            lines.append([None, f"{g[1]}: {title}", qty, rate, item, account, self.x_tax_by_code[tax[0]], tax[1]])
        number = record["creditNoteNumber"]
        detail = ""
        if doc.variant == "number":
            number = f"{number}-1"
            detail = f"creditNoteNumber {record['creditNoteNumber']} vs Xero CreditNoteNumber {number}."
        elif doc.variant == "line.rate":
            old = lines[0][3]
            step = Decimal(1).scaleb(old.as_tuple().exponent)
            lines[0][3] = max((old * Decimal("1.1")).quantize(step, ROUND_HALF_UP), old + step)
            detail = (f"line 1 (Xero LineItemID {doc.line_ids[0]}): rate Sequence {_rate_text(old)} vs Xero "
                      f"{_rate_text(lines[0][3])}.")
        day = date.fromisoformat(record["issueDate"]).toordinal()
        xrecord, total, rate = self._x_document("ACCRECCREDIT", doc.id, number, xc, day, None, plan.currency, lines,
                                                doc.line_ids, "AUTHORISED", doc.create_ts, doc.create_ts,
                                                record["memo"])
        xrecord["RemainingCredit"] = float(total)
        xrecord["Allocations"] = []
        xrecord["Payments"] = []
        xrecord["AppliedAmount"] = 0.0
        xc.outstanding -= _money(total / rate)
        self._w("xero", "credit-notes")(xrecord)
        if doc.variant:
            self._xplant("credit_note", "field_differs", doc.variant, record["id"], doc.id, detail)

    def _x_finish(self) -> None:
        """Xero-only and broken records, then payments, contacts and reference data; numbers the Xero plants."""
        x = self.xrng
        write = self._w("xero", "invoices")
        extra_contacts: list[_XContact] = []
        if self.plant_on:
            live = [c for c in self.core if c.archived_ts is None] or self.core
            # Invoices created in Xero by hand: missing in Sequence (a deleted draft is no discrepancy).
            for n in range(2 * self.scale + 1):
                cust = x.choice(live)
                xc = self.xc[cust.seq_id]
                day = _REF_DAY - x.randint(1, 30)
                ts = min(_REF_TS, _day_start(day) + 8 * 3600 + x.randint(0, 9 * 3600))
                self.x_doc_number += 1
                number = f"INV-{self.x_doc_number:04d}"
                lines = self._x_only_lines(cust)
                doc_id = _uuid(x)
                deleted = n == 2 * self.scale
                record, total, rate = self._x_document(
                    "ACCREC", doc_id, number, xc, day, day + 30, cust.currency, lines,
                    [_uuid(x) for _ in lines], "DELETED" if deleted else "AUTHORISED", ts, ts, None)
                self._x_settle(record, total, rate, xc, day + 30, None, None, deleted)
                write(record)
                if not deleted:
                    self._xplant("invoice", "missing_in_sequence", None, None, doc_id,
                                 f"Xero invoice {doc_id} ({number}) for '{xc.name}' was created in Xero and has no "
                                 f"Sequence counterpart.")
            for broken in ("InvoiceID", "Total"):
                cust = x.choice(live)
                xc = self.xc[cust.seq_id]
                day = _REF_DAY - x.randint(1, 30)
                ts = min(_REF_TS, _day_start(day) + 8 * 3600 + x.randint(0, 9 * 3600))
                self.x_doc_number += 1
                number = f"INV-{self.x_doc_number:04d}"
                lines = self._x_only_lines(cust)
                doc_id = _uuid(x)
                record, total, _rate = self._x_document(
                    "ACCREC", doc_id, number, xc, day, day + 30, cust.currency, lines,
                    [_uuid(x) for _ in lines], "AUTHORISED", ts, ts, None)
                balances = xc.outstanding, xc.overdue
                self._x_settle(record, total, _rate, xc, day + 30, None, None, False)
                xc.outstanding, xc.overdue = balances  # broken records do not count
                if broken == "InvoiceID":
                    del record["InvoiceID"]
                    self._xplant("invoice", "invalid", "InvoiceID", None, None,
                                 f"Xero invoice InvoiceNumber={number} has no InvoiceID.")
                else:
                    whole, cents = f"{total:.2f}".split(".")
                    record["Total"] = f"{int(whole):,}".replace(",", ".") + "," + cents
                    self._xplant("invoice", "invalid", "Total", None, doc_id,
                                 f"Xero invoice {doc_id} ({number}) has Total '{record['Total']}' "
                                 f"(a non-numeric string).")
                write(record)
            # Contacts only Xero has: complete ones can be imported into Sequence, incomplete ones cannot.
            variants = [("importable", None)] * (2 * self.scale)
            for field in ("billing_email", "billing_address.country", "billing_address.postal_code"):
                variants += [("not_importable", field)] * self.scale
            for kind, field in variants:
                cust = self._on_xrng(self._new_customer, "xero_only",
                                     _REF_TS - x.randint(100 * _DAY, 900 * _DAY))
                xc = self._x_contact(cust, cust.created_ts, linked=False)
                del self.xc[cust.seq_id]  # not a Sequence customer
                if field == "billing_email":
                    xc.email = None
                    why = "has no email address"
                elif field == "billing_address.country":
                    xc.pobox["Country"] = pycountry.countries.get(alpha_2=cust.country).name
                    why = f"has country '{xc.pobox['Country']}', not an alpha-2 code"
                elif field == "billing_address.postal_code":
                    del xc.pobox["PostalCode"]
                    why = "has no postal code"
                else:
                    why = "has an email address and a complete address (line 1, city, postal code, alpha-2 country)"
                extra_contacts.append(xc)
                self._xplant("customer", kind, field, None, xc.id,
                             f"Xero contact '{xc.name}' is not in Sequence and {why}.")
        self._x_emit_payments()
        self._x_emit_contacts(list(self.xc.values()) + extra_contacts)
        self._x_emit_reference_data()
        for d in self.x_discrepancies:
            d["id"] = f"{self.slug}-{len(self.discrepancies) + 1:04d}"
            self.discrepancies.append(d)

    def _x_only_lines(self, cust: _Customer) -> list[list]:
        x = self.xrng
        lines = []
        for item in x.sample(self.x_mapped, x.choice((1, 2))):
            prod = item[5]
            tax = self._tax_for(cust, prod.category)
            rate = (Decimal(x.randint(50, 900)) * self._price_factor(cust.currency)).quantize(_CENT)
            lines.append([None, f"{item[2]} - ad hoc", Decimal(x.randint(1, 10)), rate, item,
                          self.x_accounts[item[3]][1], self.x_tax_by_code[tax[0]], tax[1]])
        return lines

    def _x_emit_payments(self) -> None:
        write = self._w("xero", "payments")
        bank = self.x_accounts["bank"]
        for payment_id, invoice_id, number, xc, currency, day, ts, amount, rate, reference in self.x_payments:
            date_ms, _ = self._x_day(day)
            updated_ms, updated_text = self._x_ts(ts)
            write({"PaymentID": payment_id, "Date": date_ms, "BankAmount": float(_money(amount / rate)),
                   "Amount": float(amount), "Reference": reference, "CurrencyRate": float(rate),
                   "PaymentType": "ACCRECPAYMENT", "Status": "AUTHORISED", "UpdatedDateUTC": updated_ms,
                   "UpdatedDateUTCString": updated_text, "HasAccount": True, "IsReconciled": self.xrng.random() < 0.7,
                   "Account": {"AccountID": bank[0], "Code": bank[1]},
                   "Invoice": {"Type": "ACCREC", "InvoiceID": invoice_id, "InvoiceNumber": number,
                               "Contact": {"ContactID": xc.id, "Name": xc.name}, "CurrencyCode": currency,
                               "Payments": [], "CreditNotes": [], "Prepayments": [], "Overpayments": [],
                               "HasErrors": False, "IsDiscounted": False, "LineItems": []},
                   "HasValidationErrors": False})

    def _x_emit_contacts(self, contacts: list[_XContact]) -> None:
        write = self._w("xero", "contacts")
        fallback, exempt = self.x_tax[self.p.fallback_code], self.x_tax[self.p.exempt_code]
        reverse = self.x_tax[self.p.reverse_charge_code]
        for xc in sorted(contacts, key=lambda c: (c.created_ts, c.id)):
            cust = xc.cust
            updated_ms, _ = self._x_ts(xc.updated_ts)
            record: dict[str, Any] = {"ContactID": xc.id}
            if xc.linked:
                record["ContactNumber"] = cust.seq_id  # Sequence's customer id, Xero's external key
            record["ContactStatus"] = "ARCHIVED" if cust.archived_ts is not None else "ACTIVE"
            record["Name"] = xc.name
            if xc.email:
                record["EmailAddress"] = xc.email
            if cust.tax_id:
                record["TaxNumber"] = cust.tax_id
            record["AccountsReceivableTaxType"] = {"TAXED": fallback, "TAX_EXEMPT": exempt}.get(cust.tax_status,
                                                                                                 reverse)
            record["Addresses"] = [xc.pobox, xc.street]
            record["Phones"] = []
            record["ContactPersons"] = []
            record["IsSupplier"] = False
            record["IsCustomer"] = True
            record["DefaultCurrency"] = cust.currency
            record["Balances"] = {"AccountsReceivable": {"Outstanding": float(xc.outstanding),
                                                         "Overdue": float(xc.overdue)},
                                  "AccountsPayable": {"Outstanding": 0.0, "Overdue": 0.0}}
            if cust.domain:
                record["Website"] = f"https://{cust.domain}/"
            record["UpdatedDateUTC"] = updated_ms
            record["HasAttachments"] = False
            write(record)

    def _x_emit_reference_data(self) -> None:
        p, x = self.p, self.xrng
        write = self._w("xero", "items")
        fallback = self.x_tax[p.fallback_code]
        for item_id, code, name, account_key, created, prod in self.x_item_list:
            tax = fallback
            if prod is not None and prod.category is not None:
                tax = self.x_tax_map[prod.category.id]
            price = float(_money(prod.low * self._price_factor(self.home))) if prod is not None else 0.0
            write({"ItemID": item_id, "Code": code, "Name": name, "Description": name, "IsSold": True,
                   "IsPurchased": False, "SalesDetails": {"UnitPrice": price,
                                                          "AccountCode": self.x_accounts[account_key][1],
                                                          "TaxType": tax},
                   "PurchaseDetails": {}, "IsTrackedAsInventory": False,
                   "UpdatedDateUTC": self._x_ts(self._x_recent(created + 120))[0]})
        write = self._w("xero", "accounts")
        stamp = self._x_ts(self._x_recent(self.x_created_ts))[0]
        for item_id, code, name, acc_type, acc_class, system in self.x_accounts.values():
            record: dict[str, Any] = {"AccountID": item_id, "Code": code, "Name": name, "Status": "ACTIVE",
                                      "Type": acc_type}
            if acc_type == "BANK":
                record["BankAccountNumber"] = f"{x.randint(10_000_000, 99_999_999)}"
                record["BankAccountType"] = "BANK"
                record["CurrencyCode"] = self.home
            record["TaxType"] = fallback if acc_class == "REVENUE" else "NONE"
            record["EnablePaymentsToAccount"] = acc_type == "BANK"
            record["ShowInExpenseClaims"] = False
            record["Class"] = acc_class
            if system:
                record["SystemAccount"] = system
            record["ReportingCode"] = {"ASSET": "ASS", "LIABILITY": "LIA", "REVENUE": "REV"}[acc_class]
            record["HasAttachments"] = False
            record["UpdatedDateUTC"] = stamp
            record["AddToWatchlist"] = False
            write(record)
        write = self._w("xero", "tax-rates")
        for record in self.x_tax_records:
            write(record)
        write = self._w("xero", "currencies")
        for code in [self.home] + [c for c, _ in p.fx_base]:
            write({"Code": code, "Description": _XERO_CURRENCY_NAMES[code]})
        version, timezone_name, _ = _XERO_ORG[p.country]
        line1, city, postcode, _state = p.address
        fiscal_start = list(_MONTHS).index(p.fiscal_month)
        end_month = 12 if fiscal_start == 1 else fiscal_start - 1
        self._w("xero", "organisation")({
            "OrganisationID": self.x_org_id, "APIKey": "", "Name": p.company, "LegalName": p.legal_name,
            "PaysTax": True, "Version": version, "OrganisationType": "COMPANY", "BaseCurrency": self.home,
            "CountryCode": p.country, "IsDemoCompany": False, "OrganisationStatus": "ACTIVE",
            "FinancialYearEndDay": calendar.monthrange(2025, end_month)[1], "FinancialYearEndMonth": end_month,
            "SalesTaxBasis": "ACCRUALS", "SalesTaxPeriod": "QUARTERLY1", "DefaultSalesTax": "Tax Exclusive",
            "DefaultPurchasesTax": "Tax Exclusive", "CreatedDateUTC": self._x_ts(self.x_created_ts)[0],
            "Timezone": timezone_name, "OrganisationEntityType": "COMPANY",
            "ShortCode": "!" + "".join(x.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(5)),
            "Class": "PREMIUM", "Edition": "BUSINESS", "LineOfBusiness": "Software Publishers",
            "Addresses": [{"AddressType": "STREET", "AddressLine1": line1, "City": city, "PostalCode": postcode,
                           "Country": p.country}],
            "Phones": [], "ExternalLinks": [{"LinkType": "Website",
                                             "Url": f"https://{p.merchant_email.split('@')[1]}/"}],
            "PaymentTerms": {"Sales": {"Day": 30, "Type": "DAYSAFTERBILLDATE"}}})

    def x_settings(self) -> dict:
        """The Xero connection's own settings (over the tenant's): its tax types, items and default account."""
        return {
            "tax_codes": dict(self.x_tax_map),
            "fallback_tax_code": self.x_tax[self.p.fallback_code],
            "exempt_tax_code": self.x_tax[self.p.exempt_code],
            "reverse_charge_tax_code": self.x_tax[self.p.reverse_charge_code],
            "items": self.x_item_settings,
            "default_account_code": self.x_default_account,
        }

    # ---- settings ---------------------------------------------------------------------------------------

    def settings(self) -> dict:
        apps = ({"xero": self.x_settings()} if self.xero_on else {}) | self.crm_settings
        return {
            "merchant_email": self.p.merchant_email,
            "invoice_date": self.p.invoice_date,
            "tax_codes": dict(self.tax_code_map),
            "fallback_tax_code": self.fallback.id,
            "exempt_tax_code": self.exempt.id,
            "reverse_charge_tax_code": self.reverse_charge.id,
            "items": self.item_settings,
            "home_currency": self.home,
            "multi_currency": self.p.multi_currency,
        } | ({"apps": apps} if apps else {})


# ----------------------------------------------------------------------------------------------------------
# CRMs: HubSpot, Salesforce and Attio (see the module docstring, "CRMs")
# ----------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _CrmPerson:
    first: str
    last: str
    email: str | None
    title: str
    created_ts: int


@dataclass(slots=True)
class _CrmDeal:
    name: str
    stage: str  # won | lost | open | early (a neutral stage each CRM names its own way)
    amount: Decimal
    currency: str
    close_day: int
    created_ts: int
    updated_ts: int


@dataclass(slots=True)
class _CrmCompany:
    """One CRM company: the twin of a Sequence customer (linked or not) or a company only the CRM has."""

    cust: _Customer | None
    name: str
    domain: str | None
    line1: str | None
    line2: str | None
    city: str | None
    state: str | None
    postcode: str | None
    country: str | None
    currency: str
    linked: bool  # the CRM's sequence_customer_id field holds the Sequence customer id
    billing_status: str | None
    mrr: Decimal | None
    created_ts: int
    updated_ts: int
    people: list[_CrmPerson]
    deals: list[_CrmDeal]


_HUBSPOT_STAGES = {"won": "closedwon", "lost": "closedlost", "open": "contractsent", "early": "qualifiedtobuy"}
_SALESFORCE_STAGES = {"won": ("Closed Won", 100, "Closed"), "lost": ("Closed Lost", 0, "Omitted"),
                      "open": ("Negotiation/Review", 90, "Commit"), "early": ("Qualification", 20, "Pipeline")}
_ATTIO_STAGES = {"won": "Won 🎉", "lost": "Lost", "open": "In Progress", "early": "Lead"}
_JOB_TITLES = ("Head of Finance", "CFO", "Operations Manager", "CTO", "Procurement Lead", "VP Engineering")
_DEAL_KINDS = {"won": ("Annual subscription", "Platform licence", "Pilot"), "lost": ("Annual subscription", "Pilot"),
               "open": ("Renewal", "Expansion"), "early": ("Expansion", "Additional seats")}
_SF_API = "/services/data/v62.0/sobjects"


class _Crm:
    """One CRM of one tenant, drawn from its own stream (seed, tenant, app), read-only on the tenant's truth."""

    def __init__(self, tenant: _Tenant, app: str, plans: list[_InvoicePlan]) -> None:
        self.t, self.app = tenant, app
        self.rng = _Random(f"ledgerlink-demo/{tenant.seed}/{tenant.slug}/{app}")
        self.label = CRM_LABELS[app]
        self.fields = CRM_SYNC_FIELDS[app]
        self.plants: list[Discrepancy] = []
        # MRR as write-back computes it from Sequence: the net total of the customer's issued (FINAL/SENT)
        # invoices whose issue date is within the 30 days before the reference date.
        self.mrr: dict[str, Decimal] = {}
        for plan in plans:
            if plan.status in _ISSUED and plan.issue is not None and plan.issue >= _REF_DAY - 30:
                net = sum((_money(qty * rate) for _prod, qty, rate, _title in plan.lines), _ZERO)
                self.mrr[plan.cust.seq_id] = self.mrr.get(plan.cust.seq_id, _ZERO) + net

    def _plant(self, kind: str, field: str | None, sequence_id: str | None, app_id: str | None,
               detail: str) -> None:
        self.plants.append({"id": "", "tenant": self.t.slug, "app": self.app, "entity": "customer", "kind": kind,
                            "field": field, "sequence_id": sequence_id, "app_id": app_id, "detail": detail})

    def _on_rng(self, fn: Callable[..., Any], *args: Any) -> Any:
        t = self.t
        saved, t.rng = t.rng, self.rng
        try:
            return fn(*args)
        finally:
            t.rng = saved

    def _recent(self, after: int) -> int:
        return min(_REF_TS, max(after, _REF_TS - self.rng.randint(0, WINDOW_DAYS * _DAY)))

    def _person(self, email: str | None, created: int) -> _CrmPerson:
        r = self.rng
        return _CrmPerson(r.choice(_FIRST), r.choice(_LAST), email, r.choice(_JOB_TITLES), min(created, _REF_TS))

    def _amount(self, currency: str) -> Decimal:
        return (Decimal(self.rng.randint(24, 1200) * 50) * self.t._price_factor(currency)).quantize(_CENT)

    def _deal(self, company_name: str, stage: str, currency: str, close_day: int, created: int) -> _CrmDeal:
        r = self.rng
        created = min(created, _REF_TS)
        closed = stage in ("won", "lost")
        updated = min(_REF_TS, _day_start(close_day) + r.randint(8, 18) * 3600) if closed else self._recent(created)
        return _CrmDeal(f"{company_name} - {r.choice(_DEAL_KINDS[stage])}", stage, self._amount(currency), currency,
                        close_day, created, max(created, updated))

    # ---- the truth, then the plants -----------------------------------------------------------------------

    def build(self) -> list[_CrmCompany]:
        t, r = self.t, self.rng
        customers = sorted((c for c in t.customers if c.role in ("core", "new", "unlinked")),
                           key=lambda c: (c.created_ts, c.seq_id))
        plant: dict[str, tuple[str, str | None]] = {}  # seq id -> (kind, field)
        if t.plant_on:
            live = [c for c in customers if c.archived_ts is None]
            kinds: list[tuple[str, str | None]] = [("missing_in_app", None)] * (2 * t.scale)
            for field in ("name", "billing_address.line1", "billing_address.city", "billing_address.postal_code",
                          "billing_status", "mrr"):
                kinds += [("field_differs", field)] * t.scale
            kinds += [("unlinked_candidate", None)] * t.scale
            for cust, kind in zip(r.sample(live, min(len(live), len(kinds))), kinds, strict=False):
                plant[cust.seq_id] = kind
        companies: list[_CrmCompany] = []
        for cust in customers:
            kind, field = plant.get(cust.seq_id, (None, None))
            if kind == "missing_in_app":
                self._plant("missing_in_app", None, cust.seq_id, None,
                            f"Sequence customer '{cust.name}' has no {self.label} company.")
                continue
            company = self._twin(cust)
            if kind == "unlinked_candidate":
                company.linked = False
                company.billing_status = company.mrr = None
            elif kind == "field_differs":
                self._bend(company, field)
            companies.append(company)
            if kind is not None:  # described once the company has its CRM id (run)
                self._pending.append((len(companies) - 1, kind, field))
        self._prospects(companies)
        return companies

    def _twin(self, cust: _Customer) -> _CrmCompany:
        r = self.rng
        addr = cust.address
        created = cust.created_ts - r.randint(10, 120) * _DAY - r.randint(0, _DAY)
        domain = cust.primary_email.split("@", 1)[1]
        people = [self._person(contact["email"], created + r.randint(0, 20) * _DAY) for contact in cust.contacts
                  if contact["billingPreference"] != "NONE"]
        if r.random() < 0.6:  # the champion who signed: sales knows them, billing does not
            person = self._person(None, created)
            person.email = f"{_ascii_slug(person.first)}.{_ascii_slug(person.last)}@{domain}"
            people.append(person)
        # The won deal made them a customer: created after the company, closed before the customer existed.
        deal_created = created + r.randint(0, 5) * _DAY
        won = r.randint(deal_created // _DAY + _EPOCH_ORDINAL + 1, cust.created_ts // _DAY + _EPOCH_ORDINAL)
        deals = [self._deal(cust.name, "won", cust.currency, won, deal_created)]
        if r.random() < 0.12:
            lost = won - r.randint(90, 300)
            deals.insert(0, self._deal(cust.name, "lost", cust.currency, lost, _day_start(lost - r.randint(20, 60))))
        if r.random() < 0.35:  # renewal or upsell in the pipeline
            deals.append(self._deal(cust.name, r.choice(("open", "early")), cust.currency,
                                    _REF_DAY + r.randint(5, 120), _REF_TS - r.randint(1, 50) * _DAY))
        status = "archived" if cust.archived_ts is not None else "active"
        return _CrmCompany(cust, cust.name, cust.domain, addr["line1"], addr.get("line2"), addr["town"],
                           addr.get("state"), addr["postcode"], addr["country"], cust.currency, True, status,
                           self.mrr.get(cust.seq_id, _ZERO), created, self._recent(cust.created_ts), people, deals)

    def _bend(self, company: _CrmCompany, field: str | None) -> None:
        r = self.rng
        cust = company.cust
        assert cust is not None
        if field == "name":
            company.name = cust.name.rsplit(" ", 1)[0]  # the legal suffix dropped, as sales people type it
        elif field == "billing_address.line1":
            old = company.line1 or ""
            company.line1 = old.replace(old.split(" ")[0], str(r.randint(241, 999)), 1) \
                if cust.country in _STREET_NUMBER_FIRST else f"{old.rsplit(' ', 1)[0]} {r.randint(241, 999)}"
        elif field == "billing_address.city":
            company.city = r.choice([t for t, _, _ in _PLACES[cust.country] if t != cust.address["town"]])
        elif field == "billing_address.postal_code":
            new = cust.address["postcode"]
            while new == cust.address["postcode"]:
                new = self._on_rng(self.t._address, cust.country)["postcode"]
            company.postcode = new
        elif field == "billing_status":
            company.billing_status = "archived" if company.billing_status == "active" else "active"
        else:  # mrr: last month's figure, never refreshed
            old = company.mrr or _ZERO
            company.mrr = _money(old * Decimal(r.choice(("0.8", "0.9", "1.25")))) if old else \
                Decimal(r.randint(5, 80) * 100).quantize(_CENT)

    def _prospects(self, companies: list[_CrmCompany]) -> None:
        """Companies only the CRM has: prospects (no won deal: not a discrepancy), and closed-won ones."""
        t, r = self.t, self.rng
        taken = {c.name for c in t.customers}
        count = max(2, len(companies) // 8)
        variants: list[tuple[str | None, str | None]] = [(None, None)] * count
        if t.plant_on:
            variants += [("importable", None)] * (2 * t.scale)
            variants += [("not_importable", f) for f in ("billing_email", "billing_address.postal_code")
                         for _ in range(t.scale)]
        countries, weights = zip(*t.p.customer_countries, strict=True)
        for kind, field in variants:
            country = r.choices(countries, weights)[0]
            base = f"{r.choice(_NAME_A)} {r.choice(_NAME_B)}"
            name = f"{base} {r.choice(_LEGAL_SUFFIX[country])}"
            while name in taken:
                name = f"{base} {r.randint(2, 999)} {r.choice(_LEGAL_SUFFIX[country])}"
            taken.add(name)
            domain = f"{_ascii_slug(base)}{r.randint(2, 99)}.example"
            addr = self._on_rng(t._address, country)
            currency = _COUNTRY_CURRENCY[country] if t.p.multi_currency else t.home
            created = _REF_TS - r.randint(20, 400) * _DAY - r.randint(0, _DAY)
            people = [self._person(None, created) for _ in range(r.choice((1, 1, 2)))]
            for person in people:
                person.email = f"{_ascii_slug(person.first)}.{_ascii_slug(person.last)}@{domain}"
            if kind is None:
                deals = [self._deal(name, r.choice(("open", "early", "lost")), currency,
                                    _REF_DAY + r.randint(-60, 120), created + r.randint(1, 15) * _DAY)
                         for _ in range(r.choice((1, 1, 2)))]
                for deal in deals:
                    if deal.stage == "lost":
                        deal.close_day = min(deal.close_day, _REF_DAY - 1)
            else:
                won = _REF_DAY - r.randint(1, 20)
                deals = [self._deal(name, "won", currency, won,
                                    min(max(created, _day_start(won - 30)), _day_start(won)))]
            company = _CrmCompany(None, name, domain, addr["line1"], addr.get("line2"), addr["town"],
                                  addr.get("state"), addr["postcode"], country, currency, False, None, None,
                                  created, self._recent(created), people, deals)
            if field == "billing_email":
                for person in people:
                    person.email = None
            elif field == "billing_address.postal_code":
                company.postcode = None
            companies.append(company)
            if kind is not None:
                self._pending.append((len(companies) - 1, kind, field))

    def _describe(self, company: _CrmCompany, app_id: str, kind: str, field: str | None) -> None:
        cust, label = company.cust, self.label
        if kind == "importable":
            self._plant(kind, None, None, app_id,
                        f"{label} company '{company.name}' has a closed-won deal, is not a Sequence customer yet, "
                        f"and has a contact email and a complete address (line 1, city, postal code, country).")
        elif kind == "not_importable":
            why = "no contact with an email" if field == "billing_email" else "no postal code"
            self._plant(kind, field, None, app_id,
                        f"{label} company '{company.name}' has a closed-won deal and is not a Sequence customer, "
                        f"but has {why}.")
        elif kind == "unlinked_candidate":
            assert cust is not None
            self._plant(kind, None, cust.seq_id, app_id,
                        f"'{cust.name}' matches {label} company {app_id} by name and domain, but the company's "
                        f"{self.fields['sequence_customer_id']} is empty.")
        else:
            assert cust is not None
            seq_value, app_value = {
                "name": (cust.name, company.name),
                "billing_address.line1": (cust.address["line1"], company.line1),
                "billing_address.city": (cust.address["town"], company.city),
                "billing_address.postal_code": (cust.address["postcode"], company.postcode),
                "billing_status": ("archived" if cust.archived_ts is not None else "active",
                                   company.billing_status),
                "mrr": (str(self.mrr.get(cust.seq_id, _ZERO)), str(company.mrr)),
            }[field or ""]
            what = self.fields.get(field or "", field)
            self._plant(kind, field, cust.seq_id, app_id,
                        f"Sequence '{seq_value}' vs {label} {what} '{app_value}'.")

    def run(self) -> list[Discrepancy]:
        self._pending: list[tuple[int, str, str | None]] = []  # (company index, kind, field)
        companies = self.build()
        ids = getattr(self, f"_{self.app}")(companies)
        for index, kind, field in self._pending:
            self._describe(companies[index], ids[index], kind, field)
        # Plants in company order, after the Sequence customers missing from the CRM.
        return self.plants

    # ---- HubSpot ------------------------------------------------------------------------------------------

    def _hs_time(self, ts: int) -> str:
        return self.t.clock.seq(ts)[:-1] + ".000Z"

    def _hubspot(self, companies: list[_CrmCompany]) -> list[str]:
        t, r, w = self.t, self.rng, self.t._w
        f = self.fields
        next_id = {kind: r.randint(base, base * 3) for kind, base in
                   (("companies", 5_000_000_000), ("contacts", 20_000_000_000), ("deals", 9_000_000_000))}

        def new_id(kind: str) -> str:
            next_id[kind] += r.randint(1, 40)
            return str(next_id[kind])

        write_props = w("hubspot", "properties")
        group = "companyinformation"
        write_props({"objectType": "companies", "name": f["sequence_customer_id"], "label": "Sequence customer id",
                     "type": "string", "fieldType": "text", "groupName": group, "hasUniqueValue": True,
                     "description": "The Sequence customer this company bills as (kept by Ledgerlink)."})
        write_props({"objectType": "companies", "name": f["billing_status"], "label": "Sequence billing status",
                     "type": "enumeration", "fieldType": "select", "groupName": group,
                     "options": [{"label": "Active", "value": "active"}, {"label": "Archived", "value": "archived"}]})
        write_props({"objectType": "companies", "name": f["mrr"], "label": "Sequence MRR", "type": "number",
                     "fieldType": "number", "groupName": group,
                     "description": "Net billed in the last 30 days, in the customer's billing currency."})
        ids, contacts, deals, links = [], [], [], []
        write = w("hubspot", "companies")
        for company in companies:
            cid = new_id("companies")
            ids.append(cid)
            props: dict[str, Any] = {"name": company.name}
            if company.domain:
                props["domain"] = company.domain
                props["website"] = f"https://{company.domain}/"
            if company.line1:
                props["address"] = company.line1
            if company.city:
                props["city"] = company.city
            if company.state:
                props["state"] = company.state
            if company.postcode:
                props["zip"] = company.postcode
            if company.country:
                props["country"] = pycountry.countries.get(alpha_2=company.country).name
            props["lifecyclestage"] = "customer" if company.cust is not None else \
                "opportunity" if any(d.stage != "lost" for d in company.deals) else "lead"
            if company.linked:
                props[f["sequence_customer_id"]] = company.cust.seq_id  # type: ignore[union-attr]
                props[f["billing_status"]] = company.billing_status
                props[f["mrr"]] = _plain(company.mrr or _ZERO)
            props["createdate"] = self._hs_time(company.created_ts)
            props["hs_lastmodifieddate"] = self._hs_time(company.updated_ts)
            props["hs_object_id"] = cid
            write({"id": cid, "properties": props, "createdAt": props["createdate"],
                   "updatedAt": props["hs_lastmodifieddate"], "archived": False})
            for person in company.people:
                contacts.append((person, cid))
            for deal in company.deals:
                deals.append((deal, cid))
        write = w("hubspot", "contacts")
        for person, cid in sorted(contacts, key=lambda pc: pc[0].created_ts):
            pid = new_id("contacts")
            props = {"firstname": person.first, "lastname": person.last}
            if person.email:
                props["email"] = person.email
            props |= {"jobtitle": person.title, "associatedcompanyid": cid,
                      "createdate": self._hs_time(person.created_ts)}
            modified = self._recent(person.created_ts)
            # Contacts keep lastmodifieddate current and hs_lastmodifieddate at creation (HubSpot's quirk).
            props |= {"lastmodifieddate": self._hs_time(modified),
                      "hs_lastmodifieddate": props["createdate"], "hs_object_id": pid}
            write({"id": pid, "properties": props, "createdAt": props["createdate"],
                   "updatedAt": props["lastmodifieddate"], "archived": False})
        write = w("hubspot", "deals")
        for deal, cid in sorted(deals, key=lambda dc: dc[0].created_ts):
            did = new_id("deals")
            props = {"dealname": deal.name, "amount": _plain(deal.amount), "deal_currency_code": deal.currency,
                     "dealstage": _HUBSPOT_STAGES[deal.stage], "pipeline": "default",
                     "closedate": f"{t.clock.date(deal.close_day)}T00:00:00.000Z",
                     "createdate": self._hs_time(deal.created_ts),
                     "hs_lastmodifieddate": self._hs_time(deal.updated_ts), "hs_object_id": did}
            write({"id": did, "properties": props, "createdAt": props["createdate"],
                   "updatedAt": props["hs_lastmodifieddate"], "archived": False})
            links.append({"from": {"id": did}, "to": [{"toObjectId": cid, "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
                {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]}]})
        write = w("hubspot", "associations")
        for link in links:
            write(link)
        return ids

    # ---- Salesforce ---------------------------------------------------------------------------------------

    def _salesforce(self, companies: list[_CrmCompany]) -> list[str]:
        from connectors.sandbox.salesforce import format_datetime, make_id  # the emulator's own id scheme

        t, r, w, f = self.t, self.rng, self.t._w, self.fields
        user = make_id("005", 1)
        multi = t.p.multi_currency
        counters = {prefix: r.randint(1_000, 90_000) for prefix in ("001", "003", "006")}

        def new_id(prefix: str) -> str:
            counters[prefix] += r.randint(1, 9)
            return make_id(prefix, counters[prefix])

        def stamp(ts: int) -> str:
            return format_datetime(ts * 1000)

        def system(sobject: str, rid: str, created: int, updated: int) -> dict:
            return {"attributes": {"type": sobject, "url": f"{_SF_API}/{sobject}/{rid}"}, "Id": rid,
                    "IsDeleted": False, "OwnerId": user, "CreatedDate": stamp(created), "CreatedById": user,
                    "LastModifiedDate": stamp(updated), "LastModifiedById": user, "SystemModstamp": stamp(updated)}

        write = w("salesforce", "FieldDefinition")
        write({"sobject": "Account", "name": f["sequence_customer_id"], "type": "string", "externalId": True,
               "unique": True, "required": False})
        write({"sobject": "Account", "name": f["billing_status"], "type": "picklist", "externalId": False,
               "unique": False, "required": False})
        write({"sobject": "Account", "name": f["mrr"], "type": "currency", "externalId": False, "unique": False,
               "required": False})
        ids, contacts, deals = [], [], []
        write = w("salesforce", "Account")
        for company in companies:
            aid = new_id("001")
            ids.append(aid)
            record = system("Account", aid, company.created_ts, company.updated_ts)
            record["Name"] = company.name
            record["Type"] = "Customer" if company.cust is not None else "Prospect"
            if company.domain:
                record["Website"] = f"https://{company.domain}/"
            street = "\n".join(s for s in (company.line1, company.line2) if s) or None
            country = pycountry.countries.get(alpha_2=company.country).name if company.country else None
            parts = {"street": street, "city": company.city, "state": company.state,
                     "postalCode": company.postcode, "country": country}
            record |= {"BillingStreet": street, "BillingCity": company.city, "BillingState": company.state,
                       "BillingPostalCode": company.postcode, "BillingCountry": country, "BillingLatitude": None,
                       "BillingLongitude": None, "BillingGeocodeAccuracy": None,
                       "BillingAddress": {**parts, "latitude": None, "longitude": None, "geocodeAccuracy": None}}
            if multi:
                record["CurrencyIsoCode"] = company.currency
            record[f["sequence_customer_id"]] = company.cust.seq_id if company.linked else None  # type: ignore
            record[f["billing_status"]] = company.billing_status
            record[f["mrr"]] = float(company.mrr) if company.mrr is not None else None
            write(record)
            contacts += [(person, aid) for person in company.people]
            deals += [(deal, aid) for deal in company.deals]
        write = w("salesforce", "Contact")
        for person, aid in sorted(contacts, key=lambda pc: pc[0].created_ts):
            cid = new_id("003")
            record = system("Contact", cid, person.created_ts, self._recent(person.created_ts))
            record |= {"AccountId": aid, "FirstName": person.first, "LastName": person.last,
                       "Name": f"{person.first} {person.last}", "Email": person.email, "Title": person.title}
            write(record)
        write = w("salesforce", "Opportunity")
        for deal, aid in sorted(deals, key=lambda dc: dc[0].created_ts):
            oid = new_id("006")
            stage, probability, forecast = _SALESFORCE_STAGES[deal.stage]
            record = system("Opportunity", oid, deal.created_ts, deal.updated_ts)
            record |= {"AccountId": aid, "Name": deal.name, "StageName": stage, "Amount": float(deal.amount),
                       "CloseDate": t.clock.date(deal.close_day), "Probability": probability,
                       "IsClosed": deal.stage in ("won", "lost"), "IsWon": deal.stage == "won",
                       "ForecastCategoryName": forecast,
                       "Type": "Existing Business" if deal.name.endswith(("Renewal", "Expansion", "Additional seats"))
                       else "New Business"}
            if multi:
                record["CurrencyIsoCode"] = deal.currency
            write(record)
        return ids

    # ---- Attio --------------------------------------------------------------------------------------------

    def _attio(self, companies: list[_CrmCompany]) -> list[str]:
        from connectors.sandbox import attio  # the emulator's own ids, statuses and value shapes

        t, r, w, f = self.t, self.rng, self.t._w, self.fields
        definitions = [
            {"object": "companies", "api_slug": f["sequence_customer_id"], "title": "Sequence customer id",
             "type": "text", "is_unique": True},
            {"object": "companies", "api_slug": f["billing_status"], "title": "Sequence billing status",
             "type": "select", "options": ["active", "archived"]},
            {"object": "companies", "api_slug": f["mrr"], "title": "Sequence MRR", "type": "currency",
             "default_currency_code": t.home},
            {"object": "deals", "api_slug": "value", "title": "Deal value", "type": "currency",
             "default_currency_code": t.home},
            {"object": "deals", "api_slug": "close_date", "title": "Close date", "type": "date"},
        ]
        write = w("attio", "attributes")
        for definition in definitions:
            write(definition)
        ws = attio._Workspace(t.slug, {"attributes": definitions})
        member = {"type": "workspace-member", "id": _uuid(r)}
        parser = attio._Values(ws, member)

        def at(ts: int) -> str:
            return t.clock.seq(ts)[:-1] + f".{r.randint(0, 999_999):06d}000Z"

        # Per object: (slug, type, attribute) in the emulator's order; every record lists every attribute.
        columns = {slug: [(key, a.type, a) for key, a in ws.attributes[slug].items()] for slug in ws.attributes}
        created_by = {"referenced_actor_type": "workspace-member", "referenced_actor_id": member["id"]}

        def payloads(kind: str, attribute: Any, raw: Any) -> list[dict]:
            # The hot types built directly (same shapes as the emulator's parser, which does the rest).
            if kind in ("text", "date"):
                return [{"value": raw}]
            if kind == "record-reference":
                return [{"target_object": attribute.target, "target_record_id": v} for v in raw]
            if kind in ("select", "status"):
                return [{"option" if kind == "select" else "status": attribute.choices[raw]}]
            if kind == "currency":
                return [raw]
            return parser.parse(attribute, raw)

        def record(slug: str, rid: str, created: int, raw: dict[str, Any]) -> dict:
            created_at = at(created)
            values: dict[str, list] = {}
            for key, kind, attribute in columns[slug]:
                if key == "record_id":
                    found = [{"value": rid}]
                elif key == "created_at":
                    found = [{"value": created_at}]
                elif key == "created_by":
                    found = [created_by]
                elif raw.get(key) is None:
                    values[key] = []
                    continue
                else:
                    found = payloads(kind, attribute, raw[key])
                values[key] = [{"active_from": created_at, "active_until": None, "created_by_actor": member, **p,
                                "attribute_type": kind} for p in found]
            return {"id": {"workspace_id": ws.workspace_id, "object_id": ws.object_ids[slug], "record_id": rid},
                    "created_at": created_at, "web_url": f"https://app.attio.com/{t.slug}/{slug}/{rid}",
                    "values": values}

        ids, people, deals = [], [], []
        write = w("attio", "companies")
        for company in companies:
            rid = _uuid(r)
            ids.append(rid)
            location = None
            if company.line1 or company.city or company.country:
                location = {"line_1": company.line1, "line_2": company.line2, "line_3": None, "line_4": None,
                            "locality": company.city, "region": company.state, "postcode": company.postcode,
                            "country_code": company.country, "latitude": None, "longitude": None}
            raw: dict[str, Any] = {"name": company.name, "primary_location": location,
                                   "domains": [company.domain] if company.domain else None}
            if company.linked:
                raw[f["sequence_customer_id"]] = company.cust.seq_id  # type: ignore[union-attr]
                raw[f["billing_status"]] = company.billing_status
                raw[f["mrr"]] = {"currency_value": float(company.mrr or _ZERO), "currency_code": company.currency}
            write(record("companies", rid, company.created_ts, raw))
            people += [(person, rid) for person in company.people]
            deals += [(deal, rid) for deal in company.deals]
        write = w("attio", "people")
        people_of: dict[str, list[str]] = {}
        for person, company_id in sorted(people, key=lambda pc: pc[0].created_ts):
            pid = _uuid(r)
            people_of.setdefault(company_id, []).append(pid)
            write(record("people", pid, person.created_ts, {
                "name": {"first_name": person.first, "last_name": person.last},
                "email_addresses": [person.email] if person.email else None, "job_title": person.title,
                "company": [company_id]}))
        write = w("attio", "deals")
        for deal, company_id in sorted(deals, key=lambda dc: dc[0].created_ts):
            write(record("deals", _uuid(r), deal.created_ts, {
                "name": deal.name, "stage": _ATTIO_STAGES[deal.stage],
                "value": {"currency_value": float(deal.amount), "currency_code": deal.currency},
                "associated_company": [company_id], "associated_people": people_of.get(company_id, [])[:1] or None,
                "close_date": t.clock.date(deal.close_day)}))
        return ids

    def settings(self) -> dict:
        """The CRM connection's own settings: which company fields write-back keeps, where the link lives."""
        link_column = {"hubspot": f"properties__{self.fields['sequence_customer_id']}",
                       "salesforce": self.fields["sequence_customer_id"].lower().replace("__c", "_c"),
                       "attio": self.fields["sequence_customer_id"]}[self.app]
        out: dict[str, Any] = {"sync_fields": dict(self.fields),
                               "link_fields": {self.app: {"company": {"sequence": link_column}}},
                               # MRR is measured over the 30 days before this date (the data's own "today")
                               "mrr_as_of": REFERENCE_TIME.date().isoformat()}
        if self.app == "attio":  # Attio deals have no close date: the workspace's own attribute is mapped
            out["field_mappings"] = {"attio": {"deal": {"close_date": "close_date"}}}
        return out


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


_PARALLEL_FROM = 20_000  # below this many invoices, starting worker processes costs more than it saves


def _generate_tenant(job: tuple[str, int, int, int, bool, str, bool, tuple[str, ...]]
                     ) -> tuple[dict, list[Discrepancy], dict]:
    """One tenant's folder; a top-level function so worker processes can run it."""
    slug, profile_index, share, seed, discrepancies, out_dir, xero, crms = job
    tenant = _Tenant(slug, _PROFILES[profile_index], share, seed, discrepancies, Path(out_dir), xero, crms)
    tenant.run()
    return tenant.counts, tenant.discrepancies, tenant.settings()


def generate(out_dir: Path, *, invoices: int = 300, seed: int = 7, tenants: int = 3,
             discrepancies: bool = True, workers: int | None = None, xero: bool = True, hubspot: bool = True,
             salesforce: bool = True, attio: bool = True) -> Manifest:
    """Write a sandbox fixture set to `out_dir` and return its manifest (also written as manifest.json).

    `invoices` is the total number of Sequence invoices across all tenants. Same arguments, same bytes.
    With `discrepancies=False` both apps agree everywhere and the manifest lists nothing.
    `workers`: processes generating tenants side by side (default: one per CPU for large runs, else 1);
    it never changes the output, since every tenant has its own random stream and folder.
    `xero`: the UK and DE tenants also connect Xero (<tenant>/xero/, Xero links on their Sequence records,
    settings under "apps"."xero", Xero plants with app "xero"). Xero has its own random stream, so QuickBooks
    output is byte-identical either way, and Sequence output differs only by the appended Xero link entries.
    `hubspot`, `salesforce`, `attio`: the CRMs of CRM_TENANT_COUNTRIES (UK: HubSpot and Attio, US: Salesforce,
    DE: Attio) under <tenant>/<crm>/, settings under "apps"."<crm>", CRM plants with app "<crm>" numbered last.
    Each CRM has its own random stream and writes nothing outside its folder, so every other file is
    byte-identical with or without it (only manifest.json and settings.json gain its entries).
    """
    if invoices < 0 or tenants < 1:
        raise ValueError("invoices must be >= 0 and tenants >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous_output(out_dir)
    slugs = tenant_slugs(tenants)
    manifest: Manifest = {"seed": seed, "invoices": invoices, "reference_date": REFERENCE_TIME.isoformat(),
                          "tenants": slugs, "counts": {}, "discrepancies": []}
    wanted = {"hubspot": hubspot, "salesforce": salesforce, "attio": attio}
    jobs = [(slug, index % 3, invoices // tenants + (1 if index < invoices % tenants else 0), seed, discrepancies,
             str(out_dir), xero and _PROFILES[index % 3].country in XERO_TENANT_COUNTRIES,
             tuple(app for app in CRM_APPS
                   if wanted[app] and _PROFILES[index % 3].country in CRM_TENANT_COUNTRIES[app]))
            for index, slug in enumerate(slugs)]
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1) if invoices >= _PARALLEL_FROM else 1
    if workers > 1:
        # "spawn": safe even when the caller has threads (Dagster, web servers); results come back in job order.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_generate_tenant, jobs))
    else:
        results = [_generate_tenant(job) for job in jobs]
    settings: dict[str, dict] = {}
    for slug, (counts, planted, tenant_settings) in zip(slugs, results, strict=True):
        manifest["counts"][slug] = counts
        manifest["discrepancies"].extend(planted)
        settings[slug] = tenant_settings
    (out_dir / "settings.json").write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2) + b"\n")
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def _remove_previous_output(out_dir: Path) -> None:
    """Delete tenant folders an earlier run listed in its manifest (and nothing else), so no stale tenant stays."""
    previous = out_dir / "manifest.json"
    if not previous.exists():
        return
    try:
        old = orjson.loads(previous.read_bytes())
    except orjson.JSONDecodeError:
        return
    for slug in old.get("tenants", []):
        folder = out_dir / slug
        if isinstance(slug, str) and slug and "/" not in slug and folder.is_dir():
            shutil.rmtree(folder)


def main(argv: Seq[str] | None = None) -> int:
    """CLI: python -m connectors.sandbox.demo_data OUT [--invoices N] [--seed S] [--tenants T] [--clean]
    [--no-xero] [--no-crm | --no-hubspot --no-salesforce --no-attio]."""
    parser = argparse.ArgumentParser(prog="python -m connectors.sandbox.demo_data",
                                     description="Write deterministic Sequence, QuickBooks, Xero and CRM sandbox "
                                                 "fixtures.")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--invoices", type=int, default=300, help="Sequence invoices across all tenants")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--clean", action="store_true", help="plant no discrepancies (both apps agree)")
    parser.add_argument("--no-xero", action="store_true", help="QuickBooks only (no Xero for the UK/DE tenants)")
    parser.add_argument("--no-crm", action="store_true", help="no CRM at all (HubSpot, Salesforce, Attio)")
    for app in CRM_APPS:
        parser.add_argument(f"--no-{app}", action="store_true", help=f"no {CRM_LABELS[app]} fixtures")
    args = parser.parse_args(argv)
    crms = {app: not (args.no_crm or getattr(args, f"no_{app}")) for app in CRM_APPS}
    started = time.perf_counter()
    manifest = generate(args.out, invoices=args.invoices, seed=args.seed, tenants=args.tenants,
                        discrepancies=not args.clean, xero=not args.no_xero, **crms)
    elapsed = time.perf_counter() - started
    print(f"wrote {len(manifest['tenants'])} tenants ({', '.join(manifest['tenants'])}) to {args.out}: "
          f"{args.invoices} Sequence invoices, {len(manifest['discrepancies'])} planted discrepancies "
          f"in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
