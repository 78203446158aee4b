"""The provisioning saga's phases as plain Python: the ops call these, tests call them directly.

Every phase is idempotent through the resource ledger: it marks an entry `allocating` before the
side effect and `allocated` after it, and backends' `ensure` is itself idempotent, so running a
phase again (retry, re-execution, resume) finds its work done and creates nothing twice. A phase
re-establishes the prerequisites of earlier phases, because re-execution from failure skips those
phases even when compensation has released what they made.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resources.base import Handle, TenantBackend
from resources.deployer import WorkloadDeployer
from resources.identity import IdentityStore
from resources.mailer import Mailer
from resources.storage import StorageBackend
from resources.traffic import TrafficBoundary
from tenant_pipelines import emails
from tenant_pipelines.audit import AuditEvent, make_event
from tenant_pipelines.deadline import call_with_timeout
from tenant_pipelines.errors import BusinessRefusal, CompensationInProgress, PermanentError
from tenant_pipelines.models import TenantSpec
from tenant_pipelines.plans import check_role_admits, get_plan
from tenant_pipelines.registry import LIVE_LEDGER_STATES, TenantRegistry
from tenant_pipelines.states import TenantState

READINESS_MARGIN_S = 5.0
COMPENSATION_WAIT_S = 60.0
COMPENSATION_POLL_S = 0.5


@dataclass(frozen=True)
class Backends:
    storage: StorageBackend
    identity: IdentityStore
    traffic: TrafficBoundary
    deployer: WorkloadDeployer
    mailer: Mailer

    def by_kind(self) -> dict[str, TenantBackend]:
        return {b.kind: b for b in (self.storage, self.identity, self.traffic, self.deployer)}


@dataclass(frozen=True)
class PhaseContext:
    registry: TenantRegistry
    backends: Backends
    domain: str
    run_id: str
    emit: Callable[[AuditEvent], None]
    root_run_id: str | None = None

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


def validate(ctx: PhaseContext, request_id: str) -> TenantSpec:
    """Claim the request for this run, check plan and role, reserve the slug."""
    registry = ctx.registry
    request = registry.get_request(request_id)
    if not registry.claim_request(request_id, ctx.run_id, ctx.root_run_id):
        owner = registry.get_request(request_id).run_id
        raise PermanentError(f"request {request_id} is already owned by run {owner}")
    if request.state == "rejected":
        raise BusinessRefusal(f"request {request_id} was rejected: {request.reason}")
    try:
        get_plan(request.plan)
        check_role_admits(request.role, request.plan)
        tenant = registry.reserve_tenant(request).spec
    except BusinessRefusal as refusal:
        registry.reject_request(request_id, str(refusal))
        raise
    registry.record_run(tenant.tenant_id, ctx.run_id)
    ctx.event(
        "tenant.provisioning.started",
        tenant,
        "validate",
        request_id=request_id,
        plan=tenant.plan,
        requested_by=request.subject,
    )
    return tenant


def begin_phase(ctx: PhaseContext, tenant: TenantSpec, step: str) -> None:
    """Enter a phase: a failed tenant is being retried, a decommissioned one is refused.

    A retry waits for a compensation still releasing this tenant, or the two would undo each
    other; once the retry has recorded itself as the tenant's run, a late compensation skips.
    """
    wait_for_compensations(ctx, tenant)
    record = ctx.registry.get_tenant_by_id(tenant.tenant_id)
    if record.state in (TenantState.DECOMMISSIONING, TenantState.DECOMMISSIONED):
        raise PermanentError(f"tenant {tenant.slug} is {record.state}; provisioning stopped")
    first_phase_of_run = record.last_run_id != ctx.run_id
    if first_phase_of_run:
        ctx.registry.record_run(tenant.tenant_id, ctx.run_id)
    if record.state == TenantState.FAILED:
        ctx.registry.transition(tenant.tenant_id, TenantState.PROVISIONING)
        ctx.event(
            "tenant.provisioning.started",
            tenant,
            step,
            retry=True,
            previous_run_id=record.last_run_id,
            previous_failed_step=record.failed_step,
        )
    elif first_phase_of_run and record.state == TenantState.PROVISIONING:
        # A run that died mid-saga is being re-executed: it picks up where it stopped.
        ctx.event("tenant.provisioning.resumed", tenant, step, previous_run_id=record.last_run_id)


def wait_for_compensations(ctx: PhaseContext, tenant: TenantSpec) -> None:
    deadline = time.monotonic() + COMPENSATION_WAIT_S
    while pending := ctx.registry.unfinished_compensations(tenant.tenant_id):
        if time.monotonic() > deadline:
            runs = ", ".join(c.failed_run_id for c in pending)
            raise CompensationInProgress(f"compensation of run(s) {runs} has not finished")
        time.sleep(COMPENSATION_POLL_S)


def ensure_resource(ctx: PhaseContext, backend: TenantBackend, tenant: TenantSpec) -> Handle:
    """Ensure one backend's thing for the tenant, recording intent and result in the ledger."""
    entry = ctx.registry.ledger_get(tenant.tenant_id, backend.kind)
    if entry is None or entry.state != "allocated":
        ctx.registry.ledger_set(tenant.tenant_id, backend.kind, "allocating", run_id=ctx.run_id)
    handle = call_with_timeout(
        lambda: backend.ensure(tenant), _timeout_for(backend, tenant), f"{backend.kind} ensure"
    )
    return record_allocated(ctx, tenant, handle)


