"""Dagster's PostgreSQL storage, whose held connections are tested before each use.

dagster-webserver (and our feed readers, `orchestration.feed.feed_instance`) hold pooled
connections (`optimize_for_webserver`). After PostgreSQL restarts, every held connection is dead,
and the GraphQL query that drew one answered 500 (measured: one such answer, then clean). A ping
at checkout (SQLAlchemy's "pessimistic disconnect handling") swaps a dead connection for a new one
before the query runs, so the webserver answers as soon as the server is back. Processes that
hold no connection (run workers, the daemon: Dagster's NullPool) are unchanged. Tables, schema
and configuration are dagster-postgres's own: an instance can switch to or from this class.
"""

from typing import Any, Self

import psycopg2
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy import Engine, event, exc

from tenant_pipelines.runtime.dagster_private import ConfigurableClassData


def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    except psycopg2.Error as error:  # the pool retries the checkout with a new connection
        raise exc.DisconnectionError(str(error).strip()) from error
    finally:
        cursor.close()


def ping_at_checkout(engine: Engine) -> None:
    event.listen(engine, "checkout", _ping)


class PrePingPostgresRunStorage(PostgresRunStorage):
    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        ping_at_checkout(self._engine)


class PrePingPostgresEventLogStorage(PostgresEventLogStorage):
    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        ping_at_checkout(self._engine)


class PrePingPostgresScheduleStorage(PostgresScheduleStorage):
    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        ping_at_checkout(self._engine)


class PrePingPostgresStorage(DagsterPostgresStorage):
    """`storage: postgres:` with the three storages above (same config: `postgres_url`, ...)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        args = (postgres_url, should_autocreate_tables)
        self._run_storage = PrePingPostgresRunStorage(*args, token_provider=token_provider)
        self._event_log_storage = PrePingPostgresEventLogStorage(
            *args, token_provider=token_provider
        )
        self._schedule_storage = PrePingPostgresScheduleStorage(
            *args, token_provider=token_provider
        )
        super(DagsterPostgresStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> Self:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
