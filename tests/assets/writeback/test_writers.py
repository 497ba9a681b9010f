"""The write-back's registry (assets/writeback/writers.py) against the apps a connection can name
(connectors.registry.APPS): every connectable app has its own writer and no writer is for an app that cannot be
connected, the CRMs written are the CRMs reconciled, every app is named in its own words, and accounting apps
plan in order."""

from assets.partitions import APPS as PARTITIONED_APPS
from assets.reconcile.assets import APP_SPECS, RECONCILED_APPS
from assets.reconcile.crm import CRM_SPECS
from assets.writeback import crm, writers
from assets.writeback.plan import QUICKBOOKS
from assets.writeback.xero import XERO
from connectors.registry import APPS


def test_every_connectable_app_has_its_own_writer_and_no_writer_is_for_another_app():
    assert set(writers.WRITERS) == set(APPS)
    # each app gets its own writer, never the fallback for unknown apps (Sequence's) unless it is Sequence
    for app in APPS:
        assert writers.writer_of(app) is writers.WRITERS[app], app
        assert (writers.writer_of(app) is writers.SEQUENCE_WRITER) == (app == writers.SEQUENCE), app
    assert writers.writer_of("an app nobody knows") is writers.SEQUENCE_WRITER
    # a writer of one app says which (the CRMs share one, named "crm")
    assert {app: w.app for app, w in writers.WRITERS.items() if app not in writers.CRMS} == \
        {app: app for app in APPS if app not in writers.CRMS}
    # every app reconciliation proposes writes for, and every app that is extracted, can be written
    assert set(RECONCILED_APPS) <= set(writers.WRITERS) and set(PARTITIONED_APPS) <= set(writers.WRITERS)


def test_the_crms_written_are_the_crms_reconciled_and_every_app_has_its_label():
    assert set(writers.CRMS) == set(CRM_SPECS) == {app for app, w in writers.WRITERS.items() if w.app == "crm"}
    assert crm.CRMS == writers.CRMS and set(writers.CRM_LABELS) == set(writers.CRMS)
    # the accounting apps that plan are exactly the ones reconciliation compares documents with
    assert {w.app for w in writers.writers() if w.plan is not None} == set(APP_SPECS)
    labels = {app: writers.label_of(app) for app in APPS}
    assert all(label and label != app for app, label in labels.items()), labels  # words, not the app's id
    assert len(set(labels.values())) == len(APPS), labels


def test_accounting_apps_plan_in_order_and_name_themselves():
    planning = [w.app for w in writers.writers() if w.plan is not None]
    assert planning == [QUICKBOOKS, XERO]  # QuickBooks' import and mark paid stand over Xero's
    assert [writers.label_of(app) for app in (QUICKBOOKS, XERO, "hubspot", "sequence")] == \
        ["QuickBooks", "Xero", "HubSpot", "Sequence"]
