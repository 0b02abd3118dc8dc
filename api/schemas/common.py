"""Shapes shared by every router: the problem+json body, for the OpenAPI document."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from drtrain.kit.errors import PROBLEM_TYPES
from drtrain.kit.ids import ID_PATTERN

ResourceId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64,
                                 description="an id this API returned")]


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


# The response headers the API sends, for ``responses=`` (``headers(...)``) and the errors.
HEADERS: dict[str, dict[str, Any]] = {
    "Location": _header("the URL of the resource created (or redirected to)"),
    "ETag": _header("a validator of the body: send it as If-None-Match (304 while unchanged) "
                    "or If-Range"),
    "Retry-After": _header("seconds to wait before trying again", {"type": "integer"}),
    "Accept-Ranges": _header("`bytes`: Range requests are answered", {"type": "string", "enum": ["bytes"]}),
    "Content-Range": _header("the bytes sent, as `bytes first-last/size`"),
    "Content-Length": _header("the size of the body in bytes", {"type": "integer"}),
}


def headers(*names: str) -> dict[str, Any]:
    """A response's ``headers`` entry naming some of HEADERS."""
    return {"headers": {name: HEADERS[name] for name in names}}


def documented_as(component: str, *, nullable: bool = False) -> WithJsonSchema:
    """A field documented as a component of the OpenAPI document while its value stays what
    it is at run time (a stored spec is dumped as the plain dict it is, never validated
    again on a read). ``allOf`` because pydantic resolves a bare ``$ref`` against its own
    definitions, where a component of the document is not."""
    ref: dict[str, Any] = {"allOf": [{"$ref": f"#/components/schemas/{component}"}]}
    return WithJsonSchema({"anyOf": [ref, {"type": "null"}]} if nullable else ref)


def one_of_names(names: tuple[str, ...], *, nullable: bool = False) -> WithJsonSchema:
    """A text field documented as an enum of ``names`` (checked nowhere at run time: the
    value is what the database holds)."""
    text: dict[str, Any] = {"type": "string", "enum": list(names)}
    return WithJsonSchema({"anyOf": [text, {"type": "null"}]} if nullable else text)


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` lists field errors on 422. Other members may
    follow (``checks`` on the readiness 503)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["https://drtrain.dev/problems/invalid"],
                      json_schema_extra={"enum": list(PROBLEM_TYPES)})
    title: str = Field(examples=["Unprocessable content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["row 3, column 'p5': 'abc' is not a number"])
    errors: list[dict[str, Any]] | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the statuses its own handler (its service) can answer,
    beyond those of its dependencies (api/openapi_contract.py adds those). The body is the
    Problem schema in problem+json, set for every error response by that module."""
    return {code: {"description": ""} for code in codes}
