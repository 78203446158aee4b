"""The Dagster instance's dagster.yaml: rendered from the settings, on SQLite or PostgreSQL, and
never silently at odds with the environment."""

from importlib import resources
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.storage.runs import SqliteRunStorage
from dagster_postgres import PostgresRunStorage

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.orchestration.instance import (
    GENERATED_MARK,
    PREFORK_LAUNCHER,
    TEMPLATES,
    ensure_dagster_home,
    open_instance,
)
from tenant_pipelines.runtime.run_launcher import PreforkRunLauncher
from tenant_pipelines.settings import Settings

pytestmark = pytest.mark.integration


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"TENANT_DATA_DIR": str(tmp_path / "data"), **env})


def template(name: str) -> dict:
    text = resources.files("tenant_pipelines.orchestration").joinpath("templates", name).read_text()
    text = text.replace("${run_launcher}", PREFORK_LAUNCHER)
    return yaml.safe_load(text.replace("${tag_concurrency_limits}", " []"))


def test_the_two_templates_differ_only_in_storage() -> None:
    sqlite, postgres = (template(TEMPLATES[kind]) for kind in ("sqlite", "postgres"))
    assert postgres.pop("storage") == {
        "custom": {
            "module": "tenant_pipelines.runtime.pg_storage",
            "class": "PooledPostgresStorage",
            "config": {"postgres_url": {"env": "DAGSTER_PG_URL"}},
        }
    }
    # Dagster's SQLite storage under DAGSTER_HOME, its event log keeping its engines.
    assert sqlite.pop("storage")["custom"]["class"] == "PooledSqliteStorage"
    assert sqlite == postgres


def queue_of(instance: DagsterInstance) -> tuple[int, list[dict]]:
    config = instance.run_coordinator.get_run_queue_config()  # type: ignore[attr-defined]
    return config.max_concurrent_runs, config.tag_concurrency_limits


def test_sqlite_instance_queues_runs_per_plan(tmp_path: Path) -> None:
    chosen = settings(tmp_path, TENANT_FREE_CONCURRENCY="1")
    instance = open_instance(chosen.dagster_home, chosen)
    try:
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert queue_of(instance) == (
            8,
            [
                {"key": "plan", "value": "free", "limit": 1},
                {"key": "plan", "value": "team", "limit": 4},
            ],
        )
        # Everything else the project tuned is kept.
        config = yaml.safe_load((chosen.dagster_home / "dagster.yaml").read_text())
        assert config["run_coordinator"]["class"] == "SlotRunCoordinator"
        assert config["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
        assert config["run_retries"]["enabled"] is True
        assert config["run_monitoring"]["max_runtime_seconds"] == 1800
    finally:
        instance.dispose()


@pytest.mark.postgres
def test_postgres_instance_reads_its_url_from_the_environment(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)
    chosen = settings(tmp_path, DAGSTER_PG_URL=pg_database)
    instance = open_instance(chosen.dagster_home, chosen)
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert queue_of(instance)[1][0] == {"key": "plan", "value": "free", "limit": 3}
    finally:
        instance.dispose()
    written = (chosen.dagster_home / "dagster.yaml").read_text()
    assert pg_database not in written, "the URL (a secret) is never written to the file"


def test_storage_that_contradicts_dagster_pg_url_is_refused(tmp_path: Path) -> None:
    on_sqlite = settings(tmp_path)
    ensure_dagster_home(on_sqlite.dagster_home, on_sqlite)
    on_postgres = settings(tmp_path, DAGSTER_PG_URL="postgresql://u@127.0.0.1/x")
    with pytest.raises(ConfigError, match="on sqlite, but DAGSTER_PG_URL is set"):
        ensure_dagster_home(on_postgres.dagster_home, on_postgres)

    elsewhere = tmp_path / "pg"
    ensure_dagster_home(elsewhere, on_postgres)
    with pytest.raises(ConfigError, match="on postgres, but DAGSTER_PG_URL is not set"):
        ensure_dagster_home(elsewhere, on_sqlite)


def test_a_generated_file_with_other_run_limits_is_refused(tmp_path: Path) -> None:
    first = settings(tmp_path, TENANT_FREE_CONCURRENCY="1")
    config = ensure_dagster_home(first.dagster_home, first)
    changed = settings(tmp_path, TENANT_FREE_CONCURRENCY="2")
    with pytest.raises(ConfigError, match=r"free=1, team=4.*free=2, team=4.*delete the file"):
        ensure_dagster_home(changed.dagster_home, changed)
    config.unlink()  # what the message tells the operator to do
    ensure_dagster_home(changed.dagster_home, changed)
    assert "limit: 2" in config.read_text()


def test_a_file_generated_by_an_older_version_is_refused(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    config = ensure_dagster_home(chosen.dagster_home, chosen)
    text = config.read_text()
    launcher = (
        "run_launcher:\n  module: tenant_pipelines.runtime.run_launcher\n"
        "  class: PreforkRunLauncher\n"
    )
    assert launcher in text
    config.write_text(text.replace(launcher, ""))  # as written before the launcher existed
    with pytest.raises(ConfigError, match=r"generated by another version.*delete the file"):
        ensure_dagster_home(chosen.dagster_home, chosen)


def test_the_instance_launches_runs_with_the_prefork_launcher(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    instance = open_instance(chosen.dagster_home, chosen)
    try:
        assert isinstance(instance.run_launcher, PreforkRunLauncher)
    finally:
        instance.dispose()


def test_an_operators_own_file_is_left_alone(tmp_path: Path) -> None:
    chosen = settings(tmp_path)
    config = chosen.dagster_home / "dagster.yaml"
    config.parent.mkdir(parents=True)
    own = "run_queue:\n  max_concurrent_runs: 2\ntelemetry:\n  enabled: false\n"
    config.write_text(own)
    assert not own.startswith(GENERATED_MARK)
    instance = open_instance(chosen.dagster_home, chosen)
    instance.dispose()
    assert config.read_text() == own


@pytest.mark.postgres
def test_an_unreachable_instance_database_is_one_clear_error(
    tmp_path: Path, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = pg_admin_url.replace("postgres@", "postgres:hunter2@").rsplit("/", 1)[0]
    missing += "/tp_no_such_database"
    monkeypatch.setenv("DAGSTER_PG_URL", missing)
    chosen = settings(tmp_path, DAGSTER_PG_URL=missing)
    with pytest.raises(ConfigError, match=r"DAGSTER_PG_URL.*does not exist") as raised:
        open_instance(chosen.dagster_home, chosen)
    assert "hunter2" not in str(raised.value)
