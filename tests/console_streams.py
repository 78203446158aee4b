"""Helpers for tests of console sessions and event streams, through real HTTP: a console login
as a browser does it (the form's CSRF token, the cookie), and an event stream on a socket of its
own that the test reads only when it chooses to (a client that stops reading)."""

import re
import select
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from tenant_pipelines.domain.events import make_event
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.tokens import TokenGrant
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.registry.store import TenantRegistry

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
COOKIE = "tp_console"


def grant(registry: TenantRegistry, role: str, org: str | None = None, subject: str = "") -> str:
    grant = TokenGrant.parse({"subject": subject or f"{role}@{org}", "role": role, "org": org})
    token, _ = registry.tokens.create(grant)
    return token


def token_id(token: str) -> str:
    return token.removeprefix("tp_").split("_", 1)[0]


def seed_tenant(registry: TenantRegistry, slug: str, org: str) -> None:
    """An active tenant, as the registry records one."""
    request = TenantRequest.parse(
        {
            "slug": slug,
            "org": org,
            "plan": "team",
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "seed", "role": "platform-admin"},
        }
    )
    record, _ = registry.requests.submit(request)
    reserved = registry.tenants.reserve(registry.requests.get(record.request_id))
    registry.tenants.transition(reserved.tenant_id, TenantState.ACTIVE)


def write_event(instance: Any, slug: str, org: str, step: str, **details: object) -> None:
    """An event in the feed, written as the runs write theirs."""
    event = make_event(
        "tenant.provisioning.step_completed",
        tenant=slug,
        org=org,
        run_id="run-x",
        step=step,
        details=dict(details),
    )
    instance.report_runless_asset_event(to_observation(event))


def csrf_of(page: requests.Response) -> str:
    found = CSRF.search(page.text)
    assert found is not None, f"no CSRF token on {page.url}: {page.status_code}"
    return found.group(1)


def console_login(base: str, token: str, **headers: str) -> requests.Session:
    """A browser's session, logged in with `token`."""
    browser = requests.Session()
    browser.headers.update(headers)
    form = browser.get(f"{base}/console/login", timeout=30)
    answer = browser.post(
        f"{base}/console/login",
        data={"token": token, "csrf_token": csrf_of(form)},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/tenants"
    return browser


def console_logout(browser: requests.Session, base: str) -> requests.Response:
    page = browser.get(f"{base}/console/tenants", timeout=30)
    return browser.post(
        f"{base}/console/logout",
        data={"csrf_token": csrf_of(page)},
        allow_redirects=False,
        timeout=30,
    )


def tenants_page(base: str, cookie: str | None) -> requests.Response:
    """/console/tenants with exactly this cookie (a saved one, say), nothing else."""
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else {}
    return requests.get(
        f"{base}/console/tenants", headers=headers, allow_redirects=False, timeout=30
    )


class RawStream:
    """`GET <path>` with `Accept: text/event-stream` on a socket of its own."""

    def __init__(self, base: str, path: str, token: str, receive_buffer: int | None = None):
        where = urlsplit(base)
        self.sock = socket.socket()
        if receive_buffer is not None:  # before connecting: it bounds the TCP window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect((where.hostname or "127.0.0.1", where.port or 80))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {where.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.received = b""
        self.eof = False

    def status(self, timeout_s: float = 30) -> int:
        """The status of the answer, once its head has arrived."""
        deadline = time.monotonic() + timeout_s
        while b"\r\n\r\n" not in self.received:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"no answer within {timeout_s} s: {self.received[:200]!r}")
        return int(self.received.split(b" ", 2)[1])

    def read_for(self, seconds: float) -> bytes:
        """Whatever arrives within `seconds`, stopping early at the end of the stream."""
        deadline = time.monotonic() + seconds
        start = len(self.received)
        while not self.eof and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        return self.received[start:]

    def read_until(self, marker: bytes, within_s: float = 10) -> bool:
        """Read until `marker` has arrived (True), or the end or the deadline came first."""
        deadline = time.monotonic() + within_s
        while marker not in self.received and self._read(deadline - time.monotonic()):
            pass
        return marker in self.received

    def events(self) -> int:
        return self.received.count(b"\ndata: ")

    def _read(self, timeout_s: float) -> bool:
        if self.eof or timeout_s <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        self.eof = not data
        self.received += data
        return bool(data)

    def close(self) -> None:
        self.sock.close()
