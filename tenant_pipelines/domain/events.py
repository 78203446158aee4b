"""The audit feed's schema (docs/contracts.md): event types, steps and their names.

Events are written into the Dagster event log of the run they belong to (the orchestration
layer does that); here they are plain data, so the saga emits them without knowing Dagster.
"""

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Step(StrEnum):
    """The ops of the jobs, as the feed's `step` names them."""

    VALIDATE = "validate"
    ALLOCATE = "allocate"
    DEPLOY = "deploy"
    MARK_ACTIVE = "mark_active"
    SEND_WELCOME_EMAILS = "send_welcome_emails"
    COMPENSATE = "compensate"
    DECOMMISSION = "decommission"


# The provisioning job's ops, in order, with the names a person reads in the feed and the UI.
STEP_NAMES: dict[str, str] = {
    Step.VALIDATE: "Validate request",
    Step.ALLOCATE: "Allocate resources",
    Step.DEPLOY: "Deploy workloads",
    Step.MARK_ACTIVE: "Mark tenant active",
    Step.SEND_WELCOME_EMAILS: "Send welcome emails",
}
PROVISION_STEPS: tuple[Step, ...] = tuple(Step(step) for step in STEP_NAMES)


class EventType(StrEnum):
    STARTED = "tenant.provisioning.started"
    STEP_COMPLETED = "tenant.provisioning.step_completed"
    COMPLETED = "tenant.provisioning.completed"  # the timeline's "Tenant activated"
    FAILED = "tenant.provisioning.failed"
    RESUMED = "tenant.provisioning.resumed"
    COMPENSATED = "tenant.provisioning.compensated"
    COMPENSATION_FINISHED = "tenant.provisioning.compensation_finished"
    # Compensation gave up after its bounded attempts: a resource would not release.
    COMPENSATION_FAILED = "tenant.provisioning.compensation_failed"
    REQUEST_REJECTED = "tenant.request.rejected"
    DECOMMISSION_STARTED = "tenant.decommission.started"
    DECOMMISSION_RELEASED = "tenant.decommission.released"
    DECOMMISSION_COMPLETED = "tenant.decommission.completed"
    EMAIL_SENT = "tenant.email.sent"
    EMAIL_FAILED = "tenant.email.failed"
    BATCH_ACTED = "tenant.batch.acted"  # a batch's retry or decommission, with its outcome


TENANT_ACTIVATED = "Tenant activated"


@dataclass(frozen=True)
class AuditEvent:
    type: str
    tenant: str
    org: str
    run_id: str
    step: str | None = None
    step_name: str | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FeedRecord:
    """An event and its place in the feed (the event log's storage id: later events, higher)."""

    storage_id: int
    event: AuditEvent


def make_event(
    event_type: str,
    *,
    tenant: str,
    org: str,
    run_id: str,
    step: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent(
        type=str(event_type),
        tenant=tenant,
        org=org,
        run_id=run_id,
        step=None if step is None else str(step),
        step_name=STEP_NAMES.get(step or ""),
        details=details or {},
    )


def dumps(event: AuditEvent) -> str:
    return json.dumps(event.to_json(), sort_keys=True)


def format_event(event: AuditEvent) -> str:
    step = f" [{event.step_name or event.step}]" if event.step else ""
    details = f" {json.dumps(event.details, sort_keys=True)}" if event.details else ""
    return f"{event.at} {event.type:<42} {event.tenant}{step} run={event.run_id[:8]}{details}"
