"""HubSpot CRM API emulator: objects v3 (companies, contacts, deals), search, batch, associations v4 between
deals and companies (and contacts and companies), and the properties API with custom properties.

Emulated (see ../shared/vendors/hubspot.md and the official specs in ../shared/specs/hubspot/):
  - Auth: `Authorization: Bearer <private-app token>`; the token names the portal (tenant), see
    `identity.hubspot_access_token`. A wrong or missing token is 401 INVALID_AUTHENTICATION.
  - Records `{id, properties, createdAt, updatedAt, archived[, archivedAt][, associations]}`; every property value
    is a string; a requested property that exists but is unset comes back as null; unknown requested properties
    are left out; without `properties=` a small default set per type is returned.
  - `GET /crm/v3/objects/{type}` pages with `after` (the next id, as HubSpot does: last id + 1), `limit`
    default 10, max 100 (more is a 400). `archived=true` lists ONLY archived records (with `archivedAt`);
    that listing is the only place archived records show up.
  - Object types by name or id: companies (0-2), contacts (0-1), deals (0-3).
  - `POST /crm/v3/objects/{type}/search`: filterGroups (OR of ANDed filters; ≤ 6 groups, ≤ 6 filters per
    group, ≤ 18 filters), every operator of the spec, typed comparisons (datetime values as epoch ms or ISO),
    sorts as objects or strings ("-name" descending), `query` token search, `limit` ≤ 200, `after` an offset;
    never returns archived records; results stop at 10,000: `paging.next.after` may say "10000", and asking
    for it is a 400. Contacts keep `lastmodifieddate` current; their `hs_lastmodifieddate` is set at creation
    and then left alone, so an incremental search on it silently misses updated contacts (the reported trap).
  - Single create (201) / read (`idProperty`) / PATCH (empty string clears) / DELETE (archive, 204).
  - Batch read/create/update/upsert/archive, ≤ 100 inputs. Invalid property values fail the whole request
    (400 VALIDATION_ERROR, nothing written); a duplicate unique value on create is a 409 CONFLICT (contacts:
    "Contact already exists. Existing ID: …"); ids that do not exist (and, on update/upsert, a unique value
    another record holds) are reported per input in a 207 multi-status body (`errors[]` of StandardError,
    `numErrors`) while the other inputs apply. Upsert needs an `idProperty` whose property has
    `hasUniqueValue` (contacts may use `email`).
  - Associations v4 (HUBSPOT_DEFINED type ids): deal→company 341 (primary 5), company→deal 342 (primary 6),
    contact→company 279 (primary 1), company→contact 280 (primary 2). PUT labelled/default, GET per object,
    batch read (207 for unknown ids) / create / associate-default / archive, DELETE. A primary link implies the
    unlabelled one; one primary company per deal/contact. Links to archived records are hidden.
  - Properties API: list / read / create (201; 409 if it exists) / update / archive, with the spec's type and
    fieldType enums, enumeration options, `hasUniqueValue`. A created property can then be written and read.
  - Errors `{status: "error", message, correlationId, category[, errors][, context]}`.
  - Rate limit (only when rate_limits=True): 100 requests per rolling 10 s per portal, 429 with
    `{status, message, errorType: "RATE_LIMIT", correlationId, policyName: "TEN_SECONDLY_ROLLING", requestId,
    category: "RATE_LIMITS"}` and no Retry-After; search also allows only 5 requests per second (policy
    "SECONDLY"). Non-search answers carry `X-HubSpot-RateLimit-*` headers.
  - Every state change goes to the write log (`record_write`).

Fixture collections under <tenant>/hubspot/:
  companies.json, contacts.json, deals.json  records as the API returns them (ids are digit strings).
      Missing `hs_object_id`, `createdate`, modification-date properties are filled from id/createdAt/updatedAt.
  associations.json  deal→company links, each shaped like one result of
      `POST /crm/v4/associations/deals/companies/batch/read`:
      {"from": {"id": "<dealId>"}, "to": [{"toObjectId": "<companyId>",
       "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
                            {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": null}]}]}
      (typeId 5 makes it the deal's primary company; a bare 341 is an unlabelled link).
  properties.json  custom property definitions, each a Property as the properties API returns it plus
      `"objectType": "companies" | "contacts" | "deals"` (sandbox-only key, not echoed).

Simplifications: no eventual consistency delay on search; no propertiesWithHistory, merge, GDPR delete,
restore of archived records, property groups, daily limits or OAuth token endpoint (private-app tokens do not
expire; `expired_token` faults still answer 401 EXPIRED_AUTHENTICATION); `after` of the plain listing is the
next id rather than an opaque token.
"""

from __future__ import annotations

import bisect
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import orjson
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from connectors.sandbox import identity
from connectors.sandbox.emulator import Emulator, EmulatorError, RateLimits, RequestContext, json_response

OBJECT_TYPES = {"companies": "companies", "0-2": "companies", "contacts": "contacts", "0-1": "contacts",
                "deals": "deals", "0-3": "deals", "company": "companies", "contact": "contacts", "deal": "deals"}
TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3"}
SINGULAR = {"companies": "company", "contacts": "contact", "deals": "deal"}
# (from, to) -> (unlabelled typeId, primary typeId)
ASSOCIATION_TYPES = {
    ("deals", "companies"): (341, 5), ("companies", "deals"): (342, 6),
    ("contacts", "companies"): (279, 1), ("companies", "contacts"): (280, 2),
}
# the side that may have only one primary link (a deal's / a contact's primary company)
_PRIMARY_OWNER = {("deals", "companies"): "deals", ("contacts", "companies"): "contacts"}
MODIFIED = {"companies": "hs_lastmodifieddate", "contacts": "lastmodifieddate", "deals": "hs_lastmodifieddate"}
DEFAULT_PROPERTIES = {
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"),
    "contacts": ("firstname", "lastname", "email", "createdate", "lastmodifieddate", "hs_object_id"),
    "deals": ("dealname", "amount", "closedate", "pipeline", "dealstage", "createdate", "hs_lastmodifieddate",
              "hs_object_id"),
}
SEARCHABLE = {"companies": ("name", "domain", "website", "phone"), "contacts": ("firstname", "lastname", "email",
              "phone", "company"), "deals": ("dealname",)}
READ_ONLY = frozenset({"hs_object_id", "hs_lastmodifieddate", "lastmodifieddate", "createdate"})
DEAL_STAGES = ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin",
               "contractsent", "closedwon", "closedlost")

PROPERTY_TYPES = ("bool", "date", "datetime", "enumeration", "number", "phone_number", "string")
FIELD_TYPES = ("booleancheckbox", "calculation_equation", "checkbox", "date", "file", "html", "number",
               "phonenumber", "radio", "select", "text", "textarea")
_FIELD_TYPES_FOR = {
    "bool": {"booleancheckbox", "select", "radio"},
    "date": {"date"}, "datetime": {"date"},
    "enumeration": {"booleancheckbox", "checkbox", "radio", "select"},
    "number": {"number", "calculation_equation", "text"},
    "phone_number": {"phonenumber", "text"},
    "string": {"text", "textarea", "html", "file", "phonenumber", "calculation_equation"},
}
OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY",
                       "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"})
SEARCH_CAP = 10_000
MAX_LIST_LIMIT = 100
MAX_SEARCH_LIMIT = 200
MAX_BATCH = 100
MAX_ASSOCIATION_LIMIT = 500
SEARCH_PER_SECOND = 5
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_TOKEN = re.compile(r"[^\W_]+(?:[._@-][^\W_]+)*", re.UNICODE)


def _std(name: str, label: str, type_: str, field_type: str, group: str, *, options: Iterable[str] = (),
         unique: bool = False, read_only: bool = False) -> dict:
    return {"name": name, "label": label, "type": type_, "fieldType": field_type, "groupName": group,
            "description": "", "options": [{"label": o, "value": o, "hidden": False, "displayOrder": i}
                                           for i, o in enumerate(options)],
            "hasUniqueValue": unique, "hidden": False, "displayOrder": -1, "calculated": False,
            "externalOptions": False, "formField": not read_only, "hubspotDefined": True,
            "createdAt": "2019-08-06T02:41:52.000Z", "updatedAt": "2019-08-06T02:41:52.000Z",
            "modificationMetadata": {"archivable": False, "readOnlyDefinition": True, "readOnlyValue": read_only}}


