"""The composition root: every adapter of a deployment, chosen and built in this one place.

A deployment is the embedded default (SQLite files and local processes under the data directory),
the same with the tenants' storage and identity stores on PostgreSQL (`TENANT_BACKENDS=postgres`:
a schema and a NOLOGIN role per tenant and backend on `TENANT_BACKENDS_PG_URL`), or a test's data
directory; SendGrid replaces the outbox when `SENDGRID_API_KEY` is set, and with
`TENANT_FAULT_PLAN` every backend obeys a fault plan. The workloads are the local ones either
way, and so are the edge's routes on one host; with several hosts the routes are in the registry
(`routes_in_registry`), where the control host's edge reads every host's.

Two kinds of caller get the same adapters from `compose`: the code location's `platform`
resource (`orchestration.resources.TenantPlatform`), when a run or a sensor tick starts, with the
secrets Dagster resolved from its `EnvVar`s; and everything outside a run (`tenantctl inventory`,
the workload restore at `up`, the benchmarks) through `build_platform`, which reads the secrets
from the environment there and then. Plain Python: no Dagster here.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

from resources.deployer import LocalProcessDeployer
from resources.faults import (
    FaultyDeployer,
    FaultyIdentityStore,
    FaultyMailer,
    FaultyStorage,
    FaultyTrafficBoundary,
)
from resources.identity import LocalSQLiteIdentityStore, PostgresIdentityStore
from resources.mailer import OutboxMailer, SendGridMailer
from resources.route_table import LocalRouteTable
from resources.storage import LocalSQLiteStorage, PostgresSchemaStorage
from resources.traffic import LocalEdgeRoutes, RegistryRoutes
from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.domain.routes import RouteSource
from tenant_pipelines.domain.tenant import served_at
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.context import Backends
from tenant_pipelines.saga.ports import (
    IdentityStore,
    Mailer,
    TenantBackend,
    TrafficBoundary,
    WorkloadDeployer,
)
from tenant_pipelines.settings import DEFAULT_BACKENDS, DEFAULT_SENDGRID_API_HOST, Settings

# The variables that hold secrets: the `platform` resource names them (`EnvVar`), never copies.
BACKENDS_PG_URL_VAR = "TENANT_BACKENDS_PG_URL"
DB_URL_VAR = "TENANT_DB_URL"
SENDGRID_API_KEY_VAR = "SENDGRID_API_KEY"
SENDGRID_FROM_VAR = "SENDGRID_FROM"


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    """What a deployment's adapters are built from; secrets hold their values (kept out of the
    repr). The `platform` resource has a config field of the same name for each."""

    domain: str
    data_dir: str
    db_url: str = field(repr=False)
    https_port: int = 443  # the edge's: tenants' addresses name it unless 443
    backends: str = DEFAULT_BACKENDS
    backends_pg_url: str | None = field(default=None, repr=False)
    deployment: str = ""
    sendgrid_api_key: str | None = field(default=None, repr=False)
    sendgrid_from: str | None = None
    sendgrid_api_host: str = DEFAULT_SENDGRID_API_HOST
    fault_plan: str | None = None
    host_name: str = ""  # this host's name among the platform's (support.hosts)
    routes_in_registry: bool = False  # several hosts: the edge's routes are the registry's


def config_fields() -> list[str]:
    return [f.name for f in fields(DeploymentConfig)]


@dataclass(frozen=True, kw_only=True)
class Platform:
    """A deployment's adapters: the registry, the tenant backends, the mailer, and the domain
    tenants are served under. Each backend is typed by the saga's port it implements."""

    domain: str
    db_url: str = field(repr=False)
    https_port: int = 443
    storage: TenantBackend
    identity: IdentityStore
    traffic: TrafficBoundary
    deployer: WorkloadDeployer
    mailer: Mailer
    host_name: str = ""  # where its runs act: a tenant placed elsewhere is refused ("": anywhere)

    @property
    def registry(self) -> TenantRegistry:
        """Opened when first asked for (one engine per URL and process): a command that can
        answer without it (inventory) still answers when the database cannot be reached."""
        return TenantRegistry.shared(self.db_url)

    def backends(self) -> Backends:
        return Backends(self.storage, self.identity, self.traffic, self.deployer, self.mailer)

    @property
    def served_at(self) -> str:
        return served_at(self.domain, self.https_port)


@dataclass(frozen=True)
class TenantStores:
    """A tenant's storage and identity store, and how its workload finds the identity store."""

    storage: TenantBackend
    identity: IdentityStore
    identity_pg_url: str | None  # None: the workload opens the SQLite identity database


def local_stores(config: DeploymentConfig) -> TenantStores:
    return TenantStores(
        storage=LocalSQLiteStorage(data_dir=config.data_dir),
        identity=LocalSQLiteIdentityStore(data_dir=config.data_dir),
        identity_pg_url=None,
    )


def postgres_stores(config: DeploymentConfig) -> TenantStores:
    url = _required(config.backends_pg_url, BACKENDS_PG_URL_VAR)
    return TenantStores(
        storage=PostgresSchemaStorage(admin_url=url, deployment=config.deployment),
        identity=PostgresIdentityStore(admin_url=url, deployment=config.deployment),
        identity_pg_url=url,
    )


