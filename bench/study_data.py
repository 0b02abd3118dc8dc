"""Fixed train/validation/test splits of the reproduction study (bench/reproduce.py).

The split never depends on the run seed: every arm and every seed sees the same examples, so
differences between arms come from the method and the seed of initialisation / batch order only.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from dr_core.pipeline import DataSplit

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 0


@dataclass(frozen=True)
class StudyData:
    name: str
    split: DataSplit
    n_classes: int
    description: str


def _three_way(X: np.ndarray, y: np.ndarray, name: str, description: str) -> StudyData:
    """70/15/15, stratified by class, fixed seed."""
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, test_size=0.30, stratify=y, random_state=SPLIT_SEED)
    val, test = train_test_split(rest, test_size=0.50, stratify=y[rest], random_state=SPLIT_SEED)
    split = DataSplit(X[train], y[train], y[train], X[val], y[val], X[test], y[test])
    return StudyData(name, split, int(y.max()) + 1, description)


def digits() -> StudyData:
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return _three_way(X, y, "digits", "scikit-learn digits (8x8, 1,797 images, pixels / 16 in [0, 1]); "
                      "70/15/15 stratified split, seed 0")


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


def fashion_mnist(n_train: int = 10_000, n_val: int = 2_000, n_test: int = 5_000,
                  root: Path = FASHION_ROOT) -> StudyData:
    """A fixed stratified subsample: train and val from the official train set, test from t10k.

    Small enough to run every arm and seed in minutes on two CPU cores; the official test
    images never enter training or model selection.
    """
    X = _read_idx(root / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    y = _read_idx(root / "train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    X_t = _read_idx(root / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    y_t = _read_idx(root / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, train_size=n_train, stratify=y, random_state=SPLIT_SEED)
    val, _ = train_test_split(rest, train_size=n_val, stratify=y[rest], random_state=SPLIT_SEED)
    test, _ = train_test_split(np.arange(len(y_t)), train_size=n_test, stratify=y_t, random_state=SPLIT_SEED)

    def scale(a: np.ndarray) -> np.ndarray:
        return (a / 255.0).astype(np.float32)

    split = DataSplit(scale(X[train]), y[train], y[train], scale(X[val]), y[val], scale(X_t[test]), y_t[test])
    return StudyData("fashion-mnist", split, 10,
                     f"Fashion-MNIST (28x28, pixels / 255 in [0, 1]); fixed stratified subsample, seed 0: "
                     f"{n_train:,} train + {n_val:,} validation from the official train set, "
                     f"{n_test:,} test from t10k")


LOADERS = {"digits": digits, "fashion-mnist": fashion_mnist}


def load(name: str) -> StudyData:
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(LOADERS)}")
    return LOADERS[name]()


def shrink(data: StudyData, n_train: int) -> StudyData:
    """The first n_train training rows (tiny test configs); validation and test stay whole."""
    s = data.split
    split = DataSplit(s.X_train[:n_train], s.y_train[:n_train], s.side_train[:n_train],
                      s.X_val, s.y_val, s.X_test, s.y_test)
    return StudyData(data.name, split, data.n_classes, data.description + f" (train cut to {n_train})")
