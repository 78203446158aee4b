"""The provisioning job's ops: thin wrappers that run a phase and report it in the audit feed.

Retries: one RetryPolicy (exponential backoff, jitter) sized for the largest plan; an op stops
early once the tenant's own plan budget is spent, and `PermanentError`s are never retried.
"""

from collections.abc import Callable
from typing import TypeVar

from dagster import (
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    Failure,
    Jitter,
    MetadataValue,
    OpExecutionContext,
    RetryPolicy,
    op,
)

from resources.platform import TenantPlatform
from tenant_pipelines import phases
from tenant_pipelines.audit import STEP_NAMES, make_event, to_observation
from tenant_pipelines.errors import BusinessRefusal, PermanentError
from tenant_pipelines.models import TenantSpec
from tenant_pipelines.plans import PLANS
from tenant_pipelines.states import TenantState

T = TypeVar("T")

MAX_RETRY_BUDGET = max(plan.retry_budget for plan in PLANS.values())
PHASE_RETRY_POLICY = RetryPolicy(
    max_retries=MAX_RETRY_BUDGET, delay=0.5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)

# Releases are idempotent: retrying a failed one is always safe.
RELEASE_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


class ProvisionConfig(Config):
    """Run config of `provision_tenant`: the tenant's identity travels with re-executions."""

    request_id: str
    slug: str
    org: str
    plan: str


class TenantOpConfig(Config):
    """Run config of the jobs that act on an existing tenant."""

    tenant_id: str
    slug: str
    org: str


def phase_context(context: OpExecutionContext, platform: TenantPlatform) -> phases.PhaseContext:
    run = context.run
    return phases.PhaseContext(
        registry=platform.registry.get(),
        backends=phases.Backends(
            storage=platform.storage,
            identity=platform.identity,
            traffic=platform.traffic,
            deployer=platform.deployer,
            mailer=platform.mailer,
        ),
        domain=platform.domain,
        run_id=context.run_id,
        root_run_id=run.root_run_id,
        emit=lambda event: context.log_event(to_observation(event)),
    )


def _is_final_attempt(context: OpExecutionContext, plan: str, error: Exception) -> bool:
    if isinstance(error, PermanentError):
        return True
    budget = PLANS[plan].retry_budget if plan in PLANS else 0
    return context.retry_number >= budget


def run_phase(
    context: OpExecutionContext,
    ctx: phases.PhaseContext,
    step: str,
    tenant: TenantSpec,
    action: Callable[[], T],
) -> T:
    """Run a phase; on its last failure mark the tenant failed and say so in the feed."""
    try:
        result = action()
    except (DagsterExecutionInterruptedError, KeyboardInterrupt) as interrupt:
        # Dagster would retry an interrupted step under its RetryPolicy, so a run terminated
        # from the UI would carry on: stop here instead, and let compensation follow.
        fail_tenant(context, ctx, step, tenant, "the run was terminated")
        raise Failure(
            f"{STEP_NAMES[step]} interrupted: the run was terminated", allow_retries=False
        ) from interrupt
    except Exception as error:
        if not _is_final_attempt(context, tenant.plan, error):
            context.log.warning(f"{STEP_NAMES[step]} attempt {context.retry_number + 1}: {error}")
            raise
        reason = f"{type(error).__name__}: {error}"
        fail_tenant(context, ctx, step, tenant, reason)
        raise Failure(f"{STEP_NAMES[step]} failed: {reason}", allow_retries=False) from error
    ctx.event("tenant.provisioning.step_completed", tenant, step)
    return result


def fail_tenant(
    context: OpExecutionContext,
    ctx: phases.PhaseContext,
    step: str,
    tenant: TenantSpec,
    reason: str,
) -> None:
    ctx.registry.transition(
        tenant.tenant_id, TenantState.FAILED, failed_step=step, failure_reason=reason
    )
    ctx.event(
        "tenant.provisioning.failed", tenant, step, error=reason, attempts=context.retry_number + 1
    )


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES["validate"])
def validate(
    context: OpExecutionContext, config: ProvisionConfig, platform: TenantPlatform
) -> TenantSpec:
    ctx = phase_context(context, platform)
    try:
        tenant = phases.validate(ctx, config.request_id)
    except BusinessRefusal as refusal:
        rejected = make_event(
            "tenant.request.rejected",
            tenant=config.slug,
            org=config.org,
            run_id=context.run_id,
            step="validate",
            details={"request_id": config.request_id, "reason": str(refusal)},
        )
        context.log_event(to_observation(rejected))
        raise Failure(f"request rejected: {refusal}", allow_retries=False) from refusal
    except PermanentError as error:
        raise Failure(f"request not provisioned: {error}", allow_retries=False) from error
    ctx.event("tenant.provisioning.step_completed", tenant, "validate")
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES["allocate"])
def allocate(
    context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform
) -> TenantSpec:
    ctx = phase_context(context, platform)
    handles = run_phase(context, ctx, "allocate", tenant, lambda: phases.allocate(ctx, tenant))
    context.add_output_metadata({h.kind: h.name for h in handles})
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES["deploy"])
def deploy(context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform) -> TenantSpec:
    ctx = phase_context(context, platform)
    handle = run_phase(context, ctx, "deploy", tenant, lambda: phases.deploy(ctx, tenant))
    context.add_output_metadata({k: str(v) for k, v in handle.details.items()})
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES["mark_active"])
def mark_active(
    context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform
) -> TenantSpec:
    ctx = phase_context(context, platform)
    url = run_phase(context, ctx, "mark_active", tenant, lambda: phases.mark_active(ctx, tenant))
    ctx.event(
        "tenant.provisioning.completed", tenant, "mark_active", url=url, message="Tenant activated"
    )
    context.add_output_metadata({"url": MetadataValue.url(url)})
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES["send_welcome_emails"])
def send_welcome_emails(
    context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform
) -> None:
    ctx = phase_context(context, platform)
    try:
        outcomes = phases.send_welcome_emails(ctx, tenant)
    except Exception as error:
        if not _is_final_attempt(context, tenant.plan, error):
            raise
        # Best effort: the tenant is already active and stays so.
        ctx.event("tenant.email.failed", tenant, "send_welcome_emails", error=str(error))
        outcomes = []
    ctx.event(
        "tenant.provisioning.step_completed",
        tenant,
        "send_welcome_emails",
        emails={o.kind: o.status for o in outcomes},
    )
