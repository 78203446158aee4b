"""What one step of the saga works with: the ports, and which run it is."""

import time
from dataclasses import dataclass, field
from typing import Any

from tenant_pipelines.domain.errors import WrongHost
from tenant_pipelines.domain.events import make_event
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.ports import (
    Clock,
    EventSink,
    IdentityStore,
    Mailer,
    Registry,
    TenantBackend,
    TrafficBoundary,
)


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Backends:
    storage: TenantBackend
    identity: IdentityStore
    traffic: TrafficBoundary
    deployer: TenantBackend
    mailer: Mailer

    def by_kind(self) -> dict[str, TenantBackend]:
        """The backends that hold a resource per tenant, by ledger kind, in allocation order."""
        return {b.kind: b for b in (self.storage, self.identity, self.traffic, self.deployer)}


@dataclass(frozen=True)
class SagaContext:
    registry: Registry
    backends: Backends
    served_at: str  # tenants are served at https://<slug>-<org>.<served_at> (domain[:port])
    run_id: str
    emit: EventSink
    root_run_id: str | None = None  # the first run of a re-execution chain
    requested_by: str | None = None  # who asked for this run (a token's subject, an operator)
    clock: Clock = field(default_factory=SystemClock)
    # The host this run acts on (`support.hosts`); None: a caller that places nothing.
    host: str | None = None

    def check_host(self, tenant: TenantSpec) -> None:
        """Refuse (WrongHost) to act on a tenant placed on another host than this run's: its
        workload and route are there, and what is found missing here was never here."""
        placed_on = tenant.worker_host
        if placed_on is not None and self.host is not None and placed_on != self.host:
            raise WrongHost(tenant.key, placed_on, self.host)

    def event(self, event_type: str, tenant: TenantSpec, step: str | None, **details: Any) -> None:
        self.emit(
            make_event(
                event_type,
                tenant=tenant.slug,
                org=tenant.org,
                run_id=self.run_id,
                step=step,
                details=details,
            )
        )
