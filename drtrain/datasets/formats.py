"""Reading and checking dataset files (CSV, NPZ, IDX) without torch.

Used twice: by the API at upload time (``inspect_upload``: is it well formed, what is in it)
and by the worker (``drtrain.datasets.loading.load_arrays``: the arrays to train on). Both go through the same
parsers, so a file that passed the upload check loads the same way in the worker.
Every refusal is an ``Invalid`` whose message names the row, column or array at fault.
"""
from __future__ import annotations

import csv
import gzip
import math
import zipfile
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np

from drtrain.kit.errors import Invalid

MAX_COLUMNS = 100_000
# Longest physical line read: the header (MAX_COLUMNS names of ~16 characters), and a
# row: 64 characters per column (a float needs < 25) plus room for a long text label.
MAX_LINE_CHARS = 16 * MAX_COLUMNS
ROW_CHARS_PER_COLUMN = 64
ROW_CHARS_SLACK = 64 * 1024
FORMATS = ("csv", "npz", "idx")
_IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class Limits(Protocol):
    max_decompressed_bytes: int


@dataclass
class DatasetSummary:
    format: str
    n_samples: int
    n_features: int
    n_classes: int
    class_counts: dict[str, int]
    feature_range: list[float]
    visible_units_hint: str
    classes: list[str]


@dataclass
class LoadedData:
    X: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) int64, indices into ``classes``
    classes: list[str]
    groups: np.ndarray | None = None  # (N,) int64 side information for DR, or None


# ---------------------------------------------------------------- format detection
def detect_format(filename: str, head: bytes) -> str:
    """The format from the extension, else from the first bytes (magic numbers)."""
    name = filename.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".gz", ".idx", "-ubyte")) or ".idx" in name:
        return "idx"
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"\x1f\x8b") or head[:2] == b"\x00\x00":
        return "idx"
    return "csv"


