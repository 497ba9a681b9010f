"""The HubSpot emulator over real HTTP on 127.0.0.1: auth, listing and paging, properties as strings, search
(filters, sorts, the 10,000 cap, archived records never found, the contacts' lastmodifieddate trap), single and
batch writes with 207 partial failures, v4 associations, the properties API with custom properties, the rolling
10-second limit, and every kind of answer checked against HubSpot's published OpenAPI documents.

Fixtures are built inline, in the shape the API returns (see ../shared/vendors/hubspot.md)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.hubspot import HubSpotEmulator
from connectors.sandbox.identity import hubspot_access_token

SPEC_DIR = Path(__file__).resolve().parents[4] / "shared" / "specs" / "hubspot"
BASE_EPOCH = 1_741_000_000.0
# Plain HTTP on loopback: one shared TLS context spares every client httpx's certificate load.
LOOPBACK_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # 2025-03-03


class Clock:
    def __init__(self) -> None:
        self.now = BASE_EPOCH

    def __call__(self) -> float:
        return self.now


def stamp(day: int, hour: int = 10) -> str:
    return f"2025-02-{day:02d}T{hour:02d}:00:00.000Z"


def company(n: int, *, archived: bool = False, **props: str) -> dict:
    record = {"id": str(100 + n), "properties": {"name": f"Company {n}", "domain": f"c{n}.example",
                                                 "country": "Germany", "annualrevenue": str(1000 * n),
                                                 "createdate": stamp(1),
                                                 "hs_lastmodifieddate": stamp(n % 28 + 1), **props},
              "createdAt": stamp(1), "updatedAt": stamp(n % 28 + 1), "archived": archived}
    if archived:
        record["archivedAt"] = stamp(27)
    return record


def make_fixtures() -> dict[str, dict[str, list[dict]]]:
    companies = [company(n, qb_customer_id=str(50 + n)) for n in range(1, 24)]
    companies.append(company(24, archived=True))
    companies.append(company(25, name="Nordwind GmbH"))
    return {
        "acme": {
            "companies": companies,
            "contacts": [
                {"id": "201", "properties": {"email": "ap@c1.example", "firstname": "Ada", "lastname": "Lovelace",
                                             "lastmodifieddate": stamp(3)},
                 "createdAt": stamp(1), "updatedAt": stamp(3), "archived": False},
                {"id": "202", "properties": {"email": "bob@c2.example", "firstname": "Bob"},
                 "createdAt": stamp(2), "updatedAt": stamp(2), "archived": False},
            ],
            "deals": [
                {"id": "301", "properties": {"dealname": "C1 renewal", "amount": "1440", "dealstage": "closedwon",
                                             "pipeline": "default", "closedate": "2025-03-31T00:00:00.000Z"},
                 "createdAt": stamp(5), "updatedAt": stamp(6), "archived": False},
                {"id": "302", "properties": {"dealname": "C2 upsell", "amount": "99.5", "dealstage": "contractsent",
                                             "pipeline": "default"},
                 "createdAt": stamp(5), "updatedAt": stamp(7), "archived": False},
            ],
            "associations": [
                {"from": {"id": "301"}, "to": [
                    {"toObjectId": "101", "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
                        {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]},
                    {"toObjectId": "124", "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]}]},
            ],
            "properties": [
                {"objectType": "companies", "name": "qb_customer_id", "label": "QuickBooks customer id",
                 "type": "string", "fieldType": "text", "groupName": "companyinformation", "hasUniqueValue": True},
            ],
        },
        "globex": {"companies": [company(90)]},
    }


# ----- harness ------------------------------------------------------------------------------------------------------
CLOCK = Clock()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServedEmulator]:
    with ServedEmulator(HubSpotEmulator(make_fixtures(), clock=CLOCK)) as server:
        yield server


@pytest.fixture
def served(shared_server: ServedEmulator) -> ServedEmulator:
    CLOCK.now = BASE_EPOCH
    shared_server.emulator.load(make_fixtures())
    with httpx.Client(base_url=f"{shared_server.url}/_sandbox", verify=LOOPBACK_TLS) as control:
        control.delete("/faults").raise_for_status()
        control.delete("/log").raise_for_status()
        control.put("/rate-limits", json={"enabled": False}).raise_for_status()
    shared_server.emulator._search_windows.clear()
    return shared_server


def client_for(server: ServedEmulator, tenant: str = "acme") -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {hubspot_access_token(tenant)}"},
                        timeout=10, verify=LOOPBACK_TLS)


@pytest.fixture
def api(served: ServedEmulator) -> Iterator[httpx.Client]:
    with client_for(served) as client:
        yield client


@pytest.fixture
def control(served: ServedEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{served.url}/_sandbox", timeout=10, verify=LOOPBACK_TLS) as client:
        yield client


# ----- the published contract ---------------------------------------------------------------------------------------
SPECS = {"companies": "companies-v3.json", "contacts": "contacts-v3.json", "deals": "deals-v3.json",
         "associations": "associations-v4.json", "properties": "properties-v3.json"}


def _openapi_to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_json_schema(v) for k, v in node.items() if k not in ("example", "examples")}
    if out.pop("nullable", False) is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _relax_documented_nulls(document: dict) -> None:
    """Two places where the real API answers null but the spec types a plain string (vendors/hubspot.md §2, §5):
    a requested-but-unset property value, and the label of an unlabelled association type. Only these."""
    for schema in document["components"]["schemas"].values():
        props = schema.get("properties", {}).get("properties")
        if isinstance(props, dict) and props.get("additionalProperties", {}).get("type") == "string":
            props["additionalProperties"]["type"] = ["string", "null"]
    label = document["components"]["schemas"].get("AssociationSpecWithLabel", {}).get("properties", {}).get("label")
    if label:
        label["type"] = ["string", "null"]


@cache
def _openapi(name: str) -> tuple[dict, Registry]:
    path = SPEC_DIR / SPECS[name]
    if not path.exists():
        pytest.skip(f"HubSpot OpenAPI document not found at {path}")
    document = _openapi_to_json_schema(json.loads(path.read_text()))
    _relax_documented_nulls(document)
    resource = Resource.from_contents(document, default_specification=DRAFT4)
    return document, Registry().with_resource(f"urn:hubspot-{name}", resource)


def assert_conforms(response: httpx.Response, spec: str, path: str, method: str = "get") -> dict:
    """The body matches the spec's schema for (path, method, status); an error status matches `default`."""
    document, registry = _openapi(spec)
    declared = document["paths"][path][method]["responses"]
    status = str(response.status_code)
    if status not in declared:
        assert response.status_code >= 400, f"{method.upper()} {path} answered {status}, not declared in the spec"
        status = "default"
    if status == "default":
        schema = {"$ref": "#/components/schemas/Error"}
    else:
        content = declared[status].get("content", {})
        schema = (content.get("application/json") or content.get("*/*") or {}).get("schema")
        if schema is None:
            assert not response.content, f"{status} declares no body"
            return {}
    if schema.get("$ref", "").startswith("#"):
        schema = {"$ref": f"urn:hubspot-{spec}{schema['$ref']}"}
    body = response.json()
    validator = jsonschema.Draft4Validator(schema, registry=registry)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(body)]
    assert not problems, f"{method.upper()} {path} {status}:\n  " + "\n  ".join(problems[:10])
    return body


