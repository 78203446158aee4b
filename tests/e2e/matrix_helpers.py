"""Reading a tenant's story back from the running stack: runs, retries, compensations, feed."""

import os
import re
import signal
from dataclasses import dataclass

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from tests.stack_helpers import Stack
from tests.waiting import wait_until

WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


@dataclass
class Cell:
    name: str
    slug: str
    phase: str
    mode: str
    end_state: str = ""
    compensations: int = 0
    retries: int = 0
    seconds: float = 0.0


def runs_of(instance: DagsterInstance, slug: str, job: str) -> list[DagsterRun]:
    return list(instance.get_runs(RunsFilter(job_name=job, tags={"tenant": slug})))


def retries_of(instance: DagsterInstance, slug: str) -> int:
    return sum(
        len(instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY))
        for run in runs_of(instance, slug, "provision_tenant")
    )


def story(stack: Stack, slug: str) -> list[tuple[str, str | None]]:
    """The tenant's provisioning feed as (event, step) pairs, oldest first."""
    events = stack.cli_json_lines("audit", "--tenant", slug, "--type", "tenant.provisioning.*")
    return [(e["type"].removeprefix("tenant.provisioning."), e["step"]) for e in events]


def wait_for_step_start(
    instance: DagsterInstance, slug: str, step: str, timeout_s: float = 90
) -> DagsterRun:

    def started() -> DagsterRun | None:
        for run in runs_of(instance, slug, "provision_tenant"):
            starts = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
            if run.status == DagsterRunStatus.STARTED and any(e.step_key == step for e in starts):
                return run
        return None

    return wait_until(started, timeout_s, f"{slug}: step {step} never started", 0.2)


def kill_run_worker(instance: DagsterInstance, run: DagsterRun) -> int:
    """kill -9 the process executing `run` (its pid is in the run's engine events)."""
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = WORKER_PID.search(entry.message or "")
        if match:
            pid = int(match.group(1))
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no worker pid recorded for run {run.run_id}")
