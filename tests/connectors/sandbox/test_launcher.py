import httpx

from connectors.registry import parse_registry
from connectors.sandbox.demo_data import generate
from connectors.sandbox.launcher import EMULATORS, start_sandbox


def test_the_sandbox_serves_every_app_and_describes_itself_as_a_registry(tmp_path):
    generate(tmp_path, invoices=12, seed=1, tenants=2)
    with start_sandbox(tmp_path) as box:
        document = box.registry_document()
        env = box.environment()
        registry = parse_registry(document)
        served = {f"{t}.{a}" for t in registry.tenants for a in EMULATORS if (tmp_path / t / a).is_dir()}
        assert sorted(registry.keys()) == sorted(served) and any(k.endswith(".xero") for k in served)
        # the registry names the variables; the values travel only in the environment
        assert not any(value in str(document) for value in env.values())
        for connection in registry.connections:
            # the tenant's settings, with the app's own section (settings.json "apps") over them
            tenant = dict(box.settings[connection.tenant])
            own = tenant.pop("apps", {}).get(connection.app, {})
            assert connection.settings == {**tenant, **own}
            for name in connection.secret_env:
                assert connection.secret(name, env)
        for app, url in box.urls.items():
            health = httpx.get(f"{url}/_sandbox/health").json()
            assert health["app"] == app and set(health["tenants"]) == {c.tenant for c in registry.for_app(app)}
