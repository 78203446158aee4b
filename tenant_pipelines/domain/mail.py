"""Welcome emails as data: what the saga hands a mailer, and what the mailer answers."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# How long the first admin's invitation may be redeemed, from the moment it is made (Allocate).
# Long enough for a weekend and a holiday's mail; short enough that a code left in a mailbox
# stops working by itself.
INVITATION_LIFETIME = timedelta(days=7)


class EmailKind(StrEnum):
    """The three welcome emails, in sending order."""

    WELCOME = "welcome"
    CONSOLE = "console"
    ONBOARDING = "onboarding"


class EmailStatus(StrEnum):
    """What `tenantctl emails` says of one email."""

    SENT = "sent"
    FAILED = "failed"  # definitely not delivered: a later run of the phase tries again
    UNKNOWN = "unknown"  # may have been delivered: never sent again
    NOT_SENT = "not_sent"


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered email for one tenant."""

    kind: str  # an EmailKind
    tenant_key: str
    tenant_slug: str
    to: str
    from_email: str
    subject: str
    text: str
    html: str
    idempotency_key: str  # f"{request_id}:email:{kind}", carried to the provider for tracing
    tenant_id: str  # the tenant it is for: a mailer keeping files per key checks whose they are


@dataclass(frozen=True)
class SendResult:
    """What a mailer did with one email. `maybe_delivered`: failed, yet the provider may have
    accepted it (the response was lost), so sending it again could duplicate it."""

    ok: bool
    status: int | None  # the provider's HTTP status; None for the outbox and for network errors
    provider_id: str | None  # SendGrid's X-Message-Id, or the outbox file's path
    reason: str | None
    attempts: int
    maybe_delivered: bool = False


@dataclass(frozen=True)
class Invitation:
    """The first admin's invitation, as the welcome email needs it. `expires_at` (UTC) is None
    only for a store made before invitations expired, until the control plane upgrades it."""

    email: str
    token: str
    status: str
    expires_at: datetime | None = None
