"""The control host's edge follows the registry's routes (a platform with several hosts): each
change a worker host's run commits is marked at the edge, where the tenant's host is recorded;
a lost connection to PostgreSQL is said, opened again, and what changed meanwhile caught up."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.gateway import AT_DIR, CLOSED_DIR, OPEN_DIR, UPSTREAM_DIR, write_plan
from resources.route_table import edge_dir
from tenant_pipelines.localstack.gateway import plan_for
from tenant_pipelines.localstack.route_follower import RouteFollower
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.pg_helpers import admin_sql
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def settings(tmp_path: Path, pg_database: str) -> Settings:
    settings = Settings.from_env(
        {
            "TENANT_DATA_DIR": str(tmp_path / "data"),
            "TENANT_DB_URL": pg_database,
            "DAGSTER_PG_URL": pg_database,
            "TENANT_CELERY_BROKER": "redis://127.0.0.1:6379/15",
            "TENANT_WORKER_HOSTS": "w-a=127.0.0.1:1,w-b=127.0.0.1:2",
        }
    )
    settings.data_dir.mkdir()
    write_plan(settings.data_dir, plan_for(settings, http_port=1, api_port=2))  # as `up` does
    return settings


@pytest.fixture
def said(settings: Settings) -> Iterator[list[str]]:
    lines: list[str] = []
    follower = RouteFollower(settings, lines.append)
    TenantRegistry.shared(settings.db_url).routes.add_closed(
        "early-o.localhost", "early-o", "t0", "w-a"
    )
    follower.start()
    try:
        yield lines
    finally:
        follower.stop()


def markers(settings: Settings, key: str) -> set[str]:
    edge = edge_dir(settings.data_dir)
    kinds = [OPEN_DIR, CLOSED_DIR, UPSTREAM_DIR, f"{AT_DIR}/w-a", f"{AT_DIR}/w-b"]
    return {
        kind for kind in kinds if (edge / kind / key).is_symlink() or (edge / kind / key).exists()
    }


def test_each_committed_change_is_marked_with_the_tenants_host(
    settings: Settings, said: list[str]
) -> None:
    routes = TenantRegistry.shared(settings.db_url).routes
    wait_until(lambda: markers(settings, "early-o") == {CLOSED_DIR, f"{AT_DIR}/w-a"}, 10, "early")

    routes.add_closed("shop-o.localhost", "shop-o", "t1", "w-b")
    wait_until(lambda: markers(settings, "shop-o") == {CLOSED_DIR, f"{AT_DIR}/w-b"}, 10, "closed")
    routes.open("shop-o", "t1")
    wait_until(lambda: markers(settings, "shop-o") == {OPEN_DIR, f"{AT_DIR}/w-b"}, 10, "opened")
    routes.remove("shop-o", "t1")
    wait_until(lambda: not markers(settings, "shop-o"), 10, "the removed route is still marked")
    assert not said


def test_a_lost_connection_is_said_and_what_changed_meanwhile_is_caught_up(
    settings: Settings, said: list[str], pg_database: str
) -> None:
    routes = TenantRegistry.shared(settings.db_url).routes
    wait_until(lambda: markers(settings, "early-o"), 10, "the follower never started")

    admin_sql(
        pg_database,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%%'",
    )
    routes.remove("early-o", "t0")
    wait_until(lambda: not markers(settings, "early-o"), 15, "the change was never caught up")
    wait_until(lambda: len(said) >= 2, 10, f"said: {said}")
    assert said[0].startswith("edge: the registry's routes cannot be followed now (")
    assert said[1] == "edge: following the registry's routes again"
