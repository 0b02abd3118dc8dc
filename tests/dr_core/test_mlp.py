"""MLP construction and train_mlp: determinism, resume, DR effect, metrics, cancellation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dr_core.config import FeatureDRConfig, FinetuneConfig
from dr_core.context import Examples, RunContext
from dr_core.events import RecordingCallback, TrainingStopped, with_state
from dr_core.mlp import MLP, evaluate, init_mlp
from dr_core.mlp_trainer import train_mlp
from dr_core.regularizers import feature_distance


def _blobs(n: int = 96, f: int = 6, classes: int = 3, seed: int = 0):
    """Gaussian blobs: a small problem where a few epochs already move the weights a lot."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, f, generator=g)
    X = centres[y] + 0.8 * torch.randn(n, f, generator=g)
    return X, y


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _run(cfg, seed=1, X=None, y=None, callback=None, val=None):
    X, y = (X, y) if X is not None else _blobs()
    model = init_mlp(X.shape[1], [8, 5], int(y.max()) + 1, cfg.activation,
                     torch.Generator().manual_seed(seed))
    run = RunContext(torch.Generator().manual_seed(seed + 100), callback or RecordingCallback())
    events = train_mlp(model, cfg, Examples(X, y, side=y), run, val=val)
    return model, events


def test_lambda_zero_is_bit_identical_to_plain_backprop():
    base = dict(epochs=3, batch_size=16, learning_rate=0.2, momentum=0.9, weight_decay=1e-3)
    off, _ = _run(FinetuneConfig(**base, dr=None))
    zero, _ = _run(FinetuneConfig(**base, dr=FeatureDRConfig(weight=0.0, distance="cosine", pairs=4)))
    _assert_bit_identical(_params(off), _params(zero))

    # the same training written by hand
    X, y = _blobs()
    model = init_mlp(6, [8, 5], 3, "sigmoid", torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(101)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 16):
            idx = perm[i:i + 16]
            opt.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    _assert_bit_identical(_params(off), _params(model))
    assert not torch.equal(_params(off)["hidden.0.weight"],
                           init_mlp(6, [8, 5], 3, "sigmoid", torch.Generator().manual_seed(1)).hidden[0].weight)


@pytest.mark.parametrize("cfg", [
    FinetuneConfig(epochs=4, batch_size=16, learning_rate=0.1),
    FinetuneConfig(epochs=4, batch_size=16, optimizer="adam", learning_rate=0.01, weight_decay=1e-4,
                   activation="relu", dr=FeatureDRConfig(weight=0.05, distance="euclidean", pairs=3)),
    FinetuneConfig(epochs=4, batch_size=20, learning_rate=0.1, activation="tanh",
                   dr=FeatureDRConfig(weight=0.1, distance="cosine", layers=(1,))),
], ids=["sgd", "adam-relu-sampled-dr", "tanh-cosine-dr"])
def test_resume_is_bit_identical_to_uninterrupted_run(cfg):
    full, events = _run(cfg)
    assert [e.epoch for e in events] == [1, 2, 3, 4]
    state = events[1].state
    # a model and generator in a different state: resume must overwrite everything that matters
    model = init_mlp(6, [8, 5], 3, cfg.activation, torch.Generator().manual_seed(999))
    X, y = _blobs()
    run = RunContext(torch.Generator().manual_seed(7), resume=state)
    rest = train_mlp(model, cfg, Examples(X, y, side=y), run)
    assert [e.epoch for e in rest] == [3, 4]
    _assert_bit_identical(_params(full), _params(model))
    assert rest[-1].metrics == events[-1].metrics


def test_event_state_and_metrics():
    X, y = _blobs()
    Xv, yv = _blobs(30, seed=5)
    cb = RecordingCallback()
    cfg = FinetuneConfig(epochs=2, batch_size=32, dr=FeatureDRConfig(weight=0.01))
    # A caller adds its own state entries by wrapping the callback.
    _, events = _run(cfg, X=X, y=y, callback=with_state(cb, {"layer_done": 2}), val=Examples(Xv, yv))
    seen = [(e.epoch, e.metrics, e.progress) for e in cb.events]
    assert seen == [(e.epoch, e.metrics, e.progress) for e in events]
    assert [e.progress for e in events] == [0.5, 1.0]
    for e in cb.events:
        assert e.phase == "finetune" and e.layer is None
        m = e.metrics
        assert set(m) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "dr",
                          "grad_norm.layer0", "grad_norm.layer1", "grad_norm.head",
                          "grad_norm_dr.layer0", "grad_norm_dr.layer1"}
        assert all(m[k] > 0 for k in ("train_loss", "dr", "grad_norm.layer0", "grad_norm.layer1",
                                      "grad_norm.head"))
        assert 0 <= m["train_accuracy"] <= 1 and 0 <= m["val_accuracy"] <= 1
        s = e.state
        assert s["phase"] == "finetune" and s["epoch"] == e.epoch and s["layer_done"] == 2
        assert {"model.hidden.0.weight", "model.head.bias", "optim.0.momentum_buffer",
                "optim.param_groups", "generator"} <= set(s)
    # validation metrics are those of the model after the epoch
    model = init_mlp(6, [8, 5], 3, "sigmoid", torch.Generator())
    model.load_state_dict({k[len("model."):]: v for k, v in events[-1].state.items()
                           if k.startswith("model.")})
    assert evaluate(model, Xv, yv) == pytest.approx(
        {"loss": events[-1].metrics["val_loss"], "accuracy": events[-1].metrics["val_accuracy"]})
    # no DR: no DR value (a 0 would read as a measurement)
    _, plain = _run(FinetuneConfig(epochs=1, batch_size=32))
    assert "dr" not in plain[0].metrics and "train_loss" in plain[0].metrics


