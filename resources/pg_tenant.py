"""PostgreSQL per-tenant schemas and roles, shared by the storage and identity backends.

Each backend gives a tenant one schema and one role of the same name,
`t_<deployment>_<slug>_<org>_<suffix>` (schemas and roles live in separate catalogs, so one name
finds both). Roles are cluster-wide: the deployment (TENANT_DEPLOYMENT, by default derived from
the registry database) keeps two control planes on one server from claiming each other's.
One role per backend, not per tenant, because the saga allocates and compensates storage and
identity independently: each backend owns its pair outright, so releasing one never has to ask
whether the other still needs a shared role, and a workload that holds the identity role cannot
read the tenant's data.

The schema belongs to the admin (control plane); the role is NOLOGIN, a member of nothing, and holds
USAGE on its own schema plus row privileges on its tables (now and, via default privileges, later).
Control-plane metadata tables stay read-only to it. Nothing is secret, so handles carry no
password: whoever runs the workload grants it login separately.

Every name is a function of the deployment and the tenant key alone (listing receives only the
key) and always goes through `psycopg2.sql.Identifier`. Ownership is recorded in a JSON comment
on the schema and the role, so listing maps back to tenant keys without parsing names, and a
same-named object that is not ours is never adopted or dropped. The comment also names the tenant
id the pair was made for: `ensure` refuses a pair made for another tenant id under the same key,
and `release` given a tenant id leaves it; a pair from before comments carried the tenant id is
claimed by the first tenant that ensures it. Objects made before names carried the deployment
(`t_<slug>_<org>_<suffix>`, a marker without `deployment`) are still listed and released.
"""

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from psycopg2 import errors as pg_errors
from psycopg2 import sql
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from tenant_pipelines.domain.errors import PermanentError
from tenant_pipelines.domain.handles import Handle, check_made_for, may_act_on
from tenant_pipelines.domain.tenant import TenantSpec, check_tenant_key
from tenant_pipelines.support.db_url import normalize_url
from tenant_pipelines.support.pooled_engines import pooled_pg_engine

APP = "tenant-pipelines"
NAME_PREFIX = "t_"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
MAX_SLUG_CHARS = 30
HASH_CHARS = 8
# Marks a shortened name. A full name never contains it: tenant keys have no "--".
SHORTENED_MARK = "__"
CONNECT_TIMEOUT_S = 10
ADMIN_POOL_SIZE = 1  # connections a process keeps to a backend's database
ADMIN_POOL_OVERFLOW = 2  # more while threads call at once (the API server's inventory)
LOCK_TIMEOUT = "30s"  # how long an ensure waits behind a concurrent one for the same tenant
TABLE_PRIVILEGES = sql.SQL("SELECT, INSERT, UPDATE, DELETE")
SEQUENCE_PRIVILEGES = sql.SQL("USAGE, SELECT, UPDATE")
WRITE_PRIVILEGES = sql.SQL("INSERT, UPDATE, DELETE")
PUBLIC_SCHEMA = "public"
OWNER_FIELD = "tenant_id"  # of a marker: the tenant id the schema and role were made for


class ForeignObject(PermanentError):
    """A schema or role with our name exists but was not made by this control plane."""


def object_name(tenant_key: str, suffix: str, deployment: str = "") -> str:
    """`t_<deployment>_<key with '_' for '-'>_<suffix>`, shortened deterministically to fit 63
    bytes (`deployment` "" gives the older `t_<key>_<suffix>`).

    The shortened form keeps the key's first characters (always the whole slug: the slug comes
    first and is at most 30), then `__` and a hash of deployment and key, so distinct stay distinct.
    """
    check_tenant_key(tenant_key)
    prefix = f"{NAME_PREFIX}{deployment}_" if deployment else NAME_PREFIX
    tail = f"_{suffix}"
    full = f"{prefix}{tenant_key.replace('-', '_')}{tail}"
    if len(full.encode()) <= MAX_IDENTIFIER_BYTES:
        return full
    room = MAX_IDENTIFIER_BYTES - len(prefix) - len(SHORTENED_MARK) - HASH_CHARS - len(tail)
    if room <= MAX_SLUG_CHARS:
        raise ValueError(
            f"deployment {deployment!r} and suffix {suffix!r} leave no room for the slug"
        )
    digest = hashlib.sha256(f"{deployment}/{tenant_key}".encode()).hexdigest()[:HASH_CHARS]
    if not deployment:  # the older names' hash, unchanged
        digest = hashlib.sha256(tenant_key.encode()).hexdigest()[:HASH_CHARS]
    head = tenant_key[:room].replace("-", "_")
    return f"{prefix}{head}{SHORTENED_MARK}{digest}{tail}"


