"""Retry, decommission and compensate: what `tenantctl retry`, `decommission` and `compensate`
launch, through the running webserver's API so the runs are the same as the UI's (queued,
visible, re-executable).

Each holds the tenant's one lifecycle operation (`operations.run_exclusively`): a second command
on the same tenant is refused at once (OperationInFlight) rather than racing the first.
Decommission is the exception for a compensation in flight: it waits for it to end (bounded),
then goes ahead, since releasing what remains is what both want.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from tenant_pipelines.domain.errors import OperationInFlight, Refused, TenantPipelinesError
from tenant_pipelines.domain.events import PROVISION_STEPS, Step
from tenant_pipelines.domain.records import OperationKind, RequestRecord, TenantRecord
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.orchestration.graphql import DagsterApi
from tenant_pipelines.orchestration.operations import LAUNCH_GRACE_S, claim_ended, run_exclusively
from tenant_pipelines.orchestration.runs import (
    COMPENSATE_JOB,
    DECOMMISSION_JOB,
    FAILED_RUN_TAG,
    PROVISION_JOB,
    REQUESTED_BY_TAG,
    runs_for_request,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.registry.status import waiting_request
from tenant_pipelines.registry.store import RETRY_MARKER, TenantRegistry

__all__ = ["Refused", "compensate", "decommission", "discard", "retry", "wait_for_run"]
from tenant_pipelines.saga.operations import MAX_COMPENSATION_ATTEMPTS, compensation_holder

WAIT_POLL_S = 0.5
WAIT_TIMEOUT_S = 600
# Decommission waits this long for a compensation in flight (all its attempts and backoff).
COMPENSATION_WAIT_S = 120.0


def steps_to_rerun(instance: DagsterInstance, run: DagsterRun) -> list[str]:
    """The phases that did not succeed in `run`, in job order."""
    stats = instance.get_run_step_stats(run.run_id)
    succeeded = {s.step_key for s in stats if s.status is not None and s.status.value == "SUCCESS"}
    return [str(step) for step in PROVISION_STEPS if step not in succeeded]


def retry(
    registry: TenantRegistry,
    instance: DagsterInstance,
    api: DagsterApi,
    slug: str,
    requested_by: str,
) -> str:
    """Re-execute the tenant's failed (or canceled) provisioning run from where it stopped;
    the new run names who asked for it. A request whose run failed before a tenant existed
    (in Validate, for a reason that is not a refusal) is retried the same way."""
    if (request := waiting_request(registry, slug)) is not None:
        return _retry_request(registry, instance, api, request, requested_by)
    return run_exclusively(
        registry,
        instance,
        registry.get_tenant(slug),
        OperationKind.RETRY,
        lambda tenant: _launch_retry(instance, api, tenant, requested_by),
    )


def check_retryable(tenant: TenantRecord) -> None:
    """Only a failed tenant is retried (Refused otherwise)."""
    if tenant.state != TenantState.FAILED:
        raise Refused(
            f"tenant {tenant.slug} is {tenant.state}; only a failed tenant can be retried"
        )


def check_decommissionable(tenant: TenantRecord) -> None:
    """An active or failed tenant is decommissioned (Refused otherwise)."""
    if tenant.state == TenantState.PROVISIONING:
        raise Refused(f"tenant {tenant.slug} is provisioning; wait until it is active or failed")
    if tenant.state == TenantState.DECOMMISSIONED:
        raise Refused(f"tenant {tenant.slug} is already decommissioned")


def check_compensable(tenant: TenantRecord) -> None:
    """Only a failed tenant's latest run is compensated again (Refused otherwise)."""
    if tenant.state != TenantState.FAILED or not tenant.last_run_id:
        state = tenant.state
        raise Refused(f"tenant {tenant.slug} is {state}; only a failed tenant is compensated")


def _launch_retry(
    instance: DagsterInstance, api: DagsterApi, tenant: TenantRecord, requested_by: str
) -> str:
    check_retryable(tenant)
    run = instance.get_run_by_id(tenant.last_run_id or "")
    if run is None or run.job_name != PROVISION_JOB:
        raise Refused(f"tenant {tenant.slug} has no provisioning run to retry")
    return _reexecute(instance, api, run, tenant.slug, requested_by)


def _reexecute(
    instance: DagsterInstance, api: DagsterApi, run: DagsterRun, slug: str, requested_by: str
) -> str:
    asked = {REQUESTED_BY_TAG: requested_by}
    if run.status == DagsterRunStatus.FAILURE:
        return api.reexecute_from_failure(run.run_id, asked)
    if run.status == DagsterRunStatus.CANCELED:
        # Dagster refuses "from failure" for a canceled run: name the steps ourselves.
        return api.reexecute_steps(
            run.run_id,
            run.root_run_id or run.run_id,
            PROVISION_JOB,
            run.run_config,
            {**run.tags, **asked},
            steps_to_rerun(instance, run),
        )
    raise Refused(f"run {run.run_id} of tenant {slug} is {run.status.value}; wait for it to end")


def _ended_request_run(instance: DagsterInstance, request: RequestRecord) -> DagsterRun:
    """The request's latest run, which must have ended: OperationInFlight while one runs."""
    runs = runs_for_request(instance, request.request_id)  # newest first
    if running := [r for r in runs if not r.is_finished]:
        raise OperationInFlight(request.slug, "provisioning", running[0].run_id)
    if not runs:
        raise Refused(f"request {request.request_id} has no run yet; the intake sensor launches it")
    return runs[0]


