"""Engines for the control-plane database, configured so that many processes can share it.

Dagster run workers, sensors and the CLI all write the registry at once. On SQLite that only works
without "database is locked" errors if every writer takes the write lock when its transaction
begins (`BEGIN IMMEDIATE`): a deferred transaction that later upgrades to a writer can deadlock
with another and fail at once, whatever the busy timeout.
"""

import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_S = 10.0
# Execution option marking a connection whose transactions only read: those need no write lock.
READ_ONLY_OPTION = "tenant_pipelines_read_only"

_URL_SCHEMES = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2"}
_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _drop_inherited_connections() -> None:
    # A forked child must not use (or close) the parent's pooled connections: open its own.
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def normalize_url(url: str) -> URL:
    """Map the plain URLs users pass (`postgres://`, `postgresql://`) onto psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    driver = _URL_SCHEMES.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def libpq_url(url: str) -> str:
    """The same server as a libpq URI (`postgresql://...`), for psycopg2 or psql directly."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.drivername}://")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for `url`; SQLite files get their directory, WAL and up-front write locks."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, **kwargs)
        _ENGINES.add(engine)
        return engine
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    _configure_sqlite(engine)
    _ENGINES.add(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide when transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL (persistent), retrying while another connection is switching it.

    SQLite answers "database is locked" at once, without consulting the busy handler, when two
    connections convert a new file at the same moment: every process opening a fresh registry
    together would otherwise fail.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
