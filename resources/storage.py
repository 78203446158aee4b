"""Tenant storage: one database per tenant.

The local backend gives each tenant a real SQLite file. The file is built under a temporary name
and linked into place, so a crash never leaves a half-built database under the tenant's name, and
two racing ensures end with exactly one database (the loser adopts the winner's). The helpers for
that are shared with the identity store, which keeps per-tenant files the same way.

Each database records the tenant id it was made for (`tenant_meta.tenant_id`): a database under
the key that another tenant id made is neither adopted by `ensure` nor removed by `release`.

The PostgreSQL backend gives each tenant a schema and a role instead (see `resources.pg_tenant`).
"""

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg2 import sql
from sqlalchemy.engine import Connection

from resources.pg_tenant import PgTenantSchemas, TenantSchema, defer, run
from tenant_pipelines.domain.handles import Handle, ResourceKind, check_made_for, may_act_on
from tenant_pipelines.domain.plans import get_plan
from tenant_pipelines.domain.tenant import TenantSpec, check_tenant_key, is_tenant_key
from tenant_pipelines.support import sqlite as sqlite_files

DB_SUFFIX = ".db"
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
PG_DATA_SUFFIX = "data"
META_TABLE = "tenant_meta"
OWNER_COLUMN = "tenant_id"  # of META_TABLE: the tenant id the database was made for


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def tenant_db_path(directory: Path, tenant_key: str) -> Path:
    """Where a tenant's database lives; keys become file names, so only tenant keys pass."""
    return directory / f"{check_tenant_key(tenant_key)}{DB_SUFFIX}"


