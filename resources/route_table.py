"""The edge's route table: `<data_dir>/edge/routes.db`, written by `resources.traffic`, read by
the edge gateway on every request. Kept apart from the resource (and so from Dagster) because the
edge imports it: a restarted edge is serving again sooner.
"""

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tenant_pipelines.support import sqlite as sqlite_files

CLOSED = "closed"
OPEN = "open"
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


@dataclass(frozen=True)
class Route:
    """One row of the route table, as the edge sees it."""

    host: str
    tenant_key: str
    state: str
    updated_at: str
    tenant_id: str | None = None  # read by the traffic boundary, not by the edge

    @property
    def is_open(self) -> bool:
        return self.state == OPEN


def routes_db_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "edge" / "routes.db"


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite_files.connect(path, "rw")
    try:
        yield conn
    finally:
        conn.close()


def lookup_route(data_dir: str | Path, host: str) -> Route | None:
    """The route for a Host (without port), or None; never creates the table (the edge reads).

    A normal open of a WAL database creates its shared-memory file, which fails on a full disk:
    then the table is read as the main file holds it, so healthy tenants are still served.
    Raises sqlite3.Error if neither read works.
    """
    path = routes_db_path(data_dir)
    if not path.exists():
        return None
    query = f"SELECT {COLUMNS} FROM routes WHERE host = ?"
    try:
        with reading(path) as conn:
            row = conn.execute(query, (host.lower(),)).fetchone()
    except sqlite3.OperationalError:
        with contextlib.closing(sqlite_files.connect_snapshot(path)) as snapshot:
            row = snapshot.execute(query, (host.lower(),)).fetchone()
    return Route(*row) if row else None
