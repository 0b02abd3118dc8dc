"""PostgreSQL: NOTIFY drtrain_jobs with the tenant's id on every committed change to a job row,
so API processes can cache job reads until they change (drtrain/kit/job_changes.py). SQLite
needs nothing: the API reads its data_version.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # NOTIFY is transactional: delivered at commit, never for a rolled-back change, and one
    # per tenant per transaction however many rows it touched (identical payloads merge).
    op.execute("""
        CREATE FUNCTION drtrain_notify_job_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('drtrain_jobs', COALESCE(NEW.tenant_id, OLD.tenant_id));
            RETURN NULL;
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER drtrain_jobs_changed AFTER INSERT OR UPDATE OR DELETE ON jobs
        FOR EACH ROW EXECUTE FUNCTION drtrain_notify_job_change()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS drtrain_jobs_changed ON jobs")
    op.execute("DROP FUNCTION IF EXISTS drtrain_notify_job_change()")
