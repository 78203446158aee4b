"""The Dagster resources every op, hook and sensor gets: the registry and the tenant backends."""

from dagster import ConfigurableResource

from resources.base import resolved
from resources.deployer import WorkloadDeployer
from resources.identity import IdentityStore
from resources.mailer import Mailer
from resources.storage import StorageBackend
from resources.traffic import TrafficBoundary
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.context import Backends


class RegistryResource(ConfigurableResource):
    """The control-plane database: a SQLite file by default, PostgreSQL by URL.

    A URL with credentials is an `EnvVar("TENANT_DB_URL")` (see `orchestration.platform`), so
    the UI's resource view shows the variable's name, never the password.
    """

    db_url: str

    def get(self) -> TenantRegistry:
        return TenantRegistry.shared(resolved(self.db_url))


class TenantPlatform(ConfigurableResource):
    """The registry and the tenant backends, plus the domain tenants are served under."""

    domain: str
    registry: RegistryResource
    storage: StorageBackend
    identity: IdentityStore
    traffic: TrafficBoundary
    deployer: WorkloadDeployer
    mailer: Mailer

    def backends(self) -> Backends:
        return Backends(self.storage, self.identity, self.traffic, self.deployer, self.mailer)
