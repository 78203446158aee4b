"""Table objects of the control-plane database, as the queries see them.

Alembic migrations own the schema (`migrations/versions`); these definitions must describe the
same tables, which `tests/integration/test_migrations.py` checks by comparing the two.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

from tenant_pipelines.domain.routes import ROUTE_STATES
from tenant_pipelines.domain.states import RequestState, TenantState


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite stores naive UTC text, PostgreSQL timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def _in(column: str, values: list[str]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("slug", String(30), nullable=False),
    Column("org", String(30), nullable=False),
    Column("plan", String(40), nullable=False),
    Column("admin_email", String(320), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("state", String(20), nullable=False),
    Column("reason", Text),
    Column("run_id", String(64)),
    Column("tenant_id", String(36)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The host its tenant is placed on (support.hosts); NULL: recorded before placement.
    Column("worker_host", String(255)),
    CheckConstraint(_in("state", list(RequestState)), name="ck_requests_state"),
    Index("ix_requests_state_created_at", "state", "created_at"),
)

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", String(36), primary_key=True),
    Column(
        "request_id",
        ForeignKey("requests.request_id", name="fk_tenants_request_id"),
        nullable=False,
    ),
    Column("slug", String(30), nullable=False),
    Column("org", String(30), nullable=False),
    Column("plan", String(40), nullable=False),
    Column("admin_email", String(320), nullable=False),
    Column("state", String(20), nullable=False),
    # = slug until decommissioned, then NULL: the unique constraint is the slug reservation.
    Column("live_slug", String(30)),
    # = `<slug>-<org>` until decommissioned, then NULL: the reservation of the tenant key, which
    # one key admits many splits of (`shop-prod` + `zeta`, `shop` + `prod-zeta`).
    Column("live_key", String(63)),
    Column("last_run_id", String(64)),
    Column("failed_step", String(64)),
    Column("failure_reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Where its runs and workload live, from its request; NULL: reserved before placement.
    Column("worker_host", String(255)),
    CheckConstraint(_in("state", list(TenantState)), name="ck_tenants_state"),
    UniqueConstraint("request_id", name="uq_tenants_request_id"),
    UniqueConstraint("live_slug", name="uq_tenants_live_slug"),
    # A unique index rather than a constraint: SQLite adds it without rebuilding the table.
    Index("uq_tenants_live_key", "live_key", unique=True),
    Index("ix_tenants_slug", "slug"),
    Index("ix_tenants_state", "state"),
    Index("ix_tenants_worker_host", "worker_host"),
)

ledger = Table(
    "ledger",
    metadata,
    Column(
        "tenant_id", ForeignKey("tenants.tenant_id", name="fk_ledger_tenant_id"), primary_key=True
    ),
    Column("kind", String(64), primary_key=True),
    Column("state", String(20), nullable=False),
    Column("handle", Text, nullable=False),
    Column("run_id", String(64)),
    Column("seq", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_ledger_state", "state"),
)

compensations = Table(
    "compensations",
    metadata,
    Column("failed_run_id", String(64), primary_key=True),
    Column(
        "tenant_id",
        ForeignKey("tenants.tenant_id", name="fk_compensations_tenant_id"),
        nullable=False,
    ),
    Column("compensation_run_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("gave_up_at", UTCDateTime, nullable=True),
    Index("ix_compensations_tenant_id", "tenant_id"),
)

# One lifecycle operation per tenant at a time: the primary key is the claim.
operations = Table(
    "operations",
    metadata,
    Column(
        "tenant_id",
        ForeignKey("tenants.tenant_id", name="fk_operations_tenant_id"),
        primary_key=True,
    ),
    Column("kind", String(20), nullable=False),
    Column("holder", String(80), nullable=False),
    Column("run_id", String(64)),
    Column("claimed_at", UTCDateTime, nullable=False),
    Index("ix_operations_run_id", "run_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    # sha256 of the token's secret part: the token itself is never stored.
    Column("secret_hash", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("org", String(30)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# Console sessions, kept here so that the browser holds only a random id: a stolen signing key
# or an old cookie opens nothing once the row is gone (logout, revocation, expiry).
console_sessions = Table(
    "console_sessions",
    metadata,
    # sha256 of the session id the cookie carries: the id itself is never stored.
    Column("session_hash", String(64), primary_key=True),
    Column("token_id", String(32)),  # NULL before login (the login form's CSRF token)
    Column("data", Text, nullable=False),  # the session's JSON object
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_console_sessions_token_id", "token_id"),
    Index("ix_console_sessions_expires_at", "expires_at"),
)

# Bulk retries and decommissions: what a batch selected, and each tenant's outcome so far (a JSON
# list, rewritten as the batch goes; a batch is a few hundred tenants at most per filter).
batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(32), primary_key=True),
    Column("action", String(20), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("owner", String(300), nullable=False),  # who may read it (service.batches.owner_of)
    Column("selection", Text, nullable=False),  # {"filter": {...}} or {"slugs": [...]}
    Column("items", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index("ix_batches_created_at", "created_at"),
)

# The edge's routes when the platform has several hosts (registry.routes); on one host the edge
# keeps its own table (resources.route_table). A row is a route, from Allocate to its release.
routes = Table(
    "routes",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("tenant_key", String(63), nullable=False),
    Column("state", String(10), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("tenant_id", String(36), nullable=False),
    Column("worker_host", String(255)),  # where the workload is; NULL: the edge's own host
    CheckConstraint(_in("state", list(ROUTE_STATES)), name="ck_routes_state"),
    UniqueConstraint("tenant_key", name="uq_routes_tenant_key"),
)
