"""SlotRunCoordinator on a real SQLite instance with the fork-server launcher: a run whose plan
has a free slot starts at once; the others queue, in order; concurrent submitters never take the
same slot; outside the platform's long-lived processes every run queues."""

import multiprocessing.forkserver
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunRecord, reconstructable
from dagster._core.launcher import LaunchRunContext
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from tenant_pipelines.runtime.run_coordinator import LAUNCH_NOW_ENV
from tests.integration.test_run_launcher import WAIT_S, hold_job, run_messages, wait_for_status
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

INSTANCE_YAML = """\
run_launcher:
  module: tenant_pipelines.runtime.run_launcher
  class: PreforkRunLauncher
run_coordinator:
  module: tenant_pipelines.runtime.run_coordinator
  class: SlotRunCoordinator
  config:
    max_concurrent_runs: 3
    tag_concurrency_limits:
      - key: plan
        value: free
        limit: 1
telemetry:
  enabled: false
"""


# Queued runs must name where they come from; the daemon would load the job from there.
REMOTE_ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                module_name="tests.integration.test_run_launcher", attribute="hold_job"
            )
        ),
        "__repository__",
    ),
    "hold_job",
)


@pytest.fixture(scope="module", autouse=True)
def stop_fork_server() -> Iterator[None]:
    yield
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    monkeypatch.setenv(LAUNCH_NOW_ENV, "1")  # as in the processes `tenantctl up` starts
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    with DagsterInstance.from_config(str(home)) as value:
        yield value
        # Let every run this test held go, even if the test failed, so no worker outlives it.
        for held in tmp_path.iterdir():
            if held.is_dir() and held != home:
                (held / "release").write_text("")
        for run in value.get_runs():
            if not run.is_finished and run.status != DagsterRunStatus.QUEUED:
                wait_for_status(value, run.run_id)


def submit(instance: DagsterInstance, directory: Path, plan: str, hold: bool) -> DagsterRun:
    directory.mkdir(parents=True, exist_ok=True)
    run = instance.create_run_for_job(
        hold_job,
        run_config={
            "ops": {"report_and_hold": {"config": {"directory": str(directory), "hold": hold}}}
        },
        tags={"plan": plan},
        job_code_origin=reconstructable(hold_job).get_python_origin(),
        remote_job_origin=REMOTE_ORIGIN,
    )
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]


def status(instance: DagsterInstance, run: DagsterRun) -> DagsterRunStatus:
    found = instance.get_run_by_id(run.run_id)
    assert found is not None
    return found.status


def test_a_run_with_a_free_slot_starts_at_once_and_the_rest_queue(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    first = submit(instance, tmp_path / "a", "free", hold=True)
    assert status(instance, first) in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)

    second = submit(instance, tmp_path / "b", "free", hold=True)  # free's one slot is taken
    assert status(instance, second) == DagsterRunStatus.QUEUED

    other_plan = submit(instance, tmp_path / "c", "team", hold=False)
    assert status(instance, other_plan) != DagsterRunStatus.QUEUED
    assert wait_for_status(instance, other_plan.run_id).status == DagsterRunStatus.SUCCESS

    # A newcomer queues behind the free run that waits, even once a slot frees.
    third = submit(instance, tmp_path / "d", "free", hold=False)
    assert status(instance, third) == DagsterRunStatus.QUEUED
    (tmp_path / "a" / "release").write_text("")
    assert wait_for_status(instance, first.run_id).status == DagsterRunStatus.SUCCESS
    # The slot goes to the oldest queued free run at once: no daemon runs in this test.
    wait_until(
        lambda: status(instance, second) != DagsterRunStatus.QUEUED, WAIT_S, "the hand-over", 0.05
    )
    assert status(instance, third) == DagsterRunStatus.QUEUED
    (tmp_path / "b" / "release").write_text("")
    assert wait_for_status(instance, second.run_id).status == DagsterRunStatus.SUCCESS
    assert wait_for_status(instance, third.run_id).status == DagsterRunStatus.SUCCESS


