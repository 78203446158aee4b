"""PreforkRunLauncher on a real SQLite instance: runs execute in forked workers, and a worker
that dies, is terminated or is gone is seen from any process."""

import multiprocessing.forkserver
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    Config,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    JobDefinition,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
    reconstructable,
)
from dagster._core.launcher import WorkerStatus

from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.runtime.run_launcher import LAUNCHED_TAG, launched_by
from tenant_pipelines.runtime.warm_workers import TERMINATE_SIGNAL
from tenant_pipelines.saga.deadline import PhaseTimeout, call_with_timeout
from tenant_pipelines.service.jobs import PLAN_TAG
from tenant_pipelines.support.procs import identity as process_identity
from tenant_pipelines.support.procs import live_pid
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

INSTANCE_YAML = """\
run_launcher:
  module: tenant_pipelines.runtime.run_launcher
  class: PreforkRunLauncher
telemetry:
  enabled: false
"""
WAIT_S = 60


class HoldConfig(Config):
    directory: str
    hold: bool = False


@op
def report_and_hold(context: OpExecutionContext, config: HoldConfig) -> None:
    """Writes its PID and its parent's command line, then waits for a release file if asked."""
    directory = Path(config.directory)
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    (directory / "parent").write_text(parent)
    (directory / "pid").write_text(str(os.getpid()))
    (directory / "nice").write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
    while config.hold and not (directory / "release").exists():
        time.sleep(0.05)
    context.log.info("released")


@job(executor_def=in_process_executor)
def hold_job() -> None:
    report_and_hold()


@op
def abandon_a_call(config: HoldConfig) -> None:
    """Writes its PID, then leaves a bounded call that timed out still running (a hung backend)."""
    (Path(config.directory) / "pid").write_text(str(os.getpid()))
    with pytest.raises(PhaseTimeout):
        call_with_timeout(lambda: time.sleep(30), 0.05, "a hung backend")


@job(executor_def=in_process_executor)
def abandon_job() -> None:
    abandon_a_call()


@pytest.fixture(scope="module", autouse=True)
def stop_fork_server() -> Iterator[None]:
    """The launcher's fork server is a child of this test process: stop it after these tests."""
    yield
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return home


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[DagsterInstance]:
    with DagsterInstance.from_config(str(dagster_home)) as value:
        yield value


def launch(
    instance: DagsterInstance,
    directory: Path,
    hold: bool,
    tags: dict[str, str] | None = None,
    job_def: JobDefinition = hold_job,
) -> DagsterRun:
    directory.mkdir(parents=True, exist_ok=True)
    recon = reconstructable(job_def)
    op_name = job_def.graph.node_defs[0].name
    run = instance.create_run_for_job(
        job_def,
        run_config={"ops": {op_name: {"config": {"directory": str(directory), "hold": hold}}}},
        job_code_origin=recon.get_python_origin(),
        tags=tags,
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run


def wait_for_status(instance: DagsterInstance, run_id: str) -> DagsterRun:
    def finished() -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    wait_until(finished, WAIT_S, f"run {run_id} to finish", 0.05)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def worker_pid_of(instance: DagsterInstance, run_id: str) -> int:
    def tagged() -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and bool(run.tags.get(WORKER_TAG))

    wait_until(tagged, WAIT_S, "the worker's identity on the run", 0.05)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return int(run.tags[WORKER_TAG].split(":")[0])


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs and is not a zombie (a killed worker stays one until it is reaped)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def run_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.message for entry in instance.all_logs(run_id)]


