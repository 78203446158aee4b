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

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from resources import admin_pages as pages
from resources.admin_accounts import Accounts, AccountsOutdated, AccountsUnavailable
from resources.admin_auth import (
    MIN_PASSWORD_CHARS,
    Account,
    Attempt,
    AttemptLimiter,
    FormTokens,
    InvitationCheck,
    Session,
    SessionStore,
    check_invitation,
    hash_password,
    new_token,
    password_problem,
    tokens_match,
    verify_password,
)
from resources.admin_http import (
    CONSOLE,
    HTML,
    MAX_CLIENT_CHARS,
    SECURITY_HEADERS,
    Request,
    Response,
    json_answer,
    see_other,
    set_cookie,
)

SESSION_COOKIE = "tadmin_session"
FORM_COOKIE = "tadmin_form"
SIGN_IN = "/admin/sign-in"
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
            return json_answer(404, {"error": "not found", "path": request.path})
        methods, action = route
        method = "GET" if request.method == "HEAD" else request.method
        if method not in methods:
            allowed = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
            message = f"{request.method} is not allowed on {request.path}"
            return json_answer(405, {"error": message}, ("Allow", allowed))
        if method == "POST" and not request.same_origin:
            return json_answer(403, {"error": "a form from another site is refused"})
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
            return see_other(SIGN_IN)
        message = f"sign in first: open {SIGN_IN} in a browser"
        return json_answer(401, {"error": message, "tenant": self.tenant_key})

    def _signed_in(self, request: Request, email: str) -> Response:
        """A new session (a new id: none chosen before sign-in survives it), then the console."""
        session_id = self.sessions.start(email, self.clock())
        lifetime = int(self.sessions.lifetime_s)
        return see_other(
            CONSOLE,
            set_cookie(request, SESSION_COOKIE, session_id, lifetime),
            set_cookie(request, FORM_COOKIE, "", 0),
        )

    def _sign_out(self, request: Request) -> Response:
        session_id = request.cookie(SESSION_COOKIE)
        session = self._session(request)
        form = request.form() or {}
        if session is not None:
            if not tokens_match(form.get("csrf_token"), session.csrf_token):
                return json_answer(403, {"error": FORM_EXPIRED})
            self.sessions.end(session_id)
        return see_other(SIGN_IN, set_cookie(request, SESSION_COOKIE, "", 0))

    # --- the forms before a session ---

    def _sign_in(self, request: Request) -> Response:
        if request.method == "POST":
            return self._form_post(request, self._check_password, self._sign_in_page)
        if self._session(request) is not None:
            return see_other(CONSOLE)
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
            return response._replace(headers=(*response.headers, ("Retry-After", str(seconds))))
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

    def _valid_invitation(
        self, request: Request, form: dict[str, str], attempt: Attempt
    ) -> Account | Response:
        """The admin whose invitation the form's email and code redeem now, or the page saying
        why they do not."""
        email, code = form.get("email", ""), form.get("code", "").strip()
        account = self.accounts.find_admin(email) if email else None
        verdict = check_invitation(account, code, self.wall_clock())
        if account is None or verdict is InvitationCheck.WRONG:
            return self._invitation_page(request, 401, email=email, error=WRONG_CODE)
        self.limiter.succeeded(attempt)  # the right code: no guess, whatever follows
        if verdict is InvitationCheck.USED:
            return self._sign_in_page(request, 409, email=email, error=USED)
        if verdict is InvitationCheck.EXPIRED:
            when = account.invitation_expires_at
            if when is None:  # a store from before invitations expired
                return self._invitation_page(request, 503, email=email, error=OUTDATED)
            expired = f"This invitation expired on {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
            error = f"{expired} Ask the platform team for a new invitation."
            return self._invitation_page(request, 410, email=email, error=error)
        return account

    def _check_code(self, request: Request, form: dict[str, str], attempt: Attempt) -> Response:
        found = self._valid_invitation(request, form, attempt)
        if isinstance(found, Response):
            return found
        return self._password_page(request, 200, form)

    def _set_password(self, request: Request, form: dict[str, str], attempt: Attempt) -> Response:
        """Redeem the invitation with the new password; exactly one of concurrent tries wins."""
        found = self._valid_invitation(request, form, attempt)
        if isinstance(found, Response):
            return found
        password, confirmation = form.get("password", ""), form.get("confirm", "")
        problem = password_problem(password, confirmation)
        if problem is not None:
            return self._password_page(request, 400, form, error=problem)
        if not self.accounts.redeem(found, hash_password(password), self.wall_clock()):
            return self._sign_in_page(request, 409, email=found.email, error=USED)
        return self._signed_in(request, found.email)

    # --- pages that carry a form token ---

    def _form_token(self, request: Request) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The CSRF token of this browser's forms, and the cookie to set if it has none yet."""
        binding = request.cookie(FORM_COOKIE)
        if binding is not None and len(binding) <= MAX_CLIENT_CHARS:
            return self.forms.token_for(binding), ()
        binding = new_token()
        lifetime = int(self.sessions.lifetime_s)
        return self.forms.token_for(binding), (set_cookie(request, FORM_COOKIE, binding, lifetime),)

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
