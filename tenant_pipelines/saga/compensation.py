"""Undoing what the ledger shows allocated: compensation of a failed run, and decommission.

Releases run newest allocation first; each release is idempotent, and one that fails is
recorded while the next still runs (its entry stays `releasing`, still live, so the next attempt
retries it).
"""

from dataclasses import dataclass

from tenant_pipelines.domain.errors import PermanentError
from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.states import LIVE_LEDGER_STATES, LedgerState, TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.operations import compensation_holder


@dataclass(frozen=True)
class ReleaseFailure:
    kind: str
    error: Exception


class ReleaseFailed(Exception):
    """Some releases failed (the others ran): the run fails visibly and can run again."""

    def __init__(self, failures: list[ReleaseFailure]) -> None:
        kinds = ", ".join(f"{f.kind} ({type(f.error).__name__}: {f.error})" for f in failures)
        super().__init__(f"could not release {kinds}")
        self.failures = failures


def release_all(ctx: SagaContext, tenant: TenantSpec, event_type: str, step: Step) -> list[str]:
    """Release, newest first, everything the ledger shows live; returns the kinds released.

    Raises ReleaseFailed naming every release that failed, after trying all of them.
    """
    backends = ctx.backends.by_kind()
    live = [
        e
        for e in ctx.registry.ledger.entries(tenant.tenant_id)
        if e.kind in backends and e.state in LIVE_LEDGER_STATES
    ]
    released: list[str] = []
    failures: list[ReleaseFailure] = []
    for entry in sorted(live, key=lambda e: e.seq, reverse=True):
        ctx.registry.ledger.set(
            tenant.tenant_id, entry.kind, LedgerState.RELEASING, run_id=ctx.run_id
        )
        try:
            # The tenant id: a thing under this key made for another tenant is left alone.
            removed = backends[entry.kind].release(tenant.key, tenant.tenant_id)
        except Exception as error:
            ctx.event(event_type, tenant, step, kind=entry.kind, released=False, error=str(error))
            failures.append(ReleaseFailure(entry.kind, error))
            continue
        ctx.registry.ledger.set(
            tenant.tenant_id, entry.kind, LedgerState.RELEASED, run_id=ctx.run_id
        )
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
    if failures:
        raise ReleaseFailed(failures)
    return released


def compensate(ctx: SagaContext, tenant: TenantSpec, failed_run_id: str) -> list[str]:
    """Undo a failed provisioning run: release everything live; the tenant parks in failed.

    Skipped when the failed run is no longer the tenant's latest (a retry or resume owns the
    tenant now) or the tenant is no longer being provisioned (active, decommissioned).
    """
    ctx.check_host(tenant)
    # This run does the compensation now (every attempt holds the same operation claim).
    if ctx.registry.compensations.get(failed_run_id) is not None:
        ctx.registry.compensations.set_run(failed_run_id, ctx.run_id)
    ctx.registry.operations.set_run(
        tenant.tenant_id, compensation_holder(failed_run_id), ctx.run_id
    )
    record = ctx.registry.tenants.get_by_id(tenant.tenant_id)
    released: list[str] = []
    current = record.last_run_id == failed_run_id
    if current and record.state in (TenantState.FAILED, TenantState.PROVISIONING):
        if record.state == TenantState.PROVISIONING:  # killed worker or canceled run
            ctx.registry.tenants.transition(
                tenant.tenant_id,
                TenantState.FAILED,
                failed_step=record.failed_step,
                failure_reason=f"run {failed_run_id} ended before finishing",
            )
        released = release_all(ctx, tenant, EventType.COMPENSATED, Step.COMPENSATE)
        outcome = "released"
    else:
        outcome = f"skipped: tenant is {record.state}, latest run {record.last_run_id}"
    ctx.registry.compensations.finish(failed_run_id)
    ctx.registry.operations.release(tenant.tenant_id, run_id=ctx.run_id)
    ctx.event(
        EventType.COMPENSATION_FINISHED,
        tenant,
        Step.COMPENSATE,
        failed_run_id=failed_run_id,
        released=released,
        outcome=outcome,
    )
    return released


def decommission(ctx: SagaContext, tenant: TenantSpec) -> list[str]:
    """Release whatever remains and free the slug and the key, on the tenant's own host only."""
    ctx.check_host(tenant)
    record = ctx.registry.tenants.get_by_id(tenant.tenant_id)
    if record.state == TenantState.PROVISIONING:
        raise PermanentError(f"tenant {tenant.slug} is provisioning; wait for it to finish")
    if record.state != TenantState.DECOMMISSIONED:
        ctx.registry.tenants.transition(tenant.tenant_id, TenantState.DECOMMISSIONING)
        ctx.event(
            EventType.DECOMMISSION_STARTED,
            tenant,
            Step.DECOMMISSION,
            requested_by=ctx.requested_by,
        )
    released = release_all(ctx, tenant, EventType.DECOMMISSION_RELEASED, Step.DECOMMISSION)
    # What the mailer keeps per key (the outbox's record of its tenant) goes with the key.
    ctx.backends.mailer.release(tenant.key, tenant.tenant_id)
    ctx.registry.tenants.transition(tenant.tenant_id, TenantState.DECOMMISSIONED)
    ctx.registry.operations.release(tenant.tenant_id, run_id=ctx.run_id)
    ctx.event(EventType.DECOMMISSION_COMPLETED, tenant, Step.DECOMMISSION, released=released)
    return released
