"""The registry's records: what every reader of the control-plane database gets back."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tenant_pipelines.domain.tenant import TenantSpec

if TYPE_CHECKING:  # its models (and email validation) load only where requests are parsed
    from tenant_pipelines.domain.request import TenantRequest


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    slug: str
    org: str
    plan: str
    admin_email: str
    subject: str
    role: str
    state: str  # RequestState
    reason: str | None  # why it was rejected
    run_id: str | None  # the provisioning run that owns it (claimed in Validate)
    tenant_id: str | None
    created_at: datetime
    updated_at: datetime
    worker_host: str | None = None  # where its tenant is placed (None: before placement)

    def to_request(self) -> "TenantRequest":
        from tenant_pipelines.domain.request import TenantRequest  # its models load on demand

        return TenantRequest.parse(
            {
                "request_id": self.request_id,
                "slug": self.slug,
                "org": self.org,
                "plan": self.plan,
                "admin_email": self.admin_email,
                "requested_by": {"subject": self.subject, "role": self.role},
            }
        )


@dataclass(frozen=True)
class TenantRecord:
    tenant_id: str
    request_id: str
    slug: str
    org: str
    plan: str
    admin_email: str
    state: str  # TenantState
    last_run_id: str | None
    failed_step: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    worker_host: str | None = None  # where its runs and workload live (None: anywhere)

    @property
    def spec(self) -> TenantSpec:
        return TenantSpec(
            tenant_id=self.tenant_id,
            request_id=self.request_id,
            slug=self.slug,
            org=self.org,
            plan=self.plan,
            admin_email=self.admin_email,
            worker_host=self.worker_host,
        )


@dataclass(frozen=True)
class LedgerEntry:
    tenant_id: str
    kind: str  # a ResourceKind, or "email:<kind>" for a welcome email
    state: str  # LedgerState
    handle: dict[str, Any]  # what the backend returned (JSON)
    run_id: str | None  # run that last changed it
    seq: int  # allocation order: compensation releases by descending seq
    updated_at: datetime


@dataclass(frozen=True)
class CompensationRecord:
    failed_run_id: str
    tenant_id: str
    compensation_run_id: str | None
    created_at: datetime
    finished_at: datetime | None
    attempts: int = 1  # compensation runs launched for this failed run
    gave_up_at: datetime | None = None  # attempts spent: reported, left for a person


class OperationKind(StrEnum):
    """The lifecycle operations that exclude each other on one tenant."""

    RETRY = "retry"
    DECOMMISSION = "decommission"
    COMPENSATION = "compensation"


@dataclass(frozen=True)
class OperationRecord:
    """The one lifecycle operation a tenant has in flight (the registry's claim)."""

    tenant_id: str
    kind: str  # OperationKind
    holder: str  # who claimed it: a compensation's failed run, or a command's claim id
    run_id: str | None  # the run doing it, once launched
    claimed_at: datetime
