"""Mail to a tenant's first admin: the saga's `Mailer` port, two backends.

`OutboxMailer` (the embedded default) writes each email as a standard RFC 5322 `.eml` file that a
person can open in any mail client, in a folder per tenant key that records the tenant id it is
for (another tenant id's folder is never written; decommission releases the record);
`SendGridMailer` sends through SendGrid's v3 Mail Send with the official client. A backend only
delivers: whether an email may go out at all (at most once per tenant) is decided from the
ledger by `tenant_pipelines.saga.emails`.

Configuration (chosen in `tenant_pipelines.composition`): `SENDGRID_API_KEY` selects SendGrid
and is read from the environment when the mailer is built (the Dagster resource holds it as an
`EnvVar`); `SENDGRID_FROM` is the sender; `SENDGRID_API_HOST` the API host (`EU_SENDGRID_HOST`
for EU data residency). The outbox lives under `TENANT_DATA_DIR`.
"""

import http.client
import json
import logging
import os
import time
import urllib.error
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Category, CustomArg, From, Mail, To

from tenant_pipelines.domain.mail import EmailKind, OutgoingEmail, SendResult
from tenant_pipelines.domain.tenant import is_tenant_key
from tenant_pipelines.support.files import write_atomically

DEFAULT_FROM = "Tenant Platform <no-reply@localhost>"
DEFAULT_SENDGRID_HOST = "https://api.sendgrid.com"
EU_SENDGRID_HOST = "https://api.eu.sendgrid.com"
REQUEST_TIMEOUT_S = 10.0  # bounds every blocking socket operation of one attempt
MIN_ATTEMPT_TIMEOUT_S = 0.1  # never 0: the client would read a 0 timeout as "wait forever"
MAX_TOTAL_S = 60.0  # no attempt starts and no backoff sleeps past this, per email
BACKOFF_BASE_S = 1.0  # first wait before a retry when the server gives no Retry-After
BACKOFF_MAX_S = 16.0
MAX_REASON_CHARS = 300
OUTBOX_DIR = "outbox"
OWNER_FILE = ".tenant-id"  # in a tenant's outbox folder: the tenant id it belongs to
MAIL_CATEGORY = "tenant-onboarding"
CLIENT_LOGGER = "python_http_client.client"


@dataclass(frozen=True, kw_only=True)
class OutboxMailer:
    """Writes `<data_dir>/outbox/<tenant_key>/<kind>.eml`, replacing it atomically. The folder's
    `.tenant-id` names the tenant it belongs to, claimed by the first email written there."""

    data_dir: str  # TENANT_DATA_DIR; the outbox is its `outbox/` folder
    from_email: str = DEFAULT_FROM  # the sender, 'Name <address>'

    def outbox_path(self, tenant_key: str, kind: str) -> Path:
        return Path(self.data_dir) / OUTBOX_DIR / tenant_key / f"{kind}.eml"

    def send(self, message: OutgoingEmail) -> SendResult:
        if not (is_tenant_key(message.tenant_key) and message.kind in set(EmailKind)):
            return SendResult(False, None, None, "tenant key or kind is not a safe file name", 0)
        path = self.outbox_path(message.tenant_key, message.kind)
        try:
            owner = claim_folder(path.parent, message.tenant_id)
            if owner != message.tenant_id:
                reason = f"the outbox {path.parent} belongs to another tenant; nothing written"
                return SendResult(False, None, None, reason, 0)
            write_atomically(path, to_eml(message).as_bytes(policy=SMTP), durable=True)
        except OSError as error:
            return SendResult(False, None, None, f"cannot write {path}: {error.strerror}", 1)
        return SendResult(True, None, str(path), None, 1)

    def release(self, tenant_key: str, tenant_id: str) -> bool:
        """Drop the folder's record of this tenant (its emails stay, as a mailbox keeps mail)."""
        if not is_tenant_key(tenant_key):
            return False
        record = Path(self.data_dir) / OUTBOX_DIR / tenant_key / OWNER_FILE
        if _read_owner(record) != tenant_id:
            return False
        record.unlink(missing_ok=True)
        return True


def claim_folder(folder: Path, tenant_id: str) -> str:
    """The tenant id a tenant's outbox folder belongs to, claiming it for `tenant_id` if nobody
    has: the record is linked into place, so of two racing claims exactly one wins."""
    record = folder / OWNER_FILE
    owner = _read_owner(record)
    if owner is not None:
        return owner
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{OWNER_FILE}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    tmp.write_text(tenant_id)
    try:
        os.link(tmp, record)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_owner(record) or ""


def _read_owner(record: Path) -> str | None:
    try:
        return record.read_text().strip() or None
    except FileNotFoundError:
        return None


def to_eml(message: OutgoingEmail) -> EmailMessage:
    """The email as an RFC 5322 multipart/alternative message (text, then HTML)."""
    eml = EmailMessage()
    eml["From"] = message.from_email
    eml["To"] = message.to
    eml["Subject"] = message.subject
    eml["Date"] = format_datetime(datetime.now(UTC))
    sender_domain = parseaddr(message.from_email)[1].rpartition("@")[2] or "localhost"
    eml["Message-ID"] = make_msgid(idstring=message.kind, domain=sender_domain)
    eml["X-Tenant"] = message.tenant_key
    eml["X-Email-Kind"] = message.kind
    eml.set_content(message.text)
    eml.add_alternative(message.html, subtype="html")
    return eml


@dataclass(frozen=True)
class _Attempt:
    """One HTTP exchange with SendGrid, classified."""

    ok: bool
    status: int | None = None
    provider_id: str | None = None
    reason: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    maybe_delivered: bool = False


