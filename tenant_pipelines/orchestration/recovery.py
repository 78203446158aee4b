"""Runs interrupted by a stop of the whole platform, settled before the daemon starts again.

When `tenantctl up` stops, run workers die with their code server and their runs stay STARTED:
nothing would ever finish them. Before the next start nothing of ours can be running, so each such
run is reported failed (or canceled, if it was being canceled); Dagster's run retries
(`run_retries` in dagster.yaml) then re-execute it from the failed op, which resumes the saga
without compensation. Canceled runs are compensated by the backstop sensor.

Only this host's runs: a run of a tenant placed on another host (its `worker_host` tag) has its
worker there, which this stop did not touch.

A worker host (`tenantctl worker`) settles its own runs each time its Celery worker (re)starts
(`settle_orphaned_runs`): a run whose recorded worker process on this host is gone died with the
previous Celery worker (its processes are killed with it), and the task state at the broker would
say "started" forever. Runs still waiting in the broker for this host have no worker yet and are
left to it.
"""

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.service.jobs import WORKER_HOST_TAG
from tenant_pipelines.support.procs import live_pid

INTERRUPTED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
MESSAGE = "interrupted: the platform stopped while this run was in progress"


def settle_interrupted_runs(instance: DagsterInstance, host_name: str) -> list[str]:
    """Mark every run of this host (`host_name`) left in flight by a previous stack as ended;
    their ids. Runs of tenants recorded before placement count as this host's."""
    settled = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=INTERRUPTED)):
        run = record.dagster_run
        if run.tags.get(WORKER_HOST_TAG, host_name) != host_name:
            continue
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=MESSAGE)
        else:
            instance.report_run_failed(run, message=MESSAGE)
        settled.append(run.run_id)
    return settled


def settle_orphaned_runs(instance: DagsterInstance, host_name: str) -> list[str]:
    """Mark ended every run of worker host `host_name` whose worker process here is gone; their
    ids."""
    settled = []
    in_flight = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    for record in instance.get_run_records(filters=RunsFilter(statuses=in_flight)):
        run = record.dagster_run
        worker = run.tags.get(WORKER_TAG)
        if run.tags.get(WORKER_HOST_TAG) != host_name or not worker or live_pid(worker):
            continue
        message = f"its worker process on host {host_name} ({worker}, pid:start) is gone"
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=message)
        else:
            instance.report_run_failed(run, message=message)
        settled.append(run.run_id)
    return settled
