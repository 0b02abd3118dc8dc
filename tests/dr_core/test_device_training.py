"""Reproducible training, no host reads inside an epoch, CUDA graphs == eager steps.

The CPU tests run everywhere; the CUDA ones (marked ``cuda``) run when a device is present."""
from __future__ import annotations

import warnings

import pytest
import torch
from sklearn.datasets import load_digits

from dr_core import groups as G
from dr_core import regularizers as R
from dr_core.config import FeatureDRConfig, FinetuneConfig, PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.mlp import init_mlp
from dr_core.mlp_trainer import train_mlp
from dr_core.rbm_trainer import train_rbm


def _needs_cuda(test):
    """Marked ``cuda`` and skipped where no CUDA device is present."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    return pytest.mark.cuda(skip(test))


PCD_BHATTACHARYYA = dict(persistent=True, dr=PosteriorDRConfig(weight=0.5, divergence="bhattacharyya", pairs=4))
RBM_VARIANTS = {
    "pcd_bhattacharyya_k4": PCD_BHATTACHARYYA,
    "cd_hellinger_all": dict(dr=PosteriorDRConfig(weight=0.5, divergence="hellinger")),
    "cd_jensen_shannon_all": dict(cd_k=2, dr=PosteriorDRConfig(weight=0.5, divergence="jensen_shannon")),
}
MLP_VARIANTS = {
    "euclidean_k3": FeatureDRConfig(weight=0.1, distance="euclidean", pairs=3),
    "cosine_all": FeatureDRConfig(weight=0.1, distance="cosine"),
}


def _digits(n: int = 400, device: str = "cpu", unlabelled_every: int = 0):
    d = load_digits()
    X = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(d.target[:n], dtype=torch.long, device=device)
    if unlabelled_every:
        y[::unlabelled_every] = -1
    return X, y


def _trained_rbm(device: str, cuda_graphs: bool = False, n: int = 400, epochs: int = 2, **cfg_kw):
    X, y = _digits(n, device)
    cfg = RBMConfig(n_hidden=32, epochs=epochs, batch_size=50, momentum_switch_epoch=1, **cfg_kw)
    run = RunContext(torch.Generator(device).manual_seed(0), cuda_graphs=cuda_graphs)
    rbm, events = train_rbm(cfg, Examples(X, side=y), run)
    return rbm, events, run.generator


def _trained_mlp(device: str, dr: FeatureDRConfig, cuda_graphs: bool = False, n: int = 400,
         optimizer: str = "sgd", unlabelled_every: int = 0):
    X, y = _digits(n, device, unlabelled_every)
    g = torch.Generator(device).manual_seed(0)
    model = init_mlp(64, [24, 16], 10, "sigmoid", g).to(device)
    cfg = FinetuneConfig(epochs=2, batch_size=50, optimizer=optimizer, learning_rate=0.05, dr=dr)
    events = train_mlp(model, cfg, Examples(X, y, y), RunContext(g, cuda_graphs=cuda_graphs))
    return model, events, g


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ----------------------------------------------------------------------- reproducible on CPU
@pytest.mark.parametrize("variant", list(RBM_VARIANTS))
def test_cpu_rbm_same_seed_gives_bit_identical_weights(variant):
    (a, ev_a, _), (b, ev_b, _) = (_trained_rbm("cpu", **RBM_VARIANTS[variant]) for _ in range(2))
    assert _same_parameters(a, b) and ev_a[-1].metrics == ev_b[-1].metrics


@pytest.fixture
def cuda_code_path_on_cpu(monkeypatch):
    """The sums and checks CUDA uses (no index_add atomics, no host reads), run on CPU."""
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    monkeypatch.setattr(R, "MASK_CHECK_DEVICES", frozenset())


def test_cpu_run_of_the_cuda_code_path_is_reproducible_and_agrees(cuda_code_path_on_cpu):
    a, _, _ = _trained_rbm("cpu", **PCD_BHATTACHARYYA)
    b, _, _ = _trained_rbm("cpu", **PCD_BHATTACHARYYA)
    assert _same_parameters(a, b)
    G.INDEX_ADD_DEVICES = frozenset({"cpu"})  # the monkeypatch fixture restores it
    ordered, _, _ = _trained_rbm("cpu", **PCD_BHATTACHARYYA)
    # other summation orders, same maths: equal up to float32 rounding through 16 steps
    torch.testing.assert_close(a.W, ordered.W, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", list(MLP_VARIANTS))
def test_cpu_mlp_same_seed_gives_bit_identical_weights(variant):
    a, _, _ = _trained_mlp("cpu", MLP_VARIANTS[variant])
    b, _, _ = _trained_mlp("cpu", MLP_VARIANTS[variant])
    assert _same_parameters(a, b)


# ------------------------------------------------------------- no host read inside an epoch
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


def _count_host_reads(monkeypatch, fn) -> int:
    calls = {"n": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **kw):
            calls["n"] += 1
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return calls["n"]


@pytest.mark.parametrize("variant", list(RBM_VARIANTS))
def test_rbm_host_reads_do_not_grow_with_the_batches(variant, monkeypatch):
    """Reads per epoch are a constant (the metrics); 4x the batches, the same reads."""
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    monkeypatch.setattr(R, "MASK_CHECK_DEVICES", frozenset())
    kw = RBM_VARIANTS[variant]
    small = _count_host_reads(monkeypatch, lambda: _trained_rbm("cpu", n=200, **kw))
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    monkeypatch.setattr(R, "MASK_CHECK_DEVICES", frozenset())
    large = _count_host_reads(monkeypatch, lambda: _trained_rbm("cpu", n=800, **kw))
    assert small == large and small <= 2 * 30  # a few reads per epoch, 2 epochs


@pytest.mark.parametrize("variant", list(MLP_VARIANTS))
def test_mlp_host_reads_do_not_grow_with_the_batches(variant, monkeypatch):
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    small = _count_host_reads(monkeypatch, lambda: _trained_mlp("cpu", MLP_VARIANTS[variant], n=200))
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    large = _count_host_reads(monkeypatch, lambda: _trained_mlp("cpu", MLP_VARIANTS[variant], n=800))
    assert small == large and small <= 2 * 10


# ------------------------------------------------------------ partial labels in fine-tuning
def test_unlabelled_rows_take_no_part_in_fine_tuning():
    """Rows labelled -1 are left out: the same run as on the labelled rows alone."""
    dr = FeatureDRConfig(weight=0.1, distance="euclidean", pairs=3)
    partial, events, _ = _trained_mlp("cpu", dr, unlabelled_every=3)
    X, y = _digits(400, "cpu", unlabelled_every=3)
    keep = y >= 0
    g = torch.Generator().manual_seed(0)
    model = init_mlp(64, [24, 16], 10, "sigmoid", g)
    cfg = FinetuneConfig(epochs=2, batch_size=50, learning_rate=0.05, dr=dr)
    train_mlp(model, cfg, Examples(X[keep], y[keep], y[keep]), RunContext(g))
    assert _same_parameters(partial, model)
    assert 0 < events[-1].metrics["train_accuracy"] <= 1


def test_unlabelled_rows_are_left_out_of_evaluation():
    from dr_core.mlp import evaluate
    X, y = _digits(100, "cpu")
    model = init_mlp(64, [8], 10, "sigmoid", torch.Generator().manual_seed(1))
    y_partial = y.clone()
    y_partial[::2] = -1
    got, want = evaluate(model, X, y_partial), evaluate(model, X[1::2], y[1::2])
    assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"], rel=1e-6)


# ------------------------------------------------------------------------------ on CUDA
@_needs_cuda
@pytest.mark.parametrize("variant", list(RBM_VARIANTS))
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_rbm_same_seed_gives_bit_identical_weights(variant, graphs):
    a, ev_a, _ = _trained_rbm("cuda", graphs, **RBM_VARIANTS[variant])
    b, ev_b, _ = _trained_rbm("cuda", graphs, **RBM_VARIANTS[variant])
    assert a.W.is_cuda and _same_parameters(a, b) and ev_a[-1].metrics == ev_b[-1].metrics


@_needs_cuda
@pytest.mark.parametrize("variant", list(MLP_VARIANTS))
def test_cuda_mlp_same_seed_gives_bit_identical_weights(variant):
    a, _, _ = _trained_mlp("cuda", MLP_VARIANTS[variant])
    b, _, _ = _trained_mlp("cuda", MLP_VARIANTS[variant])
    assert _same_parameters(a, b)


@_needs_cuda
@pytest.mark.parametrize("variant", list(RBM_VARIANTS))
def test_cuda_graph_cd_steps_equal_eager_steps(variant):
    """Same weights, metrics and generator state (so resume works) from graphs as eagerly;
    n=400 at B=50 with a momentum switch after epoch 1: warm-up, capture, two variants."""
    eager, ev_e, g_e = _trained_rbm("cuda", False, epochs=3, **RBM_VARIANTS[variant])
    graph, ev_g, g_g = _trained_rbm("cuda", True, epochs=3, **RBM_VARIANTS[variant])
    assert _same_parameters(eager, graph)
    assert [e.metrics for e in ev_e] == [e.metrics for e in ev_g]
    assert torch.equal(g_e.get_state(), g_g.get_state())


@_needs_cuda
@pytest.mark.parametrize("variant", list(MLP_VARIANTS))
def test_cuda_graph_fine_tuning_steps_equal_eager_steps(variant):
    eager, ev_e, g_e = _trained_mlp("cuda", MLP_VARIANTS[variant], n=430)  # a last, short batch too
    graph, ev_g, g_g = _trained_mlp("cuda", MLP_VARIANTS[variant], cuda_graphs=True, n=430)
    assert _same_parameters(eager, graph)
    assert [e.metrics for e in ev_e] == [e.metrics for e in ev_g]
    assert torch.equal(g_e.get_state(), g_g.get_state())


def _cuda_syncs(fn) -> int:
    """Synchronising CUDA calls made by fn, counted by torch's sync debug mode."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@_needs_cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_syncs_do_not_grow_with_the_batches(graphs):
    kw = RBM_VARIANTS["pcd_bhattacharyya_k4"]
    small = _cuda_syncs(lambda: _trained_rbm("cuda", graphs, n=200, **kw))
    large = _cuda_syncs(lambda: _trained_rbm("cuda", graphs, n=800, **kw))
    assert small == large
    dr = MLP_VARIANTS["euclidean_k3"]
    small = _cuda_syncs(lambda: _trained_mlp("cuda", dr, graphs, n=200))
    large = _cuda_syncs(lambda: _trained_mlp("cuda", dr, graphs, n=800))
    assert small == large
