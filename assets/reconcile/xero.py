"""Xero's part of reconciliation: which of the seed's invoice fields Xero holds, and how Sequence names a Xero
line (its LineItemID). Xero invoices carry no memo, billing email or billing address (those are the
contact's, compared on the customer), so those rows of the seed's table do not apply to them."""

from __future__ import annotations

import polars as pl

from assets.reconcile.mismatches import AppSpec, FieldSpec
from assets.reconcile.quickbooks import CUSTOMER_FIELDS, LINE_FIELDS

DOCUMENT_FIELDS = (
    FieldSpec("customer", "contact", "expected_customer_id", "customer_id", compare="code",
              when=pl.col("expected_customer_id").is_not_null()),
    FieldSpec("invoice_date", "invoice date", "expected_date", "app_date", compare="date",
              note=pl.concat_str([pl.lit(" (the settings use the "), pl.col("invoice_date").fill_null("issue"),
                                  pl.lit(" date)")])),
    FieldSpec("due_date", "due date", "due_date", "due_date", compare="date"),
    FieldSpec("number", "number", "number", "number"),
    FieldSpec("currency", "currency", "currency", "currency", compare="code", kind="currency_differs",
              action="review"),
)


def line_link_key() -> pl.Expr:
    """Sequence stores a synced line's twin as the Xero LineItemID."""
    return pl.col("id")


XERO = AppSpec(app="xero", customer_fields=CUSTOMER_FIELDS, document_fields=DOCUMENT_FIELDS,
               line_fields=LINE_FIELDS, line_link_key=line_link_key)
