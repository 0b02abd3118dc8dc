"""Per-epoch metrics of an RBM layer (names documented in ``dr_core.rbm_trainer.train_rbm``).

Every metric is measured on a fixed sample of the training rows (and one of the held-out rows),
never on all of the data: an epoch's metrics then cost a bounded share of the epoch whatever
the data size. The sample holds at most 512 rows and at most one in 16 of the rows (at least
64 while there are that many), so its matrix products stay within 5 % of the epoch's CD-1
products once the data have 1,024 rows or more. The sample's hidden pre-activations are
computed once and shared by every metric.

Metrics never consume the training generator: the samples and the pseudo-likelihood draw from
generators of their own, seeded by (layer, epoch), so turning a diagnostic on or off can never
change the trained weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dr_core.rbm import RBM
from dr_core.regularizers import posterior_divergence

# Metric passes over a caller's tensor run in chunks so that no (N, H) buffer is needed.
_EVAL_CHUNK = 4096
# The metric sample: at most this many rows, and at most one in _ROWS_PER_SAMPLE_ROW of the
# data (but at least _MIN_ROWS while the data have that many).
_DIAG_ROWS = 512
_MIN_ROWS = 64
_ROWS_PER_SAMPLE_ROW = 16
_METRIC_SEED = 0x5EED_D1A6


def metric_generator(device: torch.device, layer: int, epoch: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(_METRIC_SEED + 1009 * layer + epoch)
    return g


def sample_size(n: int) -> int:
    """How many of n rows the metrics are measured on."""
    return min(n, _DIAG_ROWS, max(_MIN_ROWS, n // _ROWS_PER_SAMPLE_ROW))


@torch.no_grad()
def recon_error(rbm: RBM, X: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the mean-field reconstruction over all of X (N, D) (0-d, float64)."""
    total = X.new_zeros((), dtype=torch.float64)
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        x = X[start:start + _EVAL_CHUNK]
        total += ((rbm.reconstruct(x) - x) ** 2).sum()
    return total / max(1, X.numel())


def _free_energy_from(rbm: RBM, v: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """``rbm.free_energy(v)`` (B,) given v's hidden pre-activations ``pre`` (B, H)."""
    hidden_term = F.softplus(pre).sum(dim=1)
    if rbm.visible == "bernoulli":
        return -(v @ rbm.b) - hidden_term
    return 0.5 * ((v - rbm.b) ** 2).sum(dim=1) - hidden_term


def _pseudo_log_likelihood(rbm: RBM, v: torch.Tensor, pre: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
    """Stochastic pseudo-log-likelihood (one random visible unit i flipped per row), mean over
    rows. Flipping v_i moves the pre-activations by (1 - 2 v_i) W[i]: no second product."""
    idx = torch.randint(0, v.shape[1], (v.shape[0],), generator=generator, device=v.device)
    rows = torch.arange(v.shape[0], device=v.device)
    delta = 1.0 - 2.0 * v[rows, idx]  # flipped value minus old value
    pre_flipped = pre + delta[:, None] * rbm.W[idx]
    gap = -delta * rbm.b[idx] - F.softplus(pre_flipped).sum(1) + F.softplus(pre).sum(1)
    return (v.shape[1] * F.logsigmoid(gap)).mean()


@dataclass(frozen=True)
class MetricData:
    """What one layer's metrics are measured on: ``sample`` (n, D) with ``sample_side`` (n,), a
    fixed sample of the training rows (``sample_size``); ``holdout`` (m, D), a fixed sample of
    the held-out rows of the same size or smaller, or None; ``layer`` the layer index."""

    sample: torch.Tensor
    sample_side: torch.Tensor
    holdout: torch.Tensor | None
    layer: int

    @classmethod
    def choose(cls, X: torch.Tensor, side: torch.Tensor | None, holdout: torch.Tensor | None,
               layer: int) -> MetricData:
        """Draw the samples with a generator of their own (same rows on resume)."""
        n = X.shape[0]
        side = side if side is not None else torch.zeros(n, dtype=torch.long, device=X.device)
        gen = metric_generator(X.device, layer, -1)
        idx = torch.randperm(n, generator=gen, device=X.device)[:sample_size(n)]
        held = None
        if holdout is not None and holdout.shape[0] > 0:
            m = holdout.shape[0]
            held_idx = torch.randperm(m, generator=gen, device=holdout.device)[:min(m, idx.numel())]
            held = holdout[held_idx]
        return cls(X[idx], side[idx], held, layer)


@torch.no_grad()
def epoch_metrics(rbm: RBM, data: MetricData, epoch: int, dr_mean: torch.Tensor | float | None,
                  pairs_per_batch: torch.Tensor | float = 0.0) -> dict[str, float]:
    """The metrics after ``epoch`` (0-based) on ``data``'s samples; ``dr_mean`` is the epoch's
    mean DR value (None without DR: then there is no ``dr`` metric, rather than a 0 that reads
    as a measurement), ``pairs_per_batch`` its mean number of cross-group pairs in a batch.

    Computed on the device and read back together: one host synchronisation per epoch."""
    v = data.sample
    pre = torch.addmm(rbm.c, v, rbm.W)
    mu = torch.sigmoid(pre)
    recon = ((rbm.visible_mean(mu) - v) ** 2).double().mean()
    metrics: dict[str, torch.Tensor | float] = {"recon_error": recon}
    if data.holdout is not None:
        train_energy = _free_energy_from(rbm, v, pre).double().mean()
        metrics["free_energy_gap"] = rbm.free_energy(data.holdout).double().mean() - train_energy
    if rbm.visible == "bernoulli":
        gen = metric_generator(v.device, data.layer, epoch)
        metrics["pseudo_log_likelihood"] = _pseudo_log_likelihood(rbm, v, pre, gen)
    if dr_mean is not None:
        metrics["dr"] = dr_mean
    metrics["dr_pairs_per_batch"] = pairs_per_batch
    metrics["cross_group_divergence"] = posterior_divergence(mu, data.sample_side,
                                                             divergence="hellinger", pairs="all")
    values = torch.stack([torch.as_tensor(m, device=v.device).double() for m in metrics.values()])
    return dict(zip(metrics, values.tolist()))
