"""The Dagster resource every op, hook and sensor gets (key `platform`): the deployment's
configuration, from which it builds the adapters (`tenant_pipelines.composition`).

The ports are declared once, in `saga.ports`; this resource only carries what the composition
root needs, as config fields the UI shows. Secrets are `EnvVar`s, so the UI's resource view and
run config show a variable's name, never its value; Dagster resolves them when it initialises
the resource for a run or a sensor tick, and `build` hands the resolved values to `compose`.
"""

from dagster import ConfigurableResource, EnvVar
from pydantic import PrivateAttr

from tenant_pipelines.composition import (
    BACKENDS_PG_URL_VAR,
    DB_URL_VAR,
    SENDGRID_API_KEY_VAR,
    SENDGRID_FROM_VAR,
    DeploymentConfig,
    Platform,
    check_settings,
    compose,
    config_fields,
)
from tenant_pipelines.settings import DEFAULT_BACKENDS, DEFAULT_SENDGRID_API_HOST, Settings
from tenant_pipelines.support.db_url import is_sqlite


class TenantPlatform(ConfigurableResource):
    """The registry and the tenant backends, plus the domain tenants are served under; the
    fields are `composition.DeploymentConfig`'s."""

    domain: str
    data_dir: str
    db_url: str
    https_port: int = 443
    backends: str = DEFAULT_BACKENDS
    backends_pg_url: str | None = None
    deployment: str = ""
    sendgrid_api_key: str | None = None
    sendgrid_from: str | None = None
    sendgrid_api_host: str = DEFAULT_SENDGRID_API_HOST
    fault_plan: str | None = None
    host_name: str = ""
    routes_in_registry: bool = False

    _platform: Platform | None = PrivateAttr(default=None)

    @classmethod
    def for_settings(cls, settings: Settings) -> "TenantPlatform":
        """The resource of the deployment `settings` select. A SQLite file's path is no secret;
        any other registry URL may hold a password, so it travels as its variable's name."""
        check_settings(settings)
        sendgrid = settings.sendgrid_configured
        postgres = settings.backends == "postgres"
        return cls(
            domain=settings.domain,
            data_dir=str(settings.data_dir),
            db_url=settings.db_url if is_sqlite(settings.db_url) else EnvVar(DB_URL_VAR),
            https_port=settings.https_port,
            backends=settings.backends,
            backends_pg_url=EnvVar(BACKENDS_PG_URL_VAR) if postgres else None,
            deployment=settings.deployment,
            sendgrid_api_key=EnvVar(SENDGRID_API_KEY_VAR) if sendgrid else None,
            sendgrid_from=EnvVar(SENDGRID_FROM_VAR) if sendgrid else None,
            sendgrid_api_host=settings.sendgrid_api_host,
            fault_plan=str(settings.fault_plan) if settings.fault_plan is not None else None,
            host_name=settings.host_name,
            routes_in_registry=bool(settings.worker_hosts),
        )

    def build(self) -> Platform:
        """The adapters, built once per initialised resource (a run, a tick)."""
        if self._platform is None:
            values = {name: getattr(self, name) for name in config_fields()}
            self._platform = compose(DeploymentConfig(**values))
        return self._platform
