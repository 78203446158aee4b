"""Issue 18, finding 8 on TENANT_BACKENDS=postgres: a workload held the backends' admin DSN and
only `SET ROLE` to its tenant's identity role, so `RESET ROLE` made it the server's admin. Now its
DSN logs in as that role itself: whatever it does with the DSN, it has that role's rights only."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from resources.deployer import LocalProcessDeployer
from resources.identity import PostgresIdentityStore, pg_identity_schema
from resources.storage import PostgresSchemaStorage
from tenant_pipelines.domain.tenant import TenantSpec
from tests.pg_helpers import drop_our_roles

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ADMIN_SECRET = "admin-secret-the-workload-must-not-hold"


def tenant(slug: str) -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}-{uuid.uuid4().hex[:6]}",
        request_id=str(uuid.uuid4()),
        slug=slug,
        org=f"pg{uuid.uuid4().hex[:6]}",
        plan="free",
        admin_email=f"admin@{slug}.example.com",
    )


@pytest.fixture
def admin_url(pg_database: str) -> Iterator[str]:
    yield make_url(pg_database).set(password=ADMIN_SECRET).render_as_string(hide_password=False)
    drop_our_roles(pg_database)


@pytest.fixture
def deployer(
    tmp_path: Path, admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalProcessDeployer]:
    monkeypatch.setenv("TENANT_BACKENDS_PG_URL", admin_url)
    deployer = LocalProcessDeployer(
        data_dir=str(tmp_path / "data"),
        domain="localhost",
        identity_pg_url=admin_url,
    )
    yield deployer
    deployer.stop_all()


def workload_dsn(pid: int) -> str:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    environ = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    assert not any(ADMIN_SECRET in value for value in environ.values())
    return environ["TENANT_WORKLOAD_IDENTITY_DSN"]


def test_a_workloads_database_login_is_its_identity_role_and_nothing_more(
    deployer: LocalProcessDeployer, admin_url: str
) -> None:
    mine, other = tenant("mine"), tenant("other")
    for spec in (mine, other):
        PostgresIdentityStore(admin_url=admin_url).ensure(spec)
        PostgresSchemaStorage(admin_url=admin_url).ensure(spec)
    pid = deployer.ensure(mine).details["pid"]

    conn = psycopg2.connect(workload_dsn(pid))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("RESET ROLE")
            cur.execute(
                "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
                " WHERE rolname = current_user"
            )
            assert cur.fetchone() == (pg_identity_schema(mine.key), False, False, False)
            cur.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(pg_identity_schema(mine.key), "users")
                )
            )
            assert cur.fetchone() == (1,), "its own store it may read"
            for schema in (pg_identity_schema(other.key), f"t_{mine.key.replace('-', '_')}_data"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(
                        sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(schema, "tenant_meta"))
                    )
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CREATE ROLE escalated SUPERUSER")
    finally:
        conn.close()
