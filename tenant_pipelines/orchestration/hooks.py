"""Failure hook: a provisioning op failed for good, so queue its compensation run.

Whether the run needs one is the saga's call (`claim_compensation`), the same one the backstop
sensor makes for runs whose hook never fired (killed workers, canceled runs).
"""

from dagster import HookContext, HookDefinition, JobDefinition, failure_hook

from tenant_pipelines.domain.events import Step
from tenant_pipelines.orchestration.launch import submit_sibling_run
from tenant_pipelines.orchestration.operations import claim_compensation_operation
from tenant_pipelines.orchestration.runs import (
    FAILED_RUN_TAG,
    ended_run,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.saga.failure import claim_compensation
from tenant_pipelines.saga.operations import compensation_holder


def compensation_hook(compensate_job: JobDefinition) -> HookDefinition:
    """The hook that queues a run of `compensate_job` for the failed run it fires in."""

    @failure_hook(name="launch_compensation", required_resource_keys={"platform"})
    def launch_compensation(context: HookContext) -> None:
        registry = context.resources.platform.registry.get()
        run = context.instance.get_run_by_id(context.run_id)
        tenant = None if run is None else claim_compensation(registry, ended_run(run))
        if tenant is None:
            return
        if not claim_compensation_operation(registry, context.instance, tenant, context.run_id):
            context.log.info(f"{tenant.slug} has another operation in flight; compensation waits")
            return  # the backstop launches it once the tenant is free
        holder = compensation_holder(context.run_id)
        try:
            compensation_run_id = submit_sibling_run(
                context.instance,
                context.run_id,
                compensate_job,
                tenant_op_config(tenant, Step.COMPENSATE, failed_run_id=context.run_id),
                tenant_tags(tenant, **{FAILED_RUN_TAG: context.run_id}),
            )
        except Exception:
            registry.release_operation(tenant.tenant_id, holder=holder)
            raise
        registry.set_compensation_run(context.run_id, compensation_run_id)
        registry.set_operation_run(tenant.tenant_id, holder, compensation_run_id)
        context.log.info(f"compensation run {compensation_run_id} queued for {tenant.slug}")

    return launch_compensation
