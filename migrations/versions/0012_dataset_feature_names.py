"""A CSV dataset keeps its feature columns' names, so that rows to classify can be matched
to them by name. Datasets checked before have none (null), as NPZ and IDX ones.

Revision ID: 0012_dataset_feature_names
Revises: 0011_job_dispatch_queue
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012_dataset_feature_names'
down_revision: str | None = '0011_job_dispatch_queue'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('feature_names', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('feature_names')
