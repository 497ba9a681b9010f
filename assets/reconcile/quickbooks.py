"""QuickBooks Online's part of reconciliation: the seed's invoice field table, the customer fields, and how
Sequence names a QuickBooks line ("<QuickBooks invoice Id>-<Line.Id>"). Everything else is generic."""

from __future__ import annotations

import polars as pl

from assets.reconcile.mismatches import AppSpec, FieldSpec

ADDRESS = (("line1", "address line 1", "text"), ("line2", "address line 2", "text"), ("city", "city", "text"),
           ("region", "region", "text"), ("postal_code", "postal code", "text_ci"), ("country", "country", "code"))

CUSTOMER_FIELDS = (
    FieldSpec("name", "name", "name", "name"),
    FieldSpec("billing_email", "billing email", "email", "email", compare="text_ci"),
    *(FieldSpec(f"billing_address.{part}", f"billing {label}", part, part, compare=compare)
      for part, label, compare in ADDRESS),
)

# The seed's "Invoice fields" table, in its order (Sequence side: what Sequence expects QuickBooks to hold).
DOCUMENT_FIELDS = (
    FieldSpec("customer", "customer", "expected_customer_id", "customer_id", compare="code",
              when=pl.col("expected_customer_id").is_not_null()),
    FieldSpec("billing_email", "billing email", "expected_billing_email", "billing_email", compare="text_ci",
              note=pl.col("billing_email_note")),
    *(FieldSpec(f"billing_address.{part}", f"billing {label}", f"billing_{part}", f"billing_{part}",
                compare=compare) for part, label, compare in ADDRESS),
    FieldSpec("invoice_date", "invoice date", "expected_date", "app_date", compare="date",
              note=pl.concat_str([pl.lit(" (the settings use the "), pl.col("invoice_date").fill_null("issue"),
                                  pl.lit(" date)")])),
    FieldSpec("due_date", "due date", "due_date", "due_date", compare="date"),
    FieldSpec("number", "number", "number", "number"),
    FieldSpec("memo", "memo", "memo", "memo"),
    FieldSpec("currency", "currency", "currency", "currency", compare="code", kind="currency_differs",
              action="review"),
)

LINE_FIELDS = (
    FieldSpec("line.item", "item", "expected_item", "product_id", compare="code",
              when=pl.col("expected_item").is_not_null()),
    FieldSpec("line.description", "description", "expected_description", "description"),
    FieldSpec("line.tax_code", "tax code", "expected_tax_code", "tax_code", compare="code",
              when=pl.col("expected_tax_code").is_not_null()),
    FieldSpec("line.quantity", "quantity", "quantity", "quantity", compare="decimal"),
    FieldSpec("line.rate", "rate", "rate", "rate", compare="decimal"),
)


def line_link_key() -> pl.Expr:
    """Sequence stores a synced line's twin as "<QuickBooks document Id>-<Line.Id>"."""
    return pl.concat_str([pl.col("document_id"), pl.lit("-"), pl.col("id")])


QUICKBOOKS = AppSpec(app="quickbooks", customer_fields=CUSTOMER_FIELDS, document_fields=DOCUMENT_FIELDS,
                     line_fields=LINE_FIELDS, line_link_key=line_link_key)
