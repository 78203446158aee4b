"""What the console's templates show: badges, the live timeline, which buttons a caller gets."""

from dataclasses import dataclass

from tenant_pipelines.api import tenants
from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.domain.access import ROLE_ACTIONS, Action, Caller
from tenant_pipelines.domain.events import STEP_NAMES
from tenant_pipelines.domain.lifecycle_rules import LifecycleAction, admits
from tenant_pipelines.domain.states import RESTING_STATES, StatusState
from tenant_pipelines.domain.status import TenantStatus
from tenant_pipelines.domain.timeline import TimelineEntry
from tenant_pipelines.orchestration.runs import runs_in_flight

# The badge a person reads for each state (docs/contracts.md, "Console"); a request that has no
# tenant yet is being provisioned, or was rejected.
BADGES = {
    StatusState.PROVISIONING: "Provisioning",
    StatusState.ACTIVE: "Active",
    StatusState.FAILED: "Failed",
    StatusState.DECOMMISSIONING: "Decommissioning",
    StatusState.DECOMMISSIONED: "Decommissioned",
    StatusState.REQUEST_PENDING: "Provisioning",
    StatusState.REQUEST_LAUNCHED: "Provisioning",
    StatusState.REQUEST_REJECTED: "Rejected",
}


@dataclass(frozen=True)
class Row:
    status: TenantStatus
    badge: str


@dataclass(frozen=True)
class Entry:
    entry: TimelineEntry
    run_url: str | None


@dataclass(frozen=True)
class TenantView:
    status: TenantStatus
    badge: str
    at_rest: bool  # nothing more will happen without a person: the page stops polling
    timeline: list[Entry]
    admin_url: str | None  # only once the tenant is active
    failed_step_name: str | None
    can_retry: bool
    can_decommission: bool


def badge(state: StatusState) -> str:
    return BADGES[state]


def list_view(statuses: list[TenantStatus]) -> list[Row]:
    return [Row(status, badge(status.state)) for status in statuses]


def detail_view(ctx: ApiContext, caller: Caller, slug: str) -> TenantView:
    detail = tenants.detail(ctx, caller, slug)
    state = detail.state
    allowed = ROLE_ACTIONS[caller.role]
    return TenantView(
        status=detail,
        badge=badge(state),
        at_rest=state in RESTING_STATES and not runs_in_flight(ctx.instance(), slug),
        timeline=[Entry(e, ctx.run_url(e.run_id)) for e in detail.timeline],
        admin_url=ctx.admin_console_url(detail.slug, detail.org)
        if state == StatusState.ACTIVE
        else None,
        failed_step_name=STEP_NAMES.get(detail.failed_step or "", detail.failed_step),
        can_retry=admits(state, LifecycleAction.RETRY) and Action.RETRY in allowed,
        can_decommission=admits(state, LifecycleAction.DECOMMISSION)
        and Action.DECOMMISSION in allowed,
    )
