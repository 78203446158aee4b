"""A worker host ends the runs of its own whose worker process died unnoticed, after a grace
period that leaves the run monitor time to notice first; never a live one, another host's, or
one the monitor ended meanwhile. A real instance (SQLite) and real processes."""

import os
import subprocess

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus

from tenant_pipelines.orchestration.recovery import OrphanWatch, settle_orphaned_runs
from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.service.jobs import DECOMMISSION_JOB, WORKER_HOST_TAG
from tenant_pipelines.support.procs import identity
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration

HERE = "h-here"


def dead_process() -> str:
    child = subprocess.Popen(["true"])
    named = identity(child.pid)
    child.wait()
    return named


def add_started(instance: DagsterInstance, run_id: str, host: str, worker: str) -> None:
    tags = {WORKER_HOST_TAG: host, WORKER_TAG: worker}
    instance.add_run(
        DagsterRun(
            job_name=DECOMMISSION_JOB, run_id=run_id, status=DagsterRunStatus.STARTED, tags=tags
        )
    )


def statuses(instance: DagsterInstance, *run_ids: str) -> dict[str, DagsterRunStatus]:
    runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
    return {run.run_id: run.status for run in runs if run is not None}


def test_a_dead_workers_run_of_this_host_is_ended_after_the_grace_period_only(
    local_platform: LocalPlatform,
) -> None:
    instance = local_platform.instance
    add_started(instance, "dead-here", HERE, dead_process())
    add_started(instance, "alive-here", HERE, identity(os.getpid()))
    add_started(instance, "dead-there", "h-there", dead_process())
    watch = OrphanWatch(instance, HERE, grace_s=10, interval_s=1)

    assert watch.tick(100.0) == []  # first seen dead now
    assert watch.tick(105.0) == []  # within the grace period
    assert watch.tick(110.0) == ["dead-here"]

    assert statuses(instance, "dead-here", "alive-here", "dead-there") == {
        "dead-here": DagsterRunStatus.FAILURE,
        "alive-here": DagsterRunStatus.STARTED,
        "dead-there": DagsterRunStatus.STARTED,
    }


def test_a_run_the_monitor_ended_meanwhile_is_not_ended_again(
    local_platform: LocalPlatform,
) -> None:
    instance = local_platform.instance
    add_started(instance, "dead", HERE, dead_process())
    watch = OrphanWatch(instance, HERE, grace_s=0, interval_s=0)
    orphan = instance.get_run_by_id("dead")
    assert orphan is not None
    instance.report_run_failed(orphan, message="Celery task failed.")  # the run monitor's

    assert watch.tick(1.0) == []
    failures = instance.all_logs("dead", of_type=DagsterEventType.RUN_FAILURE)
    assert len(failures) == 1


def test_at_a_start_every_dead_workers_run_of_this_host_ends_at_once(
    local_platform: LocalPlatform,
) -> None:
    instance = local_platform.instance
    add_started(instance, "dead-here", HERE, dead_process())
    add_started(instance, "dead-there", "h-there", dead_process())

    assert settle_orphaned_runs(instance, HERE) == ["dead-here"]
    assert statuses(instance, "dead-here", "dead-there")["dead-there"] == DagsterRunStatus.STARTED
