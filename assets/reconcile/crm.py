"""CRMs' part of reconciliation: Sequence customers against CRM companies (HubSpot, Salesforce, Attio).

Generic over CRMs like mismatches.find_mismatches is over accounting apps: a `CrmSpec` says which company fields
are compared (FieldSpecs read by mismatches.field_mismatches) and how a CRM's own field name reads in
unified.custom_fields. One call of `find_crm_mismatches` per CRM; rows go to the same reconcile.mismatches
table, entity "customer", app "<crm>".

Links (reconcile.links, entity customer): what Sequence stores (a CRM integration id on the customer, method
integration_id) and what the CRM stores (the company's own Sequence customer id field, named per tenant in
settings link_fields.<crm>.company.sequence and mapped into unified.companies.links, method app_field).

Rows:
- missing_in_app / create_in_app: an active, non-DRAFT Sequence customer no CRM company is linked to and none
  matches (DRAFT customers are not approved yet; archived ones need no new company);
- importable / import_to_sequence: an unlinked CRM company with a closed-won deal (deals.company_id or
  deal_companies) that nobody matches: a Sequence customer is created from it. not_importable / review when it
  lacks what an import needs (a contact with an email; address line 1, city, postal code, alpha-2 country:
  rules.import_failures). Unlinked companies without a won deal give no row: CRMs hold prospects;
- field_differs / update_in_app: linked pairs differing in name, address parts (line1, line2, city, region,
  postal code, country) and domain (only when the Sequence side has a `domain` column; unified.customers has
  none yet), and in the synced fields below;
- unlinked_candidate / link (or review when ambiguous): an unlinked Sequence customer and an unlinked company
  with the same legal name, else the same domain (the company's domain = the customer's email domain): proposed,
  never linked here;
- link_conflict and dangling links (missing_in_app / review) as for the accounting apps (mismatches._pairs).

Synced fields: a CRM connection's settings "sync_fields" = {"<value>": "<CRM field>"} say which company fields
Sequence keeps up to date (write-back, issue 6 item 5), e.g. {"sequence_customer_id": "sequence_customer_id",
"billing_status": "sequence_billing_status", "mrr": "sequence_mrr"} (Salesforce: "Sequence_MRR__c"). The CRM
field is found in unified.custom_fields (entity company) under its dlt snake_case name ("sequence_mrr_c"). A
difference is a field_differs row with field "<value>" (the manifest's words), action update_in_app. Values
(`sync_values`, shared with write-back so both say the same):
- sequence_customer_id  the Sequence customer id;
- billing_status        "active", or "archived" when Sequence archived the customer;
- mrr                   the net total of the customer's issued (OPEN or PAID) Sequence invoices whose issue date
                        is in the 30 days up to the as-of date (both ends included): settings "mrr_as_of"
                        (ISO date) when given, else the data's own "now", the latest date Sequence shows on the
                        tenant's invoices and credit notes (an issue date or an updated_at): wall-clock "today"
                        would make every run on older data disagree, but a quiet tenant's window then ends early,
                        so fixtures and production should set mrr_as_of (the demo computes MRR against its
                        reference date).
                        0 when none; compared as decimals at 2 digits.
Unknown keys in sync_fields are ignored (nothing to compare them with).

Simplifications: a company's email for an import is its first contact's email (by contact id); domain matching
uses the billing email's domain, so a customer billed at a free-mail address may meet a candidate it should not
(it is only proposed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import polars as pl
from dlt.common.normalizers.naming.snake_case import NamingConvention

from assets.reconcile.links import MatchRule, app_label, match_candidates
from assets.reconcile.mismatches import (
    OPEN_STATUSES,
    FieldSpec,
    _customer_subject,
    _pairs,
    _rows,
    customers_to_create,
    empty_mismatches,
    field_mismatches,
    settle,
)
from assets.reconcile.quickbooks import ADDRESS  # the address parts and how each compares
from assets.reconcile.rules import DRAFT, SEQUENCE, clean_text, folded_text, import_failures, legal_name_key

COMPANY = "company"  # the entity word of companies in unified.custom_fields
MRR_DAYS = 30
MRR_SCALE = 2
SYNC_VALUES = ("sequence_customer_id", "billing_status", "mrr")
_NAMING = NamingConvention()

COMPANY_FIELDS = (
    FieldSpec("name", "name", "name", "name"),
    *(FieldSpec(f"billing_address.{part}", f"billing {label}", part, part, compare=compare)
      for part, label, compare in ADDRESS),
)
DOMAIN_FIELD = FieldSpec("domain", "domain", "domain", "domain", compare="text_ci")
SYNC_FIELDS = (
    FieldSpec("sequence_customer_id", "Sequence customer id", "_sync.sequence_customer_id",
              "_sync.sequence_customer_id", compare="code", when=pl.col("_has.sequence_customer_id")),
    FieldSpec("billing_status", "billing status", "_sync.billing_status", "_sync.billing_status", compare="text_ci",
              when=pl.col("_has.billing_status")),
    FieldSpec("mrr", "MRR", "_sync.mrr", "_sync.mrr", compare="decimal", scale=MRR_SCALE, when=pl.col("_has.mrr")),
)
# Ways an unlinked customer and company may be the same, in order.
COMPANY_MATCHES = (
    MatchRule("legal name", legal_name_key(pl.col("name")), legal_name_key(pl.col("name"))),
    MatchRule("domain", folded_text(pl.col("_domain")), folded_text(pl.col("domain"))),
)


def snake_case(name: str) -> str:
    """A CRM field's name as the extraction names its raw column (dlt snake_case): "Sequence_MRR__c" ->
    "sequence_mrr_c"; HubSpot properties and Attio slugs are already so."""
    return _NAMING.normalize_identifier(name)


@dataclass(frozen=True)
class CrmSpec:
    """The per-CRM part of CRM reconciliation."""

    app: str
    company_fields: tuple[FieldSpec, ...] = COMPANY_FIELDS
    sync_fields: tuple[FieldSpec, ...] = SYNC_FIELDS
    custom_field_name: Callable[[str], str] = field(default=snake_case)  # CRM field -> custom_fields.field


# HubSpot companies keep the street in `address`; `address2` is seldom filled (the demo data and the emulator keep
# no line 2), so a second address line Sequence has would be reported on nearly every company: not compared there.
HUBSPOT = CrmSpec("hubspot", company_fields=tuple(f for f in COMPANY_FIELDS if f.field != "billing_address.line2"))
SALESFORCE = CrmSpec("salesforce")
ATTIO = CrmSpec("attio")
CRM_SPECS = {spec.app: spec for spec in (HUBSPOT, SALESFORCE, ATTIO)}


# ----------------------------------------------------------------------------------------------------------
# What Sequence says the synced fields hold
# ----------------------------------------------------------------------------------------------------------


def _as_of(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def sync_values(unified: Mapping[str, pl.LazyFrame], settings: Mapping[str, Mapping[str, Any]]) -> pl.LazyFrame:
    """What Sequence says each synced field of a customer's CRM company holds: tenant, sequence_id,
    sequence_customer_id, billing_status, mrr (Decimal), mrr_from, mrr_to (the period), for every Sequence
    customer of the tenants in `settings` (tenant -> settings; "mrr_as_of" is read)."""
    tenants = pl.LazyFrame([{"tenant": t, "_as_of": _as_of((s or {}).get("mrr_as_of"))} for t, s in settings.items()],
                           schema={"tenant": pl.String, "_as_of": pl.Date})
    customers = unified["customers"].filter(pl.col("app") == SEQUENCE).join(tenants, on="tenant", how="semi")
    issued = (unified["invoices"].filter((pl.col("app") == SEQUENCE) & pl.col("status").is_in(OPEN_STATUSES)
                                         & pl.col("issue_date").is_not_null())
              .join(tenants, on="tenant", how="semi"))
    # the data's own "now": the latest date Sequence shows on the tenant's documents (an issue or a change)
    documents = pl.concat([unified[table].filter(pl.col("app") == SEQUENCE).select("tenant", "issue_date", "updated_at")
                           for table in ("invoices", "credit_notes") if table in unified], how="vertical")
    latest = (documents.join(tenants, on="tenant", how="semi")
              .group_by("tenant")
              .agg(pl.max_horizontal(pl.col("updated_at").max().dt.date(), pl.col("issue_date").max())
                   .alias("_latest")))
    period = (tenants.join(latest, on="tenant", how="left", validate="1:1")
              .select("tenant", pl.coalesce("_as_of", "_latest").alias("mrr_to"))
              .with_columns(mrr_from=pl.col("mrr_to") - timedelta(days=MRR_DAYS)))
    mrr = (issued.join(period, on="tenant", how="inner", validate="m:1")
           .filter(pl.col("issue_date").is_between(pl.col("mrr_from"), pl.col("mrr_to")))
           .group_by("tenant", "customer_id").agg(pl.col("net_total").sum().alias("_mrr")))
    return (customers.select("tenant", pl.col("id").alias("sequence_id"), "active")
            .join(mrr, left_on=["tenant", "sequence_id"], right_on=["tenant", "customer_id"], how="left",
                  validate="1:1")
            .join(period, on="tenant", how="left", validate="m:1")
            .select("tenant", "sequence_id", pl.col("sequence_id").alias("sequence_customer_id"),
                    pl.when(pl.col("active").fill_null(True)).then(pl.lit("active")).otherwise(pl.lit("archived"))
                    .alias("billing_status"),
                    pl.col("_mrr").fill_null(pl.lit(0).cast(pl.Decimal(38, 9))).cast(pl.Decimal(38, 9)).alias("mrr"),
                    "mrr_from", "mrr_to"))


def sync_field_names(settings: Mapping[str, Mapping[str, Any]], spec: CrmSpec) -> pl.LazyFrame:
    """tenant, _key (the synced value: "mrr"), field (its unified.custom_fields name), from each tenant's
    settings sync_fields."""
    rows = []
    for tenant, body in settings.items():
        named = (body or {}).get("sync_fields") or {}
        if not isinstance(named, Mapping):
            raise ValueError(f"tenant {tenant}: settings.sync_fields of {spec.app}: expected a mapping")
        rows += [{"tenant": tenant, "_key": key, "field": spec.custom_field_name(str(crm_field))}
                 for key, crm_field in named.items() if key in SYNC_VALUES and crm_field]
    return pl.LazyFrame(rows, schema={"tenant": pl.String, "_key": pl.String, "field": pl.String})


# ----------------------------------------------------------------------------------------------------------
# The reconciliation of one CRM
# ----------------------------------------------------------------------------------------------------------


def _company_subject(app: str) -> pl.Expr:
    return pl.concat_str([app_label(pl.lit(app)), pl.lit(" company "), pl.col("id"), pl.lit(" '"),
                          pl.col("name").fill_null(""), pl.lit("'")])


def find_crm_mismatches(unified: Mapping[str, pl.LazyFrame], links: pl.LazyFrame,
                        settings: Mapping[str, Mapping[str, Any]], spec: CrmSpec) -> pl.LazyFrame:
    """Every mismatch between Sequence customers and `spec.app`'s companies, for the tenants in `settings`
    (tenant -> that CRM connection's settings). `unified`: table -> frame (customers, invoices, companies,
    contacts, deals, deal_companies, custom_fields); `links`: reconcile.links."""
    app_name = spec.app
    if not settings:
        return empty_mismatches()
    connected = pl.LazyFrame({"tenant": list(settings)}, schema={"tenant": pl.String})

    def side(table: str, app: str) -> pl.LazyFrame:
        return unified[table].filter(pl.col("app") == app).join(connected, on="tenant", how="semi")

    label = app_label(pl.lit(app_name))
    out: list[pl.LazyFrame] = []

    # Both sides, with the synced values: Sequence's (columns _sync.<value>, and _has.<value> when the tenant
    # syncs it) and the CRM's (its custom fields, pivoted to the same names).
    names = settle(sync_field_names(settings, spec))
    has = [pl.col("tenant").is_in(names.filter(pl.col("_key") == v).select("tenant").collect().to_series()
                                  .implode()).alias(f"_has.{v}") for v in SYNC_VALUES]
    values = sync_values(unified, settings).select(
        "tenant", "sequence_id", *(pl.col(v).alias(f"_sync.{v}") for v in SYNC_VALUES))
    seq_customers = settle(side("customers", SEQUENCE)
                           .join(values, left_on=["tenant", "id"], right_on=["tenant", "sequence_id"], how="left",
                                 validate="1:1")
                           .with_columns(*has, _subject=_customer_subject(),
                                         _domain=clean_text(pl.col("email")).str.extract(r"@([^@\s]+)$", 1)))
    custom = (side("custom_fields", app_name).filter(pl.col("entity") == COMPANY)
              .join(names, on=["tenant", "field"], how="inner")
              .group_by("tenant", "id", "_key").agg(pl.col("value").first().alias("_value")))
    companies = side("companies", app_name)
    for value in SYNC_VALUES:
        companies = companies.join(
            custom.filter(pl.col("_key") == value).select(
                "tenant", "id", (pl.col("_value").cast(pl.Decimal(38, 9), strict=False) if value == "mrr"
                                 else pl.col("_value")).alias(f"_sync.{value}")),
            on=["tenant", "id"], how="left", validate="1:1")
    companies = settle(companies)

    # Pairs, link conflicts, links to companies that are gone.
    pairs = _pairs(links.filter(pl.col("app") == app_name), "customer", seq_customers, companies,
                   pl.col("_subject"), app_name)
    out.append(pairs.rows)
    specs = list(spec.company_fields)
    if "domain" in seq_customers.collect_schema().names():
        specs.append(DOMAIN_FIELD)
    specs += list(spec.sync_fields)
    out.append(field_mismatches(seq_customers, companies, pairs.pairs, specs, entity="customer",
                                subject=pl.col("_subject"), rows=pairs.index))

    # Unlinked on either side: candidates first, then what is left.
    unlinked_seq, unlinked_app = pairs.unlinked_sequence, pairs.unlinked_app
    candidates = match_candidates(unlinked_seq, unlinked_app, entity="customer", rules=COMPANY_MATCHES,
                                  subject=pl.col("_subject"), app_subject=pl.concat_str([
                                      pl.lit("company "), pl.col("id"), pl.lit(" '"), pl.col("name").fill_null(""),
                                      pl.lit("'")]))
    out.append(candidates.rows)
    missing = customers_to_create(unlinked_seq, candidates.pairs, pairs.dangling_sequence)
    out.append(_rows(missing, entity="customer", kind="missing_in_app", action="create_in_app", app=pl.lit(app_name),
                     sequence_id=pl.col("id"), reason=pl.concat_str([
                         pl.col("_subject"), pl.lit(" is in Sequence but no "), label,
                         pl.lit(" company is linked to it, and none matches it by name or domain: create it in "),
                         label, pl.lit(".")])))

    # CRM companies with a closed-won deal and no Sequence customer: importable (or why not).
    deals = side("deals", app_name).filter(pl.col("is_won").fill_null(False))
    won = pl.concat([
        deals.filter(pl.col("company_id").is_not_null()).select("tenant", "app", pl.col("company_id").alias("id")),
        side("deal_companies", app_name).join(deals.select("tenant", "app", pl.col("id").alias("deal_id")),
                                              on=["tenant", "app", "deal_id"], how="semi")
        .select("tenant", "app", pl.col("company_id").alias("id")),
    ], how="vertical").unique()
    emails = (side("contacts", app_name).filter(pl.col("email").is_not_null() & pl.col("company_id").is_not_null())
              .sort("id").group_by("tenant", "app", "company_id").agg(pl.col("email").first())
              .rename({"company_id": "id"}))
    absent = (unlinked_app.join(won, on=["tenant", "app", "id"], how="semi")
              .join(candidates.pairs, left_on=["tenant", "app", "id"], right_on=["tenant", "app", "app_id"],
                    how="anti")
              .join(emails, on=["tenant", "app", "id"], how="left", validate="1:1"))
    failures = import_failures(absent)
    subject = _company_subject(app_name)
    out.append(_rows(failures, entity="customer", kind="not_importable", action="review", app_id=pl.col("id"),
                     field=pl.col("field"), app_value=pl.col("value"), reason=pl.concat_str([
                         subject, pl.lit(" has a closed-won deal but no Sequence customer, and cannot be imported: "
                                         "it "), pl.col("problem"),
                         pl.lit(" (an import needs a contact with an email and an address with first line, city, "
                                "postal code and alpha-2 country).")])))
    importable = absent.join(failures.select("tenant", "app", "id").unique(), on=["tenant", "app", "id"], how="anti")
    out.append(_rows(importable, entity="customer", kind="importable", action="import_to_sequence",
                     app_id=pl.col("id"), reason=pl.concat_str([
                         subject, pl.lit(" has a closed-won deal and no Sequence customer yet; it has a contact "
                                         "email and a complete address, so a customer can be created from it.")])))
    return pl.concat(out, how="vertical")
