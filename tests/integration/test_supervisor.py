"""The supervisor with small real child processes: restarts, crash loops, dying with its parent,
and what a SIGKILLed `up` leaves for the next one to stop."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tenant_pipelines.localstack import leftovers
from tenant_pipelines.localstack.supervisor import (
    ChildSpec,
    RestartPolicy,
    StackError,
    Supervisor,
)
from tenant_pipelines.support import procs
from tests.stack_helpers import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


def gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return procs.argv(pid) is None


def supervisor(
    tmp_path: Path, specs: list[ChildSpec], said: list[str], first_delay_s: float = 0.5
) -> Supervisor:
    policy = RestartPolicy(first_delay_s=first_delay_s)
    return Supervisor(specs, tmp_path, f"test-{tmp_path}", said.append, policy)


def restarted(sup: Supervisor, name: str, first: int) -> bool:
    sup.check(time.monotonic())
    return sup.children[name].process.pid != first


def test_the_policy_restarts_at_once_then_backs_off_then_gives_up() -> None:
    policy = RestartPolicy()
    assert [policy.on_exit("edge", t) for t in (0, 1, 2, 3, 4)] == [0.0, 0.5, 1.0, 2.0, None]
    spaced = RestartPolicy()
    assert [spaced.on_exit("edge", t * 61.0) for t in range(6)] == [0.0] * 6  # a minute apart
    assert RestartPolicy().on_exit("api", 0) == 0.0  # each child counts its own crashes


def test_a_killed_child_is_restarted_and_the_restart_is_said(tmp_path: Path) -> None:
    said: list[str] = []
    sup = supervisor(tmp_path, [ChildSpec("sleeper", SLEEPER, dict(os.environ))], said)
    sup.start_all()
    try:
        first = sup.children["sleeper"].process.pid
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: restarted(sup, "sleeper", first), 10, "the sleeper was not restarted", 0.05
        )
        assert said == ["sleeper exited with status -9; restarting it in 0.0 s (restart 1)"]
        second = sup.children["sleeper"].process
        assert second.poll() is None
        assert procs.environ_value(second.pid, leftovers.MARK_ENV) == f"test-{tmp_path}"
    finally:
        sup.stop()
    assert leftovers.marked(f"test-{tmp_path}") == []


def test_a_crash_loop_stops_the_platform_with_the_reason(tmp_path: Path) -> None:
    said: list[str] = []
    specs = [
        ChildSpec("crasher", CRASHER, dict(os.environ)),
        ChildSpec("ok", SLEEPER, dict(os.environ)),
    ]
    sup = supervisor(tmp_path, specs, said, first_delay_s=0.05)
    sup.start_all()
    started = time.monotonic()
    try:
        with pytest.raises(StackError) as raised:
            sup.run(threading.Event().wait)
    finally:
        sup.stop()
    assert time.monotonic() - started < 10
    assert str(raised.value) == (
        "crasher exited 5 times within 60 s (last status 3); stopping the platform;"
        f" see {tmp_path / 'crasher.log'}"
    )
    assert [line.split(" (restart ")[1] for line in said] == ["1)", "2)", "3)", "4)"]
    assert all(line.startswith("crasher exited with status 3") for line in said)
    assert leftovers.marked(f"test-{tmp_path}") == []


def test_a_child_that_dies_while_starting_fails_the_start(tmp_path: Path) -> None:
    sup = supervisor(
        tmp_path, [ChildSpec("web", CRASHER, dict(os.environ), "http://127.0.0.1:9/")], []
    )
    sup.start_all()
    try:
        with pytest.raises(StackError, match=r"^web exited with status 3 while starting; see "):
            sup.wait_ready("web", time.monotonic() + 30)
    finally:
        sup.stop()


SUPERVISING = """
import os, sys, time
from pathlib import Path
from tenant_pipelines.localstack.supervisor import ChildSpec, Supervisor
child = [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
         "start_new_session=True); time.sleep(600)"]
sup = Supervisor([ChildSpec("parent", child, dict(os.environ))], Path(sys.argv[1]), sys.argv[2],
                 print)
sup.start_all()
print(sup.children["parent"].process.pid, flush=True)
time.sleep(600)
"""


def test_children_die_with_their_supervisor_and_leftovers_are_found(tmp_path: Path) -> None:
    """SIGKILL the supervising process: its child dies at once (PR_SET_PDEATHSIG); the grandchild,
    in a session of its own, is found by its mark and stopped, as the next `up` does."""
    mark = f"test-{tmp_path}"
    up = subprocess.Popen(
        [sys.executable, "-c", SUPERVISING, str(tmp_path), mark],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert up.stdout is not None
        child = int(up.stdout.readline())
        wait_until(lambda: len(leftovers.marked(mark)) == 2, 10, "not two marked processes", 0.05)
        (grandchild,) = [pid for pid in leftovers.marked(mark) if pid != child]
        up.kill()
        up.wait()
        wait_until(lambda: gone(child), 5, f"{child} is still there", 0.05)
        assert leftovers.marked(mark) == [grandchild]
        assert leftovers.kill_marked(mark) == [grandchild]
        assert gone(grandchild) and leftovers.marked(mark) == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        leftovers.kill_marked(mark)


def test_prepare_runs_before_every_start_and_after_ready_once_it_answers(tmp_path: Path) -> None:
    """The gateway's configuration is written before each start and loaded again once it
    answers: a child that is killed gets both again; a failing after_ready is said, not fatal."""
    said: list[str] = []
    calls: list[str] = []

    def prepare() -> None:
        calls.append("prepare")

    def after_ready() -> None:
        calls.append("after_ready")
        if calls.count("after_ready") == 2:
            raise OSError("the table cannot be read")

    server = [
        sys.executable,
        "-c",
        "import http.server, sys; http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),"
        " http.server.SimpleHTTPRequestHandler).serve_forever()",
    ]
    port = free_port()
    spec = ChildSpec(
        "server",
        [*server, str(port)],
        dict(os.environ),
        f"http://127.0.0.1:{port}/",
        prepare=prepare,
        after_ready=after_ready,
    )
    sup = supervisor(tmp_path, [spec], said)
    sup.start_all()
    try:
        assert calls == ["prepare"]
        sup.wait_ready("server", time.monotonic() + 20)
        assert calls == ["prepare", "after_ready"]
        first = sup.children["server"].process.pid
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: restarted(sup, "server", first), 10, "not restarted", 0.05)
        assert calls == ["prepare", "after_ready", "prepare"]

        def answered() -> bool:
            sup.check(time.monotonic())
            return calls.count("after_ready") == 2

        wait_until(answered, 20, f"after_ready not run again: {calls}", 0.05)
        assert said[-1] == "server: after its start: the table cannot be read"
    finally:
        sup.stop()
