"""The fifth phase, Send welcome emails: each of the three at most once per tenant.

Best effort: a mail failure is recorded in the ledger and reported, never raised, so the tenant
stays active. At most once rests on the ledger, across retries, re-executions and resumes: before
an email goes to the mailer it is recorded as `sending`, and only the mailer's answer turns that
into `sent`, `failed` (definitely not delivered) or `unknown` (the provider may have taken it).
An email that is `sending` or `unknown` when the phase runs again (the process died between send
and record, or the provider's answer was lost) is never sent again: a missing email can be noticed
in `tenantctl emails`, a duplicate cannot be taken back. A `failed` one is tried again.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.mail import EmailKind, EmailStatus, OutgoingEmail, SendResult
from tenant_pipelines.domain.records import LedgerEntry
from tenant_pipelines.domain.states import LedgerState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.email_content import ledger_kind, render_email
from tenant_pipelines.saga.ports import Ledger


@dataclass(frozen=True)
class EmailOutcome:
    """What the phase knows about one email after this run; `skipped`: settled by an earlier run,
    so nothing was sent now."""

    kind: str
    status: EmailStatus
    to: str
    provider_id: str | None
    reason: str | None
    attempts: int
    skipped: bool = False


@dataclass(frozen=True)
class EmailRow:
    """One row of `tenantctl emails`."""

    kind: str
    status: EmailStatus
    at: str | None  # UTC ISO-8601 of the last change
    provider_id: str | None
    reason: str | None
    to: str | None
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def send_welcome_emails(ctx: SagaContext, tenant: TenantSpec) -> list[EmailOutcome]:
    """Send each email the ledger does not show as settled; one outcome per kind, in order."""
    mailer = ctx.backends.mailer
    invitation = ctx.backends.identity.invitation(tenant.key)
    outcomes = []
    # One read for the three: what an earlier attempt settled is not sent again.
    entries = {entry.kind: entry for entry in ctx.registry.ledger.entries(tenant.tenant_id)}
    for kind in EmailKind:
        entry = entries.get(ledger_kind(kind))
        settled = _settled(entry, kind)
        if settled is not None:
            outcomes.append(settled)
            continue
        message = render_email(
            kind,
            tenant,
            ctx.served_at,
            invitation.token,
            mailer.from_email,
            invitation.expires_at,
        )
        outcomes.append(_send_one(ctx, tenant, message))
    return outcomes


def status_of(entry: LedgerEntry | None) -> EmailStatus:
    """What the ledger says of one email (older rows wrote `failed` for `sending`)."""
    if entry is None:
        return EmailStatus.NOT_SENT
    if entry.state == LedgerState.SENT:
        return EmailStatus.SENT
    if entry.state == LedgerState.FAILED and entry.handle.get("outcome") == EmailStatus.FAILED:
        return EmailStatus.FAILED
    return EmailStatus.UNKNOWN  # sending left behind, a lost answer, or an older `sending` row


def _settled(entry: LedgerEntry | None, kind: str) -> EmailOutcome | None:
    """The earlier outcome if it forbids sending again; None if the email may be sent."""
    status = status_of(entry)
    if entry is None or status == EmailStatus.FAILED:
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


def _send_one(ctx: SagaContext, tenant: TenantSpec, message: OutgoingEmail) -> EmailOutcome:
    """Claim the email (`sending`) only if the ledger still shows it unsent or failed, in one
    transaction, then send it: of two executions of the phase racing for the same tenant, one
    sends and the other reports what it found, so no email goes out twice."""
    kind = ledger_kind(message.kind)
    intent = _handle(LedgerState.SENDING, message.to, None, "no answer recorded yet", 0, None)
    claimed, current = ctx.registry.ledger.claim(
        tenant.tenant_id,
        kind,
        LedgerState.SENDING,
        allowed=lambda entry: _settled(entry, message.kind) is None,
        handle=intent,
        run_id=ctx.run_id,
    )
    if not claimed:
        found = _settled(current, message.kind)
        assert found is not None  # what refused the claim settles the email
        return found
    try:
        result = ctx.backends.mailer.send(message)
    except Exception as error:  # a broken mailer must not fail the tenant; outcome unknown
        reason = f"mailer error: {type(error).__name__}: {error}"
        result = SendResult(False, None, None, reason, 1, maybe_delivered=True)
    state = _ledger_state(result)
    handle = _handle(
        state, message.to, result.provider_id, result.reason, result.attempts, result.status
    )
    ctx.registry.ledger.set(tenant.tenant_id, kind, state, handle=handle, run_id=ctx.run_id)
    event_type, details = _event(message, result)
    ctx.event(event_type, tenant, Step.SEND_WELCOME_EMAILS, **details)
    return EmailOutcome(
        message.kind,
        EmailStatus(state),
        message.to,
        result.provider_id,
        result.reason,
        result.attempts,
    )


def _ledger_state(result: SendResult) -> LedgerState:
    if result.ok:
        return LedgerState.SENT
    return LedgerState.UNKNOWN if result.maybe_delivered else LedgerState.FAILED


def _handle(
    outcome: str,
    to: str,
    provider_id: str | None,
    reason: str | None,
    attempts: int,
    status: int | None,
) -> dict[str, Any]:
    return {
        "outcome": str(outcome),
        "status": status,
        "provider_id": provider_id,
        "at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "to": to,
        "attempts": attempts,
    }


def _event(message: OutgoingEmail, result: SendResult) -> tuple[EventType, dict[str, Any]]:
    details: dict[str, Any] = {
        "kind": message.kind,
        "to": message.to,
        "status": result.status,
        "attempts": result.attempts,
    }
    if result.ok:
        return EventType.EMAIL_SENT, {**details, "provider_id": result.provider_id}
    return EventType.EMAIL_FAILED, {
        **details,
        "reason": result.reason,
        "maybe_delivered": result.maybe_delivered,
    }


def email_rows(ledger: Ledger, tenant_id: str) -> list[EmailRow]:
    """The three emails as `tenantctl emails` shows them, in sending order."""
    rows = []
    for kind in EmailKind:
        entry = ledger.get(tenant_id, ledger_kind(kind))
        handle = entry.handle if entry is not None else {}
        at = handle.get("at") or (entry.updated_at.isoformat() if entry is not None else None)
        rows.append(
            EmailRow(
                str(kind),
                status_of(entry),
                at,
                handle.get("provider_id"),
                handle.get("reason"),
                handle.get("to"),
                int(handle.get("attempts") or 0),
            )
        )
    return rows
