"""The local platform's tenant workloads live and die with `tenantctl up`."""

from functools import cached_property
from typing import TYPE_CHECKING

from tenant_pipelines.domain.states import LedgerState, TenantState
from tenant_pipelines.settings import Settings

if TYPE_CHECKING:
    from tenant_pipelines.composition import Platform


class LocalWorkloads:
    """Restore the workload of every active tenant placed on this host (or before placement)
    from the registry; stop them all. A tenant placed on another host has its workload there.

    The adapters (`composition`) are built when first needed, not before `up` holds its
    lock: a refused `up` answers at once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @cached_property
    def _platform(self) -> "Platform":
        from tenant_pipelines.composition import build_platform

        return build_platform(self._settings)

    def restore(self) -> list[str]:
        registry = self._platform.registry
        restored = []
        for tenant in registry.tenants.all(TenantState.ACTIVE):
            if tenant.worker_host not in (None, self._settings.host_name):
                continue
            # A store made by an older version gets the admin sign-in's columns first.
            self._platform.identity.upgrade(tenant.spec.key)
            handle = self._platform.deployer.ensure(tenant.spec)
            registry.ledger.set(
                tenant.tenant_id, handle.kind, LedgerState.ALLOCATED, handle=handle.to_json()
            )
            restored.append(tenant.spec.key)
        return restored

    def stop_all(self) -> list[str]:
        return self._platform.deployer.stop_all()
