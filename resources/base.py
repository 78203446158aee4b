"""What every tenant backend promises: idempotent ensure and release, and a listing."""

from abc import ABC, abstractmethod

from dagster import ConfigurableResource, EnvVar

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.domain.handles import Handle
from tenant_pipelines.domain.tenant import TenantSpec


def resolved(value: str) -> str:
    """A field's value as a run sees it.

    Secrets are `EnvVar` fields, which Dagster resolves when it initialises a resource for a run.
    Code that calls a backend or the registry resource directly (`tenantctl inventory`, the
    workload restore at `up`) gets the `EnvVar` itself: read the variable then, from the
    caller's environment.
    """
    if not isinstance(value, EnvVar):
        return value
    found = value.get_value()
    if not found:
        raise ConfigError(f"{value.env_var_name} is not set")
    return found


class TenantBackend(ConfigurableResource, ABC):
    """A backend that holds one thing per tenant, named by the tenant key `<slug>-<org>`."""

    @property
    @abstractmethod
    def kind(self) -> str:
        """The ledger kind (a ResourceKind)."""

    @abstractmethod
    def ensure(self, tenant: TenantSpec) -> Handle:
        """Create the tenant's thing if missing, recording the tenant id it is made for; return
        it as it is. Safe to call again. A thing under the key made for another tenant id is
        refused (`OwnedByAnotherTenant`, a permanent error) and left as it was."""

    @abstractmethod
    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        """Remove the tenant's thing if present; True if something was removed. With a tenant
        id, a thing made for another tenant id is left untouched (False); None is the
        operator's cleanup by key alone."""

    @abstractmethod
    def list_existing(self) -> set[str]:
        """Tenant keys that have something in this backend (for leak checks)."""
