"""The admin console's sign-in flow, request by request, without a server: the routes of
`resources.tenant_admin` over an in-memory identity store (a typed fake of the two real ones,
which tests/integration/test_tenant_admin_workload.py drives through a real workload)."""

import re
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from resources.admin_accounts import AccountsOutdated
from resources.admin_auth import Account
from resources.admin_http import Request, Response
from resources.tenant_admin import TenantAdmin

pytestmark = pytest.mark.unit

EMAIL = "admin@acme.example"
CODE = "invitation-code-" + "k" * 27
PASSWORD = "correct horse battery staple"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOST = "acme-corp.localhost:8080"


class MemoryAccounts:
    """One pending admin; `redeem` is atomic under a lock, as the real stores' UPDATE is."""

    def __init__(self) -> None:
        self.account = Account(
            EMAIL, "pending_invitation", CODE, NOW + timedelta(days=7), None, None
        )
        self.outdated = False
        self._lock = threading.Lock()

    def find_admin(self, email: str) -> Account | None:
        if self.outdated:
            raise AccountsOutdated("the identity store predates sign-in")
        return self.account if email.lower() == self.account.email.lower() else None

    def redeem(self, account: Account, password_hash: str, now: datetime) -> bool:
        with self._lock:
            if self.account.invitation_redeemed_at is not None:
                return False
            self.account = self.account._replace(
                status="active",
                password_hash=password_hash,
                invitation_redeemed_at=now,
            )
            return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Browser:
    """Keeps the cookies the console sets and reads the CSRF token of the last page."""

    def __init__(self, admin: TenantAdmin, client: str = "203.0.113.7") -> None:
        self.admin = admin
        self.client = client
        self.cookies: dict[str, str] = {}
        self.csrf = ""
        self.set_cookies: list[str] = []

    def send(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        accept: str = "text/html",
        **headers: str,
    ) -> Response:
        sent = {"host": HOST, "accept": accept, "x-forwarded-for": self.client, **headers}
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = b""
        if form is not None:
            sent["content-type"] = "application/x-www-form-urlencoded"
            body = urlencode(form).encode()
        response = self.admin.handle(Request(method, path, sent, body, "127.0.0.1"))
        self.set_cookies = [v for k, v in response.headers if k == "Set-Cookie"]
        for cookie in self.set_cookies:
            name, _, value = cookie.split(";")[0].partition("=")
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = re.search(rb'name="csrf_token" value="([^"]+)"', response.body)
        if found:
            self.csrf = found.group(1).decode()
        return response

    def post(self, path: str, **fields: str) -> Response:
        return self.send("POST", path, {"csrf_token": self.csrf, **fields})

    def redeem(self, password: str = PASSWORD) -> Response:
        self.send("GET", "/admin/invitation")
        self.post("/admin/invitation", email=EMAIL, code=CODE)
        return self.post(
            "/admin/password", email=EMAIL, code=CODE, password=password, confirm=password
        )


@pytest.fixture
def accounts() -> MemoryAccounts:
    return MemoryAccounts()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def admin(accounts: MemoryAccounts, clock: Clock) -> TenantAdmin:
    return TenantAdmin(
        "acme-corp",
        "https://acme-corp.localhost",
        accounts,
        lambda: "1 user(s)",
        clock,
        lambda: NOW,
    )


def header(response: Response, name: str) -> str | None:
    return next((value for key, value in response.headers if key == name), None)


def error_of(response: Response) -> str:
    found = re.search(rb'<p id="error" role="alert">([^<]*)</p>', response.body)
    return found.group(1).decode() if found else ""


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_without_a_session_a_browser_goes_to_the_sign_in_and_a_script_gets_401(
    admin: TenantAdmin, method: str
) -> None:
    browser = Browser(admin)
    redirected = browser.send(method, "/admin", accept="text/html,application/xhtml+xml")
    assert (redirected.status, header(redirected, "Location")) == (303, "/admin/sign-in")

    refused = browser.send(method, "/admin", accept="*/*")
    assert refused.status == 401 and refused.content_type == "application/json"
    assert b"sign in first" in refused.body and b"user(s)" not in refused.body


def test_the_first_visit_redeems_the_invitation_and_lands_on_the_console(
    admin: TenantAdmin,
) -> None:
    browser = Browser(admin)
    page = browser.send("GET", "/admin/invitation")
    assert page.status == 200 and b'name="code"' in page.body
    assert any(c.startswith("tadmin_form=") for c in browser.set_cookies)

    checked = browser.post("/admin/invitation", email=EMAIL.upper(), code=f"  {CODE}\n")
    assert checked.status == 200 and b"Choose your password" in checked.body

    done = browser.post(
        "/admin/password", email=EMAIL, code=CODE, password=PASSWORD, confirm=PASSWORD
    )
    assert (done.status, header(done, "Location")) == (303, "/admin")
    console = browser.send("GET", "/admin")
    assert console.status == 200
    assert b"Admin console: acme-corp" in console.body and b"1 user(s)" in console.body
    assert f"Signed in as {EMAIL}".encode() in console.body