def _retry_request(
    registry: TenantRegistry,
    instance: DagsterInstance,
    api: DagsterApi,
    request: RequestRecord,
    requested_by: str,
) -> str:
    """Re-execute the request's failed run (Validate included). The request is first handed
    from that run to the re-execution (compare-and-set), so of two retries at once one is
    refused; so is a retry while another one's run is being launched."""
    run = _ended_request_run(instance, request)
    hand_request_to_retry(registry, request, run.root_run_id or run.run_id)
    return _reexecute(instance, api, run, request.slug, requested_by)


def hand_request_to_retry(
    registry: TenantRegistry, request: RequestRecord, root_run_id: str
) -> None:
    """Hand the request, still without a tenant, to the re-execution of `root_run_id`
    (compare-and-set); OperationInFlight when another retry got there first or is still
    being launched."""
    retrying = (request.run_id or "").startswith(RETRY_MARKER)
    age = (datetime.now(UTC) - request.updated_at).total_seconds()
    if retrying and age < LAUNCH_GRACE_S:
        raise OperationInFlight(request.slug, OperationKind.RETRY, None)
    if not registry.reopen_request(request.request_id, request.run_id, root_run_id):
        raise OperationInFlight(request.slug, OperationKind.RETRY, None)


def discard(
    registry: TenantRegistry, instance: DagsterInstance, slug: str, requested_by: str
) -> str:
    """Give up a request whose run failed before a tenant existed: it ends `rejected` with who
    discarded it, and the slug is free again; its request id."""
    request = waiting_request(registry, slug)
    if request is None:
        raise Refused(f"slug {slug} has no request waiting without a tenant")
    _ended_request_run(instance, request)
    registry.reject_request(request.request_id, f"discarded by {requested_by}")
    return request.request_id


def decommission(
    registry: TenantRegistry,
    instance: DagsterInstance,
    api: DagsterApi,
    slug: str,
    requested_by: str,
    sleep: Callable[[float], None] = time.sleep,
    wait_s: float = COMPENSATION_WAIT_S,
) -> str:
    """Decommission the tenant; a compensation in flight is waited for (up to `wait_s`), any
    other operation refuses at once."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return run_exclusively(
                registry,
                instance,
                registry.get_tenant(slug),
                OperationKind.DECOMMISSION,
                lambda tenant: _launch_decommission(api, tenant, requested_by),
            )
        except OperationInFlight as busy:
            if busy.kind != OperationKind.COMPENSATION or time.monotonic() >= deadline:
                raise
        sleep(WAIT_POLL_S)


def compensate(
    registry: TenantRegistry,
    instance: DagsterInstance,
    api: DagsterApi,
    slug: str,
    requested_by: str,
) -> str:
    """Launch the compensation of the failed tenant's latest run again, once the automatic
    attempts gave up and the cause is fixed: it releases, newest first, what is still live."""
    tenant = registry.get_tenant(slug)
    check_compensable(tenant)
    failed_run_id = str(tenant.last_run_id)
    with compensation_claim(registry, instance, tenant, failed_run_id) as holder:
        tags = tenant_tags(
            tenant, **{REQUESTED_BY_TAG: requested_by, FAILED_RUN_TAG: failed_run_id}
        )
        config = tenant_op_config(tenant, Step.COMPENSATE, failed_run_id=failed_run_id)
        run_id = api.launch(COMPENSATE_JOB, config, tags)
    registry.set_operation_run(tenant.tenant_id, holder, run_id)
    return run_id


@contextmanager
def compensation_claim(
    registry: TenantRegistry, instance: DagsterInstance, tenant: TenantRecord, failed_run_id: str
) -> Iterator[str]:
    """Hold the tenant's claim for a person's compensation of `failed_run_id`, its record
    reopened for one more attempt; yields the claim's holder. Released if the body raises."""
    holder = compensation_holder(failed_run_id)
    claim = registry.get_compensation(failed_run_id)
    if claim is not None and claim.finished_at is None and claim.gave_up_at is None:
        raise OperationInFlight(tenant.slug, OperationKind.COMPENSATION, claim.compensation_run_id)
    registry.claim_operation(
        tenant.tenant_id, OperationKind.COMPENSATION, holder, ended=claim_ended(instance)
    )
    try:
        registry.claim_compensation(failed_run_id, tenant.tenant_id)  # its record, if none yet
        registry.reopen_compensation(failed_run_id, MAX_COMPENSATION_ATTEMPTS)
        yield holder
    except BaseException:
        registry.release_operation(tenant.tenant_id, holder=holder)
        raise


def _launch_decommission(api: DagsterApi, tenant: TenantRecord, requested_by: str) -> str:
    check_decommissionable(tenant)
    tags = tenant_tags(tenant, **{REQUESTED_BY_TAG: requested_by})
    return api.launch(DECOMMISSION_JOB, tenant_op_config(tenant, Step.DECOMMISSION), tags)


def wait_for_run(
    instance: DagsterInstance,
    run_id: str,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = WAIT_TIMEOUT_S,
) -> DagsterRunStatus:
    """Block until the run has ended; its final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run.status
        if time.monotonic() > deadline:
            raise TenantPipelinesError(f"run {run_id} has not ended after {timeout_s:g} s")
        sleep(WAIT_POLL_S)
