"""Queries for jobs and checkpoints (the reads the API serves as views are in
``drtrain.jobs.views``).

Every query is scoped by tenant, so another tenant's job is simply "not found".
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from drtrain.kit.errors import Invalid, NotFound
from drtrain.kit.ids import ID_PATTERN
from drtrain.kit.models import Checkpoint, Job, JobTag


def get_job(session: Session, tenant_id: str, job_id: str, *, fresh: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id)
    if fresh:
        # Re-read the row even if this session already holds it (after a conditional UPDATE).
        stmt = stmt.execution_options(populate_existing=True)
    job = session.scalars(stmt).one_or_none()
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def find_by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    ).one_or_none()


def insert_jobs(session: Session, rows: list[dict[str, Any]]) -> None:
    """New jobs (``service.job_row``) and their tag rows, each table in one executemany: a
    submit batch's rows without the ORM's unit of work, the largest cost of a batch."""
    conn = session.connection()
    conn.execute(insert(Job), rows)
    tags = [{"job_id": row["id"], "tag": tag} for row in rows
            for tag in dict.fromkeys(row["tags"] or ())]
    if tags:
        conn.execute(insert(JobTag), tags)


class _Cursorable(Protocol):
    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> str: ...


def encode_cursor(row: _Cursorable) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        # The id goes into a query: only the shape of an id this API made may get there.
        if not isinstance(job_id, str) or not re.match(ID_PATTERN, job_id):
            raise ValueError("not a job id")
        return datetime.fromisoformat(created), job_id
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Invalid("page_token is not a token this API issued",
                      errors=[{"loc": ["query", "page_token"], "msg": "invalid page token"}]) from exc


def checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    return list(session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.created_at, Checkpoint.id)))


def checkpoint(session: Session, job_id: str, checkpoint_id: str) -> Checkpoint | None:
    return session.scalars(select(Checkpoint).where(
        Checkpoint.job_id == job_id, Checkpoint.id == checkpoint_id)).one_or_none()


def final_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    return session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.kind == "final")
        .order_by(Checkpoint.created_at.desc()).limit(1)).one_or_none()


def resumable_checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    """Layer and epoch checkpoints of the job, newest first."""
    return list(session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id,
                                 Checkpoint.kind.in_(("layer", "epoch")))
        .order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())))


def count_by_status(session: Session) -> dict[str, int]:
    """Jobs of every tenant by status (for the operator's /metrics)."""
    return dict(session.execute(
        select(Job.status, func.count()).group_by(Job.status)).tuples().all())


def recent_spans(session: Session, limit: int) -> list[tuple[datetime | None, datetime | None]]:
    """(started_at, finished_at) of the newest ``limit`` finished jobs of every tenant."""
    return list(session.execute(
        select(Job.started_at, Job.finished_at)
        .where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
        .order_by(Job.finished_at.desc()).limit(limit)).tuples().all())
