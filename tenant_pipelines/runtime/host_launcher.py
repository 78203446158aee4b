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

As on one host, a run's end hands its slot to a queued run at once (`SlotRunCoordinator.
start_queued`) instead of at the daemon's next loop: the launching process (the API server or
the daemon) reads the state of the tasks it sent, every `WATCH_S`, on one thread.
"""

import contextlib
import threading
import time

from celery import states
from dagster import DagsterRun
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG

from tenant_pipelines.runtime.dagster_private import LaunchRunContext
from tenant_pipelines.runtime.run_coordinator import SlotRunCoordinator, launches_here
from tenant_pipelines.service.jobs import WORKER_HOST_TAG

WATCH_S = 0.2
WATCH_AT_MOST_S = 3600.0  # a task whose state never ends (its worker died) is let go after this


class HostRunLauncher(CeleryRunLauncher):
    """`CeleryRunLauncher`, each run pinned to the queue of its tenant's host."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._watch_lock = threading.Lock()
        self._sent: dict[str, float] = {}  # task id -> when it was sent
        self._watcher: threading.Thread | None = None

    def launch_run(self, context: LaunchRunContext) -> None:
        run = self._pinned(context.dagster_run)
        super().launch_run(context._replace(dagster_run=run))
        if launches_here():
            sent = self._instance.get_run_by_id(run.run_id)
            task_id = sent.tags.get(DAGSTER_CELERY_TASK_ID_TAG) if sent is not None else None
            if task_id:
                self._watch(task_id)

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

    def _watch(self, task_id: str) -> None:
        with self._watch_lock:
            self._sent[task_id] = time.monotonic()
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(
                    target=self._hand_over_slots, name="run-slots", daemon=True
                )
                self._watcher.start()

    def _hand_over_slots(self) -> None:
        """Until no task it sent is in flight: when one has ended, queued runs get its slot."""
        while True:
            with self._watch_lock:
                sent = dict(self._sent)
                if not sent:
                    self._watcher = None
                    return
            # The broker or the database away for a moment: the daemon's queue loop starts queued
            # runs meanwhile.
            with contextlib.suppress(Exception):
                self._hand_over_ended(sent)
            time.sleep(WATCH_S)

    def _hand_over_ended(self, sent: dict[str, float]) -> None:
        now = time.monotonic()
        done = {
            task
            for task, at in sent.items()
            if now - at > WATCH_AT_MOST_S
            or self.celery.AsyncResult(task).state in states.READY_STATES
        }
        if not done:
            return
        with self._watch_lock:
            for task in done:
                self._sent.pop(task, None)
        coordinator = self._instance.run_coordinator
        if isinstance(coordinator, SlotRunCoordinator):
            coordinator.start_queued()
