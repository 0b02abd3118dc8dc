"""Jobs get a name, tags (with an index table for filtering) and submit-time warnings.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('tags', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('warnings', sa.JSON(), nullable=True))
    op.create_table('job_tags',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_tags_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'tag', name=op.f('pk_job_tags'))
    )
    op.create_index(op.f('ix_job_tags_tag'), 'job_tags', ['tag'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_job_tags_tag'), table_name='job_tags')
    op.drop_table('job_tags')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('warnings')
        batch.drop_column('tags')
        batch.drop_column('name')
