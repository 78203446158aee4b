"""The edge's routes in the registry, for a platform with several hosts.

A worker host's runs write them (`resources.traffic.RegistryRoutes`); the control host's edge
serves from them. On PostgreSQL each write also sends a notice on `ROUTES_CHANNEL` naming the
tenant key, in the same transaction: the edge's follower (`localstack.route_follower`) hears it
when the change commits, and not before, so the edge never serves a route the table does not
hold. Whose route it is (`tenant_id`) is the caller's check: these are the table's own rules only.
"""

from typing import Any

from sqlalchemy import Connection, delete, select, text

from tenant_pipelines.domain.routes import CLOSED, OPEN, Route
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import insert_if_absent, now
from tenant_pipelines.registry.schema import routes

ROUTES_CHANNEL = "tenant_routes"
_COLUMNS = [
    routes.c.host,
    routes.c.tenant_key,
    routes.c.state,
    routes.c.updated_at,
    routes.c.tenant_id,
    routes.c.worker_host,
]


def _route(row: Any) -> Route:
    host, key, state, updated_at, tenant_id, worker_host = row
    return Route(host, key, state, updated_at.isoformat(), tenant_id, worker_host)


def _notify(conn: Connection, tenant_key: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_notify(:channel, :key)"), {"channel": ROUTES_CHANNEL, "key": tenant_key}
        )


class RouteStore:
    """The routes table: `registry.routes`. Implements `domain.routes.RouteSource`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_closed(
        self, host: str, tenant_key: str, tenant_id: str, worker_host: str | None
    ) -> Route | None:
        """The route under `tenant_key`, inserted closed unless there is one (which keeps its
        state); None if `host` is routed under another key."""
        values = {
            "host": host,
            "tenant_key": tenant_key,
            "state": CLOSED,
            "updated_at": now(),
            "tenant_id": tenant_id,
            "worker_host": worker_host,
        }
        with self._db.write() as conn:
            if insert_if_absent(conn, routes, values):
                _notify(conn, tenant_key)
            return self._of(conn, tenant_key)

    def open(self, tenant_key: str, tenant_id: str) -> Route | None:
        """Open the route made for `tenant_id`; None if there is none."""
        key = (routes.c.tenant_key == tenant_key) & (routes.c.tenant_id == tenant_id)
        with self._db.write() as conn:
            changed = conn.execute(
                routes.update()
                .where(key & (routes.c.state != OPEN))
                .values(state=OPEN, updated_at=now())
            ).rowcount
            if changed:
                _notify(conn, tenant_key)
            return self._of(conn, tenant_key)

    def remove(self, tenant_key: str, tenant_id: str | None) -> bool:
        """Delete the route (only if made for `tenant_id`, unless None); True if one was."""
        key = routes.c.tenant_key == tenant_key
        if tenant_id is not None:
            key &= routes.c.tenant_id == tenant_id
        with self._db.write() as conn:
            deleted = conn.execute(delete(routes).where(key)).rowcount
            if deleted:
                _notify(conn, tenant_key)
            return bool(deleted)

    def route_of(self, tenant_key: str) -> Route | None:
        with self._db.read() as conn:
            return self._of(conn, tenant_key)

    def lookup(self, host: str) -> Route | None:
        with self._db.read() as conn:
            row = conn.execute(select(*_COLUMNS).where(routes.c.host == host)).first()
        return None if row is None else _route(row)

    def all_routes(self) -> list[Route]:
        with self._db.read() as conn:
            rows = conn.execute(select(*_COLUMNS).order_by(routes.c.host)).all()
        return [_route(row) for row in rows]

    @staticmethod
    def _of(conn: Connection, tenant_key: str) -> Route | None:
        row = conn.execute(select(*_COLUMNS).where(routes.c.tenant_key == tenant_key)).first()
        return None if row is None else _route(row)
