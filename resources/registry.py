"""The tenant registry as a Dagster resource."""

import threading

from dagster import ConfigurableResource

from tenant_pipelines.registry import TenantRegistry

_OPEN: dict[str, TenantRegistry] = {}
_LOCK = threading.Lock()


def open_registry(db_url: str) -> TenantRegistry:
    """One migrated registry (and engine pool) per database URL per process."""
    with _LOCK:
        registry = _OPEN.get(db_url)
        if registry is None:
            registry = _OPEN[db_url] = TenantRegistry.open(db_url)
        return registry


class RegistryResource(ConfigurableResource):
    """The control-plane database: SQLite file by default, PostgreSQL by URL."""

    db_url: str

    def get(self) -> TenantRegistry:
        return open_registry(self.db_url)
