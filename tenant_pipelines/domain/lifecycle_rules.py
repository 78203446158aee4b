"""What each state admits: the lifecycle actions a person may launch on a tenant, or on a request
that has no tenant yet, and the sentence that refuses the others (docs/contracts.md).

One table for every door: the console shows a button only for what it admits (and the caller's
role allows), and the API, `tenantctl` and the Dagster UI's launches refuse the rest with these
sentences (409, exit 3). An admitted action may still wait on something the state does not say:
another operation in flight on the tenant, or a run to act on.
"""

from enum import StrEnum

from tenant_pipelines.domain.errors import Refused
from tenant_pipelines.domain.records import TenantRecord
from tenant_pipelines.domain.states import StatusState


class LifecycleAction(StrEnum):
    RETRY = "retry"
    DECOMMISSION = "decommission"
    COMPENSATE = "compensate"
    DISCARD = "discard"


RETRY, DECOMMISSION, COMPENSATE, DISCARD = LifecycleAction

ADMITS: dict[StatusState, frozenset[LifecycleAction]] = {
    StatusState.PROVISIONING: frozenset(),
    StatusState.ACTIVE: frozenset({DECOMMISSION}),
    StatusState.FAILED: frozenset({RETRY, DECOMMISSION, COMPENSATE}),
    # A decommission whose run ended without finishing is launched again.
    StatusState.DECOMMISSIONING: frozenset({DECOMMISSION}),
    StatusState.DECOMMISSIONED: frozenset(),
    StatusState.REQUEST_PENDING: frozenset(),
    # Its run failed before the tenant existed: it is re-executed, or the request given up.
    StatusState.REQUEST_LAUNCHED: frozenset({RETRY, DISCARD}),
    StatusState.REQUEST_REJECTED: frozenset(),
}

# A request without a tenant refuses every action it does not admit with one sentence: what to do.
REQUEST_REFUSALS = {
    StatusState.REQUEST_PENDING: "the request for {slug} is pending; wait for its tenant",
    StatusState.REQUEST_LAUNCHED: (
        "the request for {slug} has no tenant yet; wait for its run, or retry or discard it"
    ),
    StatusState.REQUEST_REJECTED: "the request for {slug} was rejected; submit a new request",
}
DECOMMISSION_REFUSALS = {
    StatusState.PROVISIONING: "tenant {slug} is provisioning; wait until it is active or failed",
    StatusState.DECOMMISSIONED: "tenant {slug} is already decommissioned",
}
TENANT_REFUSALS = {
    RETRY: "tenant {slug} is {state}; only a failed tenant can be retried",
    COMPENSATE: "tenant {slug} is {state}; only a failed tenant is compensated",
}
DISCARD_REFUSAL = "slug {slug} has no request waiting without a tenant"


def admits(state: str, action: LifecycleAction) -> bool:
    return action in ADMITS[StatusState(state)]


def refusal(slug: str, state: str, action: LifecycleAction) -> str:
    """The sentence that refuses `action` on `slug` in `state`."""
    shown = StatusState(state)
    if action == DISCARD:
        sentence = DISCARD_REFUSAL
    elif shown in REQUEST_REFUSALS:
        sentence = REQUEST_REFUSALS[shown]
    elif action == DECOMMISSION:
        sentence = DECOMMISSION_REFUSALS[shown]
    else:
        sentence = TENANT_REFUSALS[action]
    return sentence.format(slug=slug, state=shown.value)


def check(slug: str, state: str, action: LifecycleAction) -> None:
    """Refused (with the table's sentence) unless `state` admits `action`."""
    if not admits(state, action):
        raise Refused(refusal(slug, state, action))


def check_tenant(tenant: TenantRecord, action: LifecycleAction) -> None:
    """`check` for a tenant as the registry holds it; a compensation also needs the failed run
    it compensates (the tenant's latest), refused as for another state without it."""
    if action == COMPENSATE and not tenant.last_run_id:
        raise Refused(TENANT_REFUSALS[COMPENSATE].format(slug=tenant.slug, state=tenant.state))
    check(tenant.slug, tenant.state, action)