@dataclass(frozen=True)
class TenantSchema:
    """One tenant's schema and role in one backend (both named `name`)."""

    kind: str
    tenant_key: str
    name: str
    deployment: str = ""
    tenant_id: str | None = None  # whom the pair is (to be) made for; None: any (listing)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.name)

    def table(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.name, table)

    def marker(self, database: str) -> dict[str, str]:
        """What says the pair is this control plane's, for this key (the tenant id aside)."""
        marker = {"app": APP, "kind": self.kind, "tenant_key": self.tenant_key}
        if self.deployment:
            marker["deployment"] = self.deployment
        return {**marker, "database": database}

    def comment(self, database: str) -> dict[str, str]:
        """The marker as written on the schema and the role: with the tenant id."""
        marker = self.marker(database)
        return {**marker, OWNER_FIELD: self.tenant_id} if self.tenant_id else marker

    def details(self) -> dict[str, Any]:
        return {"schema": self.name, "role": self.name}


# Creates the backend's tables (idempotently) and returns what the handle should report.
Build = Callable[[Connection, TenantSchema], dict[str, Any]]


def run(conn: Connection, statement: sql.Composable, params: Sequence[Any] = ()) -> list[Any]:
    """Execute a composed statement on the connection's transaction, after the statements
    `defer` queued, in one round trip; rows if it returns any."""
    cursor = conn.connection.cursor()
    try:
        text = cursor.mogrify(statement, tuple(params) or None)
        cursor.execute(b";\n".join([*conn.info.pop(_DEFERRED, []), text]))
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


def defer(conn: Connection, statement: sql.Composable, params: Sequence[Any] = ()) -> None:
    """Queue a statement whose result nothing reads (DDL, grants, inserts): it goes to the server
    with the next `run`, or when the tenant's transaction ends (`flush`). An ensure is some thirty
    statements, a round trip each when sent one at a time (docs/performance.md). An error is
    raised where the queue is sent, and the transaction rolls back as before."""
    cursor = conn.connection.cursor()
    try:
        text = cursor.mogrify(statement, tuple(params) or None)
    finally:
        cursor.close()
    conn.info.setdefault(_DEFERRED, []).append(text)


def flush(conn: Connection) -> None:
    """Send what `defer` queued."""
    if conn.info.get(_DEFERRED):
        run(conn, sql.SQL("SELECT 1"))


_DEFERRED = "tenant_pipelines.deferred"  # in the DBAPI connection's info: cleared with each use


