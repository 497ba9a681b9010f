"""Attio REST API v2 emulator: objects `companies`, `people` and `deals` and their records, as described in
../shared/vendors/attio.md and Attio's OpenAPI document (../shared/specs/attio/openapi.yaml).

What it serves
  auth        `Authorization: Bearer <token>`, one token per tenant (identity.attio_access_token); 401 otherwise
  GET    /v2/self                                          the token's workspace (introspection shape)
  GET    /v2/objects, /v2/objects/{object}                 object definitions ({object} is a slug or object id)
  GET    /v2/objects/{object}/attributes                   standard and custom attribute definitions, limit/offset
  POST   /v2/objects/{object}/records/query                filter, sorts, limit (default 500), offset; the answer
                                                           is `{"data": [...]}` with NO paging metadata
  POST   /v2/objects/{object}/records                      create
  PUT    /v2/objects/{object}/records?matching_attribute=  assert: update the record whose unique attribute
                                                           matches, else create
  GET    /v2/objects/{object}/records/{record_id}
  PATCH  /v2/objects/{object}/records/{record_id}          multiselect values are added
  PUT    /v2/objects/{object}/records/{record_id}          multiselect values are replaced
  DELETE /v2/objects/{object}/records/{record_id}          hard delete: the record is gone, `{}`

Records are `{"id": {workspace_id, object_id, record_id}, "created_at", "web_url", "values"}` where `values` maps
every attribute slug to an ARRAY of value objects (`active_from`, `active_until`, `created_by_actor`,
`attribute_type` and the type's own fields: text/number/date/timestamp/checkbox/rating `value`; currency
`currency_value`/`currency_code`; domain; email-address; personal-name; phone-number; location; record-reference;
select `option`; status `status`; actor-reference). There is no `updated_at`. Errors are
`{"status_code", "type", "code", "message"}`.

Rate limits (only with rate_limits=True): 100 reads/s and 25 writes/s per workspace (query counts as a read),
answered with 429 `rate_limit_exceeded` and `Retry-After` as an HTTP date (the next whole second).

Fixture collections under <tenant>/attio/
  companies.json, people.json, deals.json   records exactly as the API returns them (served as given, even
                                            when they break the contract)
  attributes.json                           custom attribute definitions: the API's attribute object plus
                                            `"object": "<slug>"`; only `object`, `api_slug` and `type` are
                                            needed, the rest defaults (title from the slug, not unique, not
                                            multiselect, not required). Select attributes may list
                                            `"options": ["Gold", ...]`, status attributes `"statuses": [...]`,
                                            currency attributes `"default_currency_code"`. A definition whose
                                            slug is standard overrides it (e.g. the currency of deals.value).

Simplifications (known): only active values are kept (a change closes nothing visible: historic values and
`show_historic` are not served); filters support the documented operators ($eq, $in, $not_empty, $contains,
$starts_with, $ends_with, $lt, $lte, $gt, $gte, $and, $or, $not; text matching with $contains/$starts_with/
$ends_with is case-insensitive) on an attribute's main field or a named sub-field, plus `record_id`; path-based
sorts and filters across references, lists, webhooks, search and the score-based query limits are not emulated.
Without sorts, records come in creation order (Attio documents no default order). Uniqueness clashes answer 409
`uniqueness_conflict` (the code is assumed).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import pycountry
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from connectors.sandbox.emulator import Emulator, EmulatorError, RateLimits, RequestContext, json_response
from connectors.sandbox.identity import attio_access_token

DEFAULT_QUERY_LIMIT = 500
READS_PER_SECOND = 100
WRITES_PER_SECOND = 25
OBJECTS = ("companies", "people", "deals")
_NOUNS = {"companies": ("Company", "Companies"), "people": ("Person", "People"), "deals": ("Deal", "Deals")}
_NAMESPACE = uuid.UUID("5b0c7a4e-3f1d-4c2b-9a8e-7d6c5b4a3f2e")
CURRENCY_CODES = frozenset(
    "ARS AUD BRL BGN CAD CLP CNY COP CZK DKK EUR HKD HUF ISK INR ILS JPY KES KRW MYR MXN NTD NZD NGN NOK XPF PEN "
    "PHP PLN GBP RWF SAR SGD ZAR SEK CHF THB AED UYU USD".split()
)
ATTRIBUTE_TYPES = frozenset({
    "text", "number", "checkbox", "currency", "date", "timestamp", "rating", "status", "select", "record-reference",
    "actor-reference", "location", "domain", "email-address", "phone-number", "interaction", "personal-name",
})
# Each type's main field (what shorthand filters and sorts without `field` compare), as a path in the value.
MAIN_FIELD = {
    "text": ("value",), "number": ("value",), "checkbox": ("value",), "date": ("value",), "timestamp": ("value",),
    "rating": ("value",), "currency": ("currency_value",), "domain": ("domain",), "email-address": ("email_address",),
    "personal-name": ("full_name",), "phone-number": ("phone_number",), "location": ("locality",),
    "record-reference": ("target_record_id",), "select": ("option", "title"), "status": ("status", "title"),
    "actor-reference": ("referenced_actor_id",), "interaction": ("interacted_at",),
}
_LOCATION_FIELDS = ("line_1", "line_2", "line_3", "line_4", "locality", "region", "postcode", "country_code",
                    "latitude", "longitude")
_PHONE_PREFIXES = {"+44": "GB", "+49": "DE", "+33": "FR", "+1": "US", "+31": "NL", "+353": "IE", "+61": "AU",
                   "+34": "ES", "+39": "IT", "+41": "CH", "+46": "SE", "+45": "DK", "+47": "NO"}
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OPERATORS = frozenset({"$eq", "$in", "$not_empty", "$contains", "$starts_with", "$ends_with", "$lt", "$lte",
                        "$gt", "$gte"})


# (api_slug, title, type, flags) — flags: m multiselect, u unique, r required, s system (not writable)
_STANDARD: dict[str, list[tuple[str, str, str, str]]] = {
    "companies": [
        ("record_id", "Record ID", "text", "us"), ("name", "Name", "text", ""), ("domains", "Domains", "domain", "mu"),
        ("description", "Description", "text", ""), ("primary_location", "Primary location", "location", ""),
        ("categories", "Categories", "select", "m"), ("team", "Team", "record-reference", "m"),
        ("created_at", "Created at", "timestamp", "s"), ("created_by", "Created by", "actor-reference", "s"),
    ],
    "people": [
        ("record_id", "Record ID", "text", "us"), ("name", "Name", "personal-name", ""),
        ("email_addresses", "Email addresses", "email-address", "mu"),
        ("phone_numbers", "Phone numbers", "phone-number", "m"), ("job_title", "Job title", "text", ""),
        ("company", "Company", "record-reference", ""), ("primary_location", "Primary location", "location", ""),
        ("created_at", "Created at", "timestamp", "s"), ("created_by", "Created by", "actor-reference", "s"),
    ],
    "deals": [
        ("record_id", "Record ID", "text", "us"), ("name", "Deal name", "text", "r"),
        ("stage", "Deal stage", "status", "r"), ("value", "Deal value", "currency", ""),
        ("owner", "Deal owner", "actor-reference", ""),
        ("associated_company", "Associated company", "record-reference", ""),
        ("associated_people", "Associated people", "record-reference", "m"),
        ("created_at", "Created at", "timestamp", "s"), ("created_by", "Created by", "actor-reference", "s"),
    ],
}
_STANDARD_TARGETS = {("companies", "team"): "people", ("people", "company"): "companies",
                     ("deals", "associated_company"): "companies", ("deals", "associated_people"): "people"}
_STANDARD_STATUSES = {("deals", "stage"): ["Lead", "In Progress", "Won 🎉", "Lost"]}
_STANDARD_CURRENCY = {("deals", "value"): "USD"}


def _now() -> str:
    """Attio's timestamps: UTC with nanosecond digits (the emulator's last three are always zero)."""
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


class _Fail(Exception):
    """A request Attio refuses: becomes the standard error body."""

    def __init__(self, status: int, code: str, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind


class _Attribute:
    def __init__(self, definition: dict, workspace_id: str, object_id: str, object_slug: str, *,
                 system: bool = False):
        self.slug = str(definition["api_slug"])
        self.type = str(definition["type"])
        if self.type not in ATTRIBUTE_TYPES:
            raise ValueError(f"attio attribute {object_slug}.{self.slug}: unknown type {self.type!r}")
        self.object = object_slug
        self.multiselect = bool(definition.get("is_multiselect", False))
        self.unique = bool(definition.get("is_unique", False))
        self.required = bool(definition.get("is_required", False))
        self.system = system
        self.writable = bool(definition.get("is_writable", not system))
        self.id = {"workspace_id": workspace_id, "object_id": object_id,
                   "attribute_id": _uid(workspace_id, object_slug, self.slug)}
        self.title = str(definition.get("title") or self.slug.replace("_", " ").capitalize())
        self.description = definition.get("description")
        self.created_at = str(definition.get("created_at") or "2024-01-01T00:00:00.000000000Z")
        self.target = definition.get("target_object")
        self.default_currency = definition.get("default_currency_code")
        # select options and statuses by title
        self.choices: dict[str, dict] = {}
        kind = "status_id" if self.type == "status" else "option_id"
        for title in definition.get("statuses" if self.type == "status" else "options") or []:
            choice = {"id": {**self.id, kind: _uid(self.id["attribute_id"], str(title))}, "title": str(title),
                      "is_archived": False}
            if self.type == "status":
                choice.update(celebration_enabled=str(title).startswith("Won"), target_time_in_status=None)
            self.choices[str(title)] = choice

    def describe(self) -> dict:
        return {
            "id": self.id, "title": self.title, "description": self.description, "api_slug": self.slug,
            "type": self.type, "is_system_attribute": self.system, "is_writable": self.writable,
            "is_required": self.required, "is_unique": self.unique, "is_multiselect": self.multiselect,
            "is_default_value_enabled": False, "is_archived": False, "default_value": None, "relationship": None,
            "created_at": self.created_at,
            "config": {"currency": {"default_currency_code": self.default_currency if self.type == "currency" else None,
                                    "display_type": "symbol" if self.type == "currency" else None},
                       "record_reference": {"allowed_object_ids": None}},
        }


class _Workspace:
    """One tenant's workspace: objects, their attributes and records (record_id -> record, creation order)."""

    def __init__(self, tenant: str, fixtures: dict[str, list[dict]]):
        self.tenant = tenant
        self.workspace_id = _uid("workspace", tenant)
        self.object_ids = {slug: _uid(self.workspace_id, "object", slug) for slug in OBJECTS}
        self.attributes: dict[str, OrderedDict[str, _Attribute]] = {}
        custom: dict[str, list[dict]] = defaultdict(list)
        for definition in fixtures.get("attributes", []):
            if definition.get("object") not in OBJECTS or not definition.get("api_slug") or not definition.get("type"):
                raise ValueError(f"attio attributes of tenant {tenant!r}: each needs object ({', '.join(OBJECTS)}), "
                                 f"api_slug and type; got {definition!r}")
            custom[definition["object"]].append(definition)
        for slug in OBJECTS:
            table: OrderedDict[str, _Attribute] = OrderedDict()
            overrides = {d["api_slug"]: d for d in custom[slug]}
            for api_slug, title, kind, flags in _STANDARD[slug]:
                definition = {"api_slug": api_slug, "title": title, "type": kind, "is_multiselect": "m" in flags,
                              "is_unique": "u" in flags, "is_required": "r" in flags,
                              "target_object": _STANDARD_TARGETS.get((slug, api_slug)),
                              "statuses": _STANDARD_STATUSES.get((slug, api_slug)),
                              "default_currency_code": _STANDARD_CURRENCY.get((slug, api_slug)),
                              **overrides.pop(api_slug, {})}
                table[api_slug] = _Attribute(definition, self.workspace_id, self.object_ids[slug], slug,
                                             system="s" in flags or api_slug == "record_id")
            for api_slug, definition in overrides.items():
                table[api_slug] = _Attribute(definition, self.workspace_id, self.object_ids[slug], slug)
            self.attributes[slug] = table
        self.records: dict[str, OrderedDict[str, dict]] = {}
        for slug in OBJECTS:
            records: OrderedDict[str, dict] = OrderedDict()
            for record in fixtures.get(slug, []):
                rid = (record.get("id") or {}).get("record_id") if isinstance(record.get("id"), dict) else None
                records[str(rid or uuid.uuid4())] = record  # served as given, even without a proper id
            self.records[slug] = records

    def object_slug(self, identifier: str) -> str:
        if identifier in self.records:
            return identifier
        for slug, oid in self.object_ids.items():
            if oid == identifier:
                return slug
        raise _Fail(404, "not_found", f'Object with slug/ID "{identifier}" not found.')

    def describe_object(self, slug: str) -> dict:
        singular, plural = _NOUNS[slug]
        return {"id": {"workspace_id": self.workspace_id, "object_id": self.object_ids[slug]}, "api_slug": slug,
                "singular_noun": singular, "plural_noun": plural, "created_at": "2024-01-01T00:00:00.000000000Z"}


