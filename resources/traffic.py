"""Traffic boundary: whether the outside world reaches a tenant.

Locally it is a route in the edge's table, keyed by host, and the gateway (Caddy) serves what the
table says: every write here is followed by writing that route's markers, which the gateway reads
on each request (`resources.gateway.publish`). Allocate adds the route closed (the gateway
answers 503), so nothing is served before the workload passes readiness; Mark active opens
it; release removes it (404). The table is shared by many processes (run workers write, the API
server reads it for the gateway's certificate questions), hence WAL mode (readers never wait for
the writer), a busy timeout, and writers that take the write lock up front (`BEGIN IMMEDIATE`):
`support.sqlite`.

On a platform with several hosts the routes are in the registry's database instead
(`RegistryRoutes`): the control host's edge serves every tenant from there, whatever its host, and
the worker host's own ingress relays the edge's requests to its workloads (`resources.gateway`).

Each route records the tenant id it was made for: `ensure` and `open` refuse a route under the key
that another tenant id made, and `release` given a tenant id leaves it. A table from before routes
recorded it gets the column on its first write; its routes are claimed by the tenant that next
ensures them.
"""

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from resources import gateway
from resources.route_table import (  # noqa: F401 - the table's names, where they always were
    CLOSED,
    COLUMNS,
    OPEN,
    OWNER_COLUMN,
    SCHEMA,
    Route,
    lookup_route,
    reading,
    routes_db_path,
)
from resources.storage import utc_now
from tenant_pipelines.domain.errors import PermanentError, TenantPipelinesError
from tenant_pipelines.domain.handles import Handle, ResourceKind, check_made_for, may_act_on
from tenant_pipelines.domain.routes import RouteSource
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support import sqlite as sqlite_files


