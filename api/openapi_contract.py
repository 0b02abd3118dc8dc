"""The OpenAPI document as a contract: every status an operation can answer, each error as
problem+json with the Problem schema, readable operationIds.

FastAPI documents what a route declares; what its dependencies and inputs can answer comes
from the one table below, applied to every operation by ``describe`` when the document is
built. A route declares only the statuses of its own handler (``problem_responses``: a 409
from its service, say). tests/api/test_openapi_contract.py holds the document to this.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.deps import get_tenant, upload_slot
from api.schemas.common import HEADERS, Problem
from api.schemas.jobs import JOB_RESULT_SCHEMA
from drtrain.jobs.spec import JobSpec

PROBLEM_MEDIA_TYPE = "application/problem+json"

# What each dependency can answer, wherever it is used.
BY_DEPENDENCY: dict[Callable[..., Any], tuple[int, ...]] = {
    # no key or an unknown one; the failed-auth limiter (api/auth_limits.py): after too many
    # failed authentications from an address, every authenticated route answers 429
    get_tenant: (401, 429),
    upload_slot: (429,),  # the tenant's concurrent uploads (api/limits.py)
}
# What each kind of input can answer: a path id names one of the tenant's resources (404,
# 422 for one that is not even an id); a query or header parameter fails validation (422);
# a JSON body may not be JSON at all (400); a body stalls (408, api/limits.py).
BY_INPUT: dict[str, tuple[int, ...]] = {
    "path": (404, 422), "query": (422,), "header": (422,),
    "application/json": (400, 408, 422), "multipart/form-data": (408, 422)}
# An unexpected error (api/problems.py); a body over the route's limit, which any request
# may send (api/body_gate.py: BODY_LIMITS).
EVERY_OPERATION = (413, 500)
# The error statuses whose answers carry Retry-After (the storage-quota 429 does not:
# waiting frees no space).
RETRY_AFTER_STATUSES = ("429", "503")


def operation_id(route: APIRoute) -> str:
    """The handler's name in camelCase (``list_jobs`` -> ``listJobs``): one style, and as
    stable as the handler's name. ``generate_unique_id_function`` of the app."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def statuses(route: APIRoute, op: dict[str, Any]) -> set[int]:
    """What the route's dependencies and inputs can answer (the table above)."""
    codes = set(EVERY_OPERATION)
    for call in _calls(route.dependant):
        codes.update(BY_DEPENDENCY.get(call, ()))
    for param in op.get("parameters", []):
        codes.update(BY_INPUT.get(param["in"], ()))
    for media_type in op.get("requestBody", {}).get("content", {}):
        codes.update(BY_INPUT.get(media_type, ()))
    return codes


def _phrase(code: str) -> str:
    return HTTPStatus(int(code)).phrase


def _describe_response(code: str, response: dict[str, Any]) -> None:
    """An error response: exactly problem+json with the Problem schema, Retry-After where the
    answer carries it."""
    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {
        "$ref": "#/components/schemas/Problem"}}}
    if response.get("description") in (None, "", "Validation Error"):
        response["description"] = _phrase(code)
    if code in RETRY_AFTER_STATUSES:
        response.setdefault("headers", {})["Retry-After"] = HEADERS["Retry-After"]


def _routes(app: FastAPI) -> dict[tuple[str, str], APIRoute]:
    """Each documented operation's route, by (method, path), included routers' too."""
    return {(method.lower(), str(context.path_format)): context.original_route
            for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute)
            for method in context.methods or ()}


def describe(doc: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """Add every operation's statuses from the table, and make each error response
    problem+json with the Problem schema. Idempotent."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Problem", Problem.model_json_schema(
        ref_template="#/components/schemas/{model}"))
    schemas.setdefault("JobResult", JOB_RESULT_SCHEMA)
    _state_null_defaults(schemas)
    routes = _routes(app)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            for code in sorted(statuses(routes[method, path], op)):
                responses.setdefault(str(code), {"description": _phrase(str(code))})
            for code, response in responses.items():
                if re.fullmatch(r"[45]\d\d", code):
                    _describe_response(code, response)
            op["responses"] = dict(sorted(responses.items()))
    # FastAPI's own validation-error shapes are no longer referenced.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _state_null_defaults(schemas: dict[str, Any]) -> None:
    """FastAPI leaves out a field's ``"default": null``, which turns a section that is off by
    default (feature DR) into one whose default is its model's defaults for a reader of the
    document, such as the web app's form. Put back every default the JobSpec models state."""
    own = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, model in [("JobSpec", own), *own.get("$defs", {}).items()]:
        served = schemas.get(name, {}).get("properties", {})
        for field, prop in model.get("properties", {}).items():
            if "default" in prop and field in served:
                served[field].setdefault("default", prop["default"])


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(generate(), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
