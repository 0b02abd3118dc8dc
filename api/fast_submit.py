"""The shortcut of ``POST /v1/jobs``, answered before FastAPI's routing and dependency
resolution, through the route's own path: the same ``Submits.submit`` (``api/submits.py``),
answered by the same ``job_response``, or refused by the same problem as the route's
exception handler.

It takes a plain submit only: a known key (``api.lane_auth``), its address not over its
failed-auth budget, no Idempotency-Key, a JSON body that is a valid JobSpec, validated as the
route validates it (``json.loads``, then the JobSpec in Python mode). Anything else goes on to
the route in ``api/routers/jobs.py`` with its body replayed as it arrived.
"""
from __future__ import annotations

import json

from fastapi import FastAPI, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.lane_auth import bearer_key, lane_tenant_id
from api.problems import domain_problem, unexpected_problem
from api.reads import job_response
from api.routers.jobs import router as jobs_router
from drtrain.jobs.spec import JobSpec
from drtrain.kit.errors import DomainError

PATH = "/v1/jobs"
# Bodies up to this size are held to be validated here; a larger one goes to the route.
MAX_BODY_BYTES = 256 * 1024


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
        try:
            sub = await self.api.state.submits.submit(self.api.state, tenant_id, spec)
        except DomainError as exc:  # a refusal: the problem the route's handler would answer
            response: Response = domain_problem(exc)
        except Exception as exc:  # noqa: BLE001 - answered as the route's handler would
            response = unexpected_problem(self.api.state, "POST", PATH, exc)
        else:
            response = job_response(sub.job, 202, Location=f"{PATH}/{sub.job['id']}")
        scope["route"] = route
        await response(scope, replay, send)
        return None
