"""Creating and submitting runs from a long-lived process that has the code location imported
(the API server), instead of through Dagster's GraphQL API.

A GraphQL launch asks the code server for the job's snapshots: about 0.2 s of CPU a run, and
the launches of a burst are served one by one. Here the job is
built in this process (10 ms) and the run is created with the same origins the webserver would
give it, read from the same workspace.yaml: the UI shows it in the code location, the daemon
and run retries treat it like any other, and `tenantctl retry` re-executes it. It is submitted
through the instance's run coordinator, so run limits and the queue hold as for every run. A
workspace whose location is a code server (`grpc_server`, as on a worker host) works the same.
"""

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, JobDefinition

from tenant_pipelines.domain.errors import ConfigError
from tenant_pipelines.orchestration.graphql import LOCATION, REPOSITORY
from tenant_pipelines.runtime.dagster_private import (
    CodeLocationOrigin,
    GrpcServerCodeLocationOrigin,
    JobPythonOrigin,
    ReconstructableRepository,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    location_origins_from_yaml_paths,
    submit_without_workspace,
)

DEFINITIONS_MODULE = "tenant_pipelines.definitions"
DEFINITIONS_ATTRIBUTE = "defs"


class DirectLauncher:
    """Launches runs of this code location's jobs; the same `launch` as `DagsterApi`."""

    def __init__(self, instance: DagsterInstance, workspace: Path) -> None:
        self._instance = instance
        self._workspace = workspace

    @cached_property
    def _location(self) -> CodeLocationOrigin:
        for origin in location_origins_from_yaml_paths([str(self._workspace)]):
            if origin.location_name == LOCATION:
                return origin
        raise ConfigError(f"{self._workspace} has no code location named {LOCATION!r}")

    @cached_property
    def _working_directory(self) -> str | None:
        """Where a run worker imports the code from: the location's own, for a location this
        workspace loads from Python; none for a code server's (`grpc_server`), which says it only
        when asked over gRPC: its workers import the installed package, as this process did."""
        if isinstance(self._location, GrpcServerCodeLocationOrigin):
            return None
        return self._location.loadable_target_origin.working_directory

    @cached_property
    def _jobs(self) -> Mapping[str, JobDefinition]:
        from tenant_pipelines.definitions import defs

        repository = defs().get_repository_def()
        return {job.name: job for job in repository.get_all_jobs()}

    def launch(self, job_name: str, run_config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        job = self._jobs[job_name]
        repository = ReconstructableRepository.for_module(
            DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, self._working_directory
        ).get_python_origin()
        run = self._instance.create_run_for_job(
            job,
            run_config=dict(run_config),
            tags=dict(tags),
            job_code_origin=JobPythonOrigin(job_name, repository),
            remote_job_origin=RemoteJobOrigin(
                RemoteRepositoryOrigin(self._location, REPOSITORY), job_name
            ),
        )
        submit_without_workspace(self._instance, run.run_id)
        return run.run_id
