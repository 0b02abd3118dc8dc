"""The hottest job reads on the DBAPI connection itself: the statements of
``drtrain.jobs.repository`` compiled once per dialect, executed on a raw cursor, their rows
converted column by column, with no Session, no Core result and no per-value type decorator.

Each function takes ``(dbapi_connection, dialect, ...)`` (``drtrain.kit.db.raw_reader``) and
answers what its twin in the repository answers, or ``None`` where the repository would raise
NotFound (the caller then takes the ordinary path, which raises it). Timestamps come back as
aware UTC datetimes (``utc_datetime``), or for metric points as the ISO-8601 text the API
serialises (``utc_texts``), without a datetime per point.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from pydantic_core import from_json
from sqlalchemy import JSON, DateTime, Select
from sqlalchemy.engine import Dialect

from drtrain.jobs import repository as q
from drtrain.kit.db import json_loads
from drtrain.kit.models import as_utc

UTC = timezone.utc  # noqa: UP017 - the name UTC is the column type in drtrain.kit.models
_UTC_ZONES = frozenset((UTC, ZoneInfo("UTC"), ZoneInfo("Etc/UTC")))
Converter = Callable[[Any], Any]


def utc_datetime(value: Any) -> datetime | None:
    """A stored timestamp as aware UTC: SQLite answers text (UTC, no offset), PostgreSQL an
    aware datetime in the session's zone (left as it is when that zone is UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        # SQLite's storage format, with or without microseconds: UTC, and parsed as such
        # in one call (datetime.replace costs more than the parse).
        if len(value) in (19, 26):
            return datetime.fromisoformat(value + "+00:00")
        return as_utc(datetime.fromisoformat(value))
    if value.tzinfo is UTC:
        return value
    if value.tzinfo in _UTC_ZONES:
        return value  # PostgreSQL's "Etc/UTC": UTC at every instant, written as "Z" too
    return as_utc(value)


def utc_datetimes(values: Sequence[Any]) -> list[datetime | None]:
    """``utc_datetime`` of each; a column of SQLite's text is parsed in C, all at once."""
    if set(map(type, values)) == {str} and set(map(len, values)) <= {19, 26}:
        return list(map(datetime.fromisoformat, map(operator.add, values, repeat("+00:00"))))
    return list(map(utc_datetime, values))


def _iso_z(value: Any) -> str:
    # As pydantic writes an aware UTC datetime: microseconds only when non-zero, then "Z".
    converted = utc_datetime(value)
    if converted is None:
        raise ValueError("a metric point without a timestamp")
    return converted.replace(tzinfo=None).isoformat() + "Z"


def utc_texts(values: Sequence[Any]) -> list[str]:
    """Stored timestamps as the API writes them (``2026-01-02T03:04:05.678000Z``)."""
    n = len(values)
    if n and set(map(type, values)) == {str} and set(map(len, values)) == {26}:
        # SQLite's storage format ("2026-01-02 03:04:05.678000", UTC) for every value:
        # reshaped all at once, in C, with no datetime made.
        joined = "\x00".join(values)
        if joined.count(" ") == n and joined.count(".") == n:
            texts = (joined.replace(" ", "T").replace(".000000", "")
                     .replace("\x00", "Z\x00") + "Z").split("\x00")
            if len(texts) == n:
                return texts
    elif n and set(map(type, values)) == {datetime} and set(
            map(attrgetter("tzinfo"), values)) <= _UTC_ZONES:
        # PostgreSQL's aware values, all in a UTC zone: written at once, the offset as "Z".
        joined = "\x00".join(map(datetime.isoformat, values))
        if joined.count("+00:00") == n:
            texts = joined.replace("+00:00", "Z").split("\x00")
            if len(texts) == n:
                return texts
    return [_iso_z(value) for value in values]


def json_value(text: str | None) -> Any:
    """A JSON column's text as SQLAlchemy's JSON type reads it (in a faster parser)."""
    return None if text is None else json_loads(text)


def json_values(texts: Sequence[str | None]) -> list[Any]:
    """``json_value`` of each: the column parsed as one JSON array, in one call."""
    try:
        values = from_json("[" + ",".join(["null" if t is None else t for t in texts]) + "]")
    except ValueError:
        return list(map(json_value, texts))
    if not isinstance(values, list) or len(values) != len(texts):
        return list(map(json_value, texts))  # a text that was not one JSON value
    return values


class Compiled:
    """A statement as its DBAPI text, and how to bind and read its values."""

    def __init__(self, stmt: Select[Any], dialect: Dialect, text_times: bool) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.dialect = dialect
        # The positional order of the parameters (SQLite); None: by name (psycopg).
        self.names = tuple(compiled.positiontup or ()) if dialect.positional else None
        self.binds: dict[str, Converter] = {}  # parameter -> its type's bind processor
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.binds[name] = processor
        # The values bound in the statement itself (SQLite's OFFSET 0).
        self.defaults = {k: v for k, v in compiled.params.items() if v is not None}
        self.types = [col.type for col in stmt.selected_columns]
        self.text_times = text_times
        # Per result column, made at the first execution: a driver's processor may depend
        # on the type the database answered (PostgreSQL's numerics).
        self.columns: tuple[Converter | None, ...] | None = None

    def read_with(self, description: Sequence[Any]) -> tuple[Converter | None, ...]:
        if self.columns is None:
            self.columns = tuple(_column_converter(t, self.dialect, self.text_times, d[1])
                                 for t, d in zip(self.types, description, strict=True))
        return self.columns


