"""Tenant keys are reserved like slugs: `live_key` = `<slug>-<org>` until decommissioned.

Two tenants could share a key with different splits (`shop-prod` + `zeta`, `shop` + `prod-zeta`)
and every backend names its resources by key. Rows already there are backfilled; should two live
tenants already share a key, the older keeps it and the newer is left without a reservation
(NULL), so that the upgrade succeeds and the conflict is left for the operator to see.

Revision ID: 0005_tenant_keys
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_tenant_keys"
down_revision = "0004"
branch_labels = None
depends_on = None

# `||` concatenates on SQLite and PostgreSQL alike.
BACKFILL = """
UPDATE tenants SET live_key = slug || '-' || org
WHERE live_slug IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM tenants AS older
    WHERE older.live_slug IS NOT NULL
      AND older.slug || '-' || older.org = tenants.slug || '-' || tenants.org
      AND (older.created_at < tenants.created_at
           OR (older.created_at = tenants.created_at AND older.tenant_id < tenants.tenant_id))
)
"""


def upgrade() -> None:
    # Plain ADD COLUMN and a unique index: SQLite would otherwise rebuild `tenants`, which the
    # ledger's foreign keys forbid while it has rows.
    op.add_column("tenants", sa.Column("live_key", sa.String(63)))
    op.execute(BACKFILL)
    op.create_index("uq_tenants_live_key", "tenants", ["live_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_tenants_live_key", "tenants")
    op.drop_column("tenants", "live_key")  # SQLite 3.35 and later drop a column in place
