"""Placement: the host each tenant's runs and workload live on (`worker_host`).

Chosen when the request is recorded, copied to the tenant when Validate reserves it. Rows
already there keep NULL: a tenant from before placement is acted on by whichever host runs it, as
before.

Revision ID: 0008_worker_hosts
Revises: 0007_batches
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_worker_hosts"
down_revision = "0007_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite would otherwise rebuild the tables (module 0005 says why not).
    op.add_column("requests", sa.Column("worker_host", sa.String(255)))
    op.add_column("tenants", sa.Column("worker_host", sa.String(255)))
    op.create_index("ix_tenants_worker_host", "tenants", ["worker_host"])


def downgrade() -> None:
    op.drop_index("ix_tenants_worker_host", "tenants")
    op.drop_column("tenants", "worker_host")
    op.drop_column("requests", "worker_host")
