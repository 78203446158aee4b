"""A gate that lets a few threads through at once and, when it is full, lets the waiting ones in
by priority rather than by arrival."""

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PriorityGate:
    """At most `width` holders at once; when one leaves, the waiter with the lowest priority
    number goes in (of equals, the one that came first)."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError(f"a gate lets at least one through, not {width}")
        self._width = width
        self._holders = 0
        self._waiting: list[tuple[int, int, threading.Event]] = []
        self._arrivals = itertools.count()
        self._lock = threading.Lock()

    @contextmanager
    def through(self, priority: int) -> Iterator[None]:
        """Hold a place in the gate for the block, waiting for one first if it is full."""
        with self._lock:
            ticket = None
            if self._holders < self._width:
                self._holders += 1
            else:
                ticket = threading.Event()
                heapq.heappush(self._waiting, (priority, next(self._arrivals), ticket))
        if ticket is not None:
            ticket.wait()  # the place of a holder that left, handed over as it was
        try:
            yield
        finally:
            self._leave()

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _leave(self) -> None:
        with self._lock:
            if self._waiting:
                _, _, ticket = heapq.heappop(self._waiting)
                ticket.set()
            else:
                self._holders -= 1
