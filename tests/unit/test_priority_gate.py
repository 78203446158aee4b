"""The gate submissions go through: a few at once, the waiting ones in by priority."""

import threading
import time

import pytest

from tenant_pipelines.support.priority_gate import PriorityGate

WAIT_S = 5.0


def queue_behind(
    gate: PriorityGate, names_and_priorities: list[tuple[str, int]]
) -> tuple[list[str], list[threading.Thread]]:
    """While `gate` is full, one thread per (name, priority), each queued before the next one
    comes: the list they append their names to as they go through, and the threads."""
    entered: list[str] = []
    threads = []
    for name, priority in names_and_priorities:

        def enter(name: str = name, priority: int = priority) -> None:
            with gate.through(priority):
                entered.append(name)

        thread = threading.Thread(target=enter)
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + WAIT_S
        while gate.waiting() < len(threads):  # queued before the next one comes
            assert time.monotonic() < deadline, f"{name} never queued"
            time.sleep(0.001)
    return entered, threads


def test_a_full_gate_lets_the_lowest_priority_number_in_first_then_by_arrival() -> None:
    gate = PriorityGate(1)
    with gate.through(0):
        entered, threads = queue_behind(
            gate, [("free-1", 10), ("team", 5), ("free-2", 10), ("enterprise", 0)]
        )
        assert entered == []  # nobody passes a full gate
    for thread in threads:
        thread.join(WAIT_S)
    assert entered == ["enterprise", "team", "free-1", "free-2"]


def test_a_gate_lets_width_holders_in_at_once_and_a_place_freed_by_an_error_is_handed_on() -> None:
    gate = PriorityGate(2)
    inside = threading.Barrier(3, timeout=WAIT_S)

    def hold() -> None:
        with gate.through(5):
            inside.wait()  # both inside at once, or this breaks

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for holder in holders:
        holder.start()
    inside.wait()
    for holder in holders:
        holder.join(WAIT_S)

    with pytest.raises(RuntimeError), gate.through(0), gate.through(0):
        raise RuntimeError("a submission that failed")
    with gate.through(0):  # its places were given back: a third one gets in at once
        assert gate.waiting() == 0


def test_a_gate_refuses_a_width_under_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PriorityGate(0)
