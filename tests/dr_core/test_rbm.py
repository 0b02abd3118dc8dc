"""RBM maths and CD/PCD training, including generative DR (dr.md, "What must be tested")."""
import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.events import RecordingCallback, TrainingStopped
from dr_core.rbm import RBM, cd_step
from dr_core.rbm_metrics import MetricData, recon_error
from dr_core.rbm_trainer import train_rbm
from dr_core.regularizers import posterior_divergence
from tests.dr_core import brute_force as bf


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    return X[:600], torch.tensor(d.target[:600], dtype=torch.long)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _params(rbm):
    return [rbm.W.clone(), rbm.b.clone(), rbm.c.clone()]


def _brute_free_energy(rbm, v):
    """-log sum_h exp(-E(v, h)) by enumerating every hidden configuration (tiny H only)."""
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=rbm.n_hidden)), dtype=v.dtype)
    if rbm.visible == "bernoulli":
        visible_term = -(v @ rbm.b)
    else:
        visible_term = 0.5 * ((v - rbm.b) ** 2).sum(1)
    neg_energy = (v @ rbm.W) @ hs.t() + (hs @ rbm.c)[None, :]  # (B, 2^H)
    return visible_term - torch.logsumexp(neg_energy, dim=1)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_equals_enumeration(visible):
    g = _gen(1)
    rbm = RBM(5, 4, visible, init_std=1.5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        rbm.b.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        rbm.c.copy_(torch.randn(4, generator=g, dtype=torch.float64))
    v = torch.rand(7, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rbm.free_energy(v), _brute_free_energy(rbm, v), rtol=1e-12, atol=1e-12)


def test_free_energy_is_stable_for_huge_preactivations():
    rbm = RBM(3, 2, init_std=0.0)
    with torch.no_grad():
        rbm.W.fill_(1e4)
    f = rbm.free_energy(torch.ones(2, 3))
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f, torch.full((2,), -6e4))


