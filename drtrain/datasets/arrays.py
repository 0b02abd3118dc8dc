"""NPZ and IDX datasets, read from their headers first and then as a stream of blocks.

Every size is known from a header before a byte of data is read: what a header declares is
checked against the limit (``max_decompressed_bytes``, also for the float32 copy a worker
trains on) and against what the file really holds, so a small file cannot inflate without
bound. The data then flows in blocks of ``BLOCK_BYTES``; nothing here holds a whole array.
"""
from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np

from drtrain.datasets.csvfile import MAX_COLUMNS
from drtrain.datasets.streams import (
    LabelPart,
    Limits,
    Order,
    Sink,
    check_training_size,
    first_bad,
)
from drtrain.kit.errors import Invalid

BLOCK_BYTES = 8 << 20
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_NOT_NPZ = "file: not a valid NPZ (zip) archive"


@dataclass(frozen=True)
class Header:
    """One array as its header describes it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool = False

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def order(self) -> Order:
        return "F" if self.fortran else "C"


# ---------------------------------------------------------------- shared
def _features_of(header: Header, what: str, limits: Limits) -> tuple[int, int]:
    n = header.shape[0]
    d = math.prod(header.shape[1:])
    if n == 0:
        raise Invalid("the dataset has no rows")
    if d == 0:
        raise Invalid("the dataset has no feature columns")
    if d > MAX_COLUMNS:
        raise Invalid(f"{what}: {d} features, more than the limit {MAX_COLUMNS}")
    check_training_size(n, d, limits, what)
    return n, d


def _feed_features(blocks: Iterator[np.ndarray], header: Header, sink: Sink, what: str,
                   scale: float | None = None) -> None:
    """Blocks of X (flat, in storage order) as float32, refusing NaN, infinity and values
    beyond float32 with the row and feature where the first one is."""
    done = 0
    for raw in blocks:
        with np.errstate(over="ignore", invalid="ignore"):
            block = raw.astype(np.float32)
        if raw.dtype.kind == "f":  # whole numbers are always finite as float32
            at = first_bad(block)
            if at is not None:
                row, col = _position(done + at, header)
                raise Invalid(f"{what}: row {row}, feature {col} is not finite (NaN, infinity "
                              "or beyond float32)")
        if scale is not None:
            block /= np.float32(scale)
        sink.features(block)
        done += raw.size


def _position(flat: int, header: Header) -> tuple[int, int]:
    index = np.unravel_index(flat, header.shape, order=header.order)
    rest = header.shape[1:]
    col = int(np.ravel_multi_index(index[1:], rest)) if rest else 0
    return int(index[0]), col


def _label_values(values: np.ndarray, what: str) -> np.ndarray:
    """Labels as whole numbers or text (what ``LabelPart.of`` encodes)."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise Invalid(f"{what}: float labels must be whole numbers")
        return values.astype(np.int64)
    if values.dtype.kind == "U":
        return values
    raise Invalid(f"{what}: dtype {values.dtype} is not usable as labels (use integers or text)")


def _check_label_dtype(header: Header, what: str) -> None:
    if header.dtype.kind not in "iubfU":
        raise Invalid(f"{what}: dtype {header.dtype} is not usable as labels "
                      "(use integers or text)")


