"""Engines for the control-plane database, configured so that many processes can share it.

On SQLite each connection comes from `support.sqlite` (busy timeout, WAL), and a transaction
takes the write lock when it begins (`BEGIN IMMEDIATE`) unless the connection only reads.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from tenant_pipelines.domain.errors import RegistryUnavailable
from tenant_pipelines.support import sqlite
from tenant_pipelines.support.db_url import normalize_url, store_name
from tenant_pipelines.support.pooled_engines import fork_safe, pooled_pg_engine

# Execution option marking a connection whose transactions only read: those need no write lock.
READ_ONLY_OPTION = "tenant_pipelines_read_only"

PG_CONNECT_TIMEOUT_S = 10
PG_POOL_SIZE = 2  # connections a process keeps (docs/performance.md, "PostgreSQL connections")
PG_POOL_OVERFLOW = 4  # more while threads query at once; beyond, a thread waits for one


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """An engine for `url`; SQLite files get their directory, WAL and up-front write locks."""
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if parsed.get_backend_name() == "postgresql":
        if pooled:
            kwargs.update(pool_size=PG_POOL_SIZE, max_overflow=PG_POOL_OVERFLOW)
        # A server that does not answer is reported (RegistryUnavailable), not waited on forever.
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return pooled_pg_engine(parsed, **kwargs)
    path = _sqlite_path(parsed.database or "")
    kwargs["creator"] = lambda: sqlite.connect(path, "rwc", wal=True, any_thread=True)
    engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
    event.listen(engine, "begin", _begin_sqlite)
    return fork_safe(engine)  # a forked child opens its own connections


def _sqlite_path(database: str) -> Path:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ValueError(f"the registry needs a SQLite file, not {database or 'memory'!r}")
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _begin_sqlite(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# Errors that say the store itself is out of reach or broken, not that a statement was refused:
# constraint violations (IntegrityError) and our own SQL mistakes (ProgrammingError) stay as
# they are, since callers act on the first and the second is a bug to see in full.
_NOT_THE_STORE = (exc.IntegrityError, exc.ProgrammingError, exc.DataError, exc.NotSupportedError)


@contextmanager
def store_errors(url: str | URL) -> Iterator[None]:
    """Raise `RegistryUnavailable` (naming the store and the driver's first line) for a database
    that cannot be reached, read or written: "file is not a database", "database or disk is
    full", "unable to open database file", "connection refused"."""
    try:
        yield
    except exc.DBAPIError as error:
        if isinstance(error, _NOT_THE_STORE):
            raise
        name = store_name(url if isinstance(url, str) else url.render_as_string())
        raise RegistryUnavailable(name, _first_line(error.orig or error)) from error
    except sqlite3.Error as error:  # raised by the connection factory, before SQLAlchemy wraps
        raise RegistryUnavailable(store_name(str(url)), _first_line(error)) from error


class Database:
    """The engine every kind of record shares, and the two kinds of transaction they run: one
    that writes (on SQLite it takes the write lock as it begins) and one that only reads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with store_errors(self.engine.url), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with store_errors(self.engine.url), self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            with _no_transaction_on_postgres(conn), conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _no_transaction_on_postgres(conn: Connection) -> Iterator[None]:
    """A read on PostgreSQL runs without a transaction: under READ COMMITTED each statement sees
    what was committed when it started, inside a transaction or not, and BEGIN and COMMIT were
    two of a one-query read's three round trips. Switched with the driver's own `autocommit`
    (no statement sent), not SQLAlchemy's isolation level, which sends a SET as the connection
    goes back to the pool. SQLite keeps its read transaction: a consistent snapshot there."""
    if conn.dialect.name != "postgresql":
        yield
        return
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None, "a checked-out connection has its driver connection"
    dbapi.autocommit = True
    try:
        yield
    finally:
        if not dbapi.closed:
            dbapi.autocommit = False


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
