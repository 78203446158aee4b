"""A tenant's PostgreSQL identity role as a login of its own, for its local workload.

The workload's DSN logs in as the tenant's identity role (made NOLOGIN by `resources.pg_tenant`),
with a password only the platform can derive: HMAC-SHA256 of a platform secret kept in the data
directory (`identity-logins.key`, 0600) and the role's name. So the workload never holds the
backends' admin credentials: `RESET ROLE` leaves it the tenant's role. The same tenant gets the
same password at every start, and nothing needs storing. The server is sent a SCRAM verifier
computed here, never the password: no statement log can show it. (A server whose `pg_hba.conf`
trusts local connections checks no password at all, for any role: that is the server's choice.)
"""

import hashlib
import hmac
import os
from pathlib import Path

from psycopg2 import sql
from psycopg2.extensions import encrypt_password, make_dsn

from resources.pg_tenant import APP, admin_engine, current_database, role_marker, run
from tenant_pipelines.domain.handles import ResourceKind
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support.db_url import libpq_url
from tenant_pipelines.support.operator_key import secret_in

LOGIN_SECRET_FILE = "identity-logins.key"
# libpq settings of the admin's environment that say where and how to connect, never who: a
# workload gets these and no PGUSER, PGPASSWORD, PGPASSFILE or PGSERVICE.
CONNECTION_ENV = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
)


def role_password(secret: str, role: str) -> str:
    return hmac.new(secret.encode(), role.encode(), hashlib.sha256).hexdigest()


def connection_env() -> dict[str, str]:
    return {name: os.environ[name] for name in CONNECTION_ENV if name in os.environ}


def login_dsn(admin_url: str, tenant: TenantSpec, role: str, data_dir: str | Path) -> str:
    """The DSN of the tenant's identity role, after granting it that login; the role must be
    the one this control plane made for the tenant, else it gets no login (and its workload
    says it cannot open its store)."""
    password = role_password(secret_in(Path(data_dir) / LOGIN_SECRET_FILE), role)
    grant_login(admin_url, tenant, role, password)
    return str(make_dsn(libpq_url(admin_url), user=role, password=password))


def grant_login(admin_url: str, tenant: TenantSpec, role: str, password: str) -> bool:
    """`ALTER ROLE ... LOGIN PASSWORD <verifier>` if the role is ours and the tenant's; whether
    it was."""
    with admin_engine(admin_url).begin() as conn:
        marker = role_marker(conn, role) or {}
        ours = (
            marker.get("app") == APP
            and marker.get("kind") == ResourceKind.IDENTITY.value
            and marker.get("tenant_key") == tenant.key
            and marker.get("tenant_id", tenant.tenant_id) == tenant.tenant_id
            and marker.get("database") == current_database(conn)
        )
        if ours:
            dbapi = conn.connection.dbapi_connection
            verifier = encrypt_password(password, role, dbapi, "scram-sha-256")
            run(
                conn,
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier)
                ),
            )
    return ours
