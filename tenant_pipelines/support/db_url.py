"""Database URLs as users write them, mapped onto the drivers this project installs.

SQLAlchemy parses them, imported at the first call: settings are read by every command, and
the commands that reach the platform through its API server never load SQLAlchemy otherwise.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_DRIVERS = {"postgresql": "postgresql+psycopg2", "postgres": "postgresql+psycopg2"}


def normalize_url(url: str) -> "URL":
    """Map the plain URLs users pass (`postgres://`, `postgresql://`) onto psycopg2."""
    from sqlalchemy.engine import make_url

    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def libpq_url(url: str) -> str:
    """The same server as a libpq URI (`postgresql://...`), for psycopg2 or psql directly."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.drivername}://")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return normalize_url(url).get_backend_name() == "sqlite"


def redacted(url: str) -> str:
    """The URL with its password hidden: what a message may show."""
    return normalize_url(url).render_as_string(hide_password=True)


def same_database(first: str, second: str) -> bool:
    """Whether two URLs name one database on one server (users and passwords aside)."""
    a, b = normalize_url(first), normalize_url(second)
    return (a.get_backend_name(), a.host, a.port or 5432, a.database) == (
        b.get_backend_name(),
        b.host,
        b.port or 5432,
        b.database,
    )


def store_name(url: str) -> str:
    """How a message names a database: a SQLite file's path, or host:port/database (no user,
    no password)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "(memory)"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
