"""Schema upgrades, configured in code so that no alembic.ini has to ship or be found at runtime."""

import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, exc, text

from tenant_pipelines.registry.engine import make_engine
from tenant_pipelines.support.db_url import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision under migrations/versions (a test holds it to the scripts). Knowing it lets
# a process that finds the database already there skip loading Alembic: commands start faster.
HEAD_REVISION = "0004"

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Serializes concurrent upgrades of one PostgreSQL database (SQLite uses BEGIN IMMEDIATE).
_PG_LOCK_KEY = zlib.crc32(b"tenant_pipelines.migrate")

_upgraded: set[str] = set()
_upgraded_lock = threading.Lock()


def _config(connection: Connection | None = None) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations directory has no revision"
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` (to head), in one transaction; a no-op when already there."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
                )
            from alembic import command

            command.upgrade(_config(connection), revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at; None before the first upgrade."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as connection:
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def ensure_upgraded(url: str) -> None:
    """Upgrade once per process and URL: opening a registry is frequent, migrating is not."""
    key = normalize_url(url).render_as_string(hide_password=False)
    with _upgraded_lock:
        if key not in _upgraded:
            if _stored_revision(url) != HEAD_REVISION:
                upgrade(url)
            _upgraded.add(key)


def _stored_revision(url: str) -> str | None:
    """The revision recorded in the database, read without Alembic; None if there is none."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except exc.DBAPIError:
        return None  # no alembic_version table yet: a new database
    finally:
        engine.dispose()
