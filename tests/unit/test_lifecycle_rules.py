"""The states a status reads and the table of what each admits: every state x action is admitted
or refused with a sentence, and the lifecycle's checks on a tenant record say the same."""

import itertools
from datetime import UTC, datetime

import pytest

from tenant_pipelines.domain.errors import Refused
from tenant_pipelines.domain.lifecycle_rules import (
    ADMITS,
    LifecycleAction,
    admits,
    check,
    check_tenant,
    refusal,
)
from tenant_pipelines.domain.records import TenantRecord
from tenant_pipelines.domain.states import (
    RESTING_STATES,
    RequestState,
    StatusState,
    TenantState,
    status_of_request,
)

pytestmark = pytest.mark.unit

# What each state admits, as docs/contracts.md writes it (not read from the implementation).
WRITTEN = {
    "provisioning": set(),
    "active": {"decommission"},
    "failed": {"retry", "decommission", "compensate"},
    "decommissioning": {"decommission"},
    "decommissioned": set(),
    "request-pending": set(),
    "request-launched": {"retry", "discard"},
    "request-rejected": set(),
}
PAIRS = list(itertools.product(WRITTEN, [a.value for a in LifecycleAction]))


def test_a_status_reads_a_tenant_state_or_request_dash_a_request_state() -> None:
    assert {s.value for s in StatusState} == {s.value for s in TenantState} | {
        f"request-{s.value}" for s in RequestState
    }
    assert [status_of_request(s) for s in RequestState] == [
        StatusState.REQUEST_PENDING,
        StatusState.REQUEST_LAUNCHED,
        StatusState.REQUEST_REJECTED,
    ]
    with pytest.raises(ValueError):
        status_of_request("approved")


def test_at_rest_are_the_states_nothing_leaves_without_a_person() -> None:
    assert {s.value for s in RESTING_STATES} == {
        "active",
        "failed",
        "decommissioned",
        "request-rejected",
    }


def test_the_table_has_a_row_for_every_state() -> None:
    assert set(ADMITS) == set(StatusState)


@pytest.mark.parametrize(("state", "action"), PAIRS)
def test_each_state_admits_what_is_written_and_refuses_the_rest_in_one_sentence(
    state: str, action: str
) -> None:
    wanted = action in WRITTEN[state]
    assert admits(state, LifecycleAction(action)) == wanted
    if wanted:
        check("acme", state, LifecycleAction(action))
        return
    with pytest.raises(Refused) as caught:
        check("acme", state, LifecycleAction(action))
    sentence = str(caught.value)
    assert sentence == refusal("acme", state, LifecycleAction(action))
    assert "acme" in sentence and "\n" not in sentence


@pytest.mark.parametrize(
    ("state", "action", "sentence"),
    [
        ("active", "retry", "tenant acme is active; only a failed tenant can be retried"),
        (
            "provisioning",
            "decommission",
            "tenant acme is provisioning; wait until it is active or failed",
        ),
        ("decommissioned", "decommission", "tenant acme is already decommissioned"),
        ("active", "compensate", "tenant acme is active; only a failed tenant is compensated"),
        ("failed", "discard", "slug acme has no request waiting without a tenant"),
        ("request-pending", "retry", "the request for acme is pending; wait for its tenant"),
        (
            "request-rejected",
            "decommission",
            "the request for acme was rejected; submit a new request",
        ),
        (
            "request-launched",
            "decommission",
            "the request for acme has no tenant yet; wait for its run, or retry or discard it",
        ),
    ],
)
def test_the_refusals_users_already_read_keep_their_words(
    state: str, action: str, sentence: str
) -> None:
    assert refusal("acme", state, LifecycleAction(action)) == sentence


def tenant(state: str, last_run_id: str | None = "run-1") -> TenantRecord:
    now = datetime.now(UTC)
    return TenantRecord(
        "t-1", "r-1", "acme", "widgets", "team", "a@b.example.com", state, last_run_id, None, None,
        now, now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "action"), [(s.value, a) for s in TenantState for a in LifecycleAction]
)
def test_a_tenant_record_is_checked_by_the_same_table(state: str, action: LifecycleAction) -> None:
    if action in WRITTEN[state]:
        check_tenant(tenant(state), action)
        return
    with pytest.raises(Refused) as caught:
        check_tenant(tenant(state), action)
    assert str(caught.value) == refusal("acme", state, action)


def test_a_failed_tenant_without_a_run_has_nothing_to_compensate() -> None:
    with pytest.raises(Refused) as caught:
        check_tenant(tenant("failed", last_run_id=None), LifecycleAction.COMPENSATE)
    assert str(caught.value) == "tenant acme is failed; only a failed tenant is compensated"