def test_stop_request_raises_training_stopped_within_one_batch():
    cb = RecordingCallback(stop_after_batches=3)
    with pytest.raises(TrainingStopped):
        _run(FinetuneConfig(epochs=5, batch_size=16), callback=cb)
    assert cb.batches == 3 and cb.events == []


def test_dr_raises_cross_group_feature_distance():
    X, y = _blobs(120, f=8, seed=3)
    side = y

    def trained_distance(weight):
        cfg = FinetuneConfig(epochs=15, batch_size=24, learning_rate=0.1,
                             dr=FeatureDRConfig(weight=weight, distance="cosine", layers=(0,)))
        model, _ = _run(cfg, X=X, y=y)
        _, feats = model.forward_features(X)
        return feature_distance(feats[0].detach(), side, distance="cosine").item()

    plain, guided = trained_distance(0.0), trained_distance(1.0)
    assert guided > plain + 0.05, (plain, guided)


def test_digits_validation_accuracy_above_90_percent_in_15_epochs():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:1400], perm[1400:]
    model = init_mlp(64, [64, 32], 10, "sigmoid", torch.Generator().manual_seed(0))
    cfg = FinetuneConfig(epochs=15, batch_size=32, learning_rate=0.1, momentum=0.9,
                         dr=FeatureDRConfig(weight=0.01, distance="cosine"))
    events = train_mlp(model, cfg, Examples(X[tr], y[tr], side=y[tr]),
                       RunContext(torch.Generator().manual_seed(0)), val=Examples(X[va], y[va]))
    assert events[-1].metrics["val_accuracy"] > 0.90
    assert evaluate(model, X[va], y[va])["accuracy"] == events[-1].metrics["val_accuracy"]


def test_from_rbms_unrolls_weights():
    g = torch.Generator().manual_seed(0)
    rbms = [(torch.randn(5, 4, generator=g), torch.randn(4, generator=g)),
            (torch.randn(4, 3, generator=g), torch.randn(3, generator=g))]
    model = MLP.from_rbms(rbms, 2, "sigmoid", torch.Generator().manual_seed(1))
    x = torch.rand(7, 5, generator=g)
    h = torch.sigmoid(torch.sigmoid(x @ rbms[0][0] + rbms[0][1]) @ rbms[1][0] + rbms[1][1])
    logits, feats = model.forward_features(x)
    torch.testing.assert_close(feats[-1], h)
    torch.testing.assert_close(logits, h @ model.head.weight.T + model.head.bias)
    assert model.head.weight.abs().sum() > 0
    with pytest.raises(ValueError):
        MLP.from_rbms([rbms[0], rbms[0]], 2, "sigmoid", torch.Generator())


def test_init_is_seeded_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a = init_mlp(10, [7, 6], 3, "relu", torch.Generator().manual_seed(4))
    b = init_mlp(10, [7, 6], 3, "relu", torch.Generator().manual_seed(4))
    c = init_mlp(10, [7, 6], 3, "relu", torch.Generator().manual_seed(5))
    MLP(10, [7], None)
    assert torch.equal(torch.get_rng_state(), before)
    _assert_bit_identical(_params(a), _params(b))
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)
    headless = MLP(10, [7], None)
    assert headless.head is None and headless(torch.zeros(2, 10)).shape == (2, 7)


def test_grad_norms_are_the_classification_losss_own_with_dr_on():
    """One batch holding every row: grad_norm.layer{i} is ||d CE / d W_i|| at the initial
    weights, grad_norm_dr.layer{i} is ||d (lambda DR) / d W_i||, and the step follows both."""
    X, y = _blobs()
    dr = FeatureDRConfig(weight=0.5)
    cfg = FinetuneConfig(epochs=1, batch_size=len(X), learning_rate=0.1, momentum=0.0, dr=dr)
    model, events = _run(cfg, X=X, y=y)
    start = init_mlp(X.shape[1], [8, 5], int(y.max()) + 1, cfg.activation, torch.Generator().manual_seed(1))
    logits, features = start.forward_features(X)
    ce = F.cross_entropy(logits, y)
    penalty = dr.weight * sum(feature_distance(f, y, distance="euclidean", normalize="per_unit")
                              for f in features)
    weights = [layer.weight for layer in start.hidden]
    g_ce = torch.autograd.grad(ce, weights, retain_graph=True)
    g_dr = torch.autograd.grad(penalty, weights)
    metrics = events[0].metrics
    for i in range(2):
        assert metrics[f"grad_norm.layer{i}"] == pytest.approx(float(g_ce[i].norm()), rel=1e-4)
        assert metrics[f"grad_norm_dr.layer{i}"] == pytest.approx(float(g_dr[i].norm()), rel=1e-4)
        assert float(g_dr[i].norm()) > 1e-3 * float(g_ce[i].norm())  # DR really pushes here
        want = start.hidden[i].weight.detach() - 0.1 * (g_ce[i] - g_dr[i])
        torch.testing.assert_close(model.hidden[i].weight.detach(), want, rtol=1e-4, atol=1e-6)


def test_no_dr_gradient_norms_without_dr():
    _, events = _run(FinetuneConfig(epochs=1, batch_size=32))
    assert not any(k.startswith("grad_norm_dr.") for k in events[0].metrics)
