"""Dagster's SQLite storage, with an event log and a run storage that keep their database engines.

Dagster's SQLite event log writes each run's events to a database of its own and builds a new
SQLAlchemy engine and connection for every event it stores, then closes them, and closing the
last connection to a WAL database checkpoints it. Profiled under a burst of provisioning runs,
that churn was over a third of every run worker's time, and run workers are what bounds how many
tenants two cores onboard at once. This event log keeps one engine, and a connection, per
database (the most recently used few), and commits without an fsync each (WAL with
`synchronous = NORMAL`: a power loss may drop the last events, never corrupt the file). The run
storage did the same for every query (and re-read the runs table's columns for most of them): in
the API server during a burst that was over a third of its time; it keeps one engine too.
A new run's database is a copy of an empty one made once per process with Dagster's own schema
and revision stamp (about 1 ms, where creating its tables cost ~50 ms of every run's launch).
Everything else, files and schema included, is Dagster's own: an instance can switch to or from
it and keep its history.
"""

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import dagster
import yaml
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import QueuePool

from tenant_pipelines.runtime.dagster_private import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    ConfigurableClassData,
    DagsterSqliteStorage,
    SqliteEventLogStorage,
    SqliteRunStorage,
    event_logs_directory,
    runs_directory,
)

ENGINES_KEPT = 32  # databases a process uses at once: runs in progress, and the index
CONNECTIONS_OVERFLOW = 4  # beyond the one kept per database, for threads reading at once
TEMPLATES_DIRECTORY = ".templates"  # beside the runs' databases: Dagster lists only `*.db` there


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage that keeps an engine per database instead of one per statement."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
            if engine is None:
                engine = pooled_engine(self.conn_string_for_shard(shard))
            self._engines[shard] = engine
            while len(self._engines) > ENGINES_KEPT:
                self._engines.popitem(last=False)[1].dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:  # as Dagster's own: one statement at a time per process
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                if not self._created_from_template(shard):
                    self._initdb(engine)  # as Dagster does: create, or check the revision
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _created_from_template(self, shard: str) -> bool:
        """Create a run's database as a copy of the empty template, unless it exists: the copy
        is linked into place, so a database is either absent or complete, and when two
        processes race the second finds it made and checks it as Dagster does."""
        path = Path(self.path_for_shard(shard))
        if shard == INDEX_SHARD_NAME or path.exists():
            return False
        partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
        shutil.copyfile(self._template, partial)
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        finally:
            partial.unlink()
        return True

    @cached_property
    def _template(self) -> Path:
        """An empty run database made by Dagster's own `_initdb` (tables, WAL, revision stamp),
        one per Dagster version, made once and shared by the processes of the instance."""
        directory = Path(self._base_dir) / TEMPLATES_DIRECTORY
        directory.mkdir(exist_ok=True)
        template = directory / f"run-{dagster.__version__}.db"
        if not template.exists():
            partial = directory / f".{template.name}.{os.getpid()}-{threading.get_ident()}"
            engine = create_engine(f"sqlite:///{partial}")
            try:
                self._initdb(engine)
            finally:
                engine.dispose()  # the last connection closes: the WAL is checkpointed
            os.replace(partial, template)
        return template

    def dispose(self) -> None:
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
        super().dispose()


def pooled_engine(conn_string: str) -> Engine:
    """One kept connection (and a few more for threads at once), committing without an fsync."""
    engine = create_engine(
        conn_string,
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=CONNECTIONS_OVERFLOW,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    )
    event.listen(engine, "connect", _without_fsync_per_commit)
    return engine


class PooledSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage (`runs.db`), through one kept engine."""

    @cached_property
    def _engine(self) -> Engine:
        return pooled_engine(self._conn_string)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def has_run_stats_index_cols(self) -> bool:
        """Read once it is true: a migration adds these columns, nothing removes them."""
        if not getattr(self, "_run_stats_cols", False):
            self._run_stats_cols = super().has_run_stats_index_cols()
        return self._run_stats_cols

    def dispose(self) -> None:
        if "_engine" in self.__dict__:
            self._engine.dispose()
        super().dispose()


def _without_fsync_per_commit(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (`storage: sqlite:`) with `PooledSqliteEventLogStorage`."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data)
        self._event_log_storage.dispose()
        self._event_log_storage = PooledSqliteEventLogStorage(event_logs_directory(base_dir))
        self._run_storage.dispose()
        self._run_storage = PooledSqliteRunStorage.from_local(runs_directory(base_dir))

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> Self:
        return cls.from_local(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(
            __name__,
            PooledSqliteEventLogStorage.__name__,
            yaml.dump({"base_dir": event_logs_directory(self.base_dir)}),
        )
