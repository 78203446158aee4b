"""The routes under `/admin` of a tenant's workload: its admin console, behind a sign-in.

- `GET /admin`: the console for a signed-in admin. Without a session a browser (`Accept:
  text/html`) is sent to the sign-in page (303) and any other client gets 401 with one sentence in
  JSON; HEAD answers as GET does.
- `/admin/invitation` (first visit): the email address and the invitation code from the welcome
  email, typed or pasted, never in a URL; then `POST /admin/password` sets the password, which
  redeems the invitation (once, atomically, before it expires) and signs the admin in.
- `/admin/sign-in`: email and password give a session; `POST /admin/sign-out` ends it.

A session is a random id in an HttpOnly, SameSite=Strict cookie for this host and path `/admin`
(`Secure` when the edge says the request came over HTTPS), kept in the workload's memory
(`admin_auth.SessionStore`). Every POST carries a CSRF token (of the session, or of the form for the
pages before one) and a foreign `Origin` is refused. Code and password attempts are limited per
client and in all (`admin_auth.AttemptLimiter`). Nothing here logs; the workload logs the method,
the path without its query and the status only.
"""

import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from resources import admin_pages as pages
from resources.admin_accounts import Accounts, AccountsOutdated, AccountsUnavailable
from resources.admin_auth import (
    MIN_PASSWORD_CHARS,
    Attempt,
    AttemptLimiter,
    FormTokens,
    Invitation,
    Session,
    SessionStore,
    check_invitation,
    hash_password,
    new_token,
    password_problem,
    tokens_match,
    verify_password,
)

SESSION_COOKIE = "tadmin_session"
FORM_COOKIE = "tadmin_form"
CONSOLE = "/admin"
SIGN_IN = "/admin/sign-in"
MAX_FORM_FIELDS = 10
MAX_CLIENT_CHARS = 64
HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)
OUTDATED = (
    "Nobody can sign in yet: this tenant's identity store predates the admin sign-in."
    " The platform team upgrades it when the platform next starts."
)
UNAVAILABLE = "The tenant's identity store cannot be reached right now: try again in a minute."
FORM_EXPIRED = "This form has expired or did not come from this page: please try again."
WRONG_CODE = "The email address or the invitation code is wrong."
WRONG_PASSWORD = "The email address or the password is wrong."
USED = "This invitation has already been used: sign in with the password you chose."
TOO_MANY = "Too many failed attempts: try again in {} minute(s)."


