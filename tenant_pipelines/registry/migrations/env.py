"""Alembic environment: runs on the connection `tenant_pipelines.migrate` hands over.

The caller opens the transaction (and, on PostgreSQL, takes an advisory lock) so that processes
upgrading the same database at once run one after the other; the last ones find head and do nothing.
"""

from alembic import context

from tenant_pipelines.registry.migrate import VERSION_TABLE
from tenant_pipelines.registry.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through tenant_pipelines.registry.migrate.upgrade(url)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # Not Alembic's default `alembic_version`: Dagster's storage may share the database and keeps
    # its own revision there.
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things; batch mode rebuilds tables in future migrations.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
