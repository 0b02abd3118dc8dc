"""Retention: what a job keeps in the object store, and deleting a job for good.

- While a job runs it keeps its newest ``keep`` resumable checkpoints (epoch and layer ends);
  each new one recorded prunes the older ones in the same fenced transaction, so a resumed
  attempt always finds its newest checkpoint plus ``keep - 1`` fallbacks.
- Once a job has ended (succeeded, failed, cancelled) nothing can resume it, so only its final
  model is kept: the worker purges the rest when it finishes the job, and the reaper sweeps up
  jobs that ended any other way (cancelled while queued, failed by the reaper, hard-killed).
- ``DELETE /v1/jobs/{id}`` removes a finished job's rows and every object under its prefix.

Rows go first and objects only after the commit (``kit.storage.remove_after_commit``): SQL never points at a
missing object, and a failed object delete leaves an orphan, which is harmless.
"""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from drtrain.jobs import repository as q
from drtrain.kit.errors import Conflict
from drtrain.kit.models import TERMINAL_STATUSES, Checkpoint, Job, JobStatus
from drtrain.kit.storage import ObjectStore, remove_after_commit
from drtrain.tenants import repository as tenants_repo

RESUMABLE = ("layer", "epoch")


def _drop(session: Session, job_id: str, rows: list[tuple[str, str]]) -> list[str]:
    if rows:
        # The sizes of the rows this statement deleted (not of those read before it: a
        # concurrent delete of the same rows must not count them out twice).
        freed = session.execute(delete(Checkpoint).where(Checkpoint.id.in_([r[0] for r in rows]))
                                .returning(Checkpoint.size_bytes)
                                .execution_options(synchronize_session=False)).scalars().all()
        tenants_repo.add_job_storage(session, job_id, -sum(freed))
    return [r[1] for r in rows]


def prune_resumable(session: Session, job_id: str, keep: int) -> list[str]:
    """Drop the rows of the job's layer/epoch checkpoints older than its newest ``keep``;
    returns their object keys. Call it where the new checkpoint's row was written (fenced)."""
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.object_key)
        .where(Checkpoint.job_id == job_id, Checkpoint.kind.in_(RESUMABLE))
        .order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())).tuples().all()
    return _drop(session, job_id, list(rows[keep:]))


def purge_ended(session: Session, job_id: str) -> list[str]:
    """Drop every layer/epoch checkpoint row of a job that has ended (nothing if it has not);
    returns their object keys."""
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.object_key).join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.job_id == job_id, Checkpoint.kind.in_(RESUMABLE),
               Job.status.in_(TERMINAL_STATUSES))).tuples().all()
    return _drop(session, job_id, list(rows))


def ended_with_leftovers(session: Session, limit: int = 100) -> list[str]:
    """Ids of ended jobs that still hold layer/epoch checkpoints (for the reaper's sweep)."""
    return list(session.scalars(
        select(Checkpoint.job_id).join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.kind.in_(RESUMABLE), Job.status.in_(TERMINAL_STATUSES))
        .distinct().limit(limit)))


def delete_job(session: Session, store: ObjectStore, tenant_id: str, job_id: str) -> None:
    """Remove an ended job: its rows (metric points, checkpoints and tags cascade) and, after
    the commit, every object under ``jobs/<id>/``. 404 for another tenant's job, 409 while
    it is active (terminal states never change, so the check cannot go stale)."""
    job = q.get_job(session, tenant_id, job_id, fresh=True)
    status = JobStatus(job.status)
    if not status.terminal:
        raise Conflict(f"job {job_id} is {status.value}; cancel it and delete it once it has "
                       "ended")
    # Checkpoints first (not by the job's cascade), so the bytes counted out of the tenant's
    # quota are those of the rows this statement deleted.
    freed = session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id)
                            .returning(Checkpoint.object_key, Checkpoint.size_bytes)
                            .execution_options(synchronize_session=False)).tuples().all()
    keys = [key for key, _ in freed]
    tenants_repo.add_storage(session, tenant_id, -sum(size for _, size in freed))
    session.execute(delete(Job).where(Job.id == job_id, Job.tenant_id == tenant_id,
                                      Job.status.in_(TERMINAL_STATUSES))
                    .execution_options(synchronize_session=False))
    session.expunge(job)
    remove_after_commit(session, store, keys, prefixes=[f"jobs/{job_id}/"])
