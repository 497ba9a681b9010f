"""Write-back to the CRMs (HubSpot, Salesforce, Attio): the plan rows that keep a tenant's CRM companies in
agreement with Sequence (issue 6 item 5), and the apply step that sends them, exactly once.

Plan (`crm_plan`, from reconcile.mismatches with app = <crm>; `counterpart_app` is the CRM on every row):
  <crm> customer    update  a linked company whose fields differ (field_differs / update_in_app): the differing
                            ones, as Sequence has them: name, billing address, and the synced custom fields
                            (settings `sync_fields`: sequence_customer_id, billing_status, mrr), whose values come
                            from assets/reconcile/crm.py `sync_values`, so reconcile and write-back say the same
  <crm> customer    link    a candidate (unlinked_candidate / link): the company's Sequence-customer-id field
                            gets the customer's id (and the other synced fields their values)
  <crm> customer    create  a Sequence customer no company is linked to (missing_in_app / create_in_app): an
                            UPSERT on the Sequence-customer-id field (HubSpot batch/upsert with idProperty,
                            Salesforce upsert by external id, Attio assert with matching_attribute), so a retry,
                            a resend or a replan never makes a second company
  sequence customer import  a company with a closed-won deal and no customer (importable / import_to_sequence):
                            created in Sequence as the QuickBooks import is (look-up by alias "<crm>-<id>" first,
                            apply._import), the CRM id stored as its integration id (service HubSpot | Salesforce |
                            Attio); then
  <crm> customer    update  (depends_on the import) the company's Sequence-customer-id field =
                            "$ref:<import key>:sequence_id" (the import's Sequence id, not its app_id: the CRM's).
A company also importable from QuickBooks / Xero (or from the tenant's other CRM) under the same folded legal
name is imported once: the CRM's import is skipped naming the twin, and the CRM's follow-up waits for the twin.
Rows whose payload breaks its contract (checks/payloads_crm.py) are skipped with the record, field and reason;
a tenant that syncs no sequence_customer_id field gets creates and links skipped (nothing to upsert on).

Apply (`send_crm`): per tenant and CRM, rows go many to a request where the CRM has a batch endpoint (HubSpot 100
per batch/update or batch/upsert; Salesforce 200 per sObject Collections call, allOrNone=false) and one to a
request on Attio (it has none). Each request's members are recorded in the outbox (request_id, batch_item)
BEFORE it is sent; a crash between send and confirm re-sends the same members, in the same order, and the
upsert / update semantics make the second send harmless (an upsert finds what the first created). Each record
answers for itself: a refused element fails with the CRM's reason while its neighbours are confirmed.
Rate limits: HubSpot's 429 (TEN_SECONDLY_ROLLING, no Retry-After) waits 10 s and retries, Attio's 429 waits for
its Retry-After HTTP date (both in the connectors); Salesforce's 403 REQUEST_LIMIT_EXCEEDED (the daily
allocation) is not retried: the refused request's rows and the tenant's remaining Salesforce rows stay pending
(state planned) with the reason, for the next apply.

Known simplifications: a value Sequence does not have (a region, a second address line) is not cleared in the
CRM (HubSpot would take "", Salesforce null; the plan leaves such fields out); Attio's MRR goes with the
customer's currency, or the attribute's default currency when Sequence has none; the domain is never written
(Sequence keeps none).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import polars as pl
import pycountry

from assets.reconcile.rules import SEQUENCE, folded_text
from assets.writeback.outbox import Outcome
from assets.writeback.writers import CRM_LABELS as LABELS, CRMS
from assets.writeback.plan import (
    PLAN_SCHEMA,
    REF,
    PlanInputs,
    Row,
    _blocked_by_dependencies,
    _reasons,
    dumps,
    empty_plan,
    ref,
)
from checks.payloads_crm import CRM_SERVICES, crm_payload_failures
from connectors.errors import AppError

if TYPE_CHECKING:
    from assets.writeback.apply import Applier, _Row

# assets/reconcile/crm.py's SYNC_VALUES (that module loads dlt, which `ledgerlink apply` does without until a plan
# has CRM rows; a test keeps the two equal)
SYNC_VALUES = ("sequence_customer_id", "billing_status", "mrr")
ACTIONS = ("create_in_app", "update_in_app", "link", "import_to_sequence")
HUBSPOT_BATCH, SALESFORCE_BATCH = 100, 200
ACCOUNT = "Account"
CENT = Decimal("0.01")
ADDRESS_FIELDS = ("line1", "line2", "city", "region", "postal_code", "country")
ORDER = {"create_item": 0, "update_item": 1, "create": 2, "import": 3, "update": 4, "set_email": 5, "link": 6,
         "void": 7, "mark_paid": 8}


# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------


def synced(settings: Mapping[str, Any] | None) -> dict[str, str]:
    """value ("mrr") -> the CRM field that holds it ("sequence_mrr"), from settings `sync_fields`."""
    named = (settings or {}).get("sync_fields") or {}
    return {k: str(v) for k, v in named.items() if k in SYNC_VALUES and v} if isinstance(named, Mapping) else {}


def id_field(settings: Mapping[str, Any] | None) -> str | None:
    """The CRM field holding the Sequence customer id: what creates upsert on and links write."""
    return synced(settings).get("sequence_customer_id")


# ----------------------------------------------------------------------------------------------------------
# Payloads: {what: value} -> the CRM's own body
# ----------------------------------------------------------------------------------------------------------


def _country_name(code: str | None) -> str | None:
    found = pycountry.countries.get(alpha_2=code) if code else None
    return found.name if found is not None else code


def _mrr(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0)).quantize(CENT, ROUND_HALF_UP)


def company_body(app: str, values: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """The CRM's company fields for `values` (name, line1, line2, city, region, postal_code, country,
    sequence_customer_id, billing_status, mrr, currency); a value that is absent or None is left out."""
    has = {k for k, v in values.items() if v is not None}
    custom = {fields[k]: values[k] for k in SYNC_VALUES if k in has and k in fields}
    mrr_field = fields.get("mrr") if "mrr" in has else None
    if mrr_field in custom:
        custom[mrr_field] = _mrr(custom[mrr_field])
    if app == "hubspot":
        props = {"name": values.get("name"), "address": values.get("line1"), "city": values.get("city"),
                 "state": values.get("region"), "zip": values.get("postal_code"),
                 "country": _country_name(values.get("country"))}
        props = {k: v for k, v in props.items() if v is not None}
        # every HubSpot property value is a string
        return {**props, **{k: (f"{v:f}" if isinstance(v, Decimal) else str(v)) for k, v in custom.items()}}
    if app == "salesforce":
        street = "\n".join(s for s in (values.get("line1"), values.get("line2")) if s) or None
        body = {"Name": values.get("name"), "BillingStreet": street if has & {"line1", "line2"} else None,
                "BillingCity": values.get("city"), "BillingState": values.get("region"),
                "BillingPostalCode": values.get("postal_code"), "BillingCountry": _country_name(values.get("country"))}
        return {**{k: v for k, v in body.items() if v is not None}, **custom}
    body: dict[str, Any] = {}
    if values.get("name") is not None:
        body["name"] = values["name"]
    if has & set(ADDRESS_FIELDS):
        body["primary_location"] = {"line_1": values.get("line1"), "line_2": values.get("line2"),
                                    "locality": values.get("city"), "region": values.get("region"),
                                    "postcode": values.get("postal_code"), "country_code": values.get("country")}
    if mrr_field in custom:
        custom[mrr_field] = {"currency_value": custom[mrr_field], "currency_code": values.get("currency")}
    return {**body, **custom}


def create_payload(app: str, values: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """An upsert on the Sequence-customer-id field (HubSpot idProperty, Salesforce external id, Attio assert)."""
    key = fields["sequence_customer_id"]
    body = company_body(app, values, fields)
    if app == "hubspot":
        return {"idProperty": key, "id": values["sequence_customer_id"],
                "properties": {k: v for k, v in body.items() if k != key}}
    if app == "salesforce":
        return {"attributes": {"type": ACCOUNT}, **body}
    return {"matching_attribute": key, "values": body}


def update_payload(app: str, record_id: str, values: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    body = company_body(app, values, fields)
    if app == "hubspot":
        return {"id": record_id, "properties": body}
    if app == "salesforce":
        return {"attributes": {"type": ACCOUNT}, "id": record_id, **body}
    return {"record_id": record_id, "values": body}


# ----------------------------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------------------------


def crm_plan(inputs: PlanInputs, plan: pl.DataFrame, *, tenants: Iterable[str] | None = None,
             invoice: str | None = None) -> pl.DataFrame:
    """`plan` (the accounting apps' rows) with the CRM rows added, in build_plan's order. A one-invoice re-sync
    has no CRM writes."""
    if invoice is not None:
        return plan
    rows = build_crm_plan(inputs, tenants=tenants, accounting=plan)
    if rows.height == 0:
        return plan
    return (pl.concat([plan, rows]).with_columns(_o=pl.col("operation").replace_strict(ORDER, default=9,
                                                                                       return_dtype=pl.Int64))
            .sort("tenant", "app", "_o", "entity", "sequence_id", "app_id", nulls_last=True, maintain_order=True)
            .drop("_o"))


def build_crm_plan(inputs: PlanInputs, *, tenants: Iterable[str] | None = None,
                   accounting: pl.DataFrame | None = None) -> pl.DataFrame:
    """The CRM part of the plan (PLAN_SCHEMA) for every CRM in `inputs.crm_settings` (app -> tenant ->
    settings). `accounting`: the accounting apps' plan, whose imports a CRM's import must not repeat."""
    by_app: Mapping[str, Mapping[str, Mapping[str, Any]]] = getattr(inputs, "crm_settings", None) or {}
    wanted = None if tenants is None else set(tenants)
    twins: dict[tuple[str, str], str] = {}
    if accounting is not None and accounting.height:
        imports = accounting.filter((pl.col("operation") == "import") & (pl.col("state") == "planned"))
        for tenant, name, key in imports.select(
                "tenant", folded_text(pl.col("payload").str.json_path_match("$.legalName")), "idempotency_key"
        ).iter_rows():
            if name is not None:
                twins.setdefault((tenant, name), key)
    rows: list[Row] = []
    fields: dict[tuple[str, str], dict[str, str]] = {}
    for app in sorted(a for a in by_app if a in CRMS):
        settings = {t: s for t, s in by_app[app].items() if wanted is None or t in wanted}
        if not settings:
            continue
        rows += _app_rows(inputs, app, settings, twins)
        fields |= {(t, app): {v: k for k, v in synced(s).items()} for t, s in settings.items()}
    records = [r.record() for r in rows]
    plan = pl.DataFrame(records, schema=PLAN_SCHEMA) if records else empty_plan()
    return _blocked_by_dependencies(validated(plan, fields))


def validated(plan: pl.DataFrame, fields: Mapping[tuple[str, str], Mapping[str, str]]) -> pl.DataFrame:
    """Rows whose payload breaks its contract are skipped, the record, field and reason named."""
    failures = crm_payload_failures(plan.filter(pl.col("state") == "planned"), fields)
    if failures.height == 0:
        return plan
    problems = (failures.group_by("idempotency_key", maintain_order=True)
                .agg(pl.format("{}: {}", "field", "reason").str.join("; ").alias("_problem")))
    label = pl.col("counterpart_app").replace_strict(LABELS, default=pl.col("counterpart_app"))
    record = pl.when(pl.col("app") == SEQUENCE).then(pl.format("Sequence customer from {} company {}", label,
                                                              "app_id")) \
        .otherwise(pl.format("{} company {}", label, pl.coalesce("app_id", pl.format("of Sequence customer {}",
                                                                                    "sequence_id"))))
    return (plan.join(problems, on="idempotency_key", how="left")
            .with_columns(state=pl.when(pl.col("_problem").is_not_null()).then(pl.lit("skipped")).otherwise("state"),
                          error=pl.coalesce("error", pl.format("invalid payload for {}: {}", record, "_problem")))
            .drop("_problem"))


def _row(tenant: str, app: str, crm: str, operation: str, sequence_id: str | None, app_id: str | None,
         payload: dict[str, Any], reason: str, **kw: Any) -> Row:
    return Row(tenant, app, "customer", operation, sequence_id, app_id, payload, reason, counterpart_app=crm, **kw)


def _app_rows(inputs: PlanInputs, app: str, settings: Mapping[str, Mapping[str, Any]],
              twins: dict[tuple[str, str], str]) -> list[Row]:
    chosen = sorted(settings)
    label = LABELS[app]
    actions = (inputs.mismatches
               .filter((pl.col("app") == app) & (pl.col("entity") == "customer")
                       & pl.col("proposed_action").is_in(ACTIONS) & pl.col("tenant").is_in(chosen))
               .group_by("tenant", "sequence_id", "app_id", "proposed_action", maintain_order=True)
               .agg(pl.col("field").drop_nulls().unique().sort().alias("fields"), pl.col("reason").alias("reasons"))
               .collect())
    if actions.height == 0:
        return []
    from assets.reconcile.crm import sync_values  # the values reconcile compares, computed the same way

    customers = {(r["tenant"], r["id"]): r for r in inputs.unified["customers"].filter(
        (pl.col("app") == SEQUENCE) & pl.col("tenant").is_in(chosen)).select(
        "tenant", "id", "name", *ADDRESS_FIELDS, "currency").collect().to_dicts()}
    values = {(r["tenant"], r["sequence_id"]): r for r in sync_values(inputs.unified, settings).collect().to_dicts()}
    rows: list[Row] = []

    def wanted(tenant: str, sequence_id: str, what: Iterable[str]) -> dict[str, Any]:
        """What Sequence says each of `what` holds for the customer (name, address parts, synced values)."""
        customer = customers.get((tenant, sequence_id)) or {}
        sync = values.get((tenant, sequence_id)) or {}
        out: dict[str, Any] = {"currency": customer.get("currency")}
        for name in what:
            out[name] = sync.get(name) if name in SYNC_VALUES else customer.get(name)
        return out

    def no_id_field(tenant: str, doing: str) -> str:
        return (f"settings.sync_fields.sequence_customer_id: the {label} connection of {tenant} names no field for "
                f"the Sequence customer id, so there is nothing to {doing} on (add it to sync_fields)")

    for r in actions.filter(pl.col("proposed_action") != "import_to_sequence").sort(
            "tenant", "sequence_id", "app_id").to_dicts():
        tenant, sid, aid = r["tenant"], r["sequence_id"], r["app_id"]
        fields = synced(settings[tenant])
        key_field = fields.get("sequence_customer_id")
        reason = _reasons(r["reasons"])
        if r["proposed_action"] == "update_in_app" and sid and aid:
            what: list[str] = []
            for f in r["fields"]:
                if f in SYNC_VALUES and f in fields:
                    what.append(f)
                elif f == "name":
                    what.append("name")
                elif f.startswith("billing_address."):
                    what += list(ADDRESS_FIELDS)  # an address goes whole (Salesforce's street holds two lines)
            if not what:
                continue  # e.g. the domain: Sequence keeps none, so there is nothing to write
            rows.append(_row(tenant, app, app, "update", sid, aid,
                             update_payload(app, aid, wanted(tenant, sid, dict.fromkeys(what)), fields), reason))
        elif r["proposed_action"] == "link" and sid and aid:
            rows.append(_row(tenant, app, app, "link", sid, aid,
                             update_payload(app, aid, wanted(tenant, sid, fields), fields),
                             reason + f" Stores the Sequence customer id in the {label} company's {key_field}.",
                             error=None if key_field else no_id_field(tenant, "link")))
        elif r["proposed_action"] == "create_in_app" and sid:
            body = wanted(tenant, sid, ["name", *ADDRESS_FIELDS, *fields])
            rows.append(_row(tenant, app, app, "create", sid, None,
                             create_payload(app, body, fields) if key_field else {"sequenceId": sid},
                             reason + f" Upserts the {label} company on {key_field} = {sid}: a retry finds it.",
                             error=None if key_field else no_id_field(tenant, "upsert")))
    rows += _import_rows(inputs, app, settings, actions.filter(pl.col("proposed_action") == "import_to_sequence"),
                         twins)
    return rows


def _import_rows(inputs: PlanInputs, app: str, settings: Mapping[str, Mapping[str, Any]], actions: pl.DataFrame,
                 twins: dict[tuple[str, str], str]) -> list[Row]:
    """Sequence customers from closed-won companies, then each company's Sequence-customer-id field."""
    if actions.height == 0:
        return []
    chosen = sorted(settings)
    label = LABELS[app]
    emails = (inputs.unified["contacts"]
              .filter((pl.col("app") == app) & pl.col("tenant").is_in(chosen) & pl.col("email").is_not_null()
                      & pl.col("company_id").is_not_null())
              .sort("id").group_by("tenant", "company_id").agg(pl.col("email").first())
              .rename({"company_id": "app_id"}))
    companies = (inputs.unified["companies"].filter((pl.col("app") == app) & pl.col("tenant").is_in(chosen))
                 .select("tenant", pl.col("id").alias("app_id"), "name", *ADDRESS_FIELDS)
                 .join(emails, on=["tenant", "app_id"], how="left")
                 .with_columns(_folded=folded_text(pl.col("name"))).collect())
    rows: list[Row] = []
    for r in actions.join(companies, on=["tenant", "app_id"], how="inner").sort("tenant", "app_id").to_dicts():
        tenant, aid = r["tenant"], r["app_id"]
        name = (r["name"] or "").strip()
        payload = {"legalName": name,
                   "address": {"line1": r["line1"], "line2": r["line2"], "town": r["city"], "state": r["region"],
                               "postcode": r["postal_code"], "country": r["country"]},
                   "taxStatus": "TAXED",
                   "contacts": [{"name": name, "email": r["email"], "billingPreference": "PRIMARY"}],
                   "customerAliases": [f"{app}-{aid}"],
                   "integrationIds": [{"service": CRM_SERVICES[app], "id": aid}]}
        twin = twins.get((tenant, r["_folded"])) if r["_folded"] else None
        row = _row(tenant, SEQUENCE, app, "import", None, aid, payload,
                   _reasons(r["reasons"]) + f" Creates the Sequence customer (alias {app}-{aid}).",
                   error=(f"operation: another import of this plan (write {twin}) creates a customer named '{name}' "
                          f"in Sequence; this {label} company gets that customer's id instead") if twin else None)
        rows.append(row)
        source = twin or row.key
        if not twin and r["_folded"]:
            twins[(tenant, r["_folded"])] = row.key
        fields = synced(settings[tenant])
        if "sequence_customer_id" not in fields:
            continue  # the integration id Sequence stores is then the only link
        # a new customer: active, nothing billed yet
        values = {"sequence_customer_id": ref(source, "sequence_id"), "billing_status": "active", "mrr": Decimal(0)}
        rows.append(_row(tenant, app, app, "update", None, aid,
                         update_payload(app, aid, {k: v for k, v in values.items() if k in fields}, fields),
                         f"Stores the id of the Sequence customer imported for '{name}' in the {label} company's "
                         f"{fields['sequence_customer_id']}.", depends_on=[source]))
    return rows


# ----------------------------------------------------------------------------------------------------------
# Apply
# ----------------------------------------------------------------------------------------------------------


def request_key(app: str, keys: Iterable[str]) -> str:
    """A request's id, the same for the same members (recorded as the outbox rows' request_id)."""
    return "lc" + app[0] + hashlib.blake2b("\x1f".join(sorted(keys)).encode(), digest_size=15).hexdigest()


def _endpoint(row: _Row) -> str:
    return "upsert" if row.operation == "create" else "update"


def send_crm(applier: Applier, rows: list[_Row]) -> None:
    """Sends one wave's rows of one CRM connection (Applier._wave groups them so): rows sent before go again with
    their request's members, in their order; fresh rows go up to the CRM's batch size to a request of one
    endpoint."""
    if not rows:
        return
    app = rows[0].app
    size = {"hubspot": HUBSPOT_BATCH, "salesforce": SALESFORCE_BATCH, "attio": 1}[app]
    requests: list[tuple[str, list[_Row]]] = []
    earlier: dict[str, list[_Row]] = {}
    fresh: dict[str, list[_Row]] = {}
    for row in rows:
        if row.request_id and row.batch_item:
            earlier.setdefault(row.request_id, []).append(row)
        else:
            fresh.setdefault(_endpoint(row), []).append(row)
    for key, members in earlier.items():
        members.sort(key=lambda m: int(m.batch_item.removeprefix("i")))
        requests.append((key, members))
    for _endpoint_name, members in sorted(fresh.items(), key=lambda e: e[0] != "upsert"):  # creates first
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            requests.append((request_key(app, (r.fresh_request_id() for r in chunk)), chunk))
    send = {"hubspot": _send_hubspot, "salesforce": _send_salesforce, "attio": _send_attio}[app]
    for index, (key, members) in enumerate(requests):
        if send(applier, members, key) == "stop":
            _hold(applier, [r for _, later in requests[index + 1:] for r in later])
            break


def _mark(applier: Applier, rows: list[_Row], key: str) -> None:
    # recorded (committed) before the request: a crash after it re-sends the same members
    applier._mark_sent(rows, key, [f"i{i + 1}" for i in range(len(rows))])


def _record_name(row: _Row) -> str:
    label = LABELS.get(row.app, row.app)
    ids = [f"Sequence {row.sequence_id}" if row.sequence_id else None, f"{label} {row.app_id}" if row.app_id else None]
    return f"{row.operation} in {label} of company ({', '.join(i for i in ids if i) or row.key})"


def _failed(row: _Row, error: str | AppError, *, retriable: bool | None = None, answer: Any = None) -> Outcome:
    if isinstance(error, AppError):
        retriable = bool(error.retriable) if retriable is None else retriable
    return Outcome(row.key, "failed", answer=dumps(answer) if answer is not None else None,
                   error=f"{_record_name(row)}: {error}", retriable=bool(retriable))


def _hold(applier: Applier, rows: list[_Row]) -> None:
    """Rows left for the next apply (Salesforce's daily allocation is spent): pending, with the reason."""
    if rows:
        applier._finish([Outcome(r.key, "planned", error=(
            "not sent: Salesforce's daily API allocation is spent (403 REQUEST_LIMIT_EXCEEDED); waiting seconds cannot "
            "cure it, so the write stays pending for the next apply")) for r in rows])


# ----- HubSpot --------------------------------------------------------------------------------------------------


def _send_hubspot(applier: Applier, rows: list[_Row], key: str) -> str | None:
    from connectors.hubspot import HubSpotClient

    client = applier.clients.get(rows[0].tenant, "hubspot")
    assert isinstance(client, HubSpotClient)
    _mark(applier, rows, key)
    upsert = _endpoint(rows[0]) == "upsert"
    try:
        if upsert:
            result = client.batch_upsert("companies", [r.payload for r in rows])
        else:
            result = client.batch_update("companies", [{"id": r.payload["id"], "properties": r.payload["properties"]}
                                                       for r in rows])
    except AppError as exc:
        applier._finish([_failed(r, exc) for r in rows])
        return None
    found: dict[str, dict] = {}
    for record in result.results:
        if upsert:
            for row in rows:
                value = (record.get("properties") or {}).get(row.payload["idProperty"])
                if value is not None and str(value) == str(row.payload["id"]):
                    found[row.key] = record
        else:
            found[next((r.key for r in rows if str(r.payload["id"]) == str(record.get("id"))), "")] = record
    outcomes = []
    for row in rows:
        record = found.get(row.key)
        if record is not None:
            outcomes.append(Outcome(row.key, "confirmed", answer=dumps(record),
                                    app_id=str(record["id"]) if row.operation == "create" else None,
                                    sequence_id=_sequence_id(applier, row)))
            continue
        own = [e for e in result.errors if str(row.payload["id"]) in _context_ids(e)]
        message = "; ".join(f"{e.get('category')}: {e.get('message')}" for e in (own or result.errors)) or \
            "HubSpot's answer does not mention this input"
        outcomes.append(_failed(row, message, retriable=False, answer=own or result.errors))
    applier._finish(outcomes)
    return None


def _context_ids(error: Mapping[str, Any]) -> set[str]:
    context = error.get("context") or {}
    return {str(i) for values in context.values() if isinstance(values, list) for i in values}


def _sequence_id(applier: Applier, row: _Row) -> str | None:
    """The Sequence id an import's follow-up wrote into the company (shown on its outbox row)."""
    if row.sequence_id or row.operation != "update" or not row.depends_on:
        return None
    field = id_field(applier.clients.connection(row.tenant, row.app).settings)
    values = row.payload.get("properties") or row.payload.get("values") or row.payload
    value = values.get(field) if field and isinstance(values, dict) else None
    return value if isinstance(value, str) and not value.startswith(REF) else None


# ----- Salesforce -----------------------------------------------------------------------------------------------


def _send_salesforce(applier: Applier, rows: list[_Row], key: str) -> str | None:
    from connectors.salesforce import RequestLimitExceeded, SalesforceClient

    client = applier.clients.get(rows[0].tenant, "salesforce")
    assert isinstance(client, SalesforceClient)
    upsert = _endpoint(rows[0]) == "upsert"
    external = id_field(applier.clients.connection(rows[0].tenant, "salesforce").settings)
    if upsert and not external:
        applier._finish([_failed(r, "settings.sync_fields.sequence_customer_id is gone: nothing to upsert on",
                                 retriable=False) for r in rows])
        return None
    _mark(applier, rows, key)
    try:
        if upsert:
            results = client.upsert_many(ACCOUNT, external, [r.payload for r in rows], all_or_none=False)
        else:
            results = client.update_many([r.payload for r in rows], all_or_none=False)
    except RequestLimitExceeded as exc:
        if exc.retriable:  # the concurrency variant the client could not wait out: the next apply retries
            applier._finish([_failed(r, exc) for r in rows])
            return None
        _hold(applier, rows)
        return "stop"
    except AppError as exc:
        applier._finish([_failed(r, exc) for r in rows])
        return None
    outcomes = []
    for row, result in zip(rows, results, strict=True):
        answer = {"id": result.id, "success": result.success, "created": result.created,
                  "errors": [{"statusCode": e.code, "message": e.message, "fields": list(e.fields)}
                             for e in result.errors]}
        if result.success:
            outcomes.append(Outcome(row.key, "confirmed", answer=dumps(answer),
                                    app_id=result.id if row.operation == "create" else None,
                                    sequence_id=_sequence_id(applier, row)))
        else:
            problems = "; ".join(f"{e.code}: {e.message}" + (f" (fields {', '.join(e.fields)})" if e.fields else "")
                                 for e in result.errors)
            outcomes.append(_failed(row, problems, retriable=False, answer=answer))
    applier._finish(outcomes)
    return None


# ----- Attio ----------------------------------------------------------------------------------------------------


def _send_attio(applier: Applier, rows: list[_Row], key: str) -> str | None:
    from connectors.attio import AttioClient, record_id

    client = applier.clients.get(rows[0].tenant, "attio")
    assert isinstance(client, AttioClient)
    _mark(applier, rows, key)
    outcomes = []
    for row in rows:  # one record per request: Attio has no batch write
        try:
            if row.operation == "create":
                record = client.assert_record("companies", row.payload["matching_attribute"], row.payload["values"])
            else:
                # PUT: values replaced, not appended, so a resend leaves the record as the first send did
                record = client.update_record("companies", row.payload["record_id"], row.payload["values"],
                                              replace_multiselect=True)
        except AppError as exc:
            outcomes.append(_failed(row, exc))
            continue
        outcomes.append(Outcome(row.key, "confirmed", answer=dumps({"id": record.get("id")}),
                                app_id=record_id(record) if row.operation == "create" else None,
                                sequence_id=_sequence_id(applier, row)))
    applier._finish(outcomes)
    return None


def describe(row: _Row, base_url: str) -> str:
    """What apply would send for a CRM row (dry run)."""
    body = dumps(row.payload)
    if row.app == "hubspot":
        return f"{row.tenant}: {row.operation} POST {base_url}/crm/v3/objects/companies/batch/{_endpoint(row)} {body}"
    if row.app == "salesforce":
        path = "composite/sobjects/Account/<sequence id field>" if row.operation == "create" else "composite/sobjects"
        return f"{row.tenant}: {row.operation} PATCH {base_url}/services/data/<v>/{path} {body}"
    if row.operation == "create":
        return (f"{row.tenant}: create PUT {base_url}/v2/objects/companies/records?matching_attribute="
                f"{row.payload.get('matching_attribute')} {body}")
    record = row.payload.get("record_id")
    return f"{row.tenant}: {row.operation} PUT {base_url}/v2/objects/companies/records/{record} {body}"
