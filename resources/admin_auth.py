"""Sign-in rules of a tenant's admin console: passwords, invitations, sessions, form tokens and
the bound on guessing.

Pure logic, standard library only, no I/O: the tenant's workload imports it, and the unit tests
run it without a server. A tenant costs a few megabytes, so only modules the workload loads anyway
plus `hashlib`: no `dataclasses` (its `inspect` import alone costs 1.4 MB a tenant), `secrets` or
`base64` (tokens are hex). Every time is passed in: wall-clock `datetime`s for what is stored
(invitation expiry), `time.monotonic()` seconds for what lives in memory (sessions, attempts).
"""

import hashlib
import hmac
import os
import threading
from collections import deque
from datetime import datetime
from enum import Enum
from typing import NamedTuple

# PBKDF2-HMAC-SHA256 rather than scrypt: scrypt's memory hardness is its point, and at OWASP's
# parameters it takes 16-64 MiB per hash, which a workload capped at 64 MB (free plan) cannot spare
# for concurrent sign-ins. 600,000 iterations is OWASP's 2023 figure (about 0.14 s here); the count
# is stored with each hash, so raising it later leaves older hashes verifiable.
PASSWORD_SCHEME = "pbkdf2_sha256"
PASSWORD_ITERATIONS = 600_000
MAX_STORED_ITERATIONS = 10_000_000  # a stored hash never makes one check cost more than this
SALT_BYTES = 16
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # bounds what one attempt hands the KDF
TOKEN_BYTES = 32
# Verified when there is no hash (unknown email, password not set yet), so a failed sign-in
# costs the same time whether or not the account exists.
_DUMMY_SALT = b"tenant-admin-none"

SESSION_IDLE_S = 30 * 60
SESSION_LIFETIME_S = 8 * 3600
MAX_SESSIONS = 64  # one admin per tenant today: the oldest session goes first beyond this

FAILURES_PER_CLIENT = 5
FAILURES_OVERALL = 100  # across clients: a client that fakes its address still meets this
FAILURE_WINDOW_S = 5 * 60


def new_token() -> str:
    """256 random bits in hex: session ids, CSRF tokens, form bindings."""
    return os.urandom(TOKEN_BYTES).hex()


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = PASSWORD_ITERATIONS
) -> str:
    """`pbkdf2_sha256$<iterations>$<salt>$<digest>`, with a fresh random salt per call."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join((PASSWORD_SCHEME, str(iterations), salt.hex(), digest.hex()))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches the stored hash; constant-time, and as slow without a hash or
    with a password too long to have been set (only its first characters are derived)."""
    candidate = password[:MAX_PASSWORD_CHARS].encode()
    parsed = _parse_hash(stored)
    if parsed is None:
        hashlib.pbkdf2_hmac("sha256", candidate, _DUMMY_SALT, PASSWORD_ITERATIONS)
        return False
    iterations, salt, expected = parsed
    actual = hashlib.pbkdf2_hmac("sha256", candidate, salt, iterations)
    return hmac.compare_digest(actual, expected) and len(password) <= MAX_PASSWORD_CHARS


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a token a client sent with the one expected."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _parse_hash(stored: str | None) -> tuple[int, bytes, bytes] | None:
    try:
        scheme, iterations, salt, digest = (stored or "").split("$")
        count = int(iterations)
        if scheme != PASSWORD_SCHEME or not 0 < count <= MAX_STORED_ITERATIONS:
            return None
        return count, bytes.fromhex(salt), bytes.fromhex(digest)
    except ValueError:
        return None


def password_problem(password: str, confirmation: str) -> str | None:
    """Why a new password is refused (one sentence), or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"Choose a password of at least {MIN_PASSWORD_CHARS} characters."
    if len(password) > MAX_PASSWORD_CHARS:
        return f"Choose a password of at most {MAX_PASSWORD_CHARS} characters."
    if not hmac.compare_digest(password.encode(), confirmation.encode()):
        return "The two passwords differ: type the same password twice."
    return None


class Account(NamedTuple):
    """The tenant's admin as its identity store holds it."""

    email: str
    status: str
    invitation_token: str | None
    invitation_expires_at: datetime | None  # None: a store from before invitations expired
    invitation_redeemed_at: datetime | None
    password_hash: str | None


class InvitationCheck(Enum):
    """What an invitation code is worth, checked in this order: only someone holding the right
    code learns that it was used or has expired."""

    VALID = "valid"
    WRONG = "wrong"
    USED = "used"
    EXPIRED = "expired"


