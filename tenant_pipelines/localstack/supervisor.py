"""Keeps the platform's processes running: one loop over a list of child specs.

A child that dies is started again after a bounded backoff, and the restart is said in one line;
only a child that keeps crashing (`RestartPolicy`) stops the platform. Tenant workloads are not
children: they run on through any child's restart. Every child is marked (`leftovers.MARK_ENV`,
inherited by whatever it starts) and dies with this process (PR_SET_PDEATHSIG), so nothing of a
platform outlives its `tenantctl up`, and what a SIGKILLed one left is found by the next.
"""

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.localstack import leftovers
from tenant_pipelines.support.files import open_private_log

POLL_S = 0.2
STOP_GRACE_S = 15
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # the running process's own C library: no I/O


class StackError(TenantPipelinesError):
    """The stack could not start or one of its processes kept dying."""


@dataclass(frozen=True)
class ChildSpec:
    """One process of the platform: how to start it and how to know it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None = None  # None: ready once started
    prepare: Callable[[], None] | None = None  # before every start (its configuration)
    after_ready: Callable[[], None] | None = None  # once it answers at ready_url, every start
    cwd: str | None = None  # its working directory; None: the supervisor's


@dataclass
class RestartPolicy:
    """Restart at once, then back off (doubling to `max_delay_s`); give up at `max_crashes`
    exits within `window_s`: a child that cannot stay up is a fault to report, not to hide."""

    max_crashes: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    crashes: dict[str, list[float]] = field(default_factory=dict)

    def on_exit(self, name: str, now: float) -> float | None:
        """Seconds to wait before the restart, or None to give up."""
        recent = [t for t in self.crashes.get(name, []) if now - t < self.window_s] + [now]
        self.crashes[name] = recent
        if len(recent) >= self.max_crashes:
            return None
        if len(recent) == 1:
            return 0.0
        return min(self.max_delay_s, self.first_delay_s * 2 ** (len(recent) - 2))


def _die_with_parent(parent: int) -> None:
    """In the child before exec: default signal dispositions (a background shell hands them
    ignored) and SIGKILL when the process that started it dies, however it dies. Linux sends it
    when the *thread* that forked the child ends: children are spawned only by the thread that
    runs the supervisor's loop (the main one), which lives as long as the process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(AttributeError):  # not Linux: the next `up` stops leftovers
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl: nobody would kill us
        os._exit(1)


@dataclass
class Running:
    """A child as it runs now: its current process, restarts so far, a pending restart."""

    spec: ChildSpec
    process: subprocess.Popen[bytes]
    restarts: int = 0
    restart_at: float | None = None  # set while it waits for its restart
    awaiting_ready: bool = False  # started, its after_ready not run yet


def _answers(url: str, timeout_s: float) -> bool:
    """Whether `url` answers 200 now."""
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(url, timeout=timeout_s) as response,
    ):
        return bool(response.status == 200)
    return False


class Supervisor:
    """Starts the children, restarts those that die, and stops them all."""

    def __init__(
        self,
        specs: list[ChildSpec],
        log_dir: Path,
        mark: str,
        say: Callable[[str], None],
        policy: RestartPolicy | None = None,
    ) -> None:
        self._specs, self._log_dir, self._mark, self._say = specs, log_dir, mark, say
        self._policy = policy or RestartPolicy()
        self.children: dict[str, Running] = {}

    def _spawn(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        if spec.prepare is not None:
            spec.prepare()
        log = open_private_log(self._log_dir / f"{spec.name}.log")  # 0600: logs name tenants
        try:
            return subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env={**spec.env, leftovers.MARK_ENV: self._mark},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        finally:
            os.close(log)

    def start_all(self) -> None:
        for spec in self._specs:
            self.children[spec.name] = Running(spec, self._spawn(spec), awaiting_ready=True)

    def log_of(self, name: str) -> Path:
        return self._log_dir / f"{name}.log"

    def wait_ready(self, name: str, deadline: float) -> None:
        """Until the child answers 200 at its ready URL; exiting first fails the start."""
        child = self.children[name]
        while child.spec.ready_url and time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StackError(
                    f"{name} exited with status {child.process.returncode} while starting;"
                    f" see {self.log_of(name)}"
                )
            if _answers(child.spec.ready_url, timeout_s=2):
                self._on_ready(child)
                return
            time.sleep(POLL_S)
        if child.spec.ready_url:
            raise StackError(f"{name} was not ready at {child.spec.ready_url} in time")
        self._on_ready(child)

    def _on_ready(self, child: Running) -> None:
        child.awaiting_ready = False
        if child.spec.after_ready is not None:
            try:
                child.spec.after_ready()
            except Exception as error:  # its own next start runs it again; say it, go on
                self._say(f"{child.spec.name}: after its start: {error}")

    def check(self, now: float) -> None:
        """One pass of the loop: note exits, start again those whose backoff is over."""
        for child in self.children.values():
            status = child.process.poll()
            if child.restart_at is None and status is not None:
                self._on_exit(child, status, now)
            if child.restart_at is not None and now >= child.restart_at:
                child.process = self._spawn(child.spec)
                child.restart_at = None
                child.awaiting_ready = True
            elif child.awaiting_ready and child.process.poll() is None:
                url = child.spec.ready_url
                if url is None or _answers(url, timeout_s=POLL_S):
                    self._on_ready(child)

    def _on_exit(self, child: Running, status: int, now: float) -> None:
        name = child.spec.name
        delay = self._policy.on_exit(name, now)
        if delay is None:
            raise StackError(
                f"{name} exited {self._policy.max_crashes} times within"
                f" {self._policy.window_s:.0f} s (last status {status}); stopping the platform;"
                f" see {self.log_of(name)}"
            )
        child.restarts += 1
        child.restart_at = now + delay
        self._say(
            f"{name} exited with status {status}; restarting it in {delay:.1f} s"
            f" (restart {child.restarts})"
        )

    def run(self, stopping: Callable[[float], bool]) -> None:
        """Supervise until `stopping(timeout)` says to stop; raises StackError on a crash loop."""
        while not stopping(POLL_S):
            self.check(time.monotonic())

    def stop(self, before_term: Callable[[list[int]], None] = lambda pids: None) -> None:
        """SIGTERM each live child's process group (last started first), SIGKILL what is left
        after the grace period, then every process still marked as this platform's (what the
        children that died before left behind)."""
        live = [c for c in reversed(self.children.values()) if c.process.poll() is None]
        before_term([c.process.pid for c in live])
        for child in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in live:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            with contextlib.suppress(ProcessLookupError):  # descendants left in the group
                os.killpg(child.process.pid, signal.SIGKILL)
        leftovers.kill_marked(self._mark)
