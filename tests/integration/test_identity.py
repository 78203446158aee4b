"""Local identity stores on real SQLite files: the first admin is seeded once, with one token."""

import sqlite3
from pathlib import Path

import pytest

from resources.identity import LocalSQLiteIdentityStore
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.mail import Invitation
from tenant_pipelines.domain.tenant import TenantSpec

pytestmark = pytest.mark.integration


def tenant(slug: str = "acme", org: str = "corp") -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org=org,
        plan="free",
        admin_email=f"admin@{org}.example",
    )


@pytest.fixture
def identity(tmp_path: Path) -> LocalSQLiteIdentityStore:
    return LocalSQLiteIdentityStore(data_dir=str(tmp_path))


def users(path: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT email, role, status, invitation_token FROM users").fetchall()


def test_ensure_seeds_the_first_admin_with_a_pending_invitation(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    handle = identity.ensure(tenant())

    path = tmp_path / "identity" / "acme-corp" / "identity.db"
    assert (handle.kind, handle.tenant_key, handle.name) == ("identity", "acme-corp", str(path))
    assert handle.details["admin_email"] == "admin@corp.example"
    [(email, role, status, token)] = users(path)
    assert (email, role, status) == ("admin@corp.example", "admin", "pending_invitation")
    assert len(token) >= 32
    assert token not in str(handle.to_json()), "the token is a secret: keep it out of the ledger"
    assert identity.invitation("acme-corp") == Invitation(email, token, status)


def test_second_ensure_keeps_the_same_admin_and_token(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    first = identity.ensure(tenant())
    invitation = identity.invitation("acme-corp")
    before = Path(first.name).read_bytes()

    assert identity.ensure(tenant()) == first
    assert identity.invitation("acme-corp") == invitation
    assert Path(first.name).read_bytes() == before
    assert len(users(Path(first.name))) == 1


def test_each_tenant_gets_its_own_token(identity: LocalSQLiteIdentityStore) -> None:
    identity.ensure(tenant("acme", "corp"))
    identity.ensure(tenant("beta", "labs"))
    assert identity.invitation("acme-corp").token != identity.invitation("beta-labs").token


def test_emails_are_unique_within_a_tenant(identity: LocalSQLiteIdentityStore) -> None:
    handle = identity.ensure(tenant())
    with sqlite3.connect(handle.name) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO users (email, role, status, created_at) VALUES (?, 'member', 'active', ?)",
            ("admin@corp.example", "2024-01-01T00:00:00+00:00"),
        )


def test_listing_and_release_are_idempotent(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    assert identity.list_existing() == set()
    identity.ensure(tenant("acme", "corp"))
    identity.ensure(tenant("beta", "labs"))
    assert identity.list_existing() == {"acme-corp", "beta-labs"}

    assert identity.release("acme-corp") is True
    assert identity.release("acme-corp") is False
    assert identity.list_existing() == {"beta-labs"}
    assert sorted(p.name for p in (tmp_path / "identity").iterdir()) == ["beta-labs"]
    with pytest.raises(NotFound):
        identity.invitation("acme-corp")


def test_a_store_recreated_after_release_gets_a_fresh_token(
    identity: LocalSQLiteIdentityStore,
) -> None:
    identity.ensure(tenant())
    old = identity.invitation("acme-corp").token
    identity.release("acme-corp")
    identity.ensure(tenant())
    assert identity.invitation("acme-corp").token != old


def test_a_crashed_build_is_invisible_and_does_not_block_ensure(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    directory = tmp_path / "identity" / "acme-corp"
    directory.mkdir(parents=True)
    (directory / ".identity.db.4242.deadbeef.tmp").write_bytes(b"SQLite format 3\x00partial")

    assert identity.list_existing() == set()
    with pytest.raises(NotFound):
        identity.invitation("acme-corp")
    identity.ensure(tenant())
    assert identity.invitation("acme-corp").status == "pending_invitation"
