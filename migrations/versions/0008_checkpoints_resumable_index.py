"""A partial index on checkpoints (job_id) of the resumable kinds: the reaper's sweep for
ended jobs' leftover checkpoints read the whole table every round, since nothing indexed
``kind``.

Revision ID: checkpoints_resumable_index
Revises: 0007
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'checkpoints_resumable_index'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RESUMABLE = sa.text("kind IN ('layer', 'epoch')")


def upgrade() -> None:
    op.create_index('ix_checkpoints_resumable', 'checkpoints', ['job_id'],
                    postgresql_where=_RESUMABLE, sqlite_where=_RESUMABLE)


def downgrade() -> None:
    op.drop_index('ix_checkpoints_resumable', table_name='checkpoints')
