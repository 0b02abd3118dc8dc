"""Restricted Boltzmann machines with Bernoulli hidden units, trained by CD-k / PCD with generative DR.

Conventions: ``v`` is (B, D), ``W`` is (D, H) and the hidden pre-activation is ``c + v @ W``.
Visible units are ``"bernoulli"`` (data in [0, 1]) or ``"gaussian"`` (unit variance; the data
must be standardised). Training updates are written by hand (no autograd) so that a plain CD
step is three matrix products and a few element-wise ops.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dr_core.config import RBMConfig
from dr_core.events import Callback, Event, NullCallback, TrainingStopped
from dr_core.regularizers import posterior_divergence, posterior_divergence_and_grad

# Metric passes run in chunks so that a large training set never needs a (N, H) buffer.
_EVAL_CHUNK = 4096
# The separation diagnostic and the pseudo-likelihood use a fixed subsample of this many rows.
_DIAG_ROWS = 512
# Seeds of the metric-only generators: metrics never consume the training generator, so
# turning a diagnostic on or off can never change the trained weights.
_METRIC_SEED = 0x5EED_D1A6


class RBM(nn.Module):
    """Bernoulli-hidden RBM. Parameters: ``W`` (D, H), ``b`` (D,) visible bias, ``c`` (H,) hidden bias."""

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli", *,
                 init_std: float = 0.01, generator: torch.Generator | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if visible not in ("bernoulli", "gaussian"):
            raise ValueError(f"visible: must be 'bernoulli' or 'gaussian', got {visible!r}")
        self.visible = visible
        if init_std > 0:
            w = torch.randn(n_visible, n_hidden, generator=generator, device=device, dtype=dtype) * init_std
        else:  # no draw at all: a resumed layer must not consume any random numbers
            w = torch.zeros(n_visible, n_hidden, device=device, dtype=dtype)
        # requires_grad=False: the trainer updates them by hand; autograd users may switch it on.
        self.W = nn.Parameter(w, requires_grad=False)
        self.b = nn.Parameter(torch.zeros(n_visible, device=device, dtype=dtype), requires_grad=False)
        self.c = nn.Parameter(torch.zeros(n_hidden, device=device, dtype=dtype), requires_grad=False)

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """Posterior means mu = sigmoid(c + v W), (B, H)."""
        return torch.sigmoid(torch.addmm(self.c, v, self.W))

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, binary sample) of p(h | v), each (B, H)."""
        mu = self.hidden_probs(v)
        return mu, torch.bernoulli(mu, generator=generator)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h], (B, D): sigmoid for Bernoulli units, linear for Gaussian ones."""
        pre = torch.addmm(self.b, h, self.W.t())
        return torch.sigmoid(pre) if self.visible == "bernoulli" else pre

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample of p(v | h), (B, D)."""
        mean = self.visible_mean(h)
        if self.visible == "bernoulli":
            return torch.bernoulli(mean, generator=generator)
        return mean + torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) per row, (B,): -log sum_h exp(-E(v, h)) up to the log-partition function."""
        hidden_term = F.softplus(torch.addmm(self.c, v, self.W)).sum(dim=1)
        if self.visible == "bernoulli":
            return -(v @ self.b) - hidden_term
        return 0.5 * ((v - self.b) ** 2).sum(dim=1) - hidden_term

    def reconstruct(self, v: torch.Tensor) -> torch.Tensor:
        """Mean-field reconstruction E[v | h = mu(v)], (B, D)."""
        return self.visible_mean(self.hidden_probs(v))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.hidden_probs(v)


def _dr_active(cfg: RBMConfig) -> bool:
    return cfg.dr is not None and cfg.dr.active


_EPS = 1e-6


def fused_dr_chain(mu: torch.Tensor, side: torch.Tensor, divergence: str, normalize: str = "sum"
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(DR value, dDR/dmu * mu (1 - mu)) for all-pairs Hellinger/Jeffreys in a few fused passes; else None.

    Same value and gradient as ``posterior_divergence_and_grad`` (clamp convention included:
    no gradient where mu was clamped), but the gradient is returned already multiplied by the
    sigmoid derivative and built from class sums with (G, B) one-hot matrix products, so the
    whole term costs about ten element-wise passes over (B, H) instead of ~50 (the DR overhead
    target of issue 2). Derivation for the cross-group sums: docs/dr.md.
    """
    if divergence not in ("hellinger", "jeffreys"):
        return None
    _, inv, counts = torch.unique(side, return_inverse=True, return_counts=True)
    B, H = mu.shape
    G = counts.numel()
    if G < 2:
        return mu.new_zeros(()), torch.zeros_like(mu)
    n_cross = (B - counts[inv]).to(mu.dtype)[:, None]  # (B, 1) cross-group partners of each row
    n_pairs = (B * B - (counts.to(mu.dtype) ** 2).sum()) / 2
    c = mu.clamp(_EPS, 1 - _EPS)

    def others(x: torch.Tensor) -> torch.Tensor:
        """(B, H): row p holds the sum of x over the rows of the other groups."""
        # index_add/index_select rather than one-hot matmuls: (B, G) @ (G, H) products with a
        # tiny inner dimension cost 4x more on CPU.
        by_group = x.new_zeros(G, H).index_add_(0, inv, x)
        return by_group.sum(0).sub(by_group).index_select(0, inv)

    # Every (B, H) temporary is reused in place: at B=128, H=2000 the term is memory-bound.
    if divergence == "hellinger":
        t = torch.rsub(c, 1.0).sqrt_()
        s = c.sqrt_()  # c is not needed again: the clamp mask below is built from mu
        a, b = others(s), others(t)
        # sum_P (1 - s_p s_q - t_p t_q) = 1/2 sum_p [s_p (n_p s_p - a_p) + t_p (n_p t_p - b_p)].
        # (Not H n_p - s_p.a_p - t_p.b_p, though s^2 + t^2 = 1: that cancels catastrophically in
        # float32 when posteriors are close, as they are early in training.) One buffer serves both.
        diff = torch.mul(s, n_cross).sub_(a)
        total = torch.vdot(s.view(-1), diff.view(-1))
        torch.mul(t, n_cross, out=diff).sub_(b)
        total = 0.5 * (total + torch.vdot(t.view(-1), diff.view(-1)))
        # d/dmu_p = (b_p / t_p - a_p / s_p) / 2; times mu(1-mu) = s^2 t^2: s t (b s - a t) / 2
        chain = b.mul_(s).addcmul_(a, t, value=-1.0).mul_(s).mul_(t)
        half = 0.5
    else:
        # u_p = sum_{q cross p} (logit_p - logit_q); sum_P (a - b)(la - lb) = sum_p mu_p . u_p
        logit = torch.logit(c)
        from_others = others(logit)
        u = logit.mul_(n_cross).sub_(from_others)
        total = torch.vdot(c.view(-1), u.view(-1))
        # d/dmu_p = u_p + (n_p mu_p - M_p) / (mu_p (1 - mu_p)); times mu(1-mu):
        chain = u.mul_(torch.addcmul(c, c, c, value=-1.0)).addcmul_(c, n_cross).sub_(others(c))
        half = 1.0
    scale = 1.0 / n_pairs
    if normalize == "per_unit":
        scale = scale / H
    chain.mul_(half * scale)
    # Clamp convention: no gradient where mu was clamped. Boolean masks are slow on CPU, so
    # one is built only when some value really lies outside [eps, 1 - eps].
    lo, hi = torch.aminmax(mu)
    if bool(lo < _EPS) or bool(hi > 1 - _EPS):
        chain.masked_fill_((mu < _EPS) | (mu > 1 - _EPS), 0.0)
    return total * scale, chain


