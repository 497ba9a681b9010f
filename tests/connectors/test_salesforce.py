"""SalesforceClient against the Salesforce emulator over HTTP on loopback: OAuth with instance_url and
non-rotating refresh tokens, SOQL paging, queryAll, CRUD, upsert by external id, collections, typed errors."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
import pytest

from connectors.auth import OAuth2RefreshAuth, TokenStore
from connectors.errors import AuthenticationError, NotFound, ValidationFailed
from connectors.registry import parse_registry
from connectors.clients import build_client
from connectors.salesforce import (
    MultipleMatches,
    RequestLimitExceeded,
    RowLocked,
    SalesforceClient,
    format_datetime,
    soql_literal,
    token_url_for,
)
from connectors.sandbox import identity
from connectors.sandbox.emulator import ServedEmulator
from connectors.sandbox.launcher import start_sandbox
from connectors.sandbox.salesforce import SalesforceEmulator, make_id

KEY = "acme.salesforce"
NORDWIND = make_id("001", 58_000)


def fixtures() -> dict:
    accounts = [{"Id": make_id("001", n), "Name": f"Account {n:04d}",
                 "SystemModstamp": f"2025-03-{1 + n % 28:02d}T10:00:00.000+0000"} for n in range(1, 451)]
    accounts.append({"Id": NORDWIND, "Name": "Nordwind GmbH", "External_Id__c": "qb-58", "BillingCity": "Hamburg"})
    return {"acme": {
        "Account": accounts,
        "Opportunity": [{"Name": "Dup A", "StageName": "Prospecting", "CloseDate": "2025-06-30", "Ext__c": "d"},
                        {"Name": "Dup B", "StageName": "Prospecting", "CloseDate": "2025-06-30", "Ext__c": "d"}],
        "FieldDefinition": [
            {"sobject": "Account", "name": "External_Id__c", "type": "string", "externalId": True, "unique": True},
            {"sobject": "Opportunity", "name": "Ext__c", "type": "string", "externalId": True}],
    }}


@pytest.fixture
def served():
    with ServedEmulator(SalesforceEmulator(fixtures())) as served:
        yield served


@pytest.fixture
def control(served, control_for):
    return control_for(served.url)


@pytest.fixture
def store(tmp_path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def make_auth(served, store) -> OAuth2RefreshAuth:
    return OAuth2RefreshAuth(token_url_for(served.url), identity.SALESFORCE_CLIENT_ID,
                             identity.SALESFORCE_CLIENT_SECRET, store, KEY,
                             initial_refresh_token=identity.salesforce_initial_refresh_token("acme"), app="salesforce")


@pytest.fixture
def client(served, store, fast_retry):
    with SalesforceClient(served.url, make_auth(served, store), retry=fast_retry) as client:
        yield client


def test_data_calls_go_to_the_instance_url_from_the_token_answer(served, store, fast_retry):
    # the login host answers nothing: every data call must use instance_url
    with SalesforceClient("http://127.0.0.1:9", make_auth(served, store), retry=fast_retry) as client:
        assert client.count("Account") == 451
    saved = store.get(KEY)
    assert saved["instance_url"] == served.url
    assert saved["refresh_token"] == identity.salesforce_initial_refresh_token("acme")  # not rotated: kept
    assert saved["expires_at"] is None  # no expires_in: used until refused


def test_expired_session_refreshes_once_and_a_revoked_grant_is_typed(served, store, control, client):
    assert client.count("Account") == 451
    control.expire_tokens()
    assert client.count("Account") == 451
    assert len(control.requests("/services/oauth2/token")) == 2
    served.emulator.refresh_tokens.clear()  # revoked
    control.expire_tokens()
    with pytest.raises(AuthenticationError, match="invalid_grant"):
        client.count("Account")


def test_query_follows_next_records_url_and_query_all_sees_deletes(client, control):
    names = [r["Name"] for r in client.query("SELECT Name FROM Account ORDER BY Name", batch_size=200)]
    assert len(names) == 451 and names[:2] == ["Account 0001", "Account 0002"]
    assert len(control.requests("/query")) == 3  # 200 + 200 + 51
    assert client.delete("Account", NORDWIND) is True
    assert client.delete("Account", NORDWIND) is False
    since = datetime(2025, 1, 1, tzinfo=UTC)
    soql = f"SELECT Id, IsDeleted FROM Account WHERE IsDeleted = true AND SystemModstamp > {format_datetime(since)}"
    assert list(client.query(soql)) == []
    [gone] = list(client.query_all(soql))
    assert gone["Id"] == NORDWIND and gone["IsDeleted"] is True


def test_single_record_writes_and_upsert(client, control):
    new_id = client.create("Account", {"Name": "Zeta"})
    client.update("Account", new_id, {"Name": "Zeta AG"})
    assert client.get("Account", new_id, ["Name"])["Name"] == "Zeta AG"
    first = client.upsert("Account", "External_Id__c", "qb/77 x", {"Name": "Seventy-seven"})
    again = client.upsert("Account", "External_Id__c", "qb/77 x", {"Name": "Seventy-seven"})
    assert first.created is True and again.created is False and again.id == first.id
    assert client.get("Account", first.id)["External_Id__c"] == "qb/77 x"
    with pytest.raises(MultipleMatches):
        client.upsert("Opportunity", "Ext__c", "d", {"Amount": 1})
    with pytest.raises(ValidationFailed) as bad:
        client.create("Account", {"Name": "X", "Nope__c": 1})
    assert bad.value.code == "INVALID_FIELD" and "Nope__c" in str(bad.value)
    with pytest.raises(NotFound):
        client.get("Account", make_id("001", 999_999))


def test_collections_chunk_by_200_with_per_record_results(client, control):
    records = [{"Name": f"Bulk {i}"} for i in range(450)] + [{"BillingCity": "no name"}]
    results = client.create_many(records, sobject="Account")
    assert len(results) == 451 and sum(r.success for r in results) == 450
    assert results[-1].errors[0].code == "REQUIRED_FIELD_MISSING" and results[-1].errors[0].fields == ("Name",)
    assert len(control.requests("/composite/sobjects")) == 3
    rolled = client.create_many([{"Name": "ok"}, {"Nope__c": 1}], sobject="Account", all_or_none=True)
    assert rolled[0].rolled_back and not rolled[1].success
    upserts = client.upsert_many("Account", "External_Id__c", [
        {"External_Id__c": "qb-58", "Name": "Nordwind AG"}, {"External_Id__c": "qb-99", "Name": "New"}])
    assert [(r.success, r.created) for r in upserts] == [(True, False), (True, True)]
    assert upserts[0].id == NORDWIND
    updated = client.update_many([{"id": NORDWIND, "BillingCity": "Kiel"}], sobject="Account")
    assert updated[0].success and client.get("Account", NORDWIND)["BillingAddress"]["city"] == "Kiel"
    deleted = client.delete_many([r.id for r in results[:250]])
    assert len(deleted) == 250 and all(r.success for r in deleted)


def test_request_limit_exceeded_is_typed_and_not_retried(served, control, client):
    served.emulator.daily_api_limit = 2
    control.rate_limits(enabled=True)
    client.count("Account")
    client.count("Account")
    before = len(control.requests("/query"))
    with pytest.raises(RequestLimitExceeded) as exc:
        client.count("Account")
    assert exc.value.status == 403 and exc.value.retriable is False
    assert len(control.requests("/query")) == before + 1  # asked once, not hammered
    assert client.usage.used == 2 and client.usage.limit == 2


def test_build_client_from_the_sandbox_registry(tmp_path):
    folder = tmp_path / "fixtures"
    (folder / "acme" / "salesforce").mkdir(parents=True)
    (folder / "acme" / "salesforce" / "Account.json").write_text('[{"Name": "Solo"}]')
    with start_sandbox(folder, apps=["salesforce"]) as sandbox:
        registry = parse_registry(sandbox.registry_document())
        connection = registry.get("acme.salesforce")
        with build_client(connection, token_store=TokenStore(tmp_path / "t.json"),
                          environ=sandbox.environment()) as client:
            assert [r["Name"] for r in client.query("SELECT Name FROM Account")] == ["Solo"]


def test_literals():
    assert soql_literal("O'Brien\\x") == "'O\\'Brien\\\\x'"
    assert soql_literal(None) == "null" and soql_literal(True) == "true" and soql_literal(5) == "5"
    assert format_datetime(datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)) == "2025-03-01T12:00:00.123Z"
    with pytest.raises(ValueError):
        format_datetime(datetime(2025, 3, 1))


def test_token_endpoint_outage_on_first_contact_is_retried(served, store, control, fast_retry):
    control.fault("status", path="/services/oauth2/token", status=503)
    with SalesforceClient(served.url, make_auth(served, store), retry=fast_retry) as client:
        assert client.count("Account") == 451
    assert [r["status"] for r in control.requests("/services/oauth2/token")] == [503, 200]


@pytest.mark.parametrize(("status", "body", "cls", "retriable"), [
    (403, [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
     RequestLimitExceeded, True),
    (400, [{"message": "unable to obtain exclusive access", "errorCode": "UNABLE_TO_LOCK_ROW"}], RowLocked, True),
    (404, [{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED"}], NotFound, False),
    (400, [{"message": "bad", "errorCode": "MALFORMED_QUERY"}], ValidationFailed, False),
    (401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], AuthenticationError, False),
])
def test_error_arrays_decode_to_typed_errors(served, store, status, body, cls, retriable):
    client = SalesforceClient(served.url, make_auth(served, store))
    request = httpx.Request("GET", f"{served.url}/services/data/v62.0/query")
    error = client.decode_error(httpx.Response(status, content=orjson.dumps(body), request=request))
    assert type(error) is cls and error.retriable is retriable and error.code == body[0]["errorCode"]
    client.close()