def _timeout_for(backend: TenantBackend, tenant: TenantSpec) -> float:
    plan = get_plan(tenant.plan)
    if backend.kind == "workload":  # the deployer polls readiness up to this itself
        return plan.readiness_timeout_s + READINESS_MARGIN_S
    return plan.backend_timeout_s


def record_allocated(ctx: PhaseContext, tenant: TenantSpec, handle: Handle) -> Handle:
    """Write the ledger only when something changed, so a repeated phase leaves it as it was."""
    entry = ctx.registry.ledger_get(tenant.tenant_id, handle.kind)
    if entry is None or entry.state != "allocated" or entry.handle != handle.to_json():
        ctx.registry.ledger_set(
            tenant.tenant_id, handle.kind, "allocated", handle=handle.to_json(), run_id=ctx.run_id
        )
    return handle


def _allocate_resources(ctx: PhaseContext, tenant: TenantSpec) -> list[Handle]:
    b = ctx.backends
    return [ensure_resource(ctx, backend, tenant) for backend in (b.storage, b.identity, b.traffic)]


def allocate(ctx: PhaseContext, tenant: TenantSpec) -> list[Handle]:
    """Storage, identity store (first admin seeded), traffic boundary (closed)."""
    begin_phase(ctx, tenant, "allocate")
    return _allocate_resources(ctx, tenant)


def deploy(ctx: PhaseContext, tenant: TenantSpec) -> Handle:
    """Workloads running and ready within the plan's readiness timeout."""
    begin_phase(ctx, tenant, "deploy")
    _allocate_resources(ctx, tenant)
    return ensure_resource(ctx, ctx.backends.deployer, tenant)


def mark_active(ctx: PhaseContext, tenant: TenantSpec) -> str:
    """Open the traffic boundary and flip the tenant to active; returns the tenant's URL."""
    begin_phase(ctx, tenant, "mark_active")
    _allocate_resources(ctx, tenant)
    ensure_resource(ctx, ctx.backends.deployer, tenant)
    traffic = ctx.backends.traffic
    handle = call_with_timeout(
        lambda: traffic.open(tenant), get_plan(tenant.plan).backend_timeout_s, "route open"
    )
    record_allocated(ctx, tenant, handle)
    ctx.registry.transition(tenant.tenant_id, TenantState.ACTIVE)
    return tenant.url(ctx.domain)


