"""A queued run coordinator that starts a run at once when its plan has a free slot.

Dagster's queued coordinator enqueues every run, and its daemon dequeues them once a second at
best (`dequeue_interval_seconds` takes whole seconds): measured from the API, that wait was half
of a tenant's time to active. This coordinator decides at submission instead. When no run with
the same limited tags is waiting in the queue, and the global limit and every tag limit the run
falls under leave a slot, the run is launched now, in the submitting process; otherwise it is
enqueued, and the daemon starts it as before, in order.

The decision and the launch (which marks the run STARTING, so the next decision counts it) run
under one lock file per instance, so concurrent submitters, in any process on this host, never
take the same slot. The daemon starts only queued runs, and a plan with queued runs is left to
it, so per-plan limits hold on both paths. (The global limit can be passed by one run for a
moment, when the daemon starts a queued run of another plan during a decision here: it reads its
counts once per loop.) Only the platform's long-lived processes (webserver,
daemon: `LAUNCH_NOW_ENV`) launch this way; elsewhere (a run worker submitting a compensation)
the run is enqueued, so no run's process has to outlive the one that launched it.
"""

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES

LAUNCH_NOW_ENV = "TENANT_LAUNCH_NOW"  # "1" in the processes `tenantctl up` starts
LOCK_FILE = ".run-slots.lock"


class SlotRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator's configuration and queue, with an immediate start when it may."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status != DagsterRunStatus.NOT_STARTED or os.environ.get(LAUNCH_NOW_ENV) != "1":
            return super().submit_run(context)
        with self._slots_locked():
            if self._slot_free(run):
                return self._instance.launch_run(run.run_id, context.workspace)
            return super().submit_run(context)

    @contextmanager
    def _slots_locked(self) -> Iterator[None]:
        path = Path(self._instance.root_directory) / LOCK_FILE
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _slot_free(self, run: DagsterRun) -> bool:
        config = self.get_run_queue_config()
        limits = [limit for limit in config.tag_concurrency_limits if _applies(limit, run.tags)]
        if any(not isinstance(limit.get("value"), str) for limit in limits):
            return False  # per-unique-value limits: leave them to the daemon's accounting
        if self._waiting(limits):
            return False  # runs like it are queued: they go first
        active = [
            record.dagster_run
            for record in self._instance.get_run_records(
                filters=RunsFilter(statuses=ACTIVE_RUN_STATUSES)
            )
        ]
        if 0 <= config.max_concurrent_runs <= len(active):
            return False
        return all(
            sum(_applies(limit, other.tags) for other in active) < limit["limit"]
            for limit in limits
        )

    def _waiting(self, limits: list[Mapping[str, Any]]) -> bool:
        return any(
            self._instance.get_runs_count(
                filters=RunsFilter(
                    statuses=[DagsterRunStatus.QUEUED], tags={limit["key"]: limit["value"]}
                )
            )
            > 0
            for limit in limits
        )


def _applies(limit: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    key, value = limit["key"], limit.get("value")
    if key not in tags:
        return False
    return value is None or not isinstance(value, str) or tags[key] == value
