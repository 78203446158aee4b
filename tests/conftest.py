"""Fixtures shared by the suite: real databases, never skipped.

PostgreSQL tests fail (they do not skip) when the server at 127.0.0.1:5432 is unreachable: a suite
that quietly skips its PostgreSQL half would pass on a machine that never ran it.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, text

from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.support.db_url import normalize_url

if TYPE_CHECKING:
    import redis

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return PG_ADMIN_URL


def _pg_admin(admin_url: str) -> Engine:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    # Pre-ping: a test may restart the server while a database of this helper is in use.
    return create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@contextmanager
def fresh_pg_database(admin_url: str, label: str = "test") -> Iterator[str]:
    """A new, uniquely named database (URL as users write it), dropped afterwards."""
    name = f"tp_{label}_{uuid.uuid4().hex[:16]}"
    admin = _pg_admin(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                # Connections a test left open (a crashed thread, a lost process) would block DROP.
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh database for one test."""
    with fresh_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control-plane database URL, once per backend: every registry test runs on both."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return f"sqlite:///{tmp_path / 'control' / 'registry.db'}"


@pytest.fixture
def registry(registry_url: str) -> Iterator[TenantRegistry]:
    """A migrated registry on `registry_url`, closed afterwards."""
    opened = TenantRegistry.open(registry_url)
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def empty_broker(url: str) -> Iterator["redis.Redis"]:
    """A client of the machine's Redis database at `url`, the broker of a platform with several
    hosts: emptied before and after, so no task or task state of another run is left in it."""
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
