"""Reading and cleaning a PostgreSQL server as its admin, independently of the code under test."""

import json
from typing import Any

import psycopg2
from psycopg2 import sql

from tenant_pipelines.support.db_url import libpq_url


def admin_sql(url: str, statement: sql.Composable | str, params: Any = ()) -> list[Any]:
    conn = psycopg2.connect(libpq_url(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def drop_our_roles(url: str) -> None:
    """Roles outlive the test database: drop any this database's backends left behind."""
    [(database,)] = admin_sql(url, "SELECT current_database()")
    rows = admin_sql(
        url,
        "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles"
        " WHERE starts_with(rolname, 't_')",
    )
    for name, comment in rows:
        try:
            marker = json.loads(comment or "")
        except ValueError:
            continue
        if isinstance(marker, dict) and marker.get("database") == database:
            admin_sql(url, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin_sql(url, sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def role_exists(url: str, name: str) -> bool:
    return bool(admin_sql(url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)))


def schema_exists(url: str, name: str) -> bool:
    return bool(admin_sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)))


def grants_mentioning(url: str, name: str) -> list[str]:
    """Every ACL in the database that still names `name`: schemas, relations, default
    privileges, the database itself (a dropped role leaves none; a leaked grant would show)."""
    rows = admin_sql(
        url,
        "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspacl::text LIKE %(p)s"
        " UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relacl::text LIKE %(p)s"
        " UNION ALL SELECT 'default privileges' FROM pg_default_acl"
        " WHERE defaclacl::text LIKE %(p)s"
        " UNION ALL SELECT 'database ' || datname FROM pg_database WHERE datacl::text LIKE %(p)s",
        {"p": f"%{name}%"},
    )
    return [what for (what,) in rows]


OTHERS = "datname = current_database() AND pid <> pg_backend_pid()"
NAMED = " AND (%(name)s::text IS NULL OR application_name = %(name)s)"


def backend_pids(url: str, application_name: str | None = None) -> set[int]:
    """The server processes of the connections to this database, this query's own left out
    (only those of processes that name themselves `application_name`, if given)."""
    query = f"SELECT pid FROM pg_stat_activity WHERE {OTHERS}{NAMED}"
    return {pid for (pid,) in admin_sql(url, query, {"name": application_name})}


def statements_started(url: str, application_name: str | None = None) -> dict[int, Any]:
    """When each other connection to this database started its latest statement, by server pid
    (as `backend_pids`)."""
    query = f"SELECT pid, query_start FROM pg_stat_activity WHERE {OTHERS}{NAMED}"
    return dict(admin_sql(url, query, {"name": application_name}))


def terminate_backends(url: str) -> None:
    """Drop every other connection to this database, as a server restart would, and wait for it."""
    admin_sql(
        url,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


def runs_of_tenant(dagster_url: str, slug: str) -> list[dict[str, str]]:
    """Each run of tenant `slug` in the Dagster instance's database, oldest first, as its tags
    (and `run_id`): read from any host, whatever its processes."""
    rows = admin_sql(
        dagster_url,
        "SELECT r.run_id, t.key, t.value FROM runs r JOIN run_tags t ON t.run_id = r.run_id"
        " WHERE r.run_id IN (SELECT run_id FROM run_tags WHERE key = 'tenant' AND value = %s)"
        " ORDER BY r.id",
        (slug,),
    )
    runs: dict[str, dict[str, str]] = {}
    for run_id, key, value in rows:
        runs.setdefault(run_id, {"run_id": run_id})[key] = value
    return list(runs.values())


def step_started(dagster_url: str, run_id: str, step: str) -> bool:
    rows = admin_sql(
        dagster_url,
        "SELECT count(*) FROM event_logs WHERE run_id = %s AND step_key = %s"
        " AND dagster_event_type = 'STEP_START'",
        (run_id, step),
    )
    return bool(rows[0][0])
