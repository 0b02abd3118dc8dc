"""The /v1/jobs bodies, serialised once: one serialiser per resource, one ETag.

Rows come as plain columns (``drtrain.jobs.views``) and go straight to JSON bytes through
pydantic-core, with no ORM object and no per-row model call. The columns read are those of
the documented response models (``api.schemas.jobs``), so a field added there is read too.
A single job goes through the model's TypeAdapter (its validators included); list rows are
dumped through a TypedDict of the model's fields, with the one value its validator changes
(null tags and warnings) set here; metric points are dumped a column at a time. Tests keep
each output equal to the models'.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import Response
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_json
from typing_extensions import TypedDict

from api.http import etag_matches, weak_etag
from api.schemas.jobs import JobOut, JobSummaryOut, MetricPointOut
from drtrain.jobs.views import METRIC_NAMES

Body = tuple[bytes, str]  # (JSON, its weak ETag)


def row_type(model: type[BaseModel]) -> Any:
    """A TypedDict with the model's fields: dumps a plain dict as the model would (when the
    model has no validators that change values)."""
    return TypedDict(f"{model.__name__}Row",  # type: ignore[operator]
                     {name: field.annotation for name, field in model.model_fields.items()})


JOB_NAMES = tuple(JobOut.model_fields)
JOB_SUMMARY_NAMES = tuple(JobSummaryOut.model_fields)
if tuple(MetricPointOut.model_fields) != METRIC_NAMES:
    raise RuntimeError("MetricPointOut's fields and drtrain.jobs.views.METRIC_NAMES differ")

JOB: TypeAdapter[JobOut] = TypeAdapter(JobOut)


def with_etag(body: bytes) -> Body:
    return body, weak_etag(body)


def job_body(job: Any) -> bytes:
    """A job (a row of ``JOB_NAMES`` or an ORM Job) as ``JobOut`` JSON."""
    return JOB.dump_json(JOB.validate_python(job, from_attributes=True))


def job_response(job: Any, status_code: int = 200, **headers: str) -> Response:
    """A job answered by a write (submit, cancel): the body and ETag a read of it gives."""
    body, etag = with_etag(job_body(job))
    return Response(body, status_code=status_code, media_type="application/json",
                    headers={"ETag": etag, **headers})


# List rows are dumped as TypedDicts of the models' fields (no model object per row, the
# largest cost of a page), with the one thing the models' validators change done here: null
# tags and warnings are [] (JobSummaryOut._null_is_empty). A test keeps the bytes equal.
_SUMMARY_ROW: Any = row_type(JobSummaryOut)
_JOB_ROW: Any = row_type(JobOut)
_PAGE_ROWS: dict[bool, TypeAdapter[Any]] = {False: TypeAdapter(list[_SUMMARY_ROW]),
                                            True: TypeAdapter(list[_JOB_ROW])}
_NULL_IS_EMPTY = ("tags", "warnings")


def page_body(rows: list[dict[str, Any]], token: str | None, with_spec: bool) -> bytes:
    for row in rows:
        for key in _NULL_IS_EMPTY:
            if row[key] is None:
                row[key] = []
    items = _PAGE_ROWS[with_spec].dump_json(rows)
    return b'{"items":' + items + b',"next_page_token":' + to_json(token) + b"}"


# Metric points straight from columns (``drtrain.jobs.views.metric_columns``): each column
# dumped in one pydantic-core call, the points put together by one bytes template, so a page
# of points costs no dict and no datetime each. Same bytes as MetricPointOut (a test compares
# them, odd floats and names included).
_POINT = ("{" + ",".join(f'"{k}":' + ('"%b"' if k == "at" else "%b") for k in METRIC_NAMES)
          + "}").encode()
_COLUMN_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "seq": TypeAdapter(list[int]), "layer": TypeAdapter(list[int | None]),
    "epoch": TypeAdapter(list[int]), "value": TypeAdapter(list[float])}
_STR: TypeAdapter[str] = TypeAdapter(str)


class _JsonStrings(dict[str, bytes]):
    """str -> its JSON text, each distinct value (a page has a few names) dumped once."""

    def __missing__(self, key: str) -> bytes:
        value = self[key] = _STR.dump_json(key)
        return value


def _column_json(key: str, column: Sequence[Any], strings: _JsonStrings) -> Iterable[bytes]:
    if key == "at":  # already the API's ISO-8601 text
        return map(str.encode, column)
    adapter = _COLUMN_ADAPTERS.get(key)
    if adapter is None:
        return map(strings.__getitem__, column)
    # A JSON array of numbers (or null) has a comma only between its items.
    return adapter.dump_json(list(column))[1:-1].split(b",")


def point_jsons(columns: Sequence[Sequence[Any]]) -> list[bytes]:
    """Each point of ``columns`` (``METRIC_NAMES`` order, ``at`` as text) as its JSON."""
    if not columns[0]:
        return []
    strings = _JsonStrings()
    parts = zip(*(_column_json(k, c, strings) for k, c in zip(METRIC_NAMES, columns,
                                                                 strict=True)), strict=True)
    return list(map(_POINT.__mod__, parts))


def metrics_page_body(columns: Sequence[Sequence[Any]], since: int) -> bytes:
    next_since = columns[0][-1] if columns[0] else since
    return (b'{"items":[' + b",".join(point_jsons(columns)) + b'],"next_since":'
            + str(next_since).encode() + b"}")


def respond(body_and_etag: Body, if_none_match: str | None) -> Response:
    """The serialised body as a 200 with its ETag, or a bodiless 304 when the client has it."""
    body, etag = body_and_etag
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})
