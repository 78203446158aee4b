"""Routes in the registry: the edge's route table when the platform has several hosts.

A worker host's runs make and open its tenants' routes here, and the control host's edge serves
them from here (registry.routes); a platform on one host keeps its table at the edge.

Revision ID: 0009_routes
Revises: 0008_worker_hosts
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_routes"
down_revision = "0008_worker_hosts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("tenant_key", sa.String(63), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("worker_host", sa.String(255)),
        sa.CheckConstraint("state IN ('closed', 'open')", name="ck_routes_state"),
        sa.UniqueConstraint("tenant_key", name="uq_routes_tenant_key"),
    )


def downgrade() -> None:
    op.drop_table("routes")
