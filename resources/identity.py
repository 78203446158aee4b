"""Tenant identity store: the tenant's users, starting with its first admin.

The first admin is seeded with a one-time invitation token when the store is created. The token
is made once, inside the atomically created database, so retries and re-executions never mint a
second one (the welcome email must keep working). The PostgreSQL store keeps the same tables in a
per-tenant schema (see `resources.pg_tenant`) and seeds the admin only where none exists yet.

The invitation expires (`INVITATION_LIFETIME` after it is made) and is redeemed once, by the
tenant's workload (`resources.tenant_admin`), which then stores the admin's password hash. A store
made before sign-in existed lacks those columns: `ensure` and `upgrade` add them, giving a pending
invitation a full lifetime from then (it had none before). Until then the workload lets nobody in.

Locally each tenant's store is alone in a directory of its own and records the tenant id it was
made for; where it lives, who owns it and how the platform touches it are
`resources.identity_files`.
"""

import os
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg2 import sql
from sqlalchemy.engine import Connection

# The role and status names live with the workload's sign-in, which must not import this module.
from resources.admin_accounts import ADMIN_ROLE, PENDING_INVITATION, REDEMPTION_COLUMNS
from resources.identity_files import (
    IDENTITY_DIR,
    STORE_FILE,
    identity_db_path,
    own_directory,
    recorded_tenant_id,
    remove_store_directory,
    snapshot,
)
from resources.pg_tenant import PgTenantSchemas, TenantSchema, defer, object_name, run
from resources.storage import META_TABLE, create_db_atomically, open_db, utc_now
from tenant_pipelines.domain.errors import NotFound, OwnedByAnotherTenant
from tenant_pipelines.domain.handles import Handle, ResourceKind
from tenant_pipelines.domain.mail import INVITATION_LIFETIME, Invitation
from tenant_pipelines.domain.plans import get_plan
from tenant_pipelines.domain.tenant import TenantSpec, is_tenant_key

INVITATION_TOKEN_BYTES = 32
PG_IDENTITY_SUFFIX = "identity"
USERS_TABLE = "users"
SCHEMA_VERSION = 2  # 2: invitation expiry and redemption, password hash
# Added by `upgrade` to a store of version 1, with their SQLite and PostgreSQL types.
SIGN_IN_COLUMNS = {
    "invitation_expires_at": "timestamptz",
    "invitation_redeemed_at": "timestamptz",
    "password_hash": "text",
}


def invitation_expiry() -> datetime:
    """When an invitation made now stops working."""
    return datetime.now(UTC) + INVITATION_LIFETIME


def pg_identity_schema(tenant_key: str, deployment: str = "") -> str:
    """The schema (and role) of a tenant's PostgreSQL identity store; the workload checks it."""
    return object_name(tenant_key, PG_IDENTITY_SUFFIX, deployment)


