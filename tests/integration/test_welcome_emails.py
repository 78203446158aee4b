"""The Send welcome emails phase on a real registry: at most once per tenant, never failing it."""

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from resources.mailer import DEFAULT_FROM, OutboxMailer, SendGridMailer
from tenant_pipelines.domain.events import AuditEvent
from tenant_pipelines.domain.mail import EmailKind, OutgoingEmail, SendResult
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.context import Backends, SagaContext
from tenant_pipelines.saga.email_content import ledger_kind, render_email
from tenant_pipelines.saga.emails import email_rows as email_statuses
from tenant_pipelines.saga.emails import send_welcome_emails
from tenant_pipelines.saga.ports import Mailer
from tests.fake_sendgrid import (
    FakeSendGrid,
    bad_request,
    fast_mailer,
    hang,
    rate_limited,
    server_error,
)
from tests.saga_fakes import InMemoryBackend, InMemoryIdentity, InMemoryTraffic, Journal

pytestmark = pytest.mark.integration

API_KEY = "SG.phase-key-that-must-never-leak.fedcba9876543210"
SENDER = "Tenant Platform <platform@mail.example.com>"
DOMAIN = "example.test"
TOKEN = "inv-7f3a9c2e"
HOSTILE = '<script>alert("pwned")</script>'
ADMIN = "o'neil&co@globex.example.com"  # valid, and full of characters HTML must escape


EMAIL_KINDS = [str(kind) for kind in EmailKind]


class Events:
    """The saga's event sink, keeping what it was given."""

    def __init__(self) -> None:
        self.emitted: list[AuditEvent] = []

    def __call__(self, event: AuditEvent) -> None:
        self.emitted.append(event)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [event.details for event in self.emitted if event.type == event_type]


@pytest.fixture
def tenant(registry: TenantRegistry) -> TenantSpec:
    """A tenant that reached Mark active, as the fifth phase finds it."""
    request = TenantRequest.parse(
        {
            "slug": "acme",
            "org": "globex",
            "plan": "team",
            "admin_email": ADMIN,
            "requested_by": {"subject": "alice", "role": "platform-admin"},
        }
    )
    record, _ = registry.requests.submit(request)
    reserved = registry.tenants.reserve(registry.requests.get(str(record.request_id)))
    registry.tenants.transition(reserved.tenant_id, "active")
    return reserved.spec


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(API_KEY) as server:
        yield server


def sendgrid(fake: FakeSendGrid, **changes: object) -> SendGridMailer:
    return fast_mailer(fake, **{"api_key": API_KEY, "from_email": SENDER, **changes})


def run_phase(
    registry: TenantRegistry, mailer: Mailer, tenant: TenantSpec, events: Events, token: str = TOKEN
) -> dict[str, Any]:
    """The phase on the real registry and mailer; the tenant's identity store (an in-memory one)
    holds the invitation `token`."""
    journal = Journal()
    identity = InMemoryIdentity(journal, token=token)
    identity.ensure(tenant)
    backends = Backends(
        InMemoryBackend("storage", journal),
        identity,
        InMemoryTraffic(journal),
        InMemoryBackend("workload", journal),
        mailer,
    )
    saga = SagaContext(registry, backends, DOMAIN, run_id="run-1", emit=events)
    outcomes = send_welcome_emails(saga, tenant)
    assert [o.kind for o in outcomes] == list(EMAIL_KINDS)
    return {o.kind: o for o in outcomes}


def kinds_delivered(fake: FakeSendGrid) -> list[str]:
    return [r.body["custom_args"]["email_kind"] for r in fake.delivered]


def test_three_emails_go_out_once_and_a_rerun_sends_nothing(
    registry: TenantRegistry, tenant: TenantSpec, fake: FakeSendGrid
) -> None:
    events = Events()
    outcomes = run_phase(registry, sendgrid(fake), tenant, events)

    assert {o.status for o in outcomes.values()} == {"sent"}
    assert kinds_delivered(fake) == ["welcome", "console", "onboarding"]
    for kind, outcome in outcomes.items():
        entry = registry.ledger.get(tenant.tenant_id, ledger_kind(kind))
        assert entry is not None and entry.state == "sent" and entry.run_id == "run-1"
        assert entry.handle["provider_id"] == outcome.provider_id
        assert entry.handle["provider_id"].startswith("fake-msg-")
        assert (entry.handle["status"], entry.handle["to"]) == (202, ADMIN)
    assert [d["kind"] for d in events.of("tenant.email.sent")] == list(EMAIL_KINDS)

    again = Events()
    rerun = run_phase(registry, sendgrid(fake), tenant, again)

    assert all(o.skipped and o.status == "sent" for o in rerun.values())
    assert len(fake.requests) == 3 and again.emitted == []
    assert registry.tenants.get_by_id(tenant.tenant_id).state == "active"