def cd_step(rbm: RBM, v: torch.Tensor, side: torch.Tensor | None, cfg: RBMConfig,
            velocity: dict[str, torch.Tensor], *, generator: torch.Generator,
            chains: torch.Tensor | None = None, epoch: int = 0
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One CD-k (or PCD-k when ``cfg.persistent``) update of ``rbm`` in place on the batch ``v`` (B, D).

    Ascends mean log-likelihood + lambda * DR(mu(v), side) with momentum ``cfg.momentum_at(epoch)``
    and L2 decay on W. ``velocity`` (keys W, b, c) is updated in place (created when empty).
    ``chains`` are the persistent fantasy particles (n_chains, D), n_chains >= B; None starts
    them from the data. Returns ({"dr": 0-d tensor}, chains); chains is None for plain CD.
    With DR off no random number is drawn beyond plain CD's, so results are bit-identical.
    """
    n = v.shape[0]
    for key, p in (("W", rbm.W), ("b", rbm.b), ("c", rbm.c)):
        if key not in velocity:
            velocity[key] = torch.zeros_like(p)
    mu = rbm.hidden_probs(v)

    # Negative phase: Gibbs chain started from the data (CD) or from the persistent particles.
    if cfg.persistent and chains is not None:
        h = torch.bernoulli(rbm.hidden_probs(chains[:n]), generator=generator)
    else:
        h = torch.bernoulli(mu, generator=generator)
    for step in range(cfg.cd_k):
        # Gaussian units: the noise-free mean is the usual choice (Hinton's guide), it
        # keeps the negative statistics low-variance on standardised data.
        v_neg = rbm.sample_visible(h, generator) if rbm.visible == "bernoulli" else rbm.visible_mean(h)
        h_neg = rbm.hidden_probs(v_neg)
        if step + 1 < cfg.cd_k:
            h = torch.bernoulli(h_neg, generator=generator)

    pos = mu
    dr_value = torch.zeros((), device=v.device, dtype=v.dtype)
    if _dr_active(cfg) and side is not None:
        dr = cfg.dr
        fused = fused_dr_chain(mu, side, dr.divergence, dr.normalize) if dr.pairs == "all" else None
        if fused is not None:
            dr_value, chain = fused
        else:
            dr_value, g = posterior_divergence_and_grad(
                mu, side, divergence=dr.divergence, pairs=dr.pairs, generator=generator, normalize=dr.normalize)
            chain = g.mul_(mu * (1.0 - mu))
        # dDR/dW = v^T (g * mu (1 - mu)); folded into the positive statistics so the DR
        # gradient costs no extra (D, B) x (B, H) product. Scaled by n because pos is divided by n.
        pos = chain.mul_(dr.weight * n).add_(mu)  # chain is ours to reuse: no extra (B, H) buffer
        dr_value = dr_value.detach()

    lr = cfg.learning_rate / n
    m = cfg.momentum_at(epoch)
    vw, vb, vc = velocity["W"], velocity["b"], velocity["c"]
    vw.mul_(m).addmm_(v.t(), pos, alpha=lr).addmm_(v_neg.t(), h_neg, alpha=-lr)
    if cfg.weight_decay:
        vw.add_(rbm.W, alpha=-cfg.learning_rate * cfg.weight_decay)
    vb.mul_(m).add_(v.sum(0) - v_neg.sum(0), alpha=lr)
    vc.mul_(m).add_(pos.sum(0) - h_neg.sum(0), alpha=lr)
    rbm.W.add_(vw)
    rbm.b.add_(vb)
    rbm.c.add_(vc)

    new_chains = None
    if cfg.persistent:
        if rbm.visible == "bernoulli":
            sample = v_neg
        else:
            # Persistent chains must be samples of the model, not means, to keep mixing.
            sample = v_neg + torch.randn(v_neg.shape, generator=generator, device=v.device, dtype=v.dtype)
        if chains is None:
            new_chains = sample
        else:
            new_chains = chains
            new_chains[:n] = sample
    return {"dr": dr_value}, new_chains


# ----------------------------------------------------------------------------- metrics

def _metric_generator(device: torch.device, layer: int, epoch: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(_METRIC_SEED + 1009 * layer + epoch)
    return g


@torch.no_grad()
def recon_error(rbm: RBM, X: torch.Tensor) -> float:
    """Mean squared error of the mean-field reconstruction over all of X."""
    total = 0.0
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        x = X[start:start + _EVAL_CHUNK]
        total += float(((rbm.reconstruct(x) - x) ** 2).sum())
    return total / max(1, X.numel())


@torch.no_grad()
def mean_free_energy(rbm: RBM, X: torch.Tensor) -> float:
    total = 0.0
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        total += float(rbm.free_energy(X[start:start + _EVAL_CHUNK]).sum())
    return total / max(1, X.shape[0])


@torch.no_grad()
def pseudo_log_likelihood(rbm: RBM, X: torch.Tensor, generator: torch.Generator) -> float:
    """Stochastic pseudo-log-likelihood (one random visible unit flipped per row), mean over rows."""
    idx = torch.randint(0, X.shape[1], (X.shape[0],), generator=generator, device=X.device)
    rows = torch.arange(X.shape[0], device=X.device)
    flipped = X.clone()
    flipped[rows, idx] = 1.0 - flipped[rows, idx]
    gap = rbm.free_energy(flipped) - rbm.free_energy(X)
    return float((X.shape[1] * F.logsigmoid(gap)).mean())


@torch.no_grad()
def cross_group_divergence(rbm: RBM, X: torch.Tensor, side: torch.Tensor) -> float:
    """Mean squared-Hellinger divergence of p(h|v) over cross-group pairs of X (0 if one group)."""
    return float(posterior_divergence(rbm.hidden_probs(X), side, divergence="hellinger", pairs="all"))


def epoch_metrics(rbm: RBM, X: torch.Tensor, diag_X: torch.Tensor, diag_side: torch.Tensor,
                  X_holdout: torch.Tensor | None, dr_mean: float, metric_gen: torch.Generator
                  ) -> dict[str, float]:
    metrics = {"recon_error": recon_error(rbm, X)}
    if X_holdout is not None and X_holdout.shape[0] > 0:
        # Same-size train sample: the gap then measures overfitting, not sample size.
        n = min(X_holdout.shape[0], X.shape[0])
        metrics["free_energy_gap"] = mean_free_energy(rbm, X_holdout[:n]) - mean_free_energy(rbm, X[:n])
    if rbm.visible == "bernoulli":
        metrics["pseudo_log_likelihood"] = pseudo_log_likelihood(rbm, diag_X, metric_gen)
    metrics["dr"] = dr_mean
    metrics["cross_group_divergence"] = cross_group_divergence(rbm, diag_X, diag_side)
    return metrics


# ----------------------------------------------------------------------------- trainer

def _layer_state(rbm: RBM, velocity: dict[str, torch.Tensor], chains: torch.Tensor | None,
                 generator: torch.Generator, layer: int, epoch: int,
                 extra: dict[str, Any] | None) -> dict[str, Any]:
    state: dict[str, Any] = dict(extra or {})
    state.update({
        "phase": "pretrain", "layer": layer, "epoch": epoch,
        "current.W": rbm.W.detach().clone(), "current.b": rbm.b.detach().clone(),
        "current.c": rbm.c.detach().clone(),
        "generator": generator.get_state(),
    })
    for key, t in velocity.items():
        state[f"current.velocity.{key}"] = t.clone()
    if chains is not None:
        state["current.chains"] = chains.clone()
    return state


def _restore(rbm: RBM, resume: dict[str, Any], generator: torch.Generator
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, int]:
    dev, dt = rbm.W.device, rbm.W.dtype
    with torch.no_grad():
        for name in ("W", "b", "c"):
            getattr(rbm, name).copy_(resume[f"current.{name}"].to(dev, dt))
    velocity = {k: resume[f"current.velocity.{k}"].to(dev, dt) for k in ("W", "b", "c")
                if f"current.velocity.{k}" in resume}
    chains = resume.get("current.chains")
    chains = chains.to(dev, dt).clone() if chains is not None else None
    generator.set_state(resume["generator"])
    return velocity, chains, int(resume["epoch"])


def train_rbm(cfg: RBMConfig, X: torch.Tensor, side: torch.Tensor | None, *, generator: torch.Generator,
              callback: Callback | None = None, layer: int = 0, X_holdout: torch.Tensor | None = None,
              resume: dict[str, Any] | None = None, progress_offset: float = 0.0,
              progress_scale: float = 1.0, state_extra: dict[str, Any] | None = None
              ) -> tuple[RBM, list[Event]]:
    """Train one RBM layer on X (N, D) with group labels ``side`` (N,) for ``cfg.epochs`` epochs.

    Calls ``callback.on_epoch_end`` after each epoch with metrics ``recon_error``,
    ``free_energy_gap`` (only with ``X_holdout``), ``pseudo_log_likelihood`` (Bernoulli visible
    only), ``dr`` and ``cross_group_divergence``; polls ``callback.should_stop()`` after every
    batch (raises ``TrainingStopped``). ``resume`` is an event state of this layer (keys
    ``current.*``, ``epoch``, ``generator``); ``state_extra`` is copied into every state.
    All random draws use ``generator``, which must live on X's device.
    """
    callback = callback or NullCallback()
    if side is not None and side.shape[0] != X.shape[0]:
        raise ValueError(f"side: expected {X.shape[0]} labels, got {side.shape[0]}")
    if cfg.visible == "bernoulli" and X.numel() and (float(X.min()) < 0.0 or float(X.max()) > 1.0):
        raise ValueError("X: bernoulli visible units need data in [0, 1]")
    rbm = RBM(X.shape[1], cfg.n_hidden, cfg.visible, init_std=cfg.init_std, generator=generator,
              device=X.device, dtype=X.dtype) if resume is None else \
        RBM(X.shape[1], cfg.n_hidden, cfg.visible, init_std=0.0, device=X.device, dtype=X.dtype)
    velocity: dict[str, torch.Tensor] = {}
    chains = None
    start_epoch = 0
    if resume is not None:
        velocity, chains, start_epoch = _restore(rbm, resume, generator)

    n = X.shape[0]
    diag_side = side if side is not None else torch.zeros(n, dtype=torch.long, device=X.device)
    # Fixed subsample for the diagnostics, chosen by a generator of its own.
    diag_idx = torch.randperm(n, generator=_metric_generator(X.device, layer, -1), device=X.device)[:_DIAG_ROWS]
    diag_X, diag_side = X[diag_idx], diag_side[diag_idx]

    events: list[Event] = []
    for epoch in range(start_epoch, cfg.epochs):
        perm = torch.randperm(n, generator=generator, device=X.device)
        dr_sum = torch.zeros((), device=X.device, dtype=X.dtype)
        n_batches = 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            stats, chains = cd_step(rbm, X[idx], side[idx] if side is not None else None, cfg, velocity,
                                    generator=generator, chains=chains, epoch=epoch)
            dr_sum += stats["dr"]
            n_batches += 1
            if callback.should_stop():
                raise TrainingStopped(f"stopped in pretraining layer {layer}, epoch {epoch + 1}")
        metrics = epoch_metrics(rbm, X, diag_X, diag_side, X_holdout, float(dr_sum) / max(1, n_batches),
                                _metric_generator(X.device, layer, epoch))
        progress = progress_offset + progress_scale * (epoch + 1) / cfg.epochs
        event = Event("pretrain", layer, epoch + 1, metrics, progress,
                      _layer_state(rbm, velocity, chains, generator, layer, epoch + 1, state_extra))
        events.append(event)
        callback.on_epoch_end(event)
    return rbm, events
