"""Schema upgrades, configured in code so that no alembic.ini has to ship or be found at runtime.

The registry keeps its revision in its own table, `tenant_registry_version`, not Alembic's default
`alembic_version`: Dagster's PostgreSQL storage keeps its own revision there, and both on one
database made each side find a revision it cannot locate. A registry made before that has its
revision moved over on the next upgrade; another row in `alembic_version` (Dagster's) is left alone.
"""

import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    exc,
    inspect,
    text,
)

from tenant_pipelines.registry.engine import make_engine, store_errors
from tenant_pipelines.support.db_url import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision under migrations/versions (a test holds it to the scripts). Knowing it lets
# a process that finds the database already there skip loading Alembic: commands start faster.
HEAD_REVISION = "0009_routes"
VERSION_TABLE = "tenant_registry_version"
LEGACY_VERSION_TABLE = "alembic_version"

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

            _adopt_legacy_revision(connection)
            command.upgrade(_config(connection), revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at; None before the first upgrade."""
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as connection:
            from alembic.runtime.migration import MigrationContext

            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        engine.dispose()


def ensure_upgraded(url: str, engine: Engine | None = None) -> None:
    """Upgrade once per process and URL: opening a registry is frequent, migrating is not. The
    revision is read through `engine` when given (the registry's own pool: a run worker opens
    one connection, not two)."""
    key = normalize_url(url).render_as_string(hide_password=False)
    with _upgraded_lock, store_errors(url):
        if key not in _upgraded:
            if _stored_revision(url, engine) != HEAD_REVISION:
                upgrade(url)
            _upgraded.add(key)


def _stored_revision(url: str, engine: Engine | None) -> str | None:
    """The revision recorded in the database, read without Alembic; None if there is none."""
    reader = engine or make_engine(url, pooled=False)
    try:
        with reader.connect() as connection:
            return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except exc.DBAPIError:
        return None  # no version table yet: a new database, or one to adopt
    finally:
        if engine is None:
            reader.dispose()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _version_table(name: str) -> Table:
    # The shape Alembic gives its version table, so that Alembic reads ours as its own.
    return Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


def _adopt_legacy_revision(connection: Connection) -> None:
    """Move our revision from `alembic_version` to our own table (in the caller's transaction).

    Only rows naming one of our revisions move; `alembic_version` is dropped once empty, so a
    database the registry had alone looks as if it had always used its own table.
    """
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or LEGACY_VERSION_TABLE not in tables:
        return
    legacy = _version_table(LEGACY_VERSION_TABLE)
    found = {row[0] for row in connection.execute(legacy.select())}
    ours = found & _known_revisions()
    if not ours:
        return
    table = _version_table(VERSION_TABLE)
    table.create(connection)
    connection.execute(table.insert(), [{"version_num": revision} for revision in sorted(ours)])
    connection.execute(legacy.delete().where(legacy.c.version_num.in_(sorted(ours))))
    if not found - ours:
        legacy.drop(connection)
