"""Worker-side job transitions: claim, heartbeat, progress, metrics, checkpoints, finish, reap.

Every write is a conditional UPDATE (or an insert guarded by one) fenced by the job id, the
attempt and the expected status, and, for a worker's writes, its worker id: a stale worker
whose lease was taken over can never overwrite a newer attempt. Functions take a session and
never commit (the caller owns commit, see ``drtrain.kit.db.session_scope``).

Finishing while ``cancelling``: a job that runs to completion before the worker noticed the
cancel request ends ``succeeded`` (the model is complete and valid, so it is kept and
``status_reason`` says the cancel came too late); it ends ``cancelled`` only when training
actually stopped early.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from drtrain.jobs.warnings import merge as merge_warnings
from drtrain.kit.models import TERMINAL_STATUSES, Checkpoint, Job, JobStatus, MetricPoint, utcnow
from drtrain.tenants import repository as tenants_repo

LIVE = (JobStatus.running, JobStatus.cancelling)
# The status_reason of a job that completed while its cancel was on the way (module docstring).
CANCEL_TOO_LATE = "finished before the cancel request took effect"


@dataclass(frozen=True)
class HeartbeatResult:
    ok: bool                 # False: this worker no longer holds the job (fenced out / terminal)
    cancel_requested: bool = False


@dataclass(frozen=True)
class MetricValue:
    phase: str
    layer: int | None
    epoch: int
    name: str
    value: float
    at: datetime | None = None  # when its epoch ended; None: when it is written


def _fence(job_id: str, attempt: int, worker_id: str | None):  # noqa: ANN202
    conds = [Job.id == job_id, Job.attempt == attempt, Job.status.in_(LIVE)]
    if worker_id is not None:
        conds.append(Job.worker_id == worker_id)
    return conds


def _changed(result: Any) -> int:
    """Rows an UPDATE matched (``Session.execute`` is typed as returning a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def transition(session: Session, job_id: str, expected: str, **values: Any) -> bool:
    """Move a job from ``expected`` to the values given; False when it was not in that state
    (someone else moved it first)."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == expected)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False))
    return _changed(result) == 1


def claim(session: Session, job_id: str, worker_id: str, lease_seconds: float, *,
          now: datetime | None = None) -> Job | None:
    """queued (and dispatched) -> running for this worker. A running job whose lease has expired (its worker
    died and the reaper has not run yet) is taken over with attempt + 1 if attempts remain.
    None when not claimable (running elsewhere with a live lease, cancelling, terminal, gone)."""
    now = now or utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    common = dict(status=JobStatus.running, worker_id=worker_id, lease_expires_at=lease,
                  heartbeat_at=now, started_at=func.coalesce(Job.started_at, now),
                  updated_at=now, cancel_requested=False)
    # A job waiting in its tenant's queue has no slot yet: it is not the workers' to take.
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued,
                          Job.dispatched_at.is_not(None))
        .values(**common).execution_options(synchronize_session=False))
    if _changed(res) != 1:
        res = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running,
                              Job.lease_expires_at < now, Job.attempt < Job.max_attempts)
            .values(attempt=Job.attempt + 1, **common)
            .execution_options(synchronize_session=False))
        if _changed(res) != 1:
            return None
    session.flush()
    job = session.get(Job, job_id, populate_existing=True)
    return job


def heartbeat(session: Session, job_id: str, attempt: int, worker_id: str, lease_seconds: float,
              *, now: datetime | None = None) -> HeartbeatResult:
    """Renew the lease; tell the worker whether it still holds the job and whether to stop."""
    now = now or utcnow()
    res = session.execute(
        update(Job).where(*_fence(job_id, attempt, worker_id))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        .execution_options(synchronize_session=False))
    if _changed(res) != 1:
        return HeartbeatResult(ok=False)
    cancel = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
    return HeartbeatResult(ok=True, cancel_requested=bool(cancel))


def report_progress(session: Session, job_id: str, attempt: int, phase: str, layer: int | None,
                    epoch: int, progress: float, *, worker_id: str | None = None) -> bool:
    res = session.execute(
        update(Job).where(*_fence(job_id, attempt, worker_id))
        .values(phase=phase, layer=layer, epoch=epoch,
                progress=max(0.0, min(1.0, float(progress))), updated_at=utcnow())
        .execution_options(synchronize_session=False))
    return _changed(res) == 1


def _lock_live_job(session: Session, job_id: str, attempt: int,
                   worker_id: str | None) -> str | None:
    """The job's tenant id while this attempt still owns the job, else None."""
    # FOR UPDATE serialises seq assignment per job on PostgreSQL (SQLite ignores it but
    # serialises writers anyway).
    row = session.execute(
        select(Job.tenant_id).where(*_fence(job_id, attempt, worker_id)).with_for_update()
    ).first()
    return None if row is None else row[0]


def add_metrics(session: Session, job_id: str, attempt: int, points: Iterable[MetricValue], *,
                worker_id: str | None = None) -> int | None:
    """Append points with seq = max(seq) + 1, ...; a point whose natural key (phase, layer,
    epoch, name) already exists is skipped, so a resumed attempt never writes one twice.
    Returns how many were written, or None when fenced out."""
    if not _lock_live_job(session, job_id, attempt, worker_id):
        return None
    pts = list(points)
    if not pts:
        return 0
    existing: set[tuple[str, int, int, str]] = set(session.execute(
        select(MetricPoint.phase, MetricPoint.layer_key, MetricPoint.epoch, MetricPoint.name)
        .where(MetricPoint.job_id == job_id,
               MetricPoint.epoch.in_(sorted({p.epoch for p in pts})),
               MetricPoint.phase.in_(sorted({p.phase for p in pts})))).all())
    seq = session.execute(select(func.coalesce(func.max(MetricPoint.seq), 0))
                          .where(MetricPoint.job_id == job_id)).scalar_one()
    now = utcnow()
    rows = []
    for p in pts:
        key = (p.phase, -1 if p.layer is None else p.layer, p.epoch, p.name)
        if key in existing:
            continue
        existing.add(key)
        seq += 1
        rows.append({"job_id": job_id, "seq": seq, "attempt": attempt, "phase": p.phase,
                     "layer": p.layer, "layer_key": key[1], "epoch": p.epoch, "name": p.name,
                     "value": float(p.value), "at": p.at or now})
    if rows:
        # One Core statement for the epoch's points (an executemany): the ORM built, tracked
        # and inserted an object per point, which a worker pays every epoch.
        session.execute(insert(MetricPoint), rows)
    return len(rows)


def add_checkpoint(session: Session, job_id: str, attempt: int, *, kind: str, phase: str | None,
                   layer: int | None, epoch: int | None, object_key: str, sha256: str,
                   size_bytes: int, worker_id: str | None = None) -> Checkpoint | None:
    """Record an uploaded checkpoint (None when fenced out: the object is then orphaned,
    which is harmless because nothing points to it)."""
    tenant_id = _lock_live_job(session, job_id, attempt, worker_id)
    if tenant_id is None:
        return None
    ckpt = Checkpoint(job_id=job_id, kind=kind, phase=phase, layer=layer, epoch=epoch,
                      attempt=attempt, object_key=object_key, sha256=sha256,
                      size_bytes=size_bytes, created_at=utcnow())
    session.add(ckpt)
    session.flush()
    tenants_repo.add_storage(session, tenant_id, size_bytes)  # the tenant's quota counter
    return ckpt


def finish(session: Session, job_id: str, attempt: int, status: JobStatus | str,
           reason: str | None, result: dict[str, Any] | None = None, *,
           worker_id: str | None = None) -> bool:
    """running|cancelling -> succeeded|failed|cancelled (see the module docstring for a job
    that succeeds while cancelling). False when fenced out."""
    status = JobStatus(status)
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"finish() needs a terminal status, got {status}")
    now = utcnow()
    values: dict[str, Any] = dict(status=status, status_reason=reason, finished_at=now,
                                  updated_at=now, lease_expires_at=None, result=result)
    if status is JobStatus.succeeded:
        values["progress"] = 1.0
        if reason is None:
            # Decided by the row itself, in the same UPDATE: a cancel that landed after the
            # worker last looked is still explained.
            values["status_reason"] = case((Job.status == JobStatus.cancelling, CANCEL_TOO_LATE),
                                           else_=None)
    res = session.execute(update(Job).where(*_fence(job_id, attempt, worker_id)).values(**values)
                          .execution_options(synchronize_session=False))
    return _changed(res) == 1


