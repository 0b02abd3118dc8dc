"""Read queries for jobs, metrics and checkpoints: the one place their SQL lives.

Every query is scoped by tenant, so another tenant's job is simply "not found".
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Integer, Row, Select, and_, bindparam, exists, func, insert, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from drtrain.kit.errors import Invalid, NotFound
from drtrain.kit.ids import ID_PATTERN
from drtrain.kit.models import ACTIVE_STATUSES, Checkpoint, Job, JobTag, MetricPoint, TenantUsage


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


_ACTIVE_COUNT = (select(func.count()).select_from(Job)
                 .where(Job.tenant_id == bindparam("tenant_id"),
                        Job.status.in_([s.value for s in ACTIVE_STATUSES])))


def count_active(session: Session, tenant_id: str) -> int:
    return session.execute(_ACTIVE_COUNT, {"tenant_id": tenant_id}).scalar() or 0


_ACTIVE_AND_STORED = select(
    _ACTIVE_COUNT.scalar_subquery(),
    select(TenantUsage.storage_bytes)
    .where(TenantUsage.tenant_id == bindparam("tenant_id")).scalar_subquery())


def active_and_stored(session: Session, tenant_id: str) -> tuple[int, int]:
    """The tenant's active jobs and its counted storage bytes, in one round trip (what a
    submit checks under the tenant's lock)."""
    active, stored = session.connection().execute(
        _ACTIVE_AND_STORED, {"tenant_id": tenant_id}).one()
    return int(active or 0), int(stored or 0)


def insert_jobs(session: Session, rows: list[dict[str, Any]]) -> None:
    """New jobs (``service.job_row``) and their tag rows, each table in one executemany: a
    submit batch's rows without the ORM's unit of work (a third of the batch's CPU)."""
    conn = session.connection()
    conn.execute(insert(Job), rows)
    tags = [{"job_id": row["id"], "tag": tag} for row in rows
            for tag in dict.fromkeys(row["tags"] or ())]
    if tags:
        conn.execute(insert(JobTag), tags)


T = TypeVar("T")


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


def _page_of(stmt: Select[Any], *, by_status: bool, after_cursor: bool,
             by_tag: bool = False) -> Select[Any]:
    """The filters and order of a job list page, with bound parameters (see _page_params);
    one more row than asked, to know whether there is a next page."""
    stmt = stmt.where(Job.tenant_id == bindparam("tenant_id"))
    if by_status:
        stmt = stmt.where(Job.status == bindparam("status"))
    if by_tag:
        stmt = stmt.where(exists().where(JobTag.job_id == Job.id, JobTag.tag == bindparam("tag")))
    if after_cursor:
        stmt = stmt.where(or_(Job.created_at < bindparam("after_created"),
                              and_(Job.created_at == bindparam("after_created"),
                                   Job.id < bindparam("after_id"))))
    return stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(
        bindparam("limit", type_=Integer))


