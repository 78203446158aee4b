"""Waiting for a condition, the one way tests wait.

A test that sleeps a fixed time and then asserts is slow when the machine is fast and flaky
when it is slow; `wait_until` returns as soon as the condition holds and fails with a message
(and the last value it saw) when the deadline passes.
"""

import subprocess
import threading
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


def read_until_said(
    process: subprocess.Popen[str], text: str, timeout_s: float, what: str
) -> tuple[str, list[str]]:
    """Read what `process` says (its stdout) until a line contains `text`: that line, and the
    list of every line, which a thread keeps filling afterwards. An AssertionError with all it
    said if it exits first or `timeout_s` passes."""
    assert process.stdout is not None
    said: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        said.append(line)
        if text in line:
            threading.Thread(target=_keep_reading, args=(process, said), daemon=True).start()
            return line, said
        if not line and process.poll() is not None:
            raise AssertionError(f"{what} exited {process.returncode}: {''.join(said).strip()}")
    raise AssertionError(f"{what} never said {text!r}: {''.join(said).strip()}")


def _keep_reading(process: subprocess.Popen[str], said: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        said.append(line)