def _standard_properties() -> dict[str, dict[str, dict]]:
    common = [
        ("hs_object_id", "Record ID", "number", "number", True),
        ("createdate", "Create Date", "datetime", "date", True),
    ]
    spec = {
        "companies": [("name", "Name", "string", "text"), ("domain", "Company Domain Name", "string", "text"),
                      ("website", "Website URL", "string", "text"), ("phone", "Phone Number", "string", "text"),
                      ("address", "Street Address", "string", "text"), ("city", "City", "string", "text"),
                      ("zip", "Postal Code", "string", "text"), ("state", "State/Region", "string", "text"),
                      ("country", "Country/Region", "string", "text"), ("industry", "Industry", "string", "text"),
                      ("annualrevenue", "Annual Revenue", "number", "number"),
                      ("numberofemployees", "Number of Employees", "number", "number"),
                      ("lifecyclestage", "Lifecycle Stage", "string", "text"),
                      ("description", "Description", "string", "textarea"),
                      ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", True)],
        "contacts": [("email", "Email", "string", "text"), ("firstname", "First Name", "string", "text"),
                     ("lastname", "Last Name", "string", "text"), ("company", "Company Name", "string", "text"),
                     ("phone", "Phone Number", "string", "text"), ("jobtitle", "Job Title", "string", "text"),
                     ("lifecyclestage", "Lifecycle Stage", "string", "text"),
                     ("associatedcompanyid", "Primary Associated Company ID", "number", "number"),
                     ("lastmodifieddate", "Last Modified Date", "datetime", "date", True),
                     ("hs_lastmodifieddate", "Object last modified date/time", "datetime", "date", True)],
        "deals": [("dealname", "Deal Name", "string", "text"), ("amount", "Amount", "number", "number"),
                  ("closedate", "Close Date", "datetime", "date"),
                  ("pipeline", "Pipeline", "enumeration", "select", ("default",)),
                  ("dealstage", "Deal Stage", "enumeration", "radio", DEAL_STAGES),
                  ("deal_currency_code", "Currency", "string", "text"),
                  ("description", "Deal Description", "string", "textarea"),
                  ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", True)],
    }
    out: dict[str, dict[str, dict]] = {}
    for object_type, fields in spec.items():
        group = f"{SINGULAR[object_type]}information"
        props: dict[str, dict] = {}
        for name, label, type_, field_type, *rest in [*common, *fields]:
            options: tuple = ()
            read_only = False
            for extra in rest:
                if isinstance(extra, bool):
                    read_only = extra
                else:
                    options = extra
            props[name] = _std(name, label, type_, field_type, group, options=options, read_only=read_only,
                               unique=name == "email")
        out[object_type] = props
    return out


# ----- values ---------------------------------------------------------------------------------------------------------
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"


def _epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds from a digit string or an ISO date/datetime; None if it is neither."""
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(round(moment.timestamp() * 1000))


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _id_key(record_id: str) -> int:
    return int(record_id)


class _Failure(Exception):
    """One input's problem inside a batch (becomes an entry of a 207 body or a 400/409)."""

    def __init__(self, status: int, category: str, message: str, *, code: str | None = None,
                 context: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.status, self.category, self.message, self.code, self.context = status, category, message, code, context


# ----- one portal (tenant) ----------------------------------------------------------------------------------------
class _Portal:
    def __init__(self, tenant: str, fixtures: dict[str, list[dict]], now: float):
        self.tenant = tenant
        self.properties = _standard_properties()
        self.records: dict[str, dict[str, dict]] = {t: {} for t in TYPE_IDS}
        self.order: dict[str, list[int]] = {t: [] for t in TYPE_IDS}
        # unordered pair (sorted by type name) -> set of labels {"unlabeled", "primary"}
        self.links: dict[tuple[str, str, str, str], set[str]] = {}
        self.by_object: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # (type, id, to type) -> ids
        self.version = 0
        self.search_cache: dict[Any, list[dict]] = {}
        # (type, unique property) -> value -> id of the live record holding it; built on first use, then kept
        self.unique: dict[tuple[str, str], dict[str, str]] = {}
        for definition in fixtures.get("properties", []):
            definition = dict(definition)
            object_type = OBJECT_TYPES.get(str(definition.pop("objectType", "")))
            if object_type is None:
                raise ValueError(f"{tenant}/hubspot/properties.json: every property needs an objectType "
                                 f"(companies, contacts or deals): {definition.get('name')!r}")
            self.properties[object_type][definition["name"]] = _complete_definition(definition, _iso(now))
        for object_type in TYPE_IDS:
            for record in fixtures.get(object_type, []):
                self._load_record(object_type, record)
        for link in fixtures.get("associations", []):
            deal_id = str(link["from"]["id"])
            for target in link.get("to", []):
                type_ids = {t.get("typeId") for t in target.get("associationTypes", [])}
                labels = {"unlabeled"} | ({"primary"} if 5 in type_ids else set())
                self.link("deals", deal_id, "companies", str(target["toObjectId"]), labels)
        top = max((max(ids) for ids in self.order.values() if ids), default=0)
        self.next_id = top + 1 if top else 10_000_000_001

    def _load_record(self, object_type: str, record: dict) -> None:
        rid = str(record["id"])
        if not rid.isdigit():
            raise ValueError(f"{self.tenant}/hubspot/{object_type}.json: ids are digit strings, not {rid!r}")
        props = {k: (None if v is None else str(v)) for k, v in (record.get("properties") or {}).items()}
        created = record.get("createdAt") or props.get("createdate") or _iso(0)
        updated = record.get("updatedAt") or props.get(MODIFIED[object_type]) or created
        props.setdefault("hs_object_id", rid)
        props.setdefault("createdate", created)
        props.setdefault(MODIFIED[object_type], updated)
        if object_type == "contacts":
            props.setdefault("hs_lastmodifieddate", created)
        stored = {"id": rid, "properties": props, "createdAt": created, "updatedAt": updated,
                  "archived": bool(record.get("archived", False))}
        if stored["archived"]:
            stored["archivedAt"] = record.get("archivedAt") or updated
        self.insert(object_type, stored)

    def insert(self, object_type: str, stored: dict) -> None:
        self.records[object_type][stored["id"]] = stored
        bisect.insort(self.order[object_type], _id_key(stored["id"]))
        self.version += 1

    def unique_index(self, object_type: str, prop: str) -> dict[str, str]:
        index = self.unique.get((object_type, prop))
        if index is None:
            index = {}
            for stored in self.records[object_type].values():
                value = stored["properties"].get(prop)
                if value and not stored["archived"]:
                    index.setdefault(value, stored["id"])
            self.unique[(object_type, prop)] = index
        return index

    def reindex(self, object_type: str, stored: dict, old: dict[str, Any]) -> None:
        """Keeps the unique-value indexes in step after a record's values (or archived flag) changed."""
        for (kind, prop), index in self.unique.items():
            if kind != object_type:
                continue
            if old.get(prop) and index.get(old[prop]) == stored["id"]:
                del index[old[prop]]
            value = stored["properties"].get(prop)
            if value and not stored["archived"]:
                index[value] = stored["id"]

    def new_id(self) -> str:
        rid = self.next_id
        self.next_id += 1
        return str(rid)

    def changed(self) -> None:
        self.version += 1
        self.search_cache.clear()

    # ----- associations -----------------------------------------------------------------------------------------
    @staticmethod
    def pair_key(a_type: str, a_id: str, b_type: str, b_id: str) -> tuple[str, str, str, str]:
        return (a_type, a_id, b_type, b_id) if a_type < b_type else (b_type, b_id, a_type, a_id)

    def link(self, a_type: str, a_id: str, b_type: str, b_id: str, labels: set[str]) -> None:
        owner = _PRIMARY_OWNER.get((a_type, b_type)) or _PRIMARY_OWNER.get((b_type, a_type))
        if "primary" in labels and owner is not None:
            owner_id, other_type = (a_id, b_type) if owner == a_type else (b_id, a_type)
            for other in list(self.by_object[(owner, owner_id, other_type)]):  # one primary per owner
                key = self.pair_key(owner, owner_id, other_type, other)
                self.links.get(key, set()).discard("primary")
        key = self.pair_key(a_type, a_id, b_type, b_id)
        self.links.setdefault(key, set()).update(labels | {"unlabeled"})
        self.by_object[(a_type, a_id, b_type)].add(b_id)
        self.by_object[(b_type, b_id, a_type)].add(a_id)
        self.changed()

    def unlink(self, a_type: str, a_id: str, b_type: str, b_id: str) -> bool:
        existed = self.links.pop(self.pair_key(a_type, a_id, b_type, b_id), None) is not None
        self.by_object[(a_type, a_id, b_type)].discard(b_id)
        self.by_object[(b_type, b_id, a_type)].discard(a_id)
        self.changed()
        return existed

    def linked(self, from_type: str, from_id: str, to_type: str) -> list[tuple[str, set[str]]]:
        """(to id, labels) for live records only, in id order."""
        out = []
        for to_id in sorted(self.by_object.get((from_type, from_id, to_type), ()), key=_id_key):
            target = self.records[to_type].get(to_id)
            if target is None or target["archived"]:
                continue
            out.append((to_id, self.links[self.pair_key(from_type, from_id, to_type, to_id)]))
        return out


def _complete_definition(definition: dict, now: str) -> dict:
    out = {"description": "", "options": [], "hasUniqueValue": False, "hidden": False, "displayOrder": -1,
           "calculated": False, "externalOptions": False, "formField": True, "hubspotDefined": False,
           "createdAt": now, "updatedAt": now, "archived": False,
           "modificationMetadata": {"archivable": True, "readOnlyDefinition": False, "readOnlyValue": False},
           **definition}
    out["options"] = [{"hidden": False, "displayOrder": i, **o} for i, o in enumerate(out.get("options") or [])]
    return out


def _association_types(from_type: str, to_type: str, labels: set[str]) -> list[dict]:
    unlabeled, primary = ASSOCIATION_TYPES[(from_type, to_type)]
    types = []
    if "primary" in labels:
        types.append({"category": "HUBSPOT_DEFINED", "typeId": primary, "label": "Primary"})
    types.append({"category": "HUBSPOT_DEFINED", "typeId": unlabeled, "label": None})
    return types


# ----- the emulator -----------------------------------------------------------------------------------------------
class HubSpotEmulator(Emulator):
    app = "hubspot"
    collections = frozenset({"companies", "contacts", "deals", "associations", "properties"})
    # 100 requests per rolling 10 seconds per portal (public apps / Free & Starter private apps)
    default_limits: ClassVar[RateLimits] = RateLimits(per_minute=100, window_seconds=10.0)

    def __init__(self, fixtures: dict[str, dict[str, list[dict]]], *, rate_limits: bool = False,
                 clock: Callable[[], float] = time.time):
        self.clock = clock  # injectable, so tests can make modification dates move
        self._search_windows: dict[str, deque[float]] = defaultdict(deque)
        super().__init__(fixtures, rate_limits=rate_limits)

    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        return {"access_token": identity.hubspot_access_token(tenant)}

    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        now = self.clock()
        self.portals = {tenant: _Portal(tenant, collections or {}, now) for tenant, collections in fixtures.items()}
        self.portal_by_token = {identity.hubspot_access_token(t): t for t in self.portals}
        self.tenants = sorted(self.portals)

    def routes(self) -> list[Rule]:
        objects = "/crm/v3/objects/<object_type>"
        v4 = "/crm/v4/objects/<object_type>/<object_id>/associations"
        return [
            Rule(objects, endpoint="list_objects", methods=["GET"]),
            Rule(objects, endpoint="create_object", methods=["POST"]),
            Rule(f"{objects}/search", endpoint="search", methods=["POST"]),
            Rule(f"{objects}/batch/<op>", endpoint="batch", methods=["POST"]),
            Rule(f"{objects}/<object_id>", endpoint="get_object", methods=["GET"]),
            Rule(f"{objects}/<object_id>", endpoint="update_object", methods=["PATCH"]),
            Rule(f"{objects}/<object_id>", endpoint="archive_object", methods=["DELETE"]),
            Rule(f"{v4}/<to_type>", endpoint="list_associations", methods=["GET"]),
            Rule(f"{v4}/default/<to_type>/<to_id>", endpoint="associate_default", methods=["PUT"]),
            Rule(f"{v4}/<to_type>/<to_id>", endpoint="associate", methods=["PUT"]),
            Rule(f"{v4}/<to_type>/<to_id>", endpoint="dissociate", methods=["DELETE"]),
            Rule("/crm/v4/associations/<object_type>/<to_type>/batch/<path:op>", endpoint="batch_associations",
                 methods=["POST"]),
            Rule("/crm/v3/properties/<object_type>", endpoint="list_properties", methods=["GET"]),
            Rule("/crm/v3/properties/<object_type>", endpoint="create_property", methods=["POST"]),
            Rule("/crm/v3/properties/<object_type>/<name>", endpoint="get_property", methods=["GET"]),
            Rule("/crm/v3/properties/<object_type>/<name>", endpoint="update_property", methods=["PATCH"]),
            Rule("/crm/v3/properties/<object_type>/<name>", endpoint="archive_property", methods=["DELETE"]),
        ]

    # ----- the base class's hooks -----------------------------------------------------------------------------------
    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise EmulatorError(_error(401, "INVALID_AUTHENTICATION",
                                       "Authentication credentials not found. This API supports OAuth 2.0 "
                                       "authentication and you can find more details at "
                                       "https://developers.hubspot.com/docs/methods/auth/oauth-overview"))
        tenant = self.portal_by_token.get(token.strip())
        if tenant is None:
            raise EmulatorError(_error(401, "INVALID_AUTHENTICATION",
                                       "The OAuth token used to make this call is invalid or has been revoked."))
        return RequestContext(tenant=tenant)

    def error_response(self, status: int, message: str) -> Response:
        category = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION", 403: "MISSING_SCOPES",
                    404: "OBJECT_NOT_FOUND", 405: "VALIDATION_ERROR", 409: "CONFLICT",
                    429: "RATE_LIMITS"}.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
        if status == 429:
            return self.throttled_response("injected", None)
        return _error(status, category, message)

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        policy, message = {
            "secondly": ("SECONDLY", "You have reached your secondly limit."),
            "daily": ("DAILY", "You have reached your daily limit."),
        }.get(reason, ("TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit."))
        body = {"status": "error", "message": message, "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                "policyName": policy, "requestId": str(uuid.uuid4()), "category": "RATE_LIMITS"}
        response = json_response(body, status=429)
        if reason == "injected" and retry_after is not None:  # HubSpot sends none; only an armed fault asks
            response.headers["Retry-After"] = retry_after
        return response

    def expired_token_response(self) -> Response:
        return _error(401, "EXPIRED_AUTHENTICATION", "The OAuth token used to make this call expired.")

    # ----- helpers ------------------------------------------------------------------------------------------------
    def _portal(self, ctx: RequestContext) -> _Portal:
        return self.portals[ctx.tenant]

    @staticmethod
    def _type(name: str) -> str:
        object_type = OBJECT_TYPES.get(name.lower())
        if object_type is None:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"Unable to infer object type from: {name}"))
        return object_type

    def _body(self, request: Request) -> Any:
        return self.json_body(request, lambda m: _error(400, "VALIDATION_ERROR", f"Invalid input JSON: {m}"))

    def _ok(self, body: Any, ctx: RequestContext, status: int = 200) -> Response:
        """A success answer with the rolling-window headers HubSpot puts on non-search responses."""
        response = json_response(body, status=status)
        used = len(self._windows.get(ctx.tenant, ())) if self.limits.enabled else 0
        response.headers["X-HubSpot-RateLimit-Max"] = str(self.limits.per_minute or 100)
        response.headers["X-HubSpot-RateLimit-Remaining"] = str(max(0, (self.limits.per_minute or 100) - used))
        response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(self.limits.window_seconds * 1000))
        return response

    def _now(self) -> str:
        return _iso(self.clock())

    def _requested(self, object_type: str, names: Iterable[str] | None) -> list[str]:
        names = [n for n in (names or []) if n]
        return list(names) if names else list(DEFAULT_PROPERTIES[object_type])

    @staticmethod
    def _query_list(request: Request, key: str) -> list[str]:
        return [part.strip() for value in request.args.getlist(key) for part in value.split(",") if part.strip()]

    def _render(self, portal: _Portal, object_type: str, stored: dict, names: list[str],
                associations: Iterable[str] = ()) -> dict:
        known = portal.properties[object_type]
        props = {n: stored["properties"].get(n) for n in names if n in known or n in stored["properties"]}
        out = {"id": stored["id"], "properties": props, "createdAt": stored["createdAt"],
               "updatedAt": stored["updatedAt"], "archived": stored["archived"]}
        if stored["archived"]:
            out["archivedAt"] = stored["archivedAt"]
        assoc: dict[str, dict] = {}
        for raw in associations:
            to_type = OBJECT_TYPES.get(raw)
            if to_type is None or (object_type, to_type) not in ASSOCIATION_TYPES:
                continue
            results = []
            for to_id, labels in portal.linked(object_type, stored["id"], to_type):
                singular = f"{SINGULAR[object_type]}_to_{SINGULAR[to_type]}"
                if "primary" in labels:
                    results.append({"id": to_id, "type": singular})
                results.append({"id": to_id, "type": f"{singular}_unlabeled"})
            if results:
                assoc[raw] = {"results": results}
        if assoc:
            out["associations"] = assoc
        return out

    def _find(self, portal: _Portal, object_type: str, key: str, id_property: str | None = None, *,
              archived: bool = False) -> dict | None:
        if id_property and id_property != "hs_object_id" and not archived:
            rid = portal.unique_index(object_type, id_property).get(key)
            return portal.records[object_type][rid] if rid is not None else None
        if id_property and id_property != "hs_object_id":
            for stored in portal.records[object_type].values():
                if stored["archived"] == archived and stored["properties"].get(id_property) == key:
                    return stored
            return None
        stored = portal.records[object_type].get(str(key))
        return stored if stored is not None and stored["archived"] == archived else None

    def _check_id_property(self, portal: _Portal, object_type: str, id_property: str | None) -> None:
        if not id_property or id_property == "hs_object_id":
            return
        definition = portal.properties[object_type].get(id_property)
        if definition is None or not definition.get("hasUniqueValue"):
            raise EmulatorError(_error(400, "VALIDATION_ERROR",
                                       f"{id_property} is not a unique identifier property for {object_type}"))

    # ----- property values -------------------------------------------------------------------------------------------
    def _clean_properties(self, portal: _Portal, object_type: str, given: Any) -> tuple[dict[str, str], list[dict]]:
        """The values to store (strings) and the problems, as HubSpot's `{isValid, message, error, name}`."""
        if not isinstance(given, dict):
            return {}, [{"isValid": False, "message": "properties must be an object", "error": "INVALID_INPUT",
                         "name": "properties"}]
        known = portal.properties[object_type]
        clean: dict[str, str] = {}
        problems: list[dict] = []
        for name, value in given.items():
            definition = known.get(name)
            if definition is None or definition.get("archived"):
                problems.append({"isValid": False, "message": f'Property "{name}" does not exist',
                                 "error": "PROPERTY_DOESNT_EXIST", "name": name})
                continue
            if name in READ_ONLY and name != "createdate":
                problems.append({"isValid": False, "message": f"{name} is a read only property; its value cannot "
                                 "be set.", "error": "READ_ONLY_VALUE", "name": name})
                continue
            if value is None or value == "":
                clean[name] = ""
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int | float | str):
                text = str(value)
            else:
                problems.append({"isValid": False, "message": f"{value!r} is not a valid value", "error":
                                 "INVALID_INPUT", "name": name})
                continue
            normalized, problem = _normalize(definition, text)
            if problem:
                problems.append({"isValid": False, "message": problem[1], "error": problem[0], "name": name})
            else:
                clean[name] = normalized
        return clean, problems

    def _validated(self, portal: _Portal, object_type: str, given: Any) -> dict[str, str]:
        clean, problems = self._clean_properties(portal, object_type, given)
        if problems:
            raise EmulatorError(_validation_error(problems))
        return clean

    def _unique_conflict(self, portal: _Portal, object_type: str, values: dict[str, str],
                         except_id: str | None) -> _Failure | None:
        for name, value in values.items():
            if not value or not portal.properties[object_type][name].get("hasUniqueValue"):
                continue
            other = self._find(portal, object_type, value, name)
            if other is not None and other["id"] != except_id:
                if object_type == "contacts" and name == "email":
                    return _Failure(409, "CONFLICT", f"Contact already exists. Existing ID: {other['id']}",
                                    context={"id": [other["id"]]})
                return _Failure(409, "CONFLICT", f"A {SINGULAR[object_type]} with {name}={value} already exists. "
                                f"Existing ID: {other['id']}", code="DUPLICATE_VALUE", context={"id": [other["id"]]})
        return None

    def _create(self, ctx: RequestContext, portal: _Portal, object_type: str, values: dict[str, str]) -> dict:
        now = self._now()
        rid = portal.new_id()
        props = {k: v for k, v in values.items() if v != ""}
        props.setdefault("createdate", now)
        props.update({"hs_object_id": rid, MODIFIED[object_type]: now})
        if object_type == "contacts":
            props["hs_lastmodifieddate"] = now  # set once; see the module docstring
        stored = {"id": rid, "properties": props, "createdAt": props["createdate"], "updatedAt": now,
                  "archived": False}
        portal.insert(object_type, stored)
        portal.reindex(object_type, stored, {})
        portal.changed()
        self.record_write(ctx.tenant, "create", object_type, rid, properties=values)
        return stored

    def _update(self, ctx: RequestContext, portal: _Portal, object_type: str, stored: dict,
                values: dict[str, str]) -> dict:
        now = self._now()
        old = dict(stored["properties"])
        for name, value in values.items():
            if value == "":
                stored["properties"].pop(name, None)
            else:
                stored["properties"][name] = value
        stored["properties"][MODIFIED[object_type]] = now
        stored["updatedAt"] = now
        portal.reindex(object_type, stored, old)
        portal.changed()
        self.record_write(ctx.tenant, "update", object_type, stored["id"], properties=values)
        return stored

    def _archive(self, ctx: RequestContext, portal: _Portal, object_type: str, stored: dict) -> None:
        now = self._now()
        stored.update(archived=True, archivedAt=now, updatedAt=now)
        portal.reindex(object_type, stored, stored["properties"])
        portal.changed()
        self.record_write(ctx.tenant, "archive", object_type, stored["id"])

    def _create_associations(self, portal: _Portal, object_type: str, rid: str, associations: Any) -> None:
        for item in associations or []:
            to_id = str((item.get("to") or {}).get("id", ""))
            types = item.get("types") or []
            to_type = self._type_for_ids(object_type, [t.get("associationTypeId") for t in types])
            if to_type is None or to_id not in portal.records[to_type]:
                raise _Failure(400, "VALIDATION_ERROR", f"Invalid association to {to_id}: unknown object or "
                               "association type", code="INVALID_ASSOCIATION")
            labels = self._labels(object_type, to_type, types)
            portal.link(object_type, rid, to_type, to_id, labels)

    @staticmethod
    def _type_for_ids(object_type: str, type_ids: list[Any]) -> str | None:
        for (from_type, to_type), ids in ASSOCIATION_TYPES.items():
            if from_type == object_type and type_ids and all(t in ids for t in type_ids):
                return to_type
        return None

    @staticmethod
    def _labels(from_type: str, to_type: str, types: list[dict]) -> set[str]:
        unlabeled, primary = ASSOCIATION_TYPES[(from_type, to_type)]
        labels = {"unlabeled"}
        for spec in types:
            if not isinstance(spec, dict) or spec.get("associationCategory") != "HUBSPOT_DEFINED" or \
                    spec.get("associationTypeId") not in (unlabeled, primary):
                raise EmulatorError(_error(400, "VALIDATION_ERROR",
                                           f"invalid association type {spec!r} from {from_type} to {to_type}"))
            if spec["associationTypeId"] == primary:
                labels.add("primary")
        return labels

    # ----- objects -------------------------------------------------------------------------------------------------
    def list_objects(self, request: Request, ctx: RequestContext, object_type: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        limit = _int_arg(request.args.get("limit"), 10, "limit")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"limit must be between 1 and {MAX_LIST_LIMIT}"))
        after = _int_arg(request.args.get("after"), 0, "after")
        archived = request.args.get("archived", "false").lower() == "true"
        names = self._requested(object_type, self._query_list(request, "properties"))
        associations = self._query_list(request, "associations")
        with self.lock:
            order = portal.order[object_type]
            results, last = [], None
            for key in order[bisect.bisect_left(order, after):]:
                stored = portal.records[object_type][str(key)]
                if stored["archived"] != archived:
                    continue
                if len(results) == limit:
                    last = results[-1]["id"]
                    break
                results.append(self._render(portal, object_type, stored, names, associations))
        body: dict[str, Any] = {"results": results}
        if last is not None:
            cursor = str(int(last) + 1)
            body["paging"] = {"next": {"after": cursor, "link": f"{request.base_url}?after={cursor}"}}
        return self._ok(body, ctx)

    def create_object(self, request: Request, ctx: RequestContext, object_type: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        body = self._body(request)
        if not isinstance(body, dict):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object"))
        with self.lock:
            values = self._validated(portal, object_type, body.get("properties"))
            self._raise_failure(self._unique_conflict(portal, object_type, values, None))
            self._check_associations(portal, object_type, body.get("associations"))
            stored = self._create(ctx, portal, object_type, values)
            try:
                self._create_associations(portal, object_type, stored["id"], body.get("associations"))
            except _Failure as failure:  # checked above; kept for safety
                self._raise_failure(failure)
            names = self._requested(object_type, list(values) + list(DEFAULT_PROPERTIES[object_type]))
            return self._ok(self._render(portal, object_type, stored, names), ctx, status=201)

    def _check_associations(self, portal: _Portal, object_type: str, associations: Any) -> None:
        if associations is None:
            return
        if not isinstance(associations, list):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "associations must be an array"))
        for item in associations:
            if not isinstance(item, dict):
                raise EmulatorError(_error(400, "VALIDATION_ERROR", "each association is an object"))
            types = item.get("types") or []
            to_type = self._type_for_ids(object_type, [t.get("associationTypeId") for t in types
                                                       if isinstance(t, dict)])
            to_id = str((item.get("to") or {}).get("id", ""))
            if to_type is None:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"invalid association types {types!r} for "
                                           f"{object_type}", code="INVALID_ASSOCIATION_TYPE"))
            self._labels(object_type, to_type, types)
            target = portal.records[to_type].get(to_id)
            if target is None or target["archived"]:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{SINGULAR[to_type]} {to_id} does not exist",
                                           code="INVALID_OBJECT_ID"))

    @staticmethod
    def _raise_failure(failure: _Failure | None) -> None:
        if failure is not None:
            raise EmulatorError(_error(failure.status, failure.category, failure.message, code=failure.code,
                                       context=failure.context))

    def get_object(self, request: Request, ctx: RequestContext, object_type: str, object_id: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        id_property = request.args.get("idProperty")
        archived = request.args.get("archived", "false").lower() == "true"
        with self.lock:
            self._check_id_property(portal, object_type, id_property)
            stored = self._find(portal, object_type, object_id, id_property, archived=archived)
            if stored is None:
                raise _not_found(object_type, object_id)
            names = self._requested(object_type, self._query_list(request, "properties"))
            return self._ok(self._render(portal, object_type, stored, names,
                                         self._query_list(request, "associations")), ctx)

    def update_object(self, request: Request, ctx: RequestContext, object_type: str, object_id: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        body = self._body(request)
        if not isinstance(body, dict):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object"))
        id_property = request.args.get("idProperty")
        with self.lock:
            self._check_id_property(portal, object_type, id_property)
            stored = self._find(portal, object_type, object_id, id_property)
            if stored is None:
                raise _not_found(object_type, object_id)
            values = self._validated(portal, object_type, body.get("properties"))
            self._raise_failure(self._unique_conflict(portal, object_type, values, stored["id"]))
            self._update(ctx, portal, object_type, stored, values)
            names = self._requested(object_type, list(values) + list(DEFAULT_PROPERTIES[object_type]))
            return self._ok(self._render(portal, object_type, stored, names), ctx)

    def archive_object(self, request: Request, ctx: RequestContext, object_type: str, object_id: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        with self.lock:
            stored = portal.records[object_type].get(object_id)
            if stored is None:
                raise _not_found(object_type, object_id)
            if not stored["archived"]:
                self._archive(ctx, portal, object_type, stored)
        return Response(status=204)

    # ----- search --------------------------------------------------------------------------------------------------
    def search(self, request: Request, ctx: RequestContext, object_type: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        self._search_throttle(ctx.tenant)
        body = self._body(request)
        if not isinstance(body, dict):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object"))
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_SEARCH_LIMIT:
            raise EmulatorError(_error(400, "VALIDATION_ERROR",
                                       f"limit must be an integer between 0 and {MAX_SEARCH_LIMIT}"))
        after = _int_arg(body.get("after"), 0, "after")
        if after < 0:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "after must not be negative"))
        if after >= SEARCH_CAP:
            raise EmulatorError(_error(400, "VALIDATION_ERROR",
                                       f"The search API cannot page past {SEARCH_CAP} results. Narrow the "
                                       "query with filters (for example on the last modified date) instead.",
                                       code="SEARCH_RESULT_LIMIT_EXCEEDED"))
        query = body.get("query")
        if query is not None and (not isinstance(query, str) or len(query) > 3000):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "query must be a string of at most 3000 characters"))
        with self.lock:
            matches = self._matches(portal, object_type, body.get("filterGroups") or [], body.get("sorts") or [],
                                    query)
            names = self._requested(object_type, body.get("properties") or [])
            end = min(after + limit, SEARCH_CAP, len(matches))
            results = [self._render(portal, object_type, stored, names) for stored in matches[after:end]]
        out: dict[str, Any] = {"total": len(matches), "results": results}
        if end < len(matches) and limit:
            out["paging"] = {"next": {"after": str(end)}}
        return json_response(out)  # search answers carry no rate-limit headers

    def _search_throttle(self, tenant: str) -> None:
        if not self.limits.enabled:
            return
        now = time.monotonic()
        with self.lock:
            window = self._search_windows[tenant]
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= SEARCH_PER_SECOND:
                raise EmulatorError(self.throttled_response("secondly", None))
            window.append(now)

    def _matches(self, portal: _Portal, object_type: str, groups: Any, sorts: Any, query: str | None) -> list[dict]:
        cache_key = (object_type, orjson.dumps([groups, sorts, query], option=orjson.OPT_SORT_KEYS), portal.version)
        cached = portal.search_cache.get(cache_key)
        if cached is not None:
            return cached
        predicate = self._predicate(portal, object_type, groups)
        sort_keys = self._sorts(portal, object_type, sorts)
        tokens = [t.lower() for t in _TOKEN.findall(query or "")]
        matches = []
        for key in portal.order[object_type]:
            stored = portal.records[object_type][str(key)]
            if stored["archived"] or not predicate(stored):
                continue
            if tokens and not _query_matches(stored, SEARCHABLE[object_type], tokens):
                continue
            matches.append(stored)
        for name, descending, kind in reversed(sort_keys):
            present = [s for s in matches if _typed(kind, s["properties"].get(name)) is not None]
            missing = [s for s in matches if _typed(kind, s["properties"].get(name)) is None]
            present.sort(key=lambda s: _typed(kind, s["properties"].get(name)), reverse=descending)
            matches = present + missing  # unset values sort last either way
        if len(portal.search_cache) > 64:
            portal.search_cache.clear()
        portal.search_cache[cache_key] = matches
        return matches

    def _property_kind(self, portal: _Portal, object_type: str, name: str) -> str:
        definition = portal.properties[object_type].get(name)
        if definition is None:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"There was a problem with the request: Unable to "
                                       f"find property {name} for {object_type}", code="PROPERTY_DOESNT_EXIST"))
        return {"datetime": "time", "date": "time", "number": "number"}.get(definition["type"], "text")

    def _sorts(self, portal: _Portal, object_type: str, sorts: Any) -> list[tuple[str, bool, str]]:
        if not isinstance(sorts, list):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "sorts must be an array"))
        out = []
        for sort in sorts:
            if isinstance(sort, str):
                name, descending = sort.lstrip("-"), sort.startswith("-")
            elif isinstance(sort, dict) and isinstance(sort.get("propertyName"), str):
                direction = str(sort.get("direction", "ASCENDING")).upper()
                if direction not in ("ASCENDING", "DESCENDING"):
                    raise EmulatorError(_error(400, "VALIDATION_ERROR", f"unknown sort direction {direction}"))
                name, descending = sort["propertyName"], direction == "DESCENDING"
            else:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"invalid sort {sort!r}"))
            out.append((name, descending, self._property_kind(portal, object_type, name)))
        if len(out) > 1:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "only one sort is supported"))
        return out

    def _predicate(self, portal: _Portal, object_type: str, groups: Any) -> Callable[[dict], bool]:
        if not isinstance(groups, list) or any(not isinstance(g, dict) or not isinstance(g.get("filters"), list)
                                               for g in groups):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "filterGroups must be an array of {filters: [...]}"))
        total = sum(len(g["filters"]) for g in groups)
        if len(groups) > 6 or any(len(g["filters"]) > 6 for g in groups) or total > 18:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Too many filters: at most 6 filter groups, 6 "
                                       "filters per group and 18 filters in total", code="TOO_MANY_FILTERS"))
        compiled = [[self._filter(portal, object_type, f) for f in g["filters"]] for g in groups]
        if not compiled:
            return lambda stored: True
        return lambda stored: any(all(test(stored) for test in group) for group in compiled)

    def _filter(self, portal: _Portal, object_type: str, spec: Any) -> Callable[[dict], bool]:
        if not isinstance(spec, dict) or not isinstance(spec.get("propertyName"), str):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"invalid filter {spec!r}"))
        name, operator = spec["propertyName"], spec.get("operator", "EQ")
        if operator not in OPERATORS:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"unknown operator {operator!r}"))
        kind = self._property_kind(portal, object_type, name)

        def value_of(stored: dict) -> Any:
            return stored["id"] if name == "hs_object_id" else stored["properties"].get(name)

        def typed_arg(raw: Any) -> Any:
            value = _typed(kind, raw)
            if value is None:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{raw!r} is not a valid value for {name}"))
            return value

        if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            want = operator == "HAS_PROPERTY"
            return lambda s: (value_of(s) not in (None, "")) == want
        if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            needle = str(spec.get("value", "")).lower()
            pattern = re.compile("^" + ".*".join(re.escape(p) for p in needle.split("*")) + "$")
            want = operator == "CONTAINS_TOKEN"
            return lambda s: any(pattern.match(t.lower()) for t in _TOKEN.findall(str(value_of(s) or ""))) == want
        if operator in ("IN", "NOT_IN"):
            values = spec.get("values")
            if not isinstance(values, list):
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{operator} needs `values`"))
            wanted = {typed_arg(v) for v in values}
            if operator == "IN":
                return lambda s: _typed(kind, value_of(s)) in wanted
            return lambda s: _typed(kind, value_of(s)) not in wanted
        if "value" not in spec:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{operator} needs `value`"))
        low = typed_arg(spec["value"])
        if operator == "BETWEEN":
            high = typed_arg(spec.get("highValue"))
            return lambda s: (v := _typed(kind, value_of(s))) is not None and low <= v <= high
        if operator == "NEQ":
            return lambda s: _typed(kind, value_of(s)) != low
        compare = {"EQ": lambda v: v == low, "LT": lambda v: v < low, "LTE": lambda v: v <= low,
                   "GT": lambda v: v > low, "GTE": lambda v: v >= low}[operator]
        return lambda s: (v := _typed(kind, value_of(s))) is not None and compare(v)

    # ----- batch ----------------------------------------------------------------------------------------------------
    def batch(self, request: Request, ctx: RequestContext, object_type: str, op: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        handler = {"read": self._batch_read, "create": self._batch_create, "update": self._batch_update,
                   "upsert": self._batch_upsert, "archive": self._batch_archive}.get(op)
        if handler is None:
            raise EmulatorError(_error(404, "OBJECT_NOT_FOUND", f"unknown batch operation {op!r}"))
        body = self._body(request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or any(not isinstance(i, dict) for i in inputs):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Invalid input JSON: `inputs` must be an array of "
                                       "objects"))
        if len(inputs) > MAX_BATCH:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"Batch input size {len(inputs)} is over the limit "
                                       f"of {MAX_BATCH}", code="TOO_MANY_INPUTS"))
        started = self._now()
        with self.lock:
            outcome = handler(request, ctx, portal, object_type, body, inputs)
        if outcome is None:  # archive answers 204 with no body
            return Response(status=204)
        results, failures, success = outcome
        return self._batch_response(ctx, results, failures, started, success)

    def _batch_response(self, ctx: RequestContext, results: list[dict], failures: list[_Failure], started: str,
                        success: int) -> Response:
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                "completedAt": self._now()}
        if not failures:
            return self._ok(body, ctx, status=success)
        body["errors"] = [{"status": "error", "category": f.category, "message": f.message, "context": f.context or {},
                           "errors": [{"message": f.message, "code": f.code}] if f.code else [], "links": {}}
                          for f in failures]
        body["numErrors"] = len(failures)
        return self._ok(body, ctx, status=207)

    def _batch_read(self, request, ctx, portal, object_type, body, inputs):
        id_property = body.get("idProperty")
        self._check_id_property(portal, object_type, id_property)
        archived = request.args.get("archived", "false").lower() == "true"
        names = self._requested(object_type, body.get("properties") or [])
        results, missing, seen = [], [], set()
        for item in inputs:
            key = str(item.get("id", ""))
            if key in seen:
                continue
            seen.add(key)
            stored = self._find(portal, object_type, key, id_property, archived=archived)
            if stored is None:
                missing.append(key)
            else:
                results.append(self._render(portal, object_type, stored, names))
        return results, [_missing(object_type, missing)] if missing else [], 200

    def _batch_create(self, request, ctx, portal, object_type, body, inputs):
        cleaned = []
        problems: list[dict] = []
        for item in inputs:
            values, item_problems = self._clean_properties(portal, object_type, item.get("properties"))
            problems.extend(item_problems)
            self._check_associations(portal, object_type, item.get("associations"))
            cleaned.append((values, item.get("associations")))
        if problems:
            raise EmulatorError(_validation_error(problems))
        pending: dict[tuple[str, str], int] = {}
        for index, (values, _) in enumerate(cleaned):
            self._raise_failure(self._unique_conflict(portal, object_type, values, None))
            for name, value in values.items():
                if value and portal.properties[object_type][name].get("hasUniqueValue"):
                    if (name, value) in pending:
                        raise EmulatorError(_error(400, "VALIDATION_ERROR", f"Duplicate {name} {value!r} in "
                                                   f"inputs {pending[(name, value)]} and {index}",
                                                   code="DUPLICATE_INPUT"))
                    pending[(name, value)] = index
        results = []
        for values, associations in cleaned:
            stored = self._create(ctx, portal, object_type, values)
            self._create_associations(portal, object_type, stored["id"], associations)
            names = self._requested(object_type, list(values) + list(DEFAULT_PROPERTIES[object_type]))
            results.append(self._render(portal, object_type, stored, names))
        return results, [], 201

    def _batch_update(self, request, ctx, portal, object_type, body, inputs):
        ids = [(str(i.get("id", "")), i.get("idProperty")) for i in inputs]
        if len(set(ids)) != len(ids):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input",
                                       code="DUPLICATE_ID"))
        problems: list[dict] = []
        planned = []
        for item in inputs:
            self._check_id_property(portal, object_type, item.get("idProperty"))
            values, item_problems = self._clean_properties(portal, object_type, item.get("properties"))
            problems.extend(item_problems)
            planned.append((item, values))
        if problems:
            raise EmulatorError(_validation_error(problems))
        results, missing, failures = [], [], []
        for item, values in planned:
            stored = self._find(portal, object_type, str(item.get("id", "")), item.get("idProperty"))
            if stored is None:
                missing.append(str(item.get("id", "")))
                continue
            conflict = self._unique_conflict(portal, object_type, values, stored["id"])
            if conflict is not None:
                failures.append(conflict)
                continue
            self._update(ctx, portal, object_type, stored, values)
            names = self._requested(object_type, list(values) + list(DEFAULT_PROPERTIES[object_type]))
            results.append(self._render(portal, object_type, stored, names))
        if missing:
            failures.insert(0, _missing(object_type, missing))
        return results, failures, 200

    def _batch_upsert(self, request, ctx, portal, object_type, body, inputs):
        problems: list[dict] = []
        planned = []
        seen: set[tuple[str, str]] = set()
        for item in inputs:
            id_property = item.get("idProperty")
            if not id_property:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", "idProperty is required for upsert"))
            self._check_id_property(portal, object_type, id_property)
            key = (id_property, str(item.get("id", "")))
            if not key[1] or key in seen:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", "Duplicate or empty ids in upsert inputs",
                                           code="DUPLICATE_ID"))
            seen.add(key)
            values, item_problems = self._clean_properties(portal, object_type, item.get("properties"))
            problems.extend(item_problems)
            planned.append((key, values))
        if problems:
            raise EmulatorError(_validation_error(problems))
        results, failures = [], []
        for (id_property, key), values in planned:
            stored = self._find(portal, object_type, key, id_property)
            if stored is None and id_property == "hs_object_id":
                failures.append(_missing(object_type, [key]))
                continue
            conflict = self._unique_conflict(portal, object_type, {**values, id_property: key}
                                             if id_property != "hs_object_id" else values,
                                             stored["id"] if stored else None)
            if conflict is not None:
                failures.append(conflict)
                continue
            if stored is None:
                stored = self._create(ctx, portal, object_type, {**values, id_property: key})
                new = True
            else:
                self._update(ctx, portal, object_type, stored, values)
                new = False
            names = self._requested(object_type, [*values, id_property, *DEFAULT_PROPERTIES[object_type]])
            results.append({**self._render(portal, object_type, stored, names), "new": new})
        return results, failures, 200

    def _batch_archive(self, request, ctx, portal, object_type, body, inputs):
        for item in inputs:
            stored = portal.records[object_type].get(str(item.get("id", "")))
            if stored is not None and not stored["archived"]:
                self._archive(ctx, portal, object_type, stored)
        return None

    # ----- associations v4 --------------------------------------------------------------------------------------
    def _pair(self, object_type: str, to_type: str) -> tuple[str, str]:
        pair = (self._type(object_type), self._type(to_type))
        if pair not in ASSOCIATION_TYPES:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"no association between {pair[0]} and {pair[1]} "
                                       "in the sandbox", code="INVALID_ASSOCIATION_TYPE"))
        return pair

    def _live(self, portal: _Portal, object_type: str, object_id: str) -> dict:
        stored = portal.records[object_type].get(str(object_id))
        if stored is None or stored["archived"]:
            raise _not_found(object_type, object_id)
        return stored

    def list_associations(self, request: Request, ctx: RequestContext, object_type: str, object_id: str,
                          to_type: str) -> Response:
        from_type, to_type = self._pair(object_type, to_type)
        portal = self._portal(ctx)
        limit = _int_arg(request.args.get("limit"), MAX_ASSOCIATION_LIMIT, "limit")
        if not 1 <= limit <= MAX_ASSOCIATION_LIMIT:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", f"limit must be 1..{MAX_ASSOCIATION_LIMIT}"))
        after = _int_arg(request.args.get("after"), 0, "after")
        with self.lock:
            self._live(portal, from_type, object_id)
            links = [(i, labels) for i, labels in portal.linked(from_type, object_id, to_type) if int(i) >= after]
        page = links[:limit]
        body: dict[str, Any] = {"results": [{"toObjectId": to_id, "associationTypes":
                                             _association_types(from_type, to_type, labels)} for to_id, labels in page]}
        if len(links) > limit:
            body["paging"] = {"next": {"after": links[limit][0]}}
        return self._ok(body, ctx)

    def associate(self, request: Request, ctx: RequestContext, object_type: str, object_id: str, to_type: str,
                  to_id: str) -> Response:
        from_type, to_type = self._pair(object_type, to_type)
        portal = self._portal(ctx)
        types = self._body(request)
        if not isinstance(types, list) or not types:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "expected a non-empty array of association types"))
        labels = self._labels(from_type, to_type, types)
        with self.lock:
            self._live(portal, from_type, object_id)
            self._live(portal, to_type, to_id)
            portal.link(from_type, object_id, to_type, to_id, labels)
            self.record_write(ctx.tenant, "associate", f"{from_type}_to_{to_type}", object_id, to_id=to_id,
                              labels=sorted(labels))
            current = portal.links[portal.pair_key(from_type, object_id, to_type, to_id)]
        body = {"fromObjectTypeId": TYPE_IDS[from_type], "fromObjectId": object_id,
                "toObjectTypeId": TYPE_IDS[to_type], "toObjectId": to_id,
                "labels": ["Primary"] if "primary" in current else []}
        return self._ok(body, ctx, status=201)

    def associate_default(self, request: Request, ctx: RequestContext, object_type: str, object_id: str,
                          to_type: str, to_id: str) -> Response:
        from_type, to_type = self._pair(object_type, to_type)
        portal = self._portal(ctx)
        started = self._now()
        with self.lock:
            self._live(portal, from_type, object_id)
            self._live(portal, to_type, to_id)
            portal.link(from_type, object_id, to_type, to_id, {"unlabeled"})
            self.record_write(ctx.tenant, "associate", f"{from_type}_to_{to_type}", object_id, to_id=to_id,
                              labels=["unlabeled"])
        return self._ok({"status": "COMPLETE", "results": _default_results(from_type, object_id, to_type, to_id),
                         "startedAt": started, "completedAt": self._now()}, ctx)

    def dissociate(self, request: Request, ctx: RequestContext, object_type: str, object_id: str, to_type: str,
                   to_id: str) -> Response:
        from_type, to_type = self._pair(object_type, to_type)
        portal = self._portal(ctx)
        with self.lock:
            if portal.unlink(from_type, object_id, to_type, to_id):
                self.record_write(ctx.tenant, "dissociate", f"{from_type}_to_{to_type}", object_id, to_id=to_id)
        return Response(status=204)

    def batch_associations(self, request: Request, ctx: RequestContext, object_type: str, to_type: str,
                           op: str) -> Response:
        from_type, to_type = self._pair(object_type, to_type)
        portal = self._portal(ctx)
        body = self._body(request)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or any(not isinstance(i, dict) for i in inputs):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "`inputs` must be an array of objects"))
        if len(inputs) > (1000 if op == "read" else MAX_BATCH * 20):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "too many inputs", code="TOO_MANY_INPUTS"))
        started = self._now()
        results: list[dict] = []
        missing: list[str] = []
        with self.lock:
            if op == "read":
                for item in inputs:
                    from_id = str(item.get("id", ""))
                    stored = portal.records[from_type].get(from_id)
                    if stored is None or stored["archived"]:
                        missing.append(from_id)
                        continue
                    links = portal.linked(from_type, from_id, to_type)
                    if not links:  # HubSpot reports an object without links as an error, not an empty result
                        missing.append(from_id)
                        continue
                    results.append({"from": {"id": from_id}, "to": [
                        {"toObjectId": to_id, "associationTypes": _association_types(from_type, to_type, labels)}
                        for to_id, labels in links]})
                failures = [_Failure(404, "OBJECT_NOT_FOUND", f"No {SINGULAR[to_type]} is associated with "
                                     f"{SINGULAR[from_type]} {', '.join(missing)}", context={"ids": missing})] \
                    if missing else []
                return self._batch_response(ctx, results, failures, started, 200)
            if op in ("create", "associate/default", "archive"):
                planned = []
                for item in inputs:
                    from_id = str((item.get("from") or {}).get("id", ""))
                    to_id = str((item.get("to") or {}).get("id", ""))
                    if op == "create":
                        labels = self._labels(from_type, to_type, item.get("types") or [])
                    else:
                        labels = {"unlabeled"}
                    if op != "archive":
                        for kind, oid in ((from_type, from_id), (to_type, to_id)):
                            stored = portal.records[kind].get(oid)
                            if stored is None or stored["archived"]:
                                missing.append(oid)
                    planned.append((from_id, to_id, labels))
                if op == "archive":
                    for from_id, to_id, _ in planned:
                        if portal.unlink(from_type, from_id, to_type, to_id):
                            self.record_write(ctx.tenant, "dissociate", f"{from_type}_to_{to_type}", from_id,
                                              to_id=to_id)
                    return Response(status=204)
                for from_id, to_id, labels in planned:
                    if from_id in missing or to_id in missing:
                        continue
                    portal.link(from_type, from_id, to_type, to_id, labels)
                    self.record_write(ctx.tenant, "associate", f"{from_type}_to_{to_type}", from_id, to_id=to_id,
                                      labels=sorted(labels))
                    if op == "create":
                        current = portal.links[portal.pair_key(from_type, from_id, to_type, to_id)]
                        results.append({"fromObjectTypeId": TYPE_IDS[from_type], "fromObjectId": from_id,
                                        "toObjectTypeId": TYPE_IDS[to_type], "toObjectId": to_id,
                                        "labels": ["Primary"] if "primary" in current else []})
                    else:
                        results.extend(_default_results(from_type, from_id, to_type, to_id))
                failures = [_missing(to_type, missing)] if missing else []
                return self._batch_response(ctx, results, failures, started, 201 if op == "create" else 200)
        raise EmulatorError(_error(404, "OBJECT_NOT_FOUND", f"unknown association batch operation {op!r}"))

    # ----- properties ------------------------------------------------------------------------------------------------
    def list_properties(self, request: Request, ctx: RequestContext, object_type: str) -> Response:
        object_type = self._type(object_type)
        archived = request.args.get("archived", "false").lower() == "true"
        with self.lock:
            results = [_public_definition(d) for d in self._portal(ctx).properties[object_type].values()
                       if bool(d.get("archived")) == archived]
        return self._ok({"results": results}, ctx)

    def get_property(self, request: Request, ctx: RequestContext, object_type: str, name: str) -> Response:
        object_type = self._type(object_type)
        archived = request.args.get("archived", "false").lower() == "true"
        with self.lock:
            definition = self._portal(ctx).properties[object_type].get(name)
        if definition is None or bool(definition.get("archived")) != archived:
            raise EmulatorError(_error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for object type "
                                       f"{object_type}"))
        return self._ok(_public_definition(definition), ctx)

    def create_property(self, request: Request, ctx: RequestContext, object_type: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        body = self._body(request)
        if not isinstance(body, dict):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "expected a property object"))
        problems = _definition_problems(body, creating=True)
        if problems:
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "Invalid input: " + "; ".join(problems),
                                       errors=[{"message": p, "code": "INVALID_PROPERTY"} for p in problems]))
        with self.lock:
            existing = portal.properties[object_type].get(body["name"])
            if existing is not None and not existing.get("archived"):
                raise EmulatorError(_error(409, "OBJECT_ALREADY_EXISTS", f"Property named '{body['name']}' already "
                                           "exists.", code="PROPERTY_EXISTS"))
            definition = _complete_definition(dict(body), self._now())
            portal.properties[object_type][body["name"]] = definition
            portal.changed()
            self.record_write(ctx.tenant, "create", f"{object_type}_property", body["name"], definition=body)
        return self._ok(_public_definition(definition), ctx, status=201)

    def update_property(self, request: Request, ctx: RequestContext, object_type: str, name: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        body = self._body(request)
        if not isinstance(body, dict):
            raise EmulatorError(_error(400, "VALIDATION_ERROR", "expected a property object"))
        with self.lock:
            definition = portal.properties[object_type].get(name)
            if definition is None or definition.get("archived"):
                raise EmulatorError(_error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}"))
            if definition.get("hubspotDefined"):
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{name} is a HubSpot defined property and "
                                           "cannot be changed", code="READ_ONLY_DEFINITION"))
            merged = {**definition, **{k: v for k, v in body.items() if k != "name"}}
            problems = _definition_problems(merged, creating=False)
            if problems:
                raise EmulatorError(_error(400, "VALIDATION_ERROR", "Invalid input: " + "; ".join(problems)))
            merged = _complete_definition(merged, definition["createdAt"])
            merged["updatedAt"] = self._now()
            portal.properties[object_type][name] = merged
            portal.unique.pop((object_type, name), None)
            portal.changed()
            self.record_write(ctx.tenant, "update", f"{object_type}_property", name, changes=body)
        return self._ok(_public_definition(merged), ctx)

    def archive_property(self, request: Request, ctx: RequestContext, object_type: str, name: str) -> Response:
        object_type = self._type(object_type)
        portal = self._portal(ctx)
        with self.lock:
            definition = portal.properties[object_type].get(name)
            if definition is None:
                raise EmulatorError(_error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}"))
            if definition.get("hubspotDefined"):
                raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{name} is a HubSpot defined property and "
                                           "cannot be archived", code="READ_ONLY_DEFINITION"))
            if not definition.get("archived"):
                definition.update(archived=True, archivedAt=self._now())
                portal.changed()
                self.record_write(ctx.tenant, "archive", f"{object_type}_property", name)
        return Response(status=204)


