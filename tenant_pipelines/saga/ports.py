"""What the saga needs from the world, as `Protocol`s: the registry, the tenant backends, the
mailer, an event sink and a clock. These are the only declarations of the ports: adapters in
`resources/` and `registry/` satisfy them structurally (plain classes, no base to inherit), the
saga never imports an adapter, and `tenant_pipelines.composition` picks the adapters."""

from collections.abc import Callable
from typing import Any, Protocol

from tenant_pipelines.domain.events import AuditEvent
from tenant_pipelines.domain.handles import Handle
from tenant_pipelines.domain.mail import Invitation, OutgoingEmail, SendResult
from tenant_pipelines.domain.records import (
    CompensationRecord,
    LedgerEntry,
    RequestRecord,
    TenantRecord,
)
from tenant_pipelines.domain.tenant import TenantSpec

EventSink = Callable[[AuditEvent], None]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class TenantBackend(Protocol):
    """Holds one thing per tenant, named by the tenant key; ensure and release are idempotent.
    Each thing records the tenant id it was made for: `ensure` refuses another tenant id's
    (a permanent error, nothing changed), `release` with a tenant id leaves it (False)."""

    @property
    def kind(self) -> str: ...

    def ensure(self, tenant: TenantSpec) -> Handle: ...

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool: ...

    def list_existing(self) -> set[str]: ...


class IdentityStore(TenantBackend, Protocol):
    """Who may sign in to a tenant."""

    def invitation(self, tenant_key: str) -> Invitation:
        """The first admin's invitation; raises NotFound if the store does not exist."""
        ...

    def upgrade(self, tenant_key: str) -> bool:
        """Bring an existing store to the current schema (idempotent); False if there is none.
        `tenantctl up` calls it for every active tenant before starting its workload."""
        ...


class TrafficBoundary(TenantBackend, Protocol):
    """Decides whether requests for a tenant's host reach its workload."""

    def open(self, tenant: TenantSpec) -> Handle:
        """Let traffic through (creating the route if missing). Safe to call again."""
        ...

    def is_open(self, tenant_key: str) -> bool:
        """Whether traffic currently reaches the tenant."""
        ...


class WorkloadDeployer(TenantBackend, Protocol):
    """Runs tenants' workloads; `ensure` returns only once the workload passes readiness."""

    def stop_all(self) -> list[str]:
        """Stop every running workload, touching nothing else (`tenantctl up` at its end); the
        tenant keys stopped."""
        ...


class Mailer(Protocol):
    """Delivers one email; never raises for a delivery failure, returns it as a SendResult."""

    @property
    def from_email(self) -> str: ...

    def send(self, message: OutgoingEmail) -> SendResult:
        """Deliver `message` once (retrying only where that cannot duplicate it)."""
        ...

    def release(self, tenant_key: str, tenant_id: str) -> bool:
        """Forget what this mailer keeps for the tenant (at decommission), so that a later
        tenant of the same key may receive mail; True if there was something to forget."""
        ...


class Requests(Protocol):
    """Tenant requests, as Validate and the compensation policy read and change them."""

    def get(self, request_id: str) -> RequestRecord: ...

    def claim(self, request_id: str, run_id: str, root_run_id: str | None = None) -> bool: ...

    def reject(self, request_id: str, reason: str) -> RequestRecord: ...


class Tenants(Protocol):
    """Tenants: reserved once per request, moved along their state machine."""

    def reserve(self, request: RequestRecord) -> TenantRecord: ...

    def get_by_id(self, tenant_id: str) -> TenantRecord: ...

    def record_run(self, tenant_id: str, run_id: str) -> None: ...

    def transition(
        self,
        tenant_id: str,
        target: str,
        *,
        failed_step: str | None = None,
        failure_reason: str | None = None,
    ) -> TenantRecord: ...


class Ledger(Protocol):
    """The resource ledger: what each tenant holds, in allocation order."""

    def get(self, tenant_id: str, kind: str) -> LedgerEntry | None: ...

    def set(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> LedgerEntry: ...

    def claim(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        allowed: Callable[[LedgerEntry | None], bool],
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> tuple[bool, LedgerEntry | None]: ...

    def entries(self, tenant_id: str) -> list[LedgerEntry]: ...

    def live(self) -> list[tuple[TenantRecord, LedgerEntry]]: ...


class Compensations(Protocol):
    """Compensation claims: one per failed run."""

    def claim(self, failed_run_id: str, tenant_id: str) -> bool: ...

    def get(self, failed_run_id: str) -> CompensationRecord | None: ...

    def set_run(self, failed_run_id: str, compensation_run_id: str) -> None: ...

    def finish(self, failed_run_id: str) -> None: ...

    def unfinished(self, tenant_id: str) -> list[CompensationRecord]: ...


class Operations(Protocol):
    """The tenant's one lifecycle operation, as the runs doing it name and release it."""

    def set_run(self, tenant_id: str, holder: str, run_id: str) -> bool: ...

    def release(
        self, tenant_id: str, *, holder: str | None = None, run_id: str | None = None
    ) -> bool: ...


class Registry(Protocol):
    """The control-plane database, as far as the saga reads and writes it: one store per kind
    of record (`registry.store.TenantRegistry` in production)."""

    @property
    def requests(self) -> Requests: ...

    @property
    def tenants(self) -> Tenants: ...

    @property
    def ledger(self) -> Ledger: ...

    @property
    def compensations(self) -> Compensations: ...

    @property
    def operations(self) -> Operations: ...
