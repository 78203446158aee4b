"""Retry, decommission, compensate and discard: the lifecycle use cases, once for every door
(the API, the console, `tenantctl` through `/local`, and the Dagster UI's own launches, which
`admit_ui_run` holds to the same rules).

Each checks that the actor sees the tenant (another org's tenant does not exist for it) and may
act on it, then that the tenant's state admits the operation, and launches its run inside the
tenant's one operation claim (`claims.operation_claim`): a second operation on the same tenant is
refused at once, naming the first. Decommission is the exception for a compensation in flight:
it waits for it (bounded), then goes ahead, since releasing what remains is what both want.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tenant_pipelines.domain.access import Action, Actor, authorize, check_visible
from tenant_pipelines.domain.errors import (
    NotFound,
    OperationInFlight,
    PlatformNotRunning,
    Refused,
)
from tenant_pipelines.domain.events import PROVISION_STEPS, Step
from tenant_pipelines.domain.lifecycle_rules import LifecycleAction, check, check_tenant, refusal
from tenant_pipelines.domain.records import OperationKind, RequestRecord, TenantRecord
from tenant_pipelines.registry.requests import RETRY_MARKER
from tenant_pipelines.registry.status import tenant_status, waiting_request
from tenant_pipelines.saga.operations import MAX_COMPENSATION_ATTEMPTS, compensation_holder
from tenant_pipelines.service.claims import LAUNCH_GRACE_S, Claim, operation_claim
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import (
    COMPENSATE_JOB,
    DECOMMISSION_JOB,
    FAILED_RUN_TAG,
    PROVISION_JOB,
    REQUESTED_BY_TAG,
    WORKER_HOST_TAG,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.service.ports import Relauncher, RunStatus, RunView
from tenant_pipelines.support import metrics
from tenant_pipelines.support.metrics import Door

WAIT_POLL_S = 0.5
# Decommission waits this long for a compensation in flight (all its attempts and backoff; a
# provisioning phase's own wait, `saga.phases.PHASE_COMPENSATION_WAIT_S`, is per attempt).
DECOMMISSION_COMPENSATION_WAIT_S = 120.0


def check_retryable(tenant: TenantRecord) -> None:
    """Only a failed tenant is retried (Refused otherwise: `domain.lifecycle_rules`)."""
    check_tenant(tenant, LifecycleAction.RETRY)


def check_decommissionable(tenant: TenantRecord) -> None:
    """An active, failed or still decommissioning tenant is decommissioned."""
    check_tenant(tenant, LifecycleAction.DECOMMISSION)


def check_compensable(tenant: TenantRecord) -> None:
    """Only a failed tenant's latest run is compensated again."""
    check_tenant(tenant, LifecycleAction.COMPENSATE)


def _launcher(ctx: ServiceContext) -> Relauncher:
    if ctx.launcher is None:
        raise PlatformNotRunning()
    return ctx.launcher


def _launched(run_id: str | None) -> str:
    if run_id is None:  # only a sensor's launcher defers the run id, and no sensor calls these
        raise Refused("the run was not launched")
    return run_id


# Which of the actor's rights a lifecycle action needs.
RIGHTS = {
    LifecycleAction.RETRY: Action.RETRY,
    LifecycleAction.COMPENSATE: Action.RETRY,
    LifecycleAction.DECOMMISSION: Action.DECOMMISSION,
    LifecycleAction.DISCARD: Action.DECOMMISSION,
}


def _allowed(ctx: ServiceContext, actor: Actor, action: LifecycleAction, slug: str) -> None:
    """The actor sees what the slug names (its tenant, or a newer request: another org's does
    not exist for the actor, NotFound) and may act on it; a request without a tenant is held to
    the table of what its state admits. A tenant's state is checked under its operation claim,
    so that an operation in flight is named first."""
    found = tenant_status(ctx.registry, "", slug)
    check_visible(actor, found.org, slug)
    authorize(actor, RIGHTS[action], found.org)
    if found.tenant_id is None:
        check(slug, found.state, action)


# retry ----------------------------------------------------------------------------------------
def retry(ctx: ServiceContext, actor: Actor, slug: str) -> str:
    """Re-execute the tenant's failed (or canceled) provisioning run from where it stopped; the
    new run names who asked for it. A request whose run failed before a tenant existed (in
    Validate, for a reason that is not a refusal) is retried the same way. The new run's id."""
    _allowed(ctx, actor, LifecycleAction.RETRY, slug)
    if (request := waiting_request(ctx.registry, slug)) is not None:
        _not_being_retried(request)
        ended = _ended_request_run(ctx, request)
        hand_request_to_retry(ctx, request, ended.chain)
        return _reexecute(ctx, ended, slug, actor.subject)
    tenant = ctx.registry.tenants.get(slug)
    holder = f"{OperationKind.RETRY}:{uuid.uuid4()}"
    with operation_claim(ctx, tenant, OperationKind.RETRY, holder) as claim:
        check_retryable(claim.tenant)
        failed = ctx.runs.get(claim.tenant.last_run_id or "")
        if failed is None or failed.job_name != PROVISION_JOB:
            raise Refused(f"tenant {slug} has no provisioning run to retry")
        run_id = _reexecute(ctx, failed, slug, actor.subject)
        claim.name_run(run_id)
    return run_id


