"""Two control planes (two registries on different databases) on one PostgreSQL server: tenant
roles are cluster-wide, so their names carry the deployment (TENANT_DEPLOYMENT, by default derived
from the registry database), and the same slug and org in both never collide."""

import re
import uuid
from collections.abc import Iterator

import pytest

from resources.identity import PostgresIdentityStore, pg_identity_schema
from resources.pg_tenant import MAX_IDENTIFIER_BYTES, object_name
from resources.storage import PostgresSchemaStorage
from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.settings import DEPLOYMENT_MAX_CHARS, Settings
from tests.conftest import PG_ADMIN_URL, fresh_pg_database
from tests.pg_helpers import drop_our_roles, role_exists, schema_exists

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REGISTRY_A = "postgresql://postgres@127.0.0.1:5432/tenant_registry_a"
REGISTRY_B = "postgresql://postgres@127.0.0.1:5432/tenant_registry_b"


def deployment_of(registry_url: str, **env: str) -> str:
    return Settings.from_env({"TENANT_DB_URL": registry_url, **env}).deployment


def spec(slug: str, org: str) -> TenantSpec:
    request = TenantRequest.parse(
        {
            "slug": slug,
            "org": org,
            "plan": "team",
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "ops@example.com", "role": "platform-admin"},
        }
    )
    return TenantSpec(
        tenant_id=f"t-{slug}-{org}",
        request_id=str(request.request_id),
        slug=slug,
        org=org,
        plan="team",
        admin_email=request.admin_email,
    )


@pytest.fixture
def admin_url(pg_database: str) -> Iterator[str]:
    yield pg_database
    drop_our_roles(pg_database)


@pytest.fixture
def other_admin_url() -> Iterator[str]:
    with fresh_pg_database(PG_ADMIN_URL, "deploy") as url:
        yield url
        drop_our_roles(url)


def test_the_default_deployment_comes_from_the_registry_database(tmp_path: object) -> None:
    names = {
        deployment_of(REGISTRY_A),
        deployment_of(REGISTRY_B),
        deployment_of("postgresql://postgres@127.0.0.1:5432/tenants"),
        deployment_of(f"sqlite:///{tmp_path}/one/registry.db"),
        deployment_of(f"sqlite:///{tmp_path}/two/registry.db"),
    }
    assert len(names) == 5
    assert "tenants" in names  # a short database name is used as it is
    for name in names:
        assert re.fullmatch(rf"[a-z][a-z0-9_]{{0,{DEPLOYMENT_MAX_CHARS - 1}}}", name), name
    assert deployment_of(REGISTRY_A) == deployment_of(REGISTRY_A)  # stable across processes
    assert deployment_of(REGISTRY_A, TENANT_DEPLOYMENT="prod_eu") == "prod_eu"
    settings = Settings.from_env({"TENANT_DB_URL": REGISTRY_A})
    assert settings.child_env({})["TENANT_DEPLOYMENT"] == settings.deployment


@pytest.mark.parametrize("bad", ["Prod", "1prod", "prod-eu", "a" * (DEPLOYMENT_MAX_CHARS + 1)])
def test_an_invalid_deployment_is_refused_in_one_sentence(bad: str) -> None:
    with pytest.raises(ConfigError, match="TENANT_DEPLOYMENT must be"):
        deployment_of(REGISTRY_A, TENANT_DEPLOYMENT=bad)


def test_names_stay_valid_identifiers_and_keep_the_slug() -> None:
    slug, org = "s" + "a" * 29, "o" + "b" * 29  # the longest key: 30 + 1 + 30
    key = f"{slug}-{org}"
    for deployment in ("", "d", "a" * DEPLOYMENT_MAX_CHARS):
        for suffix in ("data", "identity"):
            name = object_name(key, suffix, deployment)
            assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
            assert name.startswith(f"t_{deployment}_{slug}" if deployment else f"t_{slug}")
            assert name.endswith(f"_{suffix}")
    assert object_name(key, "data", "dep_a") != object_name(key, "data", "dep_b")
    assert object_name("acme-corp", "data", "prod") == "t_prod_acme_corp_data"
    assert object_name("acme-corp", "data") == "t_acme_corp_data"  # the older names, unchanged


def _stores(url: str, deployment: str) -> tuple[PostgresSchemaStorage, PostgresIdentityStore]:
    return (
        PostgresSchemaStorage(admin_url=url, deployment=deployment),
        PostgresIdentityStore(admin_url=url, deployment=deployment),
    )


def test_two_deployments_on_one_tenant_database_do_not_collide(admin_url: str) -> None:
    tenant = spec(f"acme{uuid.uuid4().hex[:6]}", "widgets")
    deployment_a, deployment_b = deployment_of(REGISTRY_A), deployment_of(REGISTRY_B)
    stores_a, stores_b = _stores(admin_url, deployment_a), _stores(admin_url, deployment_b)
    handles_a = [store.ensure(tenant) for store in stores_a]
    handles_b = [store.ensure(tenant) for store in stores_b]
    names_a = {h.name for h in handles_a}
    names_b = {h.name for h in handles_b}
    assert not names_a & names_b
    assert all(name.startswith(f"t_{deployment_a}_") for name in names_a)
    assert handles_a[1].name == pg_identity_schema(tenant.key, deployment_a)

    for store in stores_a:
        assert store.release(tenant.key)
        assert store.list_existing() == set()  # A's listing: only A's objects
    for name in names_a:
        assert not role_exists(admin_url, name) and not schema_exists(admin_url, name)
    for store, handle in zip(stores_b, handles_b, strict=True):  # B's are untouched
        assert store.list_existing() == {tenant.key}
        assert role_exists(admin_url, handle.name) and schema_exists(admin_url, handle.name)


def test_two_deployments_on_two_databases_share_no_role(
    admin_url: str, other_admin_url: str
) -> None:
    tenant = spec(f"acme{uuid.uuid4().hex[:6]}", "widgets")
    storage_a, _ = _stores(admin_url, deployment_of(REGISTRY_A))
    storage_b, _ = _stores(other_admin_url, deployment_of(REGISTRY_B))
    # Before names carried the deployment, B's ensure found A's role and refused it (ForeignObject).
    name_a = storage_a.ensure(tenant).name
    name_b = storage_b.ensure(tenant).name
    assert name_a != name_b
    assert storage_a.release(tenant.key) and storage_b.release(tenant.key)


def test_objects_made_before_the_prefix_are_still_listed_and_released(admin_url: str) -> None:
    tenant = spec(f"acme{uuid.uuid4().hex[:6]}", "widgets")
    legacy = PostgresSchemaStorage(admin_url=admin_url).ensure(tenant)
    current = PostgresSchemaStorage(admin_url=admin_url, deployment="prod")
    assert current.list_existing() == {tenant.key}
    assert current.release(tenant.key)
    assert not schema_exists(admin_url, legacy.name) and not role_exists(admin_url, legacy.name)
