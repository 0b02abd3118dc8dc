"""Bounded metric history: jobs.metrics_downsampled_at marks an ended job whose metric curves
the reaper has downsampled, and a partial index finds those that are due.

Revision ID: metric_history_downsampling
Revises: checkpoints_resumable_index
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'metric_history_downsampling'
down_revision: str | None = 'checkpoints_resumable_index'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_YET = sa.text("metrics_downsampled_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('metrics_downsampled_at', sa.DateTime(timezone=True),
                                   nullable=True))
    op.create_index('ix_jobs_history_due', 'jobs', ['finished_at'],
                    postgresql_where=_NOT_YET, sqlite_where=_NOT_YET)


def downgrade() -> None:
    op.drop_index('ix_jobs_history_due', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('metrics_downsampled_at')
