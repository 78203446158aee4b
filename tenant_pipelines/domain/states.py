"""State machines (docs/contracts.md, "States"), what a status reads, and the ledger's states."""

from enum import StrEnum

from tenant_pipelines.domain.errors import InvalidTransition


class TenantState(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    DECOMMISSIONING = "decommissioning"
    DECOMMISSIONED = "decommissioned"


class RequestState(StrEnum):
    PENDING = "pending"
    LAUNCHED = "launched"
    REJECTED = "rejected"


class StatusState(StrEnum):
    """What a status's `state` reads (`tenantctl status`, `GET /v1/tenants/{slug}`): the tenant's
    state, or `request-<state>` for a request that has no tenant yet. The values are a contract."""

    PROVISIONING = TenantState.PROVISIONING.value
    ACTIVE = TenantState.ACTIVE.value
    FAILED = TenantState.FAILED.value
    DECOMMISSIONING = TenantState.DECOMMISSIONING.value
    DECOMMISSIONED = TenantState.DECOMMISSIONED.value
    REQUEST_PENDING = f"request-{RequestState.PENDING}"
    REQUEST_LAUNCHED = f"request-{RequestState.LAUNCHED}"
    REQUEST_REJECTED = f"request-{RequestState.REJECTED}"


def status_of_request(state: str) -> StatusState:
    """What a request that has no tenant yet reads as its status's state."""
    return StatusState(f"request-{RequestState(state)}")


# Nothing more happens to a tenant or request in these states without a person (the console stops
# polling once no run of it is in flight either).
RESTING_STATES = frozenset(
    {
        StatusState.ACTIVE,
        StatusState.FAILED,
        StatusState.DECOMMISSIONED,
        StatusState.REQUEST_REJECTED,
    }
)


class LedgerState(StrEnum):
    """A ledger entry: a backend's resource, or one welcome email."""

    ALLOCATING = "allocating"  # intent recorded; the backend call may or may not have happened
    ALLOCATED = "allocated"
    RELEASING = "releasing"
    RELEASED = "released"
    SENDING = "sending"  # an email handed to the mailer, no answer recorded yet
    SENT = "sent"
    FAILED = "failed"  # an email the provider definitely did not take
    UNKNOWN = "unknown"  # an email the provider may have taken: never sent again


# Entries in these states may hold a real resource: leak checks and compensation look at them.
LIVE_LEDGER_STATES = (LedgerState.ALLOCATING, LedgerState.ALLOCATED, LedgerState.RELEASING)
# Leaving one of these for allocating/allocated is a new allocation: it sorts after the rest.
SETTLED_LEDGER_STATES = (LedgerState.RELEASED, LedgerState.FAILED)

TENANT_TRANSITIONS: dict[TenantState, frozenset[TenantState]] = {
    TenantState.PROVISIONING: frozenset({TenantState.ACTIVE, TenantState.FAILED}),
    TenantState.FAILED: frozenset({TenantState.PROVISIONING, TenantState.DECOMMISSIONING}),
    TenantState.ACTIVE: frozenset({TenantState.DECOMMISSIONING}),
    TenantState.DECOMMISSIONING: frozenset({TenantState.DECOMMISSIONED}),
    TenantState.DECOMMISSIONED: frozenset(),
}

# A launched request can still be rejected: Validate runs inside the launched run.
REQUEST_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset({RequestState.LAUNCHED, RequestState.REJECTED}),
    RequestState.LAUNCHED: frozenset({RequestState.REJECTED}),
    RequestState.REJECTED: frozenset(),
}


def check_tenant_transition(current: str, target: str) -> None:
    if TenantState(target) not in TENANT_TRANSITIONS[TenantState(current)]:
        raise InvalidTransition("tenant", current, target)


def check_request_transition(current: str, target: str) -> None:
    if RequestState(target) not in REQUEST_TRANSITIONS[RequestState(current)]:
        raise InvalidTransition("request", current, target)
