"""The fast lane of ``POST /v1/jobs``, modelled on ``api/fast_reads.py``.

A plain submit (a known key (``api.lane_auth``), its address not over its failed-auth budget, no
Idempotency-Key, a JSON body that is a valid JobSpec) is answered here, before FastAPI's
routing and dependencies, and committed with the other submits waiting at the same time in
one transaction (``drtrain.jobs.submit_batch``). The answer is the route's, made by the same
``job_response``.

Everything else, and every submit the batch would not accept as it is (a dataset error, the
cap or the quota, a database error before the commit), goes on to the route in
``api/routers/jobs.py`` with its body replayed as it arrived: every refusal stays the
route's. The body is validated as the route does (``json.loads``, then the JobSpec in
Python mode), so whatever this lane takes the route would take too.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http import job_response
from api.lane_auth import bearer_key, lane_tenant_id
from api.routers.jobs import router as jobs_router
from drtrain.jobs.spec import JobSpec
from drtrain.jobs.submit_batch import Publish, Submission, SubmitBatcher

PATH = "/v1/jobs"
# Bodies up to this size are held to be validated here; a larger one goes to the route.
MAX_BODY_BYTES = 256 * 1024


def make_batcher(publish: Publish | None = None) -> SubmitBatcher:
    """The app's batcher (``app.state.submit_batcher``; drained at shutdown); ``publish``
    (None: in this process) sends the committed jobs' messages."""
    return SubmitBatcher(_deliver, publish=publish)


def _deliver(batch: list[Submission]) -> None:
    """Hands each result to its request's event loop: one wake-up per loop and batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Submission]] = {}
    for sub in batch:
        by_loop.setdefault(sub.token[0], []).append(sub)
    for loop, subs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, subs)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _resolve(subs: list[Submission]) -> None:
    for sub in subs:
        future: asyncio.Future[dict[str, Any] | Exception | None] = sub.token[1]
        if not future.done():
            future.set_result(sub.error or sub.job)


def _is_json(content_type: str | None) -> bool:
    # FastAPI parses a body as JSON without a Content-Type too; a charset changes nothing.
    return content_type is None or (
        content_type.partition(";")[0].strip().lower() == "application/json")


class _Replay:
    """The messages already read, then what the original ``receive`` has (or the error it
    raised while this lane read the body): what the route reads is what arrived."""

    def __init__(self, receive: Receive, messages: list[Message],
                 error: Exception | None = None) -> None:
        self.receive, self.messages, self.error = receive, messages, error

    async def __call__(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return await self.receive()


async def _read_body(receive: Receive) -> tuple[bytes | None, _Replay]:
    """(the whole body, or None when it is not one this lane takes; the replay)."""
    messages: list[Message] = []
    size = 0
    while True:
        try:
            message = await receive()
        except Exception as exc:  # noqa: BLE001 - e.g. the body timeout's 408: the route's
            return None, _Replay(receive, messages, exc)
        messages.append(message)
        if message["type"] != "http.request":
            return None, _Replay(receive, messages)
        size += len(message.get("body", b""))
        if size > MAX_BODY_BYTES:
            return None, _Replay(receive, messages)
        if not message.get("more_body", False):
            body = b"".join(m.get("body", b"") for m in messages)
            return body, _Replay(receive, messages)


class FastSubmit:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self.batcher: SubmitBatcher = api.state.submit_batcher
        self._route: BaseRoute | None = None

    def route(self) -> BaseRoute | None:
        """The route this lane stands in for (its template names the request in /metrics)."""
        if self._route is None:
            self._route = next((r for r in jobs_router.routes if getattr(r, "path", None) == PATH
                                and "POST" in (getattr(r, "methods", None) or ())), None)
        return self._route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH
                and not scope.get("root_path")):
            tenant_id = await self._tenant_id(scope)
            if tenant_id is not None:
                replay = await self._answer(scope, receive, send, tenant_id)
                if replay is None:
                    return
                receive = replay
        await self.app(scope, receive, send)

    async def _tenant_id(self, scope: Scope) -> str | None:
        """The tenant of a plain submit with a known key, else None (the route's case)."""
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"idempotency-key":
                return None
        if not _is_json(content_type):
            return None
        return await lane_tenant_id(self.api.state, scope, bearer_key(authorization))

    async def _answer(self, scope: Scope, receive: Receive, send: Send,
                      tenant_id: str) -> Receive | None:
        """None once answered; else the ``receive`` the route must read the body from."""
        body, replay = await _read_body(receive)
        route = self.route()
        if body is None or route is None:
            return replay
        try:
            # What the route does: Starlette's request.json(), then the body parameter.
            spec = JobSpec.model_validate(json.loads(body))
        except Exception:  # noqa: BLE001 - any refusal is the route's to answer
            return replay
        state = self.api.state
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.batcher.submit(Submission(state.sessionmaker, state.settings, tenant_id, spec,
                                       token=(loop, future)))
        result = await future
        if isinstance(result, Exception):
            raise result  # the commit failed: the 500 the route's would have given
        if result is None:
            return replay
        scope["route"] = route
        response = job_response(result, 202, Location=f"{PATH}/{result['id']}")
        await response(scope, replay, send)
        return None
