"""The Attio emulator over real HTTP on 127.0.0.1: bearer auth, records with values as arrays of value objects,
query with filters, sorts and limit/offset (no paging metadata), create, assert by a unique attribute, PATCH vs PUT
multiselect semantics, hard deletes, errors, rate limits with an HTTP-date Retry-After, and conformance of every
kind of answer to Attio's OpenAPI document."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connectors.sandbox.attio import AttioEmulator
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.identity import attio_access_token

SPEC_PATH = Path(__file__).resolve().parents[4] / "shared" / "specs" / "attio" / "openapi.yaml"
WS = "2e7c9a10-4b5d-4f6e-8a7b-1c2d3e4f5a6b"
ACTOR = {"type": "api-token", "id": "a1b2c3d4-0000-4000-8000-000000000001"}
NORDWIND = "a9b8c7d6-e5f4-4a3b-8c2d-1e0f9a8b7c6d"


def value(kind: str, at: str = "2025-03-02T09:14:11.061281000Z", **fields: Any) -> dict:
    return {"active_from": at, "active_until": None, "created_by_actor": ACTOR, **fields, "attribute_type": kind}


def company(n: int, name: str, domain: str, *, rid: str | None = None, **extra: list) -> dict:
    rid = rid or f"00000000-0000-4000-8000-{n:012d}"
    return {"id": {"workspace_id": WS, "object_id": "6f8e9d0c-1b2a-4c3d-9e4f-5a6b7c8d9e0f", "record_id": rid},
            "created_at": f"2025-03-02T09:{n // 60 % 60:02d}:{n % 60:02d}.000000000Z",
            "web_url": f"https://app.attio.com/acme/company/{rid}",
            "values": {"name": [value("text", value=name)],
                       "domains": [value("domain", domain=domain, root_domain=domain)], **extra}}


def make_fixtures(companies: int = 3) -> dict:
    rows = [company(1, "Nordwind GmbH", "nordwind.example", rid=NORDWIND,
                    primary_location=[value("location", line_1="Hafenstrasse 5", line_2=None, line_3=None,
                                            line_4=None, locality="Hamburg", region=None, postcode="20457",
                                            country_code="DE", latitude=None, longitude=None)],
                    qb_customer_id=[value("text", value="58")]),
            company(2, "Globex Corp", "globex.example", qb_customer_id=[value("text", value="59")]),
            company(3, "initech ltd", "initech.example")]
    rows += [company(n, f"Company {n:04d}", f"c{n}.example") for n in range(4, companies + 1)]
    return {
        "acme": {
            "companies": rows,
            "people": [],
            "deals": [],
            "attributes": [
                {"object": "companies", "api_slug": "qb_customer_id", "title": "QuickBooks customer id", "type": "text",
                 "is_unique": True},
                {"object": "companies", "api_slug": "tier", "type": "select", "options": ["Gold", "Silver"]},
                {"object": "deals", "api_slug": "value", "type": "currency", "default_currency_code": "EUR"},
                {"object": "deals", "api_slug": "external_id", "type": "text", "is_unique": True},
            ],
        },
        "globex": {"companies": [company(9, "Other", "other.example")]},
    }


# ----- harness -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServedEmulator]:
    with ServedEmulator(AttioEmulator(make_fixtures())) as server:
        yield server


@pytest.fixture
def served(shared_server: ServedEmulator) -> ServedEmulator:
    shared_server.emulator.load(make_fixtures())
    shared_server.emulator.limits.enabled = False
    shared_server.emulator.faults.clear()
    shared_server.emulator.write_log.clear()
    return shared_server


def client_for(server: ServedEmulator, tenant: str = "acme") -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {attio_access_token(tenant)}"},
                        timeout=10)


@pytest.fixture
def api(served: ServedEmulator) -> Iterator[httpx.Client]:
    with client_for(served) as client:
        yield client


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status_code", "type", "code", "message"} and body["status_code"] == status, body
    if code:
        assert body["code"] == code, body
    return body


def query(api: httpx.Client, obj: str = "companies", **body: Any) -> list[dict]:
    response = api.post(f"/v2/objects/{obj}/records/query", json=body)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"data"}  # no total, no cursor
    return response.json()["data"]


def names(records: list[dict]) -> list[str]:
    return [r["values"]["name"][0]["value"] for r in records]


def create(api: httpx.Client, obj: str, values: dict, status: int = 200) -> dict:
    response = api.post(f"/v2/objects/{obj}/records", json={"data": {"values": values}})
    assert response.status_code == status, response.text
    return response.json()["data"] if status == 200 else response.json()


# ----- auth ----------------------------------------------------------------------------------------------------------
def test_bearer_token_selects_the_workspace(served: ServedEmulator) -> None:
    with client_for(served, "acme") as acme, client_for(served, "globex") as globex:
        assert len(query(acme)) == 3
        assert names(query(globex)) == ["Other"]
        assert globex.get(f"/v2/objects/companies/records/{NORDWIND}").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {attio_access_token('acme')}",
                                    attio_access_token("acme")])
def test_missing_or_wrong_token_gets_401(served: ServedEmulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{served.url}/v2/objects/companies/records/query", json={}, headers=headers)
    error_of(response, 401, "unauthorized")


# ----- query ---------------------------------------------------------------------------------------------------------
def test_query_pages_by_limit_and_offset_default_500_without_metadata(served: ServedEmulator) -> None:
    served.emulator.load(make_fixtures(companies=1203))
    with client_for(served) as api:
        first = query(api)
        assert len(first) == 500
        assert len(query(api, offset=500)) == 500 and len(query(api, offset=1000)) == 203
        assert query(api, offset=1203) == []
        seen = [r["id"]["record_id"] for off in range(0, 1203, 100) for r in query(api, limit=100, offset=off)]
        assert len(seen) == len(set(seen)) == 1203
        error_of(api.post("/v2/objects/companies/records/query", json={"limit": 0}), 400)
        error_of(api.post("/v2/objects/companies/records/query", json={"offset": -1}), 400)


def test_filters_shorthand_verbose_logic_and_sub_fields(api: httpx.Client) -> None:
    assert names(query(api, filter={"name": "Nordwind GmbH"})) == ["Nordwind GmbH"]
    assert names(query(api, filter={"domains": {"domain": {"$eq": "globex.example"}}})) == ["Globex Corp"]
    assert names(query(api, filter={"domains": "globex.example"})) == ["Globex Corp"]
    assert names(query(api, filter={"name": {"$contains": "GMBH"}})) == ["Nordwind GmbH"]
    assert names(query(api, filter={"name": {"$starts_with": "glo"}})) == ["Globex Corp"]
    assert names(query(api, filter={"primary_location": {"locality": "Hamburg"}})) == ["Nordwind GmbH"]
    assert names(query(api, filter={"qb_customer_id": {"$in": ["59", "60"]}})) == ["Globex Corp"]
    assert names(query(api, filter={"qb_customer_id": {"$not_empty": True}})) == ["Nordwind GmbH", "Globex Corp"]
    assert names(query(api, filter={"qb_customer_id": {"$not_empty": False}})) == ["initech ltd"]
    assert names(query(api, filter={"$or": [{"name": "Globex Corp"}, {"name": "initech ltd"}]})) == \
        ["Globex Corp", "initech ltd"]
    assert names(query(api, filter={"$not": {"name": "Globex Corp"}})) == ["Nordwind GmbH", "initech ltd"]
    assert names(query(api, filter={"$and": [{"created_at": {"$gte": "2025-03-02T09:00:02.000000000Z"}},
                                             {"domains": {"root_domain": {"$ends_with": ".example"}}}]})) == \
        ["Globex Corp", "initech ltd"]
    assert names(query(api, filter={"record_id": NORDWIND})) == ["Nordwind GmbH"]
    for bad in ({"nope": "x"}, {"name": {"$like": "x"}}, {"$xor": []}, {"$and": {"name": "x"}}, ["x"]):
        error_of(api.post("/v2/objects/companies/records/query", json={"filter": bad}), 400, "filter_error")


def test_sorts_by_attribute_field_and_created_at(api: httpx.Client) -> None:
    assert names(query(api, sorts=[{"direction": "asc", "attribute": "name"}])) == \
        ["Globex Corp", "Nordwind GmbH", "initech ltd"]
    assert names(query(api, sorts=[{"direction": "desc", "attribute": "created_at"}])) == \
        ["initech ltd", "Globex Corp", "Nordwind GmbH"]
    # records without a value sort last when ascending
    assert names(query(api, sorts=[{"direction": "asc", "attribute": "qb_customer_id"}]))[-1] == "initech ltd"
    assert names(query(api, sorts=[{"direction": "asc", "attribute": "domains", "field": "domain"}]))[0] == \
        "Globex Corp"
    error_of(api.post("/v2/objects/companies/records/query",
                      json={"sorts": [{"direction": "up", "attribute": "name"}]}), 400)
    error_of(api.post("/v2/objects/unicorns/records/query", json={}), 404, "not_found")


# ----- writes --------------------------------------------------------------------------------------------------------
def test_create_builds_typed_value_arrays_for_every_attribute(api: httpx.Client, served: ServedEmulator) -> None:
    made = create(api, "companies", {
        "name": "Hafen AG", "domains": ["https://www.Hafen.example/about", "hafen.co.uk"],
        "primary_location": [{"line_1": "Kai 1", "locality": "Bremen", "postcode": "28195", "country_code": "DE"}],
        "qb_customer_id": "77", "tier": "Gold",
    })
    values = made["values"]
    assert set(values) >= {"name", "domains", "description", "primary_location", "team", "created_at", "record_id",
                           "qb_customer_id", "tier"}
    assert values["description"] == [] and values["team"] == []
    assert [(v["domain"], v["root_domain"]) for v in values["domains"]] == \
        [("hafen.example", "hafen.example"), ("hafen.co.uk", "hafen.co.uk")]
    assert values["primary_location"][0]["line_2"] is None and values["primary_location"][0]["locality"] == "Bremen"
    assert values["tier"][0]["option"]["title"] == "Gold"
    name = values["name"][0]
    assert name["active_until"] is None and name["created_by_actor"]["type"] == "api-token"
    assert name["attribute_type"] == "text" and name["active_from"] == made["created_at"]
    assert made["id"]["record_id"] == values["record_id"][0]["value"]
    assert "updated_at" not in made
    got = api.get(f"/v2/objects/companies/records/{made['id']['record_id']}").json()["data"]
    assert got == made
    person = create(api, "people", {"name": [{"first_name": "Ada", "last_name": "Lovelace"}],
                                    "email_addresses": ["Ada+crm@Nordwind.example"],
                                    "phone_numbers": ["+49 40 123456"],
                                    "company": [{"target_object": "companies", "target_record_id": NORDWIND}]})
    email = person["values"]["email_addresses"][0]
    assert (email["email_address"], email["email_domain"], email["email_local_specifier"]) == \
        ("ada+crm@nordwind.example", "nordwind.example", "ada")
    assert person["values"]["name"][0]["full_name"] == "Ada Lovelace"
    assert person["values"]["phone_numbers"][0]["country_code"] == "DE"
    deal = create(api, "deals", {"name": "Nordwind renewal", "stage": "In Progress", "value": 1440.5,
                                 "associated_company": [{"target_object": "companies", "target_record_id": NORDWIND}]})
    assert deal["values"]["stage"][0]["status"]["title"] == "In Progress"
    assert deal["values"]["value"][0]["currency_value"] == 1440.5
    assert deal["values"]["value"][0]["currency_code"] == "EUR"  # the attribute's default currency
    writes = served.emulator.write_log
    assert [(w["op"], w["entity"]) for w in writes] == [("create", "companies"), ("create", "people"),
                                                        ("create", "deals")]


def test_create_refusals(api: httpx.Client) -> None:
    assert create(api, "companies", {"domains": ["nordwind.example"]}, 409)["code"] == "uniqueness_conflict"
    assert create(api, "companies", {"qb_customer_id": "58"}, 409)["code"] == "uniqueness_conflict"
    assert create(api, "deals", {"name": "No stage"}, 400)["code"] == "missing_value"
    error = create(api, "deals", {"name": "x", "stage": "Negotiating"}, 400)
    assert error["code"] == "value_not_found" and "Negotiating" in error["message"]
    assert create(api, "companies", {"unknown_slug": "x"}, 400)["code"] == "value_not_found"
    assert create(api, "companies", {"name": ["a", "b"]}, 400)["code"] == "validation_type"
    assert create(api, "people", {"email_addresses": ["not-an-email"]}, 400)["code"] == "validation_type"
    assert create(api, "deals", {"name": "x", "stage": "Lead", "associated_company": "nope"}, 400)["code"] == \
        "value_not_found"
    error_of(api.post("/v2/objects/companies/records", json={"values": {}}), 400)


def test_assert_updates_the_match_or_creates_and_needs_a_unique_attribute(api: httpx.Client,
                                                                         served: ServedEmulator) -> None:
    def assert_(matching: str, values: dict) -> httpx.Response:
        return api.put("/v2/objects/companies/records", params={"matching_attribute": matching},
                       json={"data": {"values": values}})

    response = assert_("domains", {"domains": ["nordwind.example"], "description": "Shipping"})
    assert response.status_code == 200, response.text
    updated = response.json()["data"]
    assert updated["id"]["record_id"] == NORDWIND
    assert updated["values"]["description"][0]["value"] == "Shipping"
    assert updated["values"]["name"][0]["value"] == "Nordwind GmbH"  # untouched
    # the matching multiselect attribute gains values, it never loses them
    again = assert_("domains", {"domains": ["nordwind.example", "nordwind.de"]}).json()["data"]
    assert [v["domain"] for v in again["values"]["domains"]] == ["nordwind.example", "nordwind.de"]
    # a custom unique attribute works as well; no match -> a new record
    created = assert_("qb_customer_id", {"qb_customer_id": "4242", "name": "New Co"}).json()["data"]
    assert created["id"]["record_id"] != NORDWIND
    same = assert_("qb_customer_id", {"qb_customer_id": "4242", "name": "New Co Ltd"}).json()["data"]
    assert same["id"]["record_id"] == created["id"]["record_id"] and names([same]) == ["New Co Ltd"]
    assert len(query(api)) == 4
    error_of(assert_("name", {"name": "Nordwind GmbH"}), 400, "validation_type")  # not unique
    error_of(assert_("qb_customer_id", {"name": "x"}), 400, "missing_value")
    error_of(api.put("/v2/objects/companies/records", json={"data": {"values": {"name": "x"}}}), 400)
    assert [(w["op"], w.get("via")) for w in served.emulator.write_log] == [("update", "assert")] * 2 + \
        [("create", "assert"), ("update", "assert")]


def test_patch_adds_multiselect_values_put_replaces_them_unchanged_values_keep_active_from(
        api: httpx.Client) -> None:
    path = f"/v2/objects/companies/records/{NORDWIND}"
    original_name = api.get(path).json()["data"]["values"]["name"][0]
    patched = api.patch(path, json={"data": {"values": {"domains": ["nordwind.de"], "name": "Nordwind GmbH"}}})
    assert patched.status_code == 200, patched.text
    values = patched.json()["data"]["values"]
    assert [v["domain"] for v in values["domains"]] == ["nordwind.example", "nordwind.de"]
    assert values["name"][0] == original_name  # same value: not rewritten
    put = api.put(path, json={"data": {"values": {"domains": ["nordwind.de"], "name": "Nordwind SE"}}})
    values = put.json()["data"]["values"]
    assert [v["domain"] for v in values["domains"]] == ["nordwind.de"]
    assert values["name"][0]["value"] == "Nordwind SE" and values["name"][0]["active_from"] > original_name[
        "active_from"]
    cleared = api.patch(path, json={"data": {"values": {"qb_customer_id": None}}}).json()["data"]
    assert cleared["values"]["qb_customer_id"] == []
    error_of(api.patch("/v2/objects/companies/records/00000000-0000-4000-8000-999999999999",
                       json={"data": {"values": {"name": "x"}}}), 404, "not_found")


def test_delete_is_hard(api: httpx.Client, served: ServedEmulator) -> None:
    path = f"/v2/objects/companies/records/{NORDWIND}"
    response = api.delete(path)
    assert response.status_code == 200 and response.json() == {}
    error_of(api.get(path), 404, "not_found")
    error_of(api.delete(path), 404, "not_found")
    assert NORDWIND not in {r["id"]["record_id"] for r in query(api)}
    assert [(w["op"], w["id"]) for w in served.emulator.write_log] == [("delete", NORDWIND)]


def test_attributes_list_standard_and_custom(api: httpx.Client) -> None:
    data = api.get("/v2/objects/companies/attributes").json()["data"]
    by_slug = {a["api_slug"]: a for a in data}
    assert by_slug["domains"]["is_unique"] and by_slug["domains"]["is_multiselect"]
    assert by_slug["qb_customer_id"]["is_unique"] and not by_slug["qb_customer_id"]["is_system_attribute"]
    assert by_slug["tier"]["type"] == "select"
    deals = {a["api_slug"]: a for a in api.get("/v2/objects/deals/attributes").json()["data"]}
    assert deals["value"]["config"]["currency"]["default_currency_code"] == "EUR"
    assert len(api.get("/v2/objects/companies/attributes", params={"limit": 2, "offset": 1}).json()["data"]) == 2
    error_of(api.get("/v2/lists/sales/attributes"), 404)


def test_unknown_route_and_injected_faults_answer_in_attios_shape(api: httpx.Client, served: ServedEmulator) -> None:
    error_of(api.get("/v2/nothing/here/at/all"), 404)
    with httpx.Client(base_url=f"{served.url}/_sandbox") as control:
        control.post("/faults", json={"kind": "status", "status": 503, "path": "/records/query"}).raise_for_status()
        control.post("/faults", json={"kind": "status", "status": 429, "retry_after": "2",
                                      "path": "/records/query"}).raise_for_status()
    error_of(api.post("/v2/objects/companies/records/query", json={}), 503)
    throttled = api.post("/v2/objects/companies/records/query", json={})
    error_of(throttled, 429, "rate_limit_exceeded")
    when = email.utils.parsedate_to_datetime(throttled.headers["Retry-After"]).timestamp()
    assert 0 < when - time.time() <= 3
    assert len(query(api)) == 3


# ----- rate limits ---------------------------------------------------------------------------------------------------
def test_rate_limits_25_writes_and_100_reads_per_second_with_http_date_retry_after(served: ServedEmulator) -> None:
    now = [1_750_000_000.25]
    served.emulator.clock = lambda: now[0]  # a frozen clock: every request below falls in the same second

    def patch(text: str) -> httpx.Response:
        return api.patch(f"/v2/objects/companies/records/{NORDWIND}", json={"data": {"values": {"description": text}}})

    with client_for(served) as api:
        assert {patch(str(n)).status_code for n in range(40)} == {200}  # off by default: nothing is throttled
        served.emulator.limits.enabled = True
        statuses = [patch(f"x{n}").status_code for n in range(30)]
        assert statuses == [200] * 25 + [429] * 5, statuses
        throttled = patch("over")
        body = error_of(throttled, 429, "rate_limit_exceeded")
        assert body["type"] == "rate_limit_error"
        # an HTTP date, not a number of seconds: the first whole second after the oldest write leaves the window
        assert throttled.headers["Retry-After"] == "Sun, 15 Jun 2025 15:06:42 GMT"
        assert email.utils.parsedate_to_datetime(throttled.headers["Retry-After"]).timestamp() == 1_750_000_002
        # reads have their own budget, and queries count as reads
        reads = [api.post("/v2/objects/companies/records/query", json={"limit": 1}).status_code for _ in range(102)]
        assert reads == [200] * 100 + [429] * 2
        assert api.get(f"/v2/objects/companies/records/{NORDWIND}").status_code == 429
        now[0] += 1.0  # a second later both windows are free again
        assert patch("after").status_code == 200
        assert api.get(f"/v2/objects/companies/records/{NORDWIND}").status_code == 200
    served.emulator.clock = time.time


# ----- conformance to the OpenAPI document --------------------------------------------------------------------------
def _openapi_to_json_schema(node: Any) -> Any:
    """The document is OpenAPI 3.1, but a few schemas still say `nullable: true` (or list null as a type but not in
    the enum): read both as "may be null", which is what the API sends."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_json_schema(v) for k, v in node.items() if k not in ("example", "examples")}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    elif isinstance(out.get("type"), list) and "null" in out["type"] and None not in out.get("enum", [None]):
        # `type: [string, null]` beside an enum without null (currency codes, countries): the spec means nullable
        out["enum"] = [*out["enum"], None]
    return out