def test_a_run_executes_in_a_worker_forked_from_the_fork_server(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    run = launch(instance, tmp_path, hold=False)

    finished = wait_for_status(instance, run.run_id)

    assert finished.status == DagsterRunStatus.SUCCESS
    worker_pid = int((tmp_path / "pid").read_text())
    assert worker_pid != os.getpid()
    assert "multiprocessing.forkserver" in (tmp_path / "parent").read_text()
    assert finished.tags[WORKER_TAG].startswith(f"{worker_pid}:")
    assert f"Started process for run (pid: {worker_pid})." in run_messages(instance, run.run_id)
    wait_until(
        lambda: live_pid(finished.tags[WORKER_TAG]) is None, WAIT_S, "the worker to exit", 0.05
    )


@pytest.mark.parametrize(("plan", "niceness"), [("free", 10), ("team", 5), ("enterprise", 0)])
def test_a_worker_runs_at_its_plans_cpu_priority(
    instance: DagsterInstance, tmp_path: Path, plan: str, niceness: int
) -> None:
    """Under a burst, an enterprise run is not slowed by the free runs sharing the CPU."""
    assert PLANS[plan].cpu_nice == niceness
    run = launch(instance, tmp_path, hold=False, tags={PLAN_TAG: plan})
    assert wait_for_status(instance, run.run_id).status == DagsterRunStatus.SUCCESS
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # the fork server's: a worker may only go lower
    assert int((tmp_path / "nice").read_text()) == max(ours, niceness)


def test_a_killed_worker_fails_its_run_at_once(instance: DagsterInstance, tmp_path: Path) -> None:
    run = launch(instance, tmp_path, hold=True)
    wait_until((tmp_path / "pid").exists, WAIT_S, "the op to start", 0.05)
    pid = worker_pid_of(instance, run.run_id)

    os.kill(pid, signal.SIGKILL)
    finished = wait_for_status(instance, run.run_id)

    assert finished.status == DagsterRunStatus.FAILURE
    assert any(
        f"Run worker (pid: {pid}) exited before the run ended." in (message or "")
        for message in run_messages(instance, run.run_id)
    )


def test_terminate_from_another_process_cancels_the_run(
    instance: DagsterInstance, dagster_home: Path, tmp_path: Path
) -> None:
    run = launch(instance, tmp_path, hold=True)
    wait_until((tmp_path / "pid").exists, WAIT_S, "the op to start", 0.05)
    worker_pid_of(instance, run.run_id)

    # Another instance object: a launcher that did not start the worker (the webserver's case).
    with DagsterInstance.from_config(str(dagster_home)) as other:
        assert other.run_launcher.terminate(run.run_id) is True
        finished = wait_for_status(other, run.run_id)
        assert finished.status == DagsterRunStatus.CANCELED
        assert other.run_launcher.terminate(run.run_id) is False  # already ended
    assert not (tmp_path / "release").exists()
    # A worker whose run was interrupted takes no other run.
    wait_until(
        lambda: live_pid(finished.tags[WORKER_TAG]) is None, WAIT_S, "the worker to exit", 0.05
    )


def test_a_worker_whose_run_ended_cleanly_takes_the_next_run_of_its_priority(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    first = launch(instance, tmp_path / "1", hold=False, tags={PLAN_TAG: "free"})
    assert wait_for_status(instance, first.run_id).status == DagsterRunStatus.SUCCESS
    second = launch(instance, tmp_path / "2", hold=False, tags={PLAN_TAG: "free"})
    assert wait_for_status(instance, second.run_id).status == DagsterRunStatus.SUCCESS
    warm_pid = int((tmp_path / "1" / "pid").read_text())
    assert int((tmp_path / "2" / "pid").read_text()) == warm_pid
    assert f"Handed the run to a warm run worker (pid: {warm_pid})." in " ".join(
        run_messages(instance, second.run_id)
    )

    # Another priority gets a worker of its own, and the idle one makes room for it.
    third = launch(instance, tmp_path / "3", hold=False, tags={PLAN_TAG: "enterprise"})
    assert wait_for_status(instance, third.run_id).status == DagsterRunStatus.SUCCESS
    assert int((tmp_path / "3" / "pid").read_text()) != warm_pid
    assert int((tmp_path / "3" / "nice").read_text()) == os.getpriority(os.PRIO_PROCESS, 0)
    wait_until(lambda: not pid_alive(warm_pid), WAIT_S, "the idle worker to leave", 0.05)


def test_a_worker_with_a_timed_out_call_still_running_takes_no_other_run(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    """The abandoned call could still act (create a resource, write the ledger) beside the next
    run; its process leaves instead, and the call with it."""
    first = launch(instance, tmp_path / "1", hold=False, job_def=abandon_job)
    assert wait_for_status(instance, first.run_id).status == DagsterRunStatus.SUCCESS
    abandoning_pid = int((tmp_path / "1" / "pid").read_text())
    wait_until(lambda: not pid_alive(abandoning_pid), WAIT_S, "the worker to leave", 0.05)

    second = launch(instance, tmp_path / "2", hold=False)
    assert wait_for_status(instance, second.run_id).status == DagsterRunStatus.SUCCESS
    assert int((tmp_path / "2" / "pid").read_text()) != abandoning_pid


def test_a_terminate_signal_interrupts_only_a_run_being_canceled(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    """A signal names a process, and a warm worker may have moved on to another run by the time
    a Terminate's signal arrives: that run goes on."""
    run = launch(instance, tmp_path, hold=True)
    wait_until((tmp_path / "pid").exists, WAIT_S, "the op to start", 0.05)
    pid = worker_pid_of(instance, run.run_id)

    os.kill(pid, TERMINATE_SIGNAL)
    time.sleep(0.5)  # time for the worker to read its run's status
    (tmp_path / "release").write_text("")

    assert wait_for_status(instance, run.run_id).status == DagsterRunStatus.SUCCESS


def test_a_worker_killed_while_idle_is_replaced(instance: DagsterInstance, tmp_path: Path) -> None:
    first = launch(instance, tmp_path / "1", hold=False)
    assert wait_for_status(instance, first.run_id).status == DagsterRunStatus.SUCCESS
    idle_pid = int((tmp_path / "1" / "pid").read_text())
    os.kill(idle_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(idle_pid), WAIT_S, "the idle worker to die", 0.05)

    second = launch(instance, tmp_path / "2", hold=False)

    assert wait_for_status(instance, second.run_id).status == DagsterRunStatus.SUCCESS
    assert int((tmp_path / "2" / "pid").read_text()) != idle_pid


def test_worker_health_is_read_from_the_run_from_any_process(
    instance: DagsterInstance, dagster_home: Path, tmp_path: Path
) -> None:
    run = launch(instance, tmp_path, hold=True)
    wait_until((tmp_path / "pid").exists, WAIT_S, "the op to start", 0.05)
    pid = worker_pid_of(instance, run.run_id)

    with DagsterInstance.from_config(str(dagster_home)) as other:
        tagged = other.get_run_by_id(run.run_id)
        assert tagged is not None
        launcher = other.run_launcher
        assert launcher.supports_check_run_worker_health
        assert launcher.check_run_worker_health(tagged).status == WorkerStatus.RUNNING

        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: live_pid(tagged.tags[WORKER_TAG]) is None, WAIT_S, "the worker to die", 0.05
        )
        assert launcher.check_run_worker_health(tagged).status == WorkerStatus.FAILED

        untagged = tagged.with_tags({})
        assert launcher.check_run_worker_health(untagged).status == WorkerStatus.UNKNOWN
    wait_for_status(instance, run.run_id)


def test_a_process_identity_names_only_that_very_process() -> None:
    mine = process_identity(os.getpid())
    pid, ticks = mine.split(":")

    assert live_pid(mine) == os.getpid()
    assert live_pid(f"{pid}:{int(ticks) + 1}") is None  # same PID, another process (reused)
    assert live_pid("not-a-pid:1") is None
    with open("/proc/sys/kernel/pid_max") as pid_max:
        assert live_pid(f"{int(pid_max.read())}:1") is None  # no such process


def test_a_zombie_is_not_a_live_process() -> None:
    """A dead worker whose parent never reaps it (a command that is PID 1 of a container or a
    PID namespace) must not pass for a live one: its runs would never be settled."""
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        named = process_identity(child.pid)
        assert live_pid(named) == child.pid
        wait_until(
            lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
            10,
            "the child to become a zombie",
            0.02,
        )
        assert live_pid(named) is None
    finally:
        child.wait()


def test_a_run_with_its_parents_marks_is_launched_and_not_taken_for_crashed(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    """A run re-executed from failure starts with a copy of its parent's tags: the parent's
    launch mark and the identity of the parent's (dead) worker."""
    dead_worker = f"{2**22 + 7}:1"
    parent_marks = {LAUNCHED_TAG: f"parent-run@{process_identity(os.getpid())}"}
    run = launch(instance, tmp_path, hold=True, tags={**parent_marks, WORKER_TAG: dead_worker})
    started = instance.get_run_by_id(run.run_id)
    assert started is not None and launched_by(started) is not None
    assert instance.run_launcher.check_run_worker_health(started).status != WorkerStatus.FAILED
    worker_pid_of(instance, run.run_id)
    (tmp_path / "release").write_text("")
    assert wait_for_status(instance, run.run_id).status == DagsterRunStatus.SUCCESS