# ----- module helpers ------------------------------------------------------------------------------------------------
def _error(status: int, category: str, message: str, *, code: str | None = None,
           context: dict[str, list[str]] | None = None, errors: list[dict] | None = None) -> Response:
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                            "category": category}
    if errors:
        body["errors"] = errors
    elif code:
        body["errors"] = [{"message": message, "code": code}]
    if context:
        body["context"] = context
    return json_response(body, status=status)


def _validation_error(problems: list[dict]) -> Response:
    text = orjson.dumps(problems).decode()
    return _error(400, "VALIDATION_ERROR", f"Property values were not valid: {text}",
                  errors=[{"message": p["message"], "code": p["error"], "context": {"propertyName": [p["name"]]}}
                          for p in problems])


def _missing(object_type: str, ids: list[str]) -> _Failure:
    return _Failure(404, "OBJECT_NOT_FOUND", f"Could not get some {SINGULAR[object_type].upper()} objects, they may "
                    "be deleted or not exist. Check that ids are valid.", context={"ids": list(ids)})


def _not_found(object_type: str, object_id: str) -> EmulatorError:
    return EmulatorError(_error(404, "OBJECT_NOT_FOUND", "resource not found",
                                context={"id": [str(object_id)], "type": [SINGULAR[object_type].upper()]}))


