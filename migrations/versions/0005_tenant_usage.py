"""The per-tenant storage counter: the quota check reads one row, not two sums.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'tenant_usage',
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('storage_bytes', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant_id'),
    )
    # What the quota counted until now: datasets that did not fail, plus every checkpoint.
    op.execute("""
        INSERT INTO tenant_usage (tenant_id, storage_bytes)
        SELECT t.id,
               COALESCE((SELECT SUM(d.size_bytes) FROM datasets d
                         WHERE d.tenant_id = t.id AND d.status != 'failed'), 0)
             + COALESCE((SELECT SUM(c.size_bytes) FROM checkpoints c
                         JOIN jobs j ON j.id = c.job_id WHERE j.tenant_id = t.id), 0)
        FROM tenants t
    """)


def downgrade() -> None:
    op.drop_table('tenant_usage')
