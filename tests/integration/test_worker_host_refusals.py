"""What `tenantctl worker` (and `up` with several hosts) refuse before they start anything: a
platform of one host, a host that is not one of the worker hosts, and a broker that does not
answer, whose URL (a secret: it may hold a password) is never said."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.stack_helpers import REPO, TENANTCTL, free_port, processes_mentioning

pytestmark = pytest.mark.integration

SEVERAL_HOSTS = {
    "TENANT_WORKER_HOSTS": "h-a,h-b",
    "DAGSTER_PG_URL": "postgresql://postgres@127.0.0.1:5432/never_opened",
    "TENANT_DB_URL": "postgresql://postgres@127.0.0.1:5432/never_opened",
}


def tenantctl(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))}
    env.update(
        TENANT_DATA_DIR=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path / "dagster"), **settings
    )
    return subprocess.run(
        [TENANTCTL, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def silent_broker() -> str:
    """A Redis URL with a password, at a port nothing listens on."""
    return f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"


def test_a_worker_of_a_one_host_platform_is_refused(tmp_path: Path) -> None:
    result = tenantctl(tmp_path, "worker", "--init")
    assert result.returncode == 1
    assert "tenantctl worker runs one of several hosts: set TENANT_WORKER_HOSTS" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_worker_whose_host_is_not_a_worker_host_is_refused(tmp_path: Path) -> None:
    settings = {**SEVERAL_HOSTS, "TENANT_CELERY_BROKER": silent_broker()}
    result = tenantctl(tmp_path, "worker", "--init", TENANT_HOST_NAME="h-c", **settings)
    assert result.returncode == 1
    assert "this host's name 'h-c' (TENANT_HOST_NAME) is not one of" in result.stderr
    assert "TENANT_WORKER_HOSTS (h-a, h-b)" in result.stderr


def test_a_worker_whose_broker_does_not_answer_is_refused_without_its_url(
    tmp_path: Path,
) -> None:
    broker = silent_broker()
    settings = {**SEVERAL_HOSTS, "TENANT_CELERY_BROKER": broker}
    result = tenantctl(tmp_path, "worker", "--init", TENANT_HOST_NAME="h-a", **settings)
    assert result.returncode == 1
    assert "the broker (TENANT_CELERY_BROKER) does not answer" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert not processes_mentioning("celery", str(tmp_path))


@pytest.mark.postgres
def test_a_control_host_whose_broker_does_not_answer_is_refused_without_its_url(
    tmp_path: Path, pg_database: str
) -> None:
    databases = {"DAGSTER_PG_URL": pg_database, "TENANT_DB_URL": pg_database}
    settings = {**SEVERAL_HOSTS, **databases, "TENANT_CELERY_BROKER": silent_broker()}
    ports = ["--edge-port", str(free_port()), "--api-port", str(free_port())]
    result = tenantctl(tmp_path, "up", "--init", *ports, **settings)
    assert result.returncode == 1, result.stdout
    assert "the broker (TENANT_CELERY_BROKER) does not answer" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert not processes_mentioning(str(tmp_path / "data"))
