"""The admin console's sign-in rules without a server: password hashing, invitations, sessions,
form tokens and the limit on attempts. Times are passed in."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from resources.admin_auth import (
    FAILURES_PER_CLIENT,
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    PASSWORD_ITERATIONS,
    Account,
    Attempt,
    AttemptLimiter,
    FormTokens,
    InvitationCheck,
    SessionStore,
    check_invitation,
    hash_password,
    new_token,
    password_problem,
    tokens_match,
    verify_password,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CODE = "inv-" + "x" * 40
FAST = 1_000  # iterations for tests that are not about the cost


def pending(**changes: object) -> Account:
    account = Account(
        email="admin@acme.example",
        status="pending_invitation",
        invitation_token=CODE,
        invitation_expires_at=NOW + timedelta(days=7),
        invitation_redeemed_at=None,
        password_hash=None,
    )
    return account._replace(**changes)


def test_a_hash_is_salted_iterated_and_never_the_password() -> None:
    first = hash_password("correct horse battery")
    second = hash_password("correct horse battery")

    scheme, iterations, salt, digest = first.split("$")
    assert (scheme, int(iterations)) == ("pbkdf2_sha256", PASSWORD_ITERATIONS)
    assert (len(bytes.fromhex(salt)), len(bytes.fromhex(digest))) == (16, 32)
    assert PASSWORD_ITERATIONS >= 600_000
    assert first != second, "each hash has its own salt"
    assert "correct horse battery" not in first
    assert verify_password("correct horse battery", first)
    assert verify_password("correct horse battery", second)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "plain-text-password",
        "md5$1$c2FsdA$ZGlnZXN0",
        "pbkdf2_sha256$0$c2FsdA$ZGlnZXN0",
        "pbkdf2_sha256$99999999999$c2FsdA$ZGlnZXN0",  # a stored count cannot cost unbounded work
        "pbkdf2_sha256$many$c2FsdA$ZGlnZXN0",
    ],
)
def test_a_missing_or_malformed_hash_verifies_nothing(stored: str | None) -> None:
    assert not verify_password("plain-text-password", stored)


def test_a_wrong_or_overlong_password_is_refused() -> None:
    stored = hash_password("a" * MAX_PASSWORD_CHARS, iterations=FAST)
    assert verify_password("a" * MAX_PASSWORD_CHARS, stored)
    assert not verify_password("a" * (MAX_PASSWORD_CHARS + 1), stored)
    assert not verify_password("b" * MAX_PASSWORD_CHARS, stored)
    assert not verify_password("", stored)


def test_the_stored_iteration_count_is_the_one_used() -> None:
    stored = hash_password("correct horse battery", iterations=FAST)
    assert stored.split("$")[1] == str(FAST)
    assert verify_password("correct horse battery", stored)


@pytest.mark.parametrize(
    ("password", "confirmation", "problem"),
    [
        ("short", "short", f"at least {MIN_PASSWORD_CHARS} characters"),
        ("x" * (MAX_PASSWORD_CHARS + 1), "x" * (MAX_PASSWORD_CHARS + 1), "at most"),
        ("correct horse battery", "correct horse batterY", "differ"),
    ],
)
def test_a_new_password_is_refused_with_the_reason(
    password: str, confirmation: str, problem: str
) -> None:
    refusal = password_problem(password, confirmation)
    assert refusal is not None and problem in refusal


def test_a_long_enough_confirmed_password_is_accepted() -> None:
    assert password_problem("correct horse battery", "correct horse battery") is None


@pytest.mark.parametrize(
    ("account", "code", "verdict"),
    [
        (pending(), CODE, InvitationCheck.VALID),
        (pending(), CODE + "x", InvitationCheck.WRONG),
        (pending(), "", InvitationCheck.WRONG),
        (None, CODE, InvitationCheck.WRONG),
        (pending(invitation_token=None), "", InvitationCheck.WRONG),
        (pending(invitation_redeemed_at=NOW), CODE, InvitationCheck.USED),
        (pending(password_hash="pbkdf2_sha256$1$a$b"), CODE, InvitationCheck.USED),
        (pending(invitation_expires_at=NOW), CODE, InvitationCheck.EXPIRED),
        (pending(invitation_expires_at=NOW - timedelta(seconds=1)), CODE, InvitationCheck.EXPIRED),
        (pending(invitation_expires_at=None), CODE, InvitationCheck.EXPIRED),
        # Only the right code learns that an invitation was used or has expired.
        (pending(invitation_redeemed_at=NOW), "guess", InvitationCheck.WRONG),
        (pending(invitation_expires_at=NOW - timedelta(days=1)), "guess", InvitationCheck.WRONG),
    ],
)
def test_an_invitation_is_judged_code_first(
    account: Account | None, code: str, verdict: InvitationCheck
) -> None:
    assert check_invitation(account, code, NOW) is verdict


def test_a_session_lives_until_idle_or_too_old_and_ends_when_asked() -> None:
    store = SessionStore(idle_s=60, lifetime_s=300)
    session_id = store.start("admin@acme.example", now=0)

    session = store.get(session_id, now=59)
    assert session is not None and session.email == "admin@acme.example"
    assert store.get(session_id, now=118) is not None  # each visit restarts the idle time
    assert store.get(session_id, now=178.5) is None  # idle for a minute: gone
    assert len(store) == 0

    kept_alive = store.start("admin@acme.example", now=1000)
    for now in range(1000, 1300, 50):
        assert store.get(kept_alive, now) is not None
    assert store.get(kept_alive, now=1300) is None  # never beyond its lifetime

    ended = store.start("admin@acme.example", now=2000)
    assert store.end(ended) and not store.end(ended)
    assert store.get(ended, now=2001) is None
    assert store.get(None, now=2001) is None and store.get("", now=2001) is None
    assert store.get(new_token(), now=2001) is None


def test_sessions_get_distinct_ids_and_csrf_tokens_and_the_oldest_goes_beyond_capacity() -> None:
    store = SessionStore(capacity=3)
    ids = [store.start("admin@acme.example", now=float(n)) for n in range(4)]

    assert len(set(ids)) == 4 and len(store) == 3
    assert store.get(ids[0], now=5) is None
    tokens = {store.get(i, now=5).csrf_token for i in ids[1:]}  # type: ignore[union-attr]
    assert len(tokens) == 3 and not tokens & set(ids)


def test_form_tokens_are_bound_to_the_browser_and_the_process() -> None:
    forms = FormTokens()
    binding = new_token()
    token = forms.token_for(binding)

    assert forms.valid(binding, token)
    assert not forms.valid(new_token(), token), "another browser's cookie"
    assert not forms.valid(binding, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not forms.valid(binding, None) and not forms.valid(None, token)
    assert not forms.valid(binding, "")
    assert not FormTokens().valid(binding, token), "a restarted workload has another key"


def test_tokens_match_only_exactly() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc") and not tokens_match(None, "abc")
    assert not tokens_match("", "abc")


def test_a_client_is_refused_after_its_failures_until_the_oldest_leaves_the_window() -> None:
    limiter = AttemptLimiter(per_client=3, overall=100, window_s=60)
    for second in range(3):
        assert isinstance(limiter.begin("10.0.0.1", now=second), Attempt)

    wait = limiter.begin("10.0.0.1", now=10)
    assert wait == pytest.approx(50)  # the first failure (at 0) leaves at 60
    assert isinstance(limiter.begin("10.0.0.2", now=10), Attempt), "others are not held back"
    assert isinstance(limiter.begin("10.0.0.1", now=60.5), Attempt)


def test_a_success_is_not_counted_as_a_failure() -> None:
    limiter = AttemptLimiter(per_client=2, overall=100, window_s=60)
    for second in range(5):
        attempt = limiter.begin("10.0.0.1", now=second)
        assert isinstance(attempt, Attempt)
        limiter.succeeded(attempt)
    assert isinstance(limiter.begin("10.0.0.1", now=6), Attempt)


def test_all_clients_together_meet_the_overall_limit() -> None:
    limiter = AttemptLimiter(per_client=5, overall=4, window_s=60)
    for n in range(4):
        assert isinstance(limiter.begin(f"fake-{n}", now=n), Attempt)
    assert limiter.begin("fake-99", now=5) == pytest.approx(55)


def test_concurrent_attempts_cannot_overrun_the_limit() -> None:
    """An attempt counts before its outcome is known: a burst in parallel gets no more tries."""
    limiter = AttemptLimiter()
    results: list[object] = []
    lock = threading.Lock()

    def attempt() -> None:
        outcome = limiter.begin("10.0.0.9", now=0)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, Attempt) for r in results) == FAILURES_PER_CLIENT
