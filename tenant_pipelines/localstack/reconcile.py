"""The local platform's tenant workloads live and die with `tenantctl up`."""

from tenant_pipelines.domain.states import LedgerState, TenantState
from tenant_pipelines.orchestration.platform import build_platform
from tenant_pipelines.settings import Settings


class LocalWorkloads:
    """Restore the workload of every active tenant from the registry; stop them all."""

    def __init__(self, settings: Settings) -> None:
        self._platform = build_platform(settings)

    def restore(self) -> list[str]:
        registry = self._platform.registry.get()
        restored = []
        for tenant in registry.list_tenants(TenantState.ACTIVE):
            handle = self._platform.deployer.ensure(tenant.spec)
            registry.ledger_set(
                tenant.tenant_id, handle.kind, LedgerState.ALLOCATED, handle=handle.to_json()
            )
            restored.append(tenant.spec.key)
        return restored

    def stop_all(self) -> list[str]:
        return self._platform.deployer.stop_all()
