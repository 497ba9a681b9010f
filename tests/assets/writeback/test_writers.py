"""The write-back's registry (assets/writeback/writers.py): every connectable app has a writer, the names it
keeps so that `ledgerlink apply` starts without crm.py agree with crm.py, and accounting apps plan in order."""

from assets.writeback import crm, writers
from assets.writeback.plan import QUICKBOOKS
from assets.writeback.xero import XERO
from connectors.registry import APPS


def test_every_app_has_its_writer_and_the_light_copies_agree_with_crm():
    assert (writers.CRMS, writers.CRM_LABELS) == (crm.CRMS, crm.LABELS)
    assert set(APPS) <= set(writers.WRITERS)
    assert {writers.writer_of(app).app for app in crm.CRMS} == {"crm"}
    assert writers.writer_of("an app nobody knows") is writers.SEQUENCE_WRITER


def test_accounting_apps_plan_in_order_and_name_themselves():
    planning = [w.app for w in writers.writers() if w.plan is not None]
    assert planning == [QUICKBOOKS, XERO]  # QuickBooks' import and mark paid stand over Xero's
    assert [writers.label_of(app) for app in (QUICKBOOKS, XERO, "hubspot", "sequence")] == \
        ["QuickBooks", "Xero", "HubSpot", "Sequence"]
