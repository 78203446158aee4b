"""PostgreSQL tenant backends on a real server: idempotent, race-safe, and isolated per tenant.

Isolation is probed the way an attacker would try it: connected as tenant A's role (`SET ROLE`
from the admin connection), reading or writing tenant B's schema must fail with a permission error.
Roles are cluster-wide, so every test uses tenant names of its own and drops the roles it made.
"""

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import pytest
from psycopg2 import errors as pg_errors
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from resources.identity import PostgresIdentityStore
from resources.pg_tenant import ForeignObject, object_name
from resources.storage import PostgresSchemaStorage
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.handles import Handle
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.tenant import TenantSpec
from tests.pg_helpers import admin_sql, drop_our_roles, role_exists, schema_exists

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@contextmanager
def as_role(url: str, role: str) -> Iterator[Cursor]:
    """A cursor acting as `role` (autocommit: a refused statement does not poison the next)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            yield cur
    finally:
        conn.close()


@pytest.fixture
def admin_url(pg_database: str) -> Iterator[str]:
    yield pg_database
    drop_our_roles(pg_database)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def storage(admin_url: str) -> PostgresSchemaStorage:
    return PostgresSchemaStorage(admin_url=admin_url)


@pytest.fixture
def identity(admin_url: str) -> PostgresIdentityStore:
    return PostgresIdentityStore(admin_url=admin_url)


def tenant(slug: str, org: str, plan: str = "team") -> TenantSpec:
    """A tenant whose names passed the same validation as a submitted request."""
    request = TenantRequest.parse(
        {
            "slug": slug,
            "org": org,
            "plan": plan,
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "ops@example.com", "role": "platform-admin"},
        }
    )
    return TenantSpec(
        tenant_id=f"t-{slug}-{org}",
        request_id=str(request.request_id),
        slug=request.slug,
        org=request.org,
        plan=request.plan,
        admin_email=request.admin_email,
    )


def admin_rows(url: str, schema: str) -> list[tuple[str, str, str]]:
    return admin_sql(
        url,
        sql.SQL("SELECT email, status, invitation_token FROM {} WHERE role = 'admin'").format(
            sql.Identifier(schema, "users")
        ),
    )


def test_ensure_creates_an_admin_owned_schema_and_a_nologin_role_named_after_the_slug(
    storage: PostgresSchemaStorage, admin_url: str, uid: str
) -> None:
    spec = tenant("acme", f"corp{uid}")
    handle = storage.ensure(spec)

    name = f"t_acme_corp{uid}_data"
    assert handle == Handle(
        "storage", spec.key, name, {"schema": name, "role": name, "quota_mb": 1000}
    )
    [(owner, comment)] = admin_sql(
        admin_url,
        "SELECT nspowner::regrole::text, obj_description(oid, 'pg_namespace')"
        " FROM pg_namespace WHERE nspname = %s",
        (name,),
    )
    assert owner == "postgres", "the control plane owns the schema, not the tenant"
    assert json.loads(comment)["tenant_key"] == spec.key
    [(can_login, superuser, createrole)] = admin_sql(
        admin_url,
        "SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s",
        (name,),
    )
    assert (can_login, superuser, createrole) == (False, False, False)
    memberships = admin_sql(
        admin_url,
        "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid IN (m.roleid, m.member)"
        " WHERE r.rolname = %s",
        (name,),
    )
    assert memberships == [], "the tenant role is granted to nothing and holds no other role"
    assert "password" not in json.dumps(handle.to_json())


def test_ensure_twice_is_idempotent_and_keeps_the_invitation(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, admin_url: str, uid: str
) -> None:
    spec = tenant("acme", f"corp{uid}")
    first = (storage.ensure(spec), identity.ensure(spec))
    invitation = identity.invitation(spec.key)

    assert (storage.ensure(spec), identity.ensure(spec)) == first
    assert identity.invitation(spec.key) == invitation
    assert invitation.email == spec.admin_email and invitation.status == "pending_invitation"
    assert len(invitation.token) >= 32
    assert invitation.token not in json.dumps(first[1].to_json()), "the token stays out of ledger"
    assert admin_rows(admin_url, first[1].name) == [
        (spec.admin_email, "pending_invitation", invitation.token)
    ]
    assert first[1].details == {
        "schema": first[1].name,
        "role": first[1].name,
        "admin_email": spec.admin_email,
        "max_users": 1000,
    }


def run_together(calls: list[Callable[[], Handle]]) -> list[Handle]:
    """Start every call at the same moment on its own thread; re-raise the first failure."""
    barrier = threading.Barrier(len(calls))
    results: list[Handle | BaseException | None] = [None] * len(calls)

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Handle)]


def test_concurrent_ensures_of_one_tenant_both_succeed_with_one_admin(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, admin_url: str, uid: str
) -> None:
    spec = tenant("race", f"corp{uid}")

    ids = run_together([lambda: identity.ensure(spec), lambda: identity.ensure(spec)])
    data = run_together([lambda: storage.ensure(spec), lambda: storage.ensure(spec)])

    # Again on the existing tenant: the re-grants of concurrent ensures must not collide either.
    ids += run_together([lambda: identity.ensure(spec)] * 4)
    data += run_together([lambda: storage.ensure(spec)] * 4)

    assert all(h == ids[0] for h in ids) and all(h == data[0] for h in data)
    [(email, _status, token)] = admin_rows(admin_url, ids[0].name)
    assert identity.invitation(spec.key).token == token and email == spec.admin_email


def test_concurrent_ensures_of_different_tenants_all_succeed(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, uid: str
) -> None:
    specs = [tenant(f"bulk{i}", f"corp{uid}") for i in range(4)]
    calls: list[Callable[[], Handle]] = []
    for spec in specs:
        calls += [lambda s=spec: storage.ensure(s), lambda s=spec: identity.ensure(s)]

    assert len(run_together(calls)) == 8
    assert storage.list_existing() == identity.list_existing() == {s.key for s in specs}


def test_release_twice_and_listing(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, uid: str
) -> None:
    a, b = tenant("alpha", f"corp{uid}"), tenant("bravo", f"corp{uid}")
    storage.ensure(a)
    storage.ensure(b)
    identity.ensure(b)
    assert storage.list_existing() == {a.key, b.key}
    assert identity.list_existing() == {b.key}

    assert storage.release(a.key) is True
    assert storage.release(a.key) is False
    assert identity.release(a.key) is False
    assert storage.list_existing() == {b.key}
    assert identity.list_existing() == {b.key}


def test_invitation_of_a_missing_store_is_not_found(
    identity: PostgresIdentityStore, uid: str
) -> None:
    with pytest.raises(NotFound):
        identity.invitation(f"ghost-corp{uid}")


@pytest.fixture
def two_tenants(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, uid: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Tenants A and B, each with storage and identity: {"data": name, "identity": name}."""
    names = []
    for slug in ("alpha", "bravo"):
        spec = tenant(slug, f"corp{uid}")
        names.append({"data": storage.ensure(spec).name, "identity": identity.ensure(spec).name})
    return names[0], names[1]


