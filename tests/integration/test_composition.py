"""The composition root: each deployment gets its adapters from one place, the same ones inside a
run (the `platform` resource, its secrets resolved by Dagster) as outside it (`build_platform`)."""

from pathlib import Path

import pytest
from dagster import EnvVar, build_resources

from resources.deployer import LocalProcessDeployer
from resources.faults import FaultyDeployer, FaultyMailer
from resources.identity import LocalSQLiteIdentityStore, PostgresIdentityStore
from resources.mailer import OutboxMailer, SendGridMailer
from resources.storage import LocalSQLiteStorage, PostgresSchemaStorage
from resources.traffic import LocalEdgeRoutes
from tenant_pipelines.composition import Platform, build_platform
from tenant_pipelines.definitions import build_definitions
from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.runtime.launchers import SiblingLaunchers
from tenant_pipelines.settings import Settings

pytestmark = pytest.mark.integration

PG_URL = "postgresql://owner:s3cret@127.0.0.1:5432/backends"
DB_URL = "postgresql://owner:s3cret@127.0.0.1:5432/registry"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment of the embedded default under `tmp_path`; tests add to it, and what
    they add is also set in this process (where Dagster resolves `EnvVar`s)."""
    for name in ("TENANT_BACKENDS", "TENANT_BACKENDS_PG_URL", "TENANT_DB_URL", "TENANT_FAULT_PLAN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SENDGRID_API_KEY", "SENDGRID_FROM", "TENANT_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)
    return {"TENANT_DATA_DIR": str(tmp_path / "data")}


def choose(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **more: str) -> Settings:
    env.update(more)
    for name, value in more.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env(env)


def in_a_run(settings: Settings) -> Platform:
    """The adapters as an op gets them: the resource initialised by Dagster, then built."""
    with build_resources({"platform": TenantPlatform.for_settings(settings)}) as resources:
        platform: TenantPlatform = resources.platform
        return platform.build()


def test_the_embedded_default_is_local_everywhere(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    platform = build_platform(settings, env)
    data_dir = str(settings.data_dir)
    assert platform.storage == LocalSQLiteStorage(data_dir=data_dir)
    assert platform.identity == LocalSQLiteIdentityStore(data_dir=data_dir)
    assert platform.traffic == LocalEdgeRoutes(data_dir=data_dir, domain="localhost")
    assert platform.deployer == LocalProcessDeployer(  # its workloads name their address, port too
        data_dir=data_dir, domain="localhost:8443", deployment=settings.deployment
    )
    assert platform.mailer == OutboxMailer(data_dir=data_dir)
    assert platform.db_url == settings.db_url and platform.db_url.startswith("sqlite:///")
    assert in_a_run(settings) == platform


def test_postgres_backends_get_the_url_from_the_environment(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = choose(
        monkeypatch,
        env,
        TENANT_BACKENDS="postgres",
        TENANT_BACKENDS_PG_URL=PG_URL,
        TENANT_DB_URL=DB_URL,
        TENANT_DEPLOYMENT="prod",
    )
    platform = build_platform(settings, env)
    assert platform.storage == PostgresSchemaStorage(admin_url=PG_URL, deployment="prod")
    assert platform.identity == PostgresIdentityStore(admin_url=PG_URL, deployment="prod")
    assert isinstance(platform.deployer, LocalProcessDeployer)
    assert platform.deployer.identity_pg_url == PG_URL
    assert isinstance(platform.traffic, LocalEdgeRoutes)
    assert platform.db_url == DB_URL
    assert "s3cret" not in repr(platform)
    # The code location's resource names the variables; Dagster resolves them to the same adapters.
    resource = TenantPlatform.for_settings(settings)
    assert resource.backends_pg_url == EnvVar("TENANT_BACKENDS_PG_URL")
    assert resource.db_url == EnvVar("TENANT_DB_URL")
    assert in_a_run(settings) == platform


def test_sendgrid_replaces_the_outbox_and_needs_its_sender(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = choose(monkeypatch, env, SENDGRID_API_KEY="SG.key", SENDGRID_FROM="ops@corp.example")
    platform = build_platform(settings, env)
    assert platform.mailer == SendGridMailer(api_key="SG.key", from_email="ops@corp.example")
    assert in_a_run(settings) == platform
    del env["SENDGRID_FROM"]
    with pytest.raises(ConfigError, match="SENDGRID_FROM is not set"):
        build_platform(Settings.from_env(env), env)


def test_a_fault_plan_wraps_every_backend(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = choose(monkeypatch, env, TENANT_FAULT_PLAN=str(tmp_path / "plan.json"))
    platform = build_platform(settings, env)
    assert isinstance(platform.deployer, FaultyDeployer)
    assert isinstance(platform.mailer, FaultyMailer)
    assert in_a_run(settings) == platform


@pytest.mark.parametrize("backends", ["local", "postgres"])
def test_every_deployment_launches_compensation_from_its_runs(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, backends: str
) -> None:
    """The launcher depends on who launches (a run's hook, a sensor, the API server), not on
    where tenants' stores live: both deployments give their runs the same one."""
    settings = choose(monkeypatch, env, TENANT_BACKENDS=backends, TENANT_BACKENDS_PG_URL=PG_URL)
    resources = build_definitions(settings).resources or {}
    assert isinstance(resources["launcher"], SiblingLaunchers)
    assert isinstance(resources["platform"], TenantPlatform)
    assert resources["platform"].backends == backends
