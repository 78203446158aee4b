"""The mailer backends for real: the SendGrid client against a local v3 server; the outbox."""

import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from pathlib import Path

import pytest

from resources.mailer import (
    EU_SENDGRID_HOST,
    OutboxMailer,
    OutgoingEmail,
    SendGridMailer,
    parse_retry_after,
)
from tests.fake_sendgrid import (
    FakeSendGrid,
    accept,
    bad_request,
    fast_mailer,
    hang,
    rate_limited,
    server_error,
)

pytestmark = pytest.mark.integration

API_KEY = "SG.test-key-that-must-never-leak.0123456789abcdef"
SENDER = "Tenant Platform <platform@mail.example.com>"
HOSTILE = '<script>alert("pwned")</script>'


def message(kind: str = "welcome", **changes: str) -> OutgoingEmail:
    fields = {
        "kind": kind,
        "tenant_key": "acme-globex",
        "tenant_slug": "acme",
        "to": "admin@globex.example.com",
        "from_email": SENDER,
        "subject": "Welcome aboard: acme of globex is live",
        "text": "Hello,\n\nWelcome aboard.\n",
        "html": "<p>Welcome aboard.</p>",
        "idempotency_key": f"req-1:email:{kind}",
        "tenant_id": "tenant-1",
    }
    fields.update(changes)
    return OutgoingEmail(**fields)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(API_KEY) as server:
        yield server


def sendgrid(fake: FakeSendGrid, **changes: object) -> SendGridMailer:
    return fast_mailer(fake, **{"api_key": API_KEY, "from_email": SENDER, **changes})


def test_a_202_is_sent_with_the_v3_shape_and_the_message_id(fake: FakeSendGrid) -> None:
    result = sendgrid(fake).send(message("console"))

    assert (result.ok, result.status, result.attempts) == (True, 202, 1)
    assert result.provider_id == "fake-msg-0001" and result.reason is None
    [request] = fake.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["from"] == {"email": "platform@mail.example.com", "name": "Tenant Platform"}
    assert body["personalizations"] == [{"to": [{"email": "admin@globex.example.com"}]}]
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert set(body["categories"]) == {"tenant-onboarding", "email-console"}
    assert body["custom_args"] == {
        "tenant_slug": "acme",
        "tenant_key": "acme-globex",
        "email_kind": "console",
        "idempotency_key": "req-1:email:console",
    }


def test_429_waits_for_retry_after_then_succeeds(fake: FakeSendGrid) -> None:
    fake.script(rate_limited(retry_after="1"), accept())
    started = time.monotonic()

    result = sendgrid(fake).send(message())

    assert (result.ok, result.status, result.attempts) == (True, 202, 2)
    assert time.monotonic() - started >= 0.95  # Retry-After, not the 0.02 s backoff
    assert [r.answered for r in fake.requests] == [429, 202]


def test_a_retry_after_beyond_the_budget_gives_up_at_once(fake: FakeSendGrid) -> None:
    fake.script(rate_limited(retry_after="120"))
    started = time.monotonic()

    result = sendgrid(fake, max_total_s=3.0).send(message())

    assert (result.ok, result.status, result.attempts) == (False, 429, 1)
    assert time.monotonic() - started < 1.0
    assert "gave up after 1 attempt" in (result.reason or "")


def test_persistent_500_is_retried_with_backoff_within_the_total_bound(fake: FakeSendGrid) -> None:
    fake.script(*[server_error()] * 100)
    started = time.monotonic()

    result = sendgrid(fake, max_total_s=0.6, backoff_base_s=0.05, backoff_max_s=0.2).send(message())

    elapsed = time.monotonic() - started
    assert (result.ok, result.status, result.maybe_delivered) == (False, 500, False)
    assert 3 <= result.attempts == len(fake.requests) < 20
    assert "HTTP 500: internal error" in (result.reason or "") and "gave up" in result.reason
    assert elapsed < 0.6 + 0.5


def test_400_is_final_and_not_retried(fake: FakeSendGrid) -> None:
    fake.script(bad_request(), accept())

    result = sendgrid(fake).send(message())

    assert (result.ok, result.status, result.attempts) == (False, 400, 1)
    assert "verified Sender Identity" in (result.reason or "")
    assert len(fake.requests) == 1


