"""Every error leaves the API as RFC 9457 problem+json, from these handlers only."""
from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from drtrain.kit.errors import DomainError, InsufficientStorage, NotFound, validation_message
from drtrain.kit.storage import is_out_of_space

log = logging.getLogger("drtrain.api")
MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, *, title: str | None = None, type_: str = "about:blank",
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
            members: dict[str, Any] | None = None) -> JSONResponse:
    """``members``: extension members after the standard ones (RFC 9457, section 3.2)."""
    body: dict[str, Any] = {"type": type_, "title": title or _phrase(status),
                            "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    body.update(members or {})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def domain_problem(exc: DomainError) -> JSONResponse:
    return problem(exc.status, exc.detail, title=exc.title, type_=exc.type_, errors=exc.errors,
                   headers=exc.headers)


async def _on_domain_error(_request: Request, exc: Exception) -> JSONResponse:
    return domain_problem(cast(DomainError, exc))  # registered for DomainError only


# pydantic's error types for "a JSON object was expected here".
_NOT_AN_OBJECT = ("model_attributes_type", "model_type", "dict_type")


def _validation_detail(request: Request, first: dict[str, Any] | None, reason: str) -> str:
    """The detail naming the first error; a body that is not JSON, or not sent as JSON, is
    said so in words (pydantic's "body.14: JSON decode error" reads like a field path)."""
    if first is None:
        return "request validation failed"
    loc = first["loc"]
    if first["type"] == "json_invalid":
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"the body is not valid JSON{at}" + (f": {reason}" if reason else "")
    content_type = request.headers.get("content-type", "")
    if loc == ["body"] and first["type"] in _NOT_AN_OBJECT and "json" not in content_type:
        return (f"body: {first['msg']} (the body must be JSON, sent with Content-Type: "
                f"application/json; this request's is {content_type or 'missing'})")
    return f"{'.'.join(map(str, loc))}: {first['msg']}"


def _meant(errors: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The error to name in the detail. pydantic reports a union's failure once per branch,
    a literal choice first (``pairs.literal['all']``); an input that reached another branch
    (an object where "all" or {"sample": K} belongs) was meant for that one."""
    for error in errors:
        if not any(str(part).startswith("literal[") for part in error["loc"]):
            return error
    return errors[0] if errors else None


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)  # registered for this type only
    raw = exc.errors()
    # Only loc/msg/type: the raw input and ctx may hold objects that are not JSON (or secrets).
    errors = [{"loc": list(e.get("loc", ())), "msg": validation_message(e),
               "type": str(e.get("type", ""))} for e in raw]
    # A JSON decode error's ctx holds the parser's message, a plain string.
    reason = str((raw[0].get("ctx") or {}).get("error", "")) if raw else ""
    detail = _validation_detail(request, _meant(errors), reason)
    return problem(422, detail, title="Unprocessable content",
                   type_="https://drtrain.dev/problems/invalid", errors=errors)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)  # registered for this type only
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    # An unknown route is "not found" like an unknown id, so that a client tells them apart
    # from other errors by the type alone.
    if exc.status_code == NotFound.status:
        detail = str(exc.detail)
        if detail == HTTPStatus.NOT_FOUND.phrase:  # Starlette's own: no route, no file
            detail = f"nothing at {request.method} {request.url.path}"
        return problem(exc.status_code, detail, title=NotFound.title, type_=NotFound.type_,
                       headers=headers)
    return problem(exc.status_code, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method some route of the request's path answers (RFC 9110, 15.5.6): Starlette
    names only those of the one route it matched first, and a path may have several (GET and
    POST ``/v1/datasets``; GET, HEAD and DELETE routes under one job)."""
    path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.path and compile_path(route.path)[0].fullmatch(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_problem(request.app.state, request.method, request.url.path, exc)


async def _on_failed_write(request: Request, exc: Exception) -> JSONResponse:
    """A database or file error: 507 when it says storage is full. Registered for those
    types, so Starlette answers it as it answers a domain error, and the server never sees
    it; any other such error goes on to ``_on_unexpected_error``."""
    if not is_out_of_space(exc):
        raise exc
    return unexpected_problem(request.app.state, request.method, request.url.path, exc)


def unexpected_problem(state: Any, method: str, path: str, exc: BaseException) -> JSONResponse:
    """The answer to an error no handler expected: a full database, store or disk is a 507
    (remembered for /readyz), anything else a 500. The route's handler and the shortcuts
    answer with this, so no error reaches the server (which would drop the connection)."""
    if is_out_of_space(exc):
        state.storage_full_at = time.monotonic()
        log.warning("storage full on %s %s: %s", method, path, exc)
        return domain_problem(InsufficientStorage(
            "storage is full: nothing was written; retry once space has been freed"))
    # The traceback goes to the log only; the client learns nothing about internals.
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return problem(500, "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    for failed_write in (DBAPIError, OSError):
        app.add_exception_handler(failed_write, _on_failed_write)
    app.add_exception_handler(Exception, _on_unexpected_error)
