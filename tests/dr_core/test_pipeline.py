"""run_pipeline: the worker's contract (events, metrics, normalisation, resume bit for bit)."""
import numpy as np
import pytest
import torch

from dr_core.checkpoint import load_state, save_state
from dr_core.config import (
    FeatureDRConfig,
    FinetuneConfig,
    PipelineConfig,
    PosteriorDRConfig,
    RBMConfig,
)
from dr_core.events import (
    FINAL_METRICS,
    FINETUNE_METRICS,
    GRAD_NORM,
    GRAD_NORM_DR,
    PHASES,
    PRETRAIN_METRICS,
    RecordingCallback,
    TrainingStopped,
)
from dr_core.pipeline import DataSplit, run_pipeline


def _data(n=90, d=12, seed=0, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    proto = rng.random((3, d))
    X = (rng.random((n, d)) < proto[y]).astype(np.float32) * scale + shift
    return DataSplit(X[:60], y[:60], y[:60] % 2, X[60:75], y[60:75], X[75:], y[75:])


def _cfg(pretrain=True, finetune=True):
    dr = PosteriorDRConfig(weight=0.5, divergence="jensen_shannon", pairs=2)
    pre = (RBMConfig(n_hidden=6, epochs=2, batch_size=16, persistent=True, dr=dr),
           RBMConfig(n_hidden=4, epochs=2, batch_size=16, dr=dr)) if pretrain else None
    ft = FinetuneConfig(epochs=3, batch_size=16, dr=FeatureDRConfig(weight=0.1, pairs=2)) if finetune else None
    return PipelineConfig(hidden_layers=(6, 4), pretrain=pre, finetune=ft)


def _run(cfg=None, data=None, seed=0, visible="bernoulli", **kw):
    return run_pipeline(cfg or _cfg(), data or _data(), n_classes=3, visible=visible,
                        generator=torch.Generator().manual_seed(seed), **kw)


def _tensors(result):
    out = [t for r in result.rbms for t in (r.W, r.b, r.c)]
    if result.model is not None:
        out += [p.detach() for p in result.model.parameters()]
    return out


def test_events_progress_and_metrics():
    cb = RecordingCallback()
    result = _run(callback=cb)
    epochs = [e for e in cb.events if e.state is not None and ("current.W" in e.state or e.phase == "finetune")]
    assert [(e.phase, e.layer, e.epoch) for e in epochs] == [
        ("pretrain", 0, 1), ("pretrain", 0, 2), ("pretrain", 1, 1), ("pretrain", 1, 2),
        ("finetune", None, 1), ("finetune", None, 2), ("finetune", None, 3)]
    assert [e.progress for e in epochs] == pytest.approx([i / 7 for i in range(1, 8)])
    layer_ends = [e for e in cb.events if e.phase == "pretrain" and "current.W" not in e.state]
    assert [e.progress for e in layer_ends] == pytest.approx([2 / 7, 4 / 7])
    # Every state can restart the whole job: normalisation, and the layers finished so far.
    assert {"norm.mean", "norm.std", "visible"} <= set(epochs[0].state)
    assert {"norm.mean", "visible", "rbm.0.W", "rbm.1.W"} <= set(epochs[-1].state)
    assert {"recon_error", "free_energy_gap", "pseudo_log_likelihood", "dr",
            "cross_group_divergence"} <= set(epochs[0].metrics)
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "dr", "grad_norm.layer0",
            "grad_norm.layer1", "grad_norm.head"} <= set(epochs[-1].metrics)
    assert len(result.history) == len(cb.events) and all(e.state is None for e in result.history)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert np.isfinite(result.metrics[key])
    assert result.metrics["epochs_pretrain"] == 4 and result.metrics["epochs_finetune"] == 3
    assert result.metrics["wall_seconds"] > 0
    assert [(r.n_visible, r.n_hidden) for r in result.rbms] == [(12, 6), (6, 4)]
    # The MLP is the unrolled DBN: its first layer started from the RBM (changed by fine-tuning only).
    assert result.model.hidden[0].weight.shape == (6, 12)


def test_events_and_result_carry_exactly_the_metric_names_dr_core_declares():
    """dr_core/events.py names every metric (the web app's charts copy those names): a metric
    added, renamed or dropped by a trainer fails here until the declaration says so."""
    cb = RecordingCallback()
    result = _run(callback=cb)
    for event in cb.events:
        names = set(event.metrics)
        if event.phase == "pretrain":
            assert names == set(PRETRAIN_METRICS), event
        else:
            grads = {n for n in names if n.startswith((GRAD_NORM, GRAD_NORM_DR))}
            assert names - grads == set(FINETUNE_METRICS), event
            # feature DR is on in _cfg: both kinds of norm, for every hidden layer
            assert grads == {f"{GRAD_NORM}layer0", f"{GRAD_NORM}layer1", f"{GRAD_NORM}head",
                             f"{GRAD_NORM_DR}layer0", f"{GRAD_NORM_DR}layer1"}
    assert {e.phase for e in cb.events} == set(PHASES)
    assert set(result.metrics) == set(FINAL_METRICS)