@dataclass(frozen=True, kw_only=True)
class SendGridMailer:
    """SendGrid v3 Mail Send. Retries 429 and 5xx with exponential backoff that honours
    Retry-After, within `max_total_s`; other 4xx are final. A request whose response never came
    (timeout, dropped connection) is not retried: SendGrid may have accepted it, and a second
    attempt could deliver the email twice."""

    api_key: str = field(repr=False)  # SENDGRID_API_KEY
    from_email: str  # SENDGRID_FROM: a sender verified in SendGrid
    api_host: str = DEFAULT_SENDGRID_HOST  # SENDGRID_API_HOST
    timeout_s: float = REQUEST_TIMEOUT_S
    max_total_s: float = MAX_TOTAL_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_max_s: float = BACKOFF_MAX_S

    def __post_init__(self) -> None:
        """A zero timeout or total would mean "wait forever" or "never try": refused."""
        if self.timeout_s <= 0 or self.max_total_s <= 0:
            raise ValueError("SendGridMailer: timeout_s and max_total_s must be positive")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError(
                "SendGridMailer: backoff_base_s and backoff_max_s must not be negative"
            )

    def release(self, tenant_key: str, tenant_id: str) -> bool:
        """SendGrid keeps nothing per tenant that a later tenant of the same key could trip on."""
        return False

    def send(self, message: OutgoingEmail) -> SendResult:
        _drop_request_dumps()
        client = SendGridAPIClient(api_key=self.api_key, host=self.api_host.rstrip("/"))
        body = sendgrid_mail(message).get()
        deadline = time.monotonic() + self.max_total_s
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            timeout = min(self.timeout_s, max(remaining, MIN_ATTEMPT_TIMEOUT_S))
            attempt = self._post(client, body, timeout)
            if attempt.ok or not attempt.retryable:
                return self._result(attempt, attempts)
            wait = self._wait_s(attempts, attempt.retry_after_s)
            if time.monotonic() + wait >= deadline:
                note = f"gave up after {attempts} attempt(s) within {self.max_total_s:g}s"
                return self._result(attempt, attempts, note)
            time.sleep(wait)

    def _post(self, client: SendGridAPIClient, body: dict[str, Any], timeout: float) -> _Attempt:
        try:
            response = client.client.mail.send.post(request_body=body, timeout=timeout)
        except SendGridHTTPError as error:
            return _classify_http_error(error)
        except urllib.error.URLError as error:  # before the request went out: nothing was sent
            return _Attempt(False, reason=f"cannot connect: {error.reason}", retryable=True)
        except (OSError, http.client.HTTPException) as error:
            what = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            reason = f"no response ({what} after {timeout:g}s); SendGrid may have accepted it"
            return _Attempt(False, reason=reason, maybe_delivered=True)
        provider_id = response.headers.get("X-Message-Id")
        return _Attempt(True, status=response.status_code, provider_id=provider_id)

    def _wait_s(self, attempts: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return retry_after_s
        return float(min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempts - 1)))

    def _result(self, attempt: _Attempt, attempts: int, note: str | None = None) -> SendResult:
        reason = attempt.reason
        if reason is not None:
            reason = reason.replace(self.api_key, "[redacted]") if self.api_key else reason
            reason = f"{reason} ({note})" if note else reason
        return SendResult(
            attempt.ok,
            attempt.status,
            attempt.provider_id,
            reason,
            attempts,
            attempt.maybe_delivered,
        )


def sendgrid_mail(message: OutgoingEmail) -> Mail:
    """The v3 Mail Send body; categories and custom args say which tenant and which email."""
    name, address = parseaddr(message.from_email)
    mail = Mail(
        from_email=From(address or message.from_email, name or None),
        to_emails=To(message.to),
        subject=message.subject,
        plain_text_content=message.text,
        html_content=message.html,
    )
    mail.category = [Category(MAIL_CATEGORY), Category(f"email-{message.kind}")]
    mail.custom_arg = [
        CustomArg("tenant_slug", message.tenant_slug),
        CustomArg("tenant_key", message.tenant_key),
        CustomArg("email_kind", message.kind),
        CustomArg("idempotency_key", message.idempotency_key),
    ]
    return mail


def _classify_http_error(error: SendGridHTTPError) -> _Attempt:
    status = int(error.status_code)
    detail = _error_detail(error.body) or str(error.reason)
    reason = f"HTTP {status}: {detail}"[:MAX_REASON_CHARS]
    retryable = status == 429 or status >= 500
    retry_after = parse_retry_after(error.headers.get("Retry-After")) if error.headers else None
    return _Attempt(
        False, status=status, reason=reason, retryable=retryable, retry_after_s=retry_after
    )


def _error_detail(body: bytes | str | None) -> str | None:
    """SendGrid's `{"errors": [{"message": ...}]}`, joined; None if the body is not that."""
    try:
        errors = json.loads(body or b"")["errors"]
        return "; ".join(str(item.get("message", item)) for item in errors) or None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class _DropRequestDumps(logging.Filter):
    """The client logs each request's headers (the bearer token) and payload (the invitation)
    at DEBUG; those records must never reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else ""
        return not text.startswith(("HEADERS:", "PAYLOAD:"))


def _drop_request_dumps() -> None:
    logger = logging.getLogger(CLIENT_LOGGER)
    if not any(isinstance(existing, _DropRequestDumps) for existing in logger.filters):
        logger.addFilter(_DropRequestDumps())
