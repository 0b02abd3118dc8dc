"""Every error leaves the API as RFC 9457 problem+json, from these handlers only."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from drtrain.kit.errors import DomainError

log = logging.getLogger("drtrain.api")
MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, *, title: str | None = None, type_: str = "about:blank",
            errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title or _phrase(status),
                            "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
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


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)  # registered for this type only
    # Only loc/msg/type: the raw input and ctx may hold objects that are not JSON (or secrets).
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
               "type": str(e.get("type", ""))} for e in exc.errors()]
    first = errors[0] if errors else None
    detail = (f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first
              else "request validation failed")
    return problem(422, detail, title="Unprocessable content",
                   type_="https://drtrain.dev/problems/invalid", errors=errors)


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)  # registered for this type only
    return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log only; the client learns nothing about internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal server error")


def describe_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what the handlers above do, for every operation at once:
    each 4xx is ``application/problem+json`` with the Problem schema (FastAPI would document
    its own 422 body as ``application/json``), every secured operation can answer 401, and
    every operation with a path parameter 404. Idempotent."""
    from api.schemas.common import Problem  # the schema module imports nothing from here

    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Problem", Problem.model_json_schema(
        ref_template="#/components/schemas/{model}"))
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in doc.get("paths", {}).values():
        for op in item.values():
            responses = op.setdefault("responses", {})
            codes = []
            if op.get("security"):
                codes.append("401")
            if any(p.get("in") == "path" for p in op.get("parameters", [])):
                codes.append("404")
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                codes.append("400")  # a body that is not even UTF-8 JSON text
            for code in codes:
                responses.setdefault(code, {"description": _phrase(int(code))})
            for code, response in responses.items():
                if code.startswith("4"):
                    response["content"] = dict(content)
                    if "description" not in response or response["description"] in (
                            "Validation Error", ""):
                        response["description"] = _phrase(int(code))
    # FastAPI's own validation-error shapes are no longer referenced.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _document(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document(app)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected_error)
