"""An RBM epoch's own work (metrics, snapshots, callbacks) next to its CD steps: bounded
whatever the data size. Counted in matrix-product FLOPs, never timed."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dr_core.rbm_trainer as rbm_trainer
from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.addmm_.default,
            torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default, torch.ops.aten.mv.default}


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of every matrix product, apart for those made inside a CD step."""

    def __init__(self):
        super().__init__()
        self.in_step = False
        self.step = self.other = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _MATMULS:
            a, b = (args[1], args[2]) if func in (torch.ops.aten.addmm.default, torch.ops.aten.addmm_.default,
                                                  torch.ops.aten.baddbmm.default) else (args[0], args[1])
            flops = 2 * a.numel() * (b.shape[-1] if b.dim() > 1 else 1)
            if self.in_step:
                self.step += flops
            else:
                self.other += flops
        return out


def _count(monkeypatch, n, d=40, hidden=30, epochs=2, dr=None, holdout_rows=0):
    counter = MatmulFlops()
    real_step = rbm_trainer.cd_step

    def counted_step(*args, **kwargs):
        counter.in_step = True
        try:
            return real_step(*args, **kwargs)
        finally:
            counter.in_step = False

    monkeypatch.setattr(rbm_trainer, "cd_step", counted_step)
    g = torch.Generator().manual_seed(0)
    X = torch.rand(n, d, generator=g)
    side = torch.arange(n) % 4
    holdout = torch.rand(holdout_rows, d, generator=g) if holdout_rows else None
    cfg = RBMConfig(n_hidden=hidden, epochs=epochs, batch_size=128, dr=dr)
    with counter:
        rbm_trainer.train_rbm(cfg, Examples(X, side=side), RunContext(g), holdout=holdout)
    return counter.step, counter.other


@pytest.mark.parametrize("dr", [None, PosteriorDRConfig(weight=0.1, divergence="hellinger")])
@pytest.mark.parametrize("n", [1024, 8192, 32768])
def test_epoch_work_is_at_most_five_percent_of_the_steps(monkeypatch, n, dr):
    step, other = _count(monkeypatch, n, dr=dr, holdout_rows=n // 4)
    assert step > 0
    assert other <= 0.05 * step


def test_epoch_work_does_not_grow_with_the_data(monkeypatch):
    """Past the metric sample's size, more rows (training and held-out) add CD steps only."""
    _, other_small = _count(monkeypatch, 8192, holdout_rows=4096)
    _, other_large = _count(monkeypatch, 32768, holdout_rows=16384)
    assert other_large == other_small
