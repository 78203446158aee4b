"""The run launcher of several hosts sends each run to its tenant's host's queue at the broker.

A real instance on PostgreSQL, from the dagster.yaml `tenantctl up` writes for TENANT_WORKER_HOSTS,
and Redis as the broker: what reaches a queue is read from Redis itself. No worker consumes here,
so each launched run's task stays in its queue to be counted.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dagster import DagsterInstance, build_reconstructable_job

from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.runtime.host_launcher import HostRunLauncher
from tenant_pipelines.service.jobs import DECOMMISSION_JOB, WORKER_HOST_TAG
from tenant_pipelines.settings import Settings
from tests.conftest import empty_broker

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

BROKER = "redis://127.0.0.1:6379/13"
QUEUE_TAG = "dagster-celery/queue"


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    with empty_broker(BROKER) as client:
        yield client


@pytest.fixture
def instance(
    tmp_path: Path, pg_database: str, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    env = {
        "TENANT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_PG_URL": pg_database,
        "TENANT_DB_URL": pg_database,
        "TENANT_WORKER_HOSTS": "h-a,h-b",
        "TENANT_CELERY_BROKER": BROKER,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # dagster.yaml reads the URLs from the environment
    settings = Settings.from_env(env)
    opened = open_instance(settings.dagster_home, settings)
    try:
        yield opened
    finally:
        opened.dispose()


def launched(instance: DagsterInstance, tmp_path: Path, tags: dict[str, str]) -> str:
    job = build_reconstructable_job(
        "tests.job_target", "job_named", (DECOMMISSION_JOB, str(tmp_path / "data"))
    )
    config = {"slug": "acme", "org": "widgets", "tenant_id": "t-1"}
    run = instance.create_run_for_job(
        job.get_definition(),
        run_config={"ops": {"decommission": {"config": config}}},
        tags=tags,
        job_code_origin=job.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id


def queued(broker: redis.Redis, queue: str) -> int:
    """Tasks waiting in `queue` (kombu keeps one Redis list per queue and priority)."""
    keys = [key for key in broker.scan_iter() if key.split(b"\x06")[0] == queue.encode()]
    return sum(int(broker.llen(key)) for key in keys)


def test_a_run_goes_to_its_tenants_host_whatever_queue_it_names(
    instance: DagsterInstance, broker: redis.Redis, tmp_path: Path
) -> None:
    """A run launched from the UI could carry any queue tag: the tenant's host decides."""
    assert isinstance(instance.run_launcher, HostRunLauncher)
    run_id = launched(instance, tmp_path, {WORKER_HOST_TAG: "h-b", QUEUE_TAG: "h-a"})

    run = instance.get_run_by_id(run_id)
    assert run is not None and run.tags[QUEUE_TAG] == "h-b"
    assert (queued(broker, "h-b"), queued(broker, "h-a")) == (1, 0)


def test_a_run_of_no_placed_tenant_goes_to_the_first_worker_host(
    instance: DagsterInstance, broker: redis.Redis, tmp_path: Path
) -> None:
    run_id = launched(instance, tmp_path, {})

    run = instance.get_run_by_id(run_id)
    assert run is not None and run.tags[QUEUE_TAG] == "h-a"
    assert (queued(broker, "h-a"), queued(broker, "h-b")) == (1, 0)


def test_the_broker_url_is_read_from_the_environment_never_written(
    instance: DagsterInstance,
) -> None:
    config = (Path(instance.root_directory) / "dagster.yaml").read_text()
    assert "HostRunLauncher" in config and "redis://" not in config
