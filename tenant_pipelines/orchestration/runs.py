"""The orchestrator's runs, read from the Dagster instance: the service's `Runs` port
(`DagsterRuns`), and the queries the platform's other readers share (diagnosis, the console).
How runs are described (job names, tags, run config) is the service's (`service.jobs`)."""

import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.service.jobs import REQUEST_TAG, TENANT_TAG
from tenant_pipelines.service.ports import RunStatus, RunView

if TYPE_CHECKING:  # Dagster is slow to import; `tenantctl request` needs none of it
    from dagster import DagsterInstance, DagsterRun

# `<pid>:<start ticks>` of the process executing the run (runtime.run_launcher). Dagster's UI
# hides tags under `.dagster/`: this one means nothing to an operator.
WORKER_TAG = ".dagster/tenant-pipelines/run-worker"
# Dagster run statuses of a run that has not ended (names, so that importing this needs no Dagster).
IN_FLIGHT_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def run_view(run: "DagsterRun", ended_at: float | None = None) -> RunView:
    """A Dagster run as the use cases read it."""
    return RunView(
        run_id=run.run_id,
        job_name=run.job_name,
        status=RunStatus(run.status.value),
        root_run_id=run.root_run_id,
        parent_run_id=run.parent_run_id,
        tags=dict(run.tags),
        run_config=dict(run.run_config),
        ended_at=ended_at,
    )


class DagsterRuns:
    """The service's `Runs`, on a Dagster instance."""

    def __init__(self, instance: "DagsterInstance") -> None:
        self.instance = instance

    def get(self, run_id: str) -> RunView | None:
        record = self.instance.get_run_record_by_id(run_id) if run_id else None
        if record is None:
            return None
        ended = record.end_time if record.dagster_run.is_finished else None
        return run_view(record.dagster_run, ended)

    def for_request(self, request_id: str) -> list[RunView]:
        return [run_view(run) for run in runs_for_request(self.instance, request_id)]

    def requests_with_runs(self, request_ids: Collection[str]) -> set[str]:
        from dagster import RunsFilter

        if not request_ids:
            return set()
        filters = RunsFilter(tags={REQUEST_TAG: sorted(request_ids)})
        return {run.tags[REQUEST_TAG] for run in self.instance.get_runs(filters=filters)}

    def succeeded_steps(self, run_id: str) -> set[str]:
        stats = self.instance.get_run_step_stats(run_id)
        return {s.step_key for s in stats if s.status is not None and s.status.value == "SUCCESS"}


def runs_for_request(instance: "DagsterInstance", request_id: str) -> list["DagsterRun"]:
    from dagster import RunsFilter

    return list(instance.get_runs(filters=RunsFilter(tags={REQUEST_TAG: request_id})))


def runs_in_flight(instance: "DagsterInstance", slug: str) -> list["DagsterRun"]:
    """The tenant's runs that are queued or running: its state may still change."""
    from dagster import DagsterRunStatus, RunsFilter

    statuses = [DagsterRunStatus(status) for status in IN_FLIGHT_STATUSES]
    filters = RunsFilter(tags={TENANT_TAG: slug}, statuses=statuses)
    return list(instance.get_runs(filters=filters))


def runs_for_tenant(
    instance: "DagsterInstance", slug: str, limit: int = 20, tags: Mapping[str, str] | None = None
) -> list["DagsterRun"]:
    """The tenant's runs, newest first."""
    from dagster import RunsFilter

    filters = RunsFilter(tags={TENANT_TAG: slug, **(tags or {})})
    return list(instance.get_runs(filters=filters, limit=limit))


WAIT_POLL_S = 0.5
WAIT_TIMEOUT_S = 600


def wait_for_run(
    instance: "DagsterInstance", run_id: str, timeout_s: float = WAIT_TIMEOUT_S
) -> RunStatus:
    """Block until the run has ended (`tenantctl ... --wait`); its final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return RunStatus(run.status.value)
        if time.monotonic() > deadline:
            raise TenantPipelinesError(f"run {run_id} has not ended after {timeout_s:g} s")
        time.sleep(WAIT_POLL_S)
