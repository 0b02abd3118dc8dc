"""Each attempt's log lines: what a worker logged while it ran the job (its phases, warnings and
tracebacks), written by the worker in small batches (``worker.job_log``) and read by
``GET /v1/jobs/{id}/logs``.

They live in the database beside the job's metric points rather than in the object store: a
worker appends a few lines every second or two, which is one cheap INSERT, where an object
store has no append and would rewrite the whole object each time; whatever was committed
before a worker died stays readable; and a job's lines go with it when it is deleted (the
foreign key cascades). The worker bounds each attempt's bytes, so the table stays small.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from drtrain.jobs import repository as q
from drtrain.kit.errors import NotFound
from drtrain.kit.models import JobLogLine, utcnow


@dataclass(frozen=True)
class LogSlice:
    attempt: int
    lines: list[str]


def next_line(session: Session, job_id: str, attempt: int) -> int:
    """The number the attempt's next line gets (0 for an attempt with none yet)."""
    last = session.execute(select(func.max(JobLogLine.line)).where(
        JobLogLine.job_id == job_id, JobLogLine.attempt == attempt)).scalar_one()
    return 0 if last is None else last + 1


def append(session: Session, job_id: str, attempt: int, first: int,
           lines: Sequence[str]) -> None:
    """Store ``lines`` as the attempt's lines ``first``, ``first + 1``, ..."""
    if not lines:
        return
    now = utcnow()
    session.execute(insert(JobLogLine), [
        {"job_id": job_id, "attempt": attempt, "line": first + i, "text": text, "at": now}
        for i, text in enumerate(lines)])


def read(session: Session, tenant_id: str, job_id: str, attempt: int | None,
         since: int) -> LogSlice:
    """The lines of one attempt of the tenant's job (its latest by default) from line
    ``since`` on. 404 for another tenant's job, or an attempt the job has not had."""
    job = q.get_job(session, tenant_id, job_id)
    chosen = job.attempt if attempt is None else attempt
    if chosen > job.attempt:
        raise NotFound(f"job {job_id} has no attempt {chosen} (its attempts are 1 to "
                       f"{job.attempt})")
    lines = session.scalars(select(JobLogLine.text).where(
        JobLogLine.job_id == job_id, JobLogLine.attempt == chosen, JobLogLine.line >= since)
        .order_by(JobLogLine.line)).all()
    return LogSlice(attempt=chosen, lines=list(lines))
