"""Torch-free inference (``drtrain.jobs.predict``) against a hand computation and against the
torch module that wrote the file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from drtrain.jobs.predict import ModelCache, ModelFormatError, load_model, read_metadata
from tests.factories import hand_forward, make_model_bytes


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_numpy_forward_equals_hand_computation(activation: str) -> None:
    data = make_model_bytes(activation=activation, seed=3)
    x = [[0.1, -2.0, 3.5], [10.0, 0.0, -1.0]]
    labels, probs = load_model(data).predict(np.array(x))
    expected = hand_forward(data, x, activation)
    np.testing.assert_allclose(probs, expected, rtol=1e-9, atol=1e-12)
    assert labels == [("a", "b", "c")[int(np.argmax(p))] for p in expected]


def test_softmax_is_stable_for_huge_logits() -> None:
    data = make_model_bytes(activation="relu")
    probs = load_model(data).predict_proba(np.full((2, 3), 1e6))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_metadata_is_read_from_the_header() -> None:
    meta = json.loads(read_metadata(make_model_bytes())["drtrain"])
    assert meta["format"] == "drtrain-mlp" and meta["classes"] == ["a", "b", "c"]


def test_dbn_without_head_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="head"):
        load_model(make_model_bytes(fmt="drtrain-dbn", head=False))


def test_garbage_is_refused() -> None:
    with pytest.raises(ModelFormatError):
        load_model(b"\xff" * 4)


def test_cache_loads_once_per_sha_and_evicts_oldest() -> None:
    import hashlib

    cache = ModelCache(capacity=2)
    reads: list[str] = []
    files = {name: make_model_bytes(d=d) for name, d in (("s1", 3), ("s2", 4), ("s3", 5))}
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}

    def reader(name: str):  # noqa: ANN202
        def read() -> bytes:
            reads.append(name)
            return files[name]
        return read

    first = cache.get(sha["s1"], reader("s1"))
    assert cache.get(sha["s1"], reader("s1")) is first
    cache.get(sha["s2"], reader("s2"))
    cache.get(sha["s3"], reader("s3"))  # evicts s1, the least recently used
    assert len(cache) == 2
    cache.get(sha["s1"], reader("s1"))
    assert reads == ["s1", "s2", "s3", "s1"]


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_numpy_reader_matches_dr_core_model_file(tmp_path, activation: str) -> None:
    """The file dr_core writes, read torch-free, predicts what the torch module predicts."""
    torch = pytest.importorskip("torch")
    from dr_core.mlp import MLP
    from dr_core.model_file import save_model
    from dr_core.pipeline import PipelineResult

    gen = torch.Generator().manual_seed(4)
    mlp = MLP(5, [6, 4], 3, activation)
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    mean = np.linspace(-1, 1, 5).astype(np.float32)
    std = np.linspace(0.5, 2, 5).astype(np.float32)
    path = tmp_path / "model.safetensors"
    save_model(path, PipelineResult(model=mlp, normalization=(mean, std)), classes=[7, 8, 9])
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(mlp(torch.from_numpy((x - mean) / std)).double(), dim=1).numpy()
    labels, probs = load_model(path.read_bytes()).predict(x)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    assert labels == [str(7 + i) for i in expected.argmax(axis=1)]
