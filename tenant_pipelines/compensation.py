"""The compensation job: undo a failed provisioning run, newest allocation first."""

from dagster import OpExecutionContext, in_process_executor, job, op

from resources.platform import TenantPlatform
from tenant_pipelines import phases
from tenant_pipelines.ops import RELEASE_RETRY_POLICY, TenantOpConfig, phase_context
from tenant_pipelines.runs import COMPENSATE_JOB


class CompensateConfig(TenantOpConfig):
    failed_run_id: str


@op(
    retry_policy=RELEASE_RETRY_POLICY,
    description="Release, newest first, everything the ledger shows allocated.",
)
def compensate(
    context: OpExecutionContext, config: CompensateConfig, platform: TenantPlatform
) -> None:
    ctx = phase_context(context, platform)
    tenant = ctx.registry.get_tenant_by_id(config.tenant_id).spec
    phases.compensate(ctx, tenant, config.failed_run_id)


@job(name=COMPENSATE_JOB, executor_def=in_process_executor)
def compensate_tenant() -> None:
    compensate()
