"""Salesforce REST API, emulated on loopback (vendor notes: shared/vendors/salesforce.md; Salesforce publishes no
OpenAPI for the core REST API, so the notes' shapes are the contract).

Served paths (all JSON; `<v>` is `vXX.X`, 31.0–63.0):
  POST /services/oauth2/token                      refresh_token grant (client id/secret in the form or Basic);
                                                   answer has instance_url (this server), no expires_in, and no
                                                   refresh_token unless rotation is switched on (§1)
  POST /services/oauth2/revoke                     revokes a refresh token and its sessions
  GET  /services/data/ and /services/data/<v>/     versions and resources
  GET  /services/data/<v>/limits                   DailyApiRequests
  GET  /services/data/<v>/query?q= | queryAll?q=   SOQL subset (salesforce_soql), pages of batchSize rows
  GET  /services/data/<v>/query/<locator>          next page (`nextRecordsUrl`, relative) (§3)
  GET  /services/data/<v>/sobjects/<obj>/describe
  POST /services/data/<v>/sobjects/<obj>           create -> 201 SaveResult
  GET|PATCH|DELETE /services/data/<v>/sobjects/<obj>/<id>          read / update (204) / delete to recycle bin (204)
  GET|PATCH /services/data/<v>/sobjects/<obj>/<extField>/<value>   read / upsert by external id (201 / 200 / 300)
  POST|PATCH|DELETE /services/data/<v>/composite/sobjects          collections create / update / delete (≤200)
  PATCH /services/data/<v>/composite/sobjects/<obj>/<extField>     collections upsert (≤200)

Fixtures per tenant (`<tenant>/salesforce/<collection>.json`):
  Account.json, Contact.json, Opportunity.json   records as a query returns them (`attributes` and compound
      addresses optional: components win; a compound-only address is split into its components; missing
      timestamps get the load time, missing IsDeleted false; rows with IsDeleted true sit in the recycle bin)
  FieldDefinition.json   custom fields: [{"sobject": "Account", "name": "External_Id__c", "type": "string",
      "externalId": true, "unique": true, "required": false}]; types: string, textarea, picklist, email, phone,
      url, double, currency, percent, int, boolean, date, datetime. A `__c` key found in a fixture record and
      not defined here becomes a custom field typed from its first non-null value.

Errors are arrays [{"message","errorCode","fields"}] (collections: per record, `statusCode`). An expired or
unknown session is 401 INVALID_SESSION_ID. With rate limits on, each tenant has a daily allocation of
`daily_api_limit` requests (every authenticated REST call counts one; the token endpoint none) and then gets
403 REQUEST_LIMIT_EXCEEDED; the concurrency limit answers the same 403 (ConcurrentPerOrgLongTxn). Every REST
answer carries `Sforce-Limit-Info: api-usage=n/max`. Extra control route: GET|PUT /_sandbox/api-usage
{"daily_api_limit": n, "reset": true}.

Simplifications: the daily count is since start (not a rolling 24 h); sessions last SESSION_SECONDS from
issue (no sliding timeout); query locators hold a snapshot taken when the query ran and expire after 15 idle
minutes; state/country picklists are off (no StateCode/CountryCode); Account deletes cascade to their contacts
and opportunities (as Salesforce does); no triggers, validation rules, field-level security or field history;
string lengths are not enforced; collections that mix types are one chunk.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import orjson
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from connectors.sandbox import identity
from connectors.sandbox.emulator import Emulator, EmulatorError, RateLimits, RequestContext, json_response
from connectors.sandbox.salesforce_soql import (
    NUMBER_TYPES,
    TEXT_TYPES,
    SoqlError,
    compile_where,
    parse_datetime,
    parse_query,
    sort_records,
)

TOKEN_PATH = "/services/oauth2/token"
REVOKE_PATH = "/services/oauth2/revoke"
SESSION_SECONDS = 7200  # the org's session timeout (often 2 h)
MIN_VERSION, MAX_VERSION = 31.0, 63.0
DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
COLLECTION_MAX = 200
LOCATOR_IDLE_SECONDS = 15 * 60
MAX_LOCATORS = 50
DAILY_API_LIMIT = 15_000  # Developer Edition (§6)
OBJECTS = ("Account", "Contact", "Opportunity")
FIELD_DEFINITIONS = "FieldDefinition"
KEY_PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "User": "005", "Organization": "00D"}
_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VERSION = re.compile(r"^v(\d{2})\.0$")
_WIRE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
ADDRESS_PARTS = (("Street", "street", "string"), ("City", "city", "string"), ("State", "state", "string"),
                 ("PostalCode", "postalCode", "string"), ("Country", "country", "string"),
                 ("Latitude", "latitude", "double"), ("Longitude", "longitude", "double"),
                 ("GeocodeAccuracy", "geocodeAccuracy", "picklist"))
CUSTOM_TYPES = frozenset({"string", "textarea", "picklist", "email", "phone", "url", "double", "currency",
                          "percent", "int", "boolean", "date", "datetime"})


# ----- ids ---------------------------------------------------------------------------------------------------------

def id_suffix(id15: str) -> str:
    """Salesforce's 3-character case-safe suffix: one character per 5-character chunk, from its uppercase map."""
    out = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        flags = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        out += _SUFFIX_CHARS[flags]
    return out


def to_18(raw: str) -> str:
    return raw + id_suffix(raw) if len(raw) == 15 else raw


def id_key(raw: Any) -> str | None:
    """The lookup key of an id given as 15 (case-sensitive) or 18 (case-insensitive) characters."""
    if not isinstance(raw, str) or not _ID.match(raw):
        return None
    return to_18(raw).lower()


def make_id(prefix: str, number: int, pod: str = "RM") -> str:
    digits = ""
    while number or len(digits) < 10:
        number, rem = divmod(number, 62)
        digits = _BASE62[rem] + digits
    return to_18(f"{prefix}{pod}{digits[-10:]}")


def format_datetime(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}+0000"


# ----- schema ------------------------------------------------------------------------------------------------------

