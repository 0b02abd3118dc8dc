"""Datasets may leave labels and side values missing: how many rows carry each.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('n_labelled', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('n_with_side', sa.Integer(), nullable=True))
    # Before this revision every row of a checked dataset carried a label and a side value.
    op.execute("UPDATE datasets SET n_labelled = n_samples, n_with_side = n_samples "
               "WHERE n_samples IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('n_with_side')
        batch.drop_column('n_labelled')