def error_of(response: httpx.Response, status: int, category: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["category"] == category, body
    assert body["correlationId"] and body["message"]
    return body


def list_all(api: httpx.Client, path: str, **params: Any) -> tuple[list[dict], int]:
    rows, pages, after = [], 0, None
    while True:
        response = api.get(path, params={**params, **({"after": after} if after else {})})
        body = response.json()
        assert response.status_code == 200, body
        rows += body["results"]
        pages += 1
        after = body.get("paging", {}).get("next", {}).get("after")
        if after is None:
            return rows, pages


# ----- auth -----------------------------------------------------------------------------------------------------------
def test_the_token_selects_the_portal_and_bad_tokens_are_401(served: ServedEmulator) -> None:
    with client_for(served, "acme") as acme, client_for(served, "globex") as globex:
        assert [c["id"] for c in globex.get("/crm/v3/objects/companies").json()["results"]] == ["190"]
        assert len(acme.get("/crm/v3/objects/companies", params={"limit": 100}).json()["results"]) == 24
        error_of(globex.get("/crm/v3/objects/companies/101"), 404, "OBJECT_NOT_FOUND")
    for headers in ({}, {"Authorization": "Bearer pat-na1-nope"}, {"Authorization": "Basic abc"}):
        response = httpx.get(f"{served.url}/crm/v3/objects/companies", headers=headers, verify=LOOPBACK_TLS)
        assert_conforms(response, "companies", "/crm/v3/objects/companies")
        error_of(response, 401, "INVALID_AUTHENTICATION")
    assert HubSpotEmulator.sandbox_secrets("acme") == {"access_token": hubspot_access_token("acme")}


# ----- listing and records -----------------------------------------------------------------------------------------
def test_listing_pages_with_after_and_hides_archived_records(api: httpx.Client) -> None:
    first = assert_conforms(api.get("/crm/v3/objects/companies"), "companies", "/crm/v3/objects/companies")
    assert len(first["results"]) == 10  # the default limit
    assert first["paging"]["next"]["after"] == str(int(first["results"][-1]["id"]) + 1)
    rows, pages = list_all(api, "/crm/v3/objects/companies", limit=7)
    assert pages == 4 and len(rows) == 24 and "124" not in {r["id"] for r in rows}
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), key=int)
    archived = assert_conforms(api.get("/crm/v3/objects/companies", params={"archived": "true"}), "companies",
                               "/crm/v3/objects/companies")
    assert [(r["id"], r["archived"], r["archivedAt"]) for r in archived["results"]] == [("124", True, stamp(27))]
    assert "paging" not in archived
    error_of(api.get("/crm/v3/objects/companies", params={"limit": 101}), 400, "VALIDATION_ERROR")
    error_of(api.get("/crm/v3/objects/widgets"), 400, "VALIDATION_ERROR")
    error_of(api.get("/crm/v3/objects/companies/124"), 404, "OBJECT_NOT_FOUND")
    assert api.get("/crm/v3/objects/companies/124", params={"archived": "true"}).json()["archived"] is True


