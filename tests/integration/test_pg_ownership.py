"""PostgreSQL tenant schemas and roles record the tenant id they were made for (in their marker
comment): `ensure` of another tenant id under the same key is refused as a permanent error in
one transaction that changes nothing, and `release` naming another tenant id leaves them. Real
server; roles are cluster-wide, so every test uses names of its own and drops its roles."""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg2 import sql

from resources.identity import PostgresIdentityStore
from resources.storage import PostgresSchemaStorage
from tenant_pipelines.domain.errors import OwnedByAnotherTenant, PermanentError
from tenant_pipelines.domain.tenant import TenantSpec
from tests.pg_helpers import admin_sql, drop_our_roles, role_exists, schema_exists

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

Backend = PostgresSchemaStorage | PostgresIdentityStore


@pytest.fixture
def admin_url(pg_database: str) -> Iterator[str]:
    yield pg_database
    drop_our_roles(pg_database)


@pytest.fixture(params=["storage", "identity"])
def backend(request: pytest.FixtureRequest, admin_url: str) -> Backend:
    if request.param == "storage":
        return PostgresSchemaStorage(admin_url=admin_url)
    return PostgresIdentityStore(admin_url=admin_url)


def tenant(slug: str, org: str) -> TenantSpec:
    tenant_id = str(uuid.uuid4())
    return TenantSpec(
        tenant_id=tenant_id,
        request_id=f"r-{tenant_id}",
        slug=slug,
        org=org,
        plan="team",
        admin_email=f"admin@{org}.example.com",
    )


@pytest.fixture
def pair() -> tuple[TenantSpec, TenantSpec]:
    """Issue 18's two tenants: one key `shop-prod-z<uid>`, split two ways."""
    uid = uuid.uuid4().hex[:6]
    return tenant("shop-prod", f"z{uid}"), tenant("shop", f"prod-z{uid}")


def state(url: str, name: str) -> dict[str, Any]:
    """The schema's and the role's comments, and every row of every table in the schema."""
    comments = admin_sql(
        url,
        "SELECT (SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace"
        " WHERE nspname = %(n)s), (SELECT shobj_description(oid, 'pg_authid') FROM pg_roles"
        " WHERE rolname = %(n)s)",
        {"n": name},
    )
    tables = admin_sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (name,))
    rows = {
        table: sorted(
            map(
                str, admin_sql(url, sql.SQL("SELECT * FROM {}").format(sql.Identifier(name, table)))
            )
        )
        for (table,) in tables
    }
    return {"comments": comments, "rows": rows}


def made_for(url: str, name: str) -> tuple[str | None, str | None]:
    [(schema, role)] = state(url, name)["comments"]
    return (
        json.loads(schema).get("tenant_id") if schema else None,
        json.loads(role).get("tenant_id") if role else None,
    )


def test_ensure_refuses_another_tenants_schema_and_role_and_changes_nothing(
    backend: Backend, admin_url: str, pair: tuple[TenantSpec, TenantSpec]
) -> None:
    first, second = pair
    handle = backend.ensure(first)
    assert made_for(admin_url, handle.name) == (first.tenant_id, first.tenant_id)
    before = state(admin_url, handle.name)

    with pytest.raises(OwnedByAnotherTenant) as refused:
        backend.ensure(second)

    assert isinstance(refused.value, PermanentError)
    assert str(refused.value) == (
        f"{backend.kind} {handle.name} under the key {first.key} was made for another tenant;"
        " refusing to adopt it"
    )
    assert state(admin_url, handle.name) == before
    assert backend.ensure(first) == handle  # still the first tenant's, as it was


def test_release_naming_another_tenant_leaves_the_schema_and_the_role(
    backend: Backend, admin_url: str, pair: tuple[TenantSpec, TenantSpec]
) -> None:
    first, second = pair
    handle = backend.ensure(first)
    before = state(admin_url, handle.name)

    assert backend.release(first.key, second.tenant_id) is False

    assert state(admin_url, handle.name) == before
    assert backend.list_existing() == {first.key}
    assert backend.release(first.key, first.tenant_id) is True
    assert not schema_exists(admin_url, handle.name) and not role_exists(admin_url, handle.name)
    backend.ensure(second)  # the key is free: the second tenant's own pair now
    assert made_for(admin_url, handle.name) == (second.tenant_id, second.tenant_id)
    assert backend.release(second.key) is True  # no tenant id: the operator's cleanup by key


def test_a_role_left_without_its_schema_is_refused_before_anything_is_made(
    backend: Backend, admin_url: str, pair: tuple[TenantSpec, TenantSpec]
) -> None:
    first, second = pair
    name = backend.ensure(first).name
    admin_sql(admin_url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))

    with pytest.raises(OwnedByAnotherTenant):
        backend.ensure(second)

    assert not schema_exists(admin_url, name)  # the refusal rolled back the whole ensure
    assert made_for(admin_url, name) == (None, first.tenant_id)


COMMENT_OF = {
    "SCHEMA": "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
    "ROLE": "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
}


def test_a_pair_from_before_markers_named_the_tenant_is_claimed_by_the_next_ensure(
    backend: Backend, admin_url: str, pair: tuple[TenantSpec, TenantSpec]
) -> None:
    first, second = pair
    name = backend.ensure(first).name
    for what, query in COMMENT_OF.items():
        [(comment,)] = admin_sql(admin_url, query, (name,))
        legacy = {k: v for k, v in json.loads(comment).items() if k != "tenant_id"}
        admin_sql(
            admin_url,
            sql.SQL("COMMENT ON {} {} IS {}").format(
                sql.SQL(what), sql.Identifier(name), sql.Literal(json.dumps(legacy))
            ),
        )
    assert made_for(admin_url, name) == (None, None)

    backend.ensure(first)

    assert made_for(admin_url, name) == (first.tenant_id, first.tenant_id)
    with pytest.raises(OwnedByAnotherTenant):
        backend.ensure(second)
