"""Contracts of the write payloads Ledgerlink sends to the CRMs (HubSpot, Salesforce, Attio) and of the Sequence
imports that come from a CRM, as Pandera (polars) schemas over flattened payload frames, like payloads_xero.py.

`crm_payload_failures(plan, fields)` takes plan rows (`tenant`, `app`, `entity`, `operation`, `idempotency_key`,
`payload` JSON text) whose write goes to a CRM, or to Sequence on a CRM's behalf (`counterpart_app` = the CRM),
and returns one row per problem: (idempotency_key, field, reason). `fields`: (tenant, app) -> {CRM field name:
what it holds}, the tenant's settings `sync_fields` inverted ("sequence_mrr" -> "mrr"), so a custom field is
checked for what it holds and named by its own name ("properties.sequence_mrr", "Sequence_MRR__c",
"values.sequence_mrr").

Payload shapes (a Sequence id an import creates first is "$ref:<idempotency key>:sequence_id" until it is confirmed):
  hubspot customer    create   {"idProperty": <unique property>, "id": <Sequence id>, "properties": {...}}
                      update|link  {"id": <company id>, "properties": {...}}      every value a string
  salesforce customer create   {"attributes": {"type": "Account"}, <external id field>: <Sequence id>, Name, ...}
                      update|link  {"attributes": {"type": "Account"}, "id": <Account id>, ...}
  attio customer      create   {"matching_attribute": <unique attribute>, "values": {...}}
                      update|link  {"record_id": <record id>, "values": {...}}
  sequence customer   import   as for QuickBooks, alias "<crm>-<CRM id>" and integration id service HubSpot |
                               Salesforce | Attio

This module imports nothing of the project outside checks/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pandera.polars as pa
import polars as pl

from checks.payloads import FAILURES, SEQUENCE_IMPORT, _at_most, _matches, _not_blank, _schema, _text, contract_failures
from checks.unified import COUNTRIES, CURRENCIES

CRM_SERVICES = {"hubspot": "HubSpot", "salesforce": "Salesforce", "attio": "Attio"}
BILLING_STATUSES = ("active", "archived")
NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"
RECORD_IDS = {"hubspot": (r"^[0-9]+$", "a HubSpot company id"),
              "salesforce": (r"^001[a-zA-Z0-9]{12}([a-zA-Z0-9]{3})?$", "a Salesforce Account id"),
              "attio": (r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", "an Attio record id")}
NAME_MAX = 255  # Salesforce Account.Name; HubSpot and Attio take longer
# the standard company fields write-back sends, per CRM: CRM path -> what it holds
STANDARD = {
    "hubspot": {"properties.name": "name", "properties.address": "line1", "properties.city": "city",
                "properties.state": "region", "properties.zip": "postal_code", "properties.country": "country"},
    "salesforce": {"Name": "name", "BillingStreet": "line1", "BillingCity": "city", "BillingState": "region",
                   "BillingPostalCode": "postal_code", "BillingCountry": "country"},
    "attio": {"values.name": "name", "values.primary_location.line_1": "line1",
              "values.primary_location.locality": "city", "values.primary_location.region": "region",
              "values.primary_location.postcode": "postal_code", "values.primary_location.country_code": "country"},
}


def _company(app: str, operation: str) -> pa.DataFrameSchema:
    create = operation == "create"
    pattern, what = RECORD_IDS[app]
    columns = {
        "record_id": _text(_matches(pattern, what), required=not create),
        "match_field": _text(_not_blank(), required=create),
        "match_value": _text(_not_blank(), _at_most(255), required=create),
        "name": _text(_not_blank(), _at_most(NAME_MAX), required=create),
        "line1": _text(_not_blank()),
        "city": _text(_not_blank()),
        "region": _text(),
        "postal_code": _text(_not_blank()),
        # HubSpot and Salesforce keep a country's name; Attio an alpha-2 code
        "country": _text(*([pa.Check.isin(COUNTRIES, error="is not an ISO 3166-1 alpha-2 code")] if app == "attio"
                           else [_not_blank()])),
        "sequence_customer_id": _text(_not_blank(), required=operation in ("create", "link")),
        "billing_status": _text(pa.Check.isin(BILLING_STATUSES, error="is not active or archived")),
        "mrr": _text(_matches(NUMBER, "a decimal number")),
        "mrr_currency": _text(pa.Check.isin(CURRENCIES, error="is not an ISO 4217 currency")),
        # HubSpot takes every property value as a string; a number or a null there is refused
        "not_text": pa.Column(pl.String, nullable=True, checks=[
            pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).is_null()), error="is not a string")]),
        "no_values": pa.Column(pl.String, nullable=True, checks=[
            pa.Check(lambda d: d.lazyframe.select(pl.col(d.key).is_null()), error="is empty: nothing to write")]),
    }
    return _schema(f"{app}.company.{operation}", columns)


SCHEMAS: dict[tuple[str, str, str], pa.DataFrameSchema] = {
    (app, "customer", op): _company(app, op) for app in RECORD_IDS for op in ("create", "update", "link")}
SEQUENCE_IMPORT_CRM = _schema("sequence.customer.import.crm", {
    **{name: column for name, column in SEQUENCE_IMPORT.columns.items()
       if name not in ("idempotency_key", "tenant", "alias")},
    "alias": _text(_matches(r"^(hubspot|salesforce|attio)-[0-9A-Za-z-]+$", "an alias <crm>-<CRM id>"),
                   required=True),
    "service": _text(pa.Check.isin(list(CRM_SERVICES.values()), error="is not HubSpot, Salesforce or Attio"),
                     required=True),
    "id": _text(_not_blank(), required=True),
}, checks=list(SEQUENCE_IMPORT.checks))


# ----------------------------------------------------------------------------------------------------------
# Flattening: payload -> (what each field holds, and the CRM path it has in the payload)
# ----------------------------------------------------------------------------------------------------------


def _text_of(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None if value is None else orjson.dumps(value).decode()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "f").rstrip("0").rstrip(".") if value == value else str(value)
    return str(value)


def _flat_company(app: str, operation: str, payload: Mapping[str, Any],
                  named: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(column -> value, column -> the CRM path it came from) of one company payload."""
    out: dict[str, Any] = {}
    paths: dict[str, str] = {}

    def put(column: str, path: str, value: Any) -> None:
        out[column], paths[column] = _text_of(value), path

    if app == "hubspot":
        props = payload.get("properties") or {}
        if operation == "create":
            put("match_field", "idProperty", payload.get("idProperty"))
            put("match_value", "id", payload.get("id"))
            put("sequence_customer_id", "id", payload.get("id"))
        else:
            put("record_id", "id", payload.get("id"))
        values = {f"properties.{k}": v for k, v in props.items()}
        bad = [k for k, v in props.items() if not isinstance(v, str)]
        if bad:
            put("not_text", f"properties.{bad[0]}", ", ".join(bad))
    elif app == "salesforce":
        values = {k: v for k, v in payload.items() if k not in ("attributes", "id")}
        if operation == "create":
            field = next((f for f, what in named.items() if what == "sequence_customer_id"), None)
            put("match_field", "externalIdField", field)
            put("match_value", field or "externalIdField", payload.get(field) if field else None)
        else:
            put("record_id", "id", payload.get("id"))
    else:
        raw = payload.get("values") or {}
        values = {}
        for key, value in raw.items():
            if isinstance(value, dict) and key == "primary_location":
                values |= {f"values.primary_location.{k}": v for k, v in value.items()}
            elif isinstance(value, dict) and "currency_value" in value:
                values[f"values.{key}"] = value.get("currency_value")
                if value.get("currency_code") is not None and named.get(key) == "mrr":
                    put("mrr_currency", f"values.{key}.currency_code", value.get("currency_code"))
            else:
                values[f"values.{key}"] = value
        if operation == "create":
            put("match_field", "matching_attribute", payload.get("matching_attribute"))
            field = payload.get("matching_attribute")
            put("match_value", f"values.{field}", raw.get(field) if field else None)
        else:
            put("record_id", "record_id", payload.get("record_id"))
    standard = STANDARD[app]
    prefix = {"hubspot": "properties.", "salesforce": "", "attio": "values."}[app]
    for path, value in values.items():
        column = standard.get(path) or named.get(path.removeprefix(prefix))
        if column is not None:
            put(column, path, value)
    if not values:
        put("no_values", "properties" if app == "hubspot" else "values" if app == "attio" else "payload", "{}")
    return out, paths