def _blocks(fh: IO[bytes], header: Header, what: str, short: str) -> Iterator[np.ndarray]:
    """``header.count`` items from ``fh`` in blocks; ``short`` says what a short body is."""
    itemsize = header.dtype.itemsize
    per_block = max(1, BLOCK_BYTES // max(itemsize, 1))
    left = header.count
    while left > 0:
        want = min(per_block, left) * itemsize
        data = fh.read(want)
        if len(data) != want:
            got = (header.count - left) * itemsize + len(data)
            raise Invalid(short.format(got=got, need=header.count * itemsize))
        left -= want // itemsize
        yield np.frombuffer(data, dtype=header.dtype)


# ---------------------------------------------------------------- NPZ
@dataclass(frozen=True)
class NpzPlan:
    members: dict[str, tuple[zipfile.ZipInfo, Header]]
    n: int
    d: int


def plan_npz(zf: zipfile.ZipFile, limits: Limits) -> NpzPlan:
    """Every check an NPZ's directory and array headers allow, before any data is read."""
    infos = zf.infolist()
    total = sum(info.file_size for info in infos)
    if total > limits.max_decompressed_bytes:
        raise Invalid(f"file: the NPZ arrays take {total} bytes uncompressed, more "
                      f"than the limit {limits.max_decompressed_bytes}")
    members = {}
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        members[name] = (info, _npy_header(zf, info, limits))
    for required in ("X", "y"):
        if required not in members:
            raise Invalid(f"array {required!r}: missing (the NPZ holds "
                          f"{', '.join(sorted(members)) or 'nothing'})")
    X, y = members["X"][1], members["y"][1]
    if X.dtype.kind not in "biuf":
        raise Invalid(f"array 'X': dtype {X.dtype} is not numeric")
    if len(X.shape) < 2:
        raise Invalid(f"array 'X': shape {X.shape}, expected (samples, features)")
    n, d = _features_of(X, "array 'X'", limits)
    if len(y.shape) != 1 or y.shape[0] != n:
        raise Invalid(f"array 'y': shape {y.shape}, expected ({n},) to match 'X'")
    _check_label_dtype(y, "array 'y'")
    if "groups" in members:
        groups = members["groups"][1]
        if len(groups.shape) != 1 or groups.shape[0] != n:
            raise Invalid(f"array 'groups': shape {groups.shape}, expected ({n},)")
        _check_label_dtype(groups, "array 'groups'")
    return NpzPlan(members, n, d)


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> Header:
    """One member's .npy header only. numpy would allocate the whole declared shape before
    reading the data, so a header claiming (10**6, 10**6) over a few bytes is refused here;
    so is a member that is not an array at all."""
    what = f"file: NPZ member {info.filename[:60]!r}"
    with zf.open(info) as fh:
        header = _read_npy_header(fh, what)
    if header.dtype.hasobject:
        raise Invalid(f"{what}: NPZ arrays must be plain numeric or text arrays "
                      "(object arrays would need pickle, which is refused)")
    declared = header.count * header.dtype.itemsize
    if declared > limits.max_decompressed_bytes:
        raise Invalid(f"{what}: shape {header.shape} of {header.dtype} takes {declared} bytes, "
                      f"more than the limit {limits.max_decompressed_bytes}")
    if declared > info.file_size:
        raise Invalid(f"{what}: shape {header.shape} needs {declared} bytes, the member holds "
                      f"{info.file_size} (not a valid NPZ)")
    return header


def _read_npy_header(fh: IO[bytes], what: str) -> Header:
    try:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(fh)
    except ValueError:
        raise Invalid(f"{what} is not a .npy array (not a valid NPZ)") from None
    return Header(tuple(shape), dtype, bool(fortran))


@contextmanager
def _npz_errors() -> Iterator[None]:
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        # A member that inflates to other than its directory entry says (sizes, CRC).
        raise Invalid(_NOT_NPZ) from None


def check_npz(path: Path, limits: Limits) -> NpzPlan:
    with _npz_errors(), zipfile.ZipFile(path) as zf:
        return plan_npz(zf, limits)


def feed_npz(path: Path, sink: Sink, limits: Limits) -> None:
    """Arrays ``X`` (N, D...), ``y`` (N,) and optional ``groups`` (N,); never unpickles."""
    with _npz_errors(), zipfile.ZipFile(path) as zf:
        plan = plan_npz(zf, limits)
        X = plan.members["X"][1]
        sink.shape(plan.n, plan.d, X.order, X.shape)
        _feed_features(_member_blocks(zf, plan, "X"), X, sink, "array 'X'")
        for block in _member_blocks(zf, plan, "y"):
            sink.labels(LabelPart.of("array 'y'", _label_values(block, "array 'y'")))
        if "groups" in plan.members:
            for block in _member_blocks(zf, plan, "groups"):
                sink.groups(LabelPart.of("array 'groups'",
                                         _label_values(block, "array 'groups'")))


def _member_blocks(zf: zipfile.ZipFile, plan: NpzPlan, name: str) -> Iterator[np.ndarray]:
    info, header = plan.members[name]
    with zf.open(info) as fh:
        _read_npy_header(fh, name)
        yield from _blocks(fh, header, f"array {name!r}", _NOT_NPZ)
        while fh.read(BLOCK_BYTES):
            pass  # to its end, where zipfile checks the CRC and the size


# ---------------------------------------------------------------- IDX
def _open_maybe_gz(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return cast(IO[bytes], gzip.open(path, "rb")) if gz else open(path, "rb")  # noqa: SIM115


@contextmanager
def _idx_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise Invalid(f"{what}: not a readable IDX file ({exc})") from None


def _idx_header(fh: IO[bytes], what: str, limits: Limits) -> Header:
    """The magic number and dimensions; the body's size is checked against the limit
    before it is read, so a small gzip cannot expand without bound."""
    magic = fh.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
        raise Invalid(f"{what}: wrong IDX magic number {magic.hex() or '(empty)'}")
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    if ndim == 0:
        raise Invalid(f"{what}: IDX with zero dimensions")
    raw_dims = fh.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise Invalid(f"{what}: IDX header is cut short")
    dims = tuple(int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    expected = math.prod(dims) * dtype.itemsize
    if expected > limits.max_decompressed_bytes:
        raise Invalid(f"{what}: IDX body of {expected} bytes is more than the limit "
                      f"{limits.max_decompressed_bytes}")
    return Header(dims, dtype)


def _required(labels: Path | None) -> Path:
    if labels is None:
        raise Invalid("labels_file: an IDX upload needs its labels file")
    return labels


def _idx_pair_headers(images: Path, labels: Path,
                      limits: Limits) -> tuple[Header, Header, int, int]:
    with _idx_errors("file"), _open_maybe_gz(images) as fh:
        X = _idx_header(fh, "file", limits)
    with _idx_errors("labels_file"), _open_maybe_gz(labels) as fh:
        y = _idx_header(fh, "labels_file", limits)
    if len(X.shape) < 2:
        raise Invalid(f"file: IDX images of shape {X.shape}, expected (samples, ...)")
    if len(y.shape) != 1:
        raise Invalid(f"labels_file: IDX labels of shape {y.shape}, expected (samples,)")
    if y.shape[0] != X.shape[0]:
        raise Invalid(f"labels_file: {y.shape[0]} labels for {X.shape[0]} images")
    n, d = _features_of(X, "file", limits)
    return X, y, n, d


def check_idx(images: Path, labels: Path | None, limits: Limits) -> None:
    _idx_pair_headers(images, _required(labels), limits)


def feed_idx(images: Path, labels: Path | None, sink: Sink, limits: Limits,
             scale: float | None = None) -> None:
    labels = _required(labels)
    X, _y, n, d = _idx_pair_headers(images, labels, limits)
    sink.shape(n, d)
    _feed_features(_idx_body(images, "file", limits), X, sink, "file", scale)
    for block in _idx_body(labels, "labels_file", limits):
        sink.labels(LabelPart.of("labels_file", _label_values(block, "labels_file")))


def _idx_body(path: Path, what: str, limits: Limits) -> Iterator[np.ndarray]:
    with _idx_errors(what), _open_maybe_gz(path) as fh:
        header = _idx_header(fh, what, limits)
        dims = list(header.shape)
        yield from _blocks(fh, header, what,
                           f"{what}: IDX body has {{got}} bytes, dimensions {dims} need {{need}}")
        if fh.read(1):
            raise Invalid(f"{what}: data after the IDX body (dimensions {dims})")