def send_welcome_emails(ctx: PhaseContext, tenant: TenantSpec) -> list[emails.EmailOutcome]:
    """Best effort: failures are recorded and reported, never raised."""
    invitation = ctx.backends.identity.invitation(tenant.key)

    def emit(event_type: str, details: dict[str, Any]) -> None:
        ctx.event(event_type, tenant, "send_welcome_emails", **details)

    return emails.send_welcome_emails(
        ctx.registry,
        ctx.backends.mailer,
        tenant,
        domain=ctx.domain,
        invitation_token=invitation.token,
        run_id=ctx.run_id,
        emit=emit,
    )


def release_all(ctx: PhaseContext, tenant: TenantSpec, event_type: str, step: str) -> list[str]:
    """Release, newest first, everything the ledger shows live; returns the kinds released.

    A failing release is recorded and the next one still runs; the first error is raised at the
    end so the run fails visibly and can be re-executed (releases are idempotent).
    """
    backends = ctx.backends.by_kind()
    live = [
        e
        for e in ctx.registry.ledger(tenant.tenant_id)
        if e.kind in backends and e.state in LIVE_LEDGER_STATES
    ]
    released: list[str] = []
    first_error: Exception | None = None
    for entry in sorted(live, key=lambda e: e.seq, reverse=True):
        ctx.registry.ledger_set(tenant.tenant_id, entry.kind, "releasing", run_id=ctx.run_id)
        try:
            removed = backends[entry.kind].release(tenant.key)
        except Exception as exc:
            # The entry stays `releasing`: still live, so the next release attempt retries it.
            ctx.event(event_type, tenant, step, kind=entry.kind, released=False, error=str(exc))
            first_error = first_error or exc
            continue
        ctx.registry.ledger_set(tenant.tenant_id, entry.kind, "released", run_id=ctx.run_id)
        ctx.event(
            event_type,
            tenant,
            step,
            kind=entry.kind,
            name=entry.handle.get("name"),
            released=True,
            existed=removed,
        )
        released.append(entry.kind)
    if first_error is not None:
        raise first_error
    return released


def compensate(ctx: PhaseContext, tenant: TenantSpec, failed_run_id: str) -> list[str]:
    """Undo a failed provisioning run: release everything live; the tenant parks in failed.

    Skipped when the failed run is no longer the tenant's latest (a retry or resume owns the
    tenant now) or the tenant is no longer being provisioned (active, decommissioned).
    """
    record = ctx.registry.get_tenant_by_id(tenant.tenant_id)
    released: list[str] = []
    current = record.last_run_id == failed_run_id
    if current and record.state in (TenantState.FAILED, TenantState.PROVISIONING):
        if record.state == TenantState.PROVISIONING:  # killed worker or canceled run
            ctx.registry.transition(
                tenant.tenant_id,
                TenantState.FAILED,
                failed_step=record.failed_step,
                failure_reason=f"run {failed_run_id} ended before finishing",
            )
        released = release_all(ctx, tenant, "tenant.provisioning.compensated", "compensate")
        outcome = "released"
    else:
        outcome = f"skipped: tenant is {record.state}, latest run {record.last_run_id}"
    ctx.registry.finish_compensation(failed_run_id)
    ctx.event(
        "tenant.provisioning.compensation_finished",
        tenant,
        "compensate",
        failed_run_id=failed_run_id,
        released=released,
        outcome=outcome,
    )
    return released


def decommission(ctx: PhaseContext, tenant: TenantSpec) -> list[str]:
    """Release whatever remains and free the slug."""
    record = ctx.registry.get_tenant_by_id(tenant.tenant_id)
    if record.state == TenantState.PROVISIONING:
        raise PermanentError(f"tenant {tenant.slug} is provisioning; wait for it to finish")
    if record.state != TenantState.DECOMMISSIONED:
        ctx.registry.transition(tenant.tenant_id, TenantState.DECOMMISSIONING)
        ctx.event("tenant.decommission.started", tenant, "decommission")
    released = release_all(ctx, tenant, "tenant.decommission.released", "decommission")
    ctx.registry.transition(tenant.tenant_id, TenantState.DECOMMISSIONED)
    ctx.event("tenant.decommission.completed", tenant, "decommission", released=released)
    return released
