"""Torch-free inference: api/predict.py against a hand computation, and POST .../predict."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.numpy import save

from api.predict import ModelCache, ModelFormatError, load_model, read_metadata


def make_model_bytes(*, d: int = 3, hidden: tuple[int, ...] = (4, 2), classes=("a", "b", "c"),
                     activation: str = "sigmoid", fmt: str = "drtrain-mlp", seed: int = 0,
                     head: bool = True) -> bytes:
    """A model file in dr_core's layout, written with numpy only."""
    rng = np.random.default_rng(seed)
    t = {"input.mean": rng.normal(size=d).astype(np.float32),
         "input.std": rng.uniform(0.5, 2.0, size=d).astype(np.float32)}
    dims = [d, *hidden]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        t[f"hidden.{i}.weight"] = rng.normal(size=(b, a)).astype(np.float32)
        t[f"hidden.{i}.bias"] = rng.normal(size=b).astype(np.float32)
    if head:
        t["head.weight"] = rng.normal(size=(len(classes), dims[-1])).astype(np.float32)
        t["head.bias"] = rng.normal(size=len(classes)).astype(np.float32)
    meta = {"format": fmt, "format_version": 1, "activation": activation,
            "hidden_layers": list(hidden), "n_features": d, "classes": list(classes)}
    return save(t, metadata={"drtrain": json.dumps(meta)})


def hand_forward(data: bytes, x: list[list[float]], activation: str) -> list[list[float]]:
    """The same maths written out in plain Python loops (no numpy matrix code)."""
    from safetensors.numpy import load

    t = {k: v.astype(float).tolist() for k, v in load(data).items()}
    acts = {"sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh,
            "relu": lambda v: max(v, 0.0)}
    out = []
    for row in x:
        h = [(v - m) / s for v, m, s in zip(row, t["input.mean"], t["input.std"])]
        i = 0
        while f"hidden.{i}.weight" in t:
            w, b = t[f"hidden.{i}.weight"], t[f"hidden.{i}.bias"]
            h = [acts[activation](sum(wj * hj for wj, hj in zip(wr, h)) + bj)
                 for wr, bj in zip(w, b)]
            i += 1
        logits = [sum(wj * hj for wj, hj in zip(wr, h)) + bj
                  for wr, bj in zip(t["head.weight"], t["head.bias"])]
        top = max(logits)
        e = [math.exp(v - top) for v in logits]
        out.append([v / sum(e) for v in e])
    return out


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
    cache = ModelCache(capacity=2)
    reads: list[str] = []

    def reader(name: str):  # noqa: ANN202
        def read() -> bytes:
            reads.append(name)
            return make_model_bytes()
        return read

    first = cache.get("s1", reader("s1"))
    assert cache.get("s1", reader("s1")) is first
    cache.get("s2", reader("s2"))
    cache.get("s3", reader("s3"))  # evicts s1, the least recently used
    assert len(cache) == 2
    cache.get("s1", reader("s1"))
    assert reads == ["s1", "s2", "s3", "s1"]
