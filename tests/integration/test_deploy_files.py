"""deploy/: the one env file that switches to PostgreSQL, and the Helm values, kept in step with
what the code reads (neither is run by the rest of the suite as written)."""

from pathlib import Path

import pytest
import yaml

from tenant_pipelines.orchestration.instance import tag_limits
from tenant_pipelines.settings import Settings

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as `set -a; . file` reads them (this file uses no quoting or expansion)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            assert key.isidentifier() and " " not in value, line
            pairs[key] = value
    return pairs


def test_the_postgres_env_file_selects_postgres_for_everything() -> None:
    env = env_file(DEPLOY / "postgres.env")
    settings = Settings.from_env(env)
    assert settings.dagster_pg_url and settings.dagster_pg_url.startswith("postgresql://")
    assert settings.db_url.startswith("postgresql://")
    assert settings.backends == "postgres" and settings.backends_pg_url
    databases = {url.rsplit("/", 1)[1] for url in (env["DAGSTER_PG_URL"], env["TENANT_DB_URL"])}
    databases.add(env["TENANT_BACKENDS_PG_URL"].rsplit("/", 1)[1])
    assert len(databases) == 3, "one database each: instance, registry, tenant backends"
    assert settings.data_dir.name != ".tenant-data", "not the SQLite default's DAGSTER_HOME"
    assert dict(settings.plan_concurrency) == dict(Settings.from_env({}).plan_concurrency)


def test_helm_values_queue_runs_as_the_local_instance_does() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    daemon = values["dagsterDaemon"]
    queue = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    defaults = Settings.from_env({})
    assert queue["maxConcurrentRuns"] == defaults.max_concurrent_runs
    assert queue["tagConcurrencyLimits"] == tag_limits(defaults)
    assert queue["dequeueIntervalSeconds"] == 1
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] is False
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", "tenant_pipelines.definitions"]
    assert deployment["port"] == 4000
    assert deployment["env"]["TENANT_BACKENDS"] == "postgres"
    assert {"name": "tenant-pipelines-env"} in deployment["envSecrets"]


def test_the_image_serves_the_code_location_on_port_4000() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert '"-p", "4000", "-m", "tenant_pipelines.definitions"' in dockerfile
