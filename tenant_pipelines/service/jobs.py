"""The runs the service launches, described: job names, tags and run config.

Every way of launching (the API server, a run launching its compensation, the sensors) and every
reader of runs (diagnosis, the console, the run coordinator) use these, so a run looks the same
whoever launched it. Run config carries the tenant's identity (a re-execution copies it); tags
carry what the UI and the run queue filter on.
"""

from typing import Any

from tenant_pipelines.domain.events import Step
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.records import RequestRecord, TenantRecord

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
COMPENSATION_ATTEMPT_TAG = "compensation_attempt"  # 1, then 2 and 3 when the backstop relaunches
# The host the tenant is placed on (`service.placement`): every run of the tenant carries it, and
# a re-execution copies it; absent for a tenant recorded before placement.
WORKER_HOST_TAG = "worker_host"


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
    return {**tags, **_placement(request.worker_host)}


def tenant_op_config(tenant: TenantRecord, op_name: str, **extra: str) -> dict[str, Any]:
    config = {"tenant_id": tenant.tenant_id, "slug": tenant.slug, "org": tenant.org, **extra}
    return {"ops": {str(op_name): {"config": config}}}


def tenant_tags(tenant: TenantRecord, **extra: str) -> dict[str, str]:
    tags = {TENANT_TAG: tenant.slug, "org": tenant.org, PLAN_TAG: tenant.plan}
    return {**tags, **_placement(tenant.worker_host), **extra}


def _placement(worker_host: str | None) -> dict[str, str]:
    return {WORKER_HOST_TAG: worker_host} if worker_host else {}
