"""What a run worker forked by `PreforkRunLauncher` executes: `dagster api execute_run`, in-process,
for one run after another.

The launcher's fork server imports this module once, and with it Dagster and this code location;
each worker is forked from there, so it starts without the ~1 s of CPU a fresh Python spends
importing them (docs/dagster.md). A worker then stays for the next run of its CPU priority
(`serve`): its instance, its open database sessions, SQLAlchemy's compiled statements and the
loaded job are ready, which a freshly forked process would build again for every run (about a
fifth of a provisioning run's CPU, and three new server sessions on PostgreSQL). Each run still
has a process to itself: a worker executes one run at a time.
"""

import os
import signal
import threading
from collections.abc import Iterable
from multiprocessing.connection import Connection
from types import FrameType

# What `DagsterInstance.from_ref` imports in every worker unless the fork server has it: ~30 ms
# of CPU a run (py-spy over the run workers).
import upath.core  # noqa: F401
from dagster import DagsterInstance, DagsterRunStatus, deserialize_value

import tenant_pipelines.definitions  # noqa: F401 - imported once, in the fork server
from tenant_pipelines.orchestration.runs import WORKER_TAG
from tenant_pipelines.runtime.alembic_scripts import read_dagster_scripts_once
from tenant_pipelines.runtime.dagster_private import (
    InstanceRef,
    capture_interrupts,
    execute_run_in_process,
)
from tenant_pipelines.runtime.pg_storage import adopt_seen_schema
from tenant_pipelines.runtime.run_coordinator import LAUNCH_NOW_ENV
from tenant_pipelines.runtime.warm_workers import MAX_RUNS_PER_WORKER, TERMINATE_SIGNAL
from tenant_pipelines.saga.deadline import abandoned_calls
from tenant_pipelines.support.procs import identity, lower_priority

read_dagster_scripts_once()  # in the fork server, for every worker it forks

ENDED_CLEANLY = frozenset({DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})


class Worker:
    """One process's runs, in turn, on one Dagster instance per instance ref."""

    def __init__(self) -> None:
        self._instances: dict[str, DagsterInstance] = {}
        self._current: tuple[DagsterInstance, str] | None = None
        self.runs = 0

    def instance(self, serialized_instance_ref: str) -> DagsterInstance:
        if serialized_instance_ref not in self._instances:
            ref = deserialize_value(serialized_instance_ref, InstanceRef)
            self._instances[serialized_instance_ref] = DagsterInstance.from_ref(ref)
        return self._instances[serialized_instance_ref]

    def execute(
        self,
        run_id: str,
        serialized_instance_ref: str,
        schema_facts: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """Execute one run to its end, as `dagster api execute_run` would; whether this process
        is fit for another run: the run ended cleanly, and no call of it that timed out still
        runs (it would act after its run ended, beside the next one).

        The worker records its identity on the run before the run starts, so the launcher can
        tell a live worker from a dead one (and stop it) from any process. SIGTERM and SIGINT
        become Dagster's execution interrupts, as in Dagster's own run workers.
        """
        # A run launches no run of its own in this process (compensation is queued instead).
        os.environ.pop(LAUNCH_NOW_ENV, None)
        os.environ["PGAPPNAME"] = "tenant-run-worker"  # its PostgreSQL connections say so
        # What the launcher's process knew of Dagster's schema (its tables included: the run was
        # read from them) is not asked again.
        adopt_seen_schema(schema_facts)
        instance = self.instance(serialized_instance_ref)
        self.runs += 1
        with capture_interrupts():
            instance.add_run_tags(run_id, {WORKER_TAG: identity(os.getpid())})
            self._current = (instance, run_id)
            try:
                execute_run_in_process(run_id, instance)
            finally:
                self._current = None
        run = instance.get_run_by_id(run_id)
        return (
            run is not None
            and run.status in ENDED_CLEANLY
            and abandoned_calls() == 0
            and self.runs < MAX_RUNS_PER_WORKER
        )

    def interrupt_if_canceling(self, _signo: int, _frame: FrameType | None) -> None:
        """`TERMINATE_SIGNAL`'s handler: the run's status is read on a thread of its own (the
        main thread may be inside a transaction), and only a run being canceled is interrupted."""
        current = self._current
        if current is not None:
            threading.Thread(target=self._interrupt, args=current, daemon=True).start()

    def _interrupt(self, instance: DagsterInstance, run_id: str) -> None:
        run = instance.get_run_by_id(run_id)
        canceling = run is not None and run.status == DagsterRunStatus.CANCELING
        if canceling and self._current == (instance, run_id):
            os.kill(os.getpid(), signal.SIGINT)  # Dagster's execution interrupt

    def close(self) -> None:
        for instance in self._instances.values():
            instance.dispose()


def serve(conn: Connection, niceness: int) -> None:
    """Take runs from the launcher over `conn`, one at a time, answering after each whether this
    worker can take another; leave when it cannot, or when the launcher closes `conn` (it
    retires idle workers, and its own end closes it)."""
    lower_priority(niceness)
    worker = Worker()
    signal.signal(TERMINATE_SIGNAL, worker.interrupt_if_canceling)
    try:
        while True:
            try:
                run_id, serialized_instance_ref, schema_facts = conn.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                return
            fit = worker.execute(run_id, serialized_instance_ref, schema_facts)
            try:
                conn.send(fit)
            except OSError:  # the launcher is gone
                return
            if not fit:
                return
    finally:
        worker.close()
