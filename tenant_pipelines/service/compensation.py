"""Compensating failed provisioning runs: once by the failure hook, as the run fails, and by the
backstop sensor for the runs whose hook never fired (killed workers, canceled runs) and for the
compensations that failed (launched again, bounded, then given up and reported).

Whether a run needs compensation is the saga's call (`saga.failure.claim_compensation`), and
how often a failed compensation is tried its policy (`saga.operations.next_move`). Here they
meet the tenant's operation claim and the launcher: a compensation waits while another
operation holds the tenant (the backstop launches it once the tenant is free).
"""

from contextlib import AbstractContextManager as ContextManager
from datetime import UTC, datetime

from tenant_pipelines.domain.errors import OperationInFlight
from tenant_pipelines.domain.events import Step
from tenant_pipelines.domain.records import CompensationRecord, OperationKind, TenantRecord
from tenant_pipelines.saga.failure import EndedRun, claim_compensation
from tenant_pipelines.saga.operations import (
    Move,
    compensation_failed_event,
    compensation_holder,
    next_move,
)
from tenant_pipelines.service.claims import LAUNCH_GRACE_S, Claim, claim_ended, operation_claim
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import (
    COMPENSATE_JOB,
    COMPENSATION_ATTEMPT_TAG,
    FAILED_RUN_TAG,
    REQUEST_TAG,
    WILL_RETRY_TAG,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.service.ports import Launcher, RunView
from tenant_pipelines.support import metrics

MAX_PER_TICK = 50


def ended_run(run: RunView) -> EndedRun:
    """A run as the saga's compensation policy needs to see it."""
    return EndedRun(
        run_id=run.run_id,
        root_run_id=run.root_run_id,
        request_id=run.tags.get(REQUEST_TAG),
        will_retry=run.tags.get(WILL_RETRY_TAG) == "true",
    )


def compensate_failed_run(ctx: ServiceContext, run: RunView, launcher: Launcher) -> bool:
    """Launch the compensation `run` still needs, with its tenant claimed for it (a claim held by
    the failed run itself, a retry that failed, passes to its compensation); False when it needs
    none, or another operation holds the tenant (the backstop comes back for it)."""
    tenant = claim_compensation(ctx.registry, ended_run(run))
    if tenant is None:
        return False
    try:
        with _claim(ctx, tenant, run.run_id) as claim:
            _launch(ctx, launcher, claim, run.run_id, attempt=1)
    except OperationInFlight:
        return False
    return True


def _claim(ctx: ServiceContext, tenant: TenantRecord, failed_run_id: str) -> ContextManager[Claim]:
    holder = compensation_holder(failed_run_id)
    return operation_claim(
        ctx, tenant, OperationKind.COMPENSATION, holder, successor_of=failed_run_id
    )


def _launch(
    ctx: ServiceContext, launcher: Launcher, claim: Claim, failed_run_id: str, attempt: int
) -> None:
    """One compensation run of `failed_run_id`, named on the claim held for it."""
    tenant = claim.tenant
    extra = {FAILED_RUN_TAG: failed_run_id, COMPENSATION_ATTEMPT_TAG: str(attempt)}
    config = tenant_op_config(tenant, Step.COMPENSATE, failed_run_id=failed_run_id)
    run_id = launcher.launch(COMPENSATE_JOB, config, tenant_tags(tenant, **extra))
    if run_id is not None:
        ctx.registry.compensations.set_run(failed_run_id, run_id)
    claim.name_run(run_id)


def attempt_end(ctx: ServiceContext, claim: CompensationRecord) -> datetime | None:
    """When the compensation's latest attempt ended without finishing; None while it may still
    be running (or being launched)."""
    if claim.compensation_run_id is None:
        holder = ctx.registry.operations.get(claim.tenant_id)
        if holder is not None and holder.holder == compensation_holder(claim.failed_run_id):
            return None if not claim_ended(ctx.runs)(holder) else holder.claimed_at
        age = (datetime.now(UTC) - claim.created_at).total_seconds()
        return claim.created_at if age > LAUNCH_GRACE_S else None
    run = ctx.runs.get(claim.compensation_run_id)
    if run is None:
        return claim.created_at
    if not run.finished:
        return None
    return datetime.fromtimestamp(run.ended_at, UTC) if run.ended_at else claim.created_at


def follow_up_compensations(ctx: ServiceContext, launcher: Launcher) -> None:
    """Launch again the compensations whose attempt failed (after their backoff); give up and
    report those that have used up their attempts."""
    for claim in ctx.registry.compensations.in_progress(MAX_PER_TICK):
        ended_at = attempt_end(ctx, claim)
        since = 0.0 if ended_at is None else (datetime.now(UTC) - ended_at).total_seconds()
        move = next_move(claim, ended_at is not None, since)
        tenant = ctx.registry.tenants.get_by_id(claim.tenant_id)
        if move == Move.GIVE_UP and ctx.registry.compensations.give_up(claim.failed_run_id):
            metrics.COMPENSATIONS_GIVEN_UP.inc()
            last_run = claim.compensation_run_id
            ctx.report(compensation_failed_event(ctx.registry.ledger, tenant, claim, last_run))
            holder = compensation_holder(claim.failed_run_id)
            ctx.registry.operations.release(tenant.tenant_id, holder=holder)
        elif move == Move.RELAUNCH:
            _relaunch(ctx, launcher, tenant, claim)


def _relaunch(
    ctx: ServiceContext, launcher: Launcher, tenant: TenantRecord, record: CompensationRecord
) -> None:
    """The next attempt, counted by compare-and-set (one caller launches it)."""
    try:
        with _claim(ctx, tenant, record.failed_run_id) as claim:
            if ctx.registry.compensations.record_attempt(record.failed_run_id, record.attempts):
                _launch(ctx, launcher, claim, record.failed_run_id, record.attempts + 1)
    except OperationInFlight:
        return  # another operation holds the tenant: next tick
