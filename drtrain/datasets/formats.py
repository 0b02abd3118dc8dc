"""Reading and checking dataset files (CSV, NPZ, IDX) without torch.

Three uses, one set of readers (``csvfile``, ``arrays``), so a file that passed the upload
check loads the same way in the worker:
- ``check_headers``: what the first bytes and headers allow, in the request (cheap, bounded);
- ``inspect_upload``: the whole file checked and summarised, block by block (memory of a few
  blocks whatever the size), in a validation process (``drtrain.datasets.validation``);
- ``read_any``: the arrays a worker trains on (``drtrain.datasets.loading.load_arrays``).
Every refusal is an ``Invalid`` whose message names the row, column or array at fault.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from drtrain.datasets import arrays, csvfile
from drtrain.datasets.streams import (
    Collector,
    DatasetSummary,
    Limits,
    LoadedData,
    Sink,
    Summary,
    check_shape,
    sorted_classes,
)
from drtrain.kit.errors import Invalid

__all__ = ["FORMATS", "DatasetSummary", "Limits", "LoadedData", "check_headers", "detect_format",
           "encode_labels", "inspect_upload", "read_any", "read_idx_pair", "summarize"]

FORMATS = ("csv", "npz", "idx")
MAX_COLUMNS = csvfile.MAX_COLUMNS


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


def check_headers(path: Path, fmt: str, *, labels_path: Path | None, label_column: str,
                  side_info_column: str | None, limits: Limits) -> None:
    """The checks a file's header allows (columns, array shapes and types, declared sizes):
    a bounded read whatever the file's size, so they run in the request."""
    if fmt == "csv":
        csvfile.read_layout(path, label_column, side_info_column)
    elif fmt == "npz":
        arrays.check_npz(path, limits)
    elif fmt == "idx":
        arrays.check_idx(path, labels_path, limits)
    else:
        raise Invalid(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def _feed(path: Path, fmt: str, sink: Sink, *, labels_path: Path | None, label_column: str,
          side_info_column: str | None, limits: Limits) -> list[str] | None:
    """Feed the file's rows to ``sink``; returns the feature columns' names, where the format
    has them (a CSV header)."""
    if fmt == "csv":
        layout = csvfile.read_layout(path, label_column, side_info_column)
        csvfile.feed_csv(path, layout, sink, limits)
        return [layout.header[i].strip() for i in layout.feature_at]
    if fmt == "npz":
        arrays.feed_npz(path, sink, limits)
    elif fmt == "idx":
        arrays.feed_idx(path, labels_path, sink, limits)
    else:
        raise Invalid(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return None


def inspect_upload(path: Path, fmt: str, *, labels_path: Path | None, label_column: str,
                   side_info_column: str | None, limits: Limits) -> DatasetSummary:
    """The whole file checked and summarised without holding it."""
    summary = Summary(limits)
    names = _feed(path, fmt, summary, labels_path=labels_path, label_column=label_column,
                  side_info_column=side_info_column, limits=limits)
    return replace(summary.result(fmt), feature_names=names)


def read_any(path: Path, fmt: str, *, labels_path: Path | None, label_column: str,
             side_info_column: str | None, limits: Limits) -> LoadedData:
    collector = Collector(limits)
    _feed(path, fmt, collector, labels_path=labels_path, label_column=label_column,
          side_info_column=side_info_column, limits=limits)
    return collector.result()


def read_idx_pair(images: Path, labels: Path | None, limits: Limits,
                  scale: float | None = None) -> LoadedData:
    collector = Collector(limits)
    arrays.feed_idx(images, labels, collector, limits, scale)
    return collector.result()


def summarize_idx_pair(images: Path, labels: Path, limits: Limits, fmt: str,
                       scale: float | None = None) -> DatasetSummary:
    summary = Summary(limits)
    arrays.feed_idx(images, labels, summary, limits, scale)
    return summary.result(fmt)


# ---------------------------------------------------------------- arrays already in memory
def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    classes = sorted_classes(set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[v] for v in labels.tolist()), dtype=np.int64,
                       count=len(labels)), classes


def summarize(fmt: str, data: LoadedData) -> DatasetSummary:
    n, d = data.X.shape
    check_shape(n, d, len(data.classes), data.classes)
    labelled = data.y[data.y >= 0]
    counts = np.bincount(labelled, minlength=len(data.classes))
    with_side = len(labelled) if data.groups is None else int((data.groups >= 0).sum())
    lo, hi = float(data.X.min()), float(data.X.max())
    return DatasetSummary(
        format=fmt, n_samples=n, n_features=d, n_classes=len(data.classes),
        class_counts={c: int(k) for c, k in zip(data.classes, counts, strict=True)},
        feature_range=[lo, hi],
        visible_units_hint="bernoulli" if lo >= 0.0 and hi <= 1.0 else "gaussian",
        classes=list(data.classes), n_labelled=len(labelled), n_with_side=with_side)
