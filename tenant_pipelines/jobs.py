"""The three jobs: provision, compensate, decommission."""

from dagster import OpExecutionContext, in_process_executor, job, op

from resources.platform import TenantPlatform
from tenant_pipelines import phases
from tenant_pipelines.hooks import launch_compensation
from tenant_pipelines.ops import (
    RELEASE_RETRY_POLICY,
    TenantOpConfig,
    allocate,
    deploy,
    mark_active,
    phase_context,
    send_welcome_emails,
    validate,
)
from tenant_pipelines.runs import DECOMMISSION_JOB, PROVISION_JOB


@job(
    name=PROVISION_JOB,
    executor_def=in_process_executor,
    description="Validate, allocate, deploy, mark active, send welcome emails.",
)
def provision_tenant() -> None:
    tenant = validate()
    tenant = allocate.with_hooks({launch_compensation})(tenant)
    tenant = deploy.with_hooks({launch_compensation})(tenant)
    tenant = mark_active.with_hooks({launch_compensation})(tenant)
    send_welcome_emails(tenant)


@op(retry_policy=RELEASE_RETRY_POLICY, description="Release whatever remains and free the slug.")
def decommission(
    context: OpExecutionContext, config: TenantOpConfig, platform: TenantPlatform
) -> None:
    ctx = phase_context(context, platform)
    tenant = ctx.registry.get_tenant_by_id(config.tenant_id).spec
    phases.decommission(ctx, tenant)


@job(name=DECOMMISSION_JOB, executor_def=in_process_executor)
def decommission_tenant() -> None:
    decommission()
