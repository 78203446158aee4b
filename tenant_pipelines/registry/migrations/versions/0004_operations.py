"""One lifecycle operation per tenant (operations), and bounded compensation attempts.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operations",
        sa.Column(
            "tenant_id",
            sa.String(36),
            sa.ForeignKey("tenants.tenant_id", name="fk_operations_tenant_id"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("holder", sa.String(80), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_operations_run_id", "operations", ["run_id"])
    with op.batch_alter_table("compensations") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compensations") as batch:
        batch.drop_column("gave_up_at")
        batch.drop_column("attempts")
    op.drop_index("ix_operations_run_id", "operations")
    op.drop_table("operations")
