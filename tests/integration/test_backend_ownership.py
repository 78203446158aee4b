"""The local backends record which tenant id a resource under a key was made for: `ensure` of
another tenant id is refused as a permanent error and changes nothing; `release` naming another
tenant id leaves the resource. Real SQLite files, a real route table, a real outbox."""

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from resources.mailer import OutboxMailer
from resources.route_table import OPEN
from resources.storage import LocalSQLiteStorage, create_db_atomically, utc_now
from resources.traffic import LocalEdgeRoutes, lookup_route, routes_db_path
from tenant_pipelines.domain.errors import OwnedByAnotherTenant, PermanentError
from tenant_pipelines.domain.mail import EmailKind
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.email_content import render_email

pytestmark = pytest.mark.integration

DOMAIN = "localhost"


def tenant(slug: str, org: str, tenant_id: str) -> TenantSpec:
    return TenantSpec(
        tenant_id=tenant_id,
        request_id=f"r-{tenant_id}",
        slug=slug,
        org=org,
        plan="team",
        admin_email=f"admin@{org}.example",
    )


# Issue 18: one key, two splits, two tenants.
FIRST = tenant("shop-prod", "zeta", "tenant-first")
SECOND = tenant("shop", "prod-zeta", "tenant-second")
KEY = "shop-prod-zeta"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (names and bytes): what "changes nothing" is held to."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def refused_without_change(directory: Path, action: Callable[[], object]) -> OwnedByAnotherTenant:
    before = snapshot(directory)
    with pytest.raises(OwnedByAnotherTenant) as refused:
        action()
    assert isinstance(refused.value, PermanentError)  # never retried
    assert snapshot(directory) == before
    return refused.value


# storage -------------------------------------------------------------------------------------
def test_storage_refuses_and_keeps_another_tenants_database(tmp_path: Path) -> None:
    storage = LocalSQLiteStorage(data_dir=str(tmp_path))
    storage.ensure(FIRST)
    assert storage.ensure(FIRST).tenant_key == KEY  # its own: idempotent

    refusal = refused_without_change(tmp_path, lambda: storage.ensure(SECOND))
    assert str(refusal) == (
        f"storage {storage.path_for(KEY)} under the key {KEY} was made for another tenant;"
        " refusing to adopt it"
    )
    assert storage.release(KEY, SECOND.tenant_id) is False
    assert storage.path_for(KEY).exists()
    assert owner_of(storage.path_for(KEY)) == FIRST.tenant_id

    assert storage.release(KEY, FIRST.tenant_id) is True
    assert not storage.path_for(KEY).exists()
    storage.ensure(SECOND)  # the key is free: the second tenant's own database now
    assert owner_of(storage.path_for(KEY)) == SECOND.tenant_id


def owner_of(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (tenant_id,) = conn.execute("SELECT tenant_id FROM tenant_meta").fetchone()
    return str(tenant_id)


def test_storage_made_before_ownership_is_claimed_by_the_next_ensure(tmp_path: Path) -> None:
    storage = LocalSQLiteStorage(data_dir=str(tmp_path))

    def legacy(conn: sqlite3.Connection) -> None:  # the table as it was, without tenant_id
        conn.execute(
            "CREATE TABLE tenant_meta (tenant_key TEXT PRIMARY KEY, plan TEXT NOT NULL,"
            " quota_mb INTEGER NOT NULL, created_at TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO tenant_meta VALUES (?, 'team', 1000, ?)", (KEY, utc_now()))

    assert create_db_atomically(storage.path_for(KEY), legacy)

    storage.ensure(FIRST)
    assert owner_of(storage.path_for(KEY)) == FIRST.tenant_id
    refused_without_change(tmp_path, lambda: storage.ensure(SECOND))


def test_storage_release_without_a_tenant_id_is_the_operators_cleanup(tmp_path: Path) -> None:
    storage = LocalSQLiteStorage(data_dir=str(tmp_path))
    storage.ensure(FIRST)
    assert storage.release(KEY) is True
    assert storage.release(KEY) is False


# routes --------------------------------------------------------------------------------------
def test_a_route_is_neither_adopted_nor_opened_nor_released_for_another_tenant(
    tmp_path: Path,
) -> None:
    routes = LocalEdgeRoutes(data_dir=str(tmp_path), domain=DOMAIN)
    routes.ensure(FIRST)
    routes.open(FIRST)
    host = FIRST.host(DOMAIN)

    refused_without_change(tmp_path, lambda: routes.ensure(SECOND))
    refused_without_change(tmp_path, lambda: routes.open(SECOND))
    assert routes.release(KEY, SECOND.tenant_id) is False
    found = lookup_route(tmp_path, host)
    assert found is not None and found.state == OPEN  # still the first tenant's, still served

    assert routes.release(KEY, FIRST.tenant_id) is True
    assert lookup_route(tmp_path, host) is None


def test_a_route_table_from_before_gets_the_column_and_its_routes_are_claimed(
    tmp_path: Path,
) -> None:
    path = routes_db_path(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:  # the table as it was
        conn.execute(
            "CREATE TABLE routes (host TEXT PRIMARY KEY, tenant_key TEXT NOT NULL UNIQUE,"
            " state TEXT NOT NULL CHECK (state IN ('closed', 'open')), updated_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO routes VALUES (?, ?, 'open', ?)", (FIRST.host(DOMAIN), KEY, utc_now())
        )
    conn.close()
    found = lookup_route(tmp_path, FIRST.host(DOMAIN))  # the edge reads the old table as is
    assert found is not None and found.is_open and found.tenant_id is None

    routes = LocalEdgeRoutes(data_dir=str(tmp_path), domain=DOMAIN)
    assert routes.ensure(FIRST).details == {"state": "open"}  # claimed, its state kept
    refused_without_change(tmp_path, lambda: routes.ensure(SECOND))
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT tenant_key, tenant_id FROM routes").fetchall()
    conn.close()
    assert rows == [(KEY, FIRST.tenant_id)]


# the outbox ----------------------------------------------------------------------------------
def test_the_outbox_of_a_key_is_written_for_one_tenant_only(tmp_path: Path) -> None:
    mailer = OutboxMailer(data_dir=str(tmp_path))
    sent = mailer.send(render_email(EmailKind.WELCOME, FIRST, DOMAIN, "code-1", "p@example.com"))
    assert sent.ok
    before = snapshot(tmp_path)

    refused = mailer.send(
        render_email(EmailKind.WELCOME, SECOND, DOMAIN, "code-2", "p@example.com")
    )

    folder = tmp_path / "outbox" / KEY
    assert (refused.ok, refused.maybe_delivered, refused.attempts) == (False, False, 0)
    assert refused.reason == f"the outbox {folder} belongs to another tenant; nothing written"
    assert snapshot(tmp_path) == before  # the first tenant's email, untouched
    assert mailer.release(KEY, SECOND.tenant_id) is False
    assert (folder / ".tenant-id").read_text() == FIRST.tenant_id

    assert mailer.release(KEY, FIRST.tenant_id) is True  # the first tenant is decommissioned
    again = mailer.send(render_email(EmailKind.WELCOME, SECOND, DOMAIN, "code-2", "p@example.com"))
    assert again.ok and (folder / ".tenant-id").read_text() == SECOND.tenant_id
    assert "To: admin@prod-zeta.example" in (folder / "welcome.eml").read_text()
