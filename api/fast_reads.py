"""The shortcut of the three hottest reads: ``GET /v1/jobs/{job_id}``, ``GET /v1/jobs`` and
``GET /v1/jobs/{job_id}/metrics``, answered before FastAPI's routing and dependency
resolution (most of a cached read's cost).

It answers only the plain successful case, and through the same objects as the routes: the
query validated by the route's own query model (``api.schemas.jobs``), the caller known as
the route knows it (``api.lane_auth``), the body read and cached by the app's ``JobReads``
(``api/job_reads.py``). Anything else (no or unknown key, a query the models refuse or this
shortcut does not parse, a missing job, any error) goes on, untouched, to the routes in
``api/routers/jobs.py``: every error, and the OpenAPI document, stay theirs.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.job_reads import JobReads
from api.lane_auth import bearer_key, lane_tenant_id
from api.reads import Body, respond
from api.routers.jobs import get_job, get_job_metrics, list_jobs
from api.routers.jobs import router as jobs_router
from api.schemas.common import ResourceId
from api.schemas.jobs import JobListQuery, MetricsQuery

logger = logging.getLogger(__name__)
PREFIX = "/v1/jobs"
_JOB_ID: TypeAdapter[str] = TypeAdapter(ResourceId)

# A read this shortcut answers: the route it stands in for, and how to read the body.
Read = tuple[Callable[..., Any], Callable[[JobReads, str], Awaitable[Body]]]


def _query(scope: Scope, model: type[BaseModel]) -> Any:
    """The query string as the route's model validates it; None when the route must judge."""
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        return None  # a repeated parameter: left to FastAPI
    try:
        return model.model_validate(params)
    except ValidationError:
        return None


def _read_for(scope: Scope) -> Read | None:
    path: str = scope["path"]
    if path == PREFIX:
        page = _query(scope, JobListQuery)
        if page is None:
            return None
        return list_jobs, lambda reads, tenant: reads.page(tenant, page)
    job_id, _, tail = path[len(PREFIX) + 1:].partition("/")
    if path[len(PREFIX)] != "/" or tail not in ("", "metrics") or path.endswith("/"):
        return None
    try:
        _JOB_ID.validate_python(job_id)
    except ValidationError:
        return None
    if not tail:
        return get_job, lambda reads, tenant: reads.job(tenant, job_id)
    metrics = _query(scope, MetricsQuery)
    if metrics is None:
        return None
    return get_job_metrics, lambda reads, tenant: reads.metrics(tenant, job_id, metrics)


def _headers(scope: Scope) -> tuple[str | None, str | None, bool]:
    """(API key, If-None-Match, whether Cache-Control is present) as FastAPI's HTTPBearer
    and Header() would read them."""
    authorization = if_none_match = None
    cache_control = False
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"if-none-match" and if_none_match is None:
            if_none_match = value.decode("latin-1")
        elif name == b"cache-control":
            cache_control = True
    return bearer_key(authorization), if_none_match, cache_control


class FastReads:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[Callable[..., Any], BaseRoute] | None = None

    def route_of(self, endpoint: Callable[..., Any]) -> BaseRoute:
        """The route of a handler (its template names the request in /metrics)."""
        if self._routes is None:
            self._routes = {r.endpoint: r for r in jobs_router.routes
                            if isinstance(r, APIRoute) and "GET" in (r.methods or ())}
        return self._routes[endpoint]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"].startswith(PREFIX) and not scope.get("root_path")
                and await self._answer(scope, receive, send)):
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        found = _read_for(scope)
        if found is None:
            return False
        endpoint, read = found
        key, if_none_match, cache_control = _headers(scope)
        if cache_control:  # rare, and the route reads and checks it (no-cache, its bounds)
            return False
        tenant_id = await lane_tenant_id(self.api.state, scope, key)
        if tenant_id is None:
            return False
        try:
            body = await read(self.api.state.job_reads, tenant_id)
        except Exception:  # noqa: BLE001 - the route reads again and answers its error
            logger.debug("shortcut read of %s refused; the route answers", scope["path"],
                         exc_info=True)
            return False
        scope["route"] = self.route_of(endpoint)
        await respond(body, if_none_match)(scope, receive, send)
        return True
