"""Diversifying-regularization (DR) penalties, as defined in docs/dr.md ("DR as defined here").

Every penalty is the **mean over unordered cross-group pairs** P = {(p, q): p < q, s_p != s_q}
of a per-pair term **summed over units** (divided by H with ``normalize="per_unit"``).
Side labels are integers >= 0; -1 marks a row without a side value, which pairs with no row
(likelihood and classification terms still use it; DR does not). |P| = 0 gives 0 (still
connected to the input's graph, so ``backward`` works).

* ``posterior_divergence(mu, side, ...)``: generative DR between factorised Bernoulli posteriors
  with means ``mu`` (B, H), clamped to [EPS, 1 - EPS]. ``hellinger`` and ``jeffreys`` with
  ``pairs="all"`` have exact O(B*H + G*H) closed forms (sums over the other groups), written
  here once and used by the RBM trainer too; ``bhattacharyya`` and ``jensen_shannon`` with
  ``pairs="all"`` use an exact pass over pair blocks of bounded size (dr_core.pair_kernels).
  Gradients are analytic (no autograd graph of B*K*H intermediates), see
  ``posterior_divergence_and_grad``, which also gives the gradient w.r.t. the logit of mu.
* ``feature_distance(h, side, ...)``: discriminative DR between hidden features ``h`` (B, H):
  squared ``euclidean`` (closed form from class counts, sums, sums of squares) and ``cosine``
  (closed form from class sums of normalised features). Plain autograd.

``pairs=K`` (an int) pairs every example with K partners drawn uniformly, with replacement,
from the examples of the other groups. With n_p = number of cross-group partners of p,
  mean_P d = 1/(2|P|) * sum_p sum_{q cross p} d(p, q) = 1/(2|P|) * sum_p n_p * E_q[d(p, q)],
so weighting each of p's K draws by w_p = n_p / (2 K |P|) gives an **unbiased** estimate of the
exact mean (uniform per-draw weights would over-weight examples of large groups).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from dr_core.config import Pairs, check_pairs
from dr_core.groups import GatherRows, Groups, OtherGroupsSum, cross_group_pair_count
from dr_core.pair_kernels import KERNELS, all_pairs_exact, sampled_pairs

# Posterior means are clamped to [EPS, 1 - EPS]: keeps logits and 1/sqrt(mu (1 - mu)) finite.
EPS = 1e-6
# Devices where reading one value back to decide is cheaper than a boolean mask (CPU, where
# comparisons are slow and there is no device to wait for). Tests empty it to run the CUDA
# code path, which never reads a value back, on CPU.
MASK_CHECK_DEVICES = frozenset({"cpu"})

# What a gradient is taken with respect to: the means mu, or their logit z (mu = sigmoid(z)),
# i.e. d/dmu * mu (1 - mu), which is what an RBM's hidden-unit update needs.
GradWrt = Literal["mu", "logit"]

__all__ = [
    "EPS",
    "Pairs",
    "posterior_divergence",
    "posterior_divergence_and_grad",
    "feature_distance",
    "cross_group_pair_count",
]


# ---------------------------------------------------------------- closed forms (pairs="all")
# Both work on the clamped means c (B, H), which they overwrite: at B=128, H=2000 a DR step is
# memory-bound, so every (B, H) temporary is reused in place (about ten passes over (B, H),
# against ~50 for a textbook autograd version). ``scale`` (0-d) turns sums over P into means.
def _hellinger_closed(c: Tensor, groups: Groups, scale: Tensor, wrt: GradWrt | None
                      ) -> tuple[Tensor, Tensor | None]:
    """Mean over P of 1 - s_p.s_q - t_p.t_q, s = sqrt(c), t = sqrt(1 - c); and its gradient.

    With a_p = sum_{q cross p} (s_q - s_p) and b_p likewise for t, the sum over P is
      -1/2 sum_p (s_p.a_p + t_p.b_p)
    (not H n_p - s_p.sum_q s_q - t_p.sum_q t_q, though s^2 + t^2 = 1: that cancels
    catastrophically in float32 when posteriors are close, as they are early in training).
    d/dmu_p = (b_p s_p - a_p t_p) / (2 s_p t_p); times mu (1 - mu) = s^2 t^2 for the logit.
    """
    n = groups.n_cross[:, None]
    t = torch.rsub(c, 1.0).sqrt_()
    s = c.sqrt_()
    a = groups.other_groups_sum(s).addcmul_(s, n, value=-1.0)
    b = groups.other_groups_sum(t).addcmul_(t, n, value=-1.0)
    value = -0.5 * scale * (torch.vdot(s.view(-1), a.view(-1)) + torch.vdot(t.view(-1), b.view(-1)))
    if wrt is None:
        return value, None
    grad = b.mul_(s).addcmul_(a, t, value=-1.0)
    grad = grad.mul_(s).mul_(t) if wrt == "logit" else grad.div_(s).div_(t)
    return value, grad.mul_(0.5 * scale)


def _jeffreys_closed(c: Tensor, groups: Groups, scale: Tensor, wrt: GradWrt | None
                     ) -> tuple[Tensor, Tensor | None]:
    """Mean over P of (c_p - c_q).(logit c_p - logit c_q), and its gradient.

    With u_p = sum_{q cross p} (logit c_p - logit c_q) the sum over P is sum_p c_p.u_p, and
    d/dmu_p = u_p + (n_p c_p - M_p) / (c_p (1 - c_p)), M_p the sum of c over p's partners;
    times c (1 - c) for the logit.
    """
    n = groups.n_cross[:, None]
    logit = torch.logit(c)
    from_others = groups.other_groups_sum(logit)
    u = logit.mul_(n).sub_(from_others)
    value = scale * torch.vdot(c.view(-1), u.view(-1))
    if wrt is None:
        return value, None
    # Fresh (B, H) buffers cost page faults on CPU: from_others is free again, so reuse it.
    var = torch.addcmul(c, c, c, value=-1.0, out=from_others)  # c (1 - c)
    if wrt == "logit":
        grad = u.mul_(var)
        partners = groups.other_groups_sum(c, out=var)  # var is consumed: reuse it too
        grad.addcmul_(c, n).sub_(partners)
    else:
        grad = u.add_(torch.mul(c, n).sub_(groups.other_groups_sum(c)).div_(var))
    return value, grad.mul_(scale)


_CLOSED = {"hellinger": _hellinger_closed, "jeffreys": _jeffreys_closed}


def _zero_where_clamped(grad: Tensor, mu: Tensor, eps: float) -> None:
    """torch.clamp's convention: no gradient where mu lies outside [eps, 1 - eps].

    Boolean masks are slow on CPU (a comparison costs ~4x a multiplication there), so on CPU
    one is built only when some value really is outside. Elsewhere the mask is always applied:
    asking first would read a value back to the host in every step (MASK_CHECK_DEVICES).
    """
    if mu.device.type in MASK_CHECK_DEVICES:
        lo, hi = torch.aminmax(mu)
        if not bool((lo < eps) | (hi > 1 - eps)):
            return
    grad.masked_fill_((mu < eps) | (mu > 1 - eps), 0.0)


# ------------------------------------------------------------------------------------ public API
def _check_common(x: Tensor, name: str, pairs: Pairs, normalize: str) -> None:
    """The argument checks every penalty shares: pairs, normalize, a (B, H) input."""
    if normalize not in ("sum", "per_unit"):
        raise ValueError(f"normalize must be 'sum' or 'per_unit', got {normalize!r}")
    check_pairs(pairs)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, H), got {tuple(x.shape)}")


def _divergence_and_grad(mu: Tensor, side: Tensor, divergence: str, pairs: Pairs, generator,
                         normalize: str, eps: float, wrt: GradWrt | None,
                         n_groups: int | None = None) -> tuple[Tensor, Tensor | None]:
    """(mean over P, its gradient w.r.t. mu or logit mu, or None when ``wrt`` is None)."""
    if divergence not in KERNELS:
        raise ValueError(f"divergence must be one of {tuple(KERNELS)}, got {divergence!r}")
    if wrt not in (None, "mu", "logit"):
        raise ValueError(f"grad_wrt must be 'mu' or 'logit', got {wrt!r}")
    _check_common(mu, "mu", pairs, normalize)
    mu = mu.detach()
    groups = Groups(side, mu.shape[0], mu.device, mu.dtype, n_groups)
    # No branch on |P| = 0 (that would read it back to the host): every sum over P is then 0.
    scale = 1 / groups.n_pairs.clamp_min(1)
    if normalize == "per_unit":
        scale = scale / mu.shape[1]
    c = mu.clamp(eps, 1 - eps)
    if pairs == "all" and divergence in _CLOSED:
        value, grad = _CLOSED[divergence](c, groups, scale, wrt)
    else:
        kernel, grads = KERNELS[divergence], wrt is not None
        if pairs == "all":
            total, grad = all_pairs_exact(c, groups, kernel, grads, eps)
        else:
            total, grad = sampled_pairs(c, groups, kernel, pairs, generator, grads, eps)
        value = total * scale
        if grad is not None:  # both passes hand back a fresh buffer: scaled in place
            grad = grad.mul_(scale) if wrt == "mu" else grad.mul_(scale).mul_(c - c * c)
    if grad is not None:
        _zero_where_clamped(grad, mu, eps)
    return value, grad


class _AnalyticGrad(torch.autograd.Function):
    """Scalar value with a gradient computed alongside it in forward (no per-pair graph kept)."""

    @staticmethod
    def forward(ctx, mu, compute: Callable[[bool], tuple[Tensor, Tensor | None]]):
        value, grad = compute(ctx.needs_input_grad[0])
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


def posterior_divergence(mu: Tensor, side: Tensor, *, divergence: str, pairs: Pairs = "all",
                         generator: torch.Generator | None = None, normalize: str = "sum",
                         eps: float = EPS, n_groups: int | None = None) -> Tensor:
    """Mean over cross-group pairs of a divergence between Bernoulli posteriors (scalar).

    mu (B, H): posterior means in (0, 1) (clamped to [eps, 1 - eps]); side (B,): integer group
    labels >= 0, -1 for a row without one. With ``n_groups`` given, side must already be dense
    ids in [-1, n_groups) (``dr_core.groups.group_ids``) and nothing is read back to the host.
    divergence: hellinger | jeffreys | bhattacharyya | jensen_shannon.
    pairs: "all" (exact) or K (K sampled partners per example, unbiased, draws from
    ``generator``, which may live on another device than mu). Differentiable w.r.t. mu with an
    analytic gradient (first-order only).
    """
    def compute(grads: bool):
        return _divergence_and_grad(mu, side, divergence, pairs, generator, normalize, eps,
                                    "mu" if grads else None, n_groups)

    if mu.requires_grad and torch.is_grad_enabled():
        return _AnalyticGrad.apply(mu, compute)
    return compute(False)[0]


def posterior_divergence_and_grad(mu: Tensor, side: Tensor, *, divergence: str,
                                  pairs: Pairs = "all", generator: torch.Generator | None = None,
                                  normalize: str = "sum", eps: float = EPS,
                                  grad_wrt: GradWrt = "mu", n_groups: int | None = None
                                  ) -> tuple[Tensor, Tensor]:
    """(value, gradient) without autograd: value 0-d, gradient (B, H) like mu, a fresh tensor.

    Same arguments and value as ``posterior_divergence``; with pairs=K the gradient is that of
    the same sampled estimate (one set of draws for both). ``grad_wrt="logit"`` gives
    d value / dz for mu = sigmoid(z), i.e. d value / dmu * mu (1 - mu), computed without the
    division and re-multiplication (the RBM's DR update). Either way the gradient is 0 where
    mu was clamped, and on rows without a group.
    """
    value, grad = _divergence_and_grad(mu, side, divergence, pairs, generator, normalize, eps,
                                       grad_wrt, n_groups)
    return value, grad


def feature_distance(h: Tensor, side: Tensor, *, distance: str, pairs: Pairs = "all",
                     generator: torch.Generator | None = None, normalize: str = "sum",
                     n_groups: int | None = None) -> Tensor:
    """Mean over cross-group pairs of a distance between hidden features h (B, H) (scalar).

    side and n_groups as in ``posterior_divergence`` (rows with side -1 pair with nothing).
    distance: ``euclidean`` = ||h_p - h_q||^2 (summed over units; divided by H with
    normalize="per_unit"); ``cosine`` = 1 - cos(h_p, h_q), with a zero feature vector counting
    as orthogonal to everything (F.normalize's convention). Cosine is not a sum over units, so
    ``normalize`` leaves it unchanged (it is already bounded in [0, 2]).
    Squared euclidean is unbounded on unbounded features (ReLU): maximising it can blow the
    features up; prefer per_unit normalisation with a small weight, or cosine.
    Autograd through deterministic sums (closed forms are O(B*H + G*H); pairs=K gathers B*K
    partner rows, and scatters their gradients back in a fixed order).
    """
    if distance not in ("euclidean", "cosine"):
        raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
    _check_common(h, "h", pairs, normalize)
    groups = Groups(side, h.shape[0], h.device, h.dtype, n_groups)
    x = F.normalize(h, dim=1) if distance == "cosine" else h - h.mean(0).detach()
    if pairs == "all":
        # sum over P of x_p . x_q = 1/2 sum_p x_p . (sum of x over p's cross-group partners)
        cross_dot = (x * OtherGroupsSum.apply(x, groups)).sum() / 2
        if distance == "cosine":
            total = groups.n_pairs - cross_dot
        else:
            total = (groups.n_cross[:, None] * x * x).sum() - 2 * cross_dot
        value = total / groups.n_pairs.clamp_min(1)
    else:
        partners = groups.sample_partners(pairs, generator)
        xb = GatherRows.apply(x, partners.reshape(-1)).view(*partners.shape, -1)  # (B, K, H)
        if distance == "cosine":
            per_draw = 1 - (x[:, None, :] * xb).sum(-1)
        else:
            per_draw = (x[:, None, :] - xb).square().sum(-1)
        value = (per_draw.sum(1) * groups.draw_weights(pairs)).sum()
    if normalize == "per_unit" and distance == "euclidean":
        value = value / h.shape[1]
    return value