def test_property_values_are_strings_unset_ones_null_and_defaults_apply(api: httpx.Client) -> None:
    default = api.get("/crm/v3/objects/companies/101").json()
    assert set(default["properties"]) == {"name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"}
    asked = api.get("/crm/v3/objects/companies/101",
                    params={"properties": "name,annualrevenue,city,qb_customer_id,no_such_prop"}).json()
    assert asked["properties"] == {"name": "Company 1", "annualrevenue": "1000", "city": None, "qb_customer_id": "51"}
    by_unique = assert_conforms(api.get("/crm/v3/objects/companies/55", params={"idProperty": "qb_customer_id"}),
                                "companies", "/crm/v3/objects/companies/{companyId}")
    assert by_unique["id"] == "105"
    error_of(api.get("/crm/v3/objects/companies/55", params={"idProperty": "domain"}), 400, "VALIDATION_ERROR")
    deal = assert_conforms(api.get("/crm/v3/objects/0-3/301", params={"properties": ["amount", "closedate"]}),
                           "deals", "/crm/v3/objects/0-3/{dealId}")
    assert deal["properties"] == {"amount": "1440", "closedate": "2025-03-31T00:00:00.000Z"}


# ----- search -----------------------------------------------------------------------------------------------------
def search(api: httpx.Client, object_type: str = "companies", **body: Any) -> httpx.Response:
    return api.post(f"/crm/v3/objects/{object_type}/search", json=body)


