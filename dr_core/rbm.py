"""Restricted Boltzmann machines with Bernoulli hidden units, trained by CD-k / PCD with generative DR.

Conventions: ``v`` is (B, D), ``W`` is (D, H) and the hidden pre-activation is ``c + v @ W``.
Visible units are ``"bernoulli"`` (data in [0, 1]) or ``"gaussian"`` (unit variance; the data
must be standardised). Training updates are written by hand (no autograd) so that a plain CD
step is three matrix products and a few element-wise ops. The epoch loop is
``dr_core.rbm_trainer.train_rbm``; its metrics are in ``dr_core.rbm_metrics``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.groups import Groups
from dr_core.regularizers import posterior_divergence_and_grad


def bernoulli_sample(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A 0/1 sample of independent Bernoulli(p) units, like ``p``: 1 where a uniform draw is
    below p. ``torch.bernoulli`` draws the same law element by element on the CPU, several
    times slower than one vectorised uniform draw and a compare."""
    return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype).lt_(p)


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
        return mu, bernoulli_sample(mu, generator)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h], (B, D): sigmoid for Bernoulli units, linear for Gaussian ones."""
        pre = torch.addmm(self.b, h, self.W.t())
        return torch.sigmoid(pre) if self.visible == "bernoulli" else pre

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sample of p(v | h), (B, D)."""
        mean = self.visible_mean(h)
        if self.visible == "bernoulli":
            return bernoulli_sample(mean, generator)
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


# ----------------------------------------------------------------------------- one CD-k step
# cd_step = negative_phase + positive_statistics (where DR enters) + apply_update.

