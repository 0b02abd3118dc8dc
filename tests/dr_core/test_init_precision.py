"""Random initialisation as a choice and the run's matmul precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dr_core.config import FinetuneConfig, PipelineConfig
from dr_core.mlp import MLP, init_mlp
from dr_core.pipeline import DataSplit, run_pipeline
from dr_core.precision import matmul_precision


def test_normal_init_is_the_classic_small_gaussian_and_seeded():
    g = torch.Generator().manual_seed(3)
    model = init_mlp(300, [400, 200], 10, "sigmoid", g, init="normal", init_std=0.01)
    for layer in [*model.hidden, model.head]:
        w = layer.weight.detach().double()
        assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.01, rel=0.05)
        assert not layer.bias.any()
    again = init_mlp(300, [400, 200], 10, "sigmoid", torch.Generator().manual_seed(3),
                     init="normal", init_std=0.01)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    glorot = init_mlp(300, [400, 200], 10, "sigmoid", torch.Generator().manual_seed(3))
    assert glorot.hidden[0].weight.abs().max() > 0.1  # gain 4: far wider than N(0, 0.01)


def test_the_head_of_an_unrolled_dbn_follows_the_init_choice():
    w, c = torch.zeros(5, 4), torch.zeros(4)
    head = MLP.from_rbms([(w, c)], 3, "sigmoid", torch.Generator().manual_seed(0),
                         init="normal", init_std=0.5).head
    assert head is not None and 0.2 < head.weight.std().item() < 1.0


def test_init_is_checked():
    with pytest.raises(ValueError, match="init"):
        FinetuneConfig(init="uniform")
    with pytest.raises(ValueError, match="init_std"):
        FinetuneConfig(init="normal", init_std=0.0)
    with pytest.raises(ValueError, match="precision"):
        PipelineConfig(hidden_layers=(4,), precision="fp16")


def _split():
    rng = np.random.default_rng(0)
    X = rng.random((120, 10), dtype=np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    return DataSplit(X_train=X[:100], y_train=y[:100], side_train=y[:100], X_val=X[100:],
                     y_val=y[100:])


def _run(**cfg_kw):
    ft = FinetuneConfig(epochs=2, batch_size=20, **cfg_kw.pop("finetune", {}))
    cfg = PipelineConfig(hidden_layers=(8, 6), finetune=ft, **cfg_kw)
    return run_pipeline(cfg, _split(), n_classes=2, visible="bernoulli",
                        generator=torch.Generator().manual_seed(0))


def test_pipeline_uses_the_init_choice():
    glorot = _run()
    normal = _run(finetune={"init": "normal", "init_std": 0.01})
    assert not torch.equal(glorot.model.hidden[0].weight, normal.model.hidden[0].weight)


def test_tf32_changes_nothing_on_cpu_and_the_setting_is_restored():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    fp32, tf32 = _run(), _run(precision="tf32")
    assert all(torch.equal(a, b) for a, b in zip(fp32.model.parameters(), tf32.model.parameters()))
    after = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    assert after == before
    with pytest.raises(RuntimeError), matmul_precision("tf32"):
        raise RuntimeError("boom")
    assert (matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32) == before