def test_search_filters_sorts_pages_and_never_finds_archived(api: httpx.Client) -> None:
    since = "1739872800000"  # 2025-02-18T10:00:00Z as epoch ms
    body = {"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": since}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": ["name", "hs_lastmodifieddate"], "limit": 4}
    first = assert_conforms(search(api, **body), "companies", "/crm/v3/objects/companies/search", "post")
    found, after = list(first["results"]), first["paging"]["next"]["after"]
    while after:
        page = search(api, **body, after=after).json()
        found += page["results"]
        after = page.get("paging", {}).get("next", {}).get("after")
    stamps = [r["properties"]["hs_lastmodifieddate"] for r in found]
    assert stamps == sorted(stamps) and all(s >= "2025-02-18T10" for s in stamps)
    assert len(found) == first["total"] == 8  # companies 17..23 and 25 (24 is archived: never in search)
    iso = search(api, filterGroups=[{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                                                   "value": "2025-02-18T10:00:00Z"}]}]).json()
    assert iso["total"] == 8
    either = search(api, filterGroups=[
        {"filters": [{"propertyName": "annualrevenue", "operator": "BETWEEN", "value": "2000", "highValue": "3000"}]},
        {"filters": [{"propertyName": "domain", "operator": "IN", "values": ["c9.example"]}]},
    ]).json()
    assert sorted(r["id"] for r in either["results"]) == ["102", "103", "109"]
    token = search(api, filterGroups=[{"filters": [{"propertyName": "name", "operator": "CONTAINS_TOKEN",
                                                    "value": "nord*"}]}]).json()
    assert [r["id"] for r in token["results"]] == ["125"]
    assert [r["id"] for r in search(api, query="Nordwind").json()["results"]] == ["125"]
    descending = search(api, sorts=["-annualrevenue"], limit=2).json()
    assert [r["id"] for r in descending["results"]] == ["125", "123"]
    assert search(api, filterGroups=[{"filters": [{"propertyName": "name", "operator": "EQ",
                                                   "value": "Company 24"}]}]).json()["total"] == 0
    error_of(search(api, limit=201), 400, "VALIDATION_ERROR")
    error_of(search(api, filterGroups=[{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]),
             400, "VALIDATION_ERROR")
    too_many = [{"filters": [{"propertyName": "name", "operator": "HAS_PROPERTY"}]}] * 7
    error_of(search(api, filterGroups=too_many), 400, "VALIDATION_ERROR")


def test_contacts_keep_lastmodifieddate_current_but_not_hs_lastmodifieddate(api: httpx.Client) -> None:
    CLOCK.now = BASE_EPOCH + 86400
    assert api.patch("/crm/v3/objects/contacts/202", json={"properties": {"lastname": "Builder"}}).status_code == 200
    since = str(int(BASE_EPOCH * 1000))

    def changed(prop: str) -> list[str]:
        response = search(api, "contacts", filterGroups=[{"filters": [{"propertyName": prop, "operator": "GT",
                                                                       "value": since}]}])
        return [r["id"] for r in assert_conforms(response, "contacts", "/crm/v3/objects/contacts/search",
                                                 "post")["results"]]

    assert changed("lastmodifieddate") == ["202"]
    assert changed("hs_lastmodifieddate") == []  # the documented trap: the update is silently missed


def test_search_stops_at_ten_thousand_results() -> None:
    companies = [{"id": str(1000 + n), "properties": {"name": f"C{n}", "hs_lastmodifieddate": stamp(1 + n % 28)},
                  "createdAt": stamp(1), "updatedAt": stamp(1 + n % 28), "archived": False} for n in range(10_050)]
    with ServedEmulator(HubSpotEmulator({"big": {"companies": companies}})) as server, client_for(server, "big") as api:
        near = search(api, limit=200, after="9900").json()
        assert near["total"] == 10_050 and len(near["results"]) == 100
        assert near["paging"]["next"]["after"] == "10000"
        body = error_of(search(api, limit=200, after="10000"), 400, "VALIDATION_ERROR")
        assert "10000" in body["message"]
        listed, pages = list_all(api, "/crm/v3/objects/companies", limit=100)
        assert len(listed) == 10_050 and pages == 101  # the plain listing has no cap


# ----- writes -----------------------------------------------------------------------------------------------------
def test_create_update_clear_and_archive(api: httpx.Client, control: httpx.Client) -> None:
    CLOCK.now = BASE_EPOCH + 60
    created = assert_conforms(api.post("/crm/v3/objects/companies", json={
        "properties": {"name": "Kestrel Ltd", "annualrevenue": 2500, "city": "Leeds"}}),
        "companies", "/crm/v3/objects/companies", "post")
    assert created["properties"]["annualrevenue"] == "2500" and created["properties"]["hs_lastmodifieddate"] == \
        "2025-03-03T11:07:40.000Z"
    cid = created["id"]
    CLOCK.now += 60
    updated = assert_conforms(api.patch(f"/crm/v3/objects/companies/{cid}", json={"properties": {"city": ""}}),
                              "companies", "/crm/v3/objects/companies/{companyId}", "patch")
    assert updated["updatedAt"] == "2025-03-03T11:08:40.000Z"
    again = api.get(f"/crm/v3/objects/companies/{cid}", params={"properties": "city"}).json()
    assert again["properties"]["city"] is None
    bad = api.patch(f"/crm/v3/objects/companies/{cid}", json={"properties": {"annualrevenue": "12x"}})
    assert "INVALID_FLOAT" in json.dumps(error_of(bad, 400, "VALIDATION_ERROR"))
    error_of(api.patch(f"/crm/v3/objects/companies/{cid}", json={"properties": {"hs_object_id": "1"}}), 400,
             "VALIDATION_ERROR")
    assert api.delete(f"/crm/v3/objects/companies/{cid}").status_code == 204
    error_of(api.get(f"/crm/v3/objects/companies/{cid}"), 404, "OBJECT_NOT_FOUND")
    duplicate = api.post("/crm/v3/objects/contacts", json={"properties": {"email": "ap@c1.example"}})
    assert error_of(duplicate, 409, "CONFLICT")["message"] == "Contact already exists. Existing ID: 201"
    writes = [(w["op"], w["entity"], w["id"]) for w in control.get("/writes").json()]
    assert writes == [("create", "companies", cid), ("update", "companies", cid), ("archive", "companies", cid)]


def test_batch_read_reports_missing_ids_as_a_207(api: httpx.Client) -> None:
    response = api.post("/crm/v3/objects/companies/batch/read", json={
        "idProperty": "qb_customer_id", "properties": ["name"], "propertiesWithHistory": [],
        "inputs": [{"id": "51"}, {"id": "52"}, {"id": "999"}, {"id": "998"}]})
    body = assert_conforms(response, "companies", "/crm/v3/objects/companies/batch/read", "post")
    assert response.status_code == 207 and body["numErrors"] == 1
    assert sorted(r["id"] for r in body["results"]) == ["101", "102"]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND" and body["errors"][0]["context"]["ids"] == ["999", "998"]
    whole = api.post("/crm/v3/objects/companies/batch/read",
                     json={"inputs": [{"id": "101"}, {"id": "124"}], "properties": [], "propertiesWithHistory": []})
    assert whole.status_code == 207  # archived records are not read without archived=true
    ok = api.post("/crm/v3/objects/companies/batch/read", params={"archived": "true"},
                  json={"inputs": [{"id": "124"}], "properties": [], "propertiesWithHistory": []})
    assert assert_conforms(ok, "companies", "/crm/v3/objects/companies/batch/read", "post")["results"][0]["archived"]
    too_many = {"inputs": [{"id": str(i)} for i in range(101)], "properties": [], "propertiesWithHistory": []}
    error_of(api.post("/crm/v3/objects/companies/batch/read", json=too_many), 400, "VALIDATION_ERROR")


def test_batch_create_update_and_upsert(api: httpx.Client, control: httpx.Client) -> None:
    created = api.post("/crm/v3/objects/deals/batch/create", json={"inputs": [
        {"properties": {"dealname": "New A", "amount": "10", "dealstage": "closedwon", "pipeline": "default"},
         "associations": [{"to": {"id": "105"}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                                           "associationTypeId": 341}]}]},
        {"properties": {"dealname": "New B"}, "associations": []}]})
    body = assert_conforms(created, "deals", "/crm/v3/objects/0-3/batch/create", "post")
    assert created.status_code == 201 and [r["properties"]["dealname"] for r in body["results"]] == ["New A", "New B"]
    links = api.get(f"/crm/v4/objects/deals/{body['results'][0]['id']}/associations/companies").json()
    assert [r["toObjectId"] for r in links["results"]] == ["105"]

    before = len(control.get("/writes").json())
    invalid = api.post("/crm/v3/objects/deals/batch/create", json={"inputs": [
        {"properties": {"dealname": "ok"}}, {"properties": {"dealstage": "nonsense"}}]})
    assert "INVALID_OPTION" in json.dumps(error_of(invalid, 400, "VALIDATION_ERROR"))
    assert len(control.get("/writes").json()) == before  # all or nothing

    partial = api.post("/crm/v3/objects/companies/batch/update", json={"inputs": [
        {"id": "101", "properties": {"city": "Bremen"}}, {"id": "777", "properties": {"city": "Kiel"}},
        {"id": "53", "idProperty": "qb_customer_id", "properties": {"city": "Ulm"}}]})
    body = assert_conforms(partial, "companies", "/crm/v3/objects/companies/batch/update", "post")
    assert partial.status_code == 207 and sorted(r["id"] for r in body["results"]) == ["101", "103"]
    assert body["errors"][0]["context"]["ids"] == ["777"]
    error_of(api.post("/crm/v3/objects/companies/batch/update", json={"inputs": [
        {"id": "101", "properties": {}}, {"id": "101", "properties": {}}]}), 400, "VALIDATION_ERROR")

    upsert = api.post("/crm/v3/objects/companies/batch/upsert", json={"inputs": [
        {"idProperty": "qb_customer_id", "id": "51", "properties": {"name": "Renamed"}},
        {"idProperty": "qb_customer_id", "id": "4242", "properties": {"name": "Brand new"}}]})
    body = assert_conforms(upsert, "companies", "/crm/v3/objects/companies/batch/upsert", "post")
    outcome = {r["properties"]["qb_customer_id"]: (r["new"], r["properties"]["name"]) for r in body["results"]}
    assert outcome == {"51": (False, "Renamed"), "4242": (True, "Brand new")}
    repeat = api.post("/crm/v3/objects/companies/batch/upsert", json={"inputs": [
        {"idProperty": "qb_customer_id", "id": "4242", "properties": {"name": "Brand new"}}]}).json()
    assert repeat["results"][0]["new"] is False  # an upsert is safe to repeat: no second company
    error_of(api.post("/crm/v3/objects/companies/batch/upsert", json={"inputs": [
        {"idProperty": "domain", "id": "x.example", "properties": {}}]}), 400, "VALIDATION_ERROR")
    contact = api.post("/crm/v3/objects/contacts/batch/upsert", json={"inputs": [
        {"idProperty": "email", "id": "ap@c1.example", "properties": {"firstname": "Augusta"}}]}).json()
    assert contact["results"][0]["id"] == "201" and contact["results"][0]["new"] is False

    assert api.post("/crm/v3/objects/companies/batch/archive", json={"inputs": [{"id": "102"}]}).status_code == 204
    assert "102" in {r["id"] for r in api.get("/crm/v3/objects/companies",
                                             params={"archived": "true"}).json()["results"]}