def test_the_cookies_are_http_only_strict_and_scoped_to_the_console(admin: TenantAdmin) -> None:
    browser = Browser(admin)
    browser.redeem()
    [session] = [c for c in browser.set_cookies if c.startswith("tadmin_session=")]
    attributes = {part.strip() for part in session.split(";")[1:]}
    assert {"Path=/admin", "HttpOnly", "SameSite=Strict"} <= attributes
    assert "Secure" not in attributes and not any(a.startswith("Domain") for a in attributes)

    over_https = Browser(admin)
    over_https.send("GET", "/admin/sign-in", **{"x-forwarded-proto": "https"})
    assert all(c.endswith("; Secure") for c in over_https.set_cookies) and over_https.set_cookies


def test_every_page_forbids_framing_sniffing_caching_and_scripts(admin: TenantAdmin) -> None:
    for path in ("/admin", "/admin/sign-in", "/admin/invitation"):
        response = Browser(admin).send("GET", path)
        assert header(response, "X-Frame-Options") == "DENY"
        assert header(response, "X-Content-Type-Options") == "nosniff"
        assert header(response, "Cache-Control") == "no-store"
        policy = header(response, "Content-Security-Policy") or ""
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert b"<script" not in response.body


def test_a_wrong_code_is_refused_and_the_right_one_works_once(
    admin: TenantAdmin, accounts: MemoryAccounts
) -> None:
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    wrong = browser.post("/admin/invitation", email=EMAIL, code=CODE[:-1])
    assert wrong.status == 401 and "invitation code is wrong" in error_of(wrong)
    stranger = browser.post("/admin/invitation", email="mallory@evil.example", code=CODE)
    assert stranger.status == 401 and error_of(stranger) == error_of(wrong)

    assert browser.redeem().status == 303
    again = Browser(admin)
    again.send("GET", "/admin/invitation")
    used = again.post("/admin/invitation", email=EMAIL, code=CODE)
    assert used.status == 409 and "already been used" in error_of(used)
    replayed = again.post(
        "/admin/password", email=EMAIL, code=CODE, password="x" * 20, confirm="x" * 20
    )
    assert replayed.status == 409
    assert Browser(admin).send("GET", "/admin", accept="*/*").status == 401
    assert accounts.account.status == "active"