def _reexecute(ctx: ServiceContext, run: RunView, slug: str, requested_by: str) -> str:
    asked = {REQUESTED_BY_TAG: requested_by}
    if run.status == RunStatus.FAILURE:
        return _launched(_launcher(ctx).reexecute(run, asked))
    if run.status == RunStatus.CANCELED:
        # Dagster refuses "from failure" for a canceled run: name the steps ourselves.
        done = ctx.runs.succeeded_steps(run.run_id)
        steps = [str(step) for step in PROVISION_STEPS if step not in done]
        return _launched(_launcher(ctx).reexecute(run, {**run.tags, **asked}, steps))
    raise Refused(f"run {run.run_id} of tenant {slug} is {run.status.value}; wait for it to end")


def _ended_request_run(ctx: ServiceContext, request: RequestRecord) -> RunView:
    """The request's latest run, which must have ended: OperationInFlight while one runs."""
    runs = ctx.runs.for_request(request.request_id)  # newest first
    if running := [r for r in runs if not r.finished]:
        raise OperationInFlight(request.slug, "provisioning", running[0].run_id)
    if not runs:
        raise Refused(f"request {request.request_id} has no run yet; the intake sensor launches it")
    return runs[0]


def hand_request_to_retry(ctx: ServiceContext, request: RequestRecord, chain: str) -> None:
    """Hand the request, still without a tenant, to the re-execution of the run chain `chain`
    (compare-and-set); OperationInFlight when another retry got there first or is still being
    launched. The re-execution's Validate then claims it."""
    _not_being_retried(request)
    if not ctx.registry.requests.reopen(request.request_id, request.run_id, chain):
        raise OperationInFlight(request.slug, OperationKind.RETRY, None)


def _not_being_retried(request: RequestRecord) -> None:
    """OperationInFlight while another retry's run is being launched for the request."""
    retrying = (request.run_id or "").startswith(RETRY_MARKER)
    age = (datetime.now(UTC) - request.updated_at).total_seconds()
    if retrying and age < LAUNCH_GRACE_S:
        raise OperationInFlight(request.slug, OperationKind.RETRY, None)


# decommission ---------------------------------------------------------------------------------
def decommission(
    ctx: ServiceContext, actor: Actor, slug: str, wait_s: float = DECOMMISSION_COMPENSATION_WAIT_S
) -> str:
    """Decommission the tenant; a compensation in flight is waited for (up to `wait_s`), any
    other operation refuses at once. The decommission run's id."""
    deadline = ctx.clock.monotonic() + wait_s
    while True:
        try:
            return decommission_now(ctx, actor, slug)
        except OperationInFlight as busy:
            if busy.kind != OperationKind.COMPENSATION or ctx.clock.monotonic() >= deadline:
                raise
        ctx.clock.sleep(WAIT_POLL_S)


def decommission_now(ctx: ServiceContext, actor: Actor, slug: str) -> str:
    """One attempt: OperationInFlight at once while anything holds the tenant."""
    _allowed(ctx, actor, LifecycleAction.DECOMMISSION, slug)
    tenant = ctx.registry.tenants.get(slug)
    holder = f"{OperationKind.DECOMMISSION}:{uuid.uuid4()}"
    with operation_claim(ctx, tenant, OperationKind.DECOMMISSION, holder) as claim:
        check_decommissionable(claim.tenant)
        tags = tenant_tags(claim.tenant, **{REQUESTED_BY_TAG: actor.subject})
        config = tenant_op_config(claim.tenant, Step.DECOMMISSION)
        run_id = _launched(_launcher(ctx).launch(DECOMMISSION_JOB, config, tags))
        claim.name_run(run_id)
    return run_id


# compensate -----------------------------------------------------------------------------------
def compensate(ctx: ServiceContext, actor: Actor, slug: str) -> str:
    """Launch the compensation of the failed tenant's latest run again, once the automatic
    attempts gave up and the cause is fixed: it releases, newest first, what is still live."""
    _allowed(ctx, actor, LifecycleAction.COMPENSATE, slug)
    tenant = ctx.registry.tenants.get(slug)
    check_compensable(tenant)
    failed_run_id = str(tenant.last_run_id)
    with compensation_claim(ctx, tenant, failed_run_id) as claim:
        tags = tenant_tags(
            tenant, **{REQUESTED_BY_TAG: actor.subject, FAILED_RUN_TAG: failed_run_id}
        )
        config = tenant_op_config(tenant, Step.COMPENSATE, failed_run_id=failed_run_id)
        run_id = _launched(_launcher(ctx).launch(COMPENSATE_JOB, config, tags))
        claim.name_run(run_id)
    return run_id


