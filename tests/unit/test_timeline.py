"""A tenant's timeline as a person reads it: one line per step, failures named, activation last."""

import pytest

from tenant_pipelines.domain.events import AuditEvent, EventType, make_event
from tenant_pipelines.domain.timeline import timeline

pytestmark = pytest.mark.unit


def event(type_: EventType, step: str | None, **details: object) -> AuditEvent:
    return make_event(
        type_, tenant="acme", org="widgets", run_id="run-1", step=step, details=details
    )


def test_a_provisioning_reads_step_by_step_and_ends_with_tenant_activated() -> None:
    events = [
        event(EventType.STARTED, "validate", plan="team"),
        event(EventType.STEP_COMPLETED, "validate"),
        event(EventType.STEP_COMPLETED, "allocate"),
        event(EventType.STEP_COMPLETED, "deploy"),
        event(EventType.STEP_COMPLETED, "mark_active"),
        event(EventType.COMPLETED, "mark_active", url="https://acme-widgets.localhost"),
        event(EventType.EMAIL_SENT, "send_welcome_emails", kind="welcome"),
        event(EventType.STEP_COMPLETED, "send_welcome_emails"),
    ]

    assert [entry.message for entry in timeline(events)] == [
        "Provisioning started (plan team)",
        "Validate request completed",
        "Allocate resources completed",
        "Deploy workloads completed",
        "Mark tenant active completed",
        "Tenant activated",
    ]
    assert {entry.run_id for entry in timeline(events)} == {"run-1"}


def test_a_failure_compensation_and_retry_read_in_order() -> None:
    events = [
        event(EventType.FAILED, "deploy", error="ReadinessTimeout: not ready within 20 s"),
        event(EventType.COMPENSATED, "compensate", kind="workload", released=True),
        event(EventType.COMPENSATED, "compensate", kind="identity", released=False, error="busy"),
        event(EventType.COMPENSATION_FINISHED, "compensate", outcome="released"),
        event(EventType.STARTED, "deploy", retry=True, previous_failed_step="deploy"),
        event(EventType.RESUMED, "mark_active"),
    ]

    assert [entry.message for entry in timeline(events)] == [
        "Deploy workloads failed: ReadinessTimeout: not ready within 20 s",
        "Compensation released workload",
        "Compensation could not release identity: busy",
        "Compensation finished (released)",
        "Retry started from Deploy workloads",
        "Resumed at Mark tenant active after an interrupted run",
    ]


def test_decommission_and_rejection_have_their_own_words() -> None:
    events = [
        event(EventType.REQUEST_REJECTED, "validate", reason="slug 'acme' is already taken"),
        event(EventType.DECOMMISSION_STARTED, "decommission"),
        event(EventType.DECOMMISSION_RELEASED, "decommission", kind="route", released=True),
        event(EventType.DECOMMISSION_COMPLETED, "decommission"),
    ]

    assert [entry.message for entry in timeline(events)] == [
        "Request rejected: slug 'acme' is already taken",
        "Decommission started",
        "Decommission released route",
        "Decommissioned: the slug is free again",
    ]
