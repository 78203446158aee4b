"""Initial schema: requests, tenants (slug reservation), resource ledger, compensations.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TENANT_STATES = "'provisioning', 'active', 'failed', 'decommissioning', 'decommissioned'"
REQUEST_STATES = "'pending', 'launched', 'rejected'"


def _timestamp(name: str) -> "sa.Column[Any]":
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    _create_requests()
    _create_tenants()
    _create_ledger()
    _create_compensations()


def _create_requests() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(30), nullable=False),
        sa.Column("org", sa.String(30), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("admin_email", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("run_id", sa.String(64)),
        sa.Column("tenant_id", sa.String(36)),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(f"state IN ({REQUEST_STATES})", name="ck_requests_state"),
    )
    op.create_index("ix_requests_state_created_at", "requests", ["state", "created_at"])


def _create_tenants() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("slug", sa.String(30), nullable=False),
        sa.Column("org", sa.String(30), nullable=False),
        sa.Column("plan", sa.String(40), nullable=False),
        sa.Column("admin_email", sa.String(320), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        # The slug while the tenant is not decommissioned, NULL after: reserves the slug atomically.
        sa.Column("live_slug", sa.String(30)),
        sa.Column("last_run_id", sa.String(64)),
        sa.Column("failed_step", sa.String(64)),
        sa.Column("failure_reason", sa.Text()),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.request_id"], name="fk_tenants_request_id"
        ),
        sa.UniqueConstraint("request_id", name="uq_tenants_request_id"),
        sa.UniqueConstraint("live_slug", name="uq_tenants_live_slug"),
        sa.CheckConstraint(f"state IN ({TENANT_STATES})", name="ck_tenants_state"),
    )
    op.create_index("ix_tenants_slug", "tenants", ["slug"])
    op.create_index("ix_tenants_state", "tenants", ["state"])


def _create_ledger() -> None:
    op.create_table(
        "ledger",
        sa.Column("tenant_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("handle", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("seq", sa.Integer(), nullable=False),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.tenant_id"], name="fk_ledger_tenant_id"),
    )
    op.create_index("ix_ledger_state", "ledger", ["state"])


def _create_compensations() -> None:
    op.create_table(
        "compensations",
        sa.Column("failed_run_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("compensation_run_id", sa.String(64)),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.tenant_id"], name="fk_compensations_tenant_id"
        ),
    )
    op.create_index("ix_compensations_tenant_id", "compensations", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("compensations")
    op.drop_table("ledger")
    op.drop_table("tenants")
    op.drop_table("requests")
