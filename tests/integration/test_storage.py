"""Local tenant storage on real SQLite files: idempotent ensure and release, atomic creation."""

import sqlite3
from pathlib import Path

import pytest

from resources.storage import LocalSQLiteStorage, create_db_atomically
from tenant_pipelines.domain.errors import BusinessRefusal, PermanentError
from tenant_pipelines.domain.plans import get_plan
from tenant_pipelines.domain.tenant import TenantSpec

pytestmark = pytest.mark.integration


def tenant(slug: str = "acme", org: str = "corp", plan: str = "team") -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org=org,
        plan=plan,
        admin_email=f"admin@{org}.example",
    )


@pytest.fixture
def storage(tmp_path: Path) -> LocalSQLiteStorage:
    return LocalSQLiteStorage(data_dir=str(tmp_path))


def test_ensure_creates_a_real_database_sized_by_the_plan(
    storage: LocalSQLiteStorage, tmp_path: Path
) -> None:
    spec = tenant()
    handle = storage.ensure(spec)

    path = tmp_path / "storage" / "acme-corp.db"
    assert handle.kind == "storage" and handle.tenant_key == "acme-corp"
    assert handle.name == str(path)
    assert handle.details == {"quota_mb": get_plan("team").storage_quota_mb}
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT tenant_key, plan, quota_mb, created_at FROM tenant_meta")
        (key, plan, quota, created_at), *rest = rows.fetchall()
    assert (key, plan, quota, rest) == ("acme-corp", "team", 1_000, [])
    assert created_at


def test_second_ensure_returns_the_same_handle_and_changes_nothing(
    storage: LocalSQLiteStorage, tmp_path: Path
) -> None:
    first = storage.ensure(tenant())
    path = Path(first.name)
    before = (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())

    assert storage.ensure(tenant()) == first
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before
    assert sorted(p.name for p in (tmp_path / "storage").iterdir()) == ["acme-corp.db"]


def test_listing_and_release_are_idempotent(storage: LocalSQLiteStorage, tmp_path: Path) -> None:
    assert storage.list_existing() == set()
    storage.ensure(tenant("acme", "corp"))
    storage.ensure(tenant("beta", "labs"))
    assert storage.list_existing() == {"acme-corp", "beta-labs"}

    # SQLite sidecars left by a connection that was still open go with the database.
    for suffix in ("-wal", "-shm", "-journal"):
        (tmp_path / "storage" / f"acme-corp.db{suffix}").write_bytes(b"")
    assert storage.release("acme-corp") is True
    assert storage.release("acme-corp") is False
    assert storage.list_existing() == {"beta-labs"}
    assert sorted(p.name for p in (tmp_path / "storage").iterdir()) == ["beta-labs.db"]


def test_a_crashed_build_leaves_no_database_under_the_tenant_name(
    storage: LocalSQLiteStorage, tmp_path: Path
) -> None:
    directory = tmp_path / "storage"
    directory.mkdir()
    # What a build killed half-way leaves: a partial temp file, never the final name.
    (directory / ".acme-corp.db.4242.deadbeef.tmp").write_bytes(b"SQLite format 3\x00partial")

    assert storage.list_existing() == set()
    handle = storage.ensure(tenant())
    assert storage.list_existing() == {"acme-corp"}
    assert handle.details["quota_mb"] == 1_000
    assert storage.release("acme-corp") is True
    assert list(directory.iterdir()) == []


def test_an_unknown_plan_is_refused_before_anything_is_created(
    storage: LocalSQLiteStorage, tmp_path: Path
) -> None:
    with pytest.raises(BusinessRefusal):
        storage.ensure(tenant(plan="platinum"))
    assert storage.list_existing() == set()
    assert isinstance(BusinessRefusal("x"), PermanentError)


def test_keys_that_could_escape_the_directory_are_refused(storage: LocalSQLiteStorage) -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        storage.release("../etc/passwd")


def test_a_build_that_fails_half_way_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "storage" / "acme-corp.db"

    def build(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE tenant_meta (tenant_key TEXT)")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        create_db_atomically(path, build)
    assert list(path.parent.iterdir()) == []
