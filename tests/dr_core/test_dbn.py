"""Greedy DBN pretraining: stacking, same side labels at every layer, resume from any epoch."""
import pytest
import torch

from dr_core.checkpoint import load_state, save_state
from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.dbn import pretrain_dbn, propagate
from dr_core.events import RecordingCallback, TrainingStopped
from dr_core.rbm_metrics import MetricData


def _data(n=120, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = torch.arange(n) % 3
    proto = torch.rand(3, d, generator=g)
    X = torch.bernoulli(proto[side], generator=g)
    return X, side


def _cfgs():
    dr = PosteriorDRConfig(weight=0.5, divergence="bhattacharyya", pairs=3)  # draws random numbers
    return [RBMConfig(n_hidden=8, epochs=3, batch_size=32, persistent=True, momentum_switch_epoch=1, dr=dr),
            RBMConfig(n_hidden=5, epochs=2, batch_size=32, dr=dr)]


def _weights(rbms):
    return [t for r in rbms for t in (r.W, r.b, r.c)]


def test_layers_stack_and_train_on_posterior_means():
    X, side = _data()
    cb = RecordingCallback()
    rbms = pretrain_dbn(_cfgs(), Examples(X, side=side), RunContext(torch.Generator().manual_seed(1), cb))
    assert [(r.n_visible, r.n_hidden) for r in rbms] == [(10, 8), (8, 5)]
    epoch_events = [e for e in cb.events if e.state.get("current.W") is not None]
    layer_ends = [e for e in cb.events if "current.W" not in e.state]
    assert [(e.layer, e.epoch) for e in epoch_events] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]
    assert [(e.layer, e.state["layer"]) for e in layer_ends] == [(0, 1), (1, 2)]
    # Each layer's own progress (run_pipeline maps it onto the whole run); its states carry the
    # layers finished before it.
    assert [e.progress for e in epoch_events] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5, 1.0])
    assert [sorted(k for k in e.state if k.startswith("rbm.")) for e in epoch_events[2:4]] == [
        [], ["rbm.0.W", "rbm.0.b", "rbm.0.c", "rbm.0.visible"]]
    # Layer 1's recon error is measured on (a fixed sample of) layer 0's posterior means:
    # recompute it from them.
    H0 = MetricData.choose(propagate(rbms[0], X), side, None, layer=1).sample
    recon = ((rbms[1].reconstruct(H0) - H0) ** 2).mean()
    assert epoch_events[-1].metrics["recon_error"] == pytest.approx(float(recon), rel=1e-5)


@pytest.mark.parametrize("resume_at", [0, 1, 3, 4])  # indices into the recorded events
def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, resume_at):
    X, side = _data()
    cb = RecordingCallback()
    full = pretrain_dbn(_cfgs(), Examples(X, side=side), RunContext(torch.Generator().manual_seed(1), cb))
    path = tmp_path / "state.safetensors"
    sha = save_state(path, cb.events[resume_at].state)
    state = load_state(path, expected_sha256=sha)
    # A differently seeded generator: everything must come from the state.
    run = RunContext(torch.Generator().manual_seed(99), resume=state)
    resumed = pretrain_dbn(_cfgs(), Examples(X, side=side), run)
    for a, b in zip(_weights(full), _weights(resumed)):
        assert torch.equal(a, b)


def test_resume_after_training_stopped(tmp_path):
    X, side = _data()
    full = pretrain_dbn(_cfgs(), Examples(X, side=side), RunContext(torch.Generator().manual_seed(1)))
    cb = RecordingCallback(stop_after_batches=14)  # 4 batches per epoch: stops inside layer 1
    with pytest.raises(TrainingStopped):
        pretrain_dbn(_cfgs(), Examples(X, side=side), RunContext(torch.Generator().manual_seed(1), cb))
    last = cb.events[-1].state
    assert last["layer"] == 1
    save_state(tmp_path / "s", last)
    run = RunContext(torch.Generator(), resume=load_state(tmp_path / "s"))
    resumed = pretrain_dbn(_cfgs(), Examples(X, side=side), run)
    assert all(torch.equal(a, b) for a, b in zip(_weights(full), _weights(resumed)))
