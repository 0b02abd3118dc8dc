"""The reproduction study's data: what each regime uploads to the service, and how it is split.

Each regime is a training upload (features, labels with -1 for "no label", and optionally a
coarse grouping as side information) plus a test upload. The service holds out
``validation_fraction`` of the *labelled* training rows, seeded by the job's seed; which rows
carry a label, and which examples are train or test, never depend on the seed.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# The service's own coarse grouping (builtin:fashion-mnist-coarse): tops, bottoms, footwear, bags.
from drtrain.datasets.builtins import FASHION_COARSE_GROUPS, fashion_coarse_groups

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 0


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
    coarse: np.ndarray | None = None  # int64 coarse group of every training row (side information)

    @property
    def n_labelled(self) -> int:
        return int((self.y >= 0).sum())


def digits() -> StudyData:
    """70/15/15 stratified (seed 0): the 85 % train + validation rows are uploaded together."""
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    trainval, test = train_test_split(idx, test_size=0.15, stratify=y, random_state=SPLIT_SEED)
    return StudyData("digits", X[trainval], y[trainval], X[test], y[test], 10, 0.15 / 0.85,
                     "scikit-learn digits (8x8, 1,797 images, pixels / 16 in [0, 1]); 15 % stratified test "
                     "split (seed 0); the service holds out 15/85 of the rest for validation, by job seed")


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


def _fashion(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X = (_read_idx(root / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0).astype(np.float32)
    y = _read_idx(root / "train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    X_t = (_read_idx(root / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255.0).astype(np.float32)
    y_t = _read_idx(root / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return X, y, X_t, y_t


def fashion_mnist(n_train: int = 12_000, root: Path = FASHION_ROOT) -> StudyData:
    """Fully labelled: a fixed stratified subsample of the official train set (seed 0), of which
    the service holds out 1/6 for validation; the test set is the official t10k."""
    X, y, X_t, y_t = _fashion(root)
    rows, _ = train_test_split(np.arange(len(y)), train_size=n_train, stratify=y, random_state=SPLIT_SEED)
    rows = np.sort(rows)
    return StudyData("fashion-mnist", X[rows], y[rows], X_t, y_t, 10, 1 / 6,
                     f"Fashion-MNIST (28x28, pixels / 255 in [0, 1]), every row labelled: a fixed stratified "
                     f"subsample of {n_train:,} images of the official train set (seed 0), 1/6 held out for "
                     f"validation by job seed; test: the official 10,000 t10k images")


def fashion_label_scarce(fraction: float, root: Path = FASHION_ROOT) -> StudyData:
    """All 60,000 training images; a fixed stratified ``fraction`` of them keep their label
    (the rest are -1); every image carries its coarse group. Validation: 20 % of the labelled."""
    X, y, X_t, y_t = _fashion(root)
    keep, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=SPLIT_SEED)
    partial = np.full_like(y, -1)
    partial[keep] = y[keep]
    pct = f"{100 * fraction:g}"
    return StudyData(f"fashion-{pct}pct", X, partial, X_t, y_t, 10, 0.2,
                     f"Fashion-MNIST, all 60,000 training images, {len(keep):,} ({pct} %, stratified, seed 0) "
                     f"labelled; every image carries its coarse group ({', '.join(FASHION_COARSE_GROUPS)}) as side "
                     f"information; 20 % of the labelled rows held out for validation by job seed; test: "
                     f"the official 10,000 t10k images", coarse=fashion_coarse_groups(y))


LOADERS = {
    "digits": digits,
    "fashion-mnist": fashion_mnist,
    "fashion-1pct": lambda: fashion_label_scarce(0.01),
    "fashion-10pct": lambda: fashion_label_scarce(0.10),
}


def load(name: str) -> StudyData:
    if name not in LOADERS:
        raise ValueError(f"unknown regime {name!r}; choose from {sorted(LOADERS)}")
    return LOADERS[name]()


def shrink(data: StudyData, n_train: int, n_test: int = 200) -> StudyData:
    """The first rows only (tiny test configs); keeps at least a few labelled rows."""
    coarse = None if data.coarse is None else data.coarse[:n_train]
    return StudyData(data.name, data.X[:n_train], data.y[:n_train], data.X_test[:n_test], data.y_test[:n_test],
                     data.n_classes, data.validation_fraction, data.description + f" (cut to {n_train} rows)",
                     coarse)


def write_npz(path: Path, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Path:
    """The service's NPZ upload format: arrays X, y and optional groups (-1 = none)."""
    arrays = {"X": X, "y": y} if groups is None else {"X": X, "y": y, "groups": groups}
    np.savez(path, **arrays)
    return path
