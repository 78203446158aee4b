"""The edge's route table: `<data_dir>/edge/routes.db`, written by `resources.traffic`; the
record the gateway's configuration is made from (`resources.gateway`), and what the platform's
certificate `ask` answers from. Kept apart from the resource (and so from Dagster): the API
server reads it on every TLS handshake the gateway asks about.
"""

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tenant_pipelines.domain.routes import CLOSED, OPEN, Route
from tenant_pipelines.support import sqlite as sqlite_files

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS routes ("
    " host TEXT PRIMARY KEY,"
    " tenant_key TEXT NOT NULL UNIQUE,"
    f" state TEXT NOT NULL CHECK (state IN ('{CLOSED}', '{OPEN}')),"
    " updated_at TEXT NOT NULL,"
    " tenant_id TEXT)"  # whom the route was made for; NULL: made before routes recorded it
)
# What the edge reads on every request; a table from before `tenant_id` reads the same.
COLUMNS = "host, tenant_key, state, updated_at"
OWNER_COLUMN = "tenant_id"


def edge_dir(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / "edge"


def routes_db_path(data_dir: str | Path) -> Path:
    return edge_dir(data_dir) / "routes.db"


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite_files.connect(path, "rw")
    try:
        yield conn
    finally:
        conn.close()


def _rows(data_dir: str | Path, query: str, params: tuple[str, ...] = ()) -> list[tuple]:
    """The rows `query` reads; none before the table exists (readers never create it).

    A normal open of a WAL database creates its shared-memory file, which fails on a full disk:
    then the table is read as the main file holds it, so healthy tenants are still served.
    Raises sqlite3.Error if neither read works.
    """
    path = routes_db_path(data_dir)
    if not path.exists():
        return []
    try:
        with reading(path) as conn:
            return conn.execute(query, params).fetchall()
    except sqlite3.OperationalError:
        with contextlib.closing(sqlite_files.connect_snapshot(path)) as snapshot:
            return snapshot.execute(query, params).fetchall()


def lookup_route(data_dir: str | Path, host: str) -> Route | None:
    """The route for a Host (without port), or None."""
    rows = _rows(data_dir, f"SELECT {COLUMNS} FROM routes WHERE host = ?", (host.lower(),))
    return Route(*rows[0]) if rows else None


def all_routes(data_dir: str | Path) -> list[Route]:
    """Every route, by host."""
    return [Route(*row) for row in _rows(data_dir, f"SELECT {COLUMNS} FROM routes ORDER BY host")]


def route_of(data_dir: str | Path, tenant_key: str) -> Route | None:
    """The route of a tenant key, or None."""
    query = f"SELECT {COLUMNS} FROM routes WHERE tenant_key = ?"
    rows = _rows(data_dir, query, (tenant_key,))
    return Route(*rows[0]) if rows else None


@dataclass(frozen=True)
class LocalRouteTable:
    """The edge's table on this host, as a source of routes for the gateway and its `ask`."""

    data_dir: str | Path

    def route_of(self, tenant_key: str) -> Route | None:
        return route_of(self.data_dir, tenant_key)

    def lookup(self, host: str) -> Route | None:
        return lookup_route(self.data_dir, host)

    def all_routes(self) -> list[Route]:
        return all_routes(self.data_dir)
