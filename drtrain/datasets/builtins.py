"""Built-in datasets, listed for every tenant.

- ``builtin:digits``: scikit-learn's bundled 8x8 digits (1797 samples), read straight from
  the installed package's ``digits.csv.gz`` (sklearn itself is never imported here).
- ``builtin:fashion-mnist``: the 60000 training images, when ``settings.fashion_mnist_dir``
  holds the four IDX files; ``builtin:fashion-mnist-test`` is its 10000-image t10k split.
  A job on ``builtin:fashion-mnist`` with ``test_dataset_id: null`` is tested on t10k
  (``test_split_id`` says so to the worker).

Pixels are scaled to [0, 1] (digits / 16, fashion-mnist / 255) so the hint is bernoulli.
Summaries are computed once per process (fashion-mnist lazily, on first use).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from drtrain.datasets.formats import DatasetSummary, LoadedData, encode_labels, read_idx_pair, summarize
from drtrain.kit.errors import NotFound
from drtrain.kit.settings import Settings, get_settings

PREFIX = "builtin:"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class BuiltinDataset:
    id: str
    name: str
    summary: DatasetSummary
    sha256: str
    size_bytes: int
    created_at: datetime


def _digits_path() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-learn is not installed; builtin:digits is unavailable")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def _load_digits() -> LoadedData:
    with gzip.open(_digits_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    y, classes = encode_labels(table[:, -1].astype(np.int64).astype(str))
    return LoadedData(X=table[:, :-1] / np.float32(16.0), y=y, classes=classes)


def _fashion_paths(settings: Settings, split: str) -> tuple[Path, Path]:
    images, labels = FASHION_FILES[split]
    return settings.fashion_mnist_dir / images, settings.fashion_mnist_dir / labels


def _fashion_present(settings: Settings) -> bool:
    return all(p.is_file() for split in FASHION_FILES for p in _fashion_paths(settings, split))


def _load_fashion(settings: Settings, split: str) -> LoadedData:
    images, labels = _fashion_paths(settings, split)
    return read_idx_pair(images, labels, settings, scale=255.0)


def _ids(settings: Settings) -> dict[str, tuple[str, list[Path]]]:
    """id -> (display name, source files) for the built-ins available with these settings."""
    found = {f"{PREFIX}digits": ("digits (scikit-learn, 8x8)", [_digits_path()])}
    if _fashion_present(settings):
        found[f"{PREFIX}fashion-mnist"] = ("Fashion-MNIST (train, 60000)",
                                           list(_fashion_paths(settings, "train")))
        found[f"{PREFIX}fashion-mnist-test"] = ("Fashion-MNIST (t10k test, 10000)",
                                                list(_fashion_paths(settings, "test")))
    return found


def load_builtin(builtin_id: str, settings: Settings) -> LoadedData:
    if builtin_id not in _ids(settings):
        raise NotFound(f"dataset {builtin_id!r} not found")
    if builtin_id == f"{PREFIX}digits":
        return _load_digits()
    split = "test" if builtin_id.endswith("-test") else "train"
    return _load_fashion(settings, split)


_cache: dict[tuple[str, str], BuiltinDataset] = {}
_cache_lock = threading.Lock()


def get_builtin(builtin_id: str, settings: Settings) -> BuiltinDataset | None:
    """The built-in's description, computed on first use and then kept in this process."""
    ids = _ids(settings)
    if builtin_id not in ids:
        return None
    cache_key = (builtin_id, str(settings.fashion_mnist_dir))
    with _cache_lock:  # one thread computes; the others wait instead of parsing it again
        if cache_key not in _cache:
            name, files = ids[builtin_id]
            digest = hashlib.sha256()
            for path in files:
                with open(path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        digest.update(block)
            _cache[cache_key] = BuiltinDataset(
                id=builtin_id, name=name,
                summary=summarize("builtin", load_builtin(builtin_id, settings)),
                sha256=digest.hexdigest(), size_bytes=sum(p.stat().st_size for p in files),
                created_at=datetime.fromtimestamp(max(p.stat().st_mtime for p in files),
                                                  UTC))
        return _cache[cache_key]


def list_builtins(settings: Settings) -> list[BuiltinDataset]:
    return [b for i in _ids(settings) if (b := get_builtin(i, settings)) is not None]


def builtin_facts(builtin_id: str, settings: Settings | None = None) -> DatasetSummary | None:
    """n_features, n_classes, feature_range of a built-in (None if unknown here)."""
    found = get_builtin(builtin_id, settings or get_settings())
    return found.summary if found is not None else None


def test_split_id(builtin_id: str) -> str | None:
    """The test set used when a job on this built-in names no ``test_dataset_id``."""
    return f"{PREFIX}fashion-mnist-test" if builtin_id == f"{PREFIX}fashion-mnist" else None