@contextmanager
def compensation_claim(
    ctx: ServiceContext, tenant: TenantRecord, failed_run_id: str
) -> Iterator[Claim]:
    """A person's compensation of `failed_run_id`: refused while an automatic attempt is in
    flight; otherwise the tenant's claim, with its compensation record reopened for one more
    attempt (so a failure is reported again rather than retried)."""
    record = ctx.registry.compensations.get(failed_run_id)
    if record is not None and record.finished_at is None and record.gave_up_at is None:
        raise OperationInFlight(tenant.slug, OperationKind.COMPENSATION, record.compensation_run_id)
    holder = compensation_holder(failed_run_id)
    with operation_claim(ctx, tenant, OperationKind.COMPENSATION, holder) as claim:
        ctx.registry.compensations.claim(failed_run_id, tenant.tenant_id)  # its record, if none
        ctx.registry.compensations.reopen(failed_run_id, MAX_COMPENSATION_ATTEMPTS)
        yield claim


# discard --------------------------------------------------------------------------------------
def discard(ctx: ServiceContext, actor: Actor, slug: str) -> str:
    """Give up a request whose run failed before a tenant existed: it ends `rejected` with who
    discarded it, and the slug is free again; its request id."""
    _allowed(ctx, actor, LifecycleAction.DISCARD, slug)
    request = waiting_request(ctx.registry, slug)
    if request is None:
        raise Refused(refusal(slug, "", LifecycleAction.DISCARD))
    _ended_request_run(ctx, request)
    ctx.registry.requests.reject(request.request_id, f"discarded by {actor.subject}")
    return request.request_id


# the Dagster UI's own launches ----------------------------------------------------------------
def admit_ui_run(ctx: ServiceContext, run: RunView) -> dict[str, str]:
    """Hold a run launched from the Dagster UI to the rules above before it starts: a
    re-execution of a provisioning run is a retry (of its tenant, or of its request when the
    run failed before the tenant existed), a decommission run a decommission, a compensation
    run a person's compensation; each takes the tenant's claim, named after `run`. Raises
    (Refused, OperationInFlight, NotFound) when the state or another operation refuses it.
    Returns the tags the run must carry: its tenant's host, as the registry records it."""
    if run.job_name == DECOMMISSION_JOB:
        tenant = ctx.registry.tenants.get_by_id(op_config(run, Step.DECOMMISSION)["tenant_id"])
        placement = _placement_of(run, tenant.worker_host)
        _claim_for_ui(ctx, tenant, OperationKind.DECOMMISSION, run.run_id)
        metrics.DECOMMISSIONS.labels(started_by=Door.DAGSTER_UI).inc()
        return placement
    if run.job_name == COMPENSATE_JOB:
        config = op_config(run, Step.COMPENSATE)
        tenant = ctx.registry.tenants.get_by_id(config["tenant_id"])
        placement = _placement_of(run, tenant.worker_host)
        check_compensable(tenant)
        with compensation_claim(ctx, tenant, str(config["failed_run_id"])) as claim:
            claim.name_run(run.run_id)
        return placement
    if run.job_name == PROVISION_JOB and run.parent_run_id is not None:
        request_id = str(op_config(run, Step.VALIDATE)["request_id"])
        retried = ctx.registry.tenants.for_request(request_id)
        if retried is None:
            request = ctx.registry.requests.get(request_id)
            placement = _placement_of(run, request.worker_host)
            hand_request_to_retry(ctx, request, run.chain)
        else:
            placement = _placement_of(run, retried.worker_host)
            _claim_for_ui(ctx, retried, OperationKind.RETRY, run.run_id)
        metrics.RETRIES.labels(started_by=Door.DAGSTER_UI).inc()
        return placement
    return {}


def _placement_of(run: RunView, worker_host: str | None) -> dict[str, str]:
    """The placement tag a UI launch carries: the tenant's host. A launch that claims another is
    refused: the tag decides which host's restart settles the run."""
    claimed = run.tags.get(WORKER_HOST_TAG)
    if claimed is not None and claimed != worker_host:
        recorded = repr(worker_host) if worker_host else "none"
        raise Refused(
            f"the run's tag {WORKER_HOST_TAG}={claimed!r} is not its tenant's host ({recorded})"
        )
    return {WORKER_HOST_TAG: worker_host} if worker_host else {}


UI_CHECKS = {
    OperationKind.RETRY: check_retryable,
    OperationKind.DECOMMISSION: check_decommissionable,
}


def _claim_for_ui(
    ctx: ServiceContext, tenant: TenantRecord, kind: OperationKind, run_id: str
) -> None:
    with operation_claim(ctx, tenant, kind, f"{kind}:{run_id}") as claim:
        UI_CHECKS[kind](claim.tenant)
        claim.name_run(run_id)


def op_config(run: RunView, op_name: str) -> dict[str, Any]:
    """The op's config in the run's config; NotFound when the run does not carry it."""
    run_config: Any = run.run_config
    try:
        config = run_config["ops"][str(op_name)]["config"]
    except (KeyError, TypeError):
        raise NotFound(f"run {run.run_id} has no config for op {op_name}") from None
    if not isinstance(config, dict):
        raise NotFound(f"run {run.run_id} has no config for op {op_name}")
    return config
