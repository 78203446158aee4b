"""A run launcher that forks each run's process from a warm fork server.

Dagster's default launcher asks the code server to start every run in a *new* Python process,
which spends ~1 s of CPU importing Dagster and the code location before the first op (measured:
about half of a provisioning run's CPU). On 2 cores that import, not the ops, bounded how many
tenants could be onboarded at once. This launcher keeps one fork server per launching process
(the daemon, with the queued run coordinator) that has imported all of that once
(`runtime.run_worker`); each run still gets a process of its own (isolation, and a
crash or kill ends one run only), forked in milliseconds. A worker whose run ended cleanly is kept
for the next run of its CPU priority (`runtime.warm_workers`): one run at a time, with its
instance, sessions and compiled statements ready.

It runs the workers on this host, like the default launcher. A worker records its PID and
process start time on the run (tag `tenant-pipelines/run-worker`), which is how any process
(the webserver's Terminate, the run monitor) finds it: a PID alone could have been reused.
Code is loaded once per fork server: after changing the code location, restart the stack.
"""

import ast
import fcntl
import multiprocessing
import os
import sys
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any, Self

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, serialize_value

from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.runtime.dagster_private import (
    CheckRunHealthResult,
    ConfigurableClass,
    ConfigurableClassData,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from tenant_pipelines.runtime.pg_storage import run_worker_schema
from tenant_pipelines.runtime.run_coordinator import LAUNCH_NOW_ENV, SlotRunCoordinator
from tenant_pipelines.runtime.warm_workers import TERMINATE_SIGNAL, WarmWorker, WarmWorkers
from tenant_pipelines.service.jobs import PLAN_TAG
from tenant_pipelines.support.procs import identity, live_pid

WORKER_MODULE = "tenant_pipelines.runtime.run_worker"
# Which launcher process started the run; checked and set under CLAIM_LOCK_FILE.
LAUNCHED_TAG = ".dagster/tenant-pipelines/launched-by"
CLAIM_LOCK_FILE = ".run-launch.lock"


def main_script_imports() -> set[str]:
    """The modules the launching process's main script imports (the API server's
    `tenant_pipelines.api.__main__`). Every child a fork server makes runs the parent's main
    script again before the run's code (multiprocessing's "spawn" preparation); with those modules
    preloaded that costs milliseconds instead of importing a web stack for each run (~1.5 s)."""
    path = getattr(sys.modules["__main__"], "__file__", None)
    try:
        tree = ast.parse(Path(path).read_text()) if path else None
    except (OSError, SyntaxError, ValueError):
        return set()
    if tree is None:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def launched_by(run: DagsterRun) -> str | None:
    """The launcher process (pid:start) that claimed `run`; None if none did (a mark copied
    from a parent run names another run)."""
    run_id, _, launcher = run.tags.get(LAUNCHED_TAG, "").partition("@")
    return launcher if run_id == run.run_id else None


def _ready() -> None:
    """A child that does nothing: its start proves the fork server ready."""


def _run_worker_main(conn: Connection, niceness: int) -> None:
    # Imported in the child, where the fork server has it already; never in the launcher.
    from tenant_pipelines.runtime.run_worker import serve

    serve(conn, niceness)


def plan_niceness(run: DagsterRun) -> int:
    """The CPU priority of the run's worker: its tenant's plan's (`Plan.cpu_nice`)."""
    plan = PLANS.get(run.tags.get(PLAN_TAG, ""))
    return plan.cpu_nice if plan is not None else 0


class PreforkRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in its own process, forked from a fork server with the code loaded."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        self._inst_data = inst_data
        self._context: ForkServerContext | None = None
        self._lock = threading.Lock()
        self._workers = WarmWorkers()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data)

    def register_instance(self, instance: DagsterInstance) -> None:
        """In the platform's long-lived processes, start the fork server now (about 2 s), so
        that the first run after `tenantctl up` does not wait for it: the API server opens its
        instance (and so this launcher) before it answers `/healthz`, which `up` waits for."""
        super().register_instance(instance)
        if os.environ.get(LAUNCH_NOW_ENV) == "1":
            self.warm()

    def warm(self) -> None:
        """Start the fork server and wait until it has imported everything: it forks a child
        only then, so one empty child tells us it is ready."""
        child = self._fork_context().Process(target=_ready, name="fork-server-ready")
        child.start()
        child.join()

    def _fork_context(self) -> ForkServerContext:
        """The fork server starts at the first launch, with the instance's storage classes and
        the run worker imported."""
        with self._lock:
            if self._context is None:
                context = multiprocessing.get_context("forkserver")
                ref = self._instance.get_ref()
                modules = {
                    data.module_name
                    for data in (
                        ref.storage_data,
                        ref.run_storage_data,
                        ref.event_storage_data,
                        ref.schedule_storage_data,
                        ref.compute_logs_data,
                        ref.local_artifact_storage_data,
                    )
                    if data is not None
                }
                modules |= main_script_imports()
                context.set_forkserver_preload([*sorted(modules), WORKER_MODULE])
                self._context = context
            return self._context

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self._claim(run):
            self._instance.report_engine_event(
                "Launch skipped: another launcher on this host started this run already.",
                run,
                cls=self.__class__,
            )
            return
        message = (
            run.run_id,
            serialize_value(self._instance.get_ref()),
            run_worker_schema(self._instance.event_log_storage),
        )
        niceness = plan_niceness(run)
        worker = self._workers.take(niceness)
        if worker is not None and worker.hand(message):
            said = f"Handed the run to a warm run worker (pid: {worker.process.pid})."
        else:
            if worker is not None:
                worker.retire()
            worker = self._fork_worker(niceness)
            worker.hand(message)
            said = f"Forked run worker (pid: {worker.process.pid})."
        self._instance.report_engine_event(said, run, cls=self.__class__)
        threading.Thread(
            target=self._settle_when_done,
            args=(run.run_id, worker),
            name=f"watch-run-{run.run_id[:8]}",
            daemon=True,
        ).start()

    def _fork_worker(self, niceness: int) -> WarmWorker:
        ours, theirs = self._fork_context().Pipe()
        process = self._fork_context().Process(
            target=_run_worker_main, args=(theirs, niceness), name="dagster-run-worker"
        )
        process.start()
        theirs.close()
        return WarmWorker(process, ours, niceness)

    def _claim(self, run: DagsterRun) -> bool:
        """Mark the run as launched, unless a launcher did already: the daemon's queue loop and
        a slot handed over at a run's end may reach for the same queued run.

        The marks name the run they belong to: a run re-executed from failure (by the daemon's
        run retries or the UI) starts with a copy of its parent's tags, the parent's launch mark
        and dead worker included, and must neither count as launched nor look crashed."""
        path = Path(self._instance.root_directory) / CLAIM_LOCK_FILE
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._instance.get_run_by_id(run.run_id)
            if current is not None and launched_by(current) is not None:
                return False
            mark = f"{run.run_id}@{identity(os.getpid())}"
            self._instance.add_run_tags(run.run_id, {LAUNCHED_TAG: mark, WORKER_TAG: ""})
            return True

    def _settle_when_done(self, run_id: str, worker: WarmWorker) -> None:
        """When the worker says its run is over, it waits for the next run (if it can take one);
        its slot goes to a queued run at once. If it exited instead, or its run had not ended,
        the worker crashed or was killed: end the run now (as the code server does for its
        workers), so that run retries can resume it."""
        try:
            fit = bool(worker.conn.recv())
        except (EOFError, OSError):
            fit = False
        run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            fit = False
            message = f"Run worker (pid: {worker.process.pid}) exited before the run ended."
            if run.status == DagsterRunStatus.CANCELING:
                self._instance.report_run_canceled(run, message=message)
            else:
                self._instance.report_run_failed(run, message=message)
        if fit:
            self._workers.keep(worker)
        else:
            worker.retire()
        coordinator = self._instance.run_coordinator
        if isinstance(coordinator, SlotRunCoordinator):
            coordinator.start_queued()

    def _worker_pid(self, run: DagsterRun) -> int | None:
        worker = run.tags.get(WORKER_TAG) if launched_by(run) is not None else None
        return live_pid(worker) if worker else None

    def terminate(self, run_id: str) -> bool:
        """Mark the run canceling and ask its worker to interrupt it (`TERMINATE_SIGNAL`: the
        worker interrupts its run only if that run is the one canceling)."""
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = self._worker_pid(run)
        if pid is None:
            self._instance.report_engine_event(
                "No live run worker to interrupt; the run ends when its worker is found gone.",
                run,
                cls=self.__class__,
            )
            return False
        try:
            os.kill(pid, TERMINATE_SIGNAL)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = run.tags.get(WORKER_TAG) if launched_by(run) is not None else None
        if not worker:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run has no recorded worker")
        if live_pid(worker) is None:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"run worker {worker} (pid:start) is gone"
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING)