@dataclass(frozen=True, kw_only=True)
class LocalSQLiteIdentityStore:
    """A SQLite users database per tenant, `<data_dir>/identity/<key>/identity.db`."""

    data_dir: str

    @property
    def kind(self) -> str:
        return ResourceKind.IDENTITY.value

    def path_for(self, tenant_key: str) -> Path:
        return identity_db_path(self.data_dir, tenant_key)

    def ensure(self, tenant: TenantSpec) -> Handle:
        path = self.path_for(tenant.key)
        max_users = get_plan(tenant.plan).identity_max_users

        def build(conn: sqlite3.Connection) -> None:
            now = utc_now()
            conn.execute(
                "CREATE TABLE tenant_meta (tenant_key TEXT PRIMARY KEY, plan TEXT NOT NULL,"
                " max_users INTEGER NOT NULL, created_at TEXT NOT NULL, tenant_id TEXT NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
                " role TEXT NOT NULL, status TEXT NOT NULL, invitation_token TEXT,"
                " created_at TEXT NOT NULL, invitation_expires_at TEXT,"
                " invitation_redeemed_at TEXT, password_hash TEXT)"
            )
            conn.execute(
                "INSERT INTO tenant_meta VALUES (?, ?, ?, ?, ?)",
                (tenant.key, tenant.plan, max_users, now, tenant.tenant_id),
            )
            conn.execute(
                "INSERT INTO users (email, role, status, invitation_token, created_at,"
                " invitation_expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant.admin_email,
                    ADMIN_ROLE,
                    PENDING_INVITATION,
                    secrets.token_urlsafe(INVITATION_TOKEN_BYTES),
                    now,
                    invitation_expiry().isoformat(),
                ),
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        if not path.exists():
            own_directory(path.parent)
            create_db_atomically(path, build)
        if recorded_tenant_id(path) not in (None, tenant.tenant_id):
            raise OwnedByAnotherTenant("identity store", str(path), tenant.key)
        self.upgrade(tenant.key)
        return self._handle(tenant.key, path)

    def upgrade(self, tenant_key: str) -> bool:
        """Only a store the platform still owns is written: an older version's, which `up`
        upgrades before its workload is given it (stores made since are current). One handed
        to its workload is never written by the platform (`identity_files`): left outdated, its
        workload lets nobody in and says why."""
        path = self.path_for(tenant_key)
        if not path.exists():
            return False
        with snapshot(path) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < SCHEMA_VERSION and os.lstat(path.parent).st_uid == os.geteuid():
            with open_db(path) as conn:
                _upgrade_sqlite(conn)
        return True

    def _handle(self, tenant_key: str, path: Path) -> Handle:
        """Read back what is stored; the token stays out of the ledger (it is a secret)."""
        with snapshot(path) as conn:
            (max_users,) = conn.execute("SELECT max_users FROM tenant_meta").fetchone()
        admin = self._first_admin(path)
        return Handle(
            kind=self.kind,
            tenant_key=tenant_key,
            name=str(path),
            details={"admin_email": admin.email, "max_users": max_users},
        )

    def invitation(self, tenant_key: str) -> Invitation:
        if not self.upgrade(tenant_key):  # a run begun by an older version allocated it
            raise NotFound(f"tenant {tenant_key!r} has no identity store")
        return self._first_admin(self.path_for(tenant_key))

    @staticmethod
    def _first_admin(path: Path) -> Invitation:
        with snapshot(path) as conn:
            row = conn.execute(
                "SELECT email, invitation_token, status, invitation_expires_at FROM users"
                " WHERE role = ? ORDER BY id LIMIT 1",
                (ADMIN_ROLE,),
            ).fetchone()
        if row is None:
            raise NotFound(f"identity store {path} has no admin")
        expires_at = datetime.fromisoformat(row[3]) if row[3] else None
        return Invitation(email=row[0], token=row[1], status=row[2], expires_at=expires_at)

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        """Remove the tenant's store directory; with `tenant_id`, a store recorded for another
        tenant is left as it is (False)."""
        path = self.path_for(tenant_key)
        if tenant_id is not None and recorded_tenant_id(path) not in (None, tenant_id):
            return False
        return remove_store_directory(path.parent)

    def list_existing(self) -> set[str]:
        root = Path(self.data_dir) / IDENTITY_DIR
        if not root.is_dir():
            return set()
        return {
            entry.name
            for entry in root.iterdir()
            if is_tenant_key(entry.name) and (entry / STORE_FILE).exists()
        }