@dataclass
class FieldDef:
    name: str
    type: str
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    required: bool = False  # on create (and may not be set to null)
    external_id: bool = False
    unique: bool = False
    custom: bool = False
    reference_to: str | None = None
    address_prefix: str | None = None  # compound address fields only
    compound: str | None = None  # the compound field a component belongs to (BillingCity -> BillingAddress)

    def describe(self) -> dict:
        return {"name": self.name, "label": self.name.removesuffix("__c").replace("_", " "), "type": self.type,
                "nillable": self.nillable and not self.required, "createable": self.createable,
                "updateable": self.updateable, "externalId": self.external_id, "unique": self.unique,
                "custom": self.custom, "idLookup": self.name == "Id" or self.external_id,
                "referenceTo": [self.reference_to] if self.reference_to else [], "picklistValues": [],
                "compoundFieldName": self.compound}


def _read_only(name: str, ftype: str, **kw: Any) -> FieldDef:
    return FieldDef(name, ftype, createable=False, updateable=False, **kw)


def _address(prefix: str) -> list[FieldDef]:
    fields = [FieldDef(f"{prefix}{suffix}", ftype, compound=f"{prefix}Address") for suffix, _, ftype in ADDRESS_PARTS]
    return fields + [_read_only(f"{prefix}Address", "address", address_prefix=prefix)]


def _standard_fields(sobject: str) -> list[FieldDef]:
    common = [
        _read_only("Id", "id", nillable=False), _read_only("IsDeleted", "boolean", nillable=False),
        FieldDef("OwnerId", "reference", reference_to="User"),
        _read_only("CreatedDate", "datetime"), _read_only("CreatedById", "reference", reference_to="User"),
        _read_only("LastModifiedDate", "datetime"), _read_only("LastModifiedById", "reference", reference_to="User"),
        _read_only("SystemModstamp", "datetime"), FieldDef("CurrencyIsoCode", "picklist"),
        FieldDef("Description", "textarea"),
    ]
    if sobject == "Account":
        return common + [
            FieldDef("Name", "string", required=True), FieldDef("Type", "picklist"),
            FieldDef("ParentId", "reference", reference_to="Account"), FieldDef("Industry", "picklist"),
            FieldDef("Phone", "phone"), FieldDef("Website", "url"), FieldDef("AccountNumber", "string"),
            FieldDef("AnnualRevenue", "currency"), FieldDef("NumberOfEmployees", "int"),
            *_address("Billing"), *_address("Shipping"),
        ]
    if sobject == "Contact":
        return common + [
            FieldDef("AccountId", "reference", reference_to="Account"), FieldDef("Salutation", "picklist"),
            FieldDef("FirstName", "string"), FieldDef("LastName", "string", required=True),
            _read_only("Name", "string"), FieldDef("Email", "email"), FieldDef("Phone", "phone"),
            FieldDef("MobilePhone", "phone"), FieldDef("Title", "string"), FieldDef("Department", "string"),
            *_address("Mailing"),
        ]
    if sobject == "Opportunity":
        return common + [
            FieldDef("AccountId", "reference", reference_to="Account"), FieldDef("Name", "string", required=True),
            FieldDef("StageName", "picklist", required=True), FieldDef("Amount", "currency"),
            FieldDef("CloseDate", "date", required=True), FieldDef("Probability", "percent"),
            _read_only("IsClosed", "boolean"), _read_only("IsWon", "boolean"),
            FieldDef("ForecastCategoryName", "picklist"), FieldDef("Type", "picklist"),
            FieldDef("LeadSource", "picklist"), FieldDef("NextStep", "string"),
        ]
    raise KeyError(sobject)


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "double"
    if isinstance(value, str):
        if re.match(r"^\d{4}-\d{2}-\d{2}$", value):
            return "date"
        if re.match(r"^\d{4}-\d{2}-\d{2}T", value):
            return "datetime"
    return "string"


# ----- errors ------------------------------------------------------------------------------------------------------