@pytest.mark.parametrize("point", ["mid_layer0", "layer0_end", "mid_layer1", "pretrain_end", "mid_finetune"])
def test_resume_from_any_point_equals_uninterrupted_run(tmp_path, point):
    cb = RecordingCallback()
    full = _run(callback=cb)
    states = [e.state for e in cb.events]
    pick = {"mid_layer0": 0, "layer0_end": 2, "mid_layer1": 3, "pretrain_end": 5, "mid_finetune": 7}[point]
    state = states[pick]
    if point == "layer0_end":
        assert "current.W" not in state and state["layer"] == 1
    if point == "pretrain_end":
        assert state["layer"] == 2 and state["epoch"] == 0
    if point == "mid_finetune":
        assert state["phase"] == "finetune" and state["epoch"] == 2
    sha = save_state(tmp_path / "s", state)
    resumed = _run(seed=123, resume=load_state(tmp_path / "s", expected_sha256=sha))
    for a, b in zip(_tensors(full), _tensors(resumed), strict=True):
        assert torch.equal(a, b)


def test_stop_then_resume_from_last_event(tmp_path):
    full = _run()
    cb = RecordingCallback(stop_after_batches=20)  # 4 batches per pretraining epoch: stops in fine-tuning
    with pytest.raises(TrainingStopped):
        _run(callback=cb)
    save_state(tmp_path / "s", cb.events[-1].state)
    resumed = _run(seed=7, resume=load_state(tmp_path / "s"))
    assert all(torch.equal(a, b) for a, b in zip(_tensors(full), _tensors(resumed), strict=True))


def test_gaussian_visible_standardises_with_train_statistics():
    data = _data(scale=40.0, shift=-7.0)
    cb = RecordingCallback()
    cfg = _cfg()
    cfg = PipelineConfig(hidden_layers=(6, 4), pretrain=(RBMConfig(n_hidden=6, visible="gaussian", epochs=1,
                                                                   learning_rate=0.01), cfg.pretrain[1]),
                         finetune=cfg.finetune)
    result = _run(cfg, data, visible="gaussian", callback=cb)
    mean, std = result.normalization
    np.testing.assert_allclose(mean, data.X_train.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, np.maximum(data.X_train.std(0), 1e-6), rtol=1e-5)
    assert mean.dtype == std.dtype == np.float32
    assert result.rbms[0].visible == "gaussian"
    assert "pseudo_log_likelihood" not in cb.events[0].metrics
    assert torch.equal(cb.events[0].state["norm.mean"], torch.from_numpy(mean))


def test_bernoulli_identity_normalisation_and_range_check():
    result = _run(_cfg(pretrain=False))
    mean, std = result.normalization
    assert not mean.any() and (std == 1).all()
    assert result.rbms == []
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        _run(data=_data(scale=2.0))


def test_pretraining_only_returns_rbms_without_model():
    result = _run(_cfg(finetune=False))
    assert result.model is None and len(result.rbms) == 2
    assert result.metrics["epochs_finetune"] == 0 and "train_loss" not in result.metrics


def test_seed_controls_the_result():
    a, b, c = _run(seed=1), _run(seed=1), _run(seed=2)
    assert all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b)))
    assert not torch.equal(_tensors(a)[0], _tensors(c)[0])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_on_cuda_resumes_and_needs_a_device_generator(tmp_path):
    with pytest.raises(ValueError, match="generator"):
        _run(device="cuda")
    cb = RecordingCallback()
    full = run_pipeline(_cfg(), _data(), n_classes=3, visible="bernoulli", device="cuda",
                        generator=torch.Generator("cuda").manual_seed(0), callback=cb)
    assert next(full.model.parameters()).is_cuda and np.isfinite(full.metrics["test_accuracy"])
    save_state(tmp_path / "s", cb.events[3].state)
    resumed = run_pipeline(_cfg(), _data(), n_classes=3, visible="bernoulli", device="cuda",
                           generator=torch.Generator("cuda").manual_seed(5), resume=load_state(tmp_path / "s"))
    for a, b in zip(_tensors(full), _tensors(resumed), strict=True):
        torch.testing.assert_close(a, b)
