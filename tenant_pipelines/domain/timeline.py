"""A tenant's provisioning timeline: its feed events as a person reads them, one line each.

Provisioning, compensation, retries and decommission of the tenant, in the order they happened;
when the tenant is active the last entry reads "Tenant activated". The welcome emails come after
activation and are best effort, so they are not part of the timeline.
"""

from dataclasses import asdict, dataclass
from typing import Any

from tenant_pipelines.domain.events import STEP_NAMES, TENANT_ACTIVATED, AuditEvent, EventType

SHOWN = frozenset(EventType) - {
    EventType.EMAIL_SENT,
    EventType.EMAIL_FAILED,
}


@dataclass(frozen=True)
class TimelineEntry:
    at: str
    type: str
    step: str | None
    step_name: str | None
    message: str
    run_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def timeline(events: list[AuditEvent]) -> list[TimelineEntry]:
    """The events worth a line, oldest first, each with its message."""
    entries = []
    for event in events:
        if event.type not in SHOWN or _is_emails_step(event):
            continue
        entries.append(
            TimelineEntry(
                at=event.at,
                type=event.type,
                step=event.step,
                step_name=event.step_name,
                message=message(event),
                run_id=event.run_id,
            )
        )
    return entries


def _is_emails_step(event: AuditEvent) -> bool:
    return event.step == "send_welcome_emails"


def message(event: AuditEvent) -> str:
    """One sentence for a person; the failing step is named on failure."""
    name = event.step_name or event.step or ""
    details = event.details
    kind = details.get("kind", "")
    match event.type:
        case EventType.STARTED if details.get("retry"):
            failed_step = str(details.get("previous_failed_step"))
            return f"Retry started from {STEP_NAMES.get(failed_step, name)}"
        case EventType.STARTED:
            return f"Provisioning started (plan {details.get('plan', '?')})"
        case EventType.STEP_COMPLETED:
            return f"{name} completed"
        case EventType.COMPLETED:
            return TENANT_ACTIVATED
        case EventType.FAILED:
            return f"{name} failed: {details.get('error', 'unknown error')}"
        case EventType.RESUMED:
            return f"Resumed at {name} after an interrupted run"
        case EventType.COMPENSATED if details.get("released"):
            return f"Compensation released {kind}"
        case EventType.COMPENSATED:
            return f"Compensation could not release {kind}: {details.get('error', '')}"
        case EventType.COMPENSATION_FINISHED:
            return f"Compensation finished ({details.get('outcome', '')})"
        case EventType.REQUEST_REJECTED:
            return f"Request rejected: {details.get('reason', '')}"
        case EventType.DECOMMISSION_STARTED:
            return "Decommission started"
        case EventType.DECOMMISSION_RELEASED:
            return f"Decommission released {kind}"
        case EventType.DECOMMISSION_COMPLETED:
            return "Decommissioned: the slug is free again"
    return event.type
