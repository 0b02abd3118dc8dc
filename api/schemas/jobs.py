"""The Job, metrics, checkpoint and predict views of the HTTP API (the JobSpec is in
drtrain.jobs.spec)."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas.common import documented_as, one_of_names
from drtrain.jobs.spec import FLOAT32_MAX, TAG_PATTERN, RequestModel
from drtrain.kit.models import JOB_STATUSES, PHASES, JobStatus

# Metric seq is a 32-bit column: a larger cursor would fail in the database, not match nothing.
MAX_SEQ = 2**31 - 1


# What a succeeded job's worker records as its ``result`` (worker/runner.py ``_summary``),
# for the document only: results are read back as stored, never validated again.
JOB_RESULT_SCHEMA: dict[str, Any] = {
    "title": "JobResult", "type": "object", "additionalProperties": True,
    "description": "A finished job's result. Each final metric (test/validation/train accuracy "
                   "and loss, epochs_pretrain, epochs_finetune, wall_seconds) is also a member "
                   "of its own, a number or null (a diverged value); other members may follow.",
    "properties": {
        "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]},
                    "description": "the final metrics by name"},
        "epochs": {"type": "object", "properties": {"pretrain": {"type": "integer"},
                                                    "finetune": {"type": "integer"}}},
        "wall_seconds": {"type": "number", "description": "training alone, as in metrics"},
        "attempt_seconds": {"type": "number",
                            "description": "the whole attempt: loading the data, training, "
                                           "storing the model"},
        "model_sha256": {"type": "string", "description": "of the model file"},
        "model_size_bytes": {"type": "integer"},
        "classes": {"type": "array", "items": {"type": "string"},
                    "description": "the labels, in the order of the model's outputs"},
        "visible": {"type": "string", "description": "the visible units trained with"},
        "device": {"type": "string"},
        "resumed_from": {"type": ["string", "null"],
                         "description": "the checkpoint a resumed attempt started from"},
    }}


def _spec_only_on_request(schema: dict[str, Any]) -> None:
    schema["required"] = [name for name in schema.get("required", []) if name != "spec"]


class JobSummaryOut(BaseModel):
    """A job as list rows carry it: everything but its spec (``?include=spec`` adds it)."""

    # Every field is always sent (the defaults included): the document says so.
    model_config = ConfigDict(from_attributes=True,
                              json_schema_serialization_defaults_required=True)

    id: str
    status: Annotated[str, one_of_names(JOB_STATUSES)]
    status_reason: str | None
    phase: Annotated[str | None, one_of_names(PHASES, nullable=True)]
    layer: int | None
    epoch: int | None
    progress: float
    attempt: int
    max_attempts: int
    cancel_requested: bool
    dataset_id: str
    sweep_id: str | None
    grid_point: dict[str, Any] | None = Field(None, description=(
        "a sweep's job: its values of the sweep's grid (dotted spec paths), else null"))
    created_at: datetime
    dispatched_at: datetime | None = Field(description=(
        "when the job took one of the tenant's running slots and went to the workers; null "
        "while it waits in the tenant's queue (`GET /v1/queue?job_id=` gives its place)"))
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    result: Annotated[dict[str, Any] | None, documented_as("JobResult", nullable=True)]
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @field_validator("tags", "warnings", mode="before")
    @classmethod
    def _null_is_empty(cls, value: list[str] | None) -> list[str]:
        return value or []


class JobOut(JobSummaryOut):
    spec: Annotated[dict[str, Any], documented_as("JobSpec")]


class JobListItem(JobSummaryOut):
    model_config = ConfigDict(json_schema_extra=_spec_only_on_request)

    spec: Annotated[dict[str, Any] | None, documented_as("JobSpec", nullable=True)] = Field(
        None, description="only with ?include=spec")


class JobPage(BaseModel):
    items: list[JobListItem]
    next_page_token: str | None


class MetricPointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    phase: Annotated[str, one_of_names(PHASES)]
    layer: int | None
    epoch: int
    name: str
    value: float
    at: datetime = Field(description="when the point's epoch ended (UTC)")


class JobListQuery(BaseModel):
    """The query of ``GET /v1/jobs``: the route's parameters, and what its shortcut
    (``api/fast_reads.py``) validates a query with, so both take exactly the same ones."""

    status: JobStatus | None = None
    page_size: int = Field(50, ge=1, le=200)
    page_token: str | None = Field(None, max_length=500)
    include: Literal["spec"] | None = Field(None, description="`spec`: add each job's spec")
    tag: str | None = Field(None, pattern=TAG_PATTERN,
                            description="only jobs carrying this tag")


class MetricsQuery(BaseModel):
    """The query of ``GET /v1/jobs/{job_id}/metrics`` (route and shortcut alike)."""

    since: int = Field(0, ge=0, le=MAX_SEQ, description="points after this seq")
    limit: int = Field(1000, ge=1, le=10000)


class LogsQuery(BaseModel):
    """The query of ``GET /v1/jobs/{job_id}/logs``."""

    attempt: int | None = Field(None, ge=1, le=MAX_SEQ,
                                description="which attempt's lines (default: the latest)")
    since: int = Field(0, ge=0, le=MAX_SEQ,
                       description="the first line to send (0-based): the number of lines "
                                   "already read")


class MetricsPage(BaseModel):
    items: list[MetricPointOut]
    next_since: int


class CheckpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    phase: Annotated[str | None, one_of_names(PHASES, nullable=True)]
    layer: int | None
    epoch: int | None
    attempt: int
    sha256: str
    size_bytes: int
    created_at: datetime


class CheckpointList(BaseModel):
    items: list[CheckpointOut]
    next_page_token: str | None = None


# Rows one predict request may carry (the client splits larger inputs into requests of this
# many: drtrain_client.client.PREDICT_ROWS).
MAX_PREDICT_ROWS = 10_000


class PredictRequest(RequestModel):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"inputs": [[0.0, 0.5, 1.0]]}]})

    # NaN/inf are refused here (JSON parsers accept them as extensions), and so is anything
    # beyond float32: models are trained on float32 data, and 1e300 would overflow the
    # normalisation into inf/NaN probabilities (which JSON cannot even carry).
    inputs: list[list[Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX,
                                             le=FLOAT32_MAX)]]] = Field(
        min_length=1, max_length=MAX_PREDICT_ROWS)


class PredictResponse(BaseModel):
    predictions: list[str]
    probabilities: list[list[float]]
    classes: list[str] = Field(description="the class of each column of `probabilities`")
