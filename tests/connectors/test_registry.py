import pytest

from connectors.registry import RegistryError, parse_registry

DOC = {
    "tenants": {
        "acme-uk": {
            "settings": {"merchant_email": "billing@acme.example"},
            "connections": {
                "sequence": {"base_url": "http://127.0.0.1:8711",
                             "secrets": {"client_id": "ACME_SEQ_ID", "client_secret": "ACME_SEQ_SECRET"}},
                "quickbooks": {"base_url": "http://127.0.0.1:8712/", "realm_id": "9130000000000001",
                               "secrets": {"client_id": "QBO_ID", "client_secret": "QBO_SECRET",
                                           "refresh_token": "ACME_QBO_REFRESH"}},
            },
        }
    }
}


def test_connections_become_partition_keys_with_settings():
    registry = parse_registry(DOC)
    assert registry.keys() == ["acme-uk.sequence", "acme-uk.quickbooks"]
    qbo = registry.get("acme-uk.quickbooks")
    assert qbo.base_url == "http://127.0.0.1:8712" and qbo.options["realm_id"] == "9130000000000001"
    assert qbo.settings["merchant_email"] == "billing@acme.example"
    assert qbo.is_loopback


def test_secrets_come_from_the_named_variables_and_errors_name_only_the_variable():
    seq = parse_registry(DOC).get("acme-uk.sequence")
    assert seq.secret("client_secret", {"ACME_SEQ_SECRET": "s3cret"}) == "s3cret"
    with pytest.raises(RegistryError, match="ACME_SEQ_SECRET") as err:
        seq.secret("client_secret", {})
    assert "s3cret" not in str(err.value)


def test_a_secret_written_into_the_registry_is_refused_and_every_problem_is_named():
    bad = {"tenants": {"acme-uk": {"connections": {
        "sequence": {"base_url": "http://x", "secrets": {"client_id": "ID", "client_secret": "hunter2-literal!"}},
        "quickbooks": {"base_url": "http://y", "secrets": {}},
        "stripe": {"base_url": "http://z"},
    }}}}
    with pytest.raises(RegistryError) as err:
        parse_registry(bad)
    message = str(err.value)
    assert "tenants.acme-uk.connections.sequence.secrets.client_secret" in message
    assert "tenants.acme-uk.connections.quickbooks.realm_id: required" in message
    assert "secrets.refresh_token" in message
    assert "unknown app 'stripe'" in message


def test_a_connection_s_own_settings_override_the_tenant_s_for_that_connection_only():
    doc = {"tenants": {"acme-uk": {
        "settings": {"merchant_email": "billing@acme.example", "tax_codes": {"cat-1": "4"}},
        "connections": {
            "sequence": DOC["tenants"]["acme-uk"]["connections"]["sequence"],
            "quickbooks": {**DOC["tenants"]["acme-uk"]["connections"]["quickbooks"],
                           "settings": {"tax_codes": {"cat-1": "7"}}},
        }}}}
    registry = parse_registry(doc)
    qbo, seq = registry.get("acme-uk.quickbooks"), registry.get("acme-uk.sequence")
    assert qbo.settings == {"merchant_email": "billing@acme.example", "tax_codes": {"cat-1": "7"}}
    assert seq.settings["tax_codes"] == {"cat-1": "4"}
    assert "settings" not in qbo.options
    with pytest.raises(RegistryError, match=r"connections\.quickbooks\.settings: expected a mapping"):
        parse_registry({"tenants": {"acme-uk": {"connections": {
            "quickbooks": {**DOC["tenants"]["acme-uk"]["connections"]["quickbooks"], "settings": ["x"]}}}}})
