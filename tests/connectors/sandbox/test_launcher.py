import httpx

from connectors.registry import parse_registry
from connectors.sandbox.demo_data import generate
from connectors.sandbox.launcher import start_sandbox


def test_the_sandbox_serves_every_app_and_describes_itself_as_a_registry(tmp_path):
    generate(tmp_path, invoices=12, seed=1, tenants=2)
    with start_sandbox(tmp_path) as box:
        document = box.registry_document()
        env = box.environment()
        registry = parse_registry(document)
        assert sorted(registry.keys()) == sorted(f"{t}.{a}" for t in registry.tenants for a in ("sequence", "quickbooks"))
        # the registry names the variables; the values travel only in the environment
        assert not any(value in str(document) for value in env.values())
        for connection in registry.connections:
            assert connection.settings == box.settings[connection.tenant]
            for name in connection.secret_env:
                assert connection.secret(name, env)
        for app, url in box.urls.items():
            health = httpx.get(f"{url}/_sandbox/health").json()
            assert health["app"] == app and set(health["tenants"]) == set(registry.tenants)
