"""Welcome emails at most once: what the saga does when a send's outcome is known, unknown, or
the mailer itself breaks. Plain Python with in-memory ports."""

import pytest

from tenant_pipelines.domain.events import EventType
from tenant_pipelines.domain.mail import EmailKind, EmailStatus, SendResult
from tenant_pipelines.domain.states import LedgerState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga import steps
from tenant_pipelines.saga.email_content import ledger_kind
from tenant_pipelines.saga.emails import email_rows
from tenant_pipelines.saga.failure import Attempt
from tests.saga_fakes import World

pytestmark = pytest.mark.unit

FIRST = Attempt(0)
LOST_ANSWER = SendResult(False, None, None, "timed out", 1, maybe_delivered=True)
REFUSED = SendResult(False, 400, None, "HTTP 400: bad sender", 1)


def active_tenant(world: World) -> TenantSpec:
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    for step in (steps.allocate, steps.deploy, steps.mark_active):
        step(ctx, tenant, FIRST)
    return tenant


def statuses(world: World, tenant: TenantSpec) -> list[EmailStatus]:
    return [row.status for row in email_rows(world.registry.ledger, tenant.tenant_id)]


def test_an_email_whose_outcome_is_unknown_is_never_sent_again() -> None:
    world = World()
    tenant = active_tenant(world)
    world.mailer.answers = [LOST_ANSWER]  # the welcome email's answer is lost

    steps.send_welcome_emails(world.context("run-1"), tenant, FIRST)
    steps.send_welcome_emails(world.context("run-2"), tenant, FIRST)  # a later run of the phase

    assert [m.kind for m in world.mailer.delivered] == list(EmailKind)  # each once, at most
    assert statuses(world, tenant) == [EmailStatus.UNKNOWN, EmailStatus.SENT, EmailStatus.SENT]
    entry = world.registry.ledger.get(tenant.tenant_id, ledger_kind(EmailKind.WELCOME))
    assert entry is not None and entry.state == LedgerState.UNKNOWN


def test_a_send_interrupted_before_its_answer_was_recorded_is_not_resent() -> None:
    world = World()
    tenant = active_tenant(world)
    # What a process that died inside `mailer.send` leaves: the intent, no answer.
    world.registry.ledger.set(
        tenant.tenant_id,
        ledger_kind(EmailKind.WELCOME),
        LedgerState.SENDING,
        handle={"outcome": "sending", "to": tenant.admin_email, "attempts": 0},
    )

    outcomes = steps.send_welcome_emails(world.context("run-2"), tenant, FIRST)

    assert outcomes[0].skipped and outcomes[0].status == EmailStatus.UNKNOWN
    assert [m.kind for m in world.mailer.delivered] == [EmailKind.CONSOLE, EmailKind.ONBOARDING]


def test_a_mailer_that_raises_leaves_the_outcome_unknown_and_the_tenant_active() -> None:
    world = World()
    tenant = active_tenant(world)
    world.mailer.answers = [ConnectionResetError("peer went away")]

    steps.send_welcome_emails(world.context("run-1"), tenant, FIRST)
    steps.send_welcome_emails(world.context("run-2"), tenant, FIRST)

    assert statuses(world, tenant)[0] == EmailStatus.UNKNOWN
    assert EmailKind.WELCOME not in [m.kind for m in world.mailer.delivered]
    assert world.registry.tenants.get_by_id(tenant.tenant_id).state == "active"


def test_a_definite_failure_is_sent_again_by_the_next_run() -> None:
    world = World()
    tenant = active_tenant(world)
    world.mailer.answers = [REFUSED]

    steps.send_welcome_emails(world.context("run-1"), tenant, FIRST)
    assert statuses(world, tenant)[0] == EmailStatus.FAILED
    steps.send_welcome_emails(world.context("run-2"), tenant, FIRST)

    assert statuses(world, tenant) == [EmailStatus.SENT] * 3
    failed = [e for e in world.events if e.type == EventType.EMAIL_FAILED]
    assert [e.details["maybe_delivered"] for e in failed] == [False]


def test_the_phase_never_fails_the_tenant_once_its_retries_are_spent() -> None:
    world = World()
    tenant = active_tenant(world)
    world.identity.things.clear()  # the invitation cannot be read: every attempt raises
    budget = 3  # team

    with pytest.raises(Exception, match="no identity store"):
        steps.send_welcome_emails(world.context("run-1"), tenant, Attempt(0))
    outcomes = steps.send_welcome_emails(world.context("run-1"), tenant, Attempt(budget))

    assert outcomes == []
    assert world.registry.tenants.get_by_id(tenant.tenant_id).state == "active"
    assert world.types()[-2:] == [
        (EventType.EMAIL_FAILED, "send_welcome_emails"),
        (EventType.STEP_COMPLETED, "send_welcome_emails"),
    ]