def _upgrade_sqlite(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: the sign-in columns; a pending invitation gets a lifetime from now."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
    for column in SIGN_IN_COLUMNS:
        if column not in present:  # names from the constant above, never from input
            conn.execute(f"ALTER TABLE users ADD COLUMN {column} TEXT")
    conn.execute(
        "UPDATE users SET invitation_expires_at = ?"
        " WHERE status = ? AND invitation_expires_at IS NULL",
        (invitation_expiry().isoformat(), PENDING_INVITATION),
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@dataclass(frozen=True, kw_only=True)
class PostgresIdentityStore:
    """A schema `t_<slug>_<org>_identity` and a role of the same name per tenant, on `admin_url`
    (it holds credentials: it stays out of the repr)."""

    admin_url: str = field(repr=False)
    deployment: str = ""  # prefixes the names (TENANT_DEPLOYMENT): roles are cluster-wide

    @property
    def kind(self) -> str:
        return ResourceKind.IDENTITY.value

    @property
    def _schemas(self) -> PgTenantSchemas:
        return PgTenantSchemas(self.admin_url, self.kind, PG_IDENTITY_SUFFIX, self.deployment)

    def schema_name(self, tenant_key: str) -> str:
        return self._schemas.target(tenant_key).name

    def ensure(self, tenant: TenantSpec) -> Handle:
        max_users = get_plan(tenant.plan).identity_max_users

        def build(conn: Connection, target: TenantSchema) -> dict[str, Any]:
            _create_tables(conn, target)
            _grant_sign_in(conn, target)
            defer(
                conn,
                sql.SQL(
                    "INSERT INTO {} (tenant_key, plan, max_users) VALUES (%s, %s, %s)"
                    " ON CONFLICT (tenant_key) DO NOTHING"
                ).format(target.table(META_TABLE)),
                [tenant.key, tenant.plan, max_users],
            )
            _seed_admin(conn, target, tenant.admin_email)
            [(stored,)] = run(
                conn, sql.SQL("SELECT max_users FROM {}").format(target.table(META_TABLE))
            )
            admin = _first_admin(conn, target)
            return {"admin_email": admin.email, "max_users": stored}

        return self._schemas.ensure(tenant, build, read_only=(META_TABLE,))

    def invitation(self, tenant_key: str) -> Invitation:
        if not self.upgrade(tenant_key):  # a run begun by an older version allocated it
            raise NotFound(f"tenant {tenant_key!r} has no identity store")
        schemas = self._schemas
        with schemas.connect() as conn:
            return _first_admin(conn, schemas.target(tenant_key))

    def upgrade(self, tenant_key: str) -> bool:
        schemas = self._schemas
        target = schemas.target(tenant_key)
        with schemas.locked(target) as conn:
            if not schemas.exists(conn, target):
                return False
            _create_tables(conn, target)
            _grant_sign_in(conn, target)
        return True

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        return self._schemas.release(tenant_key, tenant_id)

    def list_existing(self) -> set[str]:
        return self._schemas.list_existing()


def _create_tables(conn: Connection, target: TenantSchema) -> None:
    defer(
        conn,
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (tenant_key text PRIMARY KEY, plan text NOT NULL,"
            " max_users integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        ).format(target.table(META_TABLE)),
    )
    defer(
        conn,
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " email text NOT NULL UNIQUE, role text NOT NULL, status text NOT NULL,"
            " invitation_token text, created_at timestamptz NOT NULL DEFAULT now(),"
            " invitation_expires_at timestamptz, invitation_redeemed_at timestamptz,"
            " password_hash text)"
        ).format(target.table(USERS_TABLE)),
    )
    users = target.table(USERS_TABLE)
    for column, kind in SIGN_IN_COLUMNS.items():  # a store of version 1 lacks them
        defer(
            conn,
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                users, sql.Identifier(column), sql.SQL(kind)
            ),
        )
    defer(
        conn,
        sql.SQL(
            "UPDATE {} SET invitation_expires_at = %s"
            " WHERE status = %s AND invitation_expires_at IS NULL"
        ).format(users),
        [invitation_expiry(), PENDING_INVITATION],
    )


def _grant_sign_in(conn: Connection, target: TenantSchema) -> None:
    """The identity role reads its users and may write only what redeeming an invitation writes
    (the workload signs its admin in as this role): no insert, no delete, no other column, no
    sequence. The schema's default privileges would give it all of them."""
    users, role = target.table(USERS_TABLE), target.ident
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in REDEMPTION_COLUMNS)
    statements = (
        sql.SQL("REVOKE ALL ON {} FROM {}").format(users, role),
        sql.SQL("GRANT SELECT ON {} TO {}").format(users, role),
        sql.SQL("GRANT UPDATE ({}) ON {} TO {}").format(columns, users, role),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(target.ident, role),
    )
    for statement in statements:
        defer(conn, statement)


def _seed_admin(conn: Connection, target: TenantSchema, email: str) -> None:
    """Insert the first admin only if there is none: the token is made once, never replaced."""
    defer(
        conn,
        sql.SQL(
            "INSERT INTO {users} (email, role, status, invitation_token, invitation_expires_at)"
            " SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM {users} WHERE role = %s)"
        ).format(users=target.table(USERS_TABLE)),
        [
            email,
            ADMIN_ROLE,
            PENDING_INVITATION,
            secrets.token_urlsafe(INVITATION_TOKEN_BYTES),
            invitation_expiry(),
            ADMIN_ROLE,
        ],
    )


def _first_admin(conn: Connection, target: TenantSchema) -> Invitation:
    rows = run(
        conn,
        sql.SQL(
            "SELECT email, invitation_token, status, invitation_expires_at FROM {}"
            " WHERE role = %s ORDER BY id LIMIT 1"
        ).format(target.table(USERS_TABLE)),
        [ADMIN_ROLE],
    )
    if not rows:
        raise NotFound(f"identity schema {target.name!r} has no admin")
    email, token, status, expires_at = rows[0]
    return Invitation(email=email, token=token, status=status, expires_at=expires_at)
