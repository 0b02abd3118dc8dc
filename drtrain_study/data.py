"""The reproduction study's data: what each regime uploads to the service, and how it is split.

Every regime is label-scarce: a training upload (features, and labels with -1 for "no label")
plus a test upload. Side information is the label, so unlabelled rows have no side value and
serve pretraining only. The service holds out ``validation_fraction`` of the *labelled*
training rows, seeded by the job's seed; which rows carry a label, and which examples are
train or test, never depend on the seed.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 0
# The service holds out this share of the labelled rows (never of the unlabelled ones).
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class StudyData:
    name: str
    X: np.ndarray  # training rows (validation is drawn from them by the service), float32 in [0, 1]
    y: np.ndarray  # int64 label, -1 = unlabelled
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    validation_fraction: float
    description: str

    @property
    def n_labelled(self) -> int:
        return int((self.y >= 0).sum())


def partial_labels(y: np.ndarray, fraction: float) -> np.ndarray:
    """A fixed stratified ``fraction`` of the rows keep their label (seed 0); the rest get -1."""
    keep, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=SPLIT_SEED)
    partial = np.full_like(y, -1)
    partial[keep] = y[keep]
    return partial


def digits_label_scarce(fraction: float = 0.10) -> StudyData:
    """15 % stratified test split (seed 0); of the rest, ``fraction`` labelled (stratified, seed 0)."""
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    trainval, test = train_test_split(np.arange(len(y)), test_size=0.15, stratify=y, random_state=SPLIT_SEED)
    partial = partial_labels(y[trainval], fraction)
    pct = f"{100 * fraction:g}"
    return StudyData(f"digits-{pct}pct", X[trainval], partial, X[test], y[test], 10, VALIDATION_FRACTION,
                     "scikit-learn digits (8x8, 1,797 images, pixels / 16 in [0, 1]); "
                     "15 % stratified test split "
                     f"(seed 0); of the other {len(trainval):,} rows {int((partial >= 0).sum())} ({pct} %, "
                     f"stratified, seed 0) labelled, the rest used by pretraining only; "
                     f"{100 * VALIDATION_FRACTION:g} % of the labelled rows held out for validation "
                     "by job seed")


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


def _fashion(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X = (_read_idx(root / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0).astype(np.float32)
    y = _read_idx(root / "train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    X_t = (_read_idx(root / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0).astype(np.float32)
    y_t = _read_idx(root / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return X, y, X_t, y_t


def fashion_label_scarce(fraction: float, root: Path = FASHION_ROOT) -> StudyData:
    """All 60,000 training images; a fixed stratified ``fraction`` of them keep their label."""
    X, y, X_t, y_t = _fashion(root)
    partial = partial_labels(y, fraction)
    pct = f"{100 * fraction:g}"
    return StudyData(f"fashion-{pct}pct", X, partial, X_t, y_t, 10, VALIDATION_FRACTION,
                     f"Fashion-MNIST (28x28, pixels / 255 in [0, 1]), all 60,000 training images, "
                     f"{int((partial >= 0).sum()):,} ({pct} %, stratified, seed 0) labelled, "
                     "the rest used by "
                     f"pretraining only; {100 * VALIDATION_FRACTION:g} % of the labelled rows held out for "
                     f"validation by job seed; test: the official 10,000 t10k images")


LOADERS = {
    "digits-10pct": lambda: digits_label_scarce(0.10),
    "fashion-1pct": lambda: fashion_label_scarce(0.01),
    "fashion-10pct": lambda: fashion_label_scarce(0.10),
}


def load(name: str) -> StudyData:
    if name not in LOADERS:
        raise ValueError(f"unknown regime {name!r}; choose from {sorted(LOADERS)}")
    return LOADERS[name]()


def shrink(data: StudyData, n_train: int, n_test: int = 200) -> StudyData:
    """The first rows only (tiny test configs)."""
    return StudyData(data.name, data.X[:n_train], data.y[:n_train],
                     data.X_test[:n_test], data.y_test[:n_test],
                     data.n_classes, data.validation_fraction, data.description + f" (cut to {n_train} rows)")


def write_npz(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """The service's NPZ upload format: arrays X and y (-1 = no label; DR then groups by label)."""
    np.savez(path, X=X, y=y)
    return path
