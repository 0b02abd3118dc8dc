"""What a dataset reader feeds, block by block: feature values, labels and side information.

The readers (``csvfile``, ``arrays``) never hold a whole file: they push blocks into a sink.
``Summary`` keeps only counts and a range, so checking an upload takes memory of the order of
one block whatever the file's size; ``Collector`` keeps the arrays a worker trains on. Labels
become integer codes as they arrive (``LabelCodes``), and the number of classes is capped.

A label or side value may be missing (an empty CSV cell, -1 or "" in an array): its code is
``MISSING`` (-1), it counts towards no class, and the summary says how many rows carry one
(``n_labelled``, ``n_with_side``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from drtrain.kit.errors import Invalid

# A label is shown in every listing (the class table): keep each one short.
MAX_LABEL_CHARS = 200
# The code of a missing label or side value, in every array a worker trains on.
MISSING = -1


Order = Literal["C", "F"]


class Limits(Protocol):
    @property
    def max_decompressed_bytes(self) -> int: ...
    @property
    def max_classes(self) -> int: ...


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
    # Rows that carry a label, and a side value (the label itself when the dataset has no
    # side column or ``groups`` array: DR then groups by label).
    n_labelled: int | None = None
    n_with_side: int | None = None
    # Distinct side values, when known and not the classes (a built-in's coarse grouping).
    n_groups: int | None = None
    # The feature columns' names in file order, where the format names them (a CSV header).
    feature_names: list[str] | None = None


@dataclass
class LoadedData:
    X: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) int64, indices into ``classes``; MISSING (-1) where unlabelled
    classes: list[str]
    # (N,) int64 side information for DR (MISSING where a row has none), or None
    groups: np.ndarray | None = None


def missing_mask(values: np.ndarray) -> np.ndarray:
    """Which plain label values (whole numbers or text) are missing: -1, or empty text."""
    if values.dtype.kind == "i":
        return values == MISSING
    if values.dtype.kind == "U":
        return np.char.strip(values) == ""
    return np.zeros(values.shape, dtype=bool)


def sorted_classes(labels: set[str] | dict[str, int]) -> list[str]:
    """Numeric labels in numeric order (so "10" follows "9"), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


@dataclass(frozen=True)
class LabelPart:
    """One block of labels: ``indices`` into ``values`` (a block's own small dictionary)."""

    what: str  # how a message names the labels: "column 'label'", "array 'y'", ...
    indices: np.ndarray  # MISSING (-1) for a row without a value
    values: list[str]

    @classmethod
    def of(cls, what: str, labels: np.ndarray) -> LabelPart:
        """From plain label values (strings or whole numbers), encoded with ``np.unique``;
        -1 and empty text are missing."""
        missing = missing_mask(labels)
        uniq, inverse = np.unique(labels[~missing], return_inverse=True)
        indices = np.full(len(labels), MISSING, dtype=np.int64)
        indices[~missing] = inverse.reshape(-1)
        return cls(what, indices, [str(u) for u in uniq.tolist()])


class LabelCodes:
    """Each distinct label gets a code in order of first appearance; more than ``limit``
    distinct labels is refused as soon as the one past the limit appears."""

    def __init__(self, limit: int | None, noun: str = "classes") -> None:
        self.limit, self.noun = limit, noun
        self.index: dict[str, int] = {}
        self.counts: list[int] = []
        self.present = 0  # rows with a value (not MISSING)

    def add(self, part: LabelPart) -> np.ndarray:
        lut = np.empty(len(part.values), dtype=np.int64)
        for i, value in enumerate(part.values):
            code = self.index.get(value)
            if code is None:
                if self.limit is not None and len(self.index) >= self.limit:
                    raise Invalid(f"{part.what}: more than {self.limit} distinct {self.noun} "
                                  f"(the limit is {self.limit})")
                code = self.index[value] = len(self.counts)
                self.counts.append(0)
            lut[i] = code
        has = part.indices >= 0
        seen = np.bincount(part.indices[has], minlength=len(part.values))
        for i, k in enumerate(seen.tolist()):
            self.counts[lut[i]] += k
        self.present += int(has.sum())
        out = np.full(len(part.indices), MISSING, dtype=np.int64)
        out[has] = lut[part.indices[has]]
        return out

    def ordered(self) -> tuple[list[str], np.ndarray]:
        """The classes in display order and, for each first-seen code, its place there."""
        classes = sorted_classes(self.index)
        remap = np.empty(len(classes), dtype=np.int64)
        for new, label in enumerate(classes):
            remap[self.index[label]] = new
        return classes, remap

    def apply(self, codes: np.ndarray) -> np.ndarray:
        """First-seen codes as display-order codes; MISSING stays MISSING."""
        _, remap = self.ordered()
        out = np.full(len(codes), MISSING, dtype=np.int64)
        has = codes >= 0
        out[has] = remap[codes[has]]
        return out