# ----- associations -----------------------------------------------------------------------------------------------
def test_v4_associations_between_deals_and_companies(api: httpx.Client, control: httpx.Client) -> None:
    path = "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}"
    links = assert_conforms(api.get("/crm/v4/objects/deals/301/associations/companies"), "associations", path)
    # company 124 is archived: its link is hidden
    assert links["results"] == [{"toObjectId": "101", "associationTypes": [
        {"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"},
        {"category": "HUBSPOT_DEFINED", "typeId": 341, "label": None}]}]
    back = api.get("/crm/v4/objects/companies/101/associations/deals").json()
    assert [(r["toObjectId"], [t["typeId"] for t in r["associationTypes"]]) for r in back["results"]] == \
        [("301", [6, 342])]
    v3 = api.get("/crm/v3/objects/deals/301", params={"associations": "companies"}).json()
    assert v3["associations"]["companies"]["results"] == [{"id": "101", "type": "deal_to_company"},
                                                          {"id": "101", "type": "deal_to_company_unlabeled"}]

    labelled = api.put("/crm/v4/objects/deals/302/associations/companies/102",
                       json=[{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}])
    assert assert_conforms(labelled, "associations", f"{path}/{{toObjectId}}", "put")["labels"] == ["Primary"]
    default = api.put("/crm/v4/objects/deals/302/associations/default/companies/103")
    assert_conforms(default, "associations", "/crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/default/"
                    "{toObjectType}/{toObjectId}", "put")
    error_of(api.put("/crm/v4/objects/deals/302/associations/companies/999",
                     json=[{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 341}]), 404,
             "OBJECT_NOT_FOUND")
    error_of(api.put("/crm/v4/objects/deals/302/associations/companies/103",
                     json=[{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]), 400,
             "VALIDATION_ERROR")

    batch_path = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read"
    read = api.post("/crm/v4/associations/deals/companies/batch/read",
                    json={"inputs": [{"id": "301"}, {"id": "302"}, {"id": "999"}]})
    body = assert_conforms(read, "associations", batch_path, "post")
    assert read.status_code == 207 and body["errors"][0]["context"]["ids"] == ["999"]
    assert {r["from"]["id"]: [t["toObjectId"] for t in r["to"]] for r in body["results"]} == \
        {"301": ["101"], "302": ["102", "103"]}
    created = api.post("/crm/v4/associations/deals/companies/batch/create", json={"inputs": [
        {"from": {"id": "301"}, "to": {"id": "104"},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 341}]}]})
    assert created.status_code == 201
    assert_conforms(created, "associations", "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create",
                    "post")
    assert api.delete("/crm/v4/objects/deals/301/associations/companies/104").status_code == 204
    assert [r["toObjectId"] for r in api.get("/crm/v4/objects/deals/301/associations/companies").json()["results"]] \
        == ["101"]
    ops = [w["op"] for w in control.get("/writes").json()]
    assert ops == ["associate", "associate", "associate", "dissociate"]


