"""Dagster's PostgreSQL storage, through one small connection pool per process.

dagster-postgres opens a new connection for every statement (SQLAlchemy's NullPool) and closes
it after: a provisioning run's worker made about a hundred connections (one per event it stored),
and the daemon about fifteen a second while idle. On PostgreSQL each connection is a server
process to start and a catalog to warm; measured here, that churn is where the PostgreSQL
configuration lost to the embedded one (docs/performance.md). The three storages of a process
(runs, event log, schedules) share one pooled engine per database URL instead, which also bounds
what a process can hold: `POOL_SIZE` kept, `POOL_OVERFLOW` more while threads query at once,
and beyond that a thread waits for one (docs/performance.md, "PostgreSQL connections").

A kept connection can die (PostgreSQL restarted, an idle timeout): one the server closed is found
at checkout and replaced (`support.pooled_engines`), so the next query works as soon as the
server is back. A forked child never uses its parent's connections: it starts its own pool.

Dagster also asks the catalog again and again about schema that only a migration adds (does this
table, this column exist?): each answer is a catalog query of a few milliseconds, asked on every
run. Here a true answer is kept for the life of the process (migrations add, never remove), and a
run worker starts with the answers its launcher's process had (`seen_schema`), so a run asks the
catalog nothing its launcher knew. Tables, schema and configuration are dagster-postgres's own: an
instance can switch to or from this class.

dagster-postgres sends a `NOTIFY` after every event it stores, kept "to support version skew"
with Dagster releases that watched the event log by listening; this one polls, and nothing else
listens. Here an event is stored as Dagster's other SQL storages store it, without it: one round
trip fewer per event, and no commit-time lock on the server's notification queue.
"""

import hashlib
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Self

from dagster import EventLogEntry
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.auth import register_do_connect_hook
from dagster_postgres.utils import (
    get_token_provider_from_config,
    pg_url_from_config,
    set_pg_statement_timeout,
)
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection

from tenant_pipelines.runtime.dagster_private import (
    ASSET_KEY_INDEX_COLS,
    ConfigurableClassData,
    SqlEventLogStorage,
)
from tenant_pipelines.support.pooled_engines import pooled_pg_engine

POOL_SIZE = 2  # connections a process keeps per database (run workers use one)
POOL_OVERFLOW = 3  # opened while more threads query at once, closed when returned
POOL_RECYCLE_S = 3600  # a kept connection is replaced after an hour

_engines: dict[str, Engine] = {}
_timed_out: set[str] = set()  # URLs whose engine gives its connections a statement timeout
_engines_lock = threading.Lock()
# (digest of the URL, what): schema a migration added, seen in this process or its launcher's.
_schema_seen: set[tuple[str, str]] = set()


def shared_engine(url: str, token_provider: Any) -> Engine:
    """This process's pooled engine for `url`."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = pooled_pg_engine(
                url,
                isolation_level="AUTOCOMMIT",  # as dagster-postgres: transactions are explicit
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
                pool_recycle=POOL_RECYCLE_S,
            )
            if token_provider is not None:  # as dagster-postgres: a token for each connection
                register_do_connect_hook(engine, token_provider)
            _engines[url] = engine
        return engine


def limit_statements(url: str, engine: Engine, millis: int) -> None:
    """Give every connection of the process's engine a statement timeout (the webserver's: a
    long-lived reader), once; connections already open are replaced."""
    with _engines_lock:
        if url in _timed_out:
            return
        _timed_out.add(url)
        event.listen(engine, "connect", _statement_timeout(millis))
        engine.dispose()  # checked-out connections are closed when returned


def _statement_timeout(millis: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        set_pg_statement_timeout(dbapi_connection, millis)

    return on_connect


def seen_once(url: str, what: str, check: Callable[[], object]) -> bool:
    """`check()`, remembered once true: schema that a migration added stays."""
    fact = (_url_key(url), what)
    if fact in _schema_seen:
        return True
    present = bool(check())
    if present:
        _schema_seen.add(fact)
    return present


def seen_schema() -> frozenset[tuple[str, str]]:
    """What this process has seen of Dagster's schema, for a run worker it launches: the worker
    starts without a catalog query for any of it (tables included: its run was read from them).
    URLs appear only as digests."""
    return frozenset(_schema_seen)


def run_worker_schema(storage: object) -> frozenset[tuple[str, str]]:
    """`seen_schema()` for a run worker about to be forked, with what its first asset event would
    otherwise ask (on PostgreSQL, from inside a transaction) asked here first, once a process."""
    if isinstance(storage, PooledPostgresEventLogStorage):
        storage.has_secondary_index(ASSET_KEY_INDEX_COLS)
    return seen_schema()


def adopt_seen_schema(facts: Iterable[tuple[str, str]]) -> None:
    """Take the launcher's `seen_schema()` as this process's own (a run worker, at its start)."""
    _schema_seen.update(facts)


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _autocreate(url: str, kind: str, configured: bool) -> bool:
    """Whether Dagster should check for its tables (creating missing ones): once per process
    and kind of storage, the first time it is built."""
    return configured and (_url_key(url), f"tables:{kind}") not in _schema_seen


def _tables_checked(url: str, kind: str) -> None:
    _schema_seen.add((_url_key(url), f"tables:{kind}"))


class SharedPoolMixin:
    """What the three storages share: built as dagster-postgres builds them (the tables checked
    once per process), then on the process's engine, also for the webserver."""

    tables: str  # the storage's kind of tables, for the once-per-process check
    postgres_url: str
    _engine: Engine

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        autocreate = _autocreate(postgres_url, self.tables, should_autocreate_tables)
        super().__init__(postgres_url, autocreate, inst_data, token_provider)  # type: ignore[call-arg]
        _tables_checked(postgres_url, self.tables)
        self.should_autocreate_tables = should_autocreate_tables
        self._engine = shared_engine(postgres_url, token_provider)

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        """The process's queries get the webserver's statement timeout; the pool (one per
        process, so that its bound holds) stays this module's."""
        limit_statements(self.postgres_url, self._engine, statement_timeout)


