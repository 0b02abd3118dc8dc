"""The fast lane of the three hottest reads: ``GET /v1/jobs/{job_id}``,
``GET /v1/jobs`` (first pages) and ``GET /v1/jobs/{job_id}/metrics``.

Profiles put most of a status GET's CPU in FastAPI's routing and dependency resolution, the
ORM session and the worker-thread hop. This middleware answers the plain successful case of
those routes itself: a well-formed request with a known key (cached, or looked up as the
route looks it up: ``api.lane_auth``; its address not over its failed-auth budget) for a row
that exists. It reads through
``drtrain.jobs.raw_reads`` (plain DBAPI rows) and answers with the bytes and ETag the routes
would (``api.reads``). A SQLite file is read right here, with no thread hop (a WAL read never
waits for a writer); another database is read in one hop, as ``Database.read`` does.
A job or a first page whose tenant's jobs have not changed since it was read is answered
from ``api.job_cache`` with no query at all (``drtrain.jobs.changes`` says when they change).

Anything else (no or unknown key, a parameter FastAPI would refuse or that this lane does not
take, such as ``page_token``, a missing job, any error) goes on, untouched, to the routes in
``api/routers/jobs.py``: every error, and the OpenAPI document, stay theirs.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api import reads
from api.job_cache import BodiesByBytes, JobBodies
from api.lane_auth import bearer_key, lane_tenant_id
from api.routers.jobs import MAX_SEQ
from api.routers.jobs import router as jobs_router
from drtrain.jobs import raw_reads
from drtrain.jobs.spec import TAG_PATTERN
from drtrain.kit.db import local_file_sqlite, raw_reader
from drtrain.kit.ids import ID_PATTERN

logger = logging.getLogger(__name__)
_ID = re.compile(ID_PATTERN)
_TAG = re.compile(TAG_PATTERN)
_STATUSES = frozenset(("queued", "running", "succeeded", "failed", "cancelling", "cancelled"))
PREFIX = "/v1/jobs"
TEMPLATES = {"job": PREFIX + "/{job_id}", "list": PREFIX, "metrics": PREFIX + "/{job_id}/metrics"}
JOB_NAMES = tuple(c.key for c in reads.JOB_COLUMNS)
SUMMARY_NAMES = tuple(c.key for c in reads.JOB_SUMMARY_COLUMNS)


def _int(text: str | None, low: int, high: int, default: int) -> int | None:
    """The value as FastAPI would take it, or None when this lane leaves it to FastAPI."""
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or (
            len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if low <= value <= high else None


def _query(scope: Scope) -> dict[str, str] | None:
    raw = scope["query_string"]
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs) or "" in params.values():
        return None  # a repeated or empty parameter: FastAPI's call
    return params


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """(API key, If-None-Match) as FastAPI's HTTPBearer and Header() would read them."""
    authorization = if_none_match = None
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"if-none-match" and if_none_match is None:
            if_none_match = value.decode("latin-1")
    return bearer_key(authorization), if_none_match


def _job(factory: Any, tenant_id: str, job_id: str) -> reads.Body | None:
    with raw_reader(factory) as (conn, dialect):
        row = raw_reads.job_view(conn, dialect, tenant_id, job_id, JOB_NAMES)
    return None if row is None else reads.job_with_etag(row)


def _list(factory: Any, tenant_id: str, status: str | None, page_size: int, with_spec: bool,
          tag: str | None) -> reads.Body:
    with raw_reader(factory) as (conn, dialect):
        rows, token = raw_reads.job_views(conn, dialect, tenant_id,
                                          JOB_NAMES if with_spec else SUMMARY_NAMES,
                                          status=status, page_size=page_size, tag=tag)
    return reads.jobs_page_with_etag((rows, token, with_spec))


class FullPages(BodiesByBytes):
    """Metrics pages that can no longer change, by (job, since, limit): a page that came
    back full. Points are only ever appended, each with a seq above every committed one
    (``drtrain.jobs.lifecycle.add_metrics``), and go only with their job, so the first
    ``limit`` points after ``since`` stay those points. The job's existence (and tenant) is
    still checked on every request."""

    def __init__(self, max_bytes: int = 32 * 2**20) -> None:
        super().__init__(max_bytes, largest_share=4)

    def get(self, key: tuple[str, int, int]) -> reads.Body | None:
        entry = self._lookup(key)
        return None if entry is None else entry[1]

    def put(self, key: tuple[str, int, int], page: reads.Body) -> None:
        self._store(key, None, page)


