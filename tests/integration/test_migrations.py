"""Alembic migrations on empty SQLite and PostgreSQL databases (every test runs on both)."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from tenant_pipelines.registry import migrate, schema
from tenant_pipelines.registry.engine import make_engine
from tenant_pipelines.support.db_url import normalize_url

pytestmark = pytest.mark.integration

HEAD = "0009_routes"
TABLES = {
    "requests",
    "tenants",
    "ledger",
    "compensations",
    "api_tokens",
    "operations",
    "console_sessions",
    "batches",
    "routes",
    migrate.VERSION_TABLE,
}


@pytest.fixture
def migrated(registry_url: str) -> Iterator[Connection]:
    migrate.upgrade(registry_url)
    engine = make_engine(registry_url, pooled=False)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def test_upgrade_of_an_empty_database_reaches_head_and_is_then_a_no_op(registry_url: str) -> None:
    assert migrate.current_revision(registry_url) is None
    migrate.upgrade(registry_url)
    assert migrate.current_revision(registry_url) == migrate.head_revision() == HEAD

    migrate.upgrade(registry_url)
    assert migrate.current_revision(registry_url) == HEAD
    engine = make_engine(registry_url, pooled=False)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == TABLES
            query = f"SELECT version_num FROM {migrate.VERSION_TABLE}"
            versions = conn.execute(text(query)).all()
            assert [tuple(v) for v in versions] == [(HEAD,)]
    finally:
        engine.dispose()


def test_concurrent_upgrades_serialize(registry_url: str) -> None:
    # Fresh file or database, several upgraders at once: SQLite's switch to WAL included.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: migrate.upgrade(registry_url), range(8)))
    assert migrate.current_revision(registry_url) == HEAD


def test_upgrade_of_an_older_schema_keeps_its_rows(registry_url: str) -> None:
    migrate.upgrade(registry_url, "0001")
    engine = make_engine(registry_url, pooled=False)
    try:
        with engine.begin() as conn:
            _insert_request_and_tenant(conn)
            conn.execute(
                text(
                    "INSERT INTO compensations (failed_run_id, tenant_id, created_at) "
                    "VALUES ('run-1', 't1', '2024-01-01 00:00:00')"
                )
            )
        migrate.upgrade(registry_url)
        assert migrate.current_revision(registry_url) == HEAD
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT failed_run_id, finished_at FROM compensations")).all()
            assert [tuple(r) for r in rows] == [("run-1", None)]
            assert conn.execute(text("SELECT slug FROM tenants")).scalar_one() == "acme"
    finally:
        engine.dispose()


def _insert_request_and_tenant(conn: Connection) -> None:
    now = "2024-01-01 00:00:00"
    conn.execute(
        text(
            "INSERT INTO requests (request_id, slug, org, plan, admin_email, subject, role, state, "
            "created_at, updated_at) VALUES ('r1', 'acme', 'corp', 'team', 'a@corp.example.com', "
            "'alice', 'org-admin', 'launched', :now, :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO tenants (tenant_id, request_id, slug, org, plan, admin_email, state, "
            "live_slug, created_at, updated_at) VALUES ('t1', 'r1', 'acme', 'corp', 'team', "
            "'a@corp.example.com', 'active', 'acme', :now, :now)"
        ),
        {"now": now},
    )


def test_live_slug_is_unique_in_the_migrated_schema(migrated: Connection) -> None:
    uniques = {
        tuple(u["column_names"]): u["name"]
        for u in inspect(migrated).get_unique_constraints("tenants")
    }
    assert uniques[("live_slug",)] == "uq_tenants_live_slug"
    assert uniques[("request_id",)] == "uq_tenants_request_id"
    ledger_key = inspect(migrated).get_pk_constraint("ledger")["constrained_columns"]
    assert ledger_key == ["tenant_id", "kind"]


def test_the_constraint_refuses_a_second_live_slug_but_not_dead_ones(migrated: Connection) -> None:
    now = "2024-01-01 00:00:00"
    for number in range(4):
        migrated.execute(
            text(
                "INSERT INTO requests (request_id, slug, org, plan, admin_email, subject, role, "
                "state, created_at, updated_at) VALUES (:id, 'acme', 'corp', 'team', "
                "'a@corp.example.com', 'alice', 'org-admin', 'pending', :now, :now)"
            ),
            {"id": f"r{number}", "now": now},
        )
    insert_tenant = text(
        "INSERT INTO tenants (tenant_id, request_id, slug, org, plan, admin_email, state, "
        "live_slug, created_at, updated_at) VALUES (:id, :id_r, 'acme', 'corp', 'team', "
        "'a@corp.example.com', :state, :live, :now, :now)"
    )

    def tenant(number: int, state: str, live: str | None) -> None:
        values = {"id": f"t{number}", "id_r": f"r{number}", "state": state, "live": live}
        migrated.execute(insert_tenant, {**values, "now": now})

    tenant(0, "decommissioned", None)
    tenant(1, "decommissioned", None)  # any number of dead tenants may share the slug
    tenant(2, "active", "acme")
    with pytest.raises(IntegrityError):
        tenant(3, "provisioning", "acme")
    migrated.rollback()


def test_the_table_objects_match_the_migrated_schema(migrated: Connection) -> None:
    context = MigrationContext.configure(migrated, opts={"version_table": migrate.VERSION_TABLE})
    differences = compare_metadata(context, schema.metadata)
    assert differences == []


def test_plain_postgres_urls_are_mapped_to_psycopg2() -> None:
    for plain in ("postgres://u@h:5432/db", "postgresql://u@h:5432/db"):
        assert normalize_url(plain).drivername == "postgresql+psycopg2"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_the_head_constant_is_the_newest_migration() -> None:
    assert migrate.HEAD_REVISION == migrate.head_revision() == HEAD


def _move_version_to_alembic_version(url: str, extra: str | None = None) -> None:
    """Make the database look as a registry made before it had its own version table (and, with
    `extra`, as if Dagster had also stamped its revision there)."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
                )
            )
            conn.execute(
                text(f"INSERT INTO alembic_version SELECT version_num FROM {migrate.VERSION_TABLE}")
            )
            conn.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
            if extra:
                conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": extra})
    finally:
        engine.dispose()


def _alembic_version_rows(url: str) -> list[str] | None:
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def test_an_older_registry_has_its_revision_moved_to_its_own_table(registry_url: str) -> None:
    migrate.upgrade(registry_url, "0002")
    _move_version_to_alembic_version(registry_url)
    assert migrate.current_revision(registry_url) is None  # not where it is looked for any more

    migrate.ensure_upgraded(registry_url)
    assert migrate.current_revision(registry_url) == HEAD  # moved, then upgraded 0002 -> head
    assert _alembic_version_rows(registry_url) is None  # the registry had it alone: dropped


def test_moving_the_revision_leaves_another_row_of_alembic_version_alone(registry_url: str) -> None:
    migrate.upgrade(registry_url)
    _move_version_to_alembic_version(registry_url, extra="29b539ebc72a")  # a Dagster revision

    migrate.upgrade(registry_url)
    assert migrate.current_revision(registry_url) == HEAD
    assert _alembic_version_rows(registry_url) == ["29b539ebc72a"]