def negative_phase(rbm: RBM, mu: torch.Tensor, cfg: RBMConfig, generator: torch.Generator,
                   chains: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(v_neg (B, D), h_neg (B, H) hidden means): the end of a k-step Gibbs chain.

    The chain starts from h ~ p(h | v) of the data, whose means are ``mu`` (B, H) (CD), or
    from the first B persistent particles ``chains`` (PCD when ``cfg.persistent``).
    """
    if cfg.persistent and chains is not None:
        h = bernoulli_sample(rbm.hidden_probs(chains[:mu.shape[0]]), generator)
    else:
        h = bernoulli_sample(mu, generator)
    for step in range(cfg.cd_k):
        # Gaussian units: the noise-free mean is the usual choice (Hinton's guide), it
        # keeps the negative statistics low-variance on standardised data.
        v_neg = rbm.sample_visible(h, generator) if rbm.visible == "bernoulli" else rbm.visible_mean(h)
        h_neg = rbm.hidden_probs(v_neg)
        if step + 1 < cfg.cd_k:
            h = bernoulli_sample(h_neg, generator)
    return v_neg, h_neg


def positive_statistics(mu: torch.Tensor, side: torch.Tensor | Groups | None,
                        dr: PosteriorDRConfig | None,
                        generator: torch.Generator, n_groups: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden statistics of the positive phase (B, H), DR value (0-d)).

    ``side`` (B,) group labels, -1 for rows without one (they get no DR gradient); with
    ``n_groups``, dense ids from ``dr_core.groups.group_ids`` (no host read); or the batch's
    ``Groups`` already built (``Groups.of_batches``, what the trainer passes).

    Without DR (``dr`` None or weight 0, or no side labels) they are ``mu`` and 0, and no
    random number is drawn, so lambda = 0 is plain CD bit for bit. With DR the statistics are
    mu + lambda B dR/dz (z the hidden pre-activations, R the row mean of the divergence,
    ``posterior_divergence_and_grad``): then the update's v^T h_pos / B carries
    lambda dR/dW = lambda v^T dR/dz, and its sum over the batch lambda dR/dc, without an extra
    (D, B) x (B, H) product. A row's DR push is lambda times the mean gradient against its
    partners, as large as its likelihood push whatever the number of pairs in the batch. The
    DR value returned is the divergence's own: the mean over the batch's cross-group pairs.
    """
    if dr is None or not dr.active or side is None:
        return mu, mu.new_zeros(())
    value, h_pos = posterior_divergence_and_grad(
        mu, side, divergence=dr.divergence, pairs=dr.pairs, generator=generator,
        normalize=dr.normalize, grad_wrt="logit", n_groups=n_groups, grad_of="row_mean",
        grad_scale=dr.weight * mu.shape[0], add_to=mu)
    return h_pos, value


def apply_update(rbm: RBM, velocity: dict[str, torch.Tensor], cfg: RBMConfig, epoch: int,
                 positive: tuple[torch.Tensor, torch.Tensor],
                 negative: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Momentum ascent step on W, b, c in place, from (v (B, D), h (B, H)) statistics.

    ``velocity`` (keys W, b, c, created when missing) is updated in place; momentum is
    ``cfg.momentum_at(epoch)``; L2 decay applies to W only.
    """
    (v, h_pos), (v_neg, h_neg) = positive, negative
    for key, p in (("W", rbm.W), ("b", rbm.b), ("c", rbm.c)):
        if key not in velocity:
            velocity[key] = torch.zeros_like(p)
    lr = cfg.learning_rate / v.shape[0]
    m = cfg.momentum_at(epoch)
    vw, vb, vc = velocity["W"], velocity["b"], velocity["c"]
    vw.mul_(m).addmm_(v.t(), h_pos, alpha=lr).addmm_(v_neg.t(), h_neg, alpha=-lr)
    if cfg.weight_decay:
        vw.add_(rbm.W, alpha=-cfg.learning_rate * cfg.weight_decay)
    vb.mul_(m).add_(v.sum(0) - v_neg.sum(0), alpha=lr)
    vc.mul_(m).add_(h_pos.sum(0) - h_neg.sum(0), alpha=lr)
    rbm.W.add_(vw)
    rbm.b.add_(vb)
    rbm.c.add_(vc)


def _persist(rbm: RBM, v_neg: torch.Tensor, chains: torch.Tensor | None,
             generator: torch.Generator) -> torch.Tensor:
    """The persistent particles after this step: v_neg written over the first B (in place)."""
    sample = v_neg
    if rbm.visible == "gaussian":
        # Persistent chains must be samples of the model, not means, to keep mixing.
        sample = v_neg + torch.randn(v_neg.shape, generator=generator, device=v_neg.device,
                                     dtype=v_neg.dtype)
    if chains is None:
        return sample
    chains[:v_neg.shape[0]] = sample
    return chains


def cd_step(rbm: RBM, v: torch.Tensor, side: torch.Tensor | Groups | None, cfg: RBMConfig,
            velocity: dict[str, torch.Tensor], *, generator: torch.Generator,
            chains: torch.Tensor | None = None, epoch: int = 0, n_groups: int | None = None
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One CD-k (or PCD-k when ``cfg.persistent``) update of ``rbm`` in place on the batch ``v`` (B, D).

    Ascends mean log-likelihood + lambda * DR(mu(v), side) (side (B,), the batch's ``Groups``,
    or None; -1 marks a row without a group, ``n_groups`` as in ``positive_statistics``) with momentum
    ``cfg.momentum_at(epoch)`` and L2 decay on W. ``velocity`` (keys W, b, c) is updated in
    place (created when empty). ``chains`` are the persistent fantasy particles (n_chains, D),
    n_chains >= B; None starts them from the data. Returns ({"dr": 0-d tensor}, chains);
    chains is None for plain CD. Random draws, in order: the negative phase, then DR's
    sampled pairs (if any), then the Gaussian PCD noise (if any).
    """
    mu = rbm.hidden_probs(v)
    v_neg, h_neg = negative_phase(rbm, mu, cfg, generator, chains)
    h_pos, dr_value = positive_statistics(mu, side, cfg.dr, generator, n_groups)
    apply_update(rbm, velocity, cfg, epoch, (v, h_pos), (v_neg, h_neg))
    new_chains = _persist(rbm, v_neg, chains, generator) if cfg.persistent else None
    return {"dr": dr_value}, new_chains