def select_meta(schema: str) -> sql.Composed:
    return sql.SQL("SELECT plan FROM {}").format(sql.Identifier(schema, "tenant_meta"))


def insert_user(schema: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (email, role, status) VALUES ('x@evil.example', 'admin', 'active')"
    ).format(sql.Identifier(schema, "users"))


def test_a_tenant_role_cannot_read_or_write_another_tenants_schema(
    admin_url: str, two_tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    a, b = two_tenants
    forbidden = [
        select_meta(b["data"]),
        sql.SQL("SELECT * FROM {}").format(sql.Identifier(b["identity"], "users")),
        insert_user(b["identity"]),
        sql.SQL("DELETE FROM {}").format(sql.Identifier(b["identity"], "users")),
        sql.SQL("UPDATE {} SET plan = 'enterprise'").format(
            sql.Identifier(b["data"], "tenant_meta")
        ),
        # One tenant's backends are isolated from each other too.
        sql.SQL("SELECT * FROM {}").format(sql.Identifier(a["identity"], "users")),
    ]
    with as_role(admin_url, a["data"]) as cur:
        for statement in forbidden:
            with pytest.raises(pg_errors.InsufficientPrivilege):
                cur.execute(statement)


def test_a_tenant_role_reads_and_writes_its_own_schema_only_as_granted(
    admin_url: str, two_tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    a, _b = two_tenants
    # A table the control plane adds later is covered by the default privileges.
    admin_sql(
        admin_url,
        sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, body text)").format(
            sql.Identifier(a["data"], "notes")
        ),
    )
    notes = sql.Identifier(a["data"], "notes")
    with as_role(admin_url, a["data"]) as cur:
        cur.execute(select_meta(a["data"]))
        assert cur.fetchall() == [("team",)]
        cur.execute(sql.SQL("INSERT INTO {} (body) VALUES ('hello')").format(notes))
        cur.execute(sql.SQL("SELECT body FROM {}").format(notes))
        assert cur.fetchall() == [("hello",)]
        with pytest.raises(pg_errors.InsufficientPrivilege):
            cur.execute(
                sql.SQL("UPDATE {} SET quota_mb = 99999").format(
                    sql.Identifier(a["data"], "tenant_meta")
                )
            )
        with pytest.raises(pg_errors.InsufficientPrivilege):
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(a["data"])))
    # The identity role (the workload's sign-in) reads its users and writes only what redeeming
    # the invitation writes.
    users = sql.Identifier(a["identity"], "users")
    with as_role(admin_url, a["identity"]) as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(users))
        assert cur.fetchall() == [(1,)]
        cur.execute(
            sql.SQL(
                "UPDATE {} SET status = 'active', password_hash = 'h',"
                " invitation_redeemed_at = now() WHERE role = 'admin'"
            ).format(users)
        )
        assert cur.rowcount == 1
        refused = [
            insert_user(a["identity"]),
            sql.SQL("DELETE FROM {}").format(users),
            sql.SQL("UPDATE {} SET email = 'mallory@evil.example'").format(users),
            sql.SQL("UPDATE {} SET role = 'admin'").format(users),
            sql.SQL("UPDATE {} SET invitation_token = 'mine'").format(users),
            sql.SQL("UPDATE {} SET invitation_expires_at = 'infinity'").format(users),
            sql.SQL("SELECT nextval(pg_get_serial_sequence({}, 'id'))").format(
                sql.Literal(f'"{a["identity"]}".users')
            ),
        ]
        for statement in refused:
            with pytest.raises(pg_errors.InsufficientPrivilege):
                cur.execute(statement)


