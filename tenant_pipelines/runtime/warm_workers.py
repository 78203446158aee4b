"""The run workers one launching process keeps between runs (`run_worker.serve` is their side).

A worker that ended its run cleanly waits, idle, for the next run of its CPU priority; one idle
for `IDLE_S` is retired (its connection closed: it exits, and its database sessions with it).
A run that finds no idle worker of its priority gets a freshly forked one, and one idle worker of
another priority, if there is one, is retired for it: so the workers alive never outnumber the
runs that were in flight at once, and neither do their database sessions.
"""

import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

IDLE_S = 5.0
# A worker leaves after this many runs, so that whatever a run leaves behind in its memory (a
# cache that only grows, say) stays bounded; the next run gets a freshly forked one. The same for
# a worker host's Celery processes (`localstack.worker`).
MAX_RUNS_PER_WORKER = 25
# The signal `PreforkRunLauncher.terminate` sends: "interrupt your run if it is being canceled".
# A signal names a process, not a run, and by the time it arrives the worker may have moved on to
# another run; the worker checks which run is canceling before it interrupts anything. (SIGTERM
# and SIGINT stay Dagster's: they interrupt whatever runs.)
TERMINATE_SIGNAL = signal.SIGUSR1
RETIRE_JOIN_S = 5.0


@dataclass(eq=False)
class WarmWorker:
    """A run worker process and the launcher's end of its connection."""

    process: BaseProcess
    conn: Connection
    niceness: int
    idle_since: float = field(default_factory=time.monotonic)

    def hand(self, run_message: tuple[object, ...]) -> bool:
        """Send it a run; False if it is gone (it exited while idle)."""
        try:
            self.conn.send(run_message)
        except OSError:
            return False
        return True

    def retire(self) -> None:
        """Close its connection (it leaves at once when idle) and reap it on a thread of its own:
        a launch that makes room for a new worker does not wait for the old one to exit."""
        self.conn.close()
        threading.Thread(
            target=self.process.join, args=(RETIRE_JOIN_S,), name="reap-run-worker", daemon=True
        ).start()


class WarmWorkers:
    """Idle workers by CPU priority, each retired after `idle_s` unless a run takes it."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self._idle_s = idle_s
        self._idle: list[WarmWorker] = []
        self._lock = threading.Lock()

    def take(self, niceness: int) -> WarmWorker | None:
        """An idle worker of this priority (the one idle longest), or None; if None, one idle
        worker of another priority is retired, making room for the one about to be forked."""
        with self._lock:
            match = next((w for w in self._idle if w.niceness == niceness), None)
            spare = match or next(iter(self._idle), None)
            if spare is not None:
                self._idle.remove(spare)
        if match is None and spare is not None:
            spare.retire()
        return match

    def keep(self, worker: WarmWorker) -> None:
        worker.idle_since = time.monotonic()
        with self._lock:
            self._idle.append(worker)
        timer = threading.Timer(self._idle_s, self._retire_if_idle, args=(worker,))
        timer.daemon = True
        timer.start()

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def _retire_if_idle(self, worker: WarmWorker) -> None:
        with self._lock:
            if worker not in self._idle or time.monotonic() - worker.idle_since < self._idle_s:
                return
            self._idle.remove(worker)
        worker.retire()
