"""Built-in datasets, listed for every tenant.

- ``builtin:digits``: scikit-learn's bundled 8x8 digits (1797 samples), read straight from
  the installed package's ``digits.csv.gz`` (sklearn itself is never imported here).
- ``builtin:fashion-mnist``: the 60000 training images, when ``settings.fashion_mnist_dir``
  holds the four IDX files; ``builtin:fashion-mnist-test`` is its 10000-image t10k split.
  A job on ``builtin:fashion-mnist`` with ``test_dataset_id: null`` is tested on t10k
  (``test_split_id`` says so to the worker).
- ``builtin:fashion-mnist-coarse``: the same 60000 images and labels, with a coarse grouping
  as side information (``groups``), so DR can compare examples by something other than the
  label: ``FASHION_COARSE`` (tops, bottoms, footwear, bags). Tested on t10k too.

Pixels are scaled to [0, 1] (digits / 16, fashion-mnist / 255) so the hint is bernoulli.
Summaries are known without reading a pixel when the files are the published ones (their
sha256 is in ``_KNOWN``); other files are summarised once per process by streaming them
(a few MB of memory). The API computes them at start-up, in the background.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from drtrain.datasets.formats import (
    DatasetSummary,
    LoadedData,
    encode_labels,
    read_idx_pair,
    summarize,
    summarize_idx_pair,
)
from drtrain.kit.errors import NotFound
from drtrain.kit.settings import Settings, get_settings

PREFIX = "builtin:"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Fashion-MNIST's ten labels (0-9, Zalando's order) -> the coarse group each belongs to.
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
FASHION_COARSE_GROUPS = ("tops", "bottoms", "footwear", "bags")
FASHION_COARSE = {
    "T-shirt/top": "tops", "Pullover": "tops", "Coat": "tops", "Shirt": "tops", "Dress": "tops",
    "Trouser": "bottoms",
    "Sandal": "footwear", "Sneaker": "footwear", "Ankle boot": "footwear",
    "Bag": "bags",
}


def fashion_coarse_groups(y: np.ndarray) -> np.ndarray:
    """The coarse group (an index into ``FASHION_COARSE_GROUPS``) of each Fashion-MNIST label;
    a missing label (-1) has no group (-1)."""
    lut = np.asarray([FASHION_COARSE_GROUPS.index(FASHION_COARSE[name])
                      for name in FASHION_LABELS], dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    return np.where(y >= 0, lut[np.maximum(y, 0)], -1)


@dataclass(frozen=True)
class BuiltinDataset:
    id: str
    name: str
    summary: DatasetSummary
    sha256: str
    size_bytes: int
    created_at: datetime


@lru_cache(maxsize=1)
def _digits_path() -> Path:
    # Cached: every submit naming builtin:digits asks, and the package does not move.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-learn is not installed; builtin:digits is unavailable")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    # Parsed once per process (a worker runs many jobs on it; it is 0.5 MB), read-only so
    # that no job can change what the next one trains on.
    with gzip.open(_digits_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    y, classes = encode_labels(table[:, -1].astype(np.int64).astype(str))
    X = table[:, :-1] / np.float32(16.0)
    X.flags.writeable = y.flags.writeable = False
    return X, y, tuple(classes)


def _load_digits() -> LoadedData:
    X, y, classes = _digits_arrays()
    return LoadedData(X=X, y=y, classes=list(classes))


def _fashion_summary(n: int) -> DatasetSummary:
    classes = [str(i) for i in range(10)]
    return DatasetSummary(format="builtin", n_samples=n, n_features=784, n_classes=10,
                          class_counts=dict.fromkeys(classes, n // 10),
                          feature_range=[0.0, 1.0],
                          visible_units_hint="bernoulli", classes=classes,
                          n_labelled=n, n_with_side=n)


# The published Fashion-MNIST files (Zalando's release, as Debian's dataset-fashion-mnist
# ships them): sha256 of the images and of the labels file -> their summary, checked against
# a streamed summary of the real files by tests/drtrain/datasets/test_builtins.py.
_KNOWN: dict[tuple[str, str], DatasetSummary] = {
    ("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
     "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"): _fashion_summary(60000),
    ("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
     "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"): _fashion_summary(10000),
}


def _fashion_paths(settings: Settings, split: str) -> tuple[Path, Path]:
    images, labels = FASHION_FILES[split]
    return settings.fashion_mnist_dir / images, settings.fashion_mnist_dir / labels


def _fashion_present(settings: Settings) -> bool:
    return all(p.is_file() for split in FASHION_FILES for p in _fashion_paths(settings, split))


def _load_fashion(settings: Settings, split: str) -> LoadedData:
    images, labels = _fashion_paths(settings, split)
    return read_idx_pair(images, labels, settings, scale=255.0)


def _available_builtins(settings: Settings) -> dict[str, tuple[str, list[Path]]]:
    """id -> (display name, source files) for the built-ins available with these settings."""
    found = {f"{PREFIX}digits": ("digits (scikit-learn, 8x8)", [_digits_path()])}
    if _fashion_present(settings):
        found[f"{PREFIX}fashion-mnist"] = ("Fashion-MNIST (train, 60000)",
                                           list(_fashion_paths(settings, "train")))
        found[f"{PREFIX}fashion-mnist-test"] = ("Fashion-MNIST (t10k test, 10000)",
                                                list(_fashion_paths(settings, "test")))
        found[f"{PREFIX}fashion-mnist-coarse"] = (
            "Fashion-MNIST (train, 60000; side = tops/bottoms/footwear/bags)",
            list(_fashion_paths(settings, "train")))
    return found


def load_builtin(builtin_id: str, settings: Settings) -> LoadedData:
    if builtin_id not in _available_builtins(settings):
        raise NotFound(f"dataset {builtin_id!r} not found")
    if builtin_id == f"{PREFIX}digits":
        return _load_digits()
    split = "test" if builtin_id.endswith("-test") else "train"
    data = _load_fashion(settings, split)
    if builtin_id == f"{PREFIX}fashion-mnist-coarse":
        data.groups = fashion_coarse_groups(data.y)
    return data


_cache: dict[tuple[str, str], BuiltinDataset] = {}
_cache_lock = threading.Lock()


def _digests(files: list[Path]) -> tuple[str, list[str]]:
    """sha256 of the files one after the other (the dataset's ``sha256``), and of each."""
    whole = hashlib.sha256()
    each = []
    for path in files:
        one = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                whole.update(block)
                one.update(block)
        each.append(one.hexdigest())
    return whole.hexdigest(), each


def _summary(builtin_id: str, files: list[Path], digests: list[str],
             settings: Settings) -> DatasetSummary:
    if builtin_id == f"{PREFIX}digits":
        return summarize("builtin", _load_digits())
    known = _KNOWN.get((digests[0], digests[-1])) if len(files) == 2 else None
    summary = known or summarize_idx_pair(files[0], files[1], settings, "builtin", scale=255.0)
    if builtin_id == f"{PREFIX}fashion-mnist-coarse":
        # Every row carries a coarse group (its label's): as many as carry a label.
        return replace(summary, n_with_side=summary.n_labelled,
                       n_groups=len(FASHION_COARSE_GROUPS))
    return summary


def get_builtin(builtin_id: str, settings: Settings) -> BuiltinDataset | None:
    """The built-in's description, computed on first use and then kept in this process."""
    ids = _available_builtins(settings)
    if builtin_id not in ids:
        return None
    cache_key = (builtin_id, str(settings.fashion_mnist_dir))
    with _cache_lock:  # one thread computes; the others wait instead of reading it again
        if cache_key not in _cache:
            name, files = ids[builtin_id]
            digest, each = _digests(files)
            _cache[cache_key] = BuiltinDataset(
                id=builtin_id, name=name, summary=_summary(builtin_id, files, each, settings),
                sha256=digest, size_bytes=sum(p.stat().st_size for p in files),
                created_at=datetime.fromtimestamp(max(p.stat().st_mtime for p in files),
                                                  UTC))
        return _cache[cache_key]


def list_builtins(settings: Settings) -> list[BuiltinDataset]:
    return [b for i in _available_builtins(settings) if (b := get_builtin(i, settings)) is not None]


def builtin_facts(builtin_id: str, settings: Settings | None = None) -> DatasetSummary | None:
    """n_features, n_classes, feature_range of a built-in (None if unknown here)."""
    found = get_builtin(builtin_id, settings or get_settings())
    return found.summary if found is not None else None


def test_split_id(builtin_id: str) -> str | None:
    """The test set used when a job on this built-in names no ``test_dataset_id``."""
    trains = (f"{PREFIX}fashion-mnist", f"{PREFIX}fashion-mnist-coarse")
    return f"{PREFIX}fashion-mnist-test" if builtin_id in trains else None
