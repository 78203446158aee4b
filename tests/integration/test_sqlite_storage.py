"""The instance's SQLite storage keeps its event-log engines, and stays Dagster's own format: an
instance without it reads what it wrote."""

import sqlite3
from pathlib import Path

import dagster
import pytest
from dagster import DagsterInstance
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import event

from tenant_pipelines.runtime import sqlite_storage
from tenant_pipelines.runtime.sqlite_storage import (
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
)

pytestmark = pytest.mark.integration


def instance_at(home: Path, pooled: bool) -> DagsterInstance:
    home.mkdir(exist_ok=True)
    storage = (
        f"storage:\n  custom:\n    module: {sqlite_storage.__name__}\n"
        f"    class: PooledSqliteStorage\n    config:\n      base_dir: '{home}'\n"
        if pooled
        else f"storage:\n  sqlite:\n    base_dir: '{home}'\n"
    )
    (home / "dagster.yaml").write_text(storage + "telemetry:\n  enabled: false\n")
    return DagsterInstance.from_config(str(home))


def test_events_written_through_kept_engines_read_back_anywhere(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with instance_at(home, pooled=True) as pooled:
        assert isinstance(pooled.event_log_storage, PooledSqliteEventLogStorage)
        run = create_run_for_test(pooled, job_name="job")
        for n in range(5):
            pooled.report_engine_event(f"event {n}", run)
        engines = pooled.event_log_storage._engines  # type: ignore[attr-defined]
        assert run.run_id in engines  # one engine for the run's database, kept
        kept = engines[run.run_id]
        pooled.report_engine_event("one more", run)
        assert engines[run.run_id] is kept
    with instance_at(home, pooled=False) as plain:
        messages = [entry.message for entry in plain.all_logs(run.run_id)]
    assert [m for m in messages if m.startswith("event") or m == "one more"] == [
        *[f"event {n}" for n in range(5)],
        "one more",
    ]


def test_only_the_most_recently_used_engines_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "ENGINES_KEPT", 3)
    with instance_at(tmp_path / "home", pooled=True) as instance:
        runs = [create_run_for_test(instance, job_name="job") for _ in range(5)]
        for run in runs:
            instance.report_engine_event("hello", run)
        kept = set(instance.event_log_storage._engines)  # type: ignore[attr-defined]
    assert len(kept) == 3 and runs[-1].run_id in kept and runs[0].run_id not in kept


def tables_and_revision(database: Path) -> tuple[set[str], list[tuple[str, ...]], str]:
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return tables, revision, journal


def test_a_new_runs_database_is_the_one_dagster_would_have_made(tmp_path: Path) -> None:
    """Made from the template, a run's database has Dagster's tables, indexes, journal mode
    and revision stamp; the template directory holds only the template."""
    with instance_at(tmp_path / "pooled", pooled=True) as pooled:
        ours = create_run_for_test(pooled, job_name="job")
        pooled.report_engine_event("hello", ours)
        storage = pooled.event_log_storage
        ours_path = Path(storage.path_for_shard(ours.run_id))  # type: ignore[attr-defined]
        templates = ours_path.parent / sqlite_storage.TEMPLATES_DIRECTORY
    with instance_at(tmp_path / "plain", pooled=False) as plain:
        theirs = create_run_for_test(plain, job_name="job")
        plain.report_engine_event("hello", theirs)
        theirs_path = Path(plain.event_log_storage.path_for_shard(theirs.run_id))  # type: ignore[attr-defined]
    assert tables_and_revision(ours_path) == tables_and_revision(theirs_path)
    assert [p.name for p in templates.iterdir()] == [f"run-{dagster.__version__}.db"]


def test_a_database_another_process_made_is_checked_not_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with instance_at(home, pooled=True) as first, instance_at(home, pooled=True) as second:
        run = create_run_for_test(first, job_name="job")
        first.report_engine_event("from the first", run)
        storage = second.event_log_storage
        assert not storage._created_from_template(run.run_id)  # type: ignore[attr-defined]
        second.report_engine_event("from the second", run)
        messages = [entry.message for entry in first.all_logs(run.run_id)]
    assert "from the first" in messages and "from the second" in messages


def test_the_run_storage_keeps_its_engine_and_reads_the_runs_columns_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with instance_at(home, pooled=True) as pooled:
        storage = pooled.run_storage
        assert isinstance(storage, PooledSqliteRunStorage)
        statements: list[str] = []
        event.listen(
            storage._engine, "before_cursor_execute", lambda *args: statements.append(args[2])
        )
        runs = [create_run_for_test(pooled, job_name="job") for _ in range(3)]
        for _ in range(3):
            pooled.get_run_records()
        engine = storage._engine
        pooled.get_run_by_id(runs[0].run_id)
        assert storage._engine is engine
    reflections = [s for s in statements if "table_info" in s.lower()]
    assert len(reflections) <= 1, reflections
    with instance_at(home, pooled=False) as plain:
        assert {r.run_id for r in plain.get_runs()} == {r.run_id for r in runs}