def _column_converter(type_: Any, dialect: Dialect, as_text: bool,
                      coltype: Any) -> Converter | None:
    """What SQLAlchemy would do to the column's values (JSON decoded on SQLite, booleans...),
    except for timestamps: ``UTCDateTime`` parses and converts every value, these skip that
    (and with ``as_text`` are left as stored, for ``utc_texts``)."""
    if isinstance(getattr(type_, "impl", type_), DateTime):
        return None if as_text else utc_datetime
    if isinstance(type_, JSON) and dialect.name == "sqlite":
        return json_value  # SQLite answers the text; PostgreSQL's driver decodes it itself
    return type_.dialect_impl(dialect).result_processor(
        dialect, coltype)


def compile_for(stmt: Select[Any] | Any, dialect: Dialect, *, text_times: bool = False) -> Compiled:
    return Compiled(stmt, dialect, text_times)


def execute(conn: Any, c: Compiled, params: dict[str, Any]) -> list[Any]:
    params = {**c.defaults, **params}
    for name, processor in c.binds.items():
        if name in params:
            params[name] = processor(params[name])
    args: Any = params if c.names is None else tuple(params[n] for n in c.names)
    cursor = conn.cursor()
    try:
        cursor.execute(c.sql, args)
        if c.columns is None:  # psycopg builds the description anew at each access
            c.read_with(cursor.description)
        return cursor.fetchall()
    finally:
        cursor.close()


def convert(rows: list[Any], c: Compiled) -> list[list[Any]]:
    """The rows as columns (lists), each through its converter."""
    if not rows or c.columns is None:
        return [[] for _ in c.types]
    return [list(col) if fn is None else utc_datetimes(col) if fn is utc_datetime
            else json_values(col) if fn is json_value else list(map(fn, col))
            for fn, col in zip(c.columns, zip(*rows, strict=True), strict=True)]


@lru_cache(maxsize=64)
def _job_view(names: tuple[str, ...], dialect: Dialect) -> Compiled:
    return compile_for(q._job_view_stmt(names), dialect)


def job_view(conn: Any, dialect: Dialect, tenant_id: str, job_id: str,
             names: tuple[str, ...]) -> dict[str, Any] | None:
    c = _job_view(names, dialect)
    rows = execute(conn, c, {"job_id": job_id, "tenant_id": tenant_id})
    if not rows:
        return None
    return {name: (value if fn is None else fn(value))
            for name, fn, value in zip(names, c.columns or (), rows[0], strict=True)}


@lru_cache(maxsize=64)
def _page(names: tuple[str, ...], by_status: bool, by_tag: bool, dialect: Dialect) -> Compiled:
    return compile_for(q._view_page_stmt(names, by_status, False, by_tag), dialect)


def job_views(conn: Any, dialect: Dialect, tenant_id: str, names: tuple[str, ...], *,
              status: str | None, page_size: int, tag: str | None = None,
              ) -> tuple[list[dict[str, Any]], str | None]:
    """The first page of ``repository.job_views`` (a page token takes the ordinary path)."""
    c = _page(names, bool(status), bool(tag), dialect)
    rows = execute(conn, c, q._page_params(tenant_id, status, None, page_size, tag))
    columns = convert(rows, c)
    n = len(names)
    token = None
    if len(rows) > page_size:
        token = q.encode_cursor(_Cursor(columns[n][page_size - 1], columns[n + 1][page_size - 1]))
    page = [dict(zip(names, values, strict=True))
            for values in zip(*columns[:n], strict=True)][:page_size]
    return page, token


class _Cursor(NamedTuple):
    created_at: datetime
    id: str


@lru_cache(maxsize=8)
def _job_exists(dialect: Dialect) -> Compiled:
    return compile_for(q._JOB_EXISTS, dialect)


_AT = [column.key for column in q.METRIC_COLUMNS].index("at")


@lru_cache(maxsize=8)
def _metric_rows(dialect: Dialect) -> Compiled:
    return compile_for(q._METRIC_ROWS, dialect, text_times=True)


def job_exists(conn: Any, dialect: Dialect, tenant_id: str, job_id: str) -> bool:
    return bool(execute(conn, _job_exists(dialect), {"job_id": job_id, "tenant_id": tenant_id}))


def metric_columns(conn: Any, dialect: Dialect, job_id: str, since: int,
                   limit: int) -> list[Sequence[Any]]:
    """The job's points after ``since`` (``repository.metric_rows``) as columns of
    ``repository.METRIC_COLUMNS``, ``at`` as the API's text."""
    c = _metric_rows(dialect)
    columns: list[Sequence[Any]] = list(convert(
        execute(conn, c, {"job_id": job_id, "since": since, "limit": limit}), c))
    columns[_AT] = utc_texts(columns[_AT])
    return columns
