"""Shapes shared by every router: the problem+json body, for the OpenAPI document."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field

from drtrain.kit.ids import ID_PATTERN

ResourceId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64,
                                 description="an id this API returned")]


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` lists field errors on 422."""

    type: str = Field(examples=["https://drtrain.dev/problems/invalid"])
    title: str = Field(examples=["Unprocessable content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["row 3, column 'p5': 'abc' is not a number"])
    errors: list[dict[str, Any]] | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each code documented as problem+json."""
    return {code: {"model": Problem, "content": {"application/problem+json": {}}}
            for code in codes}