def test_a_wrong_key_is_a_final_401_and_the_key_is_not_in_the_reason(fake: FakeSendGrid) -> None:
    result = sendgrid(fake, api_key="SG.wrong-key").send(message())

    assert (result.ok, result.status, result.attempts) == (False, 401, 1)
    assert "wrong-key" not in repr(result)


def test_a_hung_server_is_bounded_by_the_timeout_and_not_retried(fake: FakeSendGrid) -> None:
    fake.script(hang())
    started = time.monotonic()

    result = sendgrid(fake, timeout_s=0.3, max_total_s=5.0).send(message())

    elapsed = time.monotonic() - started
    assert (result.ok, result.status, result.attempts) == (False, None, 1)
    assert result.maybe_delivered  # SendGrid may have taken it: a retry could duplicate it
    assert "timed out" in (result.reason or "")
    assert 0.25 <= elapsed < 1.5
    assert [r.answered for r in fake.requests] == [None]


def test_a_refused_connection_is_retried_until_the_bound() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = SendGridMailer(
        api_key=API_KEY,
        from_email=SENDER,
        api_host=f"http://127.0.0.1:{port}",
        timeout_s=0.5,
        max_total_s=0.5,
        backoff_base_s=0.05,
    )

    result = mailer.send(message())

    assert (result.ok, result.status, result.maybe_delivered) == (False, None, False)
    assert result.attempts >= 2 and "cannot connect" in (result.reason or "")


def test_the_api_key_stays_out_of_logs_reprs_and_results(
    fake: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(server_error(), bad_request(), hang())
    mailer = sendgrid(fake, timeout_s=0.3, max_total_s=1.0)
    with caplog.at_level(logging.DEBUG):
        results = [mailer.send(message()) for _ in range(3)]

    assert "PAYLOAD" not in caplog.text and "HEADERS" not in caplog.text
    assert "python_http_client" in caplog.text  # the client did log, at DEBUG
    for text in (caplog.text, repr(mailer), str(mailer), repr(results)):
        assert API_KEY not in text


def test_default_and_eu_hosts_are_the_real_ones() -> None:
    mailer = SendGridMailer(api_key=API_KEY, from_email=SENDER)

    assert mailer.api_host == "https://api.sendgrid.com"
    assert EU_SENDGRID_HOST == "https://api.eu.sendgrid.com"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    in_five = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)

    assert parse_retry_after("3") == 3.0
    assert 3.0 <= (parse_retry_after(in_five) or 0) <= 5.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def read_eml(path: Path) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_the_outbox_writes_a_standard_multipart_eml(tmp_path: Path) -> None:
    mailer = OutboxMailer(data_dir=str(tmp_path), from_email=SENDER)
    hostile = message(html=f"<p>code {HOSTILE.replace('<', '&lt;')}</p>", text=f"code {HOSTILE}")

    result = mailer.send(hostile)

    path = tmp_path / "outbox" / "acme-globex" / "welcome.eml"
    assert (result.ok, result.provider_id, result.attempts) == (True, str(path), 1)
    raw = path.read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # RFC 5322 line ends
    eml = read_eml(path)
    assert eml.get_content_type() == "multipart/alternative"
    assert (eml["To"], eml["From"]) == ("admin@globex.example.com", SENDER)
    assert eml["Subject"] == "Welcome aboard: acme of globex is live"
    assert eml["Message-ID"] and eml["Date"]
    text, html = (part.get_content() for part in eml.iter_parts())
    assert HOSTILE in text and "<script>" not in html
    # No temporary file left behind; the folder records whose it is.
    assert sorted(p.name for p in path.parent.iterdir()) == [".tenant-id", "welcome.eml"]


def test_the_outbox_replaces_an_email_atomically_and_refuses_unsafe_names(tmp_path: Path) -> None:
    mailer = OutboxMailer(data_dir=str(tmp_path))
    mailer.send(message(subject="first"))
    mailer.send(message(subject="second"))

    [path] = (tmp_path / "outbox" / "acme-globex").glob("*.eml")
    assert read_eml(path)["Subject"] == "second"
    refused = mailer.send(message(tenant_key="../escape"))
    assert not refused.ok and "safe file name" in (refused.reason or "")
    assert not (tmp_path / "escape").exists()
