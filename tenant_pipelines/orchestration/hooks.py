"""Failure hook: a provisioning op failed for good, so queue its compensation run.

A thin adapter of the service's `compensate_failed_run` (`service.compensation`), the same call
the backstop sensor makes for runs whose hook never fired (killed workers, canceled runs). The
compensation run is launched by the `launcher` resource (`runtime.launchers.SiblingLaunchers`),
from this run's own code location.
"""

from typing import Protocol

from dagster import DagsterInstance, HookContext, HookDefinition, JobDefinition, failure_hook

from tenant_pipelines.orchestration.runs import DagsterRuns
from tenant_pipelines.service.compensation import compensate_failed_run
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.ports import Launcher

LAUNCHER_RESOURCE = "launcher"


class SiblingLaunchers(Protocol):
    def for_run(
        self, instance: DagsterInstance, run_id: str, jobs: list[JobDefinition]
    ) -> Launcher: ...


def compensation_hook(compensate_job: JobDefinition) -> HookDefinition:
    """The hook that queues a run of `compensate_job` for the failed run it fires in."""

    @failure_hook(
        name="launch_compensation", required_resource_keys={"platform", LAUNCHER_RESOURCE}
    )
    def launch_compensation(context: HookContext) -> None:
        runs = DagsterRuns(context.instance)
        run = runs.get(context.run_id)
        if run is None:
            return
        ctx = ServiceContext(context.resources.platform.build().registry, runs)
        launchers: SiblingLaunchers = getattr(context.resources, LAUNCHER_RESOURCE)
        launcher = launchers.for_run(context.instance, context.run_id, [compensate_job])
        if compensate_failed_run(ctx, run, launcher):
            context.log.info(f"compensation of run {context.run_id} queued")

    return launch_compensation