@cache
def _openapi() -> tuple[dict, Registry]:
    if not SPEC_PATH.exists():
        pytest.skip(f"Attio OpenAPI document not found at {SPEC_PATH}")
    document = _openapi_to_json_schema(yaml.load(SPEC_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader",
                                                                                       yaml.SafeLoader)))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return document, Registry().with_resource("urn:attio-openapi", resource)


def assert_conforms(response: httpx.Response, path: str, method: str = "get") -> dict:
    document, registry = _openapi()
    declared = document["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in declared, f"{method.upper()} {path} answered {status}, not declared in the spec"
    schema = declared[status]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator(_rebase(schema), registry=registry)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(response.json())]
    assert not problems, f"{method.upper()} {path} {status}:\n  " + "\n  ".join(problems[:10])
    return response.json()


def _rebase(node: Any) -> Any:
    """Spec-relative $refs point into the registered document."""
    if isinstance(node, list):
        return [_rebase(n) for n in node]
    if isinstance(node, dict):
        return {k: (f"urn:attio-openapi{v}" if k == "$ref" and v.startswith("#") else _rebase(v))
                for k, v in node.items()}
    return node


def test_every_kind_of_answer_conforms_to_the_openapi_document(api: httpx.Client) -> None:
    records = "/v2/objects/{object}/records"
    one = "/v2/objects/{object}/records/{record_id}"
    q = "/v2/objects/{object}/records/query"
    assert_conforms(api.get("/v2/self"), "/v2/self")
    assert_conforms(api.get("/v2/objects"), "/v2/objects")
    assert_conforms(api.get("/v2/objects/deals"), "/v2/objects/{object}")
    assert_conforms(api.get("/v2/objects/missing"), "/v2/objects/{object}")
    for obj in ("companies", "people", "deals"):
        assert_conforms(api.get(f"/v2/objects/{obj}/attributes"), "/v2/{target}/{identifier}/attributes")
    assert_conforms(api.post("/v2/objects/companies/records/query", json={}), q, "post")
    assert_conforms(api.post("/v2/objects/companies/records/query", json={"filter": {"nope": 1}}), q, "post")
    assert_conforms(api.post("/v2/objects/unicorns/records/query", json={}), q, "post")
    company_ = assert_conforms(api.post("/v2/objects/companies/records", json={"data": {"values": {
        "name": "Hafen AG", "domains": ["hafen.example"], "tier": "Silver", "primary_location": [
            {"line_1": "Kai 1", "locality": "Bremen", "postcode": "28195", "country_code": "DE",
             "latitude": "53.07", "longitude": "8.80"}]}}}), records, "post")["data"]
    person = assert_conforms(api.post("/v2/objects/people/records", json={"data": {"values": {
        "name": "Ada Lovelace", "email_addresses": ["ada@hafen.example"], "phone_numbers": ["+44 20 7946 0000"],
        "job_title": "CFO", "company": company_["id"]["record_id"]}}}), records, "post")["data"]
    assert_conforms(api.post("/v2/objects/deals/records", json={"data": {"values": {
        "name": "Hafen pilot", "stage": "Lead", "value": {"currency_value": 99.5, "currency_code": "GBP"},
        "owner": {"referenced_actor_type": "workspace-member", "referenced_actor_id": ACTOR["id"]},
        "associated_company": company_["id"]["record_id"], "associated_people": [person["id"]["record_id"]],
        "external_id": "seq-1"}}}), records, "post")
    assert_conforms(api.post("/v2/objects/deals/records", json={"data": {"values": {"name": "x", "stage": "Nope"}}}),
                    records, "post")
    assert_conforms(api.post("/v2/objects/unicorns/records", json={"data": {"values": {}}}), records, "post")
    assert_conforms(api.put("/v2/objects/deals/records", params={"matching_attribute": "external_id"},
                            json={"data": {"values": {"external_id": "seq-1", "stage": "Won 🎉"}}}), records, "put")
    assert_conforms(api.get(f"/v2/objects/companies/records/{NORDWIND}"), one)
    assert_conforms(api.get("/v2/objects/companies/records/00000000-0000-4000-8000-999999999999"), one)
    assert_conforms(api.patch(f"/v2/objects/companies/records/{NORDWIND}",
                              json={"data": {"values": {"tier": "Gold"}}}), one, "patch")
    assert_conforms(api.patch(f"/v2/objects/deals/records/{person['id']['record_id']}",
                              json={"data": {"values": {}}}), one, "patch")  # a person id is no deal: 404
    assert_conforms(api.put(f"/v2/objects/companies/records/{NORDWIND}",
                            json={"data": {"values": {"description": "Shipping"}}}), one, "put")
    assert_conforms(api.delete(f"/v2/objects/people/records/{person['id']['record_id']}"), one, "delete")
    assert_conforms(api.delete(f"/v2/objects/people/records/{person['id']['record_id']}"), one, "delete")
    # every record the emulator makes conforms when listed too
    for obj in ("companies", "deals"):
        assert_conforms(api.post(f"/v2/objects/{obj}/records/query", json={}), q, "post")