def test_the_global_limit_queues_runs_of_any_plan(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    held = [submit(instance, tmp_path / f"h{i}", "enterprise", hold=True) for i in range(3)]
    assert all(status(instance, run) != DagsterRunStatus.QUEUED for run in held)

    fourth = submit(instance, tmp_path / "fourth", "enterprise", hold=False)

    assert status(instance, fourth) == DagsterRunStatus.QUEUED
    for i, run in enumerate(held):
        (tmp_path / f"h{i}" / "release").write_text("")
        wait_for_status(instance, run.run_id)


def test_concurrent_submitters_never_take_the_same_slot(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    runs: list[DagsterRun] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        run = submit(instance, tmp_path / f"c{i}", "free", hold=True)
        with lock:
            runs.append(run)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    states = [status(instance, run) for run in runs]
    assert states.count(DagsterRunStatus.QUEUED) == 5, states
    started = next(run for run in runs if status(instance, run) != DagsterRunStatus.QUEUED)
    for i in range(6):
        (tmp_path / f"c{i}" / "release").write_text("")
    assert wait_for_status(instance, started.run_id).status == DagsterRunStatus.SUCCESS


def test_outside_the_platforms_processes_every_run_queues(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LAUNCH_NOW_ENV)  # a run worker, a command line

    run = submit(instance, tmp_path / "q", "team", hold=False)

    assert status(instance, run) == DagsterRunStatus.QUEUED


def test_a_run_is_launched_once_whoever_asks(instance: DagsterInstance, tmp_path: Path) -> None:
    (tmp_path / "once").mkdir()
    run = instance.create_run_for_job(
        hold_job,
        run_config={"ops": {"report_and_hold": {"config": {"directory": str(tmp_path / "once")}}}},
        job_code_origin=reconstructable(hold_job).get_python_origin(),
        remote_job_origin=REMOTE_ORIGIN,
    )
    # The daemon's queue loop and a slot handed over at a run's end both reach for it.
    for _ in range(2):
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    assert wait_for_status(instance, run.run_id).status == DagsterRunStatus.SUCCESS
    messages = run_messages(instance, run.run_id)
    forked = [m for m in messages if "Forked run worker" in m]
    skipped = [m for m in messages if "Launch skipped" in m]
    assert (len(forked), len(skipped)) == (1, 1)


def test_a_freed_slot_reads_only_queued_runs_that_could_take_it(
    instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a burst the queue holds hundreds of runs of full plans; every run's end read all of
    them (in the API server's process). Now only plans with a slot left are read, a page at a
    time, and the oldest such run still goes first."""
    free = submit(instance, tmp_path / "free", "free", hold=True)
    held = [submit(instance, tmp_path / f"e{i}", "enterprise", hold=True) for i in range(2)]
    waiting_free = [submit(instance, tmp_path / f"f{i}", "free", hold=False) for i in range(20)]
    later = submit(instance, tmp_path / "later", "enterprise", hold=False)
    assert {status(instance, run) for run in [*waiting_free, later]} == {DagsterRunStatus.QUEUED}
    read: list[int] = []
    get_run_records = instance.get_run_records

    def counted(*args: Any, **kwargs: Any) -> Sequence[RunRecord]:
        records = get_run_records(*args, **kwargs)
        if DagsterRunStatus.QUEUED in (kwargs["filters"].statuses or []):
            read.append(len(records))
        return records

    monkeypatch.setattr(instance, "get_run_records", counted)
    (tmp_path / "e0" / "release").write_text("")

    assert wait_for_status(instance, held[0].run_id).status == DagsterRunStatus.SUCCESS
    assert wait_for_status(instance, later.run_id).status == DagsterRunStatus.SUCCESS
    assert sum(read) < len(waiting_free), read  # the free runs were not read: free is full
    assert status(instance, waiting_free[0]) == DagsterRunStatus.QUEUED
    (tmp_path / "free" / "release").write_text("")
    assert wait_for_status(instance, free.run_id).status == DagsterRunStatus.SUCCESS
    wait_until(
        lambda: status(instance, waiting_free[0]) != DagsterRunStatus.QUEUED,
        WAIT_S,
        "the oldest free run to take the slot",
        0.05,
    )
    (tmp_path / "e1" / "release").write_text("")
    for run in [held[1], *waiting_free]:  # the free runs follow one another
        assert wait_for_status(instance, run.run_id).status == DagsterRunStatus.SUCCESS
