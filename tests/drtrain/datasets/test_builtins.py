"""Built-in summaries: known without reading a pixel for the published Fashion-MNIST files,
and what is stored for them is what streaming the real files gives."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from drtrain.datasets import builtins
from drtrain.datasets.formats import summarize_idx_pair
from drtrain.kit.settings import Settings

REAL = Path("/usr/share/datasets/fashion-mnist")
needs_real = pytest.mark.skipif(
    not all((REAL / f).is_file() for pair in builtins.FASHION_FILES.values() for f in pair),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtins, "_cache", {})


@needs_real
@pytest.mark.parametrize("split", ["train", "test"])
def test_known_summaries_are_those_of_the_real_files(split: str):
    images, labels = (REAL / f for f in builtins.FASHION_FILES[split])
    _, each = builtins._digests([images, labels])
    known = builtins._KNOWN[(each[0], each[1])]
    assert summarize_idx_pair(images, labels, Settings(environment="test"), "builtin",
                              scale=255.0) == known


@needs_real
def test_the_published_files_are_described_without_reading_a_pixel(
        fresh_cache: None, monkeypatch: pytest.MonkeyPatch):
    def no(*_args: object, **_kw: object) -> None:
        raise AssertionError("the pixels were read")

    monkeypatch.setattr(builtins, "summarize_idx_pair", no)
    monkeypatch.setattr(builtins, "read_idx_pair", no)
    settings = Settings(environment="test", fashion_mnist_dir=REAL)
    tracemalloc.start()
    try:
        found = builtins.get_builtin("builtin:fashion-mnist", settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found is not None and found.summary.n_samples == 60000
    assert found.summary.visible_units_hint == "bernoulli"
    # The whole set as float32 is 188 MB; hashing the files takes a block at a time.
    assert peak < 8 * 2**20, peak


def test_the_coarse_grouping_is_what_the_guide_says():
    guide = (Path(__file__).resolve().parents[3] / "docs" / "guide.md").read_text()
    said = " ".join(guide.split())
    assert set(builtins.FASHION_COARSE) == set(builtins.FASHION_LABELS)
    for group in builtins.FASHION_COARSE_GROUPS:
        members = [name for name in builtins.FASHION_LABELS
                   if builtins.FASHION_COARSE[name] == group]
        assert f"{group} ({', '.join(members)})" in said, group  # in label order
    labels = np.arange(10)
    assert builtins.fashion_coarse_groups(np.array([-1, *labels])).tolist() == \
        [-1, 0, 1, 0, 0, 0, 2, 0, 2, 3, 2]


@needs_real
def test_builtin_fashion_mnist_coarse_carries_the_grouping(fresh_cache: None):
    settings = Settings(environment="test", fashion_mnist_dir=REAL)
    plain = builtins.load_builtin("builtin:fashion-mnist", settings)
    coarse = builtins.load_builtin("builtin:fashion-mnist-coarse", settings)
    np.testing.assert_array_equal(coarse.y, plain.y)
    assert plain.groups is None and coarse.groups is not None
    for label, name in enumerate(builtins.FASHION_LABELS):
        group = builtins.FASHION_COARSE_GROUPS.index(builtins.FASHION_COARSE[name])
        assert set(coarse.groups[coarse.y == label].tolist()) == {group}, name
    assert np.bincount(coarse.groups).tolist() == [30000, 6000, 18000, 6000]
    found = builtins.get_builtin("builtin:fashion-mnist-coarse", settings)
    assert found is not None
    assert (found.summary.n_with_side, found.summary.n_groups) == (60000, 4)
    assert builtins.test_split_id("builtin:fashion-mnist-coarse") == "builtin:fashion-mnist-test"


def test_digits_are_parsed_once_per_process_and_cannot_be_changed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A worker loads builtin:digits for every job: the parse is done once, and the arrays the
    jobs share are read-only, so no job can change what the next one trains on."""
    parses = []
    real_loadtxt = np.loadtxt
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: parses.append(1) or real_loadtxt(*a, **k))
    settings = Settings(data_dir=tmp_path)
    first = builtins.load_builtin("builtin:digits", settings)
    second = builtins.load_builtin("builtin:digits", settings)
    assert len(parses) <= 1  # none where an earlier test of this process parsed them
    np.testing.assert_array_equal(first.X, second.X)
    assert first.X.shape == (1797, 64) and first.classes == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="read-only"):
        first.X[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        first.y[0] = 3
    first.classes.append("x")  # each caller gets its own list
    assert second.classes == [str(i) for i in range(10)]
