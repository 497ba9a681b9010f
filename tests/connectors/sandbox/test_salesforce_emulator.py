"""The Salesforce emulator over real HTTP on 127.0.0.1: OAuth with instance_url, SOQL query/queryAll with
nextRecordsUrl paging, sObject CRUD, upsert by external id, sObject Collections with allOrNone, error arrays,
INVALID_SESSION_ID and REQUEST_LIMIT_EXCEEDED (vendor notes shared/vendors/salesforce.md)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import httpx
import orjson
import pytest

from connectors.sandbox import identity
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.salesforce import SalesforceEmulator, id_suffix, make_id, to_18
from connectors.sandbox.salesforce_soql import SoqlError, parse_query

V = "/services/data/v62.0"
NORDWIND = "001RM00000Xy12ZYAR"
N = 2500  # more than one 2,000-row page


def _account(n: int) -> dict:
    return {"attributes": {"type": "Account", "url": f"{V}/sobjects/Account/x"}, "Id": make_id("001", n),
            "Name": f"Account {n:04d}", "BillingCity": "Hamburg" if n % 2 else "Berlin",
            "SystemModstamp": f"2025-03-{1 + n % 28:02d}T10:00:00.000+0000", "Region__c": "EU" if n % 3 else "US"}


def fixtures(count: int = N) -> dict:
    return orjson.loads(_fixture_bytes(count))


@functools.lru_cache
def _fixture_bytes(count: int) -> bytes:
    accounts = [_account(n) for n in range(1, count + 1)]
    accounts.append({
        "attributes": {"type": "Account", "url": f"{V}/sobjects/Account/{NORDWIND}"}, "Id": NORDWIND,
        "Name": "Nordwind GmbH", "External_Id__c": "qb-58",
        "BillingAddress": {"street": "Hafenstrasse 5", "city": "Hamburg", "state": None, "postalCode": "20457",
                           "country": "Germany", "latitude": None, "longitude": None, "geocodeAccuracy": None},
        "SystemModstamp": "2025-03-05T10:39:50.000+0000", "IsDeleted": False})
    return orjson.dumps({
        "acme": {
            "Account": accounts,
            "Contact": [{"Id": "003RM00000Ab1cDYAR", "AccountId": NORDWIND, "FirstName": "Jana", "LastName": "Krüger",
                         "Email": "jana@nordwind.example", "SystemModstamp": "2025-03-04T08:00:00.000+0000"}],
            "Opportunity": [{"Id": "006RM00000Qw9eRYAR", "Name": "Nordwind renewal 2025", "AccountId": NORDWIND,
                             "StageName": "Closed Won", "Amount": 1440.0, "CloseDate": "2025-03-31",
                             "External_Id__c": None}],
            "FieldDefinition": [
                {"sobject": "Account", "name": "External_Id__c", "type": "string", "externalId": True, "unique": True},
                {"sobject": "Opportunity", "name": "External_Id__c", "type": "string", "externalId": True},
                {"sobject": "Account", "name": "Sequence_MRR__c", "type": "currency"},
            ],
        },
        "globex": {"Account": [{"Id": make_id("001", 9), "Name": "Globex"}]},
    })


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[ServedEmulator]:
    # few accounts unless a test asks for N (indirect parametrisation): loading thousands costs time
    with ServedEmulator(SalesforceEmulator(fixtures(getattr(request, "param", 20)))) as s:
        yield s


def _token(url: str, tenant: str = "acme") -> dict:
    response = httpx.post(f"{url}/services/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": identity.salesforce_initial_refresh_token(tenant),
        "client_id": identity.SALESFORCE_CLIENT_ID, "client_secret": identity.SALESFORCE_CLIENT_SECRET})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def api(served: ServedEmulator) -> Iterator[httpx.Client]:
    token = _token(served.url)
    with httpx.Client(base_url=token["instance_url"] + V,
                      headers={"Authorization": f"Bearer {token['access_token']}"}) as client:
        yield client


def _q(api: httpx.Client, soql: str, path: str = "/query", **headers: str) -> httpx.Response:
    return api.get(path, params={"q": soql}, headers=headers)


# ----- auth -----------------------------------------------------------------------------------------------------

def test_token_has_instance_url_no_expiry_and_refresh_token_is_not_rotated(served: ServedEmulator) -> None:
    first = _token(served.url)
    assert first["instance_url"] == served.url and first["token_type"] == "Bearer"
    assert "expires_in" not in first and "refresh_token" not in first
    assert first["issued_at"].isdigit()
    second = _token(served.url)  # the same refresh token works again
    assert second["access_token"] != first["access_token"]
    bad = httpx.post(f"{served.url}/services/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": "nope", "client_id": identity.SALESFORCE_CLIENT_ID,
        "client_secret": identity.SALESFORCE_CLIENT_SECRET})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    basic = httpx.post(f"{served.url}/services/oauth2/token",
                       auth=(identity.SALESFORCE_CLIENT_ID, "wrong"),
                       data={"grant_type": "refresh_token",
                             "refresh_token": identity.salesforce_initial_refresh_token("acme")})
    assert basic.status_code == 400 and basic.json()["error"] == "invalid_client"


def test_rotation_can_be_switched_on() -> None:
    with ServedEmulator(SalesforceEmulator(fixtures(20), rotate_refresh_tokens=True)) as s:
        first = _token(s.url)
        assert first["refresh_token"]
        again = httpx.post(f"{s.url}/services/oauth2/token", data={
            "grant_type": "refresh_token", "refresh_token": identity.salesforce_initial_refresh_token("acme"),
            "client_id": identity.SALESFORCE_CLIENT_ID, "client_secret": identity.SALESFORCE_CLIENT_SECRET})
        assert again.json()["error"] == "invalid_grant"


def test_expired_session_is_401_invalid_session_id(served: ServedEmulator, api: httpx.Client) -> None:
    assert _q(api, "SELECT Id FROM Account LIMIT 1").status_code == 200
    httpx.post(f"{served.url}/_sandbox/expire-tokens")
    response = _q(api, "SELECT Id FROM Account LIMIT 1")
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert httpx.get(f"{served.url}{V}/limits").status_code == 401


def test_tenants_are_isolated_by_session(served: ServedEmulator) -> None:
    token = _token(served.url, "globex")
    body = httpx.get(f"{served.url}{V}/query", params={"q": "SELECT Name FROM Account"},
                     headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert [r["Name"] for r in body["records"]] == ["Globex"]


# ----- query -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("served", [N], indirect=True)
def test_query_pages_with_relative_next_records_url(api: httpx.Client) -> None:
    first = _q(api, "SELECT Id, Name FROM Account ORDER BY Name").json()
    assert first["totalSize"] == N + 1 and first["done"] is False and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith(f"{V}/query/01g")
    names = [r["Name"] for r in first["records"]]
    body = first
    while not body["done"]:
        body = httpx.get(str(api.base_url.copy_with(path=body["nextRecordsUrl"])), headers=api.headers).json()
        names += [r["Name"] for r in body["records"]]
    assert len(names) == N + 1 and names == sorted(names, key=str.lower)
    record = first["records"][0]
    assert record["attributes"]["type"] == "Account" and set(record) == {"attributes", "Id", "Name"}


@pytest.mark.parametrize("served", [N], indirect=True)
def test_batch_size_header_is_a_clamped_hint(api: httpx.Client) -> None:
    body = _q(api, "SELECT Id FROM Account", **{"Sforce-Query-Options": "batchSize=500"}).json()
    assert len(body["records"]) == 500
    body = _q(api, "SELECT Id FROM Account", **{"Sforce-Query-Options": "batchSize=10"}).json()
    assert len(body["records"]) == 200


@pytest.mark.parametrize("served", [N], indirect=True)
def test_where_operators_literals_and_compound_address(api: httpx.Client) -> None:
    body = _q(api, "SELECT Id, Name, BillingAddress, External_Id__c FROM Account "
                   "WHERE SystemModstamp > 2025-03-05T10:00:00Z AND SystemModstamp <= 2025-03-05T11:00:00.000+00:00 "
                   "AND (External_Id__c = 'QB-58' OR Name IN ('x', 'y'))").json()
    assert body["totalSize"] == 1
    record = body["records"][0]
    assert record["BillingAddress"]["street"] == "Hafenstrasse 5" and record["BillingAddress"]["city"] == "Hamburg"
    assert record["External_Id__c"] == "qb-58"
    count = lambda soql: _q(api, soql).json()["totalSize"]  # noqa: E731
    assert count("SELECT Id FROM Account WHERE Region__c != 'EU'") == N // 3 + 1  # nulls match !=
    assert count("SELECT Id FROM Account WHERE Name LIKE 'Account 00%'") == 99
    assert count("SELECT Id FROM Account WHERE NOT Name LIKE 'Account%'") == 1
    assert count("SELECT Id FROM Account WHERE Name >= 'Account 2500'") == 2
    assert count("SELECT Id FROM Account WHERE BillingCity = 'hamburg' LIMIT 10") == 10
    assert count("SELECT COUNT() FROM Account WHERE BillingCity = 'Hamburg'") == N // 2 + 1
    assert count(f"SELECT Id FROM Account WHERE Id = '{NORDWIND[:15]}'") == 1  # 15-char ids work too
    ordered = _q(api, "SELECT Name FROM Account WHERE Region__c = 'US' ORDER BY Name DESC LIMIT 2").json()
    assert [r["Name"] for r in ordered["records"]] == ["Account 2499", "Account 2496"]


def test_relationship_fields_nest(api: httpx.Client) -> None:
    body = _q(api, "SELECT Id, Name, Account.Name FROM Contact").json()
    record = body["records"][0]
    assert record["Name"] == "Jana Krüger"
    assert record["Account"]["Name"] == "Nordwind GmbH" and record["Account"]["attributes"]["type"] == "Account"
    opp = _q(api, "SELECT Amount, CloseDate, IsWon, IsClosed FROM Opportunity").json()["records"][0]
    assert opp["Amount"] == 1440.0 and opp["CloseDate"] == "2025-03-31" and opp["IsWon"] is True


@pytest.mark.parametrize(("soql", "code"), [
    ("SELECT Id, Foo__c FROM Account", "INVALID_FIELD"),
    ("SELECT Id FROM Nope", "INVALID_TYPE"),
    ("SELECT Id FROM Account WHERE SystemModstamp > '2025-03-01T00:00:00Z'", "INVALID_FIELD"),
    ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE Name = ", "MALFORMED_QUERY"),
    ("SELECT Id FROM Account WHERE CreatedDate > TODAY", "MALFORMED_QUERY"),
    ("SELECT Id, Id FROM Account", "INVALID_FIELD"),
])
def test_bad_queries_are_error_arrays(api: httpx.Client, soql: str, code: str) -> None:
    response = _q(api, soql)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == code and response.json()[0]["message"]


def test_parser_builds_a_tree_not_a_regex() -> None:
    query = parse_query("select Id from Account where (A = 1 or B = 'x\\'y') and not C in (true, false) "
                        "order by Name desc nulls first, Id limit 5 offset 2")
    assert query.sobject == "Account" and query.limit == 5 and query.offset == 2
    assert query.where.op == "AND" and query.where.items[0].op == "OR"
    assert query.where.items[0].items[1].literal.value == "x'y"
    assert query.order[0].descending and not query.order[0].nulls_last
    with pytest.raises(SoqlError):
        parse_query("SELECT Id FROM Account ORDER Name")


# ----- writes ----------------------------------------------------------------------------------------------------

def test_crud_bumps_system_modstamp_and_delete_goes_to_recycle_bin(served: ServedEmulator,
                                                                  api: httpx.Client) -> None:
    created = api.post("/sobjects/Account", json={"Name": "Zeta", "BillingCity": "Wien", "Sequence_MRR__c": 99.5})
    assert created.status_code == 201 and created.json()["success"] is True
    new_id = created.json()["id"]
    assert len(new_id) == 18 and new_id.startswith("001") and new_id[15:] == id_suffix(new_id[:15])
    before = api.get(f"/sobjects/Account/{new_id}", params={"fields": "Id,SystemModstamp,BillingAddress"}).json()
    assert before["BillingAddress"]["city"] == "Wien" and set(before) == {"attributes", "Id", "SystemModstamp",
                                                                          "BillingAddress"}
    assert api.patch(f"/sobjects/Account/{new_id}", json={"Name": "Zeta AG"}).status_code == 204
    after = api.get(f"/sobjects/Account/{new_id}").json()
    assert after["Name"] == "Zeta AG" and after["SystemModstamp"] > before["SystemModstamp"]
    assert after["Sequence_MRR__c"] == 99.5
    assert api.delete(f"/sobjects/Account/{new_id}").status_code == 204
    assert api.get(f"/sobjects/Account/{new_id}").status_code == 404
    again = api.delete(f"/sobjects/Account/{new_id}")
    assert again.status_code == 404 and again.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    soql = f"SELECT Id, IsDeleted, SystemModstamp FROM Account WHERE Id = '{new_id}'"
    assert _q(api, soql).json()["totalSize"] == 0
    binned = _q(api, soql, "/queryAll").json()["records"]
    assert binned[0]["IsDeleted"] is True and binned[0]["SystemModstamp"] > after["SystemModstamp"]
    ops = [(w["op"], w["entity"]) for w in served.emulator.write_log]
    assert ops == [("create", "Account"), ("update", "Account"), ("delete", "Account")]


def test_deleting_an_account_cascades_and_query_all_sees_it(api: httpx.Client) -> None:
    assert api.delete(f"/sobjects/Account/{NORDWIND}").status_code == 204
    deleted = _q(api, "SELECT Id FROM Contact WHERE IsDeleted = true", "/queryAll").json()
    assert deleted["totalSize"] == 1
    assert _q(api, "SELECT Id FROM Opportunity").json()["totalSize"] == 0


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"Name": "X", "Foo__c": 1}, "INVALID_FIELD", "Foo__c"),
    ({"Name": "X", "BillingAddress": {"city": "Wien"}}, "INVALID_FIELD_FOR_INSERT_UPDATE", "BillingAddress"),
    ({"BillingCity": "Wien"}, "REQUIRED_FIELD_MISSING", "Name"),
    ({"Name": "X", "External_Id__c": "QB-58"}, "DUPLICATE_VALUE", "External_Id__c"),
    ({"Name": "X", "ParentId": "003RM00000Ab1cDYAR"}, "MALFORMED_ID", "ParentId"),
    ({"Name": "X", "Sequence_MRR__c": "lots"}, "INVALID_TYPE_ON_FIELD_IN_RECORD", "Sequence_MRR__c"),
])
def test_write_errors_are_arrays_with_fields(served: ServedEmulator, api: httpx.Client, body: dict, code: str,
                                             field: str) -> None:
    response = api.post("/sobjects/Account", json=body)
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == code and error["fields"] == [field]
    assert served.emulator.write_log == []


def test_upsert_by_external_id(api: httpx.Client) -> None:
    created = api.patch("/sobjects/Account/External_Id__c/qb-77", json={"Name": "Seventy-seven"})
    assert created.status_code == 201 and created.json()["created"] is True
    updated = api.patch("/sobjects/Account/External_Id__c/qb-77", json={"Name": "Seventy-seven Ltd"})
    assert updated.status_code == 200 and updated.json() == {"id": created.json()["id"], "success": True,
                                                             "errors": [], "created": False}
    assert api.get("/sobjects/Account/External_Id__c/qb-77").json()["Name"] == "Seventy-seven Ltd"
    not_external = api.patch("/sobjects/Account/Name/x", json={})
    assert not_external.status_code == 404 and not_external.json()[0]["errorCode"] == "NOT_FOUND"


def test_upsert_on_a_non_unique_external_id_with_duplicates_is_300(api: httpx.Client) -> None:
    for name in ("A", "B"):
        assert api.post("/sobjects/Opportunity", json={"Name": name, "StageName": "Prospecting",
                                                       "CloseDate": "2025-06-30", "External_Id__c": "dup"}).is_success
    response = api.patch("/sobjects/Opportunity/External_Id__c/dup", json={"Amount": 5})
    assert response.status_code == 300 and len(response.json()) == 2


def test_collections_partial_success_and_all_or_none(served: ServedEmulator, api: httpx.Client) -> None:
    records = [{"attributes": {"type": "Account"}, "Name": "C1"}, {"attributes": {"type": "Contact"}, "FirstName": "x"},
               {"attributes": {"type": "Contact"}, "LastName": "Ok", "AccountId": NORDWIND}]
    partial = api.post("/composite/sobjects", json={"allOrNone": False, "records": records}).json()
    assert [r["success"] for r in partial] == [True, False, True]
    assert partial[1]["errors"] == [{"statusCode": "REQUIRED_FIELD_MISSING",
                                     "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}]
    writes = len(served.emulator.write_log)
    rolled = api.post("/composite/sobjects", json={"allOrNone": True, "records": records}).json()
    assert [r["success"] for r in rolled] == [False, False, False]
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert _q(api, "SELECT Id FROM Account WHERE Name = 'C1'").json()["totalSize"] == 1  # only the first call's
    assert len(served.emulator.write_log) == writes
    update = api.patch("/composite/sobjects", json={"records": [
        {"attributes": {"type": "Account"}, "id": partial[0]["id"], "Name": "C1 renamed"},
        {"attributes": {"type": "Account"}, "id": make_id("001", 999_999), "Name": "ghost"},
        {"attributes": {"type": "Account"}, "Name": "no id"}]}).json()
    assert [r["success"] for r in update] == [True, False, False]
    assert update[2]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    one = {"attributes": {"type": "Account"}, "Name": "n"}
    too_many = api.post("/composite/sobjects", json={"records": [one] * 201})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    deleted = api.delete("/composite/sobjects", params={"ids": f"{partial[0]['id']},{make_id('001', 888_888)}"}).json()
    assert [r["success"] for r in deleted] == [True, False]


def test_collections_upsert_by_external_id(api: httpx.Client) -> None:
    body = {"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "External_Id__c": "qb-58", "Name": "Nordwind AG"},
        {"attributes": {"type": "Account"}, "External_Id__c": "qb-90", "Name": "Neu"},
        {"attributes": {"type": "Account"}, "External_Id__c": "qb-91"},
        {"attributes": {"type": "Account"}, "External_Id__c": "qb-92", "Name": "a"},
        {"attributes": {"type": "Account"}, "External_Id__c": "qb-92", "Name": "b"}]}
    results = api.patch("/composite/sobjects/Account/External_Id__c", json=body).json()
    assert [(r["success"], r.get("created")) for r in results] == [(True, False), (True, True), (False, None),
                                                                   (False, None), (False, None)]
    assert results[0]["id"] == NORDWIND
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert results[3]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    assert api.get(f"/sobjects/Account/{NORDWIND}").json()["Name"] == "Nordwind AG"


# ----- limits ----------------------------------------------------------------------------------------------------

def test_daily_allocation_gives_403_request_limit_exceeded(served: ServedEmulator, api: httpx.Client) -> None:
    assert httpx.put(f"{served.url}/_sandbox/api-usage", json={"daily_api_limit": 3}).json()["used"]["acme"] == 0
    httpx.put(f"{served.url}/_sandbox/rate-limits", json={"enabled": True})
    for _ in range(3):
        assert _q(api, "SELECT Id FROM Account LIMIT 1").status_code == 200
    response = _q(api, "SELECT Id FROM Account LIMIT 1")
    assert response.status_code == 403
    assert response.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert response.headers["Sforce-Limit-Info"] == "api-usage=3/3" and "Retry-After" not in response.headers
    assert _token(served.url)["access_token"]  # the token endpoint does not count
    token = _token(served.url, "globex")  # the allocation is per org
    assert httpx.get(f"{served.url}{V}/limits", headers={"Authorization": f"Bearer {token['access_token']}"}
                     ).json()["DailyApiRequests"] == {"Max": 3, "Remaining": 2}
    usage = httpx.put(f"{served.url}/_sandbox/api-usage", json={"reset": True}).json()
    assert usage == {"daily_api_limit": 3, "used": {"acme": 0, "globex": 0}}
    assert _q(api, "SELECT Id FROM Account LIMIT 1").status_code == 200


def test_helpers() -> None:
    assert to_18("001RM00000Xy12Z") == "001RM00000Xy12Z" + id_suffix("001RM00000Xy12Z")
    assert id_suffix("001000000000000") == "AAA"


def test_describe_lists_custom_fields_and_compound_components(api: httpx.Client) -> None:
    fields = {f["name"]: f for f in api.get("/sobjects/Account/describe").json()["fields"]}
    assert fields["External_Id__c"]["externalId"] and fields["External_Id__c"]["custom"]
    assert fields["Region__c"]["type"] == "string"  # inferred from the fixture records
    assert fields["BillingCity"]["compoundFieldName"] == "BillingAddress"
    assert fields["BillingAddress"]["type"] == "address" and not fields["BillingAddress"]["createable"]
