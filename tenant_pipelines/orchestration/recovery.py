"""Runs interrupted by a stop of the whole platform, settled before the daemon starts again.

When `tenantctl up` stops, run workers die with their code server and their runs stay STARTED:
nothing would ever finish them. Before the next start nothing of ours can be running, so each such
run is reported failed (or canceled, if it was being canceled); Dagster's run retries
(`run_retries` in dagster.yaml) then re-execute it from the failed op, which resumes the saga
without compensation. Canceled runs are compensated by the backstop sensor.

Only this host's runs: a run of a tenant placed on another host (its `worker_host` tag) has its
worker there, which this stop did not touch.

A worker host (`tenantctl worker`) settles its own runs whose recorded worker process on this
host is gone (`orphaned_runs`): at each (re)start of its Celery worker, whose processes die with
it while the task state at the broker would say "started" forever; and while it runs
(`OrphanWatch`), for a run process that died unnoticed by the run monitor, which learns of a
death only from that task state. Runs still waiting in the broker for this host have no worker
yet and are left to it.
"""

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.service.jobs import WORKER_HOST_TAG
from tenant_pipelines.support.procs import live_pid

INTERRUPTED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
IN_FLIGHT = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
MESSAGE = "interrupted: the platform stopped while this run was in progress"
# How long a dead run process may go unnoticed before a worker host ends its run: the run
# monitor (polling every 5 s, dagster.yaml) normally ends it first, from the task's state.
ORPHAN_GRACE_S = 15.0
WATCH_INTERVAL_S = 2.0


def settle_interrupted_runs(instance: DagsterInstance, host_name: str) -> list[str]:
    """Mark every run of this host (`host_name`) left in flight by a previous stack as ended;
    their ids. Runs of tenants recorded before placement count as this host's."""
    settled = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=INTERRUPTED)):
        run = record.dagster_run
        if run.tags.get(WORKER_HOST_TAG, host_name) != host_name:
            continue
        end_run(instance, run, MESSAGE)
        settled.append(run.run_id)
    return settled


def end_run(instance: DagsterInstance, run: DagsterRun, message: str) -> None:
    """Failed, so that run retries run it again; canceled if it was being canceled (the backstop
    compensates it)."""
    if run.status == DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, message=message)
    else:
        instance.report_run_failed(run, message=message)


def orphaned_runs(instance: DagsterInstance, host_name: str) -> list[DagsterRun]:
    """The runs of worker host `host_name` in flight whose worker process here is gone."""
    orphans = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        worker = run.tags.get(WORKER_TAG)
        if run.tags.get(WORKER_HOST_TAG) == host_name and worker and not live_pid(worker):
            orphans.append(run)
    return orphans


def _orphan_message(host_name: str, run: DagsterRun) -> str:
    worker = run.tags.get(WORKER_TAG)
    return f"its worker process on host {host_name} ({worker}, pid:start) is gone"


def settle_orphaned_runs(instance: DagsterInstance, host_name: str) -> list[str]:
    """End every run of worker host `host_name` whose worker process here is gone; their ids."""
    orphans = orphaned_runs(instance, host_name)
    for run in orphans:
        end_run(instance, run, _orphan_message(host_name, run))
    return [run.run_id for run in orphans]


class OrphanWatch:
    """Ends the runs of a worker host whose worker process has been gone for `grace_s`: checked
    at most every `interval_s` (`tick`)."""

    def __init__(
        self,
        instance: DagsterInstance,
        host_name: str,
        grace_s: float = ORPHAN_GRACE_S,
        interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self._instance, self._host_name = instance, host_name
        self._grace_s, self._interval_s = grace_s, interval_s
        self._first_seen: dict[str, float] = {}
        self._next = 0.0

    def tick(self, now: float) -> list[str]:
        """The ids of the runs ended now."""
        if now < self._next:
            return []
        self._next = now + self._interval_s
        orphans = orphaned_runs(self._instance, self._host_name)
        self._first_seen = {run.run_id: self._first_seen.get(run.run_id, now) for run in orphans}
        ended = []
        for run in orphans:
            if now - self._first_seen[run.run_id] < self._grace_s:
                continue
            current = self._instance.get_run_by_id(run.run_id)  # the monitor may have ended it
            if current is not None and current.status in IN_FLIGHT:
                end_run(self._instance, current, _orphan_message(self._host_name, current))
                ended.append(run.run_id)
        return ended
