"""The service's launchers (`service.ports`), one per way this project's processes start a run:

- `ApiServerLauncher`, in the API server: a new run is built in-process (`direct_launch`, the
  code location imported once) and a re-execution goes through the Dagster UI's own GraphQL
  schema in-process, so it is exactly the UI's (parent and root tags copied, queued);
- `SiblingLauncher`, inside a run: its failure hook queues the compensation run with the run's
  own code-location origin, through the instance's run coordinator (the daemon starts it), so it
  shows in the UI and can be re-executed from there like any other run; Dagster offers no public
  way to submit a run from a process without a workspace, hence its place in `runtime/`;
- the sensors' run requests (`orchestration.sensor_launch`), created by the daemon.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import ConfigurableResource, DagsterInstance, JobDefinition

from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.orchestration.graphql import DagsterApi
from tenant_pipelines.runtime.dagster_private import submit_without_workspace
from tenant_pipelines.runtime.direct_launch import DirectLauncher
from tenant_pipelines.service.ports import RunView


class LaunchError(TenantPipelinesError):
    pass


class ApiServerLauncher:
    """The service's `Relauncher` in the API server."""

    def __init__(self, direct: DirectLauncher, graphql: DagsterApi) -> None:
        self._direct = direct
        self._graphql = graphql

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        return self._direct.launch(job_name, run_config, tags)

    def reexecute(
        self, parent: RunView, tags: Mapping[str, str], steps: Sequence[str] | None = None
    ) -> str:
        if steps is None:
            return self._graphql.reexecute_from_failure(parent.run_id, tags)
        return self._graphql.reexecute_steps(
            parent.run_id, parent.chain, parent.job_name, parent.run_config, tags, steps
        )


class SiblingLauncher:
    """The service's `Launcher` inside a run: runs of `jobs`, from the same code location."""

    def __init__(
        self, instance: DagsterInstance, parent_run_id: str, jobs: Mapping[str, JobDefinition]
    ) -> None:
        self._instance = instance
        self._parent_run_id = parent_run_id
        self._jobs = jobs

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        parent = self._instance.get_run_by_id(self._parent_run_id)
        if parent is None or parent.remote_job_origin is None or parent.job_code_origin is None:
            raise LaunchError(
                f"run {self._parent_run_id} has no code-location origin to launch from"
            )
        job = self._jobs[job_name]
        run = self._instance.create_run_for_job(
            job,
            run_config=dict(run_config),
            tags=dict(tags),
            remote_job_origin=parent.remote_job_origin._replace(job_name=job.name),
            job_code_origin=parent.job_code_origin._replace(job_name=job.name),
        )
        # Queued by the run coordinator (the daemon starts it): no workspace is needed for that.
        submit_without_workspace(self._instance, run.run_id)
        return run.run_id


class SiblingLaunchers(ConfigurableResource):
    """The resource that hands a run's hooks a `SiblingLauncher` (resource key `launcher`):
    the hooks are defined below `runtime/` and reach it only through this key."""

    def for_run(
        self, instance: DagsterInstance, run_id: str, jobs: Sequence[JobDefinition]
    ) -> SiblingLauncher:
        return SiblingLauncher(instance, run_id, {job.name: job for job in jobs})
