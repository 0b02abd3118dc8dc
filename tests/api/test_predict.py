"""Torch-free inference: api/predict.py against a hand computation, and POST .../predict."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.numpy import save

from drtrain.jobs.predict import ModelCache, ModelFormatError, load_model, read_metadata


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


# ---------------------------------------------------------------- POST /v1/jobs/{id}/predict


def _job_with_model(db, store, data: bytes, status=None):  # noqa: ANN001, ANN202
    import hashlib

    from drtrain.kit.models import Checkpoint, JobStatus
    from tests.api.test_jobs import add_job, tenant_id

    job = add_job(db, tenant_id(db), status or JobStatus.succeeded)
    stored = store.put_stream(f"jobs/{job.id}/final.safetensors", [data])
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    db.add(Checkpoint(job_id=job.id, kind="final", attempt=1, object_key=stored.key,
                      sha256=stored.sha256, size_bytes=stored.size_bytes))
    db.commit()
    return job


def test_predict_route_equals_hand_computation(client, db, store, auth_a, auth_b) -> None:
    data = make_model_bytes(activation="tanh", seed=11, classes=("3", "5", "8"))
    job = _job_with_model(db, store, data)
    x = [[0.5, 1.5, -0.5], [3.0, -3.0, 0.0], [0.0, 0.0, 0.0]]
    resp = client.post(f"/v1/jobs/{job.id}/predict", json={"inputs": x}, headers=auth_a)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    expected = hand_forward(data, x, "tanh")
    np.testing.assert_allclose(body["probabilities"], expected, rtol=1e-9)
    assert body["predictions"] == [("3", "5", "8")[int(np.argmax(p))] for p in expected]
    assert client.post(f"/v1/jobs/{job.id}/predict", json={"inputs": x},
                       headers=auth_b).status_code == 404


def test_predict_rejects_wrong_width_and_non_finite(client, db, store, auth_a) -> None:
    job = _job_with_model(db, store, make_model_bytes())
    url = f"/v1/jobs/{job.id}/predict"
    wrong = client.post(url, json={"inputs": [[1.0, 2.0]]}, headers=auth_a)
    assert wrong.status_code == 422 and "3 values" in wrong.json()["detail"]
    ragged = client.post(url, json={"inputs": [[1.0, 2.0, 3.0], [1.0]]}, headers=auth_a)
    assert ragged.status_code == 422
    nan = client.post(url, content=b'{"inputs": [[1.0, NaN, 3.0]]}',
                      headers={**auth_a, "Content-Type": "application/json"})
    assert nan.status_code == 422
    too_many = client.post(url, json={"inputs": [[0.0, 0.0, 0.0]] * 10001}, headers=auth_a)
    assert too_many.status_code == 422


def test_predict_needs_a_succeeded_job_with_a_head(client, db, store, auth_a) -> None:
    from drtrain.kit.models import JobStatus

    running = _job_with_model(db, store, make_model_bytes(), JobStatus.running)
    resp = client.post(f"/v1/jobs/{running.id}/predict", json={"inputs": [[0, 0, 0]]},
                       headers=auth_a)
    assert resp.status_code == 409
    dbn = _job_with_model(db, store, make_model_bytes(fmt="drtrain-dbn", head=False, seed=5))
    resp = client.post(f"/v1/jobs/{dbn.id}/predict", json={"inputs": [[0, 0, 0]]}, headers=auth_a)
    assert resp.status_code == 409 and "head" in resp.json()["detail"]


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
