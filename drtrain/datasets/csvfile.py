"""CSV datasets: a header row naming the columns, then one sample per row.

The header is read with the csv module (bounded, so a million-column header is refused while
it is counted). The rows go through pyarrow's streaming CSV reader: vectorised, in blocks,
so checking a file takes a few blocks of memory whatever its size. When that reader refuses
something, or a block holds a value the checks refuse, the file is read again with the csv
module, which names the first row and column at fault (the messages the API has always given).
An empty label or side-information cell is a missing value (code -1), not an error.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv

from drtrain.datasets.streams import (
    MAX_LABEL_CHARS,
    MISSING,
    LabelCodes,
    LabelPart,
    Limits,
    Sink,
)
from drtrain.kit.errors import Invalid

MAX_COLUMNS = 100_000
# Longest physical line read: the header (MAX_COLUMNS names of ~16 characters), and a
# row: 64 characters per column (a float needs < 25) plus room for a long text label.
MAX_LINE_CHARS = 16 * MAX_COLUMNS
ROW_CHARS_PER_COLUMN = 64
ROW_CHARS_SLACK = 64 * 1024
# pyarrow reads this much at a time (more for rows that may be longer): a few of these
# blocks, parsed on two threads, are all the memory a check of any size takes.
BLOCK_BYTES = 1 << 20
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Layout:
    header: list[str]
    label_at: int
    side_at: int | None
    feature_at: list[int]

    @property
    def label_column(self) -> str:
        return self.header[self.label_at]

    @property
    def row_limit(self) -> int:
        """A row of numbers needs at most a few dozen characters per column."""
        return ROW_CHARS_PER_COLUMN * len(self.header) + ROW_CHARS_SLACK


# ---------------------------------------------------------------- the header
def read_layout(path: Path, label_column: str, side_info_column: str | None) -> Layout:
    _count_header_fields(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            header = next(csv.reader(_BoundedLines(fh, MAX_LINE_CHARS)))
        except StopIteration:
            raise Invalid("the CSV file is empty (a header row is required)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise Invalid(f"header row: not readable CSV ({exc})") from None
        if not fh.read(1):  # the end of the file right after the header
            raise Invalid("the dataset has no rows (the CSV file holds its header row only)")
    header = [h.strip() for h in header]
    if len(header) > MAX_COLUMNS:
        raise Invalid(f"header row: {len(header)} columns, more than the limit {MAX_COLUMNS}")
    if all(_is_number(h) for h in header):
        raise Invalid("header row: every field is a number; a header row naming the "
                      "columns is required")
    if label_column not in header:
        raise Invalid(f"header row: label column {label_column!r} not found "
                      f"(columns: {', '.join(header[:10])}{'...' if len(header) > 10 else ''})"
                      + (_separator_hint(header) or _spelling_hint(label_column, header)
                         or _no_labels_hint(label_column)))
    if side_info_column is not None and side_info_column not in header:
        raise Invalid(f"header row: side information column {side_info_column!r} not found"
                      + _spelling_hint(side_info_column, header))
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise Invalid(f"header row: column names must be unique; {repeated[:5]} appear more "
                      "than once")
    label_at = header.index(label_column)
    side_at = header.index(side_info_column) if side_info_column is not None else None
    features = [i for i in range(len(header)) if i not in (label_at, side_at)]
    if not features:
        raise Invalid("header row: the dataset has no feature columns (every column is the "
                      "label or the side information)")
    return Layout(header, label_at, side_at, features)


def _spelling_hint(name: str, header: list[str]) -> str:
    """A column that differs from the one asked for only in case or spaces."""
    close = [h for h in header if h.strip().casefold() == name.strip().casefold()]
    return f"; did you mean {close[0]!r}? (names are compared exactly)" if close else ""


def _no_labels_hint(label_column: str) -> str:
    """A file without labels is still a dataset: pretraining needs none."""
    return (f"; a file without labels still needs the column: add an empty {label_column!r} "
            "column (a row with an empty label pretrains but is not fine-tuned on), or name "
            "the label column with label_column")


def _separator_hint(header: list[str]) -> str:
    """Why a one-column header may not name the label: another separator than the comma."""
    if len(header) != 1:
        return ""
    found = next((sep for sep in (";", "\t", "|") if sep in header[0]), None)
    return (f"; the header holds {found!r} between names, and the file is read as "
            "comma-separated") if found else ""


def _count_header_fields(path: Path) -> None:
    """Refuse a header with too many columns by counting its separators in fixed-size
    blocks, before the csv module turns each field into a string (a million of them would
    take far more memory than the upload itself). Quoted commas can only over-count."""
    commas = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 16):
            end = block.find(b"\n")
            commas += block.count(b",", 0, end if end >= 0 else len(block))
            if commas + 1 > MAX_COLUMNS:
                raise Invalid(f"header row: more than the limit {MAX_COLUMNS} columns")
            if end >= 0:
                return


class _BoundedLines:
    """The file's lines for csv.reader, each read with a bound, so one endless row is
    refused once it passes ``limit`` characters instead of becoming millions of fields."""

    def __init__(self, fh: TextIO, limit: int) -> None:
        self.fh, self.limit, self.line_no = fh, limit, 0

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.fh.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.line_no += 1
        if len(line) > self.limit and not line.endswith("\n"):
            # a line of the file, header included: the cell messages' "row N" counts rows
            # after the header, and a quoted cell may span lines
            raise Invalid(f"line {self.line_no} of the file (the header is line 1): longer than "
                          f"{self.limit} characters")
        return line


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- the rows
def feed_csv(path: Path, layout: Layout, sink: Sink, limits: Limits) -> None:
    """Every row into ``sink``; any problem is an ``Invalid`` naming its row and column."""
    try:
        n = _feed_arrow(path, layout, sink, limits)
    except MemoryError:
        raise  # pyarrow's too: out of the memory the check may use, not a malformed file
    except (pa.ArrowException, Invalid, _Refused) as exc:
        found = find_first_problem(path, layout, limits)
        if found is not None:
            raise found from None
        if isinstance(exc, Invalid):
            raise
        raise Invalid(f"not readable CSV ({str(exc)[:300]})") from None
    sink.shape(n, len(layout.feature_at))


class _Refused(Exception):
    """A block holds a value the checks refuse: the slow reader will say where."""


def _feed_arrow(path: Path, layout: Layout, sink: Sink, limits: Limits) -> int:
    names = [f"c{i}" for i in range(len(layout.header))]
    text = pa.dictionary(pa.int32(), pa.string())
    types = {names[i]: pa.float32() for i in layout.feature_at}
    types[names[layout.label_at]] = text
    if layout.side_at is not None:
        types[names[layout.side_at]] = text
    reader = pv.open_csv(
        path,
        read_options=pv.ReadOptions(column_names=names, skip_rows=1, use_threads=True,
                                    block_size=max(BLOCK_BYTES, 2 * layout.row_limit)),
        parse_options=pv.ParseOptions(newlines_in_values=True),
        convert_options=pv.ConvertOptions(column_types=types, null_values=[],
                                          strings_can_be_null=False,
                                          quoted_strings_can_be_null=False))
    label_name = layout.label_column
    side_name = layout.header[layout.side_at] if layout.side_at is not None else ""
    n = 0
    with reader:
        for batch in reader:
            rows = batch.num_rows
            columns = [batch.column(names[i]).to_numpy(zero_copy_only=False)
                       for i in layout.feature_at]
            # numpy's min and max propagate NaN and show infinity: two passes check every
            # value (Python's min() would skip a NaN).
            lo = float(np.min([c.min() for c in columns])) if columns and rows else 0.0
            hi = float(np.max([c.max() for c in columns])) if columns and rows else 0.0
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise _Refused()
            if sink.keeps_values:
                sink.features(np.column_stack(columns) if columns
                              else np.empty((rows, 0), np.float32))
            elif rows:
                sink.span(lo, hi)
            sink.labels(_labels(batch.column(names[layout.label_at]), f"column {label_name!r}",
                                check=True))
            if layout.side_at is not None:
                sink.groups(_labels(batch.column(names[layout.side_at]),
                                    f"column {side_name!r}", check=False))
            n += rows
    return n


def _labels(column: pa.Array, what: str, *, check: bool) -> LabelPart:
    """A dictionary-encoded column as codes into its (stripped) values; an empty cell is
    MISSING."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    stripped = [v.strip() for v in column.dictionary.to_pylist()]
    if check and any(len(v) > MAX_LABEL_CHARS for v in stripped):
        raise _Refused()
    values = [v for v in stripped if v]
    lut = np.full(len(stripped) + 1, MISSING, dtype=np.int64)  # +1: never empty
    lut[[i for i, v in enumerate(stripped) if v]] = np.arange(len(values))
    indices = column.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return LabelPart(what, lut[indices], values)


