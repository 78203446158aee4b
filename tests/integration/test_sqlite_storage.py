"""The instance's SQLite storage keeps its event-log engines, and stays Dagster's own format: an
instance without it reads what it wrote."""

from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.test_utils import create_run_for_test

from tenant_pipelines.runtime import sqlite_storage
from tenant_pipelines.runtime.sqlite_storage import PooledSqliteEventLogStorage

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