class Sink(Protocol):
    # False: the sink needs only the range of the values (``span``), not the values.
    keeps_values: bool

    def shape(self, n: int, d: int, order: Order = "C",
              dims: tuple[int, ...] | None = None) -> None: ...
    def features(self, block: np.ndarray) -> None: ...
    def span(self, lo: float, hi: float) -> None: ...
    def labels(self, part: LabelPart) -> None: ...
    def groups(self, part: LabelPart) -> None: ...


class Summary:
    """Counts and a range only: what an upload check needs, in memory of one block."""

    keeps_values = False

    def __init__(self, limits: Limits) -> None:
        self.n = self.d = 0
        self.lo, self.hi = np.inf, -np.inf
        self.codes = LabelCodes(limits.max_classes)
        self.with_side: int | None = None  # None: no side information (DR groups by label)

    def shape(self, n: int, d: int, order: Order = "C",
              dims: tuple[int, ...] | None = None) -> None:
        self.n, self.d = n, d

    def features(self, block: np.ndarray) -> None:
        if block.size:
            self.span(float(block.min()), float(block.max()))

    def span(self, lo: float, hi: float) -> None:
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def labels(self, part: LabelPart) -> None:
        self.codes.add(part)

    def groups(self, part: LabelPart) -> None:
        """Side information is summarised by how many rows carry a value."""
        self.with_side = (self.with_side or 0) + int((part.indices >= 0).sum())

    def result(self, fmt: str) -> DatasetSummary:
        classes, _ = self.codes.ordered()
        check_shape(self.n, self.d, len(classes), classes)
        counts = {c: self.codes.counts[self.codes.index[c]] for c in classes}
        labelled = self.codes.present
        return DatasetSummary(
            format=fmt, n_samples=self.n, n_features=self.d, n_classes=len(classes),
            class_counts=counts, feature_range=[self.lo, self.hi],
            visible_units_hint="bernoulli" if self.lo >= 0.0 and self.hi <= 1.0 else "gaussian",
            classes=classes, n_labelled=labelled,
            n_with_side=labelled if self.with_side is None else self.with_side)


class Collector:
    """The arrays to train on: feature blocks gathered, labels as codes, then put in order."""

    keeps_values = True

    def __init__(self, limits: Limits) -> None:
        self.n = self.d = 0
        self.order: Order = "C"
        self.dims: tuple[int, ...] | None = None
        self.blocks: list[np.ndarray] = []
        self.codes = LabelCodes(limits.max_classes)
        self.group_codes = LabelCodes(None, "groups")
        self.y: list[np.ndarray] = []
        self.g: list[np.ndarray] = []

    def shape(self, n: int, d: int, order: Order = "C",
              dims: tuple[int, ...] | None = None) -> None:
        """``dims``: the array's own shape when it is stored in ``order`` (NPZ)."""
        self.n, self.d, self.order, self.dims = n, d, order, dims

    def features(self, block: np.ndarray) -> None:
        self.blocks.append(block.reshape(-1))

    def span(self, lo: float, hi: float) -> None:
        """The values themselves come through ``features``."""

    def labels(self, part: LabelPart) -> None:
        self.y.append(self.codes.add(part))

    def groups(self, part: LabelPart) -> None:
        self.g.append(self.group_codes.add(part))

    def result(self) -> LoadedData:
        classes, _ = self.codes.ordered()
        check_shape(self.n, self.d, len(classes), classes)
        flat = np.concatenate(self.blocks) if self.blocks else np.empty(0, np.float32)
        self.blocks.clear()
        stored = flat.reshape(self.dims or (self.n, self.d), order=self.order)
        X = np.ascontiguousarray(stored.reshape(self.n, self.d))
        y = self.codes.apply(np.concatenate(self.y))
        groups = self.group_codes.apply(np.concatenate(self.g)) if self.g else None
        return LoadedData(X=X, y=y, classes=classes, groups=groups)


def check_shape(n: int, d: int, n_classes: int, classes: list[str]) -> None:
    if n == 0:
        raise Invalid("the dataset has no rows")
    if d == 0:
        raise Invalid("the dataset has no feature columns")
    # No label at all is an unlabelled dataset (pretraining only); one class is a mistake.
    if n_classes == 1:
        raise Invalid(f"the labels hold one class only ({classes[0]!r}); "
                      "classification needs at least two")


def check_training_size(n: int, d: int, limits: Limits, what: str) -> None:
    """A worker holds the features as float32: refuse what would not fit its budget."""
    need = n * d * 4
    if need > limits.max_decompressed_bytes:
        raise Invalid(f"{what}: {n} x {d} values take {need} bytes as float32 for training, "
                      f"more than the limit {limits.max_decompressed_bytes}")


def first_bad(block: np.ndarray) -> int | None:
    """The flat index of the first value that is NaN or infinite, or None."""
    bad = ~np.isfinite(block.reshape(-1))
    return int(np.argmax(bad)) if bad.any() else None
