"""The saga's entry points, one per op: each runs its phase under the failure policy and emits
the feed's events. An op adapts Dagster to exactly one of these calls."""

from tenant_pipelines.domain.errors import BusinessRefusal, PermanentError
from tenant_pipelines.domain.events import TENANT_ACTIVATED, EventType, Step, make_event
from tenant_pipelines.domain.handles import Handle
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga import compensation, emails, phases
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.failure import Attempt, StepFailed, is_final_attempt, run_phase


def validate(ctx: SagaContext, request_id: str, slug: str, org: str) -> TenantSpec:
    """Business refusals reject the request and are never retried; so are permanent errors."""
    try:
        tenant = phases.validate(ctx, request_id)
    except BusinessRefusal as refusal:
        details = {"request_id": request_id, "reason": str(refusal)}
        ctx.emit(
            make_event(
                EventType.REQUEST_REJECTED,
                tenant=slug,
                org=org,
                run_id=ctx.run_id,
                step=Step.VALIDATE,
                details=details,
            )
        )
        raise StepFailed(f"request rejected: {refusal}") from refusal
    except PermanentError as error:
        raise StepFailed(f"request not provisioned: {error}") from error
    ctx.event(EventType.STEP_COMPLETED, tenant, Step.VALIDATE)
    return tenant


def allocate(ctx: SagaContext, tenant: TenantSpec, attempt: Attempt) -> list[Handle]:
    return run_phase(ctx, Step.ALLOCATE, tenant, attempt, lambda: phases.allocate(ctx, tenant))


def deploy(ctx: SagaContext, tenant: TenantSpec, attempt: Attempt) -> Handle:
    return run_phase(ctx, Step.DEPLOY, tenant, attempt, lambda: phases.deploy(ctx, tenant))


def mark_active(ctx: SagaContext, tenant: TenantSpec, attempt: Attempt) -> str:
    """The tenant's URL; the feed's last provisioning entry says "Tenant activated"."""
    url = run_phase(ctx, Step.MARK_ACTIVE, tenant, attempt, lambda: phases.mark_active(ctx, tenant))
    ctx.event(EventType.COMPLETED, tenant, Step.MARK_ACTIVE, url=url, message=TENANT_ACTIVATED)
    return url


def send_welcome_emails(
    ctx: SagaContext, tenant: TenantSpec, attempt: Attempt
) -> list[emails.EmailOutcome]:
    """Best effort: once the retries are spent the tenant stays active, and the feed says why."""
    try:
        outcomes = emails.send_welcome_emails(ctx, tenant)
    except Exception as error:
        if not is_final_attempt(tenant.plan, attempt.number, error):
            raise
        ctx.event(EventType.EMAIL_FAILED, tenant, Step.SEND_WELCOME_EMAILS, error=str(error))
        outcomes = []
    ctx.event(
        EventType.STEP_COMPLETED,
        tenant,
        Step.SEND_WELCOME_EMAILS,
        emails={o.kind: str(o.status) for o in outcomes},
    )
    # The run's end: a retry's operation claim is released (a no-op for a first run).
    ctx.registry.operations.release(tenant.tenant_id, run_id=ctx.run_id)
    return outcomes


def compensate(ctx: SagaContext, tenant_id: str, failed_run_id: str) -> list[str]:
    tenant = ctx.registry.tenants.get_by_id(tenant_id).spec
    return compensation.compensate(ctx, tenant, failed_run_id)


def decommission(ctx: SagaContext, tenant_id: str) -> list[str]:
    tenant = ctx.registry.tenants.get_by_id(tenant_id).spec
    return compensation.decommission(ctx, tenant)