def expire_leases_of_dead(session: Session, host: str, alive: Callable[[int], bool], *,
                          now: datetime | None = None) -> list[str]:
    """End the live leases that processes of ``host`` hold (worker ids are ``host:pid``) where
    ``alive(pid)`` says the process is gone: a training process killed (out of memory,
    kill -9) would otherwise hold its job until its lease runs out. The job is then claimed
    at once by the redelivered message, or requeued by the reaper's next round. Returns the
    ids whose lease ended."""
    now = now or utcnow()
    held = session.execute(
        select(Job.id, Job.worker_id).where(
            Job.status.in_(LIVE), Job.lease_expires_at > now,
            Job.worker_id.startswith(f"{host}:", autoescape=True))).all()
    ended = []
    for job_id, worker_id in held:
        pid = str(worker_id).rpartition(":")[2]
        if not pid.isdigit() or alive(int(pid)):
            continue
        res = session.execute(
            update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                              Job.status.in_(LIVE), Job.lease_expires_at > now)
            .values(lease_expires_at=now).execution_options(synchronize_session=False))
        if _changed(res) == 1:
            ended.append(job_id)
    return ended


def requeue_expired(session: Session, now: datetime | None = None) -> list[str]:
    """Jobs whose worker stopped heart-beating: back to queued with attempt + 1 while attempts
    remain, else failed; a cancelling one becomes cancelled. Returns the ids to re-publish."""
    now = now or utcnow()
    expired = session.execute(
        select(Job.id, Job.status, Job.attempt, Job.max_attempts)
        .where(Job.status.in_(LIVE), Job.lease_expires_at < now)).all()
    requeued: list[str] = []
    for job_id, status, attempt, max_attempts in expired:
        fence = (Job.id == job_id, Job.attempt == attempt, Job.status == status,
                 Job.lease_expires_at < now)
        base: dict[str, Any] = dict(worker_id=None, lease_expires_at=None, updated_at=now)
        values: dict[str, Any]
        if status == JobStatus.cancelling:
            values = dict(status=JobStatus.cancelled, finished_at=now,
                          status_reason="cancelled (worker lost while cancelling)", **base)
        elif attempt < max_attempts:
            values = dict(status=JobStatus.queued, attempt=attempt + 1, published_at=None,
                          status_reason=f"worker lost; retrying (attempt {attempt + 1} of "
                                        f"{max_attempts})", **base)
        else:
            values = dict(status=JobStatus.failed, finished_at=now,
                          status_reason=f"worker lost {attempt} times", **base)
        res = session.execute(update(Job).where(*fence).values(**values)
                              .execution_options(synchronize_session=False))
        if _changed(res) == 1 and values["status"] == JobStatus.queued:
            requeued.append(job_id)
    return requeued


