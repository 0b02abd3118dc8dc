"""Sweeps: many jobs from one JobSpec and a grid of values at dotted paths."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec, RequestModel
from drtrain.kit.models import JOB_STATUSES

MAX_GRID_POINTS = 256

SWEEP_EXAMPLE: dict[str, Any] = {"base": JOB_SPEC_EXAMPLE,
                 "grid": {"pretrain.dr.weight": [0, 0.1, 1], "seed": [0, 1, 2]}}


def grid_schema() -> dict[str, Any]:
    """The grid as the document states it: one property per JobSpec field or section, by its
    dotted path, each a non-empty list of what that field takes (its schema from JobSpec's,
    references pointing at the document's components)."""
    spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = spec.pop("$defs", {})
    paths: dict[str, Any] = {}

    def walk(schema: dict[str, Any], prefix: str) -> None:
        for name, field in schema.get("properties", {}).items():
            path = prefix + name
            paths[path] = {"type": "array", "minItems": 1, "items": field}
            refs = [s["$ref"] for s in [field, *field.get("anyOf", [])] if "$ref" in s]
            for ref in refs:
                walk(defs[ref.rsplit("/", 1)[-1]], path + ".")

    walk(spec, "")
    return {"type": "object", "minProperties": 1, "maxProperties": MAX_GRID_PATHS,
            "properties": paths, "additionalProperties": False}


MAX_GRID_PATHS = 16


class SweepRequest(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SWEEP_EXAMPLE]})

    base: JobSpec
    # Paths like "pretrain.dr.weight"; each list is the values that path takes. The values
    # are checked as strictly as the base: each grid point is validated as a JobSpec.
    grid: Annotated[dict[str, list[Any]], WithJsonSchema(grid_schema())] = Field(
        min_length=1, max_length=MAX_GRID_PATHS)


class SweepChild(BaseModel):
    job_id: str
    grid_point: dict[str, Any]
    status: Annotated[str, WithJsonSchema({"type": "string", "enum": list(JOB_STATUSES)})]
    result: dict[str, Any] | None


class MetricSummary(BaseModel):
    mean: float
    std: float = Field(description="sample standard deviation; 0 for a single run")
    n: int = Field(description="the succeeded runs behind the figure (seeds pooled)")


class SummaryRow(BaseModel):
    point: dict[str, Any]
    n: int
    n_done: int
    metrics: dict[str, MetricSummary]


class SweepOut(BaseModel):
    id: str
    # Documented as the JobSpec component of the OpenAPI document (``allOf``: pydantic would
    # look a bare $ref up among its own definitions); the stored spec is answered as it is.
    base: Annotated[dict[str, Any], WithJsonSchema(
        {"allOf": [{"$ref": "#/components/schemas/JobSpec"}]})]
    grid: dict[str, list[Any]]
    created_at: datetime
    children: list[SweepChild]
    summary: list[SummaryRow]


class SweepListItem(BaseModel):
    id: str
    grid: dict[str, list[Any]]
    created_at: datetime
    n_children: int
    children_by_status: dict[str, int]


class SweepList(BaseModel):
    items: list[SweepListItem]
    next_page_token: str | None
