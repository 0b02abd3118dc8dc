"""An index on jobs (tenant_id, status): a submit counts the tenant's active jobs under its
lock, and without it walked every job the tenant ever ran.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_jobs_tenant_status', 'jobs', ['tenant_id', 'status'])


def downgrade() -> None:
    op.drop_index('ix_jobs_tenant_status', table_name='jobs')
