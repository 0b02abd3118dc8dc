"""SQLAlchemy statements run on the DBAPI connection itself: each compiled once per dialect
(``Compiled``), executed on a raw cursor (``execute``), its rows converted a column at a time
(``convert``), with no Session, no Core result and no type decorator called per value.

The repositories own the statements and call these on ``drtrain.kit.db.raw_reader``'s
connection. A column is converted as SQLAlchemy's result processing would convert it, except
timestamps: aware UTC datetimes (``utc_datetime``), or the API's ISO-8601 text
(``utc_texts``) without a datetime made per value.
"""
from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from itertools import repeat
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from pydantic_core import from_json
from sqlalchemy import JSON, DateTime, Select
from sqlalchemy.engine import Dialect

from drtrain.kit.db import json_loads
from drtrain.kit.models import as_utc

UTC = timezone.utc  # noqa: UP017 - the name UTC is the column type in drtrain.kit.models
_UTC_ZONES = frozenset((UTC, ZoneInfo("UTC"), ZoneInfo("Etc/UTC")))
Converter = Callable[[Any], Any]
RawConnection = tuple[Any, Dialect]  # (DBAPI connection, its dialect)


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
    """A JSON column's text as SQLAlchemy's JSON type reads it (in pydantic-core's parser)."""
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


class Prepared:
    """A statement compiled once per dialect (on its first use with it), run on a raw
    connection: ``(DBAPI connection, dialect)`` as ``drtrain.kit.db.raw_reader`` lends it."""

    def __init__(self, stmt: Select[Any] | Any, *, text_times: bool = False) -> None:
        self.stmt = stmt
        self.text_times = text_times
        self._by_dialect: weakref.WeakKeyDictionary[Dialect, Compiled] = (
            weakref.WeakKeyDictionary())

    def compiled(self, dialect: Dialect) -> Compiled:
        c = self._by_dialect.get(dialect)
        if c is None:
            c = self._by_dialect[dialect] = Compiled(self.stmt, dialect, self.text_times)
        return c

    def rows(self, raw: RawConnection, params: dict[str, Any]) -> tuple[list[Any], Compiled]:
        """The rows as the driver answers them, and the statement (its converters)."""
        conn, dialect = raw
        c = self.compiled(dialect)
        return execute(conn, c, params), c

    def columns(self, raw: RawConnection, params: dict[str, Any]) -> list[list[Any]]:
        """The result as converted columns."""
        rows, c = self.rows(raw, params)
        return convert(rows, c)

    def first(self, raw: RawConnection, params: dict[str, Any]) -> list[Any] | None:
        """The first row, converted, or None."""
        rows, c = self.rows(raw, params)
        if not rows:
            return None
        return [value if fn is None else fn(value)
                for fn, value in zip(c.columns or (), rows[0], strict=True)]
