"""A request with a body is authenticated before a byte of it is read, and its body is held
to its route's limit (``BODY_LIMITS``, the one table of them).

FastAPI reads and parses a JSON body before it resolves a route's dependencies, the key
check among them: a large body with no key would be read whole, then refused. This gate
stands in front of every lane (``api/fast_submit.py``, the routes). For a request that
carries a body it finds the route, and when the route takes a key it checks the key first
with the route's own dependency (``api.deps.get_tenant``: the same 401, the same failed-auth
count, the same 429); the body stays unread when the key is refused. Then a Content-Length
over the limit is answered 413 at once, and a body that grows past the limit while it
arrives (chunked, or longer than it claimed) ends in 413 as soon as it does, never held
whole. Requests without a body (every GET) pass untouched."""
from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_tenant, tenant_of
from api.problems import domain_problem, problem
from drtrain.kit.errors import DomainError

KIB = 1024
MIB = 1024 * KIB

# The largest body each route takes, in bytes; a route not named here takes DEFAULT_LIMIT.
# None: the route bounds its own body while it streams (an upload: DRTRAIN_MAX_UPLOAD_BYTES).
BODY_LIMITS: dict[tuple[str, str], int | None] = {
    ("POST", "/v1/jobs"): 1 * MIB,
    ("POST", "/v1/sweeps"): 1 * MIB,
    # 10,000 rows (PredictRequest's bound) of a few hundred features each.
    ("POST", "/v1/jobs/{job_id}/predict"): 32 * MIB,
    ("POST", "/v1/datasets"): None,
}
DEFAULT_LIMIT = 64 * KIB

Gate = tuple[APIRoute, str, int | None, bool]  # route, method, its limit, whether it takes a key


def _takes_key(dependant: Dependant) -> bool:
    return any(d.call is get_tenant or _takes_key(d) for d in dependant.dependencies)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large_detail(limit: int, route: APIRoute, method: str) -> str:
    return f"the request body is over the {limit}-byte limit of {method} {route.path}"


def _bounded(receive: Receive, limit: int, detail: str) -> Receive:
    seen = 0

    async def bounded_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # As BodyTimeoutMiddleware's 408: whoever is reading the body meets it, lets
                # go of what it read, and the exception handlers answer it.
                raise HTTPException(413, detail, headers={"Connection": "close"})
        return message

    return bounded_receive


class BodyGate:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._gates: list[Gate] | None = None

    def gates(self) -> list[Gate]:
        if self._gates is None:
            self._gates = [(route, method, BODY_LIMITS.get((method, route.path), DEFAULT_LIMIT),
                            _takes_key(route.dependant)) for route, method in _routes(self.api)]
        return self._gates

    def _gate_for(self, scope: Scope) -> Gate | None:
        for gate in self.gates():
            if gate[1] == scope["method"] and gate[0].matches(scope)[0] is Match.FULL:
                return gate
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self._gate_for(scope) if scope["type"] == "http" and _has_body(scope) else None
        if gate is None:
            await self.app(scope, receive, send)
            return
        route, _, limit, takes_key = gate
        if takes_key:
            try:
                await tenant_of(Request(scope))
            except DomainError as exc:  # the route's own refusal, before the body
                scope["route"] = route
                await domain_problem(exc)(scope, receive, send)
                return
        if limit is not None:
            detail = too_large_detail(limit, route, scope["method"])
            length = _content_length(scope)
            if length is not None and length > limit:
                scope["route"] = route
                await problem(413, detail, headers={"Connection": "close"})(scope, receive, send)
                return
            receive = _bounded(receive, limit, detail)
        await self.app(scope, receive, send)


def _routes(api: FastAPI) -> Iterator[tuple[APIRoute, str]]:
    for context in iter_route_contexts(api.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            for method in sorted(route.methods or ()):
                yield route, method


def declared_routes(api: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) of the app that a body limit may name."""
    return {(method, route.path) for route, method in _routes(api)}
