"""Pooled PostgreSQL engines: connections kept per process, safe across a fork, and checked
before use without a round trip.

A connection kept in a pool can have been closed by the server (a restart, an administrator's
`pg_terminate_backend`, an idle timeout). SQLAlchemy's pre-ping finds that out with a `SELECT 1`
before every use: on a busy platform a third of all statements (docs/performance.md). A closed
connection announces itself instead: the server sends its goodbye and closes the socket, so an
idle connection whose socket has something to read is suspect, and only that one is pinged (and
replaced when the ping fails). A healthy idle connection has nothing to read and costs a
`select()` call.

A forked child that used (or closed) a pooled connection it inherited would talk on its parent's
socket. After a fork, every engine made here gets a new, empty pool in the child (SQLAlchemy's
`dispose(close=False)`: the parent's connections are left alone), so the child opens its own.
"""

import os
import select
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL

_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def fork_safe(engine: Engine) -> Engine:
    """`engine`, whose pool a forked child replaces with its own."""
    _ENGINES.add(engine)
    return engine


def _drop_inherited_connections() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def pooled_pg_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A PostgreSQL engine whose kept connections are checked as above, and fork-safe.
    `kwargs` go to `create_engine` (pool sizes, isolation level, connect arguments)."""
    # No hstore columns here: skip the type lookup SQLAlchemy runs on every new connection.
    engine = create_engine(url, use_native_hstore=False, **kwargs)
    event.listen(engine, "checkout", _alive_or_replaced)
    return fork_safe(engine)


def _alive_or_replaced(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    if not _has_something_to_read(dbapi_connection):
        return
    cursor = dbapi_connection.cursor()
    try:  # a notice can be waiting too: the ping reads it, and the connection stays
        cursor.execute("SELECT 1")
    except Exception as error:  # the pool retries the checkout with a new connection
        raise exc.DisconnectionError(str(error).strip()) from error
    finally:
        cursor.close()


def _has_something_to_read(dbapi_connection: Any) -> bool:
    if dbapi_connection.closed:
        return True
    readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    return bool(readable)
