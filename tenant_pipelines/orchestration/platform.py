"""Which backends the platform runs on, chosen in one place from the settings.

`TENANT_BACKENDS` picks where tenants' storage and identity stores live: `local` (the embedded
default, a SQLite file per tenant under the data directory) or `postgres` (a schema and a
NOLOGIN role per tenant and backend on the server at `TENANT_BACKENDS_PG_URL`). The edge routes,
the workloads and the mailer are the local ones either way. Credentials reach resources only as
`EnvVar`, so they never appear in run config or in the UI's resource view.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

from dagster import EnvVar

from resources.deployer import LocalProcessDeployer
from resources.faults import (
    FaultyDeployer,
    FaultyIdentityStore,
    FaultyMailer,
    FaultyStorage,
    FaultyTrafficBoundary,
)
from resources.identity import IdentityStore, LocalSQLiteIdentityStore, PostgresIdentityStore
from resources.mailer import Mailer, OutboxMailer, SendGridMailer
from resources.storage import LocalSQLiteStorage, PostgresSchemaStorage, StorageBackend
from resources.traffic import LocalEdgeRoutes
from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.orchestration.resources import RegistryResource, TenantPlatform
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.db_url import is_sqlite

BACKENDS_PG_URL_VAR = "TENANT_BACKENDS_PG_URL"
DB_URL_VAR = "TENANT_DB_URL"


@dataclass(frozen=True)
class TenantStores:
    """A tenant's storage and identity store, and how its workload finds the identity store."""

    storage: StorageBackend
    identity: IdentityStore
    identity_pg_url: str | None  # None: the workload opens the SQLite identity database


def local_stores(settings: Settings) -> TenantStores:
    data_dir = str(settings.data_dir)
    return TenantStores(
        storage=LocalSQLiteStorage(data_dir=data_dir),
        identity=LocalSQLiteIdentityStore(data_dir=data_dir),
        identity_pg_url=None,
    )


def postgres_stores(settings: Settings) -> TenantStores:
    if not settings.backends_pg_url:
        raise ConfigError(f"TENANT_BACKENDS=postgres needs {BACKENDS_PG_URL_VAR} (a server URL)")
    url = EnvVar(BACKENDS_PG_URL_VAR)
    return TenantStores(
        storage=PostgresSchemaStorage(admin_url=url, deployment=settings.deployment),
        identity=PostgresIdentityStore(admin_url=url, deployment=settings.deployment),
        identity_pg_url=url,
    )


STORES: dict[str, Callable[[Settings], TenantStores]] = {
    "local": local_stores,
    "postgres": postgres_stores,
}


def tenant_stores(settings: Settings) -> TenantStores:
    try:
        build = STORES[settings.backends]
    except KeyError:
        known = ", ".join(STORES)
        raise ConfigError(
            f"TENANT_BACKENDS={settings.backends!r} is unknown (known: {known})"
        ) from None
    return build(settings)


def build_mailer(settings: Settings) -> Mailer:
    if settings.sendgrid_configured:
        return SendGridMailer(
            api_key=EnvVar("SENDGRID_API_KEY"),
            from_email=EnvVar("SENDGRID_FROM"),
            api_host=settings.sendgrid_api_host,
        )
    return OutboxMailer(data_dir=str(settings.data_dir))


def registry_resource(settings: Settings) -> RegistryResource:
    """A SQLite file's path is no secret; any other URL may hold a password, so it travels as
    the name of the variable that holds it."""
    if is_sqlite(settings.db_url):
        return RegistryResource(db_url=settings.db_url)
    return RegistryResource(db_url=EnvVar(DB_URL_VAR))


def build_real_platform(settings: Settings) -> TenantPlatform:
    """Every backend real: the selected tenant stores, the rest on this machine."""
    data_dir = str(settings.data_dir)
    stores = tenant_stores(settings)
    return TenantPlatform(
        domain=settings.domain,
        registry=registry_resource(settings),
        storage=stores.storage,
        identity=stores.identity,
        traffic=LocalEdgeRoutes(data_dir=data_dir, domain=settings.domain),
        deployer=LocalProcessDeployer(
            data_dir=data_dir,
            domain=settings.domain,
            identity_pg_url=stores.identity_pg_url,
            deployment=settings.deployment,
        ),
        mailer=build_mailer(settings),
    )


def build_platform(settings: Settings) -> TenantPlatform:
    """The platform the code location runs on; with TENANT_FAULT_PLAN, every backend obeys it."""
    platform = build_real_platform(settings)
    if settings.fault_plan is not None:
        return with_faults(platform, str(settings.fault_plan))
    return platform


def with_faults(platform: TenantPlatform, plan_path: str) -> TenantPlatform:
    """A copy of the platform whose backends obey the fault plan at `plan_path` (made absolute)."""
    path = os.path.abspath(plan_path)
    return TenantPlatform(
        domain=platform.domain,
        registry=platform.registry,
        storage=FaultyStorage(inner=platform.storage, plan_path=path),
        identity=FaultyIdentityStore(inner=platform.identity, plan_path=path),
        traffic=FaultyTrafficBoundary(inner=platform.traffic, plan_path=path),
        deployer=FaultyDeployer(inner=platform.deployer, plan_path=path),
        mailer=FaultyMailer(
            inner=platform.mailer, plan_path=path, from_email=platform.mailer.from_email
        ),
    )