def check_invitation(account: Account | None, code: str, now: datetime) -> InvitationCheck:
    """Judge a code typed for an account (None: no admin has the email typed)."""
    expected = (account.invitation_token if account else None) or new_token()
    if account is None or not hmac.compare_digest(code.encode(), expected.encode()):
        return InvitationCheck.WRONG
    if account.invitation_redeemed_at is not None or account.password_hash is not None:
        return InvitationCheck.USED
    expires = account.invitation_expires_at
    if expires is None or now >= expires:
        return InvitationCheck.EXPIRED
    return InvitationCheck.VALID


def _digest(token: str) -> bytes:
    """Sessions are held by the digest of their id: a lookup compares no secret byte by byte."""
    return hashlib.sha256(token.encode()).digest()


class Session:
    """A signed-in admin; `csrf_token` goes into the forms of the session's pages."""

    __slots__ = ("csrf_token", "email", "last_seen", "started")

    def __init__(self, email: str, csrf_token: str, started: float) -> None:
        self.email = email
        self.csrf_token = csrf_token
        self.started = started
        self.last_seen = started


class SessionStore:
    """Signed-in admins, in the workload's memory: a restarted workload asks to sign in again,
    and ending a session is forgetting it. Thread-safe (one thread per request)."""

    def __init__(
        self,
        idle_s: float = SESSION_IDLE_S,
        lifetime_s: float = SESSION_LIFETIME_S,
        capacity: int = MAX_SESSIONS,
    ) -> None:
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self.capacity = capacity
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def start(self, email: str, now: float) -> str:
        """A new session for `email`; its id is returned here only (it goes into the cookie)."""
        session_id = new_token()
        with self._lock:
            while len(self._sessions) >= self.capacity:
                oldest = min(self._sessions, key=lambda key: self._sessions[key].started)
                del self._sessions[oldest]
            self._sessions[_digest(session_id)] = Session(email, new_token(), now)
        return session_id

    def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session of this id (its idle time restarts), or None; expired ones go."""
        if not session_id:
            return None
        key = _digest(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.last_seen >= self.idle_s or now - session.started >= self.lifetime_s:
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def end(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        with self._lock:
            return self._sessions.pop(_digest(session_id), None) is not None

    def __len__(self) -> int:
        return len(self._sessions)


class FormTokens:
    """CSRF tokens for the forms shown before a session exists (sign-in, invitation).

    The browser holds a random binding in a cookie; the form carries HMAC(key, binding). Nothing is
    stored per visitor, so unauthenticated clients cannot fill the workload's memory; the key is
    made at start, so a restarted workload asks for the form again.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(TOKEN_BYTES)

    def token_for(self, binding: str) -> str:
        return hmac.new(self._key, f"form:{binding}".encode(), hashlib.sha256).hexdigest()

    def valid(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token:
            return False
        return hmac.compare_digest(self.token_for(binding).encode(), token.encode())


class Attempt(NamedTuple):
    client: str
    at: float


class AttemptLimiter:
    """Bounds guessing of codes and passwords: at most `per_client` failures per client and
    `overall` failures in all within `window_s`; beyond either, attempts are refused until the
    oldest failure leaves the window.

    An attempt counts as a failure from the moment it begins until it is reported a success, so
    concurrent attempts cannot overrun the limit, and the work an unauthenticated client can cause
    (one key derivation per attempt) is bounded.
    """

    def __init__(
        self,
        per_client: int = FAILURES_PER_CLIENT,
        overall: int = FAILURES_OVERALL,
        window_s: float = FAILURE_WINDOW_S,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window_s = window_s
        self._clients: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def begin(self, client: str, now: float) -> Attempt | float:
        """The attempt, counted; or how many seconds until one is allowed again."""
        with self._lock:
            self._forget_before(now - self.window_s)
            mine = self._clients.get(client, deque())
            oldest = [
                queue[0]
                for queue, limit in ((mine, self.per_client), (self._all, self.overall))
                if len(queue) >= limit
            ]
            if oldest:
                return max(oldest) + self.window_s - now
            mine.append(now)
            self._clients[client] = mine
            self._all.append(now)
            return Attempt(client, now)

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt was right: it is not a failure after all."""
        with self._lock:
            for queue in (self._clients.get(attempt.client), self._all):
                if queue is not None and attempt.at in queue:
                    queue.remove(attempt.at)

    def _forget_before(self, cutoff: float) -> None:
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for client in list(self._clients):
            queue = self._clients[client]
            while queue and queue[0] <= cutoff:
                queue.popleft()
            if not queue:
                del self._clients[client]