def test_429_with_retry_after_then_success(
    registry: TenantRegistry, tenant: TenantSpec, fake: FakeSendGrid
) -> None:
    fake.script(rate_limited(retry_after="1"))
    events = Events()

    outcomes = run_phase(registry, sendgrid(fake), tenant, events)

    assert {o.status for o in outcomes.values()} == {"sent"}
    assert outcomes["welcome"].attempts == 2
    assert [r.answered for r in fake.requests] == [429, 202, 202, 202]
    assert events.of("tenant.email.sent")[0]["attempts"] == 2


def test_persistent_500_is_recorded_and_reported_and_the_phase_succeeds(
    registry: TenantRegistry, tenant: TenantSpec, fake: FakeSendGrid
) -> None:
    fake.script(*[server_error()] * 200)
    events = Events()

    outcomes = run_phase(registry, sendgrid(fake, max_total_s=0.3), tenant, events)

    assert {o.status for o in outcomes.values()} == {"failed"}
    failed = events.of("tenant.email.failed")
    assert [d["kind"] for d in failed] == list(EMAIL_KINDS)
    assert all(d["status"] == 500 and "HTTP 500" in d["reason"] for d in failed)
    assert all(not d["maybe_delivered"] for d in failed)
    assert {s.status for s in email_statuses(registry.ledger, tenant.tenant_id)} == {"failed"}
    assert registry.tenants.get_by_id(tenant.tenant_id).state == "active"
    assert fake.delivered == []


def test_a_definite_failure_is_sent_by_the_next_run_and_only_once(
    registry: TenantRegistry, tenant: TenantSpec, fake: FakeSendGrid
) -> None:
    fake.script(bad_request())  # refuses the welcome email only
    first = run_phase(registry, sendgrid(fake), tenant, Events())
    assert (first["welcome"].status, first["welcome"].attempts) == ("failed", 1)
    assert [r.answered for r in fake.requests] == [400, 202, 202]  # 400: not retried

    second = run_phase(registry, sendgrid(fake), tenant, Events())

    assert not second["welcome"].skipped and second["welcome"].status == "sent"
    assert second["console"].skipped and second["onboarding"].skipped
    assert kinds_delivered(fake) == ["console", "onboarding", "welcome"]


def test_a_hang_is_bounded_by_the_timeout_and_never_sent_twice(
    registry: TenantRegistry, tenant: TenantSpec, fake: FakeSendGrid
) -> None:
    fake.script(hang())
    events = Events()
    started = time.monotonic()

    outcomes = run_phase(registry, sendgrid(fake, timeout_s=0.3), tenant, events)

    assert time.monotonic() - started < 2.0
    assert outcomes["welcome"].status == "unknown"
    assert (outcomes["console"].status, outcomes["onboarding"].status) == ("sent", "sent")
    [failed] = events.of("tenant.email.failed")
    assert failed["maybe_delivered"] and "timed out" in failed["reason"]

    rerun = run_phase(registry, sendgrid(fake, timeout_s=0.3), tenant, Events())

    assert rerun["welcome"].skipped and rerun["welcome"].status == "unknown"
    assert len(fake.requests) == 3
    assert email_statuses(registry.ledger, tenant.tenant_id)[0].status == "unknown"


def test_a_crash_between_send_and_record_does_not_resend_on_resume(
    registry: TenantRegistry, tenant: TenantSpec, fake: FakeSendGrid
) -> None:
    # What an interrupted run leaves: the intent record written before the mailer was called.
    registry.ledger.set(
        tenant.tenant_id,
        ledger_kind("welcome"),
        "failed",
        handle={"outcome": "sending", "to": ADMIN, "attempts": 0},
        run_id="run-0",
    )

    outcomes = run_phase(registry, sendgrid(fake), tenant, Events())

    assert outcomes["welcome"].skipped and outcomes["welcome"].status == "unknown"
    assert kinds_delivered(fake) == ["console", "onboarding"]


def test_a_broken_mailer_never_fails_the_phase(
    registry: TenantRegistry, tenant: TenantSpec
) -> None:
    class BrokenMailer:
        from_email = DEFAULT_FROM

        def send(self, message: OutgoingEmail) -> SendResult:
            raise RuntimeError("disk on fire")

        def release(self, tenant_key: str, tenant_id: str) -> bool:
            return False

    events = Events()
    outcomes = run_phase(registry, BrokenMailer(), tenant, events)

    assert {o.status for o in outcomes.values()} == {"unknown"}
    assert all("disk on fire" in d["reason"] for d in events.of("tenant.email.failed"))