@dataclass(frozen=True, kw_only=True)
class LocalEdgeRoutes:
    """Routes in `<data_dir>/edge/routes.db`, read by the local edge gateway."""

    data_dir: str
    domain: str

    @property
    def kind(self) -> str:
        return ResourceKind.ROUTE.value

    @property
    def _path(self) -> Path:
        return routes_db_path(self.data_dir)

    @contextlib.contextmanager
    def _write(self, tenant_key: str) -> Iterator[sqlite3.Connection]:
        """A transaction on the table; once committed, the gateway serves what it holds for
        `tenant_key`."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite_files.transaction(self._path, "rwc", wal=True) as conn:
            conn.execute(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(routes)")}
            if OWNER_COLUMN not in columns:  # a table from before routes recorded their tenant
                conn.execute(f"ALTER TABLE routes ADD COLUMN {OWNER_COLUMN} TEXT")
            yield conn
        gateway.publish(self.data_dir, tenant_key)

    def _add_closed(self, conn: sqlite3.Connection, tenant: TenantSpec) -> Route:
        """Insert the route closed unless it exists; an existing route keeps its state. One made
        for another tenant id raises OwnedByAnotherTenant (the transaction changes nothing)."""
        host = tenant.host(self.domain)
        conn.execute(
            f"INSERT INTO routes ({ROUTE_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (host, tenant.key, CLOSED, utc_now(), tenant.tenant_id),
        )
        route = _route_of(conn, tenant.key)
        if route is None:
            raise PermanentError(f"host {host!r} is already routed to another tenant")
        check_made_for(route.tenant_id, tenant.tenant_id, self.kind, route.host, tenant.key)
        if route.tenant_id is None:
            conn.execute(
                f"UPDATE routes SET {OWNER_COLUMN} = ? WHERE tenant_key = ?",
                (tenant.tenant_id, tenant.key),
            )
        return route

    def _handle(self, route: Route) -> Handle:
        return Handle(
            kind=self.kind,
            tenant_key=route.tenant_key,
            name=route.host,
            details={"state": route.state},
        )

    def ensure(self, tenant: TenantSpec) -> Handle:
        with self._write(tenant.key) as conn:
            route = self._add_closed(conn, tenant)
        return self._handle(route)

    def open(self, tenant: TenantSpec) -> Handle:
        with self._write(tenant.key) as conn:
            route = self._add_closed(conn, tenant)
            if not route.is_open:
                now = utc_now()
                conn.execute(
                    "UPDATE routes SET state = ?, updated_at = ? WHERE tenant_key = ?",
                    (OPEN, now, tenant.key),
                )
                route = Route(route.host, route.tenant_key, OPEN, now, tenant.tenant_id)
        return self._handle(route)

    def is_open(self, tenant_key: str) -> bool:
        if not self._path.exists():
            return False
        with reading(self._path) as conn:
            row = conn.execute(
                "SELECT state FROM routes WHERE tenant_key = ?", (tenant_key,)
            ).fetchone()
        return row is not None and row[0] == OPEN

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        if not self._path.exists():
            return False
        with self._write(tenant_key) as conn:
            route = _route_of(conn, tenant_key)
            if route is None or not may_act_on(route.tenant_id, tenant_id):
                return False
            deleted = conn.execute("DELETE FROM routes WHERE tenant_key = ?", (tenant_key,))
            return deleted.rowcount > 0

    def list_existing(self) -> set[str]:
        if not self._path.exists():
            return set()
        with reading(self._path) as conn:
            return {key for (key,) in conn.execute("SELECT tenant_key FROM routes")}


# The writer's view of a route: the edge's columns and whom it was made for.
ROUTE_COLUMNS = f"{COLUMNS}, {OWNER_COLUMN}"


def _route_of(conn: sqlite3.Connection, tenant_key: str) -> Route | None:
    query = f"SELECT {ROUTE_COLUMNS} FROM routes WHERE tenant_key = ?"
    row = conn.execute(query, (tenant_key,)).fetchone()
    return Route(*row) if row else None


class RouteRecords(RouteSource, Protocol):
    """The registry's routes table (`registry.routes.RouteStore`), as this boundary writes it."""

    def add_closed(
        self, host: str, tenant_key: str, tenant_id: str, worker_host: str | None
    ) -> Route | None: ...

    def open(self, tenant_key: str, tenant_id: str) -> Route | None: ...

    def remove(self, tenant_key: str, tenant_id: str | None) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class RegistryRoutes:
    """Routes in the registry's database, for a platform with several hosts: written by the
    runs of the tenant's own host (`host_name`), which records itself as where the workload is.
    After each write, this host's ingress markers follow the table (`gateway.publish`), as the
    control host's edge does on the table's notice."""

    records: RouteRecords
    data_dir: str
    domain: str
    host_name: str

    @property
    def kind(self) -> str:
        return ResourceKind.ROUTE.value

    def _handle(self, route: Route) -> Handle:
        details = {"state": route.state}
        return Handle(kind=self.kind, tenant_key=route.tenant_key, name=route.host, details=details)

    def _add_closed(self, tenant: TenantSpec) -> Route:
        host = tenant.host(self.domain)
        route = self.records.add_closed(host, tenant.key, tenant.tenant_id, self.host_name)
        if route is None:
            raise PermanentError(f"host {host!r} is already routed to another tenant")
        check_made_for(route.tenant_id, tenant.tenant_id, self.kind, route.host, tenant.key)
        return route

    def ensure(self, tenant: TenantSpec) -> Handle:
        route = self._add_closed(tenant)
        gateway.publish(self.data_dir, tenant.key, self.records)
        return self._handle(route)

    def open(self, tenant: TenantSpec) -> Handle:
        route = self._add_closed(tenant)
        if not route.is_open:
            opened = self.records.open(tenant.key, tenant.tenant_id)
            if opened is None:  # released meanwhile: the next attempt makes it again
                raise TenantPipelinesError(f"the route of {tenant.key!r} went while it was opened")
            route = opened
        gateway.publish(self.data_dir, tenant.key, self.records)
        return self._handle(route)

    def is_open(self, tenant_key: str) -> bool:
        route = self.records.route_of(tenant_key)
        return route is not None and route.is_open

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        removed = self.records.remove(tenant_key, tenant_id)
        gateway.publish(self.data_dir, tenant_key, self.records)
        return removed

    def list_existing(self) -> set[str]:
        return {route.tenant_key for route in self.records.all_routes()}
