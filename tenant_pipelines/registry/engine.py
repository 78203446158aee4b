"""Engines for the control-plane database, configured so that many processes can share it.

On SQLite each connection comes from `support.sqlite` (busy timeout, WAL), and a transaction
takes the write lock when it begins (`BEGIN IMMEDIATE`) unless the connection only reads.
"""

import os
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from tenant_pipelines.support import sqlite
from tenant_pipelines.support.db_url import normalize_url

# Execution option marking a connection whose transactions only read: those need no write lock.
READ_ONLY_OPTION = "tenant_pipelines_read_only"

_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _drop_inherited_connections() -> None:
    # A forked child must not use (or close) the parent's pooled connections: open its own.
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for `url`; SQLite files get their directory, WAL and up-front write locks."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed.database or "")
        kwargs["creator"] = lambda: sqlite.connect(path, "rwc", wal=True, any_thread=True)
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "begin", _begin_sqlite)
    _ENGINES.add(engine)
    return engine


def _sqlite_path(database: str) -> Path:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ValueError(f"the registry needs a SQLite file, not {database or 'memory'!r}")
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _begin_sqlite(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