class SfError(Exception):
    """One Salesforce error: `code` is its errorCode / statusCode."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []
        self.status = status

    def rest(self) -> dict:
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def collection(self) -> dict:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def _fail(status: int, code: str, message: str, fields: list[str] | None = None) -> EmulatorError:
    return EmulatorError(json_response([{"message": message, "errorCode": code, **({"fields": fields} if fields
                                                                                     else {})}], status))


ROLLED_BACK = SfError("ALL_OR_NONE_OPERATION_ROLLED_BACK",
                      "Record rolled back because not all records were valid and the request was using AllOrNone "
                      "header")


# ----- one org per tenant ------------------------------------------------------------------------------------------

class _Org:
    def __init__(self, tenant: str, collections: dict[str, list[dict]], now_ms: int):
        self.tenant = tenant
        self.org_id = make_id("00D", int.from_bytes(tenant.encode()[:6].ljust(6, b"\0"), "big"))
        self.user_id = make_id("005", 1)
        self.counter = 0
        self.last_stamp = 0
        self.api_usage = 0
        self.locators: OrderedDict[str, dict] = OrderedDict()
        self.journal: list[tuple[str, str, dict | None]] | None = None  # undo log while an allOrNone call runs
        self.schema: dict[str, dict[str, FieldDef]] = {}
        for sobject in OBJECTS:
            self.schema[sobject] = {f.name.lower(): f for f in _standard_fields(sobject)}
        for definition in collections.get(FIELD_DEFINITIONS, []):
            self._define(definition)
        self.records: dict[str, dict[str, dict]] = {sobject: {} for sobject in OBJECTS}
        for sobject in OBJECTS:
            for raw in collections.get(sobject, []):
                self._load(sobject, raw, now_ms)

    def _define(self, definition: dict) -> None:
        sobject, name, ftype = definition.get("sobject"), str(definition.get("name", "")), definition.get("type")
        if sobject not in self.schema or not name.endswith("__c") or ftype not in CUSTOM_TYPES:
            raise ValueError(f"salesforce fixture {FIELD_DEFINITIONS}: bad definition {definition!r} (sobject one of "
                             f"{OBJECTS}, name ending __c, type one of {sorted(CUSTOM_TYPES)})")
        self.schema[sobject][name.lower()] = FieldDef(
            name, ftype, custom=True, required=bool(definition.get("required")),
            external_id=bool(definition.get("externalId")), unique=bool(definition.get("unique")))

    def _load(self, sobject: str, raw: dict, now_ms: int) -> None:
        record = {k: v for k, v in raw.items() if k != "attributes"}
        fields = self.schema[sobject]
        for key, value in list(record.items()):
            lower = key.lower()
            if lower not in fields and key.endswith("__c"):
                ftype = _infer_type(value) if value is not None else "string"
                fields[lower] = FieldDef(key, ftype, custom=True)
            field = fields.get(lower)
            if field is not None and field.type == "address":
                record.pop(key)
                for suffix, part, _ in ADDRESS_PARTS:  # components given explicitly win
                    record.setdefault(f"{field.address_prefix}{suffix}", (value or {}).get(part))
        stamp = format_datetime(now_ms)
        for name in ("SystemModstamp", "LastModifiedDate", "CreatedDate"):
            if isinstance(record.get(name), str) and not _WIRE_DATETIME.match(record[name]):
                record[name] = format_datetime(int(parse_datetime(record[name]).timestamp() * 1000))
        record.setdefault("SystemModstamp", record.get("LastModifiedDate") or stamp)
        record.setdefault("LastModifiedDate", record["SystemModstamp"])
        record.setdefault("CreatedDate", record["LastModifiedDate"])
        record["IsDeleted"] = bool(record.get("IsDeleted", False))
        if not record.get("Id"):
            self.counter += 1
            record["Id"] = make_id(KEY_PREFIXES[sobject], self.counter)
        record["Id"] = to_18(str(record["Id"]))
        _derive(sobject, record)
        self.records[sobject][id_key(record["Id"]) or record["Id"].lower()] = record

    # ----- lookups
    def field(self, sobject: str, name: str) -> FieldDef | None:
        return self.schema[sobject].get(name.lower())

    def get(self, sobject: str, raw_id: Any) -> dict | None:
        key = id_key(raw_id)
        return self.records[sobject].get(key) if key else None

    def find_by(self, sobject: str, field: FieldDef, value: Any) -> list[dict]:
        if field.name == "Id":
            record = self.get(sobject, value)
            return [record] if record is not None and not record["IsDeleted"] else []
        wanted = str(value).lower()
        return [r for r in self.records[sobject].values()
                if not r["IsDeleted"] and r.get(field.name) is not None and str(r[field.name]).lower() == wanted]

    def stamp(self, now_ms: int) -> str:
        """A SystemModstamp strictly later than the previous one, so every change moves the cursor."""
        self.last_stamp = max(now_ms, self.last_stamp + 1)
        return format_datetime(self.last_stamp)

    def remember(self, sobject: str, key: str) -> None:
        """Keeps a record's state before a change, so an allOrNone collection can be rolled back."""
        if self.journal is not None:
            old = self.records[sobject].get(key)
            self.journal.append((sobject, key, dict(old) if old is not None else None))

    def rollback(self) -> None:
        for sobject, key, old in reversed(self.journal or []):
            if old is None:
                self.records[sobject].pop(key, None)
            else:
                self.records[sobject][key] = old
        self.journal = None

    def new_id(self, sobject: str) -> str:
        while True:
            self.counter += 1
            candidate = make_id(KEY_PREFIXES[sobject], 10_000_000 + self.counter)
            if id_key(candidate) not in self.records[sobject]:
                return candidate


def _derive(sobject: str, record: dict) -> None:
    """Read-only fields Salesforce computes from others."""
    if sobject == "Contact":
        record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p) or None
    if sobject == "Opportunity" and "StageName" in record:
        stage = str(record.get("StageName") or "").lower()
        record["IsClosed"] = stage.startswith("closed")
        record["IsWon"] = stage == "closed won"


# ----- the emulator ------------------------------------------------------------------------------------------------

