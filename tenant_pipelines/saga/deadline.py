"""Bounding a backend call that may hang: a hung phase must fail and be retried, not stall.

The call runs in a daemon thread; if it has not returned by the deadline the caller gets a
`PhaseTimeout` (transient, so the op's RetryPolicy applies) and the thread is abandoned. What the
abandoned call may still create is covered by the ledger: its entry was marked `allocating`
before the call, so compensation releases by tenant name whatever exists.
"""

import threading
from collections.abc import Callable
from typing import TypeVar

from tenant_pipelines.domain.errors import TenantPipelinesError

T = TypeVar("T")
THREAD_PREFIX = "bounded:"


class PhaseTimeout(TenantPipelinesError):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not finish within {seconds:g} s")
        self.seconds = seconds


def call_with_timeout(fn: Callable[[], T], seconds: float, what: str) -> T:
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, name=f"{THREAD_PREFIX}{what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise PhaseTimeout(what, seconds)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


def abandoned_calls() -> int:
    """How many calls that timed out still run in this process: one that goes on to other work
    (a warm run worker, after its run) must not while such a call may still act."""
    return sum(thread.name.startswith(THREAD_PREFIX) for thread in threading.enumerate())
