"""The tenants' queues: ``jobs.dispatched_at`` says when a job took one of its tenant's
running slots (null while it waits), with a partial index holding only the waiting jobs.
Every job already stored was sent to the workers when it was submitted, so each counts as
dispatched then.

Revision ID: 0011_job_dispatch_queue
Revises: 0008_job_log_lines
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011_job_dispatch_queue'
down_revision: str | None = '0008_job_log_lines'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITING = sa.text("status = 'queued' AND dispatched_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET dispatched_at = created_at")
    op.create_index('ix_jobs_waiting', 'jobs', ['tenant_id', 'created_at', 'id'],
                    postgresql_where=_WAITING, sqlite_where=_WAITING)


def downgrade() -> None:
    op.drop_index('ix_jobs_waiting', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('dispatched_at')
