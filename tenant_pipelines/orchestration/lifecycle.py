"""Retry and decommission: what `tenantctl retry` and `decommission` launch, through the running
webserver's API so the runs are the same as the UI's (queued, visible, re-executable)."""

import time
from collections.abc import Callable

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from tenant_pipelines.domain.errors import PermanentError, TenantPipelinesError
from tenant_pipelines.domain.events import PROVISION_STEPS, Step
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.orchestration.graphql import DagsterApi
from tenant_pipelines.orchestration.runs import (
    DECOMMISSION_JOB,
    PROVISION_JOB,
    REQUESTED_BY_TAG,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.registry.store import TenantRegistry

WAIT_POLL_S = 0.5
WAIT_TIMEOUT_S = 600


class Refused(PermanentError):
    """The tenant is not in a state that admits the operation."""


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
    the new run names who asked for it."""
    tenant = registry.get_tenant(slug)
    if tenant.state != TenantState.FAILED:
        raise Refused(f"tenant {slug} is {tenant.state}; only a failed tenant can be retried")
    run = instance.get_run_by_id(tenant.last_run_id or "")
    if run is None or run.job_name != PROVISION_JOB:
        raise Refused(f"tenant {slug} has no provisioning run to retry")
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


def decommission(registry: TenantRegistry, api: DagsterApi, slug: str, requested_by: str) -> str:
    tenant = registry.get_tenant(slug)
    if tenant.state == TenantState.PROVISIONING:
        raise Refused(f"tenant {slug} is provisioning; wait until it is active or failed")
    if tenant.state == TenantState.DECOMMISSIONED:
        raise Refused(f"tenant {slug} is already decommissioned")
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
