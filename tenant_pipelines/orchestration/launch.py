"""Launching a run of another job of this code location from inside a run (hooks).

The new run gets the parent's code-location origin, so it is queued through the instance's run
coordinator like any UI launch, shows in the UI, and can be re-executed from there. Running the
job inline instead would block the failed run and bypass the queue (../shared/DAGSTER_NOTES.md).
"""

from collections.abc import Mapping
from typing import Any

from dagster import DagsterInstance, JobDefinition

from tenant_pipelines.domain.errors import TenantPipelinesError


class LaunchError(TenantPipelinesError):
    pass


def submit_sibling_run(
    instance: DagsterInstance,
    parent_run_id: str,
    job_def: JobDefinition,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
) -> str:
    """Queue a run of `job_def` from the same code location as `parent_run_id`; its run id."""
    parent = instance.get_run_by_id(parent_run_id)
    if parent is None or parent.remote_job_origin is None or parent.job_code_origin is None:
        raise LaunchError(f"run {parent_run_id} has no code-location origin to launch from")
    run = instance.create_run_for_job(
        job_def,
        run_config=dict(run_config),
        tags=dict(tags),
        remote_job_origin=parent.remote_job_origin._replace(job_name=job_def.name),
        job_code_origin=parent.job_code_origin._replace(job_name=job_def.name),
    )
    instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id
