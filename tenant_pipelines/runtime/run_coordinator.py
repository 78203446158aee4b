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
counts once per loop.) Only the platform's long-lived processes (the API server, which serves
the Dagster UI too, and the daemon: `LAUNCH_NOW_ENV`) launch this way; elsewhere (a run worker
submitting a compensation) the run is enqueued, so no run's process has to outlive the one that
launched it.

A run launched from the Dagster UI is first admitted (`orchestration.admission`): it carries the
door's caller as `requested_by` and holds its tenant's operation claim, as the API's runs do.

When a run ends, the process that launched it hands its slot to the oldest queued run that fits
(`start_queued`), rather than leaving the slot idle until the daemon's next loop: in a burst that
wait came after every run.
"""

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterRun, DagsterRunStatus, QueuedRunCoordinator, RunsFilter, SubmitRunContext

from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.orchestration.admission import DOOR_SCOPE_KEY, DoorCaller, admit
from tenant_pipelines.runtime.dagster_private import ACTIVE_RUN_STATUSES, launch_without_workspace
from tenant_pipelines.service.jobs import PLAN_TAG

LAUNCH_NOW_ENV = "TENANT_LAUNCH_NOW"  # "1" in the processes `tenantctl up` starts
LOCK_FILE = ".run-slots.lock"
QUEUE_PAGE = 16  # queued runs read at once by `start_queued`


class SlotRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator's configuration and queue, with an immediate start when it may."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        door = door_caller(context)
        if door is not None:
            run = admit(self._instance, context.dagster_run, door)
            context = context._replace(dagster_run=run)
        run = context.dagster_run
        if run.status != DagsterRunStatus.NOT_STARTED or not launches_here():
            return super().submit_run(context)
        with self._slots_locked():
            limits = self._limits(run)
            if limits is not None and not self._waiting(limits) and self._fits(run, self._active()):
                return self._instance.launch_run(run.run_id, context.workspace)
            return super().submit_run(context)

    def start_queued(self) -> list[str]:
        """Give the slots that runs have freed to queued runs, oldest first, now rather than at
        the daemon's next loop; the run ids started. (The daemon may reach for the same run:
        the launcher starts a run once whoever asks.)

        The queue is read a page at a time, and only for plans that have a slot left: in a burst
        it holds hundreds of runs, and reading them all at every run's end (every run's body,
        in the process that serves the API) cost more than the requests themselves. A queued run
        without a plan tag is left to the daemon."""
        if not launches_here():
            return []
        started: list[str] = []
        with self._slots_locked():
            active = self._active()
            cursor: str | None = None
            while (plans := self._plans_with_room(active)) is not None:
                records = self._instance.get_run_records(
                    filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED], tags={PLAN_TAG: plans}),
                    limit=QUEUE_PAGE,
                    cursor=cursor,
                    order_by="id",
                    ascending=True,
                )
                for record in records:
                    run = record.dagster_run
                    if self._limits(run) is not None and self._fits(run, active):
                        launch_without_workspace(self._instance, run.run_id)
                        active.append(run)
                        started.append(run.run_id)
                if len(records) < QUEUE_PAGE:
                    break
                cursor = records[-1].dagster_run.run_id
        return started

    def _plans_with_room(self, active: list[DagsterRun]) -> list[str] | None:
        """The plans whose runs could start beside `active`; None if none could (the global
        limit is reached, or every plan's is)."""
        if self._globally_full(active):
            return None
        limits = self.get_run_queue_config().tag_concurrency_limits
        plans = [
            plan
            for plan in PLANS
            if all(_has_room(lim, active) for lim in limits if _applies(lim, {PLAN_TAG: plan}))
        ]
        return plans or None

    @contextmanager
    def _slots_locked(self) -> Iterator[None]:
        path = Path(self._instance.root_directory) / LOCK_FILE
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _limits(self, run: DagsterRun) -> list[Mapping[str, Any]] | None:
        """The tag limits `run` falls under; None for kinds this coordinator leaves to the
        daemon's accounting (limits per unique tag value)."""
        limits = [
            limit
            for limit in self.get_run_queue_config().tag_concurrency_limits
            if _applies(limit, run.tags)
        ]
        if any(not isinstance(limit.get("value"), str) for limit in limits):
            return None
        return limits

    def _active(self) -> list[DagsterRun]:
        records = self._instance.get_run_records(filters=RunsFilter(statuses=ACTIVE_RUN_STATUSES))
        return [record.dagster_run for record in records]

    def _fits(self, run: DagsterRun, active: list[DagsterRun]) -> bool:
        if self._globally_full(active):
            return False
        return all(_has_room(limit, active) for limit in self._limits(run) or [])

    def _globally_full(self, active: list[DagsterRun]) -> bool:
        return 0 <= self.get_run_queue_config().max_concurrent_runs <= len(active)

    def _waiting(self, limits: list[Mapping[str, Any]]) -> bool:
        """Whether runs under the same limits are queued: they go first."""
        return any(
            self._instance.get_runs_count(
                filters=RunsFilter(
                    statuses=[DagsterRunStatus.QUEUED], tags={limit["key"]: limit["value"]}
                )
            )
            > 0
            for limit in limits
        )


def door_caller(context: SubmitRunContext) -> DoorCaller | None:
    """The door's caller, when the run is launched from the Dagster UI: Dagster passes the UI's
    request to the coordinator as the submission's source (`orchestration.admission`)."""
    source = getattr(context.workspace, "source", None)
    scope = getattr(source, "scope", None)
    caller = scope.get(DOOR_SCOPE_KEY) if isinstance(scope, dict) else None
    return caller if isinstance(caller, DoorCaller) else None


def launches_here() -> bool:
    return os.environ.get(LAUNCH_NOW_ENV) == "1"


def _has_room(limit: Mapping[str, Any], active: list[DagsterRun]) -> bool:
    return sum(_applies(limit, other.tags) for other in active) < limit["limit"]


def _applies(limit: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    key, value = limit["key"], limit.get("value")
    if key not in tags:
        return False
    return value is None or not isinstance(value, str) or tags[key] == value
