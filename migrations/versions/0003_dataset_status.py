"""Datasets are checked after the upload is answered: a status (validating | ready | failed)
with its reason, and a summary that stays null until the check has passed.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMMARY = [('n_samples', sa.Integer()), ('n_features', sa.Integer()),
            ('n_classes', sa.Integer()), ('class_counts', sa.JSON()),
            ('feature_range', sa.JSON()), ('visible_units_hint', sa.String(length=16))]


def upgrade() -> None:
    # Every dataset before this revision was checked before it was stored: ready.
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('status', sa.String(length=16), nullable=False,
                                   server_default='ready'))
        batch.add_column(sa.Column('status_reason', sa.Text(), nullable=True))
        for name, type_ in _SUMMARY:
            batch.alter_column(name, existing_type=type_, nullable=True)


def downgrade() -> None:
    # Rows without a summary cannot go back to the old, all-required schema.
    op.execute("DELETE FROM datasets WHERE status <> 'ready'")
    with op.batch_alter_table('datasets') as batch:
        for name, type_ in _SUMMARY:
            batch.alter_column(name, existing_type=type_, nullable=False)
        batch.drop_column('status_reason')
        batch.drop_column('status')