# ----- properties API ---------------------------------------------------------------------------------------------
def test_custom_properties_can_be_created_then_written_and_read(api: httpx.Client) -> None:
    listed = assert_conforms(api.get("/crm/v3/properties/companies"), "properties", "/crm/v3/properties/{objectType}")
    assert {"name", "hs_lastmodifieddate", "qb_customer_id"} <= {p["name"] for p in listed["results"]}
    error_of(api.patch("/crm/v3/objects/companies/101", json={"properties": {"billing_status": "active"}}), 400,
             "VALIDATION_ERROR")
    created = api.post("/crm/v3/properties/companies", json={
        "name": "billing_status", "label": "Billing status", "type": "enumeration", "fieldType": "select",
        "groupName": "companyinformation", "options": [{"label": "Active", "value": "active"},
                                                       {"label": "Churned", "value": "churned"}]})
    body = assert_conforms(created, "properties", "/crm/v3/properties/{objectType}", "post")
    assert created.status_code == 201 and body["hubspotDefined"] is False
    assert api.patch("/crm/v3/objects/companies/101", json={"properties": {"billing_status": "active"}}).status_code \
        == 200
    assert api.get("/crm/v3/objects/companies/101", params={"properties": "billing_status"}).json()["properties"] == \
        {"billing_status": "active"}
    error_of(api.patch("/crm/v3/objects/companies/101", json={"properties": {"billing_status": "paused"}}), 400,
             "VALIDATION_ERROR")
    error_of(api.post("/crm/v3/properties/companies", json={
        "name": "billing_status", "label": "x", "type": "string", "fieldType": "text", "groupName": "g"}), 409,
        "OBJECT_ALREADY_EXISTS")
    error_of(api.post("/crm/v3/properties/companies", json={
        "name": "mrr", "label": "MRR", "type": "money", "fieldType": "text", "groupName": "g"}), 400,
        "VALIDATION_ERROR")
    one = api.get("/crm/v3/properties/companies/billing_status")
    assert assert_conforms(one, "properties", "/crm/v3/properties/{objectType}/{propertyName}")["type"] == "enumeration"
    assert api.delete("/crm/v3/properties/companies/billing_status").status_code == 204
    error_of(api.get("/crm/v3/properties/companies/billing_status"), 404, "OBJECT_NOT_FOUND")


