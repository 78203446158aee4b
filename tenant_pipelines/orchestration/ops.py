"""The jobs' ops: each adapts Dagster to one call of `saga.steps`.

Retries: one RetryPolicy (exponential backoff, jitter) sized for the largest plan; the saga's
failure policy says when a step has failed for good (`StepFailed`), which becomes a `Failure`
that Dagster does not retry.
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

from tenant_pipelines.domain.events import STEP_NAMES, Step
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.saga import steps
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.failure import MAX_RETRY_BUDGET, Attempt, StepFailed
from tenant_pipelines.service.jobs import REQUESTED_BY_TAG

T = TypeVar("T")

PHASE_RETRY_POLICY = RetryPolicy(
    max_retries=MAX_RETRY_BUDGET, delay=0.5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
# Releases are idempotent: retrying a failed one is always safe.
RELEASE_RETRY_POLICY = RetryPolicy(
    max_retries=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
# Dagster retries an interrupted step under its RetryPolicy, so a run terminated from the UI would
# carry on: the saga treats these as "terminated" and fails the step for good instead.
INTERRUPTS = (DagsterExecutionInterruptedError, KeyboardInterrupt)


class ProvisionConfig(Config):
    """Run config of `provision_tenant`: the tenant's identity travels with re-executions."""

    request_id: str
    slug: str
    org: str
    # Read by no op: Validate takes the plan from the request. It stays because every run made so
    # far carries it, and Dagster checks a re-execution's copied config against the job's schema,
    # refusing an unknown field: without it, retrying those runs would fail (docs/dagster.md).
    plan: str


class TenantOpConfig(Config):
    """Run config of the jobs that act on an existing tenant."""

    tenant_id: str
    slug: str
    org: str


class CompensateConfig(TenantOpConfig):
    failed_run_id: str


def saga_context(context: OpExecutionContext, platform: TenantPlatform) -> SagaContext:
    adapters = platform.build()
    return SagaContext(
        registry=adapters.registry,
        backends=adapters.backends(),
        served_at=adapters.served_at,
        run_id=context.run_id,
        root_run_id=context.run.root_run_id,
        requested_by=context.run.tags.get(REQUESTED_BY_TAG),
        emit=lambda event: context.log_event(to_observation(event)),
    )


def run_step(context: OpExecutionContext, platform: TenantPlatform, step: Callable[..., T]) -> T:
    """Call one saga step with this attempt; its final failure is a Failure Dagster won't retry."""
    attempt = Attempt(number=context.retry_number, interrupts=INTERRUPTS)
    try:
        return step(saga_context(context, platform), attempt)
    except StepFailed as failed:
        raise Failure(str(failed), allow_retries=False) from failed.__cause__
    except Exception as error:
        context.log.warning(f"attempt {context.retry_number + 1} failed, will retry: {error}")
        raise


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES[Step.VALIDATE])
def validate(
    context: OpExecutionContext, config: ProvisionConfig, platform: TenantPlatform
) -> TenantSpec:
    return run_step(
        context,
        platform,
        lambda saga, _attempt: steps.validate(saga, config.request_id, config.slug, config.org),
    )


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES[Step.ALLOCATE])
def allocate(
    context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform
) -> TenantSpec:
    handles = run_step(context, platform, lambda saga, a: steps.allocate(saga, tenant, a))
    context.add_output_metadata({h.kind: h.name for h in handles})
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES[Step.DEPLOY])
def deploy(context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform) -> TenantSpec:
    handle = run_step(context, platform, lambda saga, a: steps.deploy(saga, tenant, a))
    context.add_output_metadata({k: str(v) for k, v in handle.details.items()})
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES[Step.MARK_ACTIVE])
def mark_active(
    context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform
) -> TenantSpec:
    url = run_step(context, platform, lambda saga, a: steps.mark_active(saga, tenant, a))
    context.add_output_metadata({"url": MetadataValue.url(url)})
    return tenant


@op(retry_policy=PHASE_RETRY_POLICY, description=STEP_NAMES[Step.SEND_WELCOME_EMAILS])
def send_welcome_emails(
    context: OpExecutionContext, tenant: TenantSpec, platform: TenantPlatform
) -> None:
    run_step(context, platform, lambda saga, a: steps.send_welcome_emails(saga, tenant, a))


@op(
    retry_policy=RELEASE_RETRY_POLICY,
    description="Release, newest first, everything the ledger shows allocated.",
)
def compensate(
    context: OpExecutionContext, config: CompensateConfig, platform: TenantPlatform
) -> None:
    steps.compensate(saga_context(context, platform), config.tenant_id, config.failed_run_id)


@op(retry_policy=RELEASE_RETRY_POLICY, description="Release whatever remains and free the slug.")
def decommission(
    context: OpExecutionContext, config: TenantOpConfig, platform: TenantPlatform
) -> None:
    steps.decommission(saga_context(context, platform), config.tenant_id)