def _page_params(tenant_id: str, status: str | None, page_token: str | None,
                 page_size: int, tag: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": page_size + 1}
    if status:
        params["status"] = status
    if tag:
        params["tag"] = tag
    if page_token:
        params["after_created"], params["after_id"] = decode_cursor(page_token)
    return params


def _split_page(rows: list[T], page_size: int) -> tuple[list[T], str | None]:
    if len(rows) > page_size:
        rows = rows[:page_size]
        return rows, encode_cursor(rows[-1])  # type: ignore[arg-type]
    return rows, None


def list_jobs(session: Session, tenant_id: str, *, status: str | None, page_size: int,
              page_token: str | None, tag: str | None = None) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the (created_at, id) of the last row served, so rows
    inserted meanwhile never shift a page (unlike OFFSET)."""
    params = _page_params(tenant_id, status, page_token, page_size, tag)
    stmt = _page_of(select(Job), by_status=bool(status), after_cursor=bool(page_token),
                    by_tag=bool(tag))
    return _split_page(list(session.scalars(stmt, params)), page_size)


# Plain-column reads: the API names the columns of its view and serialises the rows once,
# with no ORM object in between. The hot statements are built once (bound parameters) and
# run on the session's connection, past the ORM's result machinery.
Columns = Sequence[InstrumentedAttribute[Any]]
METRIC_COLUMNS = (MetricPoint.seq, MetricPoint.phase, MetricPoint.layer, MetricPoint.epoch,
                  MetricPoint.name, MetricPoint.value, MetricPoint.at)


@lru_cache(maxsize=16)
def _job_view_stmt(names: tuple[str, ...]) -> Select[Any]:
    return select(*(getattr(Job, n) for n in names)).where(
        Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


_JOB_EXISTS = select(Job.id).where(Job.id == bindparam("job_id"),
                                   Job.tenant_id == bindparam("tenant_id"))
_METRIC_ROWS = (select(*METRIC_COLUMNS)
                .where(MetricPoint.job_id == bindparam("job_id"), MetricPoint.seq > bindparam("since"))
                .order_by(MetricPoint.seq).limit(bindparam("limit", type_=Integer)))
_LAST_SEQ = select(func.max(MetricPoint.seq)).where(MetricPoint.job_id == bindparam("job_id"))


def job_view(session: Session, tenant_id: str, job_id: str, columns: Columns) -> dict[str, Any]:
    """The tenant's job as a dict of these columns; NotFound otherwise."""
    stmt = _job_view_stmt(tuple(c.key for c in columns))
    row = session.connection().execute(stmt, {"job_id": job_id, "tenant_id": tenant_id}
                                       ).one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row._asdict()


def job_exists(session: Session, tenant_id: str, job_id: str) -> None:
    """NotFound unless the tenant has this job (one indexed lookup, no row loaded)."""
    found = session.connection().execute(
        _JOB_EXISTS, {"job_id": job_id, "tenant_id": tenant_id}).scalar()
    if found is None:
        raise NotFound(f"job {job_id} not found")


def job_views(session: Session, tenant_id: str, columns: Columns, *, status: str | None,
              page_size: int, page_token: str | None,
              tag: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of :func:`list_jobs` as dicts of these columns."""
    names = tuple(c.key for c in columns)
    params = _page_params(tenant_id, status, page_token, page_size, tag)
    stmt = _view_page_stmt(names, bool(status), bool(page_token), bool(tag))
    rows, token = _split_page(list(session.connection().execute(stmt, params).all()), page_size)
    n = len(names)
    return [dict(zip(names, row[:n])) for row in rows], token


@lru_cache(maxsize=32)
def _view_page_stmt(names: tuple[str, ...], by_status: bool, after_cursor: bool,
                    by_tag: bool = False) -> Select[Any]:
    # created_at and id close every row: the cursor of the page's last row.
    columns = [getattr(Job, n) for n in names] + [Job.created_at, Job.id]
    return _page_of(select(*columns), by_status=by_status, after_cursor=after_cursor,
                    by_tag=by_tag)


def metric_rows(session: Session, job_id: str, since: int, limit: int) -> list[Row[Any]]:
    """Points after ``since`` in seq order, as rows of :data:`METRIC_COLUMNS`."""
    # .all() fetches in one driver call; iterating the result would fetch row by row.
    rows = session.connection().execute(
        _METRIC_ROWS, {"job_id": job_id, "since": since, "limit": limit}).all()
    return cast(list[Row[Any]], list(rows))


def last_seq(session: Session, job_id: str) -> int:
    return session.connection().execute(_LAST_SEQ, {"job_id": job_id}).scalar() or 0


def metrics_since(session: Session, job_id: str, since: int, limit: int) -> list[MetricPoint]:
    return list(session.scalars(
        select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.seq > since)
        .order_by(MetricPoint.seq).limit(limit)))


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
