"""Failure hook: a provisioning op failed for good, so queue its compensation run.

Exactly one compensation per failed run: the registry's claim decides between this hook and the
backstop sensor (which covers runs whose hook never fired: killed workers, canceled runs).
"""

from dagster import HookContext, failure_hook

from tenant_pipelines.compensation import compensate_tenant
from tenant_pipelines.launcher import submit_sibling_run
from tenant_pipelines.runs import FAILED_RUN_TAG, REQUEST_TAG, tenant_op_config, tenant_tags


@failure_hook(required_resource_keys={"platform"})
def launch_compensation(context: HookContext) -> None:
    registry = context.resources.platform.registry.get()
    run = context.instance.get_run_by_id(context.run_id)
    if run is None or REQUEST_TAG not in run.tags:
        return
    tenant = registry.find_tenant_for_request(run.tags[REQUEST_TAG])
    if tenant is None:
        return  # refused before anything was allocated
    if not registry.claim_compensation(context.run_id, tenant.tenant_id):
        return
    compensation_run_id = submit_sibling_run(
        context.instance,
        context.run_id,
        compensate_tenant,
        tenant_op_config(tenant, "compensate", failed_run_id=context.run_id),
        tenant_tags(tenant, **{FAILED_RUN_TAG: context.run_id}),
    )
    registry.set_compensation_run(context.run_id, compensation_run_id)
    context.log.info(f"compensation run {compensation_run_id} queued for {tenant.slug}")
