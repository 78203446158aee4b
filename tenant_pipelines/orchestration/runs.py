"""How runs of our jobs are described: run config and tags, shared by every launch path."""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tenant_pipelines.domain.events import Step
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.saga.failure import EndedRun

if TYPE_CHECKING:  # Dagster is slow to import; `tenantctl request` needs none of it
    from dagster import DagsterInstance, DagsterRun

PROVISION_JOB = "provision_tenant"
COMPENSATE_JOB = "compensate_tenant"
DECOMMISSION_JOB = "decommission_tenant"
MAX_RUNTIME_TAG = "dagster/max_runtime"
WILL_RETRY_TAG = "dagster/will_retry"
TENANT_TAG = "tenant"
REQUESTED_BY_TAG = "requested_by"  # who asked: the token's subject, never a token
PLAN_TAG = "plan"  # the run queue's per-plan limits apply to it
REQUEST_TAG = "request_id"
FAILED_RUN_TAG = "failed_run_id"
# `<pid>:<start ticks>` of the process executing the run (runtime.run_launcher). Dagster's UI
# hides tags under `.dagster/`: this one means nothing to an operator.
WORKER_TAG = ".dagster/tenant-pipelines/run-worker"
# Dagster run statuses of a run that has not ended (names, so that importing this needs no Dagster).
IN_FLIGHT_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def provision_run_config(request: RequestRecord) -> dict[str, Any]:
    config = {
        "request_id": request.request_id,
        "slug": request.slug,
        "org": request.org,
        "plan": request.plan,
    }
    return {"ops": {Step.VALIDATE.value: {"config": config}}}


def provision_tags(request: RequestRecord) -> dict[str, str]:
    tags = {
        TENANT_TAG: request.slug,
        "org": request.org,
        PLAN_TAG: request.plan,
        REQUEST_TAG: request.request_id,
        REQUESTED_BY_TAG: request.subject,
    }
    plan = PLANS.get(request.plan)
    if plan is not None:
        tags[MAX_RUNTIME_TAG] = str(plan.max_runtime_s)
    return tags


def tenant_op_config(tenant: TenantRecord, op_name: str, **extra: str) -> dict[str, Any]:
    config = {"tenant_id": tenant.tenant_id, "slug": tenant.slug, "org": tenant.org, **extra}
    return {"ops": {str(op_name): {"config": config}}}


def tenant_tags(tenant: TenantRecord, **extra: str) -> dict[str, str]:
    return {TENANT_TAG: tenant.slug, "org": tenant.org, PLAN_TAG: tenant.plan, **extra}


def ended_run(run: "DagsterRun") -> EndedRun:
    """A run as the saga's compensation policy needs to see it."""
    return EndedRun(
        run_id=run.run_id,
        root_run_id=run.root_run_id,
        request_id=run.tags.get(REQUEST_TAG),
        will_retry=run.tags.get(WILL_RETRY_TAG) == "true",
    )


def runs_for_request(instance: "DagsterInstance", request_id: str) -> list["DagsterRun"]:
    from dagster import RunsFilter

    return list(instance.get_runs(filters=RunsFilter(tags={REQUEST_TAG: request_id})))


def runs_in_flight(instance: "DagsterInstance", slug: str) -> list["DagsterRun"]:
    """The tenant's runs that are queued or running: its state may still change."""
    from dagster import DagsterRunStatus, RunsFilter

    statuses = [DagsterRunStatus(status) for status in IN_FLIGHT_STATUSES]
    filters = RunsFilter(tags={TENANT_TAG: slug}, statuses=statuses)
    return list(instance.get_runs(filters=filters))


def runs_for_tenant(
    instance: "DagsterInstance", slug: str, limit: int = 20, tags: Mapping[str, str] | None = None
) -> list["DagsterRun"]:
    """The tenant's runs, newest first."""
    from dagster import RunsFilter

    filters = RunsFilter(tags={TENANT_TAG: slug, **(tags or {})})
    return list(instance.get_runs(filters=filters, limit=limit))