def _int_arg(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    try:
        return int(str(value))
    except ValueError:
        raise EmulatorError(_error(400, "VALIDATION_ERROR", f"{name} must be an integer, not {value!r}")) from None


def _typed(kind: str, value: Any) -> Any:
    """A property value as something comparable, None when unset (or not readable as the property's type)."""
    if value is None or value == "":
        return None
    if kind == "time":
        return _epoch_ms(value)
    if kind == "number":
        return _decimal(value)
    return str(value).lower()


def _query_matches(stored: dict, fields: tuple[str, ...], tokens: list[str]) -> bool:
    words = [w.lower() for f in fields for w in _TOKEN.findall(str(stored["properties"].get(f) or ""))]
    texts = [str(stored["properties"].get(f) or "").lower() for f in fields]
    return all(any(w.startswith(t) for w in words) or any(t in x for x in texts) for t in tokens)


def _normalize(definition: dict, text: str) -> tuple[str, tuple[str, str] | None]:
    kind = definition["type"]
    if kind == "number":
        number = _decimal(text)
        if number is None:
            return text, ("INVALID_FLOAT", f"{text} is not a valid number")
        return text.strip(), None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            return text, ("INVALID_BOOLEAN", f"{text} is not a valid boolean (true or false)")
        return text.lower(), None
    if kind == "enumeration":
        allowed = {o["value"] for o in definition.get("options") or []}
        chosen = text.split(";") if definition.get("fieldType") == "checkbox" else [text]
        bad = [c for c in chosen if c not in allowed]
        if bad:
            return text, ("INVALID_OPTION", f"{bad[0]} was not one of the allowed options: "
                                            f"{', '.join(sorted(allowed))}")
        return text, None
    if kind in ("date", "datetime"):
        ms = _epoch_ms(text)
        if ms is None:
            return text, ("INVALID_DATE", f"{text} is not a valid date: use epoch milliseconds or ISO 8601")
        if kind == "date":
            moment = datetime.fromtimestamp(ms / 1000, UTC)
            if (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
                return text, ("INVALID_DATE", f"{text} is not midnight UTC; date properties hold days")
            return moment.strftime("%Y-%m-%d"), None
        return _iso(ms / 1000), None
    return text, None


def _definition_problems(body: dict, *, creating: bool) -> list[str]:
    problems = []
    for key in ("name", "label", "type", "fieldType", "groupName"):
        if not isinstance(body.get(key), str) or not body.get(key):
            problems.append(f"{key} is required")
    if problems:
        return problems
    if creating and not _PROPERTY_NAME.match(body["name"]):
        problems.append(f"name {body['name']!r} must start with a lowercase letter and hold only lowercase "
                        "letters, digits and underscores")
    if body["type"] not in PROPERTY_TYPES:
        problems.append(f"type {body['type']!r} is not one of {', '.join(PROPERTY_TYPES)}")
    elif body["fieldType"] not in FIELD_TYPES:
        problems.append(f"fieldType {body['fieldType']!r} is not one of {', '.join(FIELD_TYPES)}")
    elif body["fieldType"] not in _FIELD_TYPES_FOR[body["type"]]:
        problems.append(f"fieldType {body['fieldType']} does not fit type {body['type']}")
    options = body.get("options") or []
    if not isinstance(options, list) or any(not isinstance(o, dict) or not isinstance(o.get("value"), str)
                                            or not isinstance(o.get("label"), str) for o in options):
        problems.append("options must be an array of {label, value} objects")
    elif body.get("type") == "enumeration" and not options:
        problems.append("enumeration properties need options")
    if body.get("hasUniqueValue") and body.get("type") not in ("string", "number"):
        problems.append("only string and number properties can have unique values")
    return problems


def _public_definition(definition: dict) -> dict:
    return {k: v for k, v in definition.items() if v is not None}


def _default_results(from_type: str, from_id: str, to_type: str, to_id: str) -> list[dict]:
    forward, backward = ASSOCIATION_TYPES[(from_type, to_type)][0], ASSOCIATION_TYPES[(to_type, from_type)][0]
    return [{"from": {"id": from_id}, "to": {"id": to_id},
             "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": forward}},
            {"from": {"id": to_id}, "to": {"id": from_id},
             "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": backward}}]
