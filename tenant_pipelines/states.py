"""Tenant and request state machines (DESIGN.md section 3)."""

from enum import StrEnum

from tenant_pipelines.errors import InvalidTransition


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
