"""The /v1/jobs read paths, serialised once: plain-column rows (``drtrain.jobs.repository``) go
straight to JSON bytes through pydantic-core, with no ORM object and no per-row model call.

The selected columns come from the documented response models (``api.schemas.jobs``), so a
field added there is read here too. A single job goes through the model's TypeAdapter
(validation and serialisation in pydantic-core, the model's own validators included); list
rows are dumped through a TypedDict of the model's fields, the one value its validator changes
(null tags and warnings) set here; metric points, a thousand to a page, are dumped a column at
a time (``metrics_page_body``). Tests keep each output equal to the models'.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import Response
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_json
from sqlalchemy.orm import InstrumentedAttribute, Session
from typing_extensions import TypedDict

from api.http import etag_matches
from api.schemas.jobs import JobOut, JobSummaryOut, MetricPointOut
from drtrain.jobs import repository as q
from drtrain.kit.models import Job


def row_type(model: type[BaseModel]) -> Any:
    """A TypedDict with the model's fields: dumps a plain dict as the model would (when the
    model has no validators that change values)."""
    return TypedDict(f"{model.__name__}Row",  # type: ignore[operator]
                     {name: field.annotation for name, field in model.model_fields.items()})


def columns_of(model: type[BaseModel]) -> list[InstrumentedAttribute[Any]]:
    return [getattr(Job, name) for name in model.model_fields]


MetricRow: Any = row_type(MetricPointOut)
JOB_SUMMARY_COLUMNS = columns_of(JobSummaryOut)
JOB_COLUMNS = columns_of(JobOut)
METRIC_KEYS = tuple(MetricPointOut.model_fields)

JOB: TypeAdapter[JobOut] = TypeAdapter(JobOut)
METRIC: TypeAdapter[Any] = TypeAdapter(MetricRow)
_METRICS_PAGE: TypeAdapter[Any] = TypeAdapter(TypedDict(  # type: ignore[operator]
    "MetricsPageBody", {"items": list[MetricRow], "next_since": int}))


def etag(body: bytes) -> str:
    return 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'


Body = tuple[bytes, str]  # (JSON, its weak ETag)


def job_body(row: dict[str, Any]) -> bytes:
    return JOB.dump_json(JOB.validate_python(row))


def metric_json(item: dict[str, Any]) -> str:
    return METRIC.dump_json(item).decode()


def _with_etag(body: bytes) -> Body:
    return body, etag(body)


# Each read below runs in one ``Database.read`` hop: the query inside a short session, the
# serialisation after it has closed.

def job(session: Session, tenant_id: str, job_id: str) -> dict[str, Any]:
    return q.job_view(session, tenant_id, job_id, JOB_COLUMNS)


def job_with_etag(row: dict[str, Any]) -> Body:
    return _with_etag(job_body(row))


def jobs_page(session: Session, tenant_id: str, status: str | None, page_size: int,
              page_token: str | None, with_spec: bool,
              tag: str | None = None) -> tuple[list[dict[str, Any]], str | None, bool]:
    rows, token = q.job_views(session, tenant_id, JOB_COLUMNS if with_spec else JOB_SUMMARY_COLUMNS,
                              status=status, page_size=page_size, page_token=page_token, tag=tag)
    return rows, token, with_spec


# A page of rows is dumped as TypedDicts of the models' fields (no model per row: a third of
# a 50-row page's CPU), with the one thing the models' validators change done here: null
# tags and warnings are [] (JobSummaryOut._null_is_empty). A test keeps the bytes equal.
_SUMMARY_ROW: Any = row_type(JobSummaryOut)
_JOB_ROW: Any = row_type(JobOut)
_SUMMARY_ROWS: TypeAdapter[Any] = TypeAdapter(list[_SUMMARY_ROW])
_JOB_ROWS: TypeAdapter[Any] = TypeAdapter(list[_JOB_ROW])
_NULL_IS_EMPTY = ("tags", "warnings")


def jobs_page_with_etag(page: tuple[list[dict[str, Any]], str | None, bool]) -> Body:
    rows, token, with_spec = page
    for row in rows:
        for key in _NULL_IS_EMPTY:
            if row[key] is None:
                row[key] = []
    items = (_JOB_ROWS if with_spec else _SUMMARY_ROWS).dump_json(rows)
    return _with_etag(b'{"items":' + items + b',"next_page_token":' + to_json(token) + b"}")


def metrics_page(session: Session, tenant_id: str, job_id: str, since: int,
                 limit: int) -> tuple[list[Any], int]:
    q.job_exists(session, tenant_id, job_id)
    return q.metric_rows(session, job_id, since, limit), since


def metric_dicts(rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(zip(METRIC_KEYS, row)) for row in rows]


def metrics_page_with_etag(page: tuple[list[Any], int]) -> Body:
    rows, since = page
    body = _METRICS_PAGE.dump_json({"items": metric_dicts(rows),
                                    "next_since": rows[-1][0] if rows else since})
    return _with_etag(body)


# A metrics page straight from columns (``drtrain.jobs.raw_reads.metric_columns``): each
# column dumped in one pydantic-core call, the points put together by one bytes template, so
# a thousand points cost no dict and no datetime each. Same bytes as _METRICS_PAGE (a test
# compares them, odd floats and names included).
_POINT = ("{" + ",".join(f'"{k}":' + ('"%b"' if k == "at" else "%b") for k in METRIC_KEYS)
          + "}").encode()
_INTS: TypeAdapter[list[int]] = TypeAdapter(list[int])
_OPTIONAL_INTS: TypeAdapter[list[int | None]] = TypeAdapter(list[int | None])
_FLOATS: TypeAdapter[list[float]] = TypeAdapter(list[float])
_STR: TypeAdapter[str] = TypeAdapter(str)
_COLUMN_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "seq": _INTS, "layer": _OPTIONAL_INTS, "epoch": _INTS, "value": _FLOATS}


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


def metrics_page_body(columns: Sequence[Sequence[Any]], since: int) -> Body:
    """The page of ``columns`` (METRIC_KEYS order, ``at`` as text) with its ETag."""
    if not columns[0]:
        items = b"[]"
    else:
        strings = _JsonStrings()
        parts = zip(*(_column_json(k, c, strings) for k, c in zip(METRIC_KEYS, columns,
                                                                     strict=True)), strict=True)
        items = b"[" + b",".join(map(_POINT.__mod__, parts)) + b"]"
    next_since = columns[0][-1] if columns[0] else since
    return _with_etag(b'{"items":' + items + b',"next_since":' + str(next_since).encode() + b"}")


def respond(body_and_etag: Body, if_none_match: str | None) -> Response:
    """The serialised body as a 200 with its ETag, or a bodiless 304 when the client has it."""
    body, etag_ = body_and_etag
    if etag_matches(if_none_match, etag_):
        return Response(status_code=304, headers={"ETag": etag_})
    return Response(body, media_type="application/json", headers={"ETag": etag_})
