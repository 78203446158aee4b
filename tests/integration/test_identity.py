"""Local identity stores on real SQLite files: the first admin is seeded once, with one token."""

import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resources.identity import LocalSQLiteIdentityStore
from resources.identity_files import hand_over, move_legacy_stores
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.mail import INVITATION_LIFETIME, Invitation
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
    invitation = identity.invitation("acme-corp")
    assert invitation == Invitation(email, token, status, invitation.expires_at)
    assert invitation.expires_at is not None
    lifetime = invitation.expires_at - datetime.now(UTC)
    assert INVITATION_LIFETIME - timedelta(minutes=1) < lifetime <= INVITATION_LIFETIME


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


def old_store(path: Path, token: str = "old-code") -> None:
    """An identity database exactly as the code before the admin sign-in made it (version 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tenant_meta (tenant_key TEXT PRIMARY KEY, plan TEXT NOT NULL,"
            " max_users INTEGER NOT NULL, created_at TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
            " role TEXT NOT NULL, status TEXT NOT NULL, invitation_token TEXT,"
            " created_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO tenant_meta VALUES ('acme-corp', 'free', 50, '2024-01-01T00:00:00+00:00')"
        )
        conn.execute(
            "INSERT INTO users (email, role, status, invitation_token, created_at) VALUES"
            " ('admin@corp.example', 'admin', 'pending_invitation', ?, '2024-01-01')",
            (token,),
        )
        conn.execute("PRAGMA user_version = 1")
    conn.close()


def columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        found = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
    conn.close()
    return found


def test_upgrade_gives_an_older_store_the_sign_in_columns_and_a_fresh_lifetime(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    path = identity.path_for("acme-corp")
    old_store(path)
    assert "password_hash" not in columns(path)

    assert identity.upgrade("acme-corp") is True
    assert {"invitation_expires_at", "invitation_redeemed_at", "password_hash"} <= columns(path)
    invitation = identity.invitation("acme-corp")
    assert (invitation.token, invitation.status) == ("old-code", "pending_invitation")
    assert invitation.expires_at is not None
    assert invitation.expires_at - datetime.now(UTC) > INVITATION_LIFETIME - timedelta(minutes=1)

    assert identity.upgrade("acme-corp") is True  # again: nothing changes
    assert identity.invitation("acme-corp") == invitation
    assert identity.upgrade("ghost-corp") is False
    assert not identity.path_for("ghost-corp").exists()


def test_ensure_upgrades_an_older_store_and_keeps_its_invitation(
    identity: LocalSQLiteIdentityStore,
) -> None:
    path = identity.path_for("acme-corp")
    old_store(path)
    identity.ensure(tenant())
    assert "password_hash" in columns(path)
    assert identity.invitation("acme-corp").token == "old-code"


TENANT_UID = 0x7FFFFF00  # a uid nobody has on this machine


def test_an_older_side_by_side_store_moves_into_its_own_directory(tmp_path: Path) -> None:
    """`identity/<key>.db` (and its journal) as an older version left them, moved by `up`."""
    older = LocalSQLiteIdentityStore(data_dir=str(tmp_path))
    new_path = older.ensure(tenant())
    legacy = tmp_path / "identity" / "acme-corp.db"
    Path(new_path.name).rename(legacy)
    Path(new_path.name).parent.rmdir()
    (tmp_path / "identity" / "acme-corp.db-journal").write_bytes(b"")

    assert move_legacy_stores(tmp_path) == ["acme-corp"]
    moved = tmp_path / "identity" / "acme-corp"
    assert sorted(p.name for p in moved.iterdir()) == ["identity.db", "identity.db-journal"]
    assert stat.S_IMODE(moved.stat().st_mode) == 0o700
    assert older.invitation("acme-corp").email == "admin@corp.example"
    assert move_legacy_stores(tmp_path) == []


def test_hand_over_gives_the_store_to_the_workload_uid_and_follows_no_link(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    identity.ensure(tenant())
    outside = tmp_path / "platform-secret"
    outside.write_text("x")
    (tmp_path / "identity" / "acme-corp" / "planted").symlink_to(outside)

    path = hand_over(tmp_path, "acme-corp", TENANT_UID, TENANT_UID)
    assert path == tmp_path / "identity" / "acme-corp" / "identity.db"
    assert (path.parent.stat().st_uid, path.stat().st_uid) == (TENANT_UID, TENANT_UID)
    assert os.lstat(path.parent / "planted").st_uid == TENANT_UID, "the link itself"
    assert outside.stat().st_uid == os.geteuid(), "never what it points to"
    assert hand_over(tmp_path, "ghost-corp", TENANT_UID, TENANT_UID).parent.exists() is False


def test_the_platform_reads_a_handed_over_store_without_writing_beside_it(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    """No lock, journal or shared-memory file of the platform's in the workload's directory."""
    first = identity.ensure(tenant())
    hand_over(tmp_path, "acme-corp", TENANT_UID, TENANT_UID)
    before = sorted(p.name for p in (tmp_path / "identity" / "acme-corp").iterdir())

    assert identity.ensure(tenant()) == first
    assert identity.invitation("acme-corp").status == "pending_invitation"
    assert identity.list_existing() == {"acme-corp"}
    assert sorted(p.name for p in (tmp_path / "identity" / "acme-corp").iterdir()) == before


def test_a_handed_over_directory_without_its_store_is_replaced_not_written_into(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    identity.ensure(tenant())
    directory = tmp_path / "identity" / "acme-corp"
    hand_over(tmp_path, "acme-corp", TENANT_UID, TENANT_UID)
    (directory / "identity.db").unlink()  # as its workload could
    (directory / "identity.db-journal").symlink_to(tmp_path / "elsewhere")

    identity.ensure(tenant())
    assert directory.stat().st_uid == os.geteuid(), "a directory of the platform's own"
    assert sorted(p.name for p in directory.iterdir()) == ["identity.db"]
    assert not (tmp_path / "elsewhere").exists()


def test_release_never_follows_a_link_the_workload_planted(
    identity: LocalSQLiteIdentityStore, tmp_path: Path
) -> None:
    identity.ensure(tenant())
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "file").write_text("x")
    (tmp_path / "identity" / "acme-corp" / "link").symlink_to(kept)

    assert identity.release("acme-corp") is True
    assert (kept / "file").read_text() == "x"
    assert not (tmp_path / "identity" / "acme-corp").exists()
