"""What the saga needs from the world, as `Protocol`s: the registry, the tenant backends, the
mailer, an event sink and a clock. Adapters in `resources/` and `registry/` satisfy them
structurally; the saga never imports an adapter."""

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
    def invitation(self, tenant_key: str) -> Invitation: ...


class TrafficBoundary(TenantBackend, Protocol):
    def open(self, tenant: TenantSpec) -> Handle: ...


class Mailer(Protocol):
    @property
    def from_email(self) -> str: ...

    def send(self, message: OutgoingEmail) -> SendResult: ...

    def release(self, tenant_key: str, tenant_id: str) -> bool: ...


class Registry(Protocol):
    """The control-plane database, as far as the saga reads and writes it."""

    def get_request(self, request_id: str) -> RequestRecord: ...

    def claim_request(
        self, request_id: str, run_id: str, root_run_id: str | None = None
    ) -> bool: ...

    def reject_request(self, request_id: str, reason: str) -> RequestRecord: ...

    def reserve_tenant(self, request: RequestRecord) -> TenantRecord: ...

    def get_tenant_by_id(self, tenant_id: str) -> TenantRecord: ...

    def record_run(self, tenant_id: str, run_id: str) -> None: ...

    def transition(
        self,
        tenant_id: str,
        target: str,
        *,
        failed_step: str | None = None,
        failure_reason: str | None = None,
    ) -> TenantRecord: ...

    def ledger_get(self, tenant_id: str, kind: str) -> LedgerEntry | None: ...

    def ledger_set(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> LedgerEntry: ...

    def ledger(self, tenant_id: str) -> list[LedgerEntry]: ...

    def live_ledger(self) -> list[tuple[TenantRecord, LedgerEntry]]: ...

    def claim_compensation(self, failed_run_id: str, tenant_id: str) -> bool: ...

    def get_compensation(self, failed_run_id: str) -> CompensationRecord | None: ...

    def finish_compensation(self, failed_run_id: str) -> None: ...

    def unfinished_compensations(self, tenant_id: str) -> list[CompensationRecord]: ...

    def set_compensation_run(self, failed_run_id: str, compensation_run_id: str) -> None: ...

    def set_operation_run(self, tenant_id: str, holder: str, run_id: str) -> bool: ...

    def release_operation(
        self, tenant_id: str, *, holder: str | None = None, run_id: str | None = None
    ) -> bool: ...