@contextlib.contextmanager
def open_db(path: Path, create: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction on a tenant's database; without `create` a missing file is an error."""
    with sqlite_files.transaction(path, "rwc" if create else "rw") as conn:
        yield conn


def create_db_atomically(path: Path, build: Callable[[sqlite3.Connection], None]) -> bool:
    """Build a database under a temporary name, then link it into place.

    `os.link` fails if the target exists, so the first complete database wins and is never
    overwritten. Returns True if this call created the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open_db(tmp, create=True) as conn:
            build(conn)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        _remove_quietly(tmp)
        for suffix in SIDECAR_SUFFIXES:
            _remove_quietly(Path(f"{tmp}{suffix}"))


def remove_db(path: Path) -> bool:
    """Delete a database, its sidecars and temp debris from crashed builds; True if it existed."""
    existed = _remove_quietly(path)
    for suffix in SIDECAR_SUFFIXES:
        _remove_quietly(Path(f"{path}{suffix}"))
    for debris in path.parent.glob(f".{path.name}.*.tmp*"):
        _remove_quietly(debris)
    return existed


def made_for(conn: sqlite3.Connection) -> str | None:
    """The tenant id a tenant database was made for (`tenant_meta.tenant_id`); None for one made
    before databases recorded it."""
    if not _has_owner_column(conn):
        return None
    row = conn.execute(f"SELECT {OWNER_COLUMN} FROM {META_TABLE} LIMIT 1").fetchone()
    return None if row is None else row[0]


def claim_db(path: Path, tenant: TenantSpec, kind: str) -> None:
    """Refuse a tenant database made for another tenant id (`OwnedByAnotherTenant`, nothing
    changed); one made before databases recorded their tenant is claimed by this tenant."""
    with open_db(path) as conn:
        owner = made_for(conn)
        check_made_for(owner, tenant.tenant_id, kind, str(path), tenant.key)
        if owner is None:
            if not _has_owner_column(conn):
                conn.execute(f"ALTER TABLE {META_TABLE} ADD COLUMN {OWNER_COLUMN} TEXT")
            conn.execute(f"UPDATE {META_TABLE} SET {OWNER_COLUMN} = ?", (tenant.tenant_id,))


def _has_owner_column(conn: sqlite3.Connection) -> bool:
    return any(row[1] == OWNER_COLUMN for row in conn.execute(f"PRAGMA table_info({META_TABLE})"))


def release_db(path: Path, tenant_id: str | None) -> bool:
    """Remove a tenant database unless it was made for another tenant id than `tenant_id`."""
    if tenant_id is not None and path.exists():
        try:
            with sqlite_files.transaction(path, "ro") as conn:
                owner = made_for(conn)
        except sqlite3.DatabaseError:
            owner = None  # unreadable: nothing says whose it is, and it is in the way
        if not may_act_on(owner, tenant_id):
            return False
    return remove_db(path)


def keys_in(directory: Path) -> set[str]:
    """Tenant keys of the complete databases in a directory (temp files are hidden by the dot)."""
    if not directory.is_dir():
        return set()
    return {
        p.name.removesuffix(DB_SUFFIX)
        for p in directory.glob(f"*{DB_SUFFIX}")
        if is_tenant_key(p.name.removesuffix(DB_SUFFIX))
    }


def _remove_quietly(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    """Make the new name durable, not just the file's contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, kw_only=True)
class LocalSQLiteStorage:
    """A SQLite database per tenant under `<data_dir>/storage/`."""

    data_dir: str

    @property
    def kind(self) -> str:
        return ResourceKind.STORAGE.value

    @property
    def _dir(self) -> Path:
        return Path(self.data_dir) / "storage"

    def path_for(self, tenant_key: str) -> Path:
        return tenant_db_path(self._dir, tenant_key)

    def ensure(self, tenant: TenantSpec) -> Handle:
        path = self.path_for(tenant.key)
        quota_mb = get_plan(tenant.plan).storage_quota_mb

        def build(conn: sqlite3.Connection) -> None:
            conn.execute(
                "CREATE TABLE tenant_meta (tenant_key TEXT PRIMARY KEY, plan TEXT NOT NULL,"
                " quota_mb INTEGER NOT NULL, created_at TEXT NOT NULL, tenant_id TEXT)"
            )
            conn.execute(
                "INSERT INTO tenant_meta (tenant_key, plan, quota_mb, created_at, tenant_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (tenant.key, tenant.plan, quota_mb, utc_now(), tenant.tenant_id),
            )
            conn.execute("PRAGMA user_version = 2")

        create_db_atomically(path, build)
        claim_db(path, tenant, self.kind)
        return self._handle(tenant.key, path)

    def _handle(self, tenant_key: str, path: Path) -> Handle:
        """Describe the database as it is on disk, so a second ensure reports the same thing."""
        with open_db(path) as conn:
            (quota_mb,) = conn.execute("SELECT quota_mb FROM tenant_meta").fetchone()
        return Handle(
            kind=self.kind, tenant_key=tenant_key, name=str(path), details={"quota_mb": quota_mb}
        )

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        return release_db(self.path_for(tenant_key), tenant_id)

    def list_existing(self) -> set[str]:
        return keys_in(self._dir)


@dataclass(frozen=True, kw_only=True)
class PostgresSchemaStorage:
    """A schema `t_<slug>_<org>_data` and a role of the same name per tenant, on `admin_url`.

    `tenant_meta` (plan, quota) is the control plane's record: the tenant role may read it only.
    `admin_url` holds credentials: it stays out of the repr.
    """

    admin_url: str = field(repr=False)
    deployment: str = ""  # prefixes the names (TENANT_DEPLOYMENT): roles are cluster-wide

    @property
    def kind(self) -> str:
        return ResourceKind.STORAGE.value

    @property
    def _schemas(self) -> PgTenantSchemas:
        return PgTenantSchemas(self.admin_url, self.kind, PG_DATA_SUFFIX, self.deployment)

    def schema_name(self, tenant_key: str) -> str:
        return self._schemas.target(tenant_key).name

    def ensure(self, tenant: TenantSpec) -> Handle:
        quota_mb = get_plan(tenant.plan).storage_quota_mb

        def build(conn: Connection, target: TenantSchema) -> dict[str, Any]:
            meta = target.table(META_TABLE)
            defer(
                conn,
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (tenant_key text PRIMARY KEY,"
                    " plan text NOT NULL, quota_mb integer NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT now())"
                ).format(meta),
            )
            defer(
                conn,
                sql.SQL(
                    "INSERT INTO {} (tenant_key, plan, quota_mb) VALUES (%s, %s, %s)"
                    " ON CONFLICT (tenant_key) DO NOTHING"
                ).format(meta),
                [tenant.key, tenant.plan, quota_mb],
            )
            # Report what is stored, so a second ensure describes the same thing as the first.
            [(stored,)] = run(conn, sql.SQL("SELECT quota_mb FROM {}").format(meta))
            return {"quota_mb": stored}

        return self._schemas.ensure(tenant, build, read_only=(META_TABLE,))

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        return self._schemas.release(tenant_key, tenant_id)

    def list_existing(self) -> set[str]:
        return self._schemas.list_existing()
