"""The failure policy: when a phase has failed for good, what that does, and what then needs
compensation. Decided here once; ops, the failure hook and the backstop sensor only ask.

- An error derived from `PermanentError` is never retried. Any other error is retried until the
  tenant's plan budget of retries is spent (the orchestrator's retry policy is sized for the
  largest plan; a phase stops early for smaller plans).
- A phase that fails for good marks the tenant `failed`, names the step and the error in the
  feed, and raises `StepFailed`, which the orchestrator must not retry.
- A run that is being interrupted (terminated) fails the tenant the same way: carrying on would
  let the run continue after a person asked it to stop.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenant_pipelines.domain.errors import PermanentError, TenantPipelinesError
from tenant_pipelines.domain.events import STEP_NAMES, EventType, Step
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.records import CompensationRecord, TenantRecord
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.ports import Registry

T = TypeVar("T")

MAX_RETRY_BUDGET = max(plan.retry_budget for plan in PLANS.values())


class StepFailed(TenantPipelinesError):
    """The step failed for good: the orchestrator must fail it without another attempt."""


@dataclass(frozen=True)
class Attempt:
    """Which attempt of a step this is, and what an interrupt looks like to the orchestrator."""

    number: int = 0  # 0 for the first attempt
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,)


def is_final_attempt(plan: str, attempt: int, error: BaseException) -> bool:
    """No attempt follows this one: the error is permanent or the plan's budget is spent."""
    if isinstance(error, PermanentError):
        return True
    budget = PLANS[plan].retry_budget if plan in PLANS else 0
    return attempt >= budget


def run_phase(
    ctx: SagaContext, step: Step, tenant: TenantSpec, attempt: Attempt, phase: Callable[[], T]
) -> T:
    """Run a phase under the policy; on success say so in the feed.

    Raises the phase's own error when another attempt should follow, StepFailed when none will.
    """
    try:
        result = phase()
    except attempt.interrupts as interrupt:
        fail_tenant(ctx, step, tenant, "the run was terminated", attempt)
        raise StepFailed(f"{STEP_NAMES[step]} interrupted: the run was terminated") from interrupt
    except Exception as error:
        if not is_final_attempt(tenant.plan, attempt.number, error):
            raise
        reason = f"{type(error).__name__}: {error}"
        fail_tenant(ctx, step, tenant, reason, attempt)
        raise StepFailed(f"{STEP_NAMES[step]} failed: {reason}") from error
    ctx.event(EventType.STEP_COMPLETED, tenant, step)
    return result


def fail_tenant(
    ctx: SagaContext, step: Step, tenant: TenantSpec, reason: str, attempt: Attempt
) -> None:
    ctx.registry.tenants.transition(
        tenant.tenant_id, TenantState.FAILED, failed_step=str(step), failure_reason=reason
    )
    ctx.event(EventType.FAILED, tenant, step, error=reason, attempts=attempt.number + 1)


@dataclass(frozen=True)
class EndedRun:
    """A provisioning run that failed (or was canceled), as the hook or the backstop sees it."""

    run_id: str
    root_run_id: str | None
    request_id: str | None  # the run's request tag; None for runs that are not ours
    will_retry: bool = False  # the orchestrator resumes it: not a failure to compensate


def claim_compensation(registry: Registry, run: EndedRun) -> TenantRecord | None:
    """The tenant this run leaves for compensation, claimed for the caller; None when there is
    nothing to compensate or another caller has it in hand.

    Exactly one compensation per failed run: the registry's claim decides between the failure
    hook and the backstop sensor. A claim whose first attempt never started (its claimant died
    midway) is handed out again; one between later attempts is not, although its run is not
    named yet either: the backstop's follow-ups own it, and the failed run can come back to the
    backstop at any time (Dagster tags it after it ended, which counts as an update).
    """
    if run.will_retry or run.request_id is None:
        return None
    request = registry.requests.get(run.request_id)
    if request.tenant_id is None or request.run_id not in (run.run_id, run.root_run_id):
        return None  # refused in Validate, or a duplicate run that never owned the request
    tenant = registry.tenants.get_by_id(request.tenant_id)
    if tenant.last_run_id not in (None, run.run_id):
        # Another run has the tenant now: a retry of a run that failed before the tenant existed
        # (the retry chain is named by that run), which compensation would skip anyway.
        return None
    claimed = registry.compensations.claim(run.run_id, tenant.tenant_id)
    if not claimed and not _first_attempt_never_started(registry.compensations.get(run.run_id)):
        return None
    return tenant


def _first_attempt_never_started(claim: CompensationRecord | None) -> bool:
    return (
        claim is not None
        and claim.attempts == 1
        and claim.compensation_run_id is None
        and claim.finished_at is None
        and claim.gave_up_at is None
    )
