"""Finding 10 of issue 18: a tenant's own admin page was open to anyone.

On a real `tenantctl up` with a provisioned tenant, `/admin` on the tenant's address (through the
edge) answered 200 with its user count to any caller. It must ask for its admin: no console
without a session, and the only way in is the invitation code the welcome email carries, once,
then the password the admin chose."""

import uuid
from email import policy
from email.parser import BytesParser

import pytest

from resources.gateway import local_ca_root
from tests.admin_client import PASSWORD, AdminClient
from tests.edge_client import EdgeHTTPS
from tests.stack_helpers import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "sec"
SLUG = "open"
KEY = f"{SLUG}-{ORG}"
ADMIN_EMAIL = "admin@open.example.com"
EMAIL_WAIT_S = 60


@pytest.fixture(scope="module", autouse=True)
def tenant(stack: Stack) -> None:
    """The tenant whose admin page is attacked, active."""
    stack.cli(
        *("request", "--slug", SLUG, "--org", ORG, "--plan", "free"),
        *("--admin-email", ADMIN_EMAIL, "--caller", "ops", "--role", "platform-admin"),
        *("--request-id", str(uuid.uuid4())),
    )
    status = stack.wait_for_state(SLUG, {"active", "failed"})
    assert status["state"] == "active", status


def invitation_code(stack: Stack) -> str:
    """The code as the console email's text part gives it (the line after "paste ... code:")."""
    path = stack.data_dir / "outbox" / KEY / "console.eml"
    wait_until(path.exists, EMAIL_WAIT_S, f"no console email at {path}", 0.2)
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    lines = [line.strip() for line in text.splitlines()]
    return next(lines[i + 2] for i, line in enumerate(lines) if "invitation code" in line)


def edge_client(stack: Stack) -> AdminClient:
    """A user of the tenant's console, over HTTPS through the edge."""
    host = f"{KEY}.localhost"
    return AdminClient(
        lambda: EdgeHTTPS(stack.https_port, host, local_ca_root(stack.data_dir)),
        f"{host}:{stack.https_port}",
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_admin_through_the_edge_without_a_session_shows_no_console(
    stack: Stack, method: str
) -> None:
    client = edge_client(stack)
    script = client.send(method, "/admin", accept="*/*")
    assert script.status == 401, f"/admin answered {script.status} to a caller without a session"
    assert b"user(s)" not in script.body and b"Admin console" not in script.body

    browser = client.send(method, "/admin", accept="text/html,application/xhtml+xml")
    assert (browser.status, browser.headers.get("location")) == (303, "/admin/sign-in")
    assert b"user(s)" not in browser.body


def test_only_the_emailed_code_once_then_the_password_opens_the_console(stack: Stack) -> None:
    code = invitation_code(stack)
    client = edge_client(stack)
    assert client.check_code(ADMIN_EMAIL, code[::-1]).status == 401
    assert client.redeem(ADMIN_EMAIL, code).status == 303
    console = client.send("GET", "/admin")
    assert console.status == 200 and f"Admin console: {KEY}".encode() in console.body

    stranger = edge_client(stack)
    assert stranger.redeem(ADMIN_EMAIL, code, "a password of my own").status == 409
    assert stranger.sign_in(ADMIN_EMAIL, "a password of my own").status == 401
    assert stranger.send("GET", "/admin", accept="*/*").status == 401
    assert edge_client(stack).sign_in(ADMIN_EMAIL, PASSWORD).status == 303