def test_a_tenant_role_cannot_create_objects_in_public_or_its_own_schema(
    admin_url: str, two_tenants: tuple[dict[str, str], dict[str, str]]
) -> None:
    a, _b = two_tenants
    with as_role(admin_url, a["data"]) as cur:
        for schema in ("public", a["data"]):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                cur.execute(
                    sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(schema, "squat"))
                )


def test_public_create_is_kept_from_tenants_on_servers_that_grant_it_to_everyone(
    storage: PostgresSchemaStorage, admin_url: str, uid: str
) -> None:
    """PostgreSQL 14 and older grant CREATE on public to PUBLIC: simulate it, and a direct grant."""
    spec = tenant("legacy", f"corp{uid}")
    role = storage.ensure(spec).name
    admin_sql(admin_url, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    admin_sql(
        admin_url, sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role))
    )

    storage.ensure(spec)

    with as_role(admin_url, role) as cur, pytest.raises(pg_errors.InsufficientPrivilege):
        cur.execute("CREATE TABLE public.squat (id int)")
    [(usage,)] = admin_sql(admin_url, "SELECT has_schema_privilege('public', 'USAGE')")
    assert usage, "other users keep their access to public"


def grants_left(url: str, oid: int, name: str) -> list[Any]:
    """Every catalog place a privilege of the role could hide."""
    return admin_sql(
        url,
        "SELECT 'table' FROM information_schema.role_table_grants WHERE grantee = %(name)s"
        " UNION ALL SELECT 'schema' FROM pg_namespace n, aclexplode(n.nspacl) a"
        "  WHERE a.grantee = %(oid)s"
        " UNION ALL SELECT 'relation' FROM pg_class c, aclexplode(c.relacl) a"
        "  WHERE a.grantee = %(oid)s"
        " UNION ALL SELECT 'default' FROM pg_default_acl d, aclexplode(d.defaclacl) a"
        "  WHERE a.grantee = %(oid)s"
        " UNION ALL SELECT 'database' FROM pg_database d, aclexplode(d.datacl) a"
        "  WHERE a.grantee = %(oid)s"
        " UNION ALL SELECT 'dependency' FROM pg_shdepend WHERE refobjid = %(oid)s",
        {"name": name, "oid": oid},
    )


