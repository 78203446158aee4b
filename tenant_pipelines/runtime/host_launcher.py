"""The run launcher of a platform with several hosts: each run goes to its tenant's host.

Dagster's `CeleryRunLauncher` (dagster-celery) hands a run to a Celery queue named by the run's
tag `dagster-celery/queue`, where a worker takes it and executes it in one of its processes.
Here the queue is always the tenant's host, read from the run's `worker_host` tag (set from the
registry by every door, copied by every re-execution: `service.jobs`): a launch sets the queue
tag from it, over whatever the run carried, so a run can only ever reach its tenant's host.
`tenantctl worker` on that host consumes that queue and nothing else (`runtime.host_worker`).

A run of no placed tenant (recorded before placement) goes to the launcher's default queue, the
first worker host. The broker is Redis (TENANT_CELERY_BROKER), which also keeps each task's
state: the daemon's run monitor reads it to learn that a worker died under its run.
"""

from dagster import DagsterRun
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

from tenant_pipelines.runtime.dagster_private import LaunchRunContext
from tenant_pipelines.service.jobs import WORKER_HOST_TAG


class HostRunLauncher(CeleryRunLauncher):
    """`CeleryRunLauncher`, each run pinned to the queue of its tenant's host."""

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context._replace(dagster_run=self._pinned(context.dagster_run)))

    @property
    def supports_resume_run(self) -> bool:
        """A run whose worker died fails, and the daemon's run retries re-execute it from the
        failure (on the same host: the copy keeps the tags), as on one host."""
        return False

    def queue_of(self, run: DagsterRun) -> str:
        return run.tags.get(WORKER_HOST_TAG) or self.default_queue

    def _pinned(self, run: DagsterRun) -> DagsterRun:
        queue = self.queue_of(run)
        if run.tags.get(DAGSTER_CELERY_QUEUE_TAG) == queue:
            return run
        self._instance.add_run_tags(run.run_id, {DAGSTER_CELERY_QUEUE_TAG: queue})
        return run.with_tags({**run.tags, DAGSTER_CELERY_QUEUE_TAG: queue})
