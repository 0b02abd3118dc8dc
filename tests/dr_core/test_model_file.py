"""Model file: round trip, metadata, a torch-free numpy reader (the one in docs/model-format.md)."""
import json

import numpy as np
import pytest
import torch

from dr_core.checkpoint import CheckpointError
from dr_core.config import FinetuneConfig, PipelineConfig, RBMConfig
from dr_core.dbn import propagate
from dr_core.model_file import load_model, predict, save_model
from dr_core.pipeline import DataSplit, run_pipeline


def numpy_predict(path, X):
    """The reader of docs/model-format.md: numpy + json only."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["drtrain"])
    t = {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                          dtype="<f4").reshape(v["shape"]) for k, v in header.items()}
    act = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}
    h = (np.asarray(X, np.float32) - t["input.mean"]) / t["input.std"]
    for i in range(len(meta["hidden_layers"])):
        h = act[meta["activation"]](h @ t[f"hidden.{i}.weight"].T + t[f"hidden.{i}.bias"])
    logits = h @ t["head.weight"].T + t["head.bias"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return [meta["classes"][i] for i in p.argmax(1)], p


def _data(n=80, d=10):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    X = (rng.normal(size=(n, d)) * 5 + 3 + y[:, None]).astype(np.float32)
    return DataSplit(X, y, y)


def _result(activation="tanh", finetune=True):
    cfg = PipelineConfig(
        hidden_layers=(7, 5),
        pretrain=(RBMConfig(n_hidden=7, visible="gaussian", epochs=1, learning_rate=0.01),
                  RBMConfig(n_hidden=5, epochs=1)),
        finetune=FinetuneConfig(epochs=2, batch_size=16, activation=activation) if finetune else None)
    return run_pipeline(cfg, _data(), n_classes=3, visible="gaussian", generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_mlp_round_trip_matches_the_trained_model_and_the_numpy_reader(tmp_path, activation):
    result = _result(activation)
    path = tmp_path / "model.safetensors"
    spec = {"hidden_layers": [7, 5], "seed": 0}
    sha = save_model(path, result, classes=["cat", "dog", 7], spec=spec, extra_metadata={"job_id": "j1"})
    assert len(sha) == 64
    module, meta = load_model(path)
    X = _data().X_train
    mean, std = result.normalization
    with torch.no_grad():
        want = torch.softmax(result.model(torch.from_numpy((X - mean) / std)), dim=1).numpy()
        got = torch.softmax(module(torch.from_numpy((X - meta["input_mean"]) / meta["input_std"])), 1).numpy()
    np.testing.assert_array_equal(got, want)
    idx, probs = predict(module, meta, X)
    np.testing.assert_allclose(probs, want, rtol=1e-6, atol=1e-7)
    labels, np_probs = numpy_predict(path, X)
    np.testing.assert_allclose(np_probs, want, rtol=1e-4, atol=1e-6)
    assert labels == [meta["classes"][i] for i in idx]
    assert meta["format"] == "drtrain-mlp" and meta["format_version"] == 1
    assert meta["activation"] == activation and meta["hidden_layers"] == [7, 5] and meta["n_features"] == 10
    assert meta["classes"] == ["cat", "dog", "7"] and meta["visible"] == "gaussian"
    assert meta["spec"] == spec and meta["job_id"] == "j1"
    assert meta["metrics"]["train_accuracy"] == result.metrics["train_accuracy"]


def test_pretraining_only_file_is_an_rbm_stack(tmp_path):
    result = _result(finetune=False)
    path = tmp_path / "dbn.safetensors"
    save_model(path, result, classes=[0, 1, 2])
    module, meta = load_model(path)
    assert meta["format"] == "drtrain-dbn" and meta["activation"] == "sigmoid"
    X = torch.from_numpy(_data().X_train)
    mean, std = result.normalization
    x = (X - torch.from_numpy(mean)) / torch.from_numpy(std)
    with torch.no_grad():
        torch.testing.assert_close(module(x), propagate(result.rbms[1], propagate(result.rbms[0], x)))


def test_damaged_files_and_bad_labels_are_refused(tmp_path):
    result = _result()
    with pytest.raises(ValueError, match="classes"):
        save_model(tmp_path / "m", result, classes=["a", "b"])
    assert not (tmp_path / "m").exists()
    save_model(tmp_path / "m", result, classes=["a", "b", "c"])
    raw = (tmp_path / "m").read_bytes()
    (tmp_path / "m").write_bytes(raw[:100])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "m")