@cache
def admin_engine(admin_url: str) -> Engine:
    """One small pool per process: a provisioning run makes several calls, and a new connection
    for each was most of their time (docs/performance.md). A kept connection is tested before
    use, and a forked child opens its own."""
    return pooled_pg_engine(
        normalize_url(admin_url),
        pool_size=ADMIN_POOL_SIZE,
        max_overflow=ADMIN_POOL_OVERFLOW,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


class PgTenantSchemas:
    """Ensure, release and list one backend's per-tenant schema and role on one database."""

    def __init__(self, admin_url: str, kind: str, suffix: str, deployment: str = "") -> None:
        self._engine = admin_engine(admin_url)
        self.kind = kind
        self.suffix = suffix
        self.deployment = deployment

    def target(self, tenant_key: str, tenant_id: str | None = None) -> TenantSchema:
        name = object_name(tenant_key, self.suffix, self.deployment)
        return TenantSchema(self.kind, tenant_key, name, self.deployment, tenant_id)

    def legacy_target(self, tenant_key: str, tenant_id: str | None = None) -> TenantSchema | None:
        """The same tenant's objects as named before names carried the deployment."""
        if not self.deployment:
            return None
        name = object_name(tenant_key, self.suffix)
        return TenantSchema(self.kind, tenant_key, name, tenant_id=tenant_id)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    @contextmanager
    def locked(self, target: TenantSchema) -> Iterator[Connection]:
        """A transaction holding the tenant's advisory lock: concurrent calls queue, not race.
        What the body deferred is sent before the commit."""
        with self.connect() as conn:
            conn.info.pop(_DEFERRED, None)  # never a statement left from another use
            timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT))
            lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))")
            try:
                defer(conn, timeout)
                run(conn, lock, [f"{APP}:{target.name}"])
                yield conn
                flush(conn)
            finally:
                conn.info.pop(_DEFERRED, None)

    def ensure(self, tenant: TenantSpec, build: Build, read_only: Sequence[str] = ()) -> Handle:
        """Create what is missing (role, schema, grants, tables via `build`); describe it all.
        A pair made for another tenant id raises `OwnedByAnotherTenant`, in one transaction
        with everything else: nothing is changed."""
        tenant_key = tenant.key
        target = self.target(tenant_key, tenant.tenant_id)
        with self.locked(target) as conn:
            database = current_database(conn)
            ensure_role(conn, target, database)
            ensure_schema(conn, target, database)
            grant_schema(conn, target)
            keep_out_of_public(conn, target)
            extra = build(conn, target)
            for table in read_only:
                defer(
                    conn,
                    sql.SQL("REVOKE {} ON {} FROM {}").format(
                        WRITE_PRIVILEGES, target.table(table), target.ident
                    ),
                )
        details = {**target.details(), **extra}
        return Handle(kind=self.kind, tenant_key=tenant_key, name=target.name, details=details)

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        """Drop the schema (CASCADE), the role's remaining grants, then the role (and those of
        the older, unprefixed name, if this tenant has them). With a tenant id, a pair made for
        another tenant id is left as it is."""
        legacy = self.legacy_target(tenant_key, tenant_id)
        released = self._release(legacy) if legacy is not None else False
        return self._release(self.target(tenant_key, tenant_id)) or released

    def _release(self, target: TenantSchema) -> bool:
        with self.locked(target) as conn:
            database = current_database(conn)
            # Only what we made, for this tenant: someone else's same-named object is left alone.
            schema = is_ours(schema_marker(conn, target.name), target, database)
            role = is_ours(role_marker(conn, target.name), target, database)
            if schema:
                defer(conn, sql.SQL("DROP SCHEMA {} CASCADE").format(target.ident))
            if role:
                defer(conn, sql.SQL("DROP OWNED BY {}").format(target.ident))
                defer(conn, sql.SQL("DROP ROLE {}").format(target.ident))
        return schema or role

    def exists(self, conn: Connection, target: TenantSchema) -> bool:
        return schema_marker(conn, target.name) is not None

    def list_existing(self) -> set[str]:
        """Tenant keys with a schema here, or a role made for this database (a leak either way)."""
        with self.connect() as conn:
            database = current_database(conn)
            rows = run(
                conn,
                sql.SQL(
                    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace"
                    " WHERE starts_with(nspname, %s)"
                    " UNION ALL SELECT shobj_description(oid, 'pg_authid') FROM pg_roles"
                    " WHERE starts_with(rolname, %s)"
                ),
                [NAME_PREFIX, NAME_PREFIX],
            )
        markers = (parse_marker(comment) for (comment,) in rows)
        # A marker without a deployment is from before names carried one: this deployment's.
        deployments = {self.deployment, None}
        return {
            m["tenant_key"]
            for m in markers
            if m
            and m.get("app") == APP
            and m.get("kind") == self.kind
            and m.get("database") == database
            and m.get("deployment") in deployments
        }


def current_database(conn: Connection) -> str:
    [(name,)] = run(conn, sql.SQL("SELECT current_database()"))
    return str(name)


def parse_marker(comment: str | None) -> dict[str, Any] | None:
    try:
        marker = json.loads(comment or "")
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def schema_marker(conn: Connection, name: str) -> dict[str, Any] | None:
    """None if no such schema; otherwise its comment as a marker ({} if not ours)."""
    rows = run(
        conn,
        sql.SQL("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s"),
        [name],
    )
    return (parse_marker(rows[0][0]) or {}) if rows else None


def role_marker(conn: Connection, name: str) -> dict[str, Any] | None:
    rows = run(
        conn,
        sql.SQL("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s"),
        [name],
    )
    return (parse_marker(rows[0][0]) or {}) if rows else None


def is_ours(marker: dict[str, Any] | None, target: TenantSchema, database: str) -> bool:
    """Whether an object (its marker; None: absent) is this control plane's for this key and
    may be acted on for the target's tenant id."""
    if marker is None:
        return False
    made_for = marker.get(OWNER_FIELD)
    base = {k: v for k, v in marker.items() if k != OWNER_FIELD}
    return base == target.marker(database) and may_act_on(made_for, target.tenant_id)