class SalesforceEmulator(Emulator):
    app: ClassVar[str] = "salesforce"
    collections: ClassVar[frozenset[str]] = frozenset({*OBJECTS, FIELD_DEFINITIONS})
    # Salesforce has no per-minute limit: the daily allocation and concurrent long requests (§6).
    default_limits: ClassVar[RateLimits] = RateLimits(per_minute=0, concurrent=25)

    @classmethod
    def sandbox_secrets(cls, tenant: str) -> dict[str, str]:
        return {"client_id": identity.SALESFORCE_CLIENT_ID, "client_secret": identity.SALESFORCE_CLIENT_SECRET,
                "refresh_token": identity.salesforce_initial_refresh_token(tenant)}

    @classmethod
    def connection_options(cls, tenant: str) -> dict[str, Any]:
        return {}

    def __init__(self, fixtures: dict[str, dict[str, list[dict]]], *, rate_limits: bool = False,
                 clock: Callable[[], float] = time.time, rotate_refresh_tokens: bool = False,
                 daily_api_limit: int = DAILY_API_LIMIT):
        self.clock = clock  # injectable, so tests can age sessions and query locators
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.daily_api_limit = daily_api_limit
        super().__init__(fixtures, rate_limits=rate_limits)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def load(self, fixtures: dict[str, dict[str, list[dict]]]) -> None:
        now = self.now_ms()
        self.orgs = {tenant: _Org(tenant, collections if isinstance(collections, dict) else {}, now)
                     for tenant, collections in fixtures.items()}
        self.refresh_tokens: dict[str, str] = {identity.salesforce_initial_refresh_token(t): t for t in fixtures}
        self.sessions: dict[str, tuple[str, float, str]] = {}  # access token -> (tenant, expires at, refresh token)

    def routes(self) -> list[Rule]:
        data = "/services/data/<version>"
        return [
            Rule(TOKEN_PATH, methods=["POST"], endpoint="oauth_token"),
            Rule(REVOKE_PATH, methods=["POST"], endpoint="oauth_revoke"),
            Rule("/services/data/", methods=["GET"], endpoint="versions"),
            Rule(f"{data}/", methods=["GET"], endpoint="resources"),
            Rule(f"{data}/limits", methods=["GET"], endpoint="api_limits"),
            Rule(f"{data}/query", methods=["GET"], endpoint="query", defaults={"all_rows": False}),
            Rule(f"{data}/queryAll", methods=["GET"], endpoint="query", defaults={"all_rows": True}),
            Rule(f"{data}/query/<locator>", methods=["GET"], endpoint="query_more"),
            Rule(f"{data}/queryAll/<locator>", methods=["GET"], endpoint="query_more"),
            Rule(f"{data}/sobjects/<sobject>/describe", methods=["GET"], endpoint="describe"),
            Rule(f"{data}/sobjects/<sobject>", methods=["POST"], endpoint="create"),
            Rule(f"{data}/sobjects/<sobject>/<record_id>", methods=["GET", "PATCH", "DELETE"], endpoint="record"),
            Rule(f"{data}/sobjects/<sobject>/<field>/<path:value>", methods=["GET", "PATCH"],
                 endpoint="by_external_id"),
            Rule(f"{data}/composite/sobjects", methods=["POST", "PATCH", "DELETE"], endpoint="collection"),
            Rule(f"{data}/composite/sobjects/<sobject>/<field>", methods=["PATCH"], endpoint="collection_upsert"),
        ]

    # ----- auth --------------------------------------------------------------------------------------------------
    def authenticate(self, request: Request, url_args: dict[str, Any]) -> RequestContext:
        if request.path in (TOKEN_PATH, REVOKE_PATH) or request.path.rstrip("/") == "/services/data":
            return RequestContext(tenant="-")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self.lock:
            session = self.sessions.get(token.strip()) if scheme.lower() in ("bearer", "oauth") else None
            if session is None or session[1] <= self.clock():
                raise EmulatorError(self.expired_token_response())
            org = self.orgs[session[0]]
            if self.limits.enabled:
                if org.api_usage >= self.daily_api_limit:
                    refused = self.throttled_response("daily", None)
                    refused.headers["Sforce-Limit-Info"] = f"api-usage={org.api_usage}/{self.daily_api_limit}"
                    raise EmulatorError(refused)
            org.api_usage += 1
        version = url_args.get("version")
        if version is not None:
            match = _VERSION.match(version)
            if match is None or not MIN_VERSION <= float(match.group(1)) <= MAX_VERSION:
                raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        return RequestContext(tenant=org.tenant, extra={"org": org, "version": version})

    def _dispatch(self, request: Request) -> tuple[Response, str]:
        response, tenant = super()._dispatch(request)
        org = self.orgs.get(tenant)
        if org is not None:  # every REST answer reports the org's usage (§6)
            response.headers["Sforce-Limit-Info"] = f"api-usage={org.api_usage}/{self.daily_api_limit}"
        return response, tenant

    def expire_tokens(self) -> None:
        with self.lock:
            self.sessions.clear()

    def _control(self, request: Request) -> Response:
        # One more control route: GET|PUT /_sandbox/api-usage {"daily_api_limit": n, "reset": true} sets the
        # daily allocation (enforced while rate limits are on) and shows or clears each tenant's usage.
        if request.path.rstrip("/") != "/_sandbox/api-usage":
            return super()._control(request)
        if request.method == "PUT":
            try:
                body = orjson.loads(request.get_data() or b"{}")
                limit = body.get("daily_api_limit", self.daily_api_limit)
                if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                    raise ValueError("daily_api_limit must be a non-negative integer")
            except (ValueError, AttributeError) as exc:
                return json_response({"error": str(exc)}, 400)
            with self.lock:
                self.daily_api_limit = limit
            if body.get("reset"):
                self.reset_api_usage()
        with self.lock:
            return json_response({"daily_api_limit": self.daily_api_limit,
                                  "used": {t: org.api_usage for t, org in self.orgs.items()}})

    def reset_api_usage(self) -> None:
        with self.lock:
            for org in self.orgs.values():
                org.api_usage = 0

    def oauth_token(self, request: Request, ctx: RequestContext) -> Response:
        form = request.form
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            client_id, client_secret = auth.username, auth.password
        if client_id != identity.SALESFORCE_CLIENT_ID:
            return json_response({"error": "invalid_client_id", "error_description": "client identifier invalid"},
                                 400)
        if client_secret != identity.SALESFORCE_CLIENT_SECRET:
            return json_response({"error": "invalid_client", "error_description": "invalid client credentials"},
                                 400)
        if form.get("grant_type") != "refresh_token":
            return json_response({"error": "unsupported_grant_type", "error_description": "grant type not supported"},
                                 400)
        refresh_token = form.get("refresh_token", "")
        with self.lock:
            tenant = self.refresh_tokens.get(refresh_token)
            if tenant is None:
                return json_response({"error": "invalid_grant", "error_description": "expired access/refresh token"},
                                     400)
            org = self.orgs[tenant]
            access_token = f"{org.org_id[:15]}!{secrets.token_urlsafe(40)}"
            rotated = None
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[refresh_token]
                rotated = f"sandbox-sf-refresh-{tenant}-{secrets.token_urlsafe(18)}"
                self.refresh_tokens[rotated] = tenant
            self.sessions[access_token] = (tenant, self.clock() + SESSION_SECONDS, rotated or refresh_token)
        instance_url = request.host_url.rstrip("/")
        body = {
            "access_token": access_token, "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            "scope": "refresh_token api", "instance_url": instance_url,
            "id": f"{instance_url}/id/{org.org_id}/{org.user_id}", "token_type": "Bearer",
            "issued_at": str(self.now_ms()),
        }
        if rotated:
            body["refresh_token"] = rotated
        return json_response(body, headers={"Cache-Control": "no-cache, no-store"})

    def oauth_revoke(self, request: Request, ctx: RequestContext) -> Response:
        token = request.form.get("token", "")
        with self.lock:
            if self.refresh_tokens.pop(token, None) is not None:
                self.sessions = {k: v for k, v in self.sessions.items() if v[2] != token}
            elif self.sessions.pop(token, None) is None:
                return json_response({"error": "unsupported_token_type", "error_description": "this token type is "
                                      "not supported"}, 400)
        return Response(status=200)

    # ----- error shapes ------------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> Response:
        code = {400: "BAD_REQUEST", 401: "INVALID_SESSION_ID", 403: "FORBIDDEN", 404: "NOT_FOUND",
                405: "METHOD_NOT_ALLOWED", 503: "SERVER_UNAVAILABLE"}.get(status, "UNKNOWN_EXCEPTION")
        if status == 404:
            message = "The requested resource does not exist"
        return json_response([{"message": message, "errorCode": code}], status)

    def throttled_response(self, reason: str, retry_after: str | None) -> Response:
        # Salesforce never answers 429 and sends no Retry-After: over a limit is 403 REQUEST_LIMIT_EXCEEDED.
        message = ("ConcurrentPerOrgLongTxn Limit exceeded." if reason == "concurrent"
                   else "TotalRequests Limit exceeded.")
        return json_response([{"message": message, "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)

    def expired_token_response(self) -> Response:
        return json_response([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401)

    # ----- metadata ----------------------------------------------------------------------------------------------
    def versions(self, request: Request, ctx: RequestContext) -> Response:
        return json_response([{"label": f"v{v}.0", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                              for v in range(int(MIN_VERSION), int(MAX_VERSION) + 1)])

    def resources(self, request: Request, ctx: RequestContext, version: str) -> Response:
        base = f"/services/data/{version}"
        return json_response({name: f"{base}/{name}" for name in ("limits", "query", "queryAll", "sobjects",
                                                                   "composite")})

    def api_limits(self, request: Request, ctx: RequestContext, version: str) -> Response:
        org: _Org = ctx.extra["org"]
        return json_response({"DailyApiRequests": {"Max": self.daily_api_limit,
                                                   "Remaining": max(0, self.daily_api_limit - org.api_usage)}})

    def describe(self, request: Request, ctx: RequestContext, version: str, sobject: str) -> Response:
        org: _Org = ctx.extra["org"]
        sobject = self._sobject(sobject)
        return json_response({"name": sobject, "label": sobject, "custom": False,
                              "keyPrefix": KEY_PREFIXES[sobject], "createable": True, "updateable": True,
                              "deletable": True, "queryable": True,
                              "fields": [f.describe() for f in org.schema[sobject].values()],
                              "urls": {"sobject": f"/services/data/{version}/sobjects/{sobject}"}})

    @staticmethod
    def _sobject(name: str) -> str:
        for sobject in OBJECTS:
            if sobject.lower() == name.lower():
                return sobject
        raise _fail(404, "NOT_FOUND", "The requested resource does not exist")

    # ----- reading -----------------------------------------------------------------------------------------------
    def _resolver(self, org: _Org, sobject: str) -> Callable[[str], tuple[Callable[[dict], Any], str]]:
        def resolve(path: str) -> tuple[Callable[[dict], Any], str]:
            parts = path.split(".")
            if len(parts) > 2:
                raise SoqlError("INVALID_FIELD", f"relationship paths deeper than one level are not supported "
                                                 f"by the sandbox: {path}")
            if len(parts) == 2:
                reference = org.field(sobject, parts[0] + "Id")
                if reference is None or reference.type != "reference" or reference.reference_to not in OBJECTS:
                    raise SoqlError("INVALID_FIELD", f"Didn't understand relationship '{parts[0]}' in field path. "
                                                     "If you are attempting to use a custom relationship, be sure "
                                                     "to append the '__r' after the custom relationship name.")
                target_type = reference.reference_to
                inner_get, ftype = self._resolver(org, target_type)(parts[1])

                def related(record: dict) -> Any:
                    target = org.get(target_type, record.get(reference.name))
                    return inner_get(target) if target is not None else None

                return related, ftype
            field = org.field(sobject, path)
            if field is None:
                raise SoqlError("INVALID_FIELD", f"No such column '{path}' on entity '{sobject}'. If you are "
                                                 "attempting to use a custom field, be sure to append the '__c' "
                                                 "after the custom field name.")
            if field.type == "address":
                prefix = field.address_prefix
                return (lambda record: _compound(record, prefix)), "address"
            name = field.name
            return (lambda record: record.get(name)), field.type

        return resolve

    def _project(self, org: _Org, sobject: str, record: dict, paths: list[str], version: str) -> dict:
        out: dict[str, Any] = {"attributes": _attributes(sobject, record["Id"], version)}
        resolve = self._resolver(org, sobject)
        for path in paths:
            if "." in path:
                rel, name = path.split(".")
                reference = org.field(sobject, rel + "Id")
                key = rel[0].upper() + rel[1:] if reference is None else reference.name[:-2]
                target = org.get(reference.reference_to, record.get(reference.name)) if reference else None
                if target is None:
                    out[key] = None
                    continue
                nested = out.get(key) or {"attributes": _attributes(reference.reference_to, target["Id"], version)}
                inner = org.field(reference.reference_to, name)
                nested[inner.name] = resolve(path)[0](record)
                out[key] = nested
            else:
                field = org.field(sobject, path)
                out[field.name] = resolve(path)[0](record)
        return out

    def query(self, request: Request, ctx: RequestContext, version: str, all_rows: bool) -> Response:
        org: _Org = ctx.extra["org"]
        try:
            parsed = parse_query(request.args.get("q", ""))
            sobject = next((s for s in OBJECTS if s.lower() == parsed.sobject.lower()), None)
            if sobject is None:
                raise SoqlError("INVALID_TYPE", f"sObject type '{parsed.sobject}' is not supported. If you are "
                                                "attempting to use a custom object, be sure to append the '__c' "
                                                "after the entity name.")
            resolve = self._resolver(org, sobject)
            seen: set[str] = set()
            for path in parsed.fields:
                resolve(path)
                if path.lower() in seen:
                    raise SoqlError("INVALID_FIELD", f"duplicate field selected: {path}")
                seen.add(path.lower())
            predicate = compile_where(parsed.where, resolve, to_18)
            with self.lock:
                rows = [r for r in org.records[sobject].values()
                        if (all_rows or not r["IsDeleted"]) and predicate(r)]
                rows = sort_records(rows, parsed.order, resolve)
                rows = rows[parsed.offset or 0:]
                if parsed.limit is not None:
                    rows = rows[:parsed.limit]
                if parsed.count:
                    return json_response({"totalSize": len(rows), "done": True, "records": []})
                projected = [self._project(org, sobject, r, parsed.fields, version) for r in rows]
        except SoqlError as exc:
            raise _fail(400, exc.code, exc.message) from None
        return self._page(org, projected, 0, self._batch_size(request), version, all_rows, None)

    def query_more(self, request: Request, ctx: RequestContext, version: str, locator: str) -> Response:
        org: _Org = ctx.extra["org"]
        cursor_id, _, offset = locator.rpartition("-")
        with self.lock:
            cursor = org.locators.get(cursor_id)
            now = self.clock()
            if cursor is None or not offset.isdigit() or now - cursor["used"] > LOCATOR_IDLE_SECONDS:
                org.locators.pop(cursor_id, None)
                raise _fail(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            cursor["used"] = now
            org.locators.move_to_end(cursor_id)
        return self._page(org, cursor["rows"], int(offset), cursor["batch"], version, cursor["all_rows"], cursor_id)

    @staticmethod
    def _batch_size(request: Request) -> int:
        options = request.headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        if not match:
            return DEFAULT_BATCH_SIZE
        return min(DEFAULT_BATCH_SIZE, max(MIN_BATCH_SIZE, int(match.group(1))))  # a hint, clamped like Salesforce

    def _page(self, org: _Org, rows: list[dict], offset: int, batch: int, version: str, all_rows: bool,
              cursor_id: str | None) -> Response:
        end = offset + batch
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows), "records": rows[offset:end]}
        if end < len(rows):
            with self.lock:
                if cursor_id is None:
                    cursor_id = "01g" + secrets.token_hex(8)
                    org.locators[cursor_id] = {"rows": rows, "batch": batch, "all_rows": all_rows,
                                               "used": self.clock()}
                    while len(org.locators) > MAX_LOCATORS:
                        org.locators.popitem(last=False)
            body["nextRecordsUrl"] = f"/services/data/{version}/{'queryAll' if all_rows else 'query'}/{cursor_id}-{end}"
        elif cursor_id is not None:
            with self.lock:
                org.locators.pop(cursor_id, None)
        return json_response(body)

    def record(self, request: Request, ctx: RequestContext, version: str, sobject: str, record_id: str) -> Response:
        org: _Org = ctx.extra["org"]
        sobject = self._sobject(sobject)
        with self.lock:
            record = org.get(sobject, record_id)
            if request.method == "GET":
                if record is None or record["IsDeleted"]:
                    raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
                return json_response(self._full(org, sobject, record, request.args.get("fields"), version))
            if request.method == "DELETE":
                try:
                    self._delete(org, ctx, sobject, record_id)
                except SfError as exc:
                    raise _fail(exc.status, exc.code, exc.message, exc.fields) from None
                return Response(status=204)
            body = self._json_object(request)
            try:
                values = self._check(org, sobject, body, creating=False, target=record_id)
                self._update(org, ctx, sobject, record_id, values)
            except SfError as exc:
                raise _fail(exc.status, exc.code, exc.message, exc.fields) from None
        return Response(status=204)

    def _full(self, org: _Org, sobject: str, record: dict, fields: str | None, version: str) -> dict:
        if fields:
            paths = [f.strip() for f in fields.split(",") if f.strip()]
            try:
                for path in paths:
                    self._resolver(org, sobject)(path)
            except SoqlError as exc:
                raise _fail(400, exc.code, exc.message) from None
        else:
            paths = [f.name for f in org.schema[sobject].values()]
        return self._project(org, sobject, record, paths, version)

    # ----- writing -----------------------------------------------------------------------------------------------
    def _json_object(self, request: Request) -> dict:
        body = self.json_body(request, lambda message: json_response(
            [{"message": message, "errorCode": "JSON_PARSER_ERROR"}], 400))
        if not isinstance(body, dict):
            raise _fail(400, "JSON_PARSER_ERROR", "the request body must be a JSON object")
        return body

    def _check(self, org: _Org, sobject: str, body: dict, *, creating: bool, target: str | None = None,
               skip: frozenset[str] = frozenset()) -> dict:
        """Validates a write's fields; returns canonical name -> value or raises the first SfError."""
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key == "attributes" or key.lower() in skip:
                continue
            field = org.field(sobject, key)
            if field is None:
                raise SfError("INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}", [key])
            if field.name == "Id" and not creating:
                continue  # the id in the body of an update names the record; it is not a change
            if not (field.createable if creating else field.updateable):
                raise SfError("INVALID_FIELD_FOR_INSERT_UPDATE",
                              f"Unable to {'create' if creating else 'update'} fields: {field.name}. Please check "
                              "the security settings of this field and verify that it is read/write for your "
                              "profile or permission set.", [field.name])
            values[field.name] = self._coerce(org, sobject, field, value)
        for field in org.schema[sobject].values():
            if field.required and (values.get(field.name) is None if creating or field.name in values else False):
                raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field.name}]", [field.name])
        for name, value in values.items():
            field = org.field(sobject, name)
            if field.unique and value is not None:
                clash = [r for r in org.find_by(sobject, field, value) if id_key(r["Id"]) != id_key(target)]
                if clash:
                    raise SfError("DUPLICATE_VALUE", f"duplicate value found: {field.name} duplicates value on "
                                                     f"record with id: {clash[0]['Id']}", [field.name])
        return values

    @staticmethod
    def _coerce(org: _Org, sobject: str, field: FieldDef, value: Any) -> Any:
        if value is None:
            return None

        def wrong() -> SfError:
            return SfError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{field.name}: value not of required type: {value!r}",
                           [field.name])

        ftype = field.type
        if ftype in ("reference", "id"):
            key = id_key(value)
            if key is None or (field.reference_to in KEY_PREFIXES
                               and not key.startswith(KEY_PREFIXES[field.reference_to].lower())):
                raise SfError("MALFORMED_ID", f"{field.name}: id value of incorrect type: {value}", [field.name])
            if field.reference_to in OBJECTS:
                target = org.get(field.reference_to, value)
                if target is None or target["IsDeleted"]:
                    raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [field.name])
                return target["Id"]
            return to_18(value)
        if ftype in TEXT_TYPES:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise wrong()
            return str(value)
        if ftype in NUMBER_TYPES:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise wrong() from None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise wrong()
            return int(value) if ftype == "int" else value
        if ftype == "boolean":
            if not isinstance(value, bool):
                raise wrong()
            return value
        if ftype == "date":
            try:
                return date.fromisoformat(value).isoformat()
            except (TypeError, ValueError):
                raise wrong() from None
        if ftype == "datetime":
            try:
                return format_datetime(int(parse_datetime(value).timestamp() * 1000))
            except (TypeError, ValueError, AttributeError):
                raise wrong() from None
        raise wrong()

    def _insert(self, org: _Org, ctx: RequestContext, sobject: str, values: dict, via: str) -> dict:
        stamp = org.stamp(self.now_ms())
        record = {"Id": org.new_id(sobject), "IsDeleted": False, "OwnerId": org.user_id, **values,
                  "CreatedDate": stamp, "CreatedById": org.user_id, "LastModifiedDate": stamp,
                  "LastModifiedById": org.user_id, "SystemModstamp": stamp}
        _derive(sobject, record)
        org.remember(sobject, id_key(record["Id"]))
        org.records[sobject][id_key(record["Id"])] = record
        self.record_write(ctx.tenant, "create", sobject, record["Id"], via=via, fields=sorted(values))
        return record

    def _update(self, org: _Org, ctx: RequestContext, sobject: str, record_id: str, values: dict,
                via: str = "rest") -> dict:
        record = org.get(sobject, record_id)
        if record is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        if record["IsDeleted"]:
            raise SfError("ENTITY_IS_DELETED", "entity is deleted", status=404)
        stamp = org.stamp(self.now_ms())
        org.remember(sobject, id_key(record["Id"]))
        record.update(values)
        record.update(LastModifiedDate=stamp, LastModifiedById=org.user_id, SystemModstamp=stamp)
        _derive(sobject, record)
        self.record_write(ctx.tenant, "update", sobject, record["Id"], via=via, fields=sorted(values))
        return record

    def _delete(self, org: _Org, ctx: RequestContext, sobject: str, record_id: str, via: str = "rest") -> dict:
        record = org.get(sobject, record_id)
        if record is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        if record["IsDeleted"]:
            raise SfError("ENTITY_IS_DELETED", "entity is deleted", status=404)
        stamp = org.stamp(self.now_ms())
        org.remember(sobject, id_key(record["Id"]))
        record.update(IsDeleted=True, SystemModstamp=stamp)  # into the recycle bin, visible to queryAll
        self.record_write(ctx.tenant, "delete", sobject, record["Id"], via=via)
        if sobject == "Account":  # Salesforce deletes an account's contacts and opportunities with it
            for child in ("Contact", "Opportunity"):
                for row in org.records[child].values():
                    if not row["IsDeleted"] and id_key(row.get("AccountId")) == id_key(record["Id"]):
                        org.remember(child, id_key(row["Id"]))
                        row.update(IsDeleted=True, SystemModstamp=org.stamp(self.now_ms()))
                        self.record_write(ctx.tenant, "delete", child, row["Id"], via="cascade")
        return record

    def create(self, request: Request, ctx: RequestContext, version: str, sobject: str) -> Response:
        org: _Org = ctx.extra["org"]
        sobject = self._sobject(sobject)
        body = self._json_object(request)
        with self.lock:
            try:
                record = self._insert(org, ctx, sobject, self._check(org, sobject, body, creating=True), "rest")
            except SfError as exc:
                raise _fail(exc.status, exc.code, exc.message, exc.fields) from None
        return json_response({"id": record["Id"], "success": True, "errors": []}, 201,
                             headers={"Location": _attributes(sobject, record["Id"], version)["url"]})

    def _external_field(self, org: _Org, sobject: str, name: str) -> FieldDef:
        field = org.field(sobject, name)
        if field is None or not (field.external_id or field.name == "Id"):
            raise SfError("NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}",
                          status=404)
        return field

    def by_external_id(self, request: Request, ctx: RequestContext, version: str, sobject: str, field: str,
                       value: str) -> Response:
        org: _Org = ctx.extra["org"]
        sobject = self._sobject(sobject)
        with self.lock:
            try:
                ext = self._external_field(org, sobject, field)
            except SfError as exc:
                raise _fail(exc.status, exc.code, exc.message) from None
            matches = org.find_by(sobject, ext, value)
            if len(matches) > 1:  # 300 Multiple Choices: the urls of the records that share the value
                return json_response([_attributes(sobject, r["Id"], version)["url"] for r in matches], 300)
            if request.method == "GET":
                if not matches:
                    raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
                return json_response(self._full(org, sobject, matches[0], request.args.get("fields"), version))
            body = self._json_object(request)
            try:
                result = self._upsert_one(org, ctx, sobject, ext, value, body, matches, "rest")
            except SfError as exc:
                raise _fail(exc.status, exc.code, exc.message, exc.fields) from None
        return json_response(result, 201 if result["created"] else 200)

    def _upsert_one(self, org: _Org, ctx: RequestContext, sobject: str, ext: FieldDef, value: Any, body: dict,
                    matches: list[dict], via: str) -> dict:
        given = next((v for k, v in body.items() if k.lower() == ext.name.lower()), value)
        if given is not None and str(given) != str(value):
            raise SfError("INVALID_FIELD", f"The value of {ext.name} in the body does not match the URL", [ext.name])
        if matches:
            values = self._check(org, sobject, body, creating=False, target=matches[0]["Id"],
                                 skip=frozenset({ext.name.lower()}))
            record = self._update(org, ctx, sobject, matches[0]["Id"], values, via=f"{via}-upsert")
            return {"id": record["Id"], "success": True, "errors": [], "created": False}
        if ext.name == "Id":
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        values = self._check(org, sobject, {**body, ext.name: value}, creating=True)
        record = self._insert(org, ctx, sobject, values, f"{via}-upsert")
        return {"id": record["Id"], "success": True, "errors": [], "created": True}

    # ----- sObject Collections (§4) ------------------------------------------------------------------------------
    def _collection_body(self, request: Request) -> tuple[bool, list]:
        body = self._json_object(request)
        records = body.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _fail(400, "JSON_PARSER_ERROR", "records must be an array of sObjects")
        if len(records) > COLLECTION_MAX:
            raise _fail(400, "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {COLLECTION_MAX} "
                                                  "records into this call")
        return bool(body.get("allOrNone", False)), records

    def collection(self, request: Request, ctx: RequestContext, version: str) -> Response:
        org: _Org = ctx.extra["org"]
        if request.method == "DELETE":
            ids = [i for i in request.args.get("ids", "").split(",") if i]
            if len(ids) > COLLECTION_MAX:
                raise _fail(400, "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than "
                                                      f"{COLLECTION_MAX} records into this call")
            all_or_none = request.args.get("allOrNone", "false").lower() == "true"
            items: list[tuple[str, dict]] = []
            for raw in ids:
                sobject = next((s for s in OBJECTS if org.get(s, raw) is not None), None)
                items.append((sobject or "", {"id": raw}))
            return self._run_collection(org, ctx, items, all_or_none, "delete")
        all_or_none, records = self._collection_body(request)
        items = [((r.get("attributes") or {}).get("type") or "", r) for r in records]
        return self._run_collection(org, ctx, items, all_or_none, "create" if request.method == "POST" else "update")

    def collection_upsert(self, request: Request, ctx: RequestContext, version: str, sobject: str,
                          field: str) -> Response:
        org: _Org = ctx.extra["org"]
        sobject = self._sobject(sobject)
        all_or_none, records = self._collection_body(request)
        with self.lock:
            try:
                ext = self._external_field(org, sobject, field)
            except SfError as exc:
                raise _fail(400, "INVALID_FIELD", exc.message) from None
        return self._run_collection(org, ctx, [(sobject, r) for r in records], all_or_none, "upsert", ext)

    def _run_collection(self, org: _Org, ctx: RequestContext, items: list[tuple[str, dict]], all_or_none: bool,
                        op: str, ext: FieldDef | None = None) -> Response:
        """Each record is validated and applied in order; with allOrNone, one failure restores the org as it was
        and every other record reports ALL_OR_NONE_OPERATION_ROLLED_BACK."""
        with self.lock:
            logged = len(self.write_log)
            org.journal = [] if all_or_none else None
            results: list[dict] = []
            ext_seen: defaultdict[str, int] = defaultdict(int)
            if ext is not None:
                for _, record in items:
                    value = next((v for k, v in record.items() if k.lower() == ext.name.lower()), None)
                    ext_seen[str(value).lower()] += value is not None
            for sobject_name, record in items:
                try:
                    results.append(self._collection_item(org, ctx, op, sobject_name, record, ext, ext_seen))
                except SfError as exc:
                    results.append({"success": False, "errors": [exc.collection()]})
            if all_or_none and any(not r["success"] for r in results):
                org.rollback()
                del self.write_log[logged:]
                results = [r if not r["success"] else {"success": False, "errors": [ROLLED_BACK.collection()]}
                           for r in results]
                if op == "upsert":
                    for r in results:
                        r.setdefault("created", False)
            org.journal = None
        return json_response(results)

    def _collection_item(self, org: _Org, ctx: RequestContext, op: str, sobject_name: str, record: dict,
                         ext: FieldDef | None, ext_seen: dict[str, int]) -> dict:
        sobject = next((s for s in OBJECTS if s.lower() == sobject_name.lower()), None)
        raw_id = record.get("id") or record.get("Id")
        if op == "delete":
            if sobject is None:
                raise SfError("INVALID_CROSS_REFERENCE_KEY" if id_key(raw_id) else "MALFORMED_ID",
                              "invalid cross reference id" if id_key(raw_id) else f"malformed id {raw_id}")
            self._delete(org, ctx, sobject, raw_id, via="collection")
            return {"id": to_18(raw_id), "success": True, "errors": []}
        if sobject is None:
            raise SfError("INVALID_TYPE", f"sObject type '{sobject_name}' is not supported" if sobject_name
                          else "Must specify a type in the attributes of each record")
        body = {k: v for k, v in record.items() if k not in ("attributes", "id", "Id")}
        if op == "create":
            if raw_id is not None:
                raise SfError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
            created = self._insert(org, ctx, sobject, self._check(org, sobject, body, creating=True), "collection")
            return {"id": created["Id"], "success": True, "errors": []}
        if op == "update":
            if raw_id is None:
                raise SfError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            if org.get(sobject, raw_id) is None:
                raise SfError("INVALID_CROSS_REFERENCE_KEY" if id_key(raw_id) else "MALFORMED_ID",
                              "invalid cross reference id" if id_key(raw_id) else f"malformed id {raw_id}", ["Id"])
            values = self._check(org, sobject, body, creating=False, target=raw_id)
            updated = self._update(org, ctx, sobject, raw_id, values, via="collection")
            return {"id": updated["Id"], "success": True, "errors": []}
        assert ext is not None
        value = next((v for k, v in record.items() if k.lower() == ext.name.lower()), None)
        if ext.name == "Id":
            value = raw_id
        if value is None:
            raise SfError("MISSING_ARGUMENT", f"{ext.name} not specified", [ext.name])
        if ext_seen.get(str(value).lower(), 0) > 1:
            raise SfError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [ext.name])
        matches = org.find_by(sobject, ext, value)
        if len(matches) > 1:
            raise SfError("DUPLICATE_EXTERNAL_ID", f"{ext.name}: more than one record found for external id field: "
                                                   f"{[r['Id'] for r in matches]}", [ext.name])
        return self._upsert_one(org, ctx, sobject, ext, value, body, matches, "collection")


def _attributes(sobject: str, record_id: str, version: str) -> dict:
    return {"type": sobject, "url": f"/services/data/{version}/sobjects/{sobject}/{record_id}"}


def _compound(record: dict, prefix: str | None) -> dict | None:
    value = {part: record.get(f"{prefix}{suffix}") for suffix, part, _ in ADDRESS_PARTS}
    return value if any(v is not None for v in value.values()) else None

