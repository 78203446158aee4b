"""Everything a phase needs, as one Dagster resource with nested resources."""

from dagster import ConfigurableResource

from resources.deployer import WorkloadDeployer
from resources.identity import IdentityStore
from resources.mailer import Mailer
from resources.registry import RegistryResource
from resources.storage import StorageBackend
from resources.traffic import TrafficBoundary


class TenantPlatform(ConfigurableResource):
    """The registry and the tenant backends, plus the domain tenants are served under."""

    domain: str
    registry: RegistryResource
    storage: StorageBackend
    identity: IdentityStore
    traffic: TrafficBoundary
    deployer: WorkloadDeployer
    mailer: Mailer
