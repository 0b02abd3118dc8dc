"""Each attempt's log lines, kept in the database beside its metric points: a worker writes
them in small batches while it runs, so what it logged before a crash is there to read.

Revision ID: 0008_job_log_lines
Revises: metric_history_downsampling
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008_job_log_lines'
down_revision: str | None = 'metric_history_downsampling'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('job_log_lines',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_log_lines_job_id_jobs'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'attempt', 'line', name=op.f('pk_job_log_lines'))
    )


def downgrade() -> None:
    op.drop_table('job_log_lines')
