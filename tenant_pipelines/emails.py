"""The fifth phase, Send welcome emails: render three emails and send each at most once per tenant.

Best effort: a mail failure is recorded in the ledger and reported, never raised, so the tenant
stays active. At most once rests on the ledger, across retries, re-executions and resumes: before
an email goes to the mailer it is recorded pessimistically (state `failed`, outcome `sending`),
and only the mailer's answer turns that into `sent` or a definite failure. An email whose outcome
is unknown (the process died between send and record, or the provider's answer was lost) is never
sent again: a missing email can be noticed in `tenantctl emails`, a duplicate cannot be taken back.
A definite failure (the provider refused it, or the outbox could not be written) is tried again
by the next run of the phase.
"""

import html
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from string import Template
from typing import Any

from resources.mailer import Mailer, OutgoingEmail, SendResult
from tenant_pipelines.models import TenantSpec
from tenant_pipelines.plans import PLANS
from tenant_pipelines.registry import LedgerEntry, TenantRegistry

EMAIL_KINDS = ("welcome", "console", "onboarding")
LEDGER_KIND_PREFIX = "email:"
SENT_EVENT = "tenant.email.sent"
FAILED_EVENT = "tenant.email.failed"
SUBJECTS = {
    "welcome": "Welcome aboard: $slug of $org is live",
    "console": "Your admin console for $tenant_key",
    "onboarding": "Next steps for $tenant_key",
}
# Handle outcomes: `sending` is the record written before the mailer is called.
SENDING, SENT, FAILED, UNKNOWN, NOT_SENT = "sending", "sent", "failed", "unknown", "not_sent"

Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class EmailOutcome:
    """What the phase knows about one email after this run; `skipped`: settled by an earlier run,
    so nothing was sent now."""

    kind: str
    status: str  # sent | failed | unknown
    to: str
    provider_id: str | None
    reason: str | None
    attempts: int
    skipped: bool = False


@dataclass(frozen=True)
class EmailStatus:
    """One row of `tenantctl emails`."""

    kind: str
    status: str  # sent | failed | unknown | not_sent
    at: str | None  # UTC ISO-8601 of the last change
    provider_id: str | None
    reason: str | None
    to: str | None
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ledger_kind(kind: str) -> str:
    return f"{LEDGER_KIND_PREFIX}{kind}"


def render_email(
    kind: str, tenant: TenantSpec, domain: str, invitation_token: str, from_email: str
) -> OutgoingEmail:
    """Fill the kind's text and HTML templates; every value is HTML-escaped in the HTML part."""
    if kind not in EMAIL_KINDS:
        raise ValueError(f"unknown email kind {kind!r} (known: {', '.join(EMAIL_KINDS)})")
    values = _template_values(tenant, domain, invitation_token)
    escaped = {name: html.escape(value, quote=True) for name, value in values.items()}
    subject = Template(SUBJECTS[kind]).substitute(values)
    subject = " ".join(subject.split())  # no line breaks can reach a header
    body = _template(f"{kind}.html").substitute(escaped)
    page = _template("layout.html").substitute(
        escaped, title=html.escape(subject, quote=True), content=body
    )
    return OutgoingEmail(
        kind=kind,
        tenant_key=tenant.key,
        tenant_slug=tenant.slug,
        to=tenant.admin_email,
        from_email=from_email,
        subject=subject,
        text=_template(f"{kind}.txt").substitute(values),
        html=page,
        idempotency_key=f"{tenant.request_id}:{ledger_kind(kind)}",
    )


def _template_values(tenant: TenantSpec, domain: str, invitation_token: str) -> dict[str, str]:
    tenant_url = tenant.url(domain)
    return {
        "slug": tenant.slug,
        "org": tenant.org,
        "plan": tenant.plan,
        "tenant_key": tenant.key,
        "admin_email": tenant.admin_email,
        "tenant_url": tenant_url,
        "console_url": f"{tenant_url}/admin",
        "invitation_token": invitation_token,
        "plan_limits": _plan_limits(tenant.plan),
    }


def _plan_limits(plan_name: str) -> str:
    plan = PLANS.get(plan_name)
    if plan is None:
        return "The console shows how many users your plan admits."
    return (
        f"Your {plan.name} plan includes up to {plan.identity_max_users:,} users and "
        f"{plan.storage_quota_mb:,} MB of storage."
    )


