"""The registry and the Dagster instance on one PostgreSQL database: each keeps its Alembic revision
in its own table, so either may be made first, and a registry from before that split is adopted."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import job, op
from sqlalchemy import create_engine, inspect, text

from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry import migrate
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.db_url import normalize_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@op
def noop() -> int:
    return 1


@job
def trivial() -> None:
    noop()


@pytest.fixture
def one_db(pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose registry and Dagster instance are the same database."""
    env = {"TENANT_DATA_DIR": str(tmp_path), "TENANT_DB_URL": pg_database}
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)  # Dagster reads it through {env: ...}
    yield Settings.from_env({**env, "DAGSTER_PG_URL": pg_database})


def _both_work(settings: Settings) -> None:
    instance = open_instance(settings.dagster_home, settings)
    try:
        instance.upgrade()  # `dagster instance migrate`: Dagster's own migrations
        result = trivial.execute_in_process(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None
    finally:
        instance.dispose()
    registry = TenantRegistry.open(settings.db_url)
    try:
        assert registry.tenants.all() == []
        assert migrate.current_revision(settings.db_url) == migrate.HEAD_REVISION
    finally:
        registry.close()


def _versions(url: str) -> dict[str, list[str]]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            return {
                table: [row[0] for row in conn.execute(text(f"SELECT version_num FROM {table}"))]
                for table in ("alembic_version", migrate.VERSION_TABLE)
                if table in names
            }
    finally:
        engine.dispose()


def test_dagster_first_then_the_registry(one_db: Settings) -> None:
    instance = open_instance(one_db.dagster_home, one_db)
    instance.dispose()
    _both_work(one_db)
    versions = _versions(one_db.db_url)
    assert versions[migrate.VERSION_TABLE] == [migrate.HEAD_REVISION]
    assert len(versions["alembic_version"]) == 1  # Dagster's, untouched
    assert versions["alembic_version"] != [migrate.HEAD_REVISION]


def test_registry_first_then_dagster(one_db: Settings) -> None:
    migrate.upgrade(one_db.db_url)
    _both_work(one_db)
    _both_work(one_db)  # and again, as the next `tenantctl up` does


def test_a_registry_from_before_the_split_is_adopted_when_dagster_joins_it(
    one_db: Settings,
) -> None:
    migrate.upgrade(one_db.db_url)
    engine = create_engine(normalize_url(one_db.db_url))
    try:
        with engine.begin() as conn:  # as the registry was before: its revision in alembic_version
            conn.execute(text(f"ALTER TABLE {migrate.VERSION_TABLE} RENAME TO alembic_version"))
            conn.execute(
                text(
                    f"ALTER TABLE alembic_version RENAME CONSTRAINT {migrate.VERSION_TABLE}_pkc"
                    " TO alembic_version_pkc"
                )
            )
    finally:
        engine.dispose()
    _both_work(one_db)
    versions = _versions(one_db.db_url)
    assert versions[migrate.VERSION_TABLE] == [migrate.HEAD_REVISION]
    assert migrate.HEAD_REVISION not in versions.get("alembic_version", [])
