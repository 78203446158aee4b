"""The platform's PostgreSQL connections: kept per process, bounded, checked without a round trip,
replaced when the server closed them, and never shared with a forked child."""

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy
from dagster import AssetKey, AssetObservation, DagsterEvent, DagsterEventType, EventLogEntry
from dagster._core.events import AssetObservationData
from psycopg2.extensions import TRANSACTION_STATUS_IDLE, TRANSACTION_STATUS_INTRANS
from sqlalchemy import Engine, text

from tenant_pipelines.registry.engine import Database, make_engine
from tenant_pipelines.runtime import pg_storage
from tenant_pipelines.runtime.pg_storage import POOL_OVERFLOW, POOL_SIZE, PooledPostgresStorage
from tenant_pipelines.support.db_url import normalize_url
from tenant_pipelines.support.pooled_engines import pooled_pg_engine
from tests.pg_helpers import admin_sql, backend_pids
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


def last_query(admin_url: str, pid: int) -> str:
    """The last statement the backend `pid` ran (`pg_stat_activity` says it as it starts)."""
    [(query,)] = admin_sql(admin_url, "SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
    return str(query)


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.fixture
def engine(pg_database: str) -> Iterator[Engine]:
    url = normalize_url(pg_database)
    made = pooled_pg_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0)
    yield made
    made.dispose()


def terminate(pg_database: str, pid: int) -> None:
    admin_sql(pg_database, "SELECT pg_terminate_backend(%s)", (pid,))


def test_a_kept_connection_is_reused_without_a_ping(engine: Engine, pg_database: str) -> None:
    first = backend_pid(engine)
    assert backend_pid(engine) == first
    with engine.connect():
        pass  # a checkout: SQLAlchemy's pre-ping would send SELECT 1 here
    assert last_query(pg_database, first) == "SELECT pg_backend_pid()"


def test_a_connection_the_server_closed_is_replaced_before_use(
    engine: Engine, pg_database: str
) -> None:
    first = backend_pid(engine)
    terminate(pg_database, first)
    wait_until(lambda: not backend_alive(pg_database, first), 5, "the backend never ended")
    # Its goodbye waits on the kept connection's socket: the checkout pings, fails, reconnects.
    replaced = backend_pid(engine)
    assert replaced != first