def _flat_import(payload: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"legalName": payload.get("legalName"), "taxStatus": payload.get("taxStatus")}
    out |= {f"address.{k}": v for k, v in (payload.get("address") or {}).items()}
    contact = (payload.get("contacts") or [{}])[0] or {}
    out |= {"contact.email": contact.get("email"), "contact.name": contact.get("name")}
    out["alias"] = (payload.get("customerAliases") or [None])[0]
    ids = (payload.get("integrationIds") or [{}])[0] or {}
    out |= {"service": ids.get("service"), "id": ids.get("id")}
    return {k: _text_of(v) for k, v in out.items()}


def _frame(schema: pa.DataFrameSchema, records: list[dict[str, Any]]) -> pl.DataFrame:
    names = list(schema.columns)
    return pl.DataFrame([{n: r.get(n) for n in names} for r in records], schema={n: pl.String for n in names},
                        orient="row")


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def crm_payload_failures(plan: pl.DataFrame,
                         fields: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> pl.DataFrame:
    """Every problem of every CRM payload in `plan` (and of Sequence imports made from a CRM), as
    (idempotency_key, field, reason), the field named as the CRM (or Sequence) calls it."""
    fields = fields or {}
    if plan.height == 0:
        return pl.DataFrame(schema=FAILURES)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    paths: dict[str, dict[str, str]] = {}
    problems: list[dict[str, Any]] = []
    for row in plan.select("idempotency_key", "tenant", "app", "entity", "operation", "payload",
                           "counterpart_app").to_dicts():
        key = row["idempotency_key"]
        kind = (row["app"], row["entity"], row["operation"])
        try:
            payload = orjson.loads(row["payload"])
        except orjson.JSONDecodeError as exc:
            problems.append({"idempotency_key": key, "field": "payload", "reason": f"is not valid JSON: {exc}"})
            continue
        base = {"idempotency_key": key, "tenant": row["tenant"]}
        if kind == ("sequence", "customer", "import"):
            groups.setdefault(kind, []).append({**base, **_flat_import(payload)})
        elif kind in SCHEMAS:
            flat, where = _flat_company(row["app"], row["operation"], payload,
                                        fields.get((row["tenant"], row["app"])) or {})
            groups.setdefault(kind, []).append({**base, **flat})
            paths[key] = where
        else:
            problems.append({"idempotency_key": key, "field": "operation",
                             "reason": "no payload contract for {} {} {}".format(*kind)})
    parts = [pl.DataFrame(problems, schema=FAILURES)]
    for kind, records in groups.items():
        schema = SEQUENCE_IMPORT_CRM if kind[0] == "sequence" else SCHEMAS[kind]
        parts.append(contract_failures(schema, _frame(schema, records)))
    found = pl.concat([p.cast(FAILURES) for p in parts], how="vertical").unique(maintain_order=True)
    if found.height == 0:
        return found
    # name a field by its path in the payload (what the CRM calls it), not by what it holds
    named = [paths.get(k, {}).get(f, f) for k, f in found.select("idempotency_key", "field").iter_rows()]
    return found.with_columns(field=pl.Series(named, dtype=pl.String))