def _metrics(factory: Any, tenant_id: str, job_id: str, since: int, limit: int,
             pages: FullPages) -> reads.Body | None:
    key = (job_id, since, limit)
    with raw_reader(factory) as (conn, dialect):
        if not raw_reads.job_exists(conn, dialect, tenant_id, job_id):
            return None
        page = pages.get(key)
        if page is not None:
            return page
        columns = raw_reads.metric_columns(conn, dialect, job_id, since, limit)
    page = reads.metrics_page_body(columns, since)
    if len(columns[0]) == limit:
        pages.put(key, page)
    return page


Plan = tuple[str, Callable[..., reads.Body | None], tuple[Any, ...]]


def _plan(path: str, params: dict[str, str]) -> Plan | None:
    """(route, read, its arguments after the tenant) for a request this lane answers."""
    if path == PREFIX:
        status, tag, include = params.get("status"), params.get("tag"), params.get("include")
        page_size = _int(params.get("page_size"), 1, 200, 50)
        if ("page_token" in params or page_size is None or include not in (None, "spec")
                or (status is not None and status not in _STATUSES)
                or (tag is not None and not _TAG.fullmatch(tag))):
            return None
        return "list", _list, (status, page_size, include == "spec", tag)
    rest = path[len(PREFIX) + 1:]
    job_id, _, tail = rest.partition("/")
    if path[len(PREFIX)] != "/" or not _ID.fullmatch(job_id) or len(job_id) > 64:
        return None
    if not tail and "/" not in rest:
        return "job", _job, (job_id,)
    if tail == "metrics":
        since = _int(params.get("since"), 0, MAX_SEQ, 0)
        limit = _int(params.get("limit"), 1, 10000, 1000)
        if since is None or limit is None:
            return None
        return "metrics", _metrics, (job_id, since, limit)  # + the FullPages
    return None


class FastReads:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[str, BaseRoute] | None = None
        self.full_pages = FullPages()
        self.job_bodies = JobBodies(max_age=api.state.settings.job_cache_seconds)
        self._inline: tuple[Any, bool] = (None, False)  # (sessionmaker, read it right here?)
        self._executor: ThreadPoolExecutor | None = None

    def routes(self) -> dict[str, BaseRoute]:
        """The routes this lane stands in for (their templates name the request in /metrics)."""
        if self._routes is None:
            found = {getattr(r, "path", None): r for r in jobs_router.routes
                     if "GET" in (getattr(r, "methods", None) or ())}
            self._routes = {name: found[t] for name, t in TEMPLATES.items() if t in found}
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"].startswith(PREFIX) and not scope.get("root_path")
                and await self._answer(scope, receive, send)):
            return
        await self.app(scope, receive, send)

    async def _in_thread(self, call: Callable[[], reads.Body | None]) -> reads.Body | None:
        """One hop to a thread of this lane's own (at most ``DRTRAIN_API_THREADS``): a plain
        executor future costs the event loop a fraction of anyio's worker-thread machinery,
        the largest cost of a status GET on PostgreSQL. The connection is taken in the thread,
        as ``Database.read`` does, and the engine's pool has room for both sets of threads."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.api.state.settings.api_threads,
                                                thread_name_prefix="fast-reads")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _read(self, scope: Scope, read: Callable[..., reads.Body | None], tenant_id: str,
                    args: tuple[Any, ...]) -> reads.Body | None:
        factory = self.api.state.sessionmaker
        if self._inline[0] is not factory:
            self._inline = (factory, local_file_sqlite(factory))
        try:
            if self._inline[1]:
                return read(factory, tenant_id, *args)
            return await self._in_thread(partial(read, factory, tenant_id, *args))
        except Exception:  # noqa: BLE001 - the route repeats the read and answers its error
            logger.warning("fast read of %s failed; the route answers", scope["path"],
                           exc_info=True)
            return None

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        params = _query(scope)
        plan = None if params is None else _plan(scope["path"], params)
        if plan is None:
            return False
        name, read, args = plan
        if name == "metrics":
            args = (*args, self.full_pages)
        key, if_none_match = _headers(scope)
        route = self.routes().get(name)
        if route is None:
            return False
        tenant_id = await lane_tenant_id(self.api.state, scope, key)
        if tenant_id is None:
            return False
        # A job or a first page unchanged since it was last read is answered from memory
        # (api/job_cache.py); the version is read before the query that fills the cache.
        version = (None if name == "metrics"
                   else self.api.state.job_changes.version(tenant_id))
        cache_key = (name, tenant_id, *args)
        body = None if version is None else self.job_bodies.get(cache_key, version)
        if body is None:
            body = await self._read(scope, read, tenant_id, args)
            if body is None:
                return False  # not found (the route's 404), or failed (the route's error)
            if version is not None:
                self.job_bodies.put(cache_key, version, body)
        scope["route"] = route
        await reads.respond(body, if_none_match)(scope, receive, send)
        return True