def check_ours(
    conn: Connection, what: str, marker: dict[str, Any], target: TenantSchema, database: str
) -> None:
    """Refuse an existing object that is not ours, or ours for another tenant id; claim one made
    before markers named the tenant id."""
    if {k: v for k, v in marker.items() if k != OWNER_FIELD} != target.marker(database):
        raise ForeignObject(
            f"{target.name!r} exists but was not created for tenant {target.tenant_key!r}"
            f" ({target.kind}) in database {database!r}: refusing to adopt or drop it"
        )
    made_for = marker.get(OWNER_FIELD)
    if target.tenant_id is not None:
        check_made_for(made_for, target.tenant_id, target.kind, target.name, target.tenant_key)
        if made_for is None:
            comment_on(conn, what, target, database)


def comment_on(conn: Connection, what: str, target: TenantSchema, database: str) -> None:
    comment = json.dumps(target.comment(database), sort_keys=True)
    defer(
        conn,
        sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(what), target.ident, sql.Literal(comment)),
    )


def ensure_role(conn: Connection, target: TenantSchema, database: str) -> None:
    """Create the role if missing. Roles are cluster-wide, so another database's control plane
    may race us: a duplicate there is caught inside a savepoint and then checked for ownership."""
    marker = role_marker(conn, target.name)
    if marker is None:
        flush(conn)  # what came before stays out of the savepoint
        try:
            with conn.begin_nested():
                run(
                    conn,
                    sql.SQL(
                        "CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
                        " NOREPLICATION NOBYPASSRLS"
                    ).format(target.ident),
                )
                comment_on(conn, "ROLE", target, database)
                return
        except (pg_errors.DuplicateObject, pg_errors.UniqueViolation):
            marker = role_marker(conn, target.name) or {}
    check_ours(conn, "ROLE", marker, target, database)


def ensure_schema(conn: Connection, target: TenantSchema, database: str) -> None:
    marker = schema_marker(conn, target.name)
    if marker is not None:
        check_ours(conn, "SCHEMA", marker, target, database)
        return
    # Owned by the admin running this: the tenant role can use the schema, never alter or drop it.
    defer(conn, sql.SQL("CREATE SCHEMA {}").format(target.ident))
    comment_on(conn, "SCHEMA", target, database)


def grant_schema(conn: Connection, target: TenantSchema) -> None:
    """USAGE on its own schema and row privileges on its tables, including future ones."""
    schema, role = target.ident, target.ident
    statements = (
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {tables} ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {sequences} ON SEQUENCES TO {role}",
        # Tables made by another admin role are not covered by our default privileges.
        "GRANT {tables} ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    )
    for statement in statements:
        defer(
            conn,
            sql.SQL(statement).format(
                schema=schema, role=role, tables=TABLE_PRIVILEGES, sequences=SEQUENCE_PRIVILEGES
            ),
        )


def keep_out_of_public(conn: Connection, target: TenantSchema) -> None:
    """Make sure the tenant role cannot create objects in `public`.

    Revoke only what is actually granted: an unconditional REVOKE rewrites `public`'s ACL row,
    and concurrent ensures for different tenants would then fail with "tuple concurrently
    updated". PostgreSQL 15+ grants CREATE on `public` to no one but its owner; older servers grant
    it to PUBLIC, which no per-role revoke can override, so there (and only there) CREATE is revoked
    from PUBLIC, which is the PostgreSQL 15 default; USAGE stays, so nobody loses read access.
    """
    for grantee in sorted(public_create_grantees(conn, target.name)):
        run(
            conn,
            sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"),
            [f"{APP}:{PUBLIC_SCHEMA}"],
        )
        if grantee in public_create_grantees(conn, target.name):
            ident = sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC")
            run(
                conn,
                sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(
                    sql.Identifier(PUBLIC_SCHEMA), ident
                ),
            )


def public_create_grantees(conn: Connection, role: str) -> set[str]:
    """Which of `role` and PUBLIC ("", grantee oid 0) `public` grants CREATE to directly."""
    rows = run(
        conn,
        sql.SQL(
            "SELECT coalesce(r.rolname, '') FROM pg_namespace n"
            " CROSS JOIN aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
            " LEFT JOIN pg_roles r ON r.oid = a.grantee"
            " WHERE n.nspname = %s AND a.privilege_type = 'CREATE'"
            " AND (a.grantee = 0 OR r.rolname = %s)"
        ),
        [PUBLIC_SCHEMA, role],
    )
    return {str(grantee) for (grantee,) in rows}