def backend_alive(admin_url: str, pid: int) -> bool:
    return bool(admin_sql(admin_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def test_a_forked_child_opens_its_own_connection(engine: Engine) -> None:
    parent = backend_pid(engine)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, str(backend_pid(engine)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = int(pipe.read())
    os.waitpid(child, 0)
    assert childs != parent
    assert backend_pid(engine) == parent  # the child left the parent's connection alone


@pytest.fixture
def dagster_storage(pg_database: str) -> Iterator[PooledPostgresStorage]:
    yield PooledPostgresStorage(pg_database)


def connections_named(pg_database: str, name: str) -> int:
    return len(backend_pids(pg_database, name))  # this query's own connection left out


def test_dagsters_three_storages_share_one_pool(dagster_storage: PooledPostgresStorage) -> None:
    engines = {
        id(dagster_storage.run_storage._engine),  # type: ignore[attr-defined]
        id(dagster_storage.event_log_storage._engine),  # type: ignore[attr-defined]
        id(dagster_storage.schedule_storage._engine),  # type: ignore[attr-defined]
    }
    assert len(engines) == 1


def test_a_process_holds_at_most_the_pools_bound(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty threads reading at once through one instance's storage open at most
    POOL_SIZE + POOL_OVERFLOW connections; the rest wait for one."""
    storage = PooledPostgresStorage(pg_database)  # its pool opens connections when used
    name = f"pool-bound-{os.getpid()}"
    monkeypatch.setenv("PGAPPNAME", name)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, connections_named(pg_database, name))

    def read() -> None:
        for _ in range(20):
            storage.run_storage.get_runs()

    watcher = threading.Thread(target=watch)
    watcher.start()
    readers = [threading.Thread(target=read) for _ in range(20)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    stop.set()
    watcher.join()
    assert 1 <= peak <= POOL_SIZE + POOL_OVERFLOW


def test_schema_checks_are_answered_once_true(
    dagster_storage: PooledPostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_log = dagster_storage.event_log_storage
    assert event_log.has_table("event_logs")
    dialect = event_log._engine.dialect  # type: ignore[attr-defined]
    asked: list[str] = []
    real = dialect.has_table
    monkeypatch.setattr(
        dialect, "has_table", lambda conn, name: asked.append(name) or real(conn, name)
    )
    assert event_log.has_table("event_logs")
    assert asked == []
    assert not event_log.has_table("no_such_table")  # a false answer is asked again
    assert not event_log.has_table("no_such_table")
    assert asked == ["no_such_table", "no_such_table"]


def inspections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What Dagster's storages ask the catalog about (`sqlalchemy.inspect`) from now on."""
    asked: list[object] = []
    real = sqlalchemy.inspect

    def inspect(subject: object, *args: Any) -> Any:
        asked.append(subject)
        return real(subject, *args)

    monkeypatch.setattr(sqlalchemy, "inspect", inspect)
    return asked


def test_a_run_worker_asks_nothing_its_launcher_knew_of_the_schema(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_storage, "_schema_seen", set())  # the launcher's process, new
    launcher = PooledPostgresStorage(pg_database)
    assert launcher.run_storage.has_run_stats_index_cols()
    known = pg_storage.seen_schema()
    assert not any(pg_database in part for fact in known for part in fact)  # digests, no URL

    monkeypatch.setattr(pg_storage, "_schema_seen", set())  # a new process that knows nothing
    inspected = inspections(monkeypatch)
    PooledPostgresStorage(pg_database).run_storage.has_run_stats_index_cols()
    assert len(inspected) == 4  # each storage lists the tables; the runs table's columns

    monkeypatch.setattr(pg_storage, "_schema_seen", set())  # a run worker, handed what it knew
    inspected.clear()
    pg_storage.adopt_seen_schema(known)
    PooledPostgresStorage(pg_database).run_storage.has_run_stats_index_cols()
    assert inspected == []


def test_a_run_worker_stores_an_audit_event_on_one_connection(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-postgres asks whether an index exists from inside the transaction that stores an
    asset event (the audit feed's kind): unanswered, that took a second connection per worker."""
    monkeypatch.setattr(pg_storage, "_schema_seen", set())  # the launcher's process, new
    launcher = PooledPostgresStorage(pg_database)
    known = pg_storage.run_worker_schema(launcher.event_log_storage)

    monkeypatch.setattr(pg_storage, "_schema_seen", set())  # a run worker, handed what it knew,
    monkeypatch.setattr(pg_storage, "_engines", {})  # with a pool of its own
    pg_storage.adopt_seen_schema(known)
    worker = PooledPostgresStorage(pg_database).event_log_storage
    observation = AssetObservation(asset_key=AssetKey(["tenant_audit"]), partition="acme")
    event = DagsterEvent(
        DagsterEventType.ASSET_OBSERVATION.value,
        "provision_tenant",
        event_specific_data=AssetObservationData(observation),
    )
    entry = EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message="",
        run_id="probe-run",
        timestamp=time.time(),
        dagster_event=event,
    )
    try:
        worker.store_event(entry)
        assert worker.get_records_for_run("probe-run").records  # stored, asset index included
        pool = worker._engine.pool  # type: ignore[attr-defined]
        assert pool.checkedin() + pool.checkedout() == 1
    finally:
        worker._engine.dispose()  # type: ignore[attr-defined]


def test_an_event_is_stored_without_a_notify(
    dagster_storage: PooledPostgresStorage, pg_database: str
) -> None:
    """dagster-postgres sent `NOTIFY run_events` after every event; nothing listens any more."""
    listener = psycopg2.connect(pg_database)
    try:
        listener.autocommit = True
        listener.cursor().execute("LISTEN run_events")
        entry = EventLogEntry(
            error_info=None,
            level=logging.INFO,
            user_message="probe",
            run_id="probe-run",
            timestamp=time.time(),
        )
        dagster_storage.event_log_storage.store_event(entry)
        records = dagster_storage.event_log_storage.get_records_for_run("probe-run").records
        assert [record.event_log_entry.user_message for record in records] == ["probe"]
        listener.poll()
        assert listener.notifies == []
    finally:
        listener.close()


def test_a_registry_read_sends_no_begin_and_a_write_keeps_its_transaction(
    pg_database: str,
) -> None:
    """Under READ COMMITTED a read's BEGIN and COMMIT bought nothing but two round trips; a
    write still runs in one transaction (the server says so after each statement)."""
    db = Database(make_engine(pg_database))
    try:
        for _ in range(2):  # and the connection goes back to the pool as it came
            with db.read() as conn:
                conn.execute(text("SELECT 1"))
                assert server_status(conn) == TRANSACTION_STATUS_IDLE
            with db.write() as conn:
                conn.execute(text("SELECT 1"))
                assert server_status(conn) == TRANSACTION_STATUS_INTRANS
    finally:
        db.close()


def server_status(conn: sqlalchemy.Connection) -> int:
    """Whether the server said it is in a transaction block, as of the last statement."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return int(dbapi.get_transaction_status())  # type: ignore[attr-defined]