def test_the_api_key_never_reaches_events_ledger_or_logs(
    registry: TenantRegistry,
    tenant: TenantSpec,
    fake: FakeSendGrid,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.script(server_error(), bad_request())
    events = Events()
    with caplog.at_level(logging.DEBUG):
        outcomes = run_phase(registry, sendgrid(fake, max_total_s=0.3), tenant, events)

    handles = [e.handle for e in registry.ledger.entries(tenant.tenant_id)]
    statuses = [s.to_json() for s in email_statuses(registry.ledger, tenant.tenant_id)]
    for text in (
        json.dumps([event.to_json() for event in events.emitted]),
        json.dumps(handles),
        json.dumps(statuses),
        repr(outcomes),
        caplog.text,
    ):
        assert API_KEY not in text


def read_eml(path: Path) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    return parsed


def test_the_outbox_holds_three_readable_emails_with_hostile_values_escaped(
    registry: TenantRegistry, tenant: TenantSpec, tmp_path: Path
) -> None:
    mailer = OutboxMailer(data_dir=str(tmp_path))
    events = Events()

    run_phase(registry, mailer, tenant, events, token=HOSTILE)

    outbox = tmp_path / "outbox" / "acme-globex"
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        [".tenant-id", *(f"{k}.eml" for k in EMAIL_KINDS)]
    )
    assert (outbox / ".tenant-id").read_text() == tenant.tenant_id
    for kind in EMAIL_KINDS:
        eml = read_eml(outbox / f"{kind}.eml")
        assert eml["To"] == ADMIN
        text, html = (part.get_content() for part in eml.iter_parts())
        assert "<script>" not in html and "o'neil&co" not in html
        assert "o&#x27;neil&amp;co@globex.example.com" in html
    console = read_eml(outbox / "console.eml")
    text, html = (part.get_content() for part in console.iter_parts())
    assert HOSTILE in text and "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    statuses = email_statuses(registry.ledger, tenant.tenant_id)
    assert [s.provider_id for s in statuses] == [str(outbox / f"{k}.eml") for k in EMAIL_KINDS]


def test_statuses_before_any_run_say_not_sent(registry: TenantRegistry, tenant: TenantSpec) -> None:
    statuses = email_statuses(registry.ledger, tenant.tenant_id)

    assert [(s.kind, s.status, s.at) for s in statuses] == [
        (kind, "not_sent", None) for kind in EMAIL_KINDS
    ]


SPEC = TenantSpec(
    tenant_id="t-1",
    request_id="r-1",
    slug="acme",
    org="globex",
    plan="team",
    admin_email="admin@globex.example.com",
)


def test_the_three_emails_carry_their_content() -> None:
    welcome, console, onboarding = (
        render_email(kind, SPEC, DOMAIN, TOKEN, SENDER) for kind in EMAIL_KINDS
    )

    assert "acme" in welcome.subject and "globex" in welcome.subject
    assert "https://acme-globex.example.test" in welcome.text
    assert "https://acme-globex.example.test/admin" in console.text
    assert 'href="https://acme-globex.example.test/admin"' in console.html
    assert TOKEN in console.text and TOKEN in console.html
    assert "Register your first application" in onboarding.text
    assert "1,000 users" in onboarding.html
    assert onboarding.idempotency_key == "r-1:email:onboarding"
    assert all(
        e.to == SPEC.admin_email and e.from_email == SENDER for e in (welcome, console, onboarding)
    )


def test_the_console_email_says_how_to_redeem_the_code_and_until_when() -> None:
    paris = timezone(timedelta(hours=1))  # a PostgreSQL session may answer in its own zone
    expires = datetime(2026, 12, 10, 13, 30, tzinfo=paris)
    console = render_email("console", SPEC, DOMAIN, TOKEN, SENDER, expires)

    for body in (" ".join(console.text.split()), " ".join(console.html.split())):
        assert "Redeem your invitation" in body and "paste this invitation code" in body
        assert "until 2026-12-10 12:30 UTC" in body
    links = re.findall(r'href="([^"]+)"', console.html)
    assert links and all(TOKEN not in link and "?" not in link for link in links)
    undated = render_email("console", SPEC, DOMAIN, TOKEN, SENDER)
    assert "until 7 days after it was made" in " ".join(undated.text.split())


def test_every_value_from_the_request_is_escaped_in_html() -> None:
    hostile = SPEC.model_copy(update={"org": HOSTILE, "slug": "a\r\nBcc: evil@example.com"})

    for kind in EMAIL_KINDS:
        email = render_email(kind, hostile, DOMAIN, HOSTILE, SENDER)
        assert "<script>" not in email.html and "&lt;script&gt;" in email.html
        assert "\n" not in email.subject and "\r" not in email.subject