def test_release_leaves_no_role_schema_or_grant_behind(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, admin_url: str, uid: str
) -> None:
    spec = tenant("gone", f"corp{uid}")
    names = [storage.ensure(spec).name, identity.ensure(spec).name]
    oids = {n: admin_sql(admin_url, "SELECT %s::regrole::oid", (n,))[0][0] for n in names}
    for name, oid in oids.items():
        [(usage,)] = admin_sql(
            admin_url, "SELECT has_schema_privilege(%s, %s, 'USAGE')", (name, name)
        )
        assert usage
        assert grants_left(admin_url, oid, name), "the probe must see grants while they exist"

    # A grant someone made outside the tenant's schema must not block or survive the release.
    admin_sql(admin_url, "CREATE TABLE public.shared_probe (id int)")
    admin_sql(
        admin_url,
        sql.SQL("GRANT SELECT ON public.shared_probe TO {}").format(sql.Identifier(names[0])),
    )

    assert identity.release(spec.key) and storage.release(spec.key)

    for name, oid in oids.items():
        assert not role_exists(admin_url, name)
        assert not schema_exists(admin_url, name)
        assert grants_left(admin_url, oid, name) == []
    assert storage.list_existing() == identity.list_existing() == set()


def test_names_contain_the_slug_and_fit_the_identifier_limit(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, admin_url: str, uid: str
) -> None:
    slug = f"s{uid}" + "x" * (30 - 1 - len(uid))
    spec = tenant(slug, f"o{uid}" + "y" * (30 - 1 - len(uid)))
    sibling = tenant(slug, f"o{uid}" + "y" * (29 - 1 - len(uid)) + "z")

    handles = [backend.ensure(s) for backend in (storage, identity) for s in (spec, sibling)]

    names = [h.name for h in handles]
    assert len(set(names)) == 4, "keys sharing a long prefix still get distinct names"
    for name in names:
        assert name.startswith(f"t_{slug}_") and len(name.encode()) <= 63
        assert schema_exists(admin_url, name) and role_exists(admin_url, name), "not truncated"
    assert object_name(spec.key, "identity") == names[2], "names are deterministic"
    assert object_name("acme-corp", "data") == "t_acme_corp_data"
    assert storage.release(spec.key) and identity.release(spec.key)


def test_hostile_looking_names_are_quoted_correctly(
    storage: PostgresSchemaStorage, identity: PostgresIdentityStore, admin_url: str, uid: str
) -> None:
    specs = [tenant("drop-table", f"select{uid}"), tenant("public", f"grant-all{uid}")]
    for spec in specs:
        handle = identity.ensure(spec)
        assert handle.name == f"t_{spec.key.replace('-', '_')}_identity"
        assert identity.invitation(spec.key).email == spec.admin_email
        storage.ensure(spec)
    assert identity.list_existing() == storage.list_existing() == {s.key for s in specs}
    with pytest.raises(ValueError, match="DNS label"):
        storage.release('x"; DROP ROLE postgres; --')
    assert role_exists(admin_url, "postgres")
    for spec in specs:
        assert identity.release(spec.key) and storage.release(spec.key)
    assert identity.list_existing() == storage.list_existing() == set()


def test_a_same_named_schema_that_is_not_ours_is_never_adopted_or_dropped(
    storage: PostgresSchemaStorage, admin_url: str, uid: str
) -> None:
    spec = tenant("squat", f"corp{uid}")
    name = object_name(spec.key, "data")
    admin_sql(admin_url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))

    with pytest.raises(ForeignObject):
        storage.ensure(spec)
    assert storage.release(spec.key) is False
    assert schema_exists(admin_url, name) and not role_exists(admin_url, name)