# ---------------------------------------------------------------- naming the first problem
def find_first_problem(path: Path, layout: Layout, limits: Limits) -> Invalid | None:
    """Read the rows with the csv module, keeping nothing but the label set, and return the
    first problem as the error to raise (None if there is none)."""
    header = layout.header
    codes = LabelCodes(limits.max_classes)
    label_column = layout.label_column
    row_no = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = _BoundedLines(fh, MAX_LINE_CHARS)
            reader = csv.reader(lines)
            next(reader)
            lines.limit = layout.row_limit
            for row_no, row in enumerate(reader, start=1):
                if not row:
                    continue  # a blank line (often the last one) is not a sample
                if len(row) != len(header):
                    return Invalid(f"row {row_no}: {len(row)} fields, the header has {len(header)}")
                for i in layout.feature_at:
                    _check_float(row[i], row_no, header[i])
                label = row[layout.label_at].strip()
                if not label:
                    continue  # an unlabelled row
                if len(label) > MAX_LABEL_CHARS:
                    return Invalid(f"row {row_no}, column {label_column!r}: the label is longer "
                                   f"than {MAX_LABEL_CHARS} characters")
                if label not in codes.index:
                    codes.add(LabelPart(f"row {row_no}, column {label_column!r}",
                                        np.zeros(1, np.int64), [label]))
    except (csv.Error, UnicodeDecodeError) as exc:
        return Invalid(f"row {row_no + 1}: not readable CSV ({exc})")
    except Invalid as exc:
        return exc
    return None


def _check_float(text: str, row_no: int, column: str) -> None:
    if not text.strip():
        raise Invalid(f"row {row_no}, column {column!r}: empty; a feature needs a number (only "
                      "the label and side information columns may be empty)")
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"row {row_no}, column {column!r}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise Invalid(f"row {row_no}, column {column!r}: {text.strip()!r} is not finite "
                      "(NaN and infinity are refused)")
    # float32 is what training uses: a value that overflows it is as bad as infinity.
    if abs(value) > _F32_MAX:
        raise Invalid(f"row {row_no}, column {column!r}: {text.strip()!r} overflows float32")