STORES: dict[str, Callable[[DeploymentConfig], TenantStores]] = {
    "local": local_stores,
    "postgres": postgres_stores,
}


def check_settings(settings: Settings) -> None:
    """Refuse a selection of backends that cannot work, when the code location loads or a
    command starts rather than at the first run."""
    if settings.backends not in STORES:
        known = ", ".join(STORES)
        raise ConfigError(f"TENANT_BACKENDS={settings.backends!r} is unknown (known: {known})")
    if settings.backends == "postgres" and not settings.backends_pg_url:
        raise ConfigError(f"TENANT_BACKENDS=postgres needs {BACKENDS_PG_URL_VAR} (a server URL)")


def build_mailer(config: DeploymentConfig) -> Mailer:
    if config.sendgrid_api_key is None:
        return OutboxMailer(data_dir=config.data_dir)
    return SendGridMailer(
        api_key=config.sendgrid_api_key,
        from_email=_required(config.sendgrid_from, SENDGRID_FROM_VAR),
        api_host=config.sendgrid_api_host,
    )


def build_traffic(config: DeploymentConfig) -> TrafficBoundary:
    if not config.routes_in_registry:
        return LocalEdgeRoutes(data_dir=config.data_dir, domain=config.domain)
    return RegistryRoutes(
        records=TenantRegistry.shared(config.db_url).routes,
        data_dir=config.data_dir,
        domain=config.domain,
        host_name=config.host_name,
    )


def route_source(settings: Settings) -> RouteSource:
    """Where the edge's routes are read: the registry's with several hosts, else the edge's own
    table on this host."""
    if settings.worker_hosts:
        return TenantRegistry.shared(settings.db_url).routes
    return LocalRouteTable(settings.data_dir)


def build_real_platform(config: DeploymentConfig) -> Platform:
    """Every backend real: the selected tenant stores, the rest on this machine."""
    stores = STORES[config.backends](config)
    return Platform(
        domain=config.domain,
        db_url=config.db_url,
        https_port=config.https_port,
        storage=stores.storage,
        identity=stores.identity,
        traffic=build_traffic(config),
        deployer=LocalProcessDeployer(
            data_dir=config.data_dir,
            domain=served_at(config.domain, config.https_port),  # the workload's own address
            identity_pg_url=stores.identity_pg_url,
            deployment=config.deployment,
        ),
        mailer=build_mailer(config),
        host_name=config.host_name,
    )


def compose(config: DeploymentConfig) -> Platform:
    """The platform a deployment runs on; with a fault plan, every backend obeys it."""
    platform = build_real_platform(config)
    if config.fault_plan is not None:
        return with_faults(platform, config.fault_plan)
    return platform


def with_faults(platform: Platform, plan_path: str) -> Platform:
    """A copy of the platform whose backends obey the fault plan at `plan_path` (made absolute)."""
    path = os.path.abspath(plan_path)
    return Platform(
        domain=platform.domain,
        db_url=platform.db_url,
        https_port=platform.https_port,
        storage=FaultyStorage(inner=platform.storage, plan_path=path),
        identity=FaultyIdentityStore(inner=platform.identity, plan_path=path),
        traffic=FaultyTrafficBoundary(inner=platform.traffic, plan_path=path),
        deployer=FaultyDeployer(inner=platform.deployer, plan_path=path),
        mailer=FaultyMailer(inner=platform.mailer, plan_path=path),
        host_name=platform.host_name,
    )


def deployment_config(settings: Settings, env: Mapping[str, str] | None = None) -> DeploymentConfig:
    """The deployment `settings` select, its secrets read from `env` (the process's environment
    by default) now: outside a run nothing else would resolve them."""
    check_settings(settings)
    env = os.environ if env is None else env
    sendgrid = settings.sendgrid_configured
    return DeploymentConfig(
        domain=settings.domain,
        data_dir=str(settings.data_dir),
        db_url=settings.db_url,
        https_port=settings.https_port,
        backends=settings.backends,
        backends_pg_url=settings.backends_pg_url,
        deployment=settings.deployment,
        sendgrid_api_key=_required(env.get(SENDGRID_API_KEY_VAR), SENDGRID_API_KEY_VAR)
        if sendgrid
        else None,
        sendgrid_from=env.get(SENDGRID_FROM_VAR) if sendgrid else None,
        sendgrid_api_host=settings.sendgrid_api_host,
        fault_plan=str(settings.fault_plan) if settings.fault_plan is not None else None,
        host_name=settings.host_name,
        routes_in_registry=bool(settings.worker_hosts),
    )


def build_platform(settings: Settings, env: Mapping[str, str] | None = None) -> Platform:
    """The adapters of the deployment `settings` select, for use outside a run."""
    return compose(deployment_config(settings, env))


def _required(value: str | None, variable: str) -> str:
    if not value:
        raise ConfigError(f"{variable} is not set")
    return value
