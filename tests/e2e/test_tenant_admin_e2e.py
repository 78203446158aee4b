"""A tenant's first admin, from the welcome email to a signed-in admin console, in Chromium.

The whole stack as a user starts it provisions a tenant; the console email is read from the outbox
as the admin's mail client would; its link (the tenant's HTTPS address through the edge, the browser
trusting the platform's local CA) leads to the sign-in; the admin pastes the code, sets a password,
lands on the console, signs out, and signs in again with the password. Set
TENANT_CONSOLE_SCREENSHOTS=DIR to keep the screenshots."""

import os
import re
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.stack_helpers import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SLUG, ORG = "acme", "mailers"
KEY = f"{SLUG}-{ORG}"
ADMIN_EMAIL = "first.admin@acme.example.com"
PASSWORD = "a long passphrase for the console"
WAIT_MS = 30_000
EMAIL_WAIT_S = 60


class EmailLinks(HTMLParser):
    """The links of an HTML email and the text of its invitation-code paragraph."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.code = ""
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        self._in_code = found.get("id") == "invitation-code"

    def handle_data(self, data: str) -> None:
        if self._in_code:
            self.code += data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._in_code = False


def console_email(stack: Stack) -> EmailMessage:
    path = stack.data_dir / "outbox" / KEY / "console.eml"
    wait_until(path.exists, EMAIL_WAIT_S, f"no console email at {path}", 0.2)
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def shot(page: Page, name: str, tmp_path: Path) -> None:
    target = Path(os.environ.get("TENANT_CONSOLE_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=target / f"admin-{name}.png", full_page=True)


def test_the_first_admin_follows_the_email_to_a_signed_in_console(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    stack.cli(
        *("request", "--slug", SLUG, "--org", ORG, "--plan", "team"),
        *("--admin-email", ADMIN_EMAIL, "--caller", "ops", "--role", "platform-admin"),
        *("--request-id", str(uuid.uuid4())),
    )
    assert stack.wait_for_state(SLUG, {"active", "failed"})["state"] == "active"

    message = console_email(stack)
    assert message["To"] == ADMIN_EMAIL
    html_part = message.get_body(("html",))
    assert html_part is not None
    parsed = EmailLinks()
    parsed.feed(html_part.get_content())
    code = parsed.code
    assert len(code) >= 32
    console_links = {link for link in parsed.links if link.endswith("/admin")}
    address = f"https://{KEY}.localhost:{stack.https_port}"
    assert console_links == {f"{address}/admin"}
    assert all(code not in link and "?" not in link for link in parsed.links)
    text_part = message.get_body(("plain",))
    assert text_part is not None and "paste this invitation code" in text_part.get_content()

    # The link as the email gives it: HTTPS, a certificate the browser checks (no exception).
    context = browser.new_context()
    page = context.new_page()
    page.goto(console_links.pop())
    expect(page).to_have_url(re.compile(r"/admin/sign-in$"))
    expect(page.locator("h1")).to_have_text(f"Sign in to the admin console of {KEY}")
    shot(page, "sign-in", tmp_path)

    page.get_by_role("link", name="Redeem your invitation").click()
    expect(page).to_have_url(re.compile(r"/admin/invitation$"))
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#code", code)
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("h1")).to_have_text(f"Choose your password for {KEY}")
    assert code not in page.url
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    shot(page, "password", tmp_path)
    page.get_by_role("button", name="Set password and sign in").click()

    expect(page).to_have_url(re.compile(r"/admin$"), timeout=WAIT_MS)
    expect(page.locator("h1")).to_have_text(f"Admin console: {KEY}")
    expect(page.locator("#signed-in-as")).to_have_text(f"Signed in as {ADMIN_EMAIL}")
    expect(page.locator("#users")).to_have_text("1 user(s)")
    cookie = next(c for c in context.cookies() if c["name"] == "tadmin_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert cookie["secure"]  # over HTTPS, the session cookie is sent over HTTPS only
    assert cookie["domain"] == f"{KEY}.localhost"
    shot(page, "console", tmp_path)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/admin/sign-in$"))
    assert not [c for c in context.cookies() if c["name"] == "tadmin_session"]
    page.goto(f"{address}/admin")
    expect(page).to_have_url(re.compile(r"/admin/sign-in$"))

    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", PASSWORD + " but wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#error")).to_have_text("The email address or the password is wrong.")
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin$"), timeout=WAIT_MS)
    expect(page.locator("h1")).to_have_text(f"Admin console: {KEY}")

    # The code is spent: a second redemption is refused.
    again = browser.new_context()
    other = again.new_page()
    other.goto(f"{address}/admin/invitation")
    other.fill("#email", ADMIN_EMAIL)
    other.fill("#code", code)
    other.get_by_role("button", name="Continue").click()
    expect(other.locator("#error")).to_have_text(
        "This invitation has already been used: sign in with the password you chose."
    )
    again.close()
    context.close()
