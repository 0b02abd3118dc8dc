"""Per-epoch metrics of an RBM layer (names documented in ``dr_core.rbm_trainer.train_rbm``).

Metrics never consume the training generator: the diagnostic subsample and the
pseudo-likelihood draw from generators of their own, seeded by (layer, epoch), so turning a
diagnostic on or off can never change the trained weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dr_core.rbm import RBM
from dr_core.regularizers import posterior_divergence

# Metric passes run in chunks so that a large training set never needs a (N, H) buffer.
_EVAL_CHUNK = 4096
# The separation diagnostic and the pseudo-likelihood use a fixed subsample of this many rows.
_DIAG_ROWS = 512
_METRIC_SEED = 0x5EED_D1A6


def metric_generator(device: torch.device, layer: int, epoch: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(_METRIC_SEED + 1009 * layer + epoch)
    return g


@torch.no_grad()
def recon_error(rbm: RBM, X: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the mean-field reconstruction over all of X (N, D) (0-d, float64)."""
    total = X.new_zeros((), dtype=torch.float64)
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        x = X[start:start + _EVAL_CHUNK]
        total += ((rbm.reconstruct(x) - x) ** 2).sum()
    return total / max(1, X.numel())


@torch.no_grad()
def mean_free_energy(rbm: RBM, X: torch.Tensor) -> torch.Tensor:
    """Mean free energy of the rows of X (N, D) (0-d, float64)."""
    total = X.new_zeros((), dtype=torch.float64)
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        total += rbm.free_energy(X[start:start + _EVAL_CHUNK]).sum()
    return total / max(1, X.shape[0])


@torch.no_grad()
def pseudo_log_likelihood(rbm: RBM, X: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Stochastic pseudo-log-likelihood (one random visible unit flipped per row), mean over rows."""
    idx = torch.randint(0, X.shape[1], (X.shape[0],), generator=generator, device=X.device)
    rows = torch.arange(X.shape[0], device=X.device)
    flipped = X.clone()
    flipped[rows, idx] = 1.0 - flipped[rows, idx]
    gap = rbm.free_energy(flipped) - rbm.free_energy(X)
    return (X.shape[1] * F.logsigmoid(gap)).mean()


@torch.no_grad()
def cross_group_divergence(rbm: RBM, X: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Mean squared-Hellinger divergence of p(h|v) over cross-group pairs of X (0 if one group)."""
    return posterior_divergence(rbm.hidden_probs(X), side, divergence="hellinger", pairs="all")


@dataclass(frozen=True)
class MetricData:
    """What one layer's metrics are measured on: ``X`` (N, D) its training data, ``sample``
    (n, D) with ``sample_side`` (n,) a fixed subsample of at most 512 rows for the costlier
    diagnostics, ``holdout`` (M, D) held-out data or None, ``layer`` the layer index."""

    X: torch.Tensor
    sample: torch.Tensor
    sample_side: torch.Tensor
    holdout: torch.Tensor | None
    layer: int

    @classmethod
    def choose(cls, X: torch.Tensor, side: torch.Tensor | None, holdout: torch.Tensor | None,
               layer: int) -> MetricData:
        """Draw the subsample with a generator of its own (same rows on resume)."""
        n = X.shape[0]
        side = side if side is not None else torch.zeros(n, dtype=torch.long, device=X.device)
        idx = torch.randperm(n, generator=metric_generator(X.device, layer, -1), device=X.device)
        idx = idx[:_DIAG_ROWS]
        return cls(X, X[idx], side[idx], holdout, layer)


def epoch_metrics(rbm: RBM, data: MetricData, epoch: int, dr_mean: torch.Tensor | float,
                  pairs_per_batch: torch.Tensor | float = 0.0) -> dict[str, float]:
    """The metrics after ``epoch`` (0-based); ``dr_mean`` is the epoch's mean DR value,
    ``pairs_per_batch`` its mean number of cross-group pairs in a batch.

    Computed on the device and read back together: one host synchronisation per epoch."""
    X, holdout = data.X, data.holdout
    metrics: dict[str, torch.Tensor | float] = {"recon_error": recon_error(rbm, X)}
    if holdout is not None and holdout.shape[0] > 0:
        # Same-size train sample: the gap then measures overfitting, not sample size.
        n = min(holdout.shape[0], X.shape[0])
        metrics["free_energy_gap"] = mean_free_energy(rbm, holdout[:n]) - mean_free_energy(rbm, X[:n])
    if rbm.visible == "bernoulli":
        gen = metric_generator(X.device, data.layer, epoch)
        metrics["pseudo_log_likelihood"] = pseudo_log_likelihood(rbm, data.sample, gen)
    metrics["dr"] = dr_mean
    metrics["dr_pairs_per_batch"] = pairs_per_batch
    metrics["cross_group_divergence"] = cross_group_divergence(rbm, data.sample, data.sample_side)
    values = torch.stack([torch.as_tensor(v, device=X.device).double() for v in metrics.values()])
    return dict(zip(metrics, values.tolist()))
