"""A synthetic history on PostgreSQL: many ended jobs, each with its final model's checkpoint,
plus the few live rows a reaper round looks at (running jobs with resumable checkpoints,
queued jobs, ended jobs whose leftovers are not swept yet). Shared by ``bench.reaper_cost``
and the query-plan test of the reaper (tests/worker/test_reaper_plans.py).

Rows are made by ``generate_series`` in the database: a million jobs take seconds, not the
minutes an ORM insert would.
"""
from __future__ import annotations

from sqlalchemy import Connection, text

TENANT = "f" * 32

_JOBS = """
INSERT INTO jobs (id, tenant_id, dataset_id, spec, status, progress, attempt, max_attempts,
                  cancel_requested, created_at, dispatched_at, updated_at, finished_at,
                  published_at)
SELECT md5('job' || i), :tenant, 'builtin:digits', '{}', :status, 1.0, 1, 3, false,
       now() - (i || ' seconds')::interval, now() - (i || ' seconds')::interval, now(), now(),
       now() - (i || ' seconds')::interval
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS i
"""
_CHECKPOINTS = """
INSERT INTO checkpoints (id, job_id, kind, attempt, object_key, sha256, size_bytes, created_at)
SELECT md5(:kind || i), md5('job' || i), :kind, 1, 'jobs/' || md5('job' || i) || '/' || :kind,
       repeat('0', 64), 1000, now()
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS i
"""


def _jobs(conn: Connection, first: int, last: int, status: str, kinds: tuple[str, ...]) -> None:
    if last < first:
        return
    conn.execute(text(_JOBS), dict(tenant=TENANT, status=status, first=first, last=last))
    for kind in kinds:
        conn.execute(text(_CHECKPOINTS), dict(kind=kind, first=first, last=last))


def fill_history(conn: Connection, ended_jobs: int, *, live: int = 50) -> None:
    """``ended_jobs`` succeeded jobs with a final checkpoint each, then ``live`` each of:
    running jobs with an epoch checkpoint, queued jobs, and ended jobs that still hold an
    epoch checkpoint. Analysed afterwards, as autovacuum would have by then."""
    conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (:t, 'history', now())"
                      " ON CONFLICT DO NOTHING"), dict(t=TENANT))
    _jobs(conn, 1, ended_jobs, "succeeded", ("final",))
    n = ended_jobs
    _jobs(conn, n + 1, n + live, "running", ("epoch",))
    _jobs(conn, n + live + 1, n + 2 * live, "queued", ())
    _jobs(conn, n + 2 * live + 1, n + 3 * live, "failed", ("epoch",))
    conn.execute(text("UPDATE jobs SET lease_expires_at = now() + interval '1 hour', "
                      "finished_at = NULL WHERE status = 'running'"))
    conn.execute(text("ANALYZE jobs"))
    conn.execute(text("ANALYZE checkpoints"))
