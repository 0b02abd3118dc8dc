"""The job reads of the API (a job, a page of jobs, a metrics page), for the routes in
``api/routers/jobs.py`` and their shortcut (``api/fast_reads.py``) alike: one object per app
(``app.state.job_reads``), so both give the same bytes, ETags and errors by construction.

Each read runs on a raw connection (``drtrain.kit.db.raw_reader``): on a SQLite file right
where it is asked (a WAL read never waits for a writer, and costs less than a thread hop),
on another database in one hop to a thread of this object's own. A job or a page whose
tenant's jobs have not changed since it was read is answered from memory
(``api.job_cache``; ``drtrain.kit.job_changes`` says when they change), and a full metrics
page, which can no longer change, too.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from api.job_cache import FullPages, JobBodies
from api.reads import (
    JOB_NAMES,
    JOB_SUMMARY_NAMES,
    Body,
    job_body,
    metrics_page_body,
    page_body,
    with_etag,
)
from api.schemas.jobs import JobListQuery, MetricsQuery
from drtrain.jobs import views
from drtrain.kit.db import local_file_sqlite, raw_reader
from drtrain.kit.errors import NotFound
from drtrain.kit.raw_sql import RawConnection

T = TypeVar("T")


class JobReads:
    def __init__(self, state: Any) -> None:
        self.state = state  # the app's: sessionmaker, settings, job_changes
        self.bodies = JobBodies(max_age=state.settings.job_cache_seconds)
        self.full_pages = FullPages()
        self._executor: ThreadPoolExecutor | None = None
        self._reads_inline: tuple[Any, bool] = (None, False)  # (for this sessionmaker, inline?)

    async def job(self, tenant_id: str, job_id: str, *, fresh: bool = False) -> Body:
        """``fresh``: read from the database, whatever the cache holds (``no_cache``)."""
        return await self._cached(("job", tenant_id, job_id), tenant_id,
                                  partial(_job, tenant_id=tenant_id, job_id=job_id), fresh)

    async def page(self, tenant_id: str, query: JobListQuery, *, fresh: bool = False) -> Body:
        key = ("page", tenant_id, *query.model_dump().values())
        return await self._cached(key, tenant_id, partial(_page, tenant_id=tenant_id,
                                                          query=query), fresh)

    async def metrics(self, tenant_id: str, job_id: str, query: MetricsQuery) -> Body:
        """Never from the job cache: points arrive without moving the job's version."""
        return await self.run(partial(_metrics, tenant_id=tenant_id, job_id=job_id,
                                      since=query.since, limit=query.limit,
                                      pages=self.full_pages))

    async def run(self, read: Callable[[sessionmaker[Session]], T]) -> T:
        """``read(sessionmaker)``: right here on a SQLite file, else in a thread of this
        object's own (at most ``DRTRAIN_API_THREADS``; the engine's pool has room for them
        beside the request threads). A plain executor future costs the event loop much less
        than anyio's worker-thread machinery."""
        factory = self.state.sessionmaker
        if self._reads_inline[0] is not factory:
            self._reads_inline = (factory, local_file_sqlite(factory))
        if self._reads_inline[1]:
            return read(factory)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.state.settings.api_threads,
                                                thread_name_prefix="job-reads")
        return await asyncio.get_running_loop().run_in_executor(self._executor, read, factory)

    async def _cached(self, key: Hashable, tenant_id: str,
                      read: Callable[[sessionmaker[Session]], Body], fresh: bool) -> Body:
        # The version is read before the query that fills the cache (api/job_cache.py).
        version = self.state.job_changes.version(tenant_id)
        body = None if version is None or fresh else self.bodies.get(key, version)
        if body is None:
            body = await self.run(read)
            if version is not None:
                self.bodies.put(key, version, body)
        return body


def _read(factory: sessionmaker[Session], query: Callable[[RawConnection], T]) -> T:
    with raw_reader(factory) as raw:
        return query(raw)


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"job {job_id} not found")


def _job(factory: sessionmaker[Session], *, tenant_id: str, job_id: str) -> Body:
    row = _read(factory, lambda raw: views.job(raw, tenant_id, job_id, JOB_NAMES))
    if row is None:
        raise _not_found(job_id)
    return with_etag(job_body(row))


def _page(factory: sessionmaker[Session], *, tenant_id: str, query: JobListQuery) -> Body:
    with_spec = query.include == "spec"
    rows, token = _read(factory, lambda raw: views.job_page(
        raw, tenant_id, JOB_NAMES if with_spec else JOB_SUMMARY_NAMES,
        status=query.status, page_size=query.page_size, page_token=query.page_token,
        tag=query.tag))
    return with_etag(page_body(rows, token, with_spec))


def _metrics(factory: sessionmaker[Session], *, tenant_id: str, job_id: str, since: int,
             limit: int, pages: FullPages) -> Body:
    key = (job_id, since, limit)
    with raw_reader(factory) as raw:
        if not views.job_exists(raw, tenant_id, job_id):
            raise _not_found(job_id)
        page = pages.get(key)
        if page is not None:
            return page
        columns = views.metric_columns(raw, job_id, since, limit)
    page = with_etag(metrics_page_body(columns, since))
    if len(columns[0]) == limit:
        pages.put(key, page)
    return page


def no_cache(cache_control: str | None) -> bool:
    """Whether a request's Cache-Control asks for a response no cache may answer alone
    (RFC 9111, 5.2.1: ``no-cache``, or ``max-age=0``). Another API process's write is seen
    by this process's cache only once its change notice arrives: such a read goes to the
    database, which has every write committed before it was sent."""
    if not cache_control:
        return False
    directives = {d.strip().lower().replace(" ", "") for d in cache_control.split(",")}
    return "no-cache" in directives or "max-age=0" in directives
