"""Waiting for a condition, the one way tests wait.

A test that sleeps a fixed time and then asserts is slow when the machine is fast and flaky
when it is slow; `wait_until` returns as soon as the condition holds and fails with a message
(and the last value it saw) when the deadline passes.
"""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.1


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    message: str | Callable[[], str],
    poll: float = POLL_S,
) -> T:
    """The first truthy value of `condition()`, asked every `poll` seconds; an AssertionError
    with `message` (called, if it is a function, only then) once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"{said} (after {timeout:g} s; last: {value!r})")
        time.sleep(poll)
