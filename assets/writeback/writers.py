"""The write-back's apps, one AppWriter each: what plan.build_plan and apply.Applier loop over instead of naming
apps. Adding an accounting app is a connector, an emulator, a mapping and a writer here: its rows come from
plan.py's general planners (customers, the later-mapping rule, mark paid, import, link, $refs, dependencies,
validation) said in its words (a plan.AppWords), plus what only it has (its payloads, item and document rules);
its transport is its `send`.

- plan: (inputs, tenants, invoice, reference) -> the app's rows (an accounting app; build_plan then keeps the
  cross-app rules: an invoice is marked paid in Sequence once, a company two apps would import is imported once).
- extend: (inputs, plan, tenants, invoice) -> the plan with the app's rows added (the CRMs: they read what the
  accounting apps import).
- send: (applier, rows of one wave and connection) -> records an outcome for every row (Applier._finish).
- describe: (applier, row, connection) -> what apply would send (dry run).
- record_items: (applier) -> the items write-back created become the products' mappings in the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assets.writeback import xero
from assets.writeback.plan import QUICKBOOKS
from assets.writeback.quickbooks import quickbooks_plan

if TYPE_CHECKING:
    from assets.writeback.apply import Applier, _Row
    from connectors.registry import Connection

SEQUENCE = "sequence"
# the CRMs write-back writes to, named here (not in crm.py) so that apply starts without loading crm.py
CRMS = ("hubspot", "salesforce", "attio")
CRM_LABELS = {"hubspot": "HubSpot", "salesforce": "Salesforce", "attio": "Attio"}


def _crm() -> Any:
    # crm.py reads assets/reconcile/crm.py, which loads dlt: `ledgerlink apply` loads it only for CRM rows
    from assets.writeback import crm

    return crm


@dataclass(frozen=True)
class AppWriter:
    app: str
    label: str  # how errors name the app
    send: Callable[[Applier, list[_Row]], None]
    describe: Callable[[Applier, _Row, Connection], str]
    plan: Callable[..., Any] | None = None
    extend: Callable[..., Any] | None = None
    record_items: Callable[[Applier], None] | None = None
    contact: str = "customer"  # what the app calls a customer
    possessive: str = ""  # "QuickBooks'"


def _xero_plan(inputs: Any, *, tenants: Any = None, invoice: str | None = None, reference: Any = None) -> Any:
    return xero.build_xero_plan(inputs, inputs.xero_settings, tenants=tenants, invoice=invoice, reference=reference)


QUICKBOOKS_WRITER = AppWriter(
    QUICKBOOKS, "QuickBooks", send=lambda applier, rows: applier._quickbooks(rows),
    describe=lambda applier, row, connection: applier._describe_quickbooks(row, connection),
    plan=quickbooks_plan, record_items=lambda applier: applier._record_quickbooks_items(),
    contact="QuickBooks customer", possessive="QuickBooks'")
XERO_WRITER = AppWriter(
    xero.XERO, "Xero", send=lambda applier, rows: xero.send_xero(applier, rows),
    describe=lambda applier, row, connection: xero.describe(row, connection.base_url),
    plan=_xero_plan, record_items=xero.record_items, contact="Xero contact", possessive="Xero's")
CRM_WRITER = AppWriter(
    "crm", "CRM", send=lambda applier, rows: _crm().send_crm(applier, rows),
    describe=lambda applier, row, connection: _crm().describe(row, connection.base_url),
    extend=lambda inputs, plan, **kw: _crm().crm_plan(inputs, plan, **kw))
SEQUENCE_WRITER = AppWriter(
    SEQUENCE, "Sequence", send=lambda applier, rows: applier._sequence_rows(rows),
    describe=lambda applier, row, connection: applier._describe_sequence(row, connection))

# app -> its writer, in planning order (QuickBooks' import and mark paid stand over Xero's)
WRITERS: dict[str, AppWriter] = {QUICKBOOKS: QUICKBOOKS_WRITER, xero.XERO: XERO_WRITER,
                                 **{app: CRM_WRITER for app in CRMS}, SEQUENCE: SEQUENCE_WRITER}


def writers() -> list[AppWriter]:
    """Every writer once, in planning order."""
    return list(dict.fromkeys(WRITERS.values()))


def writer_of(app: str) -> AppWriter:
    """The writer of a row's app (a Sequence write's: Sequence's)."""
    return WRITERS.get(app, SEQUENCE_WRITER)


def label_of(app: str) -> str:
    """How errors name an app."""
    return CRM_LABELS.get(app) or writer_of(app).label