@cache
def _template(name: str) -> Template:
    return Template(files("tenant_pipelines").joinpath("templates", name).read_text("utf-8"))


def send_welcome_emails(
    registry: TenantRegistry,
    mailer: Mailer,
    tenant: TenantSpec,
    *,
    domain: str,
    invitation_token: str,
    run_id: str | None,
    emit: Emit,
) -> list[EmailOutcome]:
    """Send each email the ledger does not show as settled; one outcome per kind, in order."""
    outcomes = []
    for kind in EMAIL_KINDS:
        settled = _settled(registry.ledger_get(tenant.tenant_id, ledger_kind(kind)), kind)
        if settled is not None:
            outcomes.append(settled)
            continue
        message = render_email(kind, tenant, domain, invitation_token, mailer.from_email)
        outcomes.append(_send_one(registry, mailer, tenant, message, run_id, emit))
    return outcomes


def _settled(entry: LedgerEntry | None, kind: str) -> EmailOutcome | None:
    """The earlier outcome if it forbids sending again; None if the email may be sent."""
    if entry is None:
        return None
    status = _status_of(entry)
    if status == FAILED:
        return None
    handle = entry.handle
    return EmailOutcome(
        kind,
        status,
        handle.get("to", ""),
        handle.get("provider_id"),
        handle.get("reason"),
        int(handle.get("attempts") or 0),
        skipped=True,
    )


def _status_of(entry: LedgerEntry | None) -> str:
    if entry is None:
        return NOT_SENT
    if entry.state == SENT:
        return SENT
    outcome = entry.handle.get("outcome")
    if entry.state == FAILED and outcome == FAILED:
        return FAILED
    return UNKNOWN  # `sending` left behind, a lost answer, or a state this phase never writes


def _send_one(
    registry: TenantRegistry,
    mailer: Mailer,
    tenant: TenantSpec,
    message: OutgoingEmail,
    run_id: str | None,
    emit: Emit,
) -> EmailOutcome:
    kind = ledger_kind(message.kind)
    intent = _handle(SENDING, message.to, None, "sending; no answer recorded yet", 0, None)
    registry.ledger_set(tenant.tenant_id, kind, FAILED, handle=intent, run_id=run_id)
    try:
        result = mailer.send(message)
    except Exception as error:  # a broken mailer must not fail the tenant; outcome unknown
        reason = f"mailer error: {type(error).__name__}: {error}"
        result = SendResult(False, None, None, reason, 1, maybe_delivered=True)
    status = SENT if result.ok else (UNKNOWN if result.maybe_delivered else FAILED)
    handle = _handle(
        status, message.to, result.provider_id, result.reason, result.attempts, result.status
    )
    registry.ledger_set(
        tenant.tenant_id, kind, SENT if result.ok else FAILED, handle=handle, run_id=run_id
    )
    emit(*_event(message, result))
    return EmailOutcome(
        message.kind, status, message.to, result.provider_id, result.reason, result.attempts
    )


def _handle(
    outcome: str,
    to: str,
    provider_id: str | None,
    reason: str | None,
    attempts: int,
    status: int | None,
) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat()
    return {
        "outcome": outcome,
        "status": status,
        "provider_id": provider_id,
        "at": at,
        "reason": reason,
        "to": to,
        "attempts": attempts,
    }


def _event(message: OutgoingEmail, result: SendResult) -> tuple[str, dict[str, Any]]:
    details: dict[str, Any] = {
        "kind": message.kind,
        "to": message.to,
        "status": result.status,
        "attempts": result.attempts,
    }
    if result.ok:
        return SENT_EVENT, {**details, "provider_id": result.provider_id}
    return FAILED_EVENT, {
        **details,
        "reason": result.reason,
        "maybe_delivered": result.maybe_delivered,
    }


def email_statuses(registry: TenantRegistry, tenant_id: str) -> list[EmailStatus]:
    """The three emails as `tenantctl emails` shows them, in sending order."""
    rows = []
    for kind in EMAIL_KINDS:
        entry = registry.ledger_get(tenant_id, ledger_kind(kind))
        handle = entry.handle if entry is not None else {}
        at = handle.get("at") or (entry.updated_at.isoformat() if entry is not None else None)
        rows.append(
            EmailStatus(
                kind,
                _status_of(entry),
                at,
                handle.get("provider_id"),
                handle.get("reason"),
                handle.get("to"),
                int(handle.get("attempts") or 0),
            )
        )
    return rows
