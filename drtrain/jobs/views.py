"""The job reads the API serves (a job, a page of jobs, metric points): plain columns named
by the API's views, each statement built once and run on the raw connection
(``drtrain.kit.raw_sql``), with no ORM object in between.

Every read is scoped by tenant, so another tenant's job is simply "not found" (None here;
the caller raises the 404).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, and_, bindparam, exists, func, or_, select

from drtrain.jobs.repository import decode_cursor, encode_cursor
from drtrain.kit.models import Job, JobTag, MetricPoint
from drtrain.kit.raw_sql import Prepared, RawConnection, utc_texts

METRIC_COLUMNS = (MetricPoint.seq, MetricPoint.phase, MetricPoint.layer, MetricPoint.epoch,
                  MetricPoint.name, MetricPoint.value, MetricPoint.at)
METRIC_NAMES = tuple(column.key for column in METRIC_COLUMNS)
_AT = METRIC_NAMES.index("at")

_JOB_EXISTS = Prepared(select(Job.id).where(Job.id == bindparam("job_id"),
                                            Job.tenant_id == bindparam("tenant_id")))
_METRIC_ROWS = Prepared(
    select(*METRIC_COLUMNS)
    .where(MetricPoint.job_id == bindparam("job_id"), MetricPoint.seq > bindparam("since"))
    .order_by(MetricPoint.seq).limit(bindparam("limit", type_=Integer)), text_times=True)
_LAST_SEQ = Prepared(select(func.max(MetricPoint.seq))
                     .where(MetricPoint.job_id == bindparam("job_id")))


@lru_cache(maxsize=16)
def _job_statement(names: tuple[str, ...]) -> Prepared:
    return Prepared(select(*(getattr(Job, n) for n in names)).where(
        Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id")))


def job(raw: RawConnection, tenant_id: str, job_id: str,
        names: tuple[str, ...]) -> dict[str, Any] | None:
    """The tenant's job as a dict of these columns, or None."""
    row = _job_statement(names).first(raw, {"job_id": job_id, "tenant_id": tenant_id})
    return None if row is None else dict(zip(names, row, strict=True))


def job_exists(raw: RawConnection, tenant_id: str, job_id: str) -> bool:
    """Whether the tenant has this job (one indexed lookup, no row loaded)."""
    return bool(_JOB_EXISTS.rows(raw, {"job_id": job_id, "tenant_id": tenant_id})[0])


class PageCursor(NamedTuple):
    created_at: datetime
    id: str


@lru_cache(maxsize=32)
def _page_statement(names: tuple[str, ...], by_status: bool, after_cursor: bool,
                    by_tag: bool) -> Prepared:
    """A page, newest first, one row more than asked (whether a next page exists); created_at
    and id close every row: the cursor of the page's last row. The cursor is the (created_at,
    id) of the last row served, so rows inserted meanwhile never shift a page (unlike
    OFFSET)."""
    stmt: Select[Any] = select(*(getattr(Job, n) for n in names), Job.created_at, Job.id)
    stmt = stmt.where(Job.tenant_id == bindparam("tenant_id"))
    if by_status:
        stmt = stmt.where(Job.status == bindparam("status"))
    if by_tag:
        stmt = stmt.where(exists().where(JobTag.job_id == Job.id, JobTag.tag == bindparam("tag")))
    if after_cursor:
        stmt = stmt.where(or_(Job.created_at < bindparam("after_created"),
                              and_(Job.created_at == bindparam("after_created"),
                                   Job.id < bindparam("after_id"))))
    return Prepared(stmt.order_by(Job.created_at.desc(), Job.id.desc())
                    .limit(bindparam("limit", type_=Integer)))


def job_page(raw: RawConnection, tenant_id: str, names: tuple[str, ...], *,
             status: str | None, page_size: int, page_token: str | None,
             tag: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the tenant's jobs as dicts of these columns, and the next page's token.
    A token this API did not issue is a 422 (``decode_cursor``)."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": page_size + 1}
    if status:
        params["status"] = status
    if tag:
        params["tag"] = tag
    if page_token:
        params["after_created"], params["after_id"] = decode_cursor(page_token)
    columns = _page_statement(names, bool(status), bool(page_token), bool(tag)).columns(
        raw, params)
    n = len(names)
    token = None
    if len(columns[0]) > page_size:
        token = encode_cursor(PageCursor(columns[n][page_size - 1], columns[n + 1][page_size - 1]))
    page = [dict(zip(names, values, strict=True))
            for values in zip(*columns[:n], strict=True)][:page_size]
    return page, token


def metric_columns(raw: RawConnection, job_id: str, since: int,
                   limit: int) -> list[Sequence[Any]]:
    """The job's points after ``since`` in seq order, as columns of ``METRIC_NAMES``, ``at``
    as the API's ISO-8601 text."""
    columns: list[Sequence[Any]] = list(_METRIC_ROWS.columns(
        raw, {"job_id": job_id, "since": since, "limit": limit}))
    columns[_AT] = utc_texts(columns[_AT])
    return columns


def last_seq(raw: RawConnection, job_id: str) -> int:
    rows, _ = _LAST_SEQ.rows(raw, {"job_id": job_id})
    return int(rows[0][0] or 0) if rows else 0