def stale_queued(session: Session, older_than: datetime, limit: int = 1000) -> list[str]:
    """The oldest ``limit`` queued jobs last published (or dispatched) before ``older_than``:
    their message may have vanished with the broker, so they are re-published (claim() makes
    duplicates harmless). Bounded, so that a round asks the broker about a bounded number of
    jobs; the next ones are looked at once these have been re-published or claimed."""
    return list(session.execute(
        select(Job.id).where(Job.status == JobStatus.queued, _stale(older_than))
        .order_by(Job.created_at).limit(limit)).scalars())


def _stale(older_than: datetime):  # noqa: ANN202
    # A job waiting in its tenant's queue (dispatched_at null) has no message to lose.
    return or_(Job.published_at < older_than,
               (Job.published_at.is_(None)) & (Job.dispatched_at < older_than))


def take_for_republish(session: Session, job_id: str, older_than: datetime,
                       now: datetime | None = None) -> bool:
    """Mark a stale queued job as published now, only if it still is stale and queued: of
    several reapers that found it, exactly one wins and sends its message."""
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued, _stale(older_than))
        .values(published_at=now or utcnow()).execution_options(synchronize_session=False))
    return _changed(res) == 1


def untake_for_republish(session: Session, job_id: str, marked: datetime) -> None:
    """The publish after ``take_for_republish`` failed: make the job stale again so the next
    round retries it."""
    session.execute(update(Job).where(Job.id == job_id, Job.published_at == marked)
                    .values(published_at=None).execution_options(synchronize_session=False))


def count_queued(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Job)
                           .where(Job.status == JobStatus.queued)).scalar_one()


def mark_published(session: Session, job_ids: Sequence[str], now: datetime | None = None) -> None:
    if not job_ids:
        return
    session.execute(update(Job).where(Job.id.in_(list(job_ids)), Job.status == JobStatus.queued)
                    .values(published_at=now or utcnow())
                    .execution_options(synchronize_session=False))


def add_warnings(session: Session, job_id: str, attempt: int, worker_id: str,
                 warnings: Sequence[str]) -> bool:
    """Add what the worker found wrong with the job's data to its warnings (a fenced write;
    the union, so a resumed attempt adds nothing twice). False when no longer ours."""
    if not _lock_live_job(session, job_id, attempt, worker_id):
        return False
    current = session.execute(select(Job.warnings).where(Job.id == job_id)).scalar_one()
    merged = merge_warnings(current, list(warnings))
    if merged != (current or []):
        session.execute(update(Job).where(*_fence(job_id, attempt, worker_id))
                        .values(warnings=merged))
    return True
