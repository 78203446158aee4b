"""The audit feed's reader (`audit.feed_instance`) on each storage: on PostgreSQL successive reads
share one held connection, where Dagster's default opens one per statement; SQLite is left as
it was."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import Pool

from tenant_pipelines.domain.events import make_event
from tenant_pipelines.orchestration.feed import (
    feed_instance,
    follow_events,
    read_events,
    to_observation,
)
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.settings import Settings
from tests.pg_helpers import backend_pids, terminate_backends

pytestmark = pytest.mark.integration

READS = 20


def instance_in(tmp_path: Path, **env: str) -> DagsterInstance:
    settings = Settings.from_env({"TENANT_DATA_DIR": str(tmp_path / "data"), **env})
    return open_instance(settings.dagster_home, settings)


def record(instance: DagsterInstance, slug: str, *steps: str) -> None:
    for step in steps:
        done = make_event(
            "tenant.provisioning.step_completed",
            tenant=slug,
            org="widgets",
            run_id=f"run-{slug}",
            step=step,
        )
        instance.report_runless_asset_event(to_observation(done))


@contextmanager
def connections_opened(database: str) -> Iterator[list[int]]:
    """The server pids of the connections any SQLAlchemy pool here opens to `database`."""
    opened: list[int] = []

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection.info.dbname == database:
            opened.append(dbapi_connection.get_backend_pid())

    event.listen(Pool, "connect", on_connect)
    try:
        yield opened
    finally:
        event.remove(Pool, "connect", on_connect)


@pytest.mark.postgres
def test_postgresql_feed_reads_share_one_held_connection(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)  # dagster.yaml reads it from there
    instance = instance_in(tmp_path, DAGSTER_PG_URL=pg_database)
    try:
        record(instance, "acme", "validate", "allocate", "deploy")
        record(instance, "globex", "validate", "allocate")
        expected, _ = read_events(instance, tenant="acme")  # on Dagster's default engine
        assert [(e.tenant, e.step) for e in expected] == [
            ("acme", "validate"),
            ("acme", "allocate"),
            ("acme", "deploy"),
        ]

        with connections_opened(str(make_url(pg_database).database)) as opened:
            assert feed_instance(instance) is instance
            feeds = [read_events(instance, tenant="acme")[0] for _ in range(READS)]

        assert feeds == [expected] * READS
        # Without feed_instance: two new connections per read, each closed after its statement.
        assert len(opened) == 1, f"{READS} reads opened {len(opened)} connections"
        assert opened[0] in backend_pids(pg_database), "the connection is held between reads"
    finally:
        instance.dispose()


@pytest.mark.postgres
def test_following_outlives_the_server_dropping_the_held_connection(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)
    reader = feed_instance(instance_in(tmp_path, DAGSTER_PG_URL=pg_database))
    writer = instance_in(tmp_path, DAGSTER_PG_URL=pg_database)  # a run's, on Dagster's default
    sleeps = 0

    def between_polls(_seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 1:
            terminate_backends(pg_database)  # a server restart, for the reader's held connection
            record(writer, "acme", "allocate")

    try:
        record(writer, "acme", "validate")
        followed = follow_events(
            reader, tenant="acme", type_glob=None, poll_s=0.0, sleep=between_polls
        )
        assert next(followed).step == "validate"
        assert next(followed).step == "allocate"
        # Dagster's PostgreSQL storage pings a held connection before use (runtime/pg_storage):
        # the very poll after the drop reconnects, no poll is lost.
        assert sleeps == 1, "the poll after the drop found no connection"
    finally:
        reader.dispose()
        writer.dispose()


def test_sqlite_instance_is_left_as_it_was(tmp_path: Path) -> None:
    instance = instance_in(tmp_path)
    try:
        record(instance, "acme", "validate", "allocate")
        expected, cursor = read_events(instance, tenant="acme")
        storages = [instance.run_storage, instance.event_log_storage, instance.schedule_storage]
        before = [dict(vars(storage)) for storage in storages]

        assert feed_instance(instance) is instance
        assert [dict(vars(storage)) for storage in storages] == before  # same engines, all
        assert read_events(instance, tenant="acme")[0] == expected
        record(instance, "acme", "deploy")
        later, _ = read_events(instance, tenant="acme", cursor=cursor)
        assert [(e.tenant, e.step) for e in later] == [("acme", "deploy")]
    finally:
        instance.dispose()