class Request(NamedTuple):
    """One request as the workload read it: header names lower-case, the path without query."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    peer: str

    def cookie(self, name: str) -> str | None:
        for pair in self.headers.get("cookie", "").split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name and value:
                return value
        return None

    @property
    def client(self) -> str:
        """Whom attempts are counted for: the address the edge saw (the last X-Forwarded-For
        it appends), else the peer. A local process can fake it, which the overall limit meets."""
        forwarded = self.headers.get("x-forwarded-for", "").rsplit(",", 1)[-1].strip()
        return (forwarded or self.peer)[:MAX_CLIENT_CHARS]

    @property
    def https(self) -> bool:
        return self.headers.get("x-forwarded-proto", "").strip().lower() == "https"

    @property
    def wants_html(self) -> bool:
        return "text/html" in self.headers.get("accept", "")

    @property
    def same_origin(self) -> bool:
        """No Origin (then the CSRF token decides) or one naming this very host."""
        origin = self.headers.get("origin")
        if origin is None:
            return True
        return urlsplit(origin).netloc.lower() == self.headers.get("host", "").lower()

    def form(self) -> dict[str, str] | None:
        """The url-encoded form's fields (first value of each); None if it is not one."""
        if "application/x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return None
        try:
            fields = parse_qs(self.body.decode(), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:  # not UTF-8, or too many fields
            return None
        return {name: values[0] for name, values in fields.items()}


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _cookie(request: Request, name: str, value: str, max_age: int) -> tuple[str, str]:
    secure = "; Secure" if request.https else ""
    return (
        "Set-Cookie",
        f"{name}={value}; Path={CONSOLE}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
    )


def _see_other(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, HTML, b"", (("Location", location), *headers, *SECURITY_HEADERS))


def _json(status: int, body: dict[str, str], *headers: tuple[str, str]) -> Response:
    data = json.dumps(body).encode()
    return Response(status, "application/json", data, (*headers, *SECURITY_HEADERS))


class TenantAdmin:
    """The console and its sign-in for one tenant; shared by the workload's request threads."""

    def __init__(
        self,
        tenant_key: str,
        issuer: str,
        accounts: Accounts,
        users: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tenant_key = tenant_key
        self.issuer = issuer
        self.accounts = accounts
        self.users = users  # the console's user count line
        self.clock = clock
        self.wall_clock = wall_clock
        self.sessions = SessionStore()
        self.forms = FormTokens()
        self.limiter = AttemptLimiter()
        self.routes: dict[str, tuple[frozenset[str], Callable[[Request], Response]]] = {
            CONSOLE: (frozenset({"GET"}), self._console),
            SIGN_IN: (frozenset({"GET", "POST"}), self._sign_in),
            "/admin/invitation": (frozenset({"GET", "POST"}), self._invitation),
            "/admin/password": (frozenset({"POST"}), self._password),
            "/admin/sign-out": (frozenset({"POST"}), self._sign_out),
        }

    def handle(self, request: Request) -> Response:
        """Route, check the method and, for a POST, the origin; then the route's own checks."""
        route = self.routes.get(request.path)
        if route is None:
            return _json(404, {"error": "not found", "path": request.path})
        methods, action = route
        method = "GET" if request.method == "HEAD" else request.method
        if method not in methods:
            allowed = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
            message = f"{request.method} is not allowed on {request.path}"
            return _json(405, {"error": message}, ("Allow", allowed))
        if method == "POST" and not request.same_origin:
            return _json(403, {"error": "a form from another site is refused"})
        return action(request)

    # --- the console and sessions ---

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookie(SESSION_COOKIE), self.clock())

    def _console(self, request: Request) -> Response:
        session = self._session(request)
        if session is not None:
            page = pages.console_page(
                self.tenant_key, self.issuer, self.users(), session.email, session.csrf_token
            )
            return Response(200, HTML, page, SECURITY_HEADERS)
        if request.wants_html:
            return _see_other(SIGN_IN)
        message = f"sign in first: open {SIGN_IN} in a browser"
        return _json(401, {"error": message, "tenant": self.tenant_key})

    def _signed_in(self, request: Request, email: str) -> Response:
        """A new session (a new id: none chosen before sign-in survives it), then the console."""
        session_id = self.sessions.start(email, self.clock())
        lifetime = int(self.sessions.lifetime_s)
        return _see_other(
            CONSOLE,
            _cookie(request, SESSION_COOKIE, session_id, lifetime),
            _cookie(request, FORM_COOKIE, "", 0),
        )

    def _sign_out(self, request: Request) -> Response:
        session_id = request.cookie(SESSION_COOKIE)
        session = self._session(request)
        form = request.form() or {}
        if session is not None:
            if not tokens_match(form.get("csrf_token"), session.csrf_token):
                return _json(403, {"error": FORM_EXPIRED})
            self.sessions.end(session_id)
        return _see_other(SIGN_IN, _cookie(request, SESSION_COOKIE, "", 0))

    # --- the forms before a session ---

    def _sign_in(self, request: Request) -> Response:
        if request.method == "POST":
            return self._form_post(request, self._check_password, self._sign_in_page)
        if self._session(request) is not None:
            return _see_other(CONSOLE)
        return self._sign_in_page(request, 200)

    def _invitation(self, request: Request) -> Response:
        if request.method == "POST":
            return self._form_post(request, self._check_code, self._invitation_page)
        return self._invitation_page(request, 200)

    def _password(self, request: Request) -> Response:
        return self._form_post(request, self._set_password, self._invitation_page)

    def _form_post(
        self,
        request: Request,
        check: Callable[[Request, dict[str, str], Attempt], Response],
        again: Callable[..., Response],
    ) -> Response:
        """The checks every form before a session shares: its CSRF token, its fields, the limit
        on attempts and the identity store being there; `again` shows the form with the error."""
        form = request.form()
        if form is None:
            return again(request, 400, error="The form could not be read: please try again.")
        if not self.forms.valid(request.cookie(FORM_COOKIE), form.get("csrf_token")):
            return again(request, 403, email=form.get("email", ""), error=FORM_EXPIRED)
        attempt = self.limiter.begin(request.client, self.clock())
        if not isinstance(attempt, Attempt):
            seconds = max(1, math.ceil(attempt))
            response = again(request, 429, error=TOO_MANY.format(math.ceil(seconds / 60)))
            retry = ("Retry-After", str(seconds))
            return Response(response.status, HTML, response.body, (*response.headers, retry))
        try:
            return check(request, form, attempt)
        except AccountsOutdated:
            return again(request, 503, error=OUTDATED)
        except AccountsUnavailable:
            return again(request, 503, error=UNAVAILABLE)

    def _check_password(self, request: Request, form: dict[str, str], attempt: Attempt) -> Response:
        email, password = form.get("email", ""), form.get("password", "")
        account = self.accounts.find_admin(email) if email else None
        stored = account.password_hash if account is not None else None
        if verify_password(password, stored) and account is not None:
            self.limiter.succeeded(attempt)
            return self._signed_in(request, account.email)
        return self._sign_in_page(request, 401, email=email, error=WRONG_PASSWORD)

    def _invitation_refused(
        self, request: Request, form: dict[str, str], attempt: Attempt
    ) -> Response | None:
        """Why the form's email and code do not admit a redemption now, as the page to show."""
        email, code = form.get("email", ""), form.get("code", "").strip()
        account = self.accounts.find_admin(email) if email else None
        verdict = check_invitation(account, code, self.wall_clock())
        if verdict is Invitation.WRONG:
            return self._invitation_page(request, 401, email=email, error=WRONG_CODE)
        self.limiter.succeeded(attempt)  # the right code: no guess, whatever follows
        if verdict is Invitation.USED:
            return self._sign_in_page(request, 409, email=email, error=USED)
        if verdict is Invitation.EXPIRED:
            when = account.invitation_expires_at if account else None
            if when is None:  # a store from before invitations expired
                return self._invitation_page(request, 503, email=email, error=OUTDATED)
            expired = f"This invitation expired on {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
            error = f"{expired} Ask the platform team for a new invitation."
            return self._invitation_page(request, 410, email=email, error=error)
        return None

    def _check_code(self, request: Request, form: dict[str, str], attempt: Attempt) -> Response:
        refused = self._invitation_refused(request, form, attempt)
        if refused is not None:
            return refused
        return self._password_page(request, 200, form)

    def _set_password(self, request: Request, form: dict[str, str], attempt: Attempt) -> Response:
        refused = self._invitation_refused(request, form, attempt)
        if refused is not None:
            return refused
        password, confirmation = form.get("password", ""), form.get("confirm", "")
        problem = password_problem(password, confirmation)
        if problem is not None:
            return self._password_page(request, 400, form, error=problem)
        account = self.accounts.find_admin(form.get("email", ""))
        assert account is not None  # the invitation was just found valid for it
        if not self.accounts.redeem(account, hash_password(password), self.wall_clock()):
            return self._sign_in_page(request, 409, email=account.email, error=USED)
        return self._signed_in(request, account.email)

    # --- pages that carry a form token ---

    def _form_token(self, request: Request) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The CSRF token of this browser's forms, and the cookie to set if it has none yet."""
        binding = request.cookie(FORM_COOKIE)
        if binding is not None and len(binding) <= MAX_CLIENT_CHARS:
            return self.forms.token_for(binding), ()
        binding = new_token()
        lifetime = int(self.sessions.lifetime_s)
        return self.forms.token_for(binding), (_cookie(request, FORM_COOKIE, binding, lifetime),)

    def _html(self, request: Request, status: int, render: Callable[[str], bytes]) -> Response:
        token, cookies = self._form_token(request)
        return Response(status, HTML, render(token), (*cookies, *SECURITY_HEADERS))

    def _sign_in_page(
        self, request: Request, status: int, email: str = "", error: str | None = None
    ) -> Response:
        key = self.tenant_key
        return self._html(request, status, lambda t: pages.sign_in_page(key, t, email, error))

    def _invitation_page(
        self, request: Request, status: int, email: str = "", error: str | None = None
    ) -> Response:
        key = self.tenant_key
        return self._html(request, status, lambda t: pages.invitation_page(key, t, email, error))

    def _password_page(
        self, request: Request, status: int, form: dict[str, str], error: str | None = None
    ) -> Response:
        email, code = form.get("email", ""), form.get("code", "").strip()
        return self._html(
            request,
            status,
            lambda t: pages.password_page(
                self.tenant_key, t, email, code, MIN_PASSWORD_CHARS, error
            ),
        )