def test_conditionals_have_the_right_shapes_and_ranges():
    g = _gen()
    rbm = RBM(6, 4, init_std=1.0, generator=g)
    v = torch.rand(5, 6, generator=g)
    mu, h = rbm.sample_hidden(v, g)
    assert mu.shape == h.shape == (5, 4)
    assert set(h.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(mu, torch.sigmoid(v @ rbm.W + rbm.c))
    vs = rbm.sample_visible(h, g)
    assert vs.shape == (5, 6) and set(vs.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(rbm.reconstruct(v), torch.sigmoid(mu @ rbm.W.t() + rbm.b))


def _reference_cd1(W, b, c, v, g, cfg, vel):
    """Textbook CD-1 with momentum and L2 decay (Hinton's guide), no DR, written independently."""
    mu = torch.sigmoid(c + v @ W)
    h = (torch.rand(mu.shape, generator=g, dtype=mu.dtype) < mu).to(mu.dtype)
    p_neg = torch.sigmoid(b + h @ W.T)
    v_neg = (torch.rand(p_neg.shape, generator=g, dtype=p_neg.dtype) < p_neg).to(p_neg.dtype)
    mu_neg = torch.sigmoid(c + v_neg @ W)
    n = v.shape[0]
    grad_W = (v.T @ mu - v_neg.T @ mu_neg) / n - cfg.weight_decay * W
    grad_b = (v - v_neg).mean(0)
    grad_c = (mu - mu_neg).mean(0)
    m = cfg.momentum_at(0)
    vel = [m * vel[0] + cfg.learning_rate * grad_W, m * vel[1] + cfg.learning_rate * grad_b,
           m * vel[2] + cfg.learning_rate * grad_c]
    return W + vel[0], b + vel[1], c + vel[2], vel


def test_cd1_step_matches_a_hand_written_reference():
    g = _gen(3)
    cfg = RBMConfig(n_hidden=7, learning_rate=0.3, weight_decay=0.01, momentum=0.5)
    rbm = RBM(9, 7, init_std=0.5, generator=g, dtype=torch.float64)
    v = torch.bernoulli(torch.full((11, 9), 0.4, dtype=torch.float64), generator=g)
    W, b, c = _params(rbm)
    vel_ref = [torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)]
    velocity = {}
    g_ref = torch.Generator().set_state(g.get_state())
    for _ in range(3):  # three steps so momentum matters
        cd_step(rbm, v, None, cfg, velocity, generator=g, epoch=0)
        W, b, c, vel_ref = _reference_cd1(W, b, c, v, g_ref, cfg, vel_ref)
    # Same random draws, same maths; only the summation order of fused ops may differ.
    for got, want in zip(_params(rbm), (W, b, c)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def _train(X, y, dr=None, seed=0, epochs=3, **kw):
    cfg = RBMConfig(n_hidden=24, epochs=epochs, batch_size=50, learning_rate=0.1, dr=dr, **kw)
    g = _gen(seed)
    rbm, events = train_rbm(cfg, Examples(X, side=y), RunContext(g), holdout=X[:50])
    return rbm, events, g


def test_lambda_zero_is_bit_identical_to_plain_cd(digits):
    X, y = digits
    plain, _, g_plain = _train(X, y, dr=None)
    for dr in (PosteriorDRConfig(weight=0.0, divergence="bhattacharyya", pairs=4),
               PosteriorDRConfig(weight=0.0, divergence="hellinger")):
        zero, _, g_zero = _train(X, y, dr=dr)
        for a, b in zip(_params(plain), _params(zero)):
            assert torch.equal(a, b)
        # No extra random numbers were drawn either.
        assert torch.equal(g_plain.get_state(), g_zero.get_state())


def test_same_seed_same_weights_different_seed_different(digits):
    X, y = digits
    a, _, _ = _train(X, y, seed=5, dr=PosteriorDRConfig(weight=1.0, divergence="jensen_shannon", pairs=3))
    b, _, _ = _train(X, y, seed=5, dr=PosteriorDRConfig(weight=1.0, divergence="jensen_shannon", pairs=3))
    c, _, _ = _train(X, y, seed=6, dr=PosteriorDRConfig(weight=1.0, divergence="jensen_shannon", pairs=3))
    assert all(torch.equal(p, q) for p, q in zip(_params(a), _params(b)))
    assert not torch.equal(a.W, c.W)


def test_cd1_lowers_reconstruction_error_on_digits(digits):
    X, y = digits
    untrained = RBM(X.shape[1], 24, init_std=0.01, generator=_gen(0))
    before = recon_error(untrained, X)
    rbm, events, _ = _train(X, y, epochs=5)
    after = recon_error(rbm, X)
    assert after < 0.75 * before
    # The metric is the same error on the trainer's fixed sample of the rows.
    sample = MetricData.choose(X, y, X[:50], layer=0).sample
    assert sample.shape[0] < X.shape[0]
    assert events[-1].metrics["recon_error"] == pytest.approx(recon_error(rbm, sample))
    assert events[-1].metrics["recon_error"] < events[0].metrics["recon_error"]


@pytest.mark.parametrize("divergence,pairs", [("hellinger", "all"), ("jeffreys", "all"), ("bhattacharyya", 8)])
def test_dr_raises_cross_group_divergence(digits, divergence, pairs):
    X, y = digits
    plain, ev_plain, _ = _train(X, y, epochs=4)
    dr = PosteriorDRConfig(weight=2.0, divergence=divergence, pairs=pairs)
    guided, ev_dr, _ = _train(X, y, epochs=4, dr=dr)

    def separation(rbm):
        return float(posterior_divergence(rbm.hidden_probs(X), y, divergence="hellinger"))

    assert separation(guided) > 1.5 * separation(plain)
    assert ev_dr[-1].metrics["cross_group_divergence"] > ev_plain[-1].metrics["cross_group_divergence"]
    # without DR there is no DR value (a 0 would read as one), the divergence is still there
    assert ev_dr[-1].metrics["dr"] > 0.0 and "dr" not in ev_plain[-1].metrics


def test_dr_gradient_reaches_weights_and_hidden_bias_only():
    """One step's difference DR - plain is exactly lr * lambda * (v^T g mu(1-mu), sum g mu(1-mu)),
    g the gradient of the row mean R (docs/dr.md), brute-forced."""
    g0 = _gen(4)
    v = torch.rand(10, 6, generator=g0, dtype=torch.float64)
    side = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    base = RBM(6, 5, init_std=0.3, generator=g0, dtype=torch.float64)
    out = {}
    for weight in (0.0, 0.7):
        rbm = RBM(6, 5, init_std=0.0, dtype=torch.float64)
        rbm.load_state_dict(base.state_dict())
        cfg = RBMConfig(n_hidden=5, learning_rate=0.2, weight_decay=0.0,
                        dr=PosteriorDRConfig(weight=weight, divergence="hellinger"))
        cd_step(rbm, v, side, cfg, {}, generator=_gen(9), epoch=0)
        out[weight] = _params(rbm)
    mu = base.hidden_probs(v).requires_grad_(True)
    value = bf.row_mean_divergence(mu, side, "hellinger")
    (g,) = torch.autograd.grad(value, mu)
    gm = g * mu.detach() * (1 - mu.detach())
    torch.testing.assert_close(out[0.7][0] - out[0.0][0], 0.2 * 0.7 * v.T @ gm, rtol=1e-9, atol=1e-12)
    assert torch.equal(out[0.7][1], out[0.0][1])  # visible bias: no DR gradient
    torch.testing.assert_close(out[0.7][2] - out[0.0][2], 0.2 * 0.7 * gm.sum(0), rtol=1e-9, atol=1e-12)


def test_gaussian_rbm_learns_standardised_data():
    g = _gen(2)
    latent = torch.bernoulli(torch.full((800, 6), 0.5), generator=g)
    X = latent @ torch.randn(6, 20, generator=g) + 0.1 * torch.randn(800, 20, generator=g)
    X = (X - X.mean(0)) / X.std(0)
    cfg = RBMConfig(n_hidden=32, visible="gaussian", epochs=15, batch_size=50, learning_rate=0.01)
    rbm, events = train_rbm(cfg, Examples(X), RunContext(g))
    # Unit variance per feature: predicting the mean would score 1.0.
    assert events[-1].metrics["recon_error"] < 0.35
    assert "pseudo_log_likelihood" not in events[-1].metrics
    assert torch.isfinite(rbm.W).all()


def test_pcd_chains_persist_and_drive_the_negative_phase():
    g = _gen(7)
    v = torch.bernoulli(torch.full((8, 6), 0.5), generator=g)
    cfg = RBMConfig(n_hidden=4, persistent=True, learning_rate=0.1)
    rbm = RBM(6, 4, init_std=0.5, generator=g)
    _, chains = cd_step(rbm, v, None, cfg, {}, generator=g)
    assert chains.shape == v.shape and set(chains.unique().tolist()) <= {0.0, 1.0}
    snapshot = rbm.state_dict()
    state = g.get_state()
    with_chains = RBM(6, 4, init_std=0.0)
    with_chains.load_state_dict(snapshot)
    from_data = RBM(6, 4, init_std=0.0)
    from_data.load_state_dict(snapshot)
    kept = chains.clone()
    _, chains2 = cd_step(with_chains, v, None, cfg, {}, generator=torch.Generator().set_state(state), chains=chains)
    cd_step(from_data, v, None, cfg, {}, generator=torch.Generator().set_state(state), chains=None)
    assert chains2 is chains  # updated in place, kept across batches
    assert not torch.equal(with_chains.W, from_data.W)  # the negative phase started from the chains
    assert not torch.equal(chains2, kept)
    _, none = cd_step(rbm, v, None, RBMConfig(n_hidden=4), {}, generator=g)
    assert none is None


def test_pcd_training_keeps_chains_in_state(digits):
    X, y = digits
    _, events, _ = _train(X[:200], y[:200], persistent=True, epochs=2)
    assert events[-1].state["current.chains"].shape == (50, X.shape[1])


def test_should_stop_raises_training_stopped(digits):
    X, y = digits
    cb = RecordingCallback(stop_after_batches=3)
    with pytest.raises(TrainingStopped):
        train_rbm(RBMConfig(n_hidden=8, epochs=2, batch_size=50), Examples(X, side=y), RunContext(_gen(), cb))
    assert cb.batches == 3 and cb.events == []


def test_epoch_events_carry_metrics_progress_and_state(digits):
    X, y = digits
    cb = RecordingCallback()
    train_rbm(RBMConfig(n_hidden=8, epochs=4, batch_size=100, dr=PosteriorDRConfig(weight=0.1)),
              Examples(X, side=y), RunContext(_gen(), cb), holdout=X[-50:], layer=2)
    assert [e.epoch for e in cb.events] == [1, 2, 3, 4]
    assert all(e.phase == "pretrain" and e.layer == 2 for e in cb.events)
    # The layer's own progress; run_pipeline maps it onto the whole run.
    assert [e.progress for e in cb.events] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert set(cb.events[0].metrics) == {"recon_error", "free_energy_gap", "pseudo_log_likelihood", "dr", "dr_pairs_per_batch",
                                         "cross_group_divergence"}
    assert all(np.isfinite(v) for v in cb.events[-1].metrics.values())
    assert cb.events[-1].state["epoch"] == 4


def test_bernoulli_rejects_data_outside_unit_interval():
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        train_rbm(RBMConfig(n_hidden=2, epochs=1), Examples(torch.full((4, 3), 2.0)), RunContext(_gen()))


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_conditionals_and_free_energy_match_cpu(visible):
    g = _gen(5)
    cpu = RBM(30, 20, visible, init_std=0.5, generator=g)
    v = torch.rand(16, 30, generator=g)
    gpu = RBM(30, 20, visible, init_std=0.0, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    vg = v.cuda()
    for fn in ("hidden_probs", "free_energy", "reconstruct"):
        torch.testing.assert_close(getattr(gpu, fn)(vg).cpu(), getattr(cpu, fn)(v), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dr_update_matches_cpu():
    """The DR part of a step is deterministic maths: (DR step - plain step) agrees across devices."""
    g0 = _gen(4)
    v = torch.rand(24, 10, generator=g0)
    side = torch.arange(24) % 4
    base = RBM(10, 8, init_std=0.3, generator=g0)
    diffs = {}
    for device in ("cpu", "cuda"):
        out = {}
        for weight in (0.0, 1.5):
            rbm = RBM(10, 8, init_std=0.0, device=device)
            rbm.load_state_dict(base.state_dict())
            cfg = RBMConfig(n_hidden=8, learning_rate=0.1, dr=PosteriorDRConfig(weight=weight, divergence="jeffreys"))
            cd_step(rbm, v.to(device), side.to(device), cfg, {}, generator=torch.Generator(device).manual_seed(1))
            out[weight] = rbm.W.cpu()
        diffs[device] = out[1.5] - out[0.0]
    assert diffs["cpu"].abs().max() > 1e-4
    torch.testing.assert_close(diffs["cuda"], diffs["cpu"], rtol=1e-3, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_is_seeded_and_learns(digits):
    X, y = digits[0].cuda(), digits[1].cuda()
    cfg = RBMConfig(n_hidden=24, epochs=4, batch_size=50, learning_rate=0.1, persistent=True,
                    dr=PosteriorDRConfig(weight=1.0, divergence="bhattacharyya", pairs=4))
    a, ev = train_rbm(cfg, Examples(X, side=y), RunContext(torch.Generator("cuda").manual_seed(0)))
    b, _ = train_rbm(cfg, Examples(X, side=y), RunContext(torch.Generator("cuda").manual_seed(0)))
    assert a.W.is_cuda and torch.equal(a.W, b.W)
    untrained = RBM(X.shape[1], 24, init_std=0.01, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    assert ev[-1].metrics["recon_error"] < 0.8 * recon_error(untrained, X)