class PooledPostgresRunStorage(SharedPoolMixin, PostgresRunStorage):
    tables = "runs"

    def has_run_stats_index_cols(self) -> bool:
        return seen_once(self.postgres_url, "runs.stats", super().has_run_stats_index_cols)

    def has_bulk_actions_selector_cols(self) -> bool:
        check = super().has_bulk_actions_selector_cols
        return seen_once(self.postgres_url, "bulk_actions.selector_id", check)

    def has_backfill_id_column(self) -> bool:
        return seen_once(self.postgres_url, "runs.backfill_id", super().has_backfill_id_column)

    def has_bulk_action_job_name_column(self) -> bool:
        check = super().has_bulk_action_job_name_column
        return seen_once(self.postgres_url, "bulk_actions.job_name", check)

    def has_backfill_tags_table(self) -> bool:
        return seen_once(self.postgres_url, "backfill_tags", super().has_backfill_tags_table)


class PooledPostgresEventLogStorage(SharedPoolMixin, PostgresEventLogStorage):
    tables = "event_logs"

    def store_event(self, event: EventLogEntry) -> None:
        """The insert and the asset index writes of Dagster's SQL storages, without the
        `NOTIFY` that dagster-postgres adds (module docstring)."""
        SqlEventLogStorage.store_event(self, event)

    def has_table(self, table_name: str) -> bool:
        check = partial(super().has_table, table_name)
        return seen_once(self.postgres_url, f"table:{table_name}", check)

    def has_secondary_index(self, name: str) -> bool:
        """Asked by dagster-postgres inside the transaction that stores an asset event, on a
        second connection: unanswered, it cost every run worker a second server session. The
        launcher asks it before forking (`run_worker_schema`), so its workers know already."""
        check = partial(super().has_secondary_index, name)
        return seen_once(self.postgres_url, f"secondary_index:{name}", check)

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        """Asked for every asset event (Dagster's private method: if a Dagster release renames
        it, the check is only asked again, never skipped)."""
        check = partial(super()._has_asset_key_col_on_connection, conn, column_name)
        return seen_once(self.postgres_url, f"asset_keys.{column_name}", check)


class PooledPostgresScheduleStorage(SharedPoolMixin, PostgresScheduleStorage):
    tables = "schedules"

    def _has_instigators_table(self, conn: Connection) -> bool:
        """Asked at every sensor tick (private, as `_has_asset_key_col_on_connection`)."""
        check = partial(super()._has_instigators_table, conn)
        return seen_once(self.postgres_url, "instigators", check)

    def has_secondary_index_table(self) -> bool:
        return seen_once(self.postgres_url, "secondary_indexes", super().has_secondary_index_table)


class PooledPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:` with the three storages above (same config: `postgres_url`, ...)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        args = (postgres_url, should_autocreate_tables)
        self._run_storage = PooledPostgresRunStorage(*args, token_provider=token_provider)
        self._event_log_storage = PooledPostgresEventLogStorage(
            *args, token_provider=token_provider
        )
        self._schedule_storage = PooledPostgresScheduleStorage(*args, token_provider=token_provider)
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> Self:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


PrePingPostgresStorage = PooledPostgresStorage  # the name in dagster.yaml files written before
