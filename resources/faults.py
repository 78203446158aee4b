"""Fault injection for tests and drills: wrappers around the real backends, never inside them.

Each wrapper obeys the fault plan (`resources.fault_plan`) for the phase its calls belong to and
otherwise hands the call to the real backend; `tenant_pipelines.composition.with_faults` wraps
them all. They implement the saga's ports (`tenant_pipelines.saga.ports`), as the backends do.
"""

from dataclasses import dataclass

from resources.fault_plan import INJECTED_REASON, injected_fault, raise_injected
from tenant_pipelines.domain.errors import FaultPlanError
from tenant_pipelines.domain.handles import Handle
from tenant_pipelines.domain.mail import Invitation, OutgoingEmail, SendResult
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.ports import (
    IdentityStore,
    Mailer,
    TenantBackend,
    TrafficBoundary,
    WorkloadDeployer,
)


@dataclass(frozen=True, kw_only=True)
class _PassThrough:
    """What a wrapped tenant backend forwards untouched, unless it overrides it."""

    inner: TenantBackend
    plan_path: str

    @property
    def kind(self) -> str:
        return self.inner.kind

    def ensure(self, tenant: TenantSpec) -> Handle:
        return self.inner.ensure(tenant)

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        return self.inner.release(tenant_key, tenant_id)

    def list_existing(self) -> set[str]:
        return self.inner.list_existing()


@dataclass(frozen=True, kw_only=True)
class FaultyStorage(_PassThrough):
    """No phase targets storage: allocate's rules hit the traffic boundary, allocated last."""


@dataclass(frozen=True, kw_only=True)
class FaultyIdentityStore(_PassThrough):
    inner: IdentityStore

    def invitation(self, tenant_key: str) -> Invitation:
        return self.inner.invitation(tenant_key)

    def upgrade(self, tenant_key: str) -> bool:
        return self.inner.upgrade(tenant_key)


@dataclass(frozen=True, kw_only=True)
class FaultyTrafficBoundary(_PassThrough):
    """`ensure` is allocate's last side effect; `open` is mark_active's; `release` obeys the
    "release" phase (a route that will not go away)."""

    inner: TrafficBoundary

    def ensure(self, tenant: TenantSpec) -> Handle:
        raise_injected(self.plan_path, "allocate", tenant.slug)
        return self.inner.ensure(tenant)

    def open(self, tenant: TenantSpec) -> Handle:
        raise_injected(self.plan_path, "mark_active", tenant.slug)
        return self.inner.open(tenant)

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        raise_injected(self.plan_path, "release", tenant_key)
        return self.inner.release(tenant_key, tenant_id)

    def is_open(self, tenant_key: str) -> bool:
        return self.inner.is_open(tenant_key)


@dataclass(frozen=True, kw_only=True)
class FaultyDeployer(_PassThrough):
    inner: WorkloadDeployer

    def ensure(self, tenant: TenantSpec) -> Handle:
        raise_injected(self.plan_path, "deploy", tenant.slug)
        return self.inner.ensure(tenant)

    def stop_all(self) -> list[str]:
        return self.inner.stop_all()


@dataclass(frozen=True, kw_only=True)
class FaultyMailer:
    """Faults come back as a failed SendResult, as the real mailers report failures."""

    inner: Mailer
    plan_path: str

    @property
    def from_email(self) -> str:
        return self.inner.from_email

    def send(self, message: OutgoingEmail) -> SendResult:
        try:
            fault = injected_fault(self.plan_path, "send_welcome_emails", message.tenant_slug)
        except FaultPlanError as error:  # nothing was sent: a plain failure, not "maybe sent"
            return SendResult(False, None, None, str(error), 0)
        if fault is not None:
            return SendResult(False, None, None, INJECTED_REASON, 0)
        return self.inner.send(message)

    def release(self, tenant_key: str, tenant_id: str) -> bool:
        return self.inner.release(tenant_key, tenant_id)