# ---------------------------------------------------------------- summaries
def _sorted_classes(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order (so "10" follows "9"), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _label_strings(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise Invalid(f"{what}: float labels must be whole numbers")
        return values.astype(np.int64).astype(str)
    if values.dtype.kind == "U":
        return values
    raise Invalid(f"{what}: dtype {values.dtype} is not usable as labels (use integers or text)")


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    classes = _sorted_classes(set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[v] for v in labels.tolist()), dtype=np.int64,
                       count=len(labels)), classes


def summarize(fmt: str, data: LoadedData) -> DatasetSummary:
    n, d = data.X.shape
    if n == 0:
        raise Invalid("the dataset has no rows")
    if d == 0:
        raise Invalid("the dataset has no feature columns")
    if len(data.classes) < 2:
        raise Invalid(f"the labels hold one class only ({data.classes[0]!r}); "
                      "classification needs at least two")
    counts = np.bincount(data.y, minlength=len(data.classes))
    lo, hi = float(data.X.min()), float(data.X.max())
    return DatasetSummary(
        format=fmt, n_samples=n, n_features=d, n_classes=len(data.classes),
        class_counts={c: int(k) for c, k in zip(data.classes, counts, strict=True)},
        feature_range=[lo, hi],
        visible_units_hint="bernoulli" if lo >= 0.0 and hi <= 1.0 else "gaussian",
        classes=list(data.classes))


# ---------------------------------------------------------------- CSV
def read_csv(path: Path, label_column: str, side_info_column: str | None) -> LoadedData:
    """Row by row with the csv module; every row is checked before the next is read."""
    _count_header_fields(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        lines = _BoundedLines(fh, MAX_LINE_CHARS)
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            raise Invalid("the CSV file is empty (a header row is required)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise Invalid(f"header row: not readable CSV ({exc})") from None
        header = [h.strip() for h in header]
        # A row of numbers needs at most a few dozen characters per column.
        lines.limit = ROW_CHARS_PER_COLUMN * len(header) + ROW_CHARS_SLACK
        if len(header) > MAX_COLUMNS:
            raise Invalid(f"header row: {len(header)} columns, more than the limit {MAX_COLUMNS}")
        if all(_is_number(h) for h in header):
            raise Invalid("header row: every field is a number; a header row naming the "
                          "columns is required")
        if label_column not in header:
            raise Invalid(f"header row: label column {label_column!r} not found "
                          f"(columns: {', '.join(header[:10])}{'...' if len(header) > 10 else ''})")
        if side_info_column is not None and side_info_column not in header:
            raise Invalid(f"header row: side information column {side_info_column!r} not found")
        if len(set(header)) != len(header):
            raise Invalid("header row: column names must be unique")
        label_at = header.index(label_column)
        side_at = header.index(side_info_column) if side_info_column is not None else None
        feature_at = [i for i in range(len(header)) if i not in (label_at, side_at)]
        values = array("f")
        labels: list[str] = []
        groups: list[str] = []
        row_no = 0
        try:
            for row_no, row in enumerate(reader, start=1):
                if not row:
                    continue  # a blank line (often the last one) is not a sample
                if len(row) != len(header):
                    raise Invalid(f"row {row_no}: {len(row)} fields, the header has {len(header)}")
                for i in feature_at:
                    values.append(_parse_float(row[i], row_no, header[i]))
                label = row[label_at].strip()
                if not label:
                    raise Invalid(f"row {row_no}, column {label_column!r}: the label is empty")
                labels.append(label)
                if side_at is not None:
                    groups.append(row[side_at].strip())
        except (csv.Error, UnicodeDecodeError) as exc:
            raise Invalid(f"row {row_no + 1}: not readable CSV ({exc})") from None
    X = np.frombuffer(values, dtype=np.float32).reshape(len(labels), len(feature_at))
    y, classes = encode_labels(np.array(labels, dtype=str))
    g = encode_labels(np.array(groups, dtype=str))[0] if side_at is not None else None
    return LoadedData(X=X, y=y, classes=classes, groups=g)


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
    refused once it passes ``limit`` characters instead of becoming millions of fields.
    The limit starts wide for the header and is narrowed to what its columns can hold."""

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
            raise Invalid(f"line {self.line_no}: longer than {self.limit} characters")
        return line


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_float(text: str, row_no: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"row {row_no}, column {column!r}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise Invalid(f"row {row_no}, column {column!r}: {text.strip()!r} is not finite "
                      "(NaN and infinity are refused)")
    # float32 is what training uses: a value that overflows it is as bad as infinity.
    if abs(value) > float(np.finfo(np.float32).max):
        raise Invalid(f"row {row_no}, column {column!r}: {text.strip()!r} overflows float32")
    return value


# ---------------------------------------------------------------- NPZ
def read_npz(path: Path, limits: Limits) -> LoadedData:
    """Arrays ``X`` (N, D...), ``y`` (N,) and optional ``groups`` (N,); never unpickles."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(info.file_size for info in infos)
            if total > limits.max_decompressed_bytes:
                raise Invalid(f"file: the NPZ arrays take {total} bytes uncompressed, more "
                              f"than the limit {limits.max_decompressed_bytes}")
            for info in infos:
                _check_npy_member(zf, info, limits)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        raise Invalid("file: not a valid NPZ (zip) archive") from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            for required in ("X", "y"):
                if required not in names:
                    raise Invalid(f"array {required!r}: missing (the NPZ holds "
                                  f"{', '.join(sorted(names)) or 'nothing'})")
            X, y = npz["X"], npz["y"]
            groups = npz["groups"] if "groups" in names else None
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise Invalid(f"file: NPZ arrays must be plain numeric or text arrays ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        # A member that inflates to other than its directory entry says (sizes, CRC).
        raise Invalid("file: not a valid NPZ (zip) archive") from None
    if X.dtype.kind not in "biuf":
        raise Invalid(f"array 'X': dtype {X.dtype} is not numeric")
    if X.ndim < 2:
        raise Invalid(f"array 'X': shape {X.shape}, expected (samples, features)")
    X = X.reshape(X.shape[0], -1)
    if X.shape[1] > MAX_COLUMNS:
        raise Invalid(f"array 'X': {X.shape[1]} features, more than the limit {MAX_COLUMNS}")
    if y.ndim != 1 or len(y) != len(X):
        raise Invalid(f"array 'y': shape {y.shape}, expected ({len(X)},) to match 'X'")
    X = _finite_float32(X, "array 'X'")
    y_idx, classes = encode_labels(_label_strings(y, "array 'y'"))
    g = None
    if groups is not None:
        if groups.ndim != 1 or len(groups) != len(X):
            raise Invalid(f"array 'groups': shape {groups.shape}, expected ({len(X)},)")
        g = encode_labels(_label_strings(groups, "array 'groups'"))[0]
    return LoadedData(X=X, y=y_idx, classes=classes, groups=g)


def _check_npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> None:
    """Read one member's .npy header only. numpy allocates the whole declared shape before
    it reads the data, so a header claiming (10**6, 10**6) over a few bytes must be refused
    here, before ``np.load`` sees it; so must a member that is not an array at all (numpy
    would hand back its raw bytes)."""
    what = f"file: NPZ member {info.filename[:60]!r}"
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _fortran, dtype = read_header(fh)
        except ValueError:
            raise Invalid(f"{what} is not a .npy array (not a valid NPZ)") from None
    if dtype.hasobject:
        raise Invalid(f"{what}: NPZ arrays must be plain numeric or text arrays "
                      "(object arrays would need pickle, which is refused)")
    declared = math.prod(shape) * dtype.itemsize
    if declared > limits.max_decompressed_bytes:
        raise Invalid(f"{what}: shape {shape} of {dtype} takes {declared} bytes, more than "
                      f"the limit {limits.max_decompressed_bytes}")
    if declared > info.file_size:
        raise Invalid(f"{what}: shape {shape} needs {declared} bytes, the member holds "
                      f"{info.file_size} (not a valid NPZ)")


def _finite_float32(X: np.ndarray, what: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = X.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise Invalid(f"{what}: row {row}, feature {col} is not finite (NaN, infinity or "
                      "beyond float32)")
    return out


# ---------------------------------------------------------------- IDX
def _open_maybe_gz(path: Path):  # noqa: ANN202
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: Path, limits: Limits, what: str) -> np.ndarray:
    """One IDX array (optionally gzipped). The header gives the size, which is checked
    against the limit before the body is read, so a small gzip cannot expand without bound."""
    try:
        with _open_maybe_gz(path) as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
                raise Invalid(f"{what}: wrong IDX magic number {magic.hex() or '(empty)'}")
            dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
            if ndim == 0:
                raise Invalid(f"{what}: IDX with zero dimensions")
            raw_dims = fh.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise Invalid(f"{what}: IDX header is cut short")
            dims = [int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4)]
            expected = math.prod(dims) * dtype.itemsize
            if expected > limits.max_decompressed_bytes:
                raise Invalid(f"{what}: IDX body of {expected} bytes is more than the limit "
                              f"{limits.max_decompressed_bytes}")
            body = fh.read(expected)
            if len(body) != expected:
                raise Invalid(f"{what}: IDX body has {len(body)} bytes, dimensions {dims} "
                              f"need {expected}")
            if fh.read(1):
                raise Invalid(f"{what}: data after the IDX body (dimensions {dims})")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise Invalid(f"{what}: not a readable IDX file ({exc})") from None
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def read_idx_pair(images: Path, labels: Path | None, limits: Limits,
                  scale: float | None = None) -> LoadedData:
    if labels is None:
        raise Invalid("labels_file: an IDX upload needs its labels file")
    X = read_idx(images, limits, "file")
    y = read_idx(labels, limits, "labels_file")
    if X.ndim < 2:
        raise Invalid(f"file: IDX images of shape {X.shape}, expected (samples, ...)")
    if y.ndim != 1:
        raise Invalid(f"labels_file: IDX labels of shape {y.shape}, expected (samples,)")
    if len(y) != len(X):
        raise Invalid(f"labels_file: {len(y)} labels for {len(X)} images")
    X = X.reshape(len(X), -1)
    if X.shape[1] > MAX_COLUMNS:
        raise Invalid(f"file: {X.shape[1]} features, more than the limit {MAX_COLUMNS}")
    X = _finite_float32(X, "file")
    if scale is not None:
        X = X / np.float32(scale)
    y_idx, classes = encode_labels(_label_strings(y, "labels_file"))
    return LoadedData(X=X, y=y_idx, classes=classes)


# ---------------------------------------------------------------- entry points
def read_any(path: Path, fmt: str, *, labels_path: Path | None, label_column: str,
             side_info_column: str | None, limits: Limits) -> LoadedData:
    if fmt == "csv":
        return read_csv(path, label_column, side_info_column)
    if fmt == "npz":
        return read_npz(path, limits)
    if fmt == "idx":
        return read_idx_pair(path, labels_path, limits)
    raise Invalid(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def inspect_upload(path: Path, fmt: str, *, labels_path: Path | None, label_column: str,
                   side_info_column: str | None, limits: Limits) -> DatasetSummary:
    data = read_any(path, fmt, labels_path=labels_path, label_column=label_column,
                    side_info_column=side_info_column, limits=limits)
    return summarize(fmt, data)