# ----- values: write input -> stored value objects -------------------------------------------------------------------
def _number(raw: Any, what: str) -> int | float:
    if isinstance(raw, bool):
        raise _Fail(400, "validation_type", f"{what}: expected a number, got a boolean")
    if isinstance(raw, (int, float)) and math.isfinite(raw):
        return raw
    if isinstance(raw, str):
        try:
            number = Decimal(raw)
        except InvalidOperation:
            pass
        else:
            if number.is_finite():
                return int(number) if number == number.to_integral_value() and "." not in raw else float(raw)
    raise _Fail(400, "validation_type", f"{what}: expected a number, got {raw!r}")


def _root_domain(domain: str) -> str:
    labels = domain.split(".")
    # naive public-suffix rule: two-letter country second levels (co.uk, com.au) keep three labels
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in {"co", "com", "org", "net", "ac"} else 2
    return ".".join(labels[-keep:])


def _country(raw: Any, what: str) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str) and pycountry.countries.get(alpha_2=raw.upper()):
        return raw.upper()
    raise _Fail(400, "validation_type", f"{what}: {raw!r} is not an ISO 3166-1 alpha-2 country code")


class _Values:
    """Turns the loose write formats Attio accepts into stored value objects, per attribute type."""

    def __init__(self, workspace: _Workspace, actor: dict):
        self.workspace = workspace
        self.actor = actor

    def parse(self, attribute: _Attribute, raw: Any) -> list[dict]:
        items = raw if isinstance(raw, list) else ([] if raw is None else [raw])
        if len(items) > 1 and not attribute.multiselect:
            raise _Fail(400, "validation_type",
                        f'Attribute "{attribute.slug}" is single-select but {len(items)} values were given.')
        what = f'attribute "{attribute.slug}"'
        out: list[dict] = []
        for item in items:
            payload = getattr(self, "_" + attribute.type.replace("-", "_"))(attribute, item, what)
            if all(payload != existing for existing in out):
                out.append(payload)
        return out

    def stamp(self, payload: dict, attribute: _Attribute, at: str) -> dict:
        return {"active_from": at, "active_until": None, "created_by_actor": dict(self.actor), **payload,
                "attribute_type": attribute.type}

    @staticmethod
    def _field(item: Any, key: str) -> Any:
        return item.get(key) if isinstance(item, dict) else item

    def _text(self, a: _Attribute, item: Any, what: str) -> dict:
        value = self._field(item, "value")
        if not isinstance(value, str):
            raise _Fail(400, "validation_type", f"{what}: expected text, got {value!r}")
        return {"value": value}

    def _number(self, a: _Attribute, item: Any, what: str) -> dict:
        return {"value": _number(self._field(item, "value"), what)}

    def _rating(self, a: _Attribute, item: Any, what: str) -> dict:
        value = _number(self._field(item, "value"), what)
        if value not in (0, 1, 2, 3, 4, 5):
            raise _Fail(400, "validation_type", f"{what}: a rating is a whole number 0-5")
        return {"value": int(value)}

    def _checkbox(self, a: _Attribute, item: Any, what: str) -> dict:
        value = self._field(item, "value")
        value = {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
        if not isinstance(value, bool):
            raise _Fail(400, "validation_type", f"{what}: expected a boolean")
        return {"value": value}

    def _date(self, a: _Attribute, item: Any, what: str) -> dict:
        value = self._field(item, "value")
        match = _DATE.match(value) if isinstance(value, str) else None
        if not match:
            raise _Fail(400, "validation_type", f"{what}: expected a date (YYYY-MM-DD)")
        text = match.group(0) + ("-01" * (2 - bool(match.group(1)) - bool(match.group(2))))
        try:
            datetime.strptime(text, "%Y-%m-%d")
        except ValueError:
            raise _Fail(400, "validation_type", f"{what}: {value!r} is not a calendar date") from None
        return {"value": text}

    def _timestamp(self, a: _Attribute, item: Any, what: str) -> dict:
        value = self._field(item, "value")
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise _Fail(400, "validation_type", f"{what}: expected an ISO 8601 timestamp") from None
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        return {"value": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"}

    def _currency(self, a: _Attribute, item: Any, what: str) -> dict:
        amount = _number(self._field(item, "currency_value"), what)
        code = item.get("currency_code") if isinstance(item, dict) else None
        code = code or a.default_currency
        if code is not None and code not in CURRENCY_CODES:
            raise _Fail(400, "validation_type", f"{what}: unsupported currency code {code!r}")
        if round(Decimal(str(amount)), 4) != Decimal(str(amount)):
            raise _Fail(400, "validation_type", f"{what}: a currency value has at most 4 decimal places")
        return {"currency_value": amount, "currency_code": code}

    def _domain(self, a: _Attribute, item: Any, what: str) -> dict:
        value = self._field(item, "domain")
        if not isinstance(value, str) or "." not in value:
            raise _Fail(400, "validation_type", f"{what}: expected a domain, got {value!r}")
        domain = re.sub(r"^[a-z]+://", "", value.strip().lower()).split("/")[0].removeprefix("www.")
        return {"domain": domain, "root_domain": _root_domain(domain)}

    def _email_address(self, a: _Attribute, item: Any, what: str) -> dict:
        value = self._field(item, "email_address")
        if not isinstance(value, str) or not _EMAIL.match(value.strip()):
            raise _Fail(400, "validation_type", f"{what}: {value!r} is not an email address")
        original = value.strip()
        local, _, domain = original.lower().partition("@")
        return {"original_email_address": original, "email_address": original.lower(), "email_domain": domain,
                "email_root_domain": _root_domain(domain), "email_local_specifier": local.split("+")[0]}

    def _personal_name(self, a: _Attribute, item: Any, what: str) -> dict:
        if isinstance(item, str):
            first, _, last = item.strip().partition(" ")
            return {"first_name": first, "last_name": last, "full_name": item.strip()}
        if not isinstance(item, dict):
            raise _Fail(400, "validation_type", f"{what}: expected a name")
        first, last = str(item.get("first_name") or ""), str(item.get("last_name") or "")
        return {"first_name": first, "last_name": last,
                "full_name": str(item.get("full_name") or " ".join(p for p in (first, last) if p))}

    def _phone_number(self, a: _Attribute, item: Any, what: str) -> dict:
        raw = item.get("original_phone_number") if isinstance(item, dict) else item
        if not isinstance(raw, str) or not re.sub(r"[^\d]", "", raw):
            raise _Fail(400, "validation_type", f"{what}: expected a phone number")
        number = "+" + re.sub(r"[^\d]", "", raw) if raw.strip().startswith("+") else re.sub(r"[^\d]", "", raw)
        country = item.get("country_code") if isinstance(item, dict) else None
        if country is None:
            country = next((c for p, c in sorted(_PHONE_PREFIXES.items(), key=lambda kv: -len(kv[0]))
                            if number.startswith(p)), None)
        if country is None:
            raise _Fail(400, "validation_type", f"{what}: give a country_code or an international (+) number")
        return {"original_phone_number": raw, "country_code": _country(country, what), "phone_number": number}

    def _location(self, a: _Attribute, item: Any, what: str) -> dict:
        if not isinstance(item, dict):
            raise _Fail(400, "validation_type", f"{what}: expected a location object")
        out = {key: (None if item.get(key) is None else str(item.get(key))) for key in _LOCATION_FIELDS}
        out["country_code"] = _country(out["country_code"], what)
        return out

    def _record_reference(self, a: _Attribute, item: Any, what: str) -> dict:
        target = item.get("target_object", a.target) if isinstance(item, dict) else a.target
        rid = item.get("target_record_id") if isinstance(item, dict) else item
        if target not in self.workspace.records:
            raise _Fail(400, "value_not_found", f'{what}: cannot find object "{target}".')
        if not isinstance(rid, str) or rid not in self.workspace.records[target]:
            raise _Fail(400, "value_not_found", f'{what}: cannot find {target} record with ID "{rid}".')
        return {"target_object": target, "target_record_id": rid}

    def _choice(self, a: _Attribute, item: Any, what: str, key: str) -> dict:
        wanted = item.get(key, item.get("title")) if isinstance(item, dict) else item
        if isinstance(wanted, dict):
            wanted = wanted.get("title")
        for title, choice in a.choices.items():
            if wanted in (title, choice["id"].get("option_id"), choice["id"].get("status_id")):
                return {key: choice}
        noun = "status" if key == "status" else "select option"
        raise _Fail(400, "value_not_found",
                    f'Cannot find {noun} attribute with {noun} title "{wanted}".')

    def _select(self, a: _Attribute, item: Any, what: str) -> dict:
        return self._choice(a, item, what, "option")

    def _status(self, a: _Attribute, item: Any, what: str) -> dict:
        return self._choice(a, item, what, "status")

    def _actor_reference(self, a: _Attribute, item: Any, what: str) -> dict:
        if isinstance(item, str):
            return {"referenced_actor_type": "workspace-member", "referenced_actor_id": item}
        if isinstance(item, dict) and item.get("referenced_actor_type") in ("api-token", "workspace-member",
                                                                              "system", "app"):
            return {"referenced_actor_type": item["referenced_actor_type"],
                    "referenced_actor_id": item.get("referenced_actor_id")}
        raise _Fail(400, "validation_type", f"{what}: expected an actor reference")

    def _interaction(self, a: _Attribute, item: Any, what: str) -> dict:
        raise _Fail(400, "immutable_value", f"{what}: interaction values are computed by Attio")


def _payload(value: dict) -> dict:
    """A value object without its metadata: what compares equal when a write leaves a value unchanged."""
    return {k: v for k, v in value.items()
            if k not in ("active_from", "active_until", "created_by_actor", "attribute_type")}


def _active(record: dict, slug: str) -> list[dict]:
    values = (record.get("values") or {}).get(slug) or []
    return [v for v in values if isinstance(v, dict) and v.get("active_until") is None]


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _match_key(value: dict, attribute: _Attribute) -> Any:
    found = _dig(value, MAIN_FIELD[attribute.type])
    return found.lower() if isinstance(found, str) else found


# ----- filters and sorts ---------------------------------------------------------------------------------------------
def _comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        try:
            return Decimal(str(a)), Decimal(str(b))
        except InvalidOperation:
            return None
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def _test(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "$not_empty":
        return (actual is not None and actual != "") == bool(expected)
    if operator == "$in":
        if not isinstance(expected, list):
            raise _Fail(400, "filter_error", "$in expects an array")
        return any(_test("$eq", actual, e) for e in expected)
    if actual is None:
        return False
    if operator in ("$contains", "$starts_with", "$ends_with"):
        if not isinstance(expected, str):
            raise _Fail(400, "filter_error", f"{operator} expects a string")
        text, needle = str(actual).lower(), expected.lower()
        return {"$contains": needle in text, "$starts_with": text.startswith(needle),
                "$ends_with": text.endswith(needle)}[operator]
    pair = _comparable(actual, expected)
    if pair is None:
        if operator == "$eq":
            return False
        raise _Fail(400, "filter_error", f"{operator} cannot compare {actual!r} with {expected!r}")
    left, right = pair
    return {"$eq": left == right, "$lt": left < right, "$lte": left <= right, "$gt": left > right,
            "$gte": left >= right}[operator]


class _Filter:
    def __init__(self, workspace: _Workspace, slug: str):
        self.attributes = workspace.attributes[slug]

    def compile(self, spec: Any) -> Callable[[dict], bool]:
        if not isinstance(spec, dict):
            raise _Fail(400, "filter_error", "A filter is an object.")
        parts = [self._clause(key, value) for key, value in spec.items()]
        return lambda record: all(part(record) for part in parts)

    def _clause(self, key: str, value: Any) -> Callable[[dict], bool]:
        if key in ("$and", "$or"):
            if not isinstance(value, list):
                raise _Fail(400, "filter_error", f"{key} expects an array of filters.")
            parts = [self.compile(v) for v in value]
            combine = all if key == "$and" else any
            return lambda record: combine(p(record) for p in parts)
        if key == "$not":
            inner = self.compile(value)
            return lambda record: not inner(record)
        if key.startswith("$"):
            raise _Fail(400, "filter_error", f'Unknown logical operator "{key}".')
        if key == "record_id":
            conditions = self._conditions(value, None)
            return lambda record: all(_test(op, _dig(record, ("id", "record_id")), exp) for _, op, exp in conditions)
        attribute = self.attributes.get(key)
        if attribute is None:
            raise _Fail(400, "filter_error", f'Cannot find attribute with slug/ID "{key}".')
        conditions = self._conditions(value, attribute)

        def clause(record: dict) -> bool:
            values = _record_values(record, attribute)
            if any(op == "$not_empty" and not exp for _, op, exp in conditions):
                return not values
            return any(all(_test(op, _dig(v, path), exp) for path, op, exp in conditions) for v in values)

        return clause

    def _conditions(self, spec: Any, attribute: _Attribute | None) -> list[tuple[tuple[str, ...], str, Any]]:
        main = MAIN_FIELD[attribute.type] if attribute else ()
        if not isinstance(spec, dict):
            return [(main, "$eq", spec)]
        out = []
        for key, expected in spec.items():
            if key in _OPERATORS:
                out.append((main, key, expected))
            elif key.startswith("$"):
                raise _Fail(400, "filter_error", f'Unknown operator "{key}".')
            elif attribute is None:
                raise _Fail(400, "filter_error", f'record_id has no field "{key}".')
            else:
                path = (key, "title") if attribute.type in ("select", "status") and key in ("option", "status") \
                    else (key,)
                if isinstance(expected, dict):
                    bad = [k for k in expected if k not in _OPERATORS]
                    if bad:
                        raise _Fail(400, "filter_error", f'Unknown operator "{bad[0]}".')
                    out.extend((path, op, exp) for op, exp in expected.items())
                else:
                    out.append((path, "$eq", expected))
        return out


def _record_values(record: dict, attribute: _Attribute) -> list[dict]:
    values = _active(record, attribute.slug)
    if not values and attribute.slug == "created_at" and record.get("created_at"):
        return [{"value": record["created_at"]}]
    return values


def _sorted(records: list[dict], sorts: Any, workspace: _Workspace, slug: str) -> list[dict]:
    if sorts is None:
        return records
    if not isinstance(sorts, list):
        raise _Fail(400, "filter_error", "sorts is an array.")
    out = list(records)
    for sort in reversed(sorts):  # a stable sort per key, last key first
        if not isinstance(sort, dict) or sort.get("direction") not in ("asc", "desc"):
            raise _Fail(400, "filter_error", 'Each sort needs a direction, "asc" or "desc".')
        name = sort.get("attribute")
        if name is None and isinstance(sort.get("path"), list) and len(sort["path"]) == 1:
            name = sort["path"][0][1] if len(sort["path"][0]) == 2 else None
        attribute = workspace.attributes[slug].get(name) if isinstance(name, str) else None
        if attribute is None:
            raise _Fail(400, "filter_error", f'Cannot sort by "{name}": no such attribute.')
        path = (sort["field"],) if sort.get("field") else MAIN_FIELD[attribute.type]
        descending = sort["direction"] == "desc"

        def key(record: dict, attribute=attribute, path=path) -> tuple:
            values = _record_values(record, attribute)
            found = _dig(values[0], path) if values else None
            if found is None:
                return (1, 0, "")  # no value: last when ascending
            if isinstance(found, (int, float)) and not isinstance(found, bool):
                return (0, 0, Decimal(str(found)))
            return (0, 1, str(found))

        present = [r for r in out if key(r)[0] == 0]
        missing = [r for r in out if key(r)[0] == 1]
        present.sort(key=key, reverse=descending)
        out = present + missing if not descending else missing + present
    return out


# ----- the emulator --------------------------------------------------------------------------------------------------
class AttioEmulator(Emulator):
    app = "attio"
    collections: ClassVar[frozenset[str]] = frozenset({*OBJECTS, "attributes"})
    # Attio's limits are per second and split reads/writes: the base per-minute window stays off (0) and the
    # emulator counts its own windows when rate limits are enabled.
    default_limits = RateLimits(per_minute=0, concurrent=0)

    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        return {"access_token": attio_access_token(tenant)}

    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        for tenant, collections in fixtures.items():
            unknown = set(collections) - self.collections
            if unknown:
                raise ValueError(f"attio fixtures of tenant {tenant!r}: unknown collections {sorted(unknown)}; "
                                 f"known: {', '.join(sorted(self.collections))}")
        self.data = {tenant: _Workspace(tenant, collections) for tenant, collections in fixtures.items()}
        self._tokens = {attio_access_token(tenant): tenant for tenant in fixtures}
        self.reads_per_second = READS_PER_SECOND
        self.writes_per_second = WRITES_PER_SECOND
        self.clock: Callable[[], float] = time.time  # the rate-limit clock (tests may freeze it)
        self._second_windows: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def routes(self) -> list[Rule]:
        def rule(path: str, handler: str, *methods: str) -> Rule:
            return Rule(path, endpoint="_route", methods=list(methods), defaults={"handler": handler})

        return [
            rule("/v2/self", "get_self", "GET"),
            rule("/v2/objects", "list_objects", "GET"),
            rule("/v2/objects/<object>", "get_object", "GET"),
            rule("/v2/<target>/<object>/attributes", "list_attributes", "GET"),
            rule("/v2/objects/<object>/records/query", "query_records", "POST"),
            rule("/v2/objects/<object>/records", "create_record", "POST"),
            rule("/v2/objects/<object>/records", "assert_record", "PUT"),
            rule("/v2/objects/<object>/records/<record_id>", "get_record", "GET"),
            rule("/v2/objects/<object>/records/<record_id>", "patch_record", "PATCH"),
            rule("/v2/objects/<object>/records/<record_id>", "put_record", "PUT"),
            rule("/v2/objects/<object>/records/<record_id>", "delete_record", "DELETE"),
        ]

    # ----- Attio's answers to the base class ----------------------------------------------------------------------
    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        tenant = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise EmulatorError(self._error(401, "auth_error", "unauthorized",
                                            "Authentication failed: missing or invalid bearer token."))
        return RequestContext(tenant=tenant, extra={"token": token.strip()})

    def error_response(self, status: int, message: str) -> Response:
        kind, code = {
            400: ("invalid_request_error", "validation_type"), 401: ("auth_error", "unauthorized"),
            403: ("auth_error", "forbidden"), 404: ("invalid_request_error", "not_found"),
            405: ("invalid_request_error", "method_not_allowed"), 409: ("invalid_request_error", "conflict"),
            429: ("rate_limit_error", "rate_limit_exceeded"),
        }.get(status, ("api_error", "internal_server_error" if status >= 500 else "error"))
        return self._error(status, kind, code, message)

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        response = self._error(429, "rate_limit_error", "rate_limit_exceeded",
                               "Rate limit exceeded, please try again later")
        if retry_after is not None and retry_after.strip().isdigit():
            retry_after = email.utils.formatdate(self.clock() + int(retry_after), usegmt=True)
        response.headers["Retry-After"] = retry_after or email.utils.formatdate(math.floor(self.clock()) + 1,
                                                                                 usegmt=True)
        return response

    # ----- plumbing ------------------------------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, kind: str, code: str, message: str) -> Response:
        return json_response({"status_code": status, "type": kind, "code": code, "message": message}, status=status)

    def _route(self, request: Request, ctx: RequestContext, handler: str, **args: Any) -> Response:
        write = request.method in ("POST", "PUT", "PATCH", "DELETE") and handler != "query_records"
        self._per_second(ctx.tenant, "write" if write else "read")
        with self.lock:  # one request at a time reads or changes a workspace: simple and consistent
            try:
                return getattr(self, handler)(request, self.data[ctx.tenant], ctx, **args)
            except _Fail as fail:
                return self._error(fail.status, fail.kind, fail.code, fail.message)
            except EmulatorError:
                raise
            except Exception as exc:  # a bad fixture record must not take the emulator down
                return self._error(500, "api_error", "internal_server_error",
                                   f"sandbox: {type(exc).__name__}: {exc}")

    def _per_second(self, tenant: str, kind: str) -> None:
        if not self.limits.enabled:
            return
        limit = self.writes_per_second if kind == "write" else self.reads_per_second
        now = self.clock()
        with self.lock:
            window = self._second_windows[(tenant, kind)]
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                # Attio sends an HTTP date, usually the next second: when the oldest request leaves the window
                free_at = math.ceil(window[0] + 1.0)
                raise EmulatorError(self._throttled_at(free_at))
            window.append(now)

    def _control(self, request: Request) -> Response:
        if request.method == "PUT" and request.path.rstrip("/") == "/_sandbox/rate-limits":
            with self.lock:  # new limits start from empty per-second windows too
                self._second_windows.clear()
        return super()._control(request)

    def _throttled_at(self, moment: float) -> Response:
        response = self.throttled_response("second", None)
        response.headers["Retry-After"] = email.utils.formatdate(moment, usegmt=True)
        return response

    def _body(self, request: Request) -> dict:
        if not request.get_data():
            return {}
        body = self.json_body(request, lambda m: self._error(400, "invalid_request_error", "validation_type", m))
        if not isinstance(body, dict):
            raise _Fail(400, "validation_type", "The request body must be a JSON object.")
        return body

    def _values_body(self, request: Request) -> dict:
        data = self._body(request).get("data")
        if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
            raise _Fail(400, "validation_type", 'Body must be {"data": {"values": {...}}}.')
        return data["values"]

    @staticmethod
    def _record(record: dict, status: int = 200) -> Response:
        return json_response({"data": record}, status=status)

    @staticmethod
    def _find(ws: _Workspace, slug: str, record_id: str) -> dict:
        record = ws.records[slug].get(record_id)
        if record is None:
            raise _Fail(404, "not_found", f'Record with ID "{record_id}" not found.')
        return record

    @staticmethod
    def _actor(ctx: RequestContext) -> dict:
        return {"type": "api-token", "id": _uid("token", ctx.extra["token"])}

    # ----- reads ---------------------------------------------------------------------------------------------------
    def get_self(self, request: Request, ws: _Workspace, ctx: RequestContext) -> Response:
        return json_response({
            "active": True, "scope": "record_permission:read-write object_configuration:read",
            "client_id": _uid("client", ws.tenant), "token_type": "Bearer", "exp": None, "iat": 1704067200,
            "sub": ws.workspace_id, "aud": _uid("client", ws.tenant), "iss": "attio.com",
            "authorized_by_workspace_member_id": _uid("member", ws.tenant), "workspace_id": ws.workspace_id,
            "workspace_name": ws.tenant, "workspace_slug": ws.tenant, "workspace_logo_url": None,
        })

    def list_objects(self, request: Request, ws: _Workspace, ctx: RequestContext) -> Response:
        return json_response({"data": [ws.describe_object(slug) for slug in OBJECTS]})

    def get_object(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str) -> Response:
        return json_response({"data": ws.describe_object(ws.object_slug(object))})

    def list_attributes(self, request: Request, ws: _Workspace, ctx: RequestContext, target: str,
                        object: str) -> Response:
        if target != "objects":
            raise _Fail(404, "not_found", f'List with slug/ID "{object}" not found.')
        slug = ws.object_slug(object)
        attributes = [a.describe() for a in ws.attributes[slug].values()]
        offset = _int_arg(request.args.get("offset"), 0)
        limit = _int_arg(request.args.get("limit"), len(attributes))
        return json_response({"data": attributes[offset:offset + limit]})

    def query_records(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str) -> Response:
        slug = ws.object_slug(object)
        body = self._body(request)
        limit, offset = body.get("limit", DEFAULT_QUERY_LIMIT), body.get("offset", 0)
        for name, number in (("limit", limit), ("offset", offset)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < (name == "limit") \
                    or number != int(number):
                raise _Fail(400, "validation_type", f"{name} must be a whole number >= {int(name == 'limit')}.")
        records = list(ws.records[slug].values())
        if body.get("filter") is not None:
            predicate = _Filter(ws, slug).compile(body["filter"])
            records = [r for r in records if predicate(r)]
        records = _sorted(records, body.get("sorts"), ws, slug)
        page = records[int(offset):int(offset) + int(limit)]
        return json_response({"data": page})

    def get_record(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str,
                   record_id: str) -> Response:
        slug = ws.object_slug(object)
        return self._record(self._find(ws, slug, record_id))

    # ----- writes --------------------------------------------------------------------------------------------------
    def create_record(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str) -> Response:
        slug = ws.object_slug(object)
        record = self._create(ws, slug, self._values_body(request), ctx)
        self.record_write(ws.tenant, "create", slug, record["id"]["record_id"])
        return self._record(record)

    def assert_record(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str) -> Response:
        slug = ws.object_slug(object)
        matching = request.args.get("matching_attribute")
        if not matching:
            raise _Fail(400, "validation_type", "The matching_attribute query parameter is required.")
        attribute = ws.attributes[slug].get(matching)
        if attribute is None:
            raise _Fail(404, "not_found", f'Cannot find attribute with slug/ID "{matching}".')
        if not attribute.unique:
            raise _Fail(400, "validation_type", f'Matching attribute "{matching}" must be a unique attribute.')
        values = self._values_body(request)
        if values.get(matching) in (None, []):
            raise _Fail(400, "missing_value", f'The request must carry a value for matching attribute "{matching}".')
        parser = _Values(ws, self._actor(ctx))
        wanted = {_match_key(v, attribute) for v in parser.parse(attribute, values[matching])}
        found = [r for r in ws.records[slug].values()
                 if wanted & {_match_key(v, attribute) for v in _active(r, matching)}]
        if len(found) > 1:
            raise _Fail(400, "validation_type", f'More than one record matches on "{matching}".')
        if not found:
            record = self._create(ws, slug, values, ctx)
            self.record_write(ws.tenant, "create", slug, record["id"]["record_id"], via="assert",
                              matching_attribute=matching)
            return self._record(record)
        record = found[0]
        # the matching multiselect attribute keeps its values (new ones are added); others are replaced
        self._update(ws, slug, record, values, ctx, append=frozenset({matching}))
        self.record_write(ws.tenant, "update", slug, record["id"]["record_id"], via="assert",
                          matching_attribute=matching)
        return self._record(record)

    def patch_record(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str,
                     record_id: str) -> Response:
        slug = ws.object_slug(object)
        record = self._find(ws, slug, record_id)
        self._update(ws, slug, record, self._values_body(request), ctx, append=None)
        self.record_write(ws.tenant, "update", slug, record_id, via="patch")
        return self._record(record)

    def put_record(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str,
                   record_id: str) -> Response:
        slug = ws.object_slug(object)
        record = self._find(ws, slug, record_id)
        self._update(ws, slug, record, self._values_body(request), ctx, append=frozenset())
        self.record_write(ws.tenant, "update", slug, record_id, via="put")
        return self._record(record)

    def delete_record(self, request: Request, ws: _Workspace, ctx: RequestContext, object: str,
                      record_id: str) -> Response:
        slug = ws.object_slug(object)
        self._find(ws, slug, record_id)
        del ws.records[slug][record_id]
        self.record_write(ws.tenant, "delete", slug, record_id)
        return json_response({})

    # ----- value application ----------------------------------------------------------------------------------------
    def _parse_all(self, ws: _Workspace, slug: str, values: dict, parser: _Values) -> dict[str, list[dict]]:
        parsed: dict[str, list[dict]] = {}
        for key, raw in values.items():
            attribute = ws.attributes[slug].get(key)
            if attribute is None:
                raise _Fail(400, "value_not_found", f'Cannot find attribute with slug/ID "{key}".')
            if not attribute.writable:
                raise _Fail(400, "immutable_value", f'Attribute "{key}" is not writable.')
            parsed[key] = parser.parse(attribute, raw)
        return parsed

    def _check_unique(self, ws: _Workspace, slug: str, parsed: dict[str, list[dict]], own_id: str | None) -> None:
        for key, payloads in parsed.items():
            attribute = ws.attributes[slug][key]
            if not attribute.unique or not payloads:
                continue
            keys = {_match_key(p, attribute) for p in payloads}
            for rid, other in ws.records[slug].items():
                if rid != own_id and keys & {_match_key(v, attribute) for v in _active(other, key)}:
                    raise _Fail(409, "uniqueness_conflict",
                                f'The value for unique attribute "{key}" is already taken by record "{rid}".')

    def _create(self, ws: _Workspace, slug: str, values: dict, ctx: RequestContext) -> dict:
        parser = _Values(ws, self._actor(ctx))
        parsed = self._parse_all(ws, slug, values, parser)
        for attribute in ws.attributes[slug].values():
            if attribute.required and not parsed.get(attribute.slug):
                raise _Fail(400, "missing_value", f'Required value for attribute "{attribute.slug}" was not provided.')
        self._check_unique(ws, slug, parsed, None)
        at = _now()
        record_id = str(uuid.uuid4())
        stored: dict[str, list[dict]] = {}
        for key, attribute in ws.attributes[slug].items():
            if key == "record_id":
                stored[key] = [parser.stamp({"value": record_id}, attribute, at)]
            elif key == "created_at":
                stored[key] = [parser.stamp({"value": at}, attribute, at)]
            elif key == "created_by":
                stored[key] = [parser.stamp({"referenced_actor_type": "api-token",
                                             "referenced_actor_id": parser.actor["id"]}, attribute, at)]
            else:
                stored[key] = [parser.stamp(p, attribute, at) for p in parsed.get(key, [])]
        record = {"id": {"workspace_id": ws.workspace_id, "object_id": ws.object_ids[slug], "record_id": record_id},
                  "created_at": at, "web_url": f"https://app.attio.com/{ws.tenant}/{slug}/{record_id}",
                  "values": stored}
        ws.records[slug][record_id] = record
        return record

    def _update(self, ws: _Workspace, slug: str, record: dict, values: dict, ctx: RequestContext, *,
                append: frozenset[str] | None) -> None:
        """append=None: every multiselect attribute adds values (PATCH); otherwise only the named ones do."""
        parser = _Values(ws, self._actor(ctx))
        parsed = self._parse_all(ws, slug, values, parser)
        for key, payloads in parsed.items():
            if ws.attributes[slug][key].required and not payloads:
                raise _Fail(400, "missing_value", f'Required attribute "{key}" cannot be cleared.')
        self._check_unique(ws, slug, parsed, record["id"]["record_id"])
        at = _now()
        current = record.setdefault("values", {})
        for key, payloads in parsed.items():
            attribute = ws.attributes[slug][key]
            old = _active(record, key)
            adds = attribute.multiselect and payloads and (append is None or key in append)
            keep = old if adds else [v for v in old if _payload(v) in payloads]
            kept = [_payload(v) for v in keep]
            current[key] = keep + [parser.stamp(p, attribute, at) for p in payloads if p not in kept]


def _int_arg(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Fail(400, "validation_type", f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise _Fail(400, "validation_type", "limit and offset are not negative")
    return value