def test_two_redemptions_at_once_let_exactly_one_in(admin: TenantAdmin) -> None:
    browsers = [Browser(admin, client=f"198.51.100.{n}") for n in range(4)]
    for browser in browsers:
        browser.send("GET", "/admin/invitation")
        assert browser.post("/admin/invitation", email=EMAIL, code=CODE).status == 200
    outcomes: list[int] = []

    def finish(browser: Browser) -> None:
        done = browser.post(
            "/admin/password", email=EMAIL, code=CODE, password=PASSWORD, confirm=PASSWORD
        )
        outcomes.append(done.status)

    threads = [threading.Thread(target=finish, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [303, 409, 409, 409]


def test_an_expired_invitation_is_refused_with_its_date(
    admin: TenantAdmin, accounts: MemoryAccounts
) -> None:
    accounts.account = accounts.account._replace(invitation_expires_at=NOW - timedelta(hours=1))
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    expired = browser.post("/admin/invitation", email=EMAIL, code=CODE)
    assert expired.status == 410
    assert error_of(expired) == (
        "This invitation expired on 2026-12-03 11:00 UTC."
        " Ask the platform team for a new invitation."
    )
    late = browser.post(
        "/admin/password", email=EMAIL, code=CODE, password=PASSWORD, confirm=PASSWORD
    )
    assert late.status == 410 and accounts.account.password_hash is None


def test_a_store_from_before_sign_in_lets_nobody_in(
    admin: TenantAdmin, accounts: MemoryAccounts
) -> None:
    accounts.outdated = True
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    refused = browser.post("/admin/invitation", email=EMAIL, code=CODE)
    assert refused.status == 503 and "predates the admin sign-in" in error_of(refused)
    browser.send("GET", "/admin/sign-in")
    assert browser.post("/admin/sign-in", email=EMAIL, password=PASSWORD).status == 503


@pytest.mark.parametrize(
    ("password", "confirm", "reason"),
    [("short", "short", "at least 12"), (PASSWORD, PASSWORD + "!", "differ")],
)
def test_a_weak_or_mistyped_password_keeps_the_invitation(
    admin: TenantAdmin, accounts: MemoryAccounts, password: str, confirm: str, reason: str
) -> None:
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    browser.post("/admin/invitation", email=EMAIL, code=CODE)
    refused = browser.post(
        "/admin/password", email=EMAIL, code=CODE, password=password, confirm=confirm
    )
    assert refused.status == 400 and reason in error_of(refused)
    assert b'name="code"' in refused.body, "the form keeps the code for the next try"
    assert accounts.account.invitation_redeemed_at is None
    assert browser.redeem().status == 303


def test_sign_in_with_the_password_and_not_with_another(admin: TenantAdmin) -> None:
    Browser(admin).redeem()
    browser = Browser(admin, client="198.51.100.20")
    browser.send("GET", "/admin/sign-in")
    wrong = browser.post("/admin/sign-in", email=EMAIL, password=PASSWORD + "x")
    assert wrong.status == 401 and "password is wrong" in error_of(wrong)
    assert not any(c.startswith("tadmin_session=") for c in browser.set_cookies)
    unknown = browser.post("/admin/sign-in", email="nobody@acme.example", password=PASSWORD)
    assert error_of(unknown) == error_of(wrong)

    right = browser.post("/admin/sign-in", email=EMAIL, password=PASSWORD)
    assert (right.status, header(right, "Location")) == (303, "/admin")
    assert browser.send("GET", "/admin").status == 200
    assert header(browser.send("GET", "/admin/sign-in"), "Location") == "/admin"


def test_no_one_signs_in_before_the_invitation_is_redeemed(admin: TenantAdmin) -> None:
    browser = Browser(admin)
    browser.send("GET", "/admin/sign-in")
    for password in ("", CODE, PASSWORD):
        assert browser.post("/admin/sign-in", email=EMAIL, password=password).status == 401


def test_posts_without_the_forms_csrf_token_change_nothing(
    admin: TenantAdmin, accounts: MemoryAccounts
) -> None:
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    fields = {"email": EMAIL, "code": CODE, "password": PASSWORD, "confirm": PASSWORD}
    for token in (None, "", "forged"):
        form = fields if token is None else {**fields, "csrf_token": token}
        refused = browser.send("POST", "/admin/password", form)
        assert refused.status == 403 and "expired or did not come from this page" in error_of(
            refused
        )
    cookieless = Browser(admin)
    cookieless.csrf = browser.csrf  # the token without the cookie it is bound to
    assert cookieless.post("/admin/password", **fields).status == 403
    assert accounts.account.invitation_redeemed_at is None


def test_a_form_from_another_origin_is_refused(admin: TenantAdmin) -> None:
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    fields = {"csrf_token": browser.csrf, "email": EMAIL, "code": CODE}
    refused = browser.send("POST", "/admin/invitation", fields, origin="http://evil.example")
    assert refused.status == 403
    same = browser.send("POST", "/admin/invitation", fields, origin=f"http://{HOST}")
    assert same.status == 200


def test_sign_out_needs_the_sessions_token_and_ends_it_on_the_server(admin: TenantAdmin) -> None:
    browser = Browser(admin)
    browser.redeem()
    browser.send("GET", "/admin")
    old_cookie = dict(browser.cookies)

    refused = browser.send("POST", "/admin/sign-out", {"csrf_token": "forged"})
    assert refused.status == 403 and browser.send("GET", "/admin").status == 200

    out = browser.post("/admin/sign-out")
    assert (out.status, header(out, "Location")) == (303, "/admin/sign-in")
    assert "tadmin_session" not in browser.cookies
    browser.cookies = old_cookie  # the cookie saved before signing out
    assert header(browser.send("GET", "/admin"), "Location") == "/admin/sign-in"
    assert len(admin.sessions) == 0


def test_an_idle_session_ends(admin: TenantAdmin, clock: Clock) -> None:
    browser = Browser(admin)
    browser.redeem()
    clock.now += admin.sessions.idle_s + 1
    assert browser.send("GET", "/admin", accept="*/*").status == 401


def test_failed_attempts_are_limited_per_client_even_for_the_right_code(admin: TenantAdmin) -> None:
    browser = Browser(admin)
    browser.send("GET", "/admin/invitation")
    for _ in range(5):
        assert browser.post("/admin/invitation", email=EMAIL, code="guess").status == 401
    limited = browser.post("/admin/invitation", email=EMAIL, code=CODE)
    assert limited.status == 429 and "Too many failed attempts" in error_of(limited)
    assert 0 < int(header(limited, "Retry-After") or 0) <= 300
    browser.send("GET", "/admin/sign-in")
    assert browser.post("/admin/sign-in", email=EMAIL, password=PASSWORD).status == 429

    other = Browser(admin, client="198.51.100.30")
    assert other.redeem().status == 303, "another client is not held back"


def test_unknown_paths_and_methods_get_a_clear_answer(admin: TenantAdmin) -> None:
    browser = Browser(admin)
    assert browser.send("GET", "/admin/nope").status == 404
    wrong = browser.send("DELETE", "/admin")
    assert wrong.status == 405 and header(wrong, "Allow") == "GET, HEAD"
    assert browser.send("GET", "/admin/sign-out").status == 405
    unreadable = admin.handle(
        Request("POST", "/admin/sign-in", {"content-type": "text/plain"}, b"x", "127.0.0.1")
    )
    assert unreadable.status == 400
