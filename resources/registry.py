"""The tenant registry as a Dagster resource."""

from dagster import ConfigurableResource

from tenant_pipelines.registry import TenantRegistry


class RegistryResource(ConfigurableResource):
    """The control-plane database: SQLite file by default, PostgreSQL by URL."""

    db_url: str

    def get(self) -> TenantRegistry:
        return TenantRegistry.shared(self.db_url)
