"""The jobs' ops: each adapts Dagster to one call of `saga.steps`.

Retries: one RetryPolicy (exponential backoff, jitter) sized for the largest plan; the saga's
failure policy says when a step has failed for good (`StepFailed`), which becomes a `Failure`
that Dagster does not retry.

The provisioning ops hand nothing to each other but their order (`Nothing` dependencies): each
reads its tenant from the registry, where Validate recorded it, by the request in the run's
config, which a re-execution copies. A handed-on value would be written to the run's storage on
this host and read back by the next op and by a re-execution: a file and three events each
(twelve of a run's fifty-one), for a value the registry holds anyway.
"""

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dagster import (
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    Failure,
    In,
    Jitter,
    MetadataValue,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    RetryPolicy,
    op,
)

from tenant_pipelines.domain.events import STEP_NAMES, AuditEvent, Step
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.metrics import (
    count_activation,
    count_event,
    count_phase_failure,
)
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.saga import steps
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.failure import MAX_RETRY_BUDGET, Attempt, StepFailed
from tenant_pipelines.service.jobs import REQUESTED_BY_TAG
from tenant_pipelines.support import metrics

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


def saga_context(
    context: OpExecutionContext, platform: TenantPlatform, plan: str | None = None
) -> SagaContext:
    """The saga's ports for this op; its events go to the run's log (the audit feed) and to the
    metrics (`plan`: the tenant's, where the op knows it)."""
    adapters = platform.build()

    def emit(event: AuditEvent) -> None:
        context.log_event(to_observation(event))
        count_event(event, plan)

    return SagaContext(
        registry=adapters.registry,
        backends=adapters.backends(),
        served_at=adapters.served_at,
        run_id=context.run_id,
        root_run_id=context.run.root_run_id,
        requested_by=context.run.tags.get(REQUESTED_BY_TAG),
        emit=emit,
        host=adapters.host_name or None,
    )


def run_step(
    context: OpExecutionContext,
    platform: TenantPlatform,
    phase: Step,
    plan: str,
    step: Callable[..., T],
) -> T:
    """Call one saga step with this attempt, timed for the metrics; its final failure is a
    Failure Dagster won't retry."""
    attempt = Attempt(number=context.retry_number, interrupts=INTERRUPTS)
    started = time.perf_counter()
    try:
        result = step(saga_context(context, platform, plan), attempt)
    except StepFailed as failed:
        count_phase_failure(phase, plan, failed.__cause__ or failed)
        raise Failure(str(failed), allow_retries=False) from failed.__cause__
    except Exception as error:
        count_phase_failure(phase, plan, error)
        context.log.warning(f"attempt {context.retry_number + 1} failed, will retry: {error}")
        raise
    elapsed = time.perf_counter() - started
    metrics.PHASE_DURATION.labels(phase=str(phase), plan=plan).observe(elapsed)
    return result


def provisioned_tenant(context: OpExecutionContext, platform: TenantPlatform) -> TenantSpec:
    """The tenant this provisioning run works on, as Validate recorded it."""
    run_config: Mapping[str, Any] = context.run.run_config
    request_id = str(run_config["ops"]["validate"]["config"]["request_id"])
    record = platform.build().registry.tenants.for_request(request_id)
    if record is None:  # Validate succeeded before this op, or the op would not run
        raise Failure(f"request {request_id} has no tenant", allow_retries=False)
    return record.spec


def phase_op(step: Step, *, first: bool = False) -> Callable[[Callable[..., None]], OpDefinition]:
    """The decorator of a provisioning phase's op: retried under the phase policy, and, unless
    it is the first, run after the previous phase, taking nothing from it but its success."""
    return op(
        retry_policy=PHASE_RETRY_POLICY,
        description=STEP_NAMES[step],
        ins=None if first else {"after": In(Nothing)},
        out=Out(Nothing),
    )


@phase_op(Step.VALIDATE, first=True)
def validate(
    context: OpExecutionContext, config: ProvisionConfig, platform: TenantPlatform
) -> None:
    run_step(
        context,
        platform,
        Step.VALIDATE,
        config.plan,
        lambda saga, _attempt: steps.validate(saga, config.request_id, config.slug, config.org),
    )


@phase_op(Step.ALLOCATE)
def allocate(context: OpExecutionContext, platform: TenantPlatform) -> None:
    tenant = provisioned_tenant(context, platform)
    handles = run_step(
        context, platform, Step.ALLOCATE, tenant.plan, lambda s, a: steps.allocate(s, tenant, a)
    )
    context.add_output_metadata({h.kind: h.name for h in handles})


@phase_op(Step.DEPLOY)
def deploy(context: OpExecutionContext, platform: TenantPlatform) -> None:
    tenant = provisioned_tenant(context, platform)
    handle = run_step(
        context, platform, Step.DEPLOY, tenant.plan, lambda s, a: steps.deploy(s, tenant, a)
    )
    context.add_output_metadata({k: str(v) for k, v in handle.details.items()})


@phase_op(Step.MARK_ACTIVE)
def mark_active(context: OpExecutionContext, platform: TenantPlatform) -> None:
    tenant = provisioned_tenant(context, platform)
    url = run_step(
        context,
        platform,
        Step.MARK_ACTIVE,
        tenant.plan,
        lambda s, a: steps.mark_active(s, tenant, a),
    )
    count_activation(platform, tenant)
    context.add_output_metadata({"url": MetadataValue.url(url)})


@phase_op(Step.SEND_WELCOME_EMAILS)
def send_welcome_emails(context: OpExecutionContext, platform: TenantPlatform) -> None:
    tenant = provisioned_tenant(context, platform)
    outcomes = run_step(
        context,
        platform,
        Step.SEND_WELCOME_EMAILS,
        tenant.plan,
        lambda s, a: steps.send_welcome_emails(s, tenant, a),
    )
    for outcome in outcomes:
        metrics.WELCOME_EMAILS.labels(outcome=str(outcome.status)).inc()


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