# ----- limits and faults ------------------------------------------------------------------------------------------
def test_the_rolling_ten_second_limit_and_its_429_body(api: httpx.Client, control: httpx.Client) -> None:
    control.put("/rate-limits", json={"enabled": True}).raise_for_status()
    statuses = [api.get("/crm/v3/objects/companies/101").status_code for _ in range(101)]
    assert statuses[:100] == [200] * 100 and statuses[100] == 429
    throttled = api.get("/crm/v3/objects/companies/101")
    body = assert_conforms(throttled, "companies", "/crm/v3/objects/companies/{companyId}")
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert "Retry-After" not in throttled.headers
    control.put("/rate-limits", json={"enabled": True, "per_minute": 1000}).raise_for_status()
    ok = api.get("/crm/v3/objects/companies/101")
    assert ok.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    searches = [search(api).status_code for _ in range(6)]
    assert searches[:5] == [200] * 5 and searches[5] == 429
    assert search(api).json()["policyName"] == "SECONDLY"


def test_injected_faults_answer_in_hubspot_shapes(api: httpx.Client, control: httpx.Client) -> None:
    control.post("/faults", json={"kind": "status", "status": 502, "path": "/companies"}).raise_for_status()
    error_of(api.get("/crm/v3/objects/companies"), 502, "INTERNAL_ERROR")
    control.post("/faults", json={"kind": "expired_token"}).raise_for_status()
    error_of(api.get("/crm/v3/objects/companies"), 401, "EXPIRED_AUTHENTICATION")
    control.post("/faults", json={"kind": "status", "status": 429}).raise_for_status()
    assert api.get("/crm/v3/objects/companies").json()["policyName"] == "TEN_SECONDLY_ROLLING"
