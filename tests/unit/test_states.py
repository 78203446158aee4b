"""Both state machines, exhaustively: every pair in the product of states is allowed or refused."""

import itertools
from collections.abc import Callable

import pytest

from tenant_pipelines.domain.errors import InvalidTransition, PermanentError
from tenant_pipelines.domain.states import (
    RequestState,
    TenantState,
    check_request_transition,
    check_tenant_transition,
)

pytestmark = pytest.mark.unit

# docs/contracts.md, written out here rather than read from the implementation's tables.
TENANT_VALID = {
    ("provisioning", "active"),
    ("provisioning", "failed"),
    ("failed", "provisioning"),
    ("active", "decommissioning"),
    ("failed", "decommissioning"),
    ("decommissioning", "decommissioned"),
}
# pending -> launched | rejected, and launched -> rejected: Validate runs inside the launched run.
REQUEST_VALID = {("pending", "launched"), ("pending", "rejected"), ("launched", "rejected")}

TENANT_PAIRS = list(itertools.product([s.value for s in TenantState], repeat=2))
REQUEST_PAIRS = list(itertools.product([s.value for s in RequestState], repeat=2))


def test_the_state_sets_are_the_designed_ones() -> None:
    assert {s.value for s in TenantState} == {
        "provisioning",
        "active",
        "failed",
        "decommissioning",
        "decommissioned",
    }
    assert {s.value for s in RequestState} == {"pending", "launched", "rejected"}


@pytest.mark.parametrize(("current", "target"), TENANT_PAIRS)
def test_tenant_transitions(current: str, target: str) -> None:
    if (current, target) in TENANT_VALID:
        check_tenant_transition(current, target)
        return
    with pytest.raises(InvalidTransition) as caught:
        check_tenant_transition(current, target)
    assert isinstance(caught.value, PermanentError)
    assert (caught.value.current, caught.value.target) == (current, target)
    assert str(caught.value) == f"tenant cannot go from {current!r} to {target!r}"


@pytest.mark.parametrize(("current", "target"), REQUEST_PAIRS)
def test_request_transitions(current: str, target: str) -> None:
    if (current, target) in REQUEST_VALID:
        check_request_transition(current, target)
        return
    with pytest.raises(InvalidTransition) as caught:
        check_request_transition(current, target)
    assert (caught.value.current, caught.value.target) == (current, target)
    assert str(caught.value).startswith("request cannot go from")


def test_decommissioned_is_final_and_the_only_way_there_is_through_decommissioning() -> None:
    into = {current for current, target in TENANT_VALID if target == "decommissioned"}
    assert into == {"decommissioning"}
    assert not any(current == "decommissioned" for current, _ in TENANT_VALID)


@pytest.mark.parametrize(
    ("check", "current", "target"),
    [
        (check_tenant_transition, "active", "deleted"),
        (check_tenant_transition, "archived", "active"),
        (check_request_transition, "pending", "approved"),
    ],
)
def test_unknown_states_are_refused(
    check: Callable[[str, str], None], current: str, target: str
) -> None:
    with pytest.raises(ValueError):
        check(current, target)
