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
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from dr_core.config import DISTANCES, DIVERGENCES, NORMALIZE, Pairs, check_pairs
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
# Which objective a gradient is of: the divergence's value (the mean over P), or the row mean
# that the RBM update ascends (see _group_weights and docs/dr.md).
GradOf = Literal["pair_mean", "row_mean"]
GRAD_OF = get_args(GradOf)
# A closed form hands its gradient (a scratch buffer), an optional factor of the same shape and
# a constant to this, which applies the clamp's mask, grad_scale and add_to (_finish_grad).
Finish = Callable[..., Tensor]

__all__ = [
    "EPS",
    "Pairs",
    "posterior_divergence",
    "posterior_divergence_and_grad",
    "feature_distance",
    "cross_group_pair_count",
]


# ---------------------------------------------------------------- closed forms (pairs="all")
# Both work on the clamped means c (B, H). The value is always the mean over P, divided by
# ``units`` (H with normalize="per_unit", else 1); the gradient is that of the row-weighted
# objective sum_p w_p sum_{q cross p} d(p, q), given as ``pair_w`` (``_pair_weights``: a row's
# weight depends on its group only), and is handed to ``finish`` (``_finish_grad``). Sums over a
# row's partners come from per-group tables (``Groups.slot_sums``, ``Groups.group_tables``): one
# pass over the batch per table.
def _cross_differences(x: Tensor, others: Tensor, groups: Groups) -> Tensor:
    """(B, H): U_p = sum_{q cross p} (x_p - x_q) = n_p x_p - (sum of x over p's partners),
    given ``others`` (G + 1, H), the table of sums of x outside each group.

    Written as a difference of sums rather than expanded into squares: for close posteriors
    an expanded sum of squares cancels catastrophically in float32.
    """
    return torch.addcmul(groups.per_row(others.neg()), x, groups.n_cross[:, None])


def _pair_weights(groups: Groups, scale: Tensor, grad_of: GradOf, n_units: int,
                  normalize: str) -> Tensor:
    """(G + 1, G + 1): w_g + w_g' for two different slots that both carry a group, else 0,
    with w the ``_group_weights``.

    The gradient of sum_p w_p sum_{q cross p} d(p, q) w.r.t. x_p sums (w_p + w_q) times the
    term's derivative over p's partners q, so with this table a partner sum over a batch is a
    product with a per-slot table (``_weighted_differences``). Both objectives' tables come
    ready-made from the batch's ``Groups``: ``scale`` times ``cross_slots`` for the pair mean
    (w = scale / 2 for every row), ``row_pair_weights`` for the row mean.
    """
    if grad_of == "pair_mean":
        return groups.cross_slots * scale
    pair_w = groups.row_pair_weights
    return pair_w / n_units if normalize == "per_unit" else pair_w


def _weighted_differences(x: Tensor, sums: Tensor, pair_w: Tensor, groups: Groups) -> Tensor:
    """(B, H): D(x)_p = sum_{q cross p} (w_p + w_q) (x_p - x_q) = a_p x_p - R_p, given x's
    per-slot ``sums`` and the ``_pair_weights``: a = pair_w @ counts (per slot),
    R = pair_w @ sums (0 for a row without a group)."""
    a = pair_w @ groups.counts.to(pair_w.dtype)
    return torch.addcmul(groups.per_row(torch.mm(pair_w, sums).neg_()), x,
                         groups.per_row(a)[:, None])


def _hellinger_closed(c: Tensor, groups: Groups, units: int, pair_w: Tensor,
                      wrt: GradWrt | None, finish: Finish) -> tuple[Tensor, Tensor | None]:
    """Mean over P of 1 - s_p.s_q - t_p.t_q, s = sqrt(c), t = sqrt(1 - c) (divided by
    ``units``); and the gradient, handed to ``finish``.

    s and t side by side, st = [s | t] (B, 2H), share every table and pass; the batch's
    ``partner_tables`` give the tables of the value and of the gradient.

    The value: sum over P of st_p.st_q = 1/2 sum_g sums_g.others_g, and s^2 + t^2 = 1 per unit,
    so the sum over P is H |P| - 1/2 sum_g sums_g.others_g. The two terms nearly cancel for
    close posteriors, so they are summed and subtracted in float64 (the products of table
    entries are rounded one by one, at random), and only then divided by |P| (a rounded 1/|P|
    in the tables would scale both terms by the same error, which the difference does not
    divide away): what is left is the rounding of s, t and of the tables' sums, as in any form
    of the same sums, and no pass over the batch is needed.

    The gradient: with D(x) = _weighted_differences(x) = a x - R(x), R(x) = pair_w @ (sums of
    x), the weighted objective's d/dmu_p = (D(s)_p t_p - D(t)_p s_p) / (2 s_p t_p), where the
    a s t terms cancel: (R(t)_p s_p - R(s)_p t_p) / (2 s_p t_p); times mu (1 - mu) = s^2 t^2
    for the logit.
    """
    h = c.shape[1]
    st = c.new_empty(c.shape[0], 2 * h)
    s, t = st.chunk(2, 1)
    s.copy_(c)  # then one square root over the whole contiguous buffer
    torch.sub(1.0, c, out=t)
    st.sqrt_()
    # dots: -(sums over each slot's partners) / 2; r = [R(s) | R(t)]
    sums, dots, r = groups.partner_tables(st, pair_w)
    value = torch.mul(sums, dots).sum(dtype=torch.float64).add_(groups.n_pairs, alpha=h)
    value = value.mul_(groups.pair_scale)
    value = (value.div_(units) if units != 1 else value).to(c.dtype)
    if wrt is None:
        return value, None
    r_s, r_t = groups.per_row(r).chunk(2, 1)
    x = r_t.mul_(s).addcmul_(r_s, t, value=-1.0)  # R(t) s - R(s) t, in the gathered buffer
    factor = s.mul_(t) if wrt == "logit" else s.mul_(t).reciprocal_()
    return value, finish(x, factor, 0.5)


def _jeffreys_closed(c: Tensor, groups: Groups, units: int, pair_w: Tensor,
                     wrt: GradWrt | None, finish: Finish) -> tuple[Tensor, Tensor | None]:
    """Mean over P of (c_p - c_q).(logit c_p - logit c_q) (divided by ``units``), and the
    gradient, handed to ``finish``.

    With l = logit c, the sum over P is sum_p c_p.U(l)_p; the weighted objective's
    d/dmu_p = D(l)_p + D(c)_p / (c_p (1 - c_p)); times c (1 - c) for the logit.
    """
    logit = torch.logit(c)
    l_sums, l_others = groups.group_tables(logit)
    value = groups.pair_scale * torch.vdot(
        c.view(-1), _cross_differences(logit, l_others, groups).view(-1))
    value = value / units if units != 1 else value
    if wrt is None:
        return value, None
    dl = _weighted_differences(logit, l_sums, pair_w, groups)
    dc = _weighted_differences(c, groups.slot_sums(c), pair_w, groups)
    var = c - c * c
    grad = dl.mul_(var).add_(dc) if wrt == "logit" else dl.add_(dc.div_(var))
    return value, finish(grad)


_CLOSED = {"hellinger": _hellinger_closed, "jeffreys": _jeffreys_closed}


def _group_weights(groups: Groups, scale: Tensor, grad_of: GradOf, n_units: int,
                   normalize: str) -> Tensor:
    """(G + 1,): w of the objective sum_p w_p sum_{q cross p} d(p, q) whose gradient is
    returned, for the rows of each slot (a row without a group has no pair: its weight never
    counts).

    "pair_mean": w = scale / 2 for every row: the objective is the mean over P itself.
    "row_mean": w_p = 1 / (B n_p) (0 for a row without partners): the objective is
    (1/B) sum_p (mean of d over p's partners), whose push on a row does not grow when its
    batch holds few pairs (the pair mean's does: a lone pair carries the whole mean).
    """
    if grad_of == "pair_mean":
        return (0.5 * scale).expand(groups.slot_partners.shape)
    w = groups.row_weight  # 1 / (B n_p), 0 where n_p = 0
    return w / n_units if normalize == "per_unit" else w


def _needs_clamp(mu: Tensor, eps: float) -> bool:
    """Whether some mean lies outside [eps, 1 - eps]. Boolean masks are slow on CPU (a
    comparison costs more than a multiplication there), so there one read of the extremes
    decides, and in-range means skip the clamp and the mask. Elsewhere always True: asking
    would read a value back to the host in every step (MASK_CHECK_DEVICES)."""
    if mu.device.type not in MASK_CHECK_DEVICES:
        return True
    lo, hi = torch.aminmax(mu)
    return float(lo) < eps or float(hi) > 1 - eps


# ------------------------------------------------------------------------------------ public API
def _check_common(x: Tensor, name: str, pairs: Pairs, normalize: str) -> None:
    """The argument checks every penalty shares: pairs, normalize, a (B, H) input."""
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    check_pairs(pairs)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, H), got {tuple(x.shape)}")


def _finish_grad(grad: Tensor, factor: Tensor | None, alpha: float,
                 out_of_range: Tensor | None, add_to: Tensor | None) -> Tensor:
    """add_to + alpha * grad * factor, a fresh tensor (alpha * grad * factor without
    ``add_to``; ``factor`` None is 1), and 0 where ``out_of_range`` (torch.clamp's convention:
    no gradient where a mean was clamped). ``grad`` and ``factor`` are scratch buffers."""
    if out_of_range is not None:
        (grad if factor is None else factor).masked_fill_(out_of_range, 0.0)
    if add_to is not None:
        return torch.add(add_to, grad, alpha=alpha) if factor is None else \
            torch.addcmul(add_to, grad, factor, value=alpha)
    if factor is not None:
        grad = torch.mul(grad, factor)
    return grad.mul_(alpha) if alpha != 1.0 else grad


def _divergence_and_grad(mu: Tensor, side: Tensor | Groups, divergence: str, pairs: Pairs, generator,
                         normalize: str, eps: float, wrt: GradWrt | None,
                         n_groups: int | None = None, grad_of: GradOf = "pair_mean",
                         grad_scale: float = 1.0, add_to: Tensor | None = None
                         ) -> tuple[Tensor, Tensor | None]:
    """(mean over P, add_to + grad_scale * the gradient of ``grad_of``'s objective w.r.t. mu
    or logit mu (without ``add_to``: grad_scale * the gradient), or None when ``wrt`` is
    None)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if wrt not in (None, "mu", "logit"):
        raise ValueError(f"grad_wrt must be 'mu' or 'logit', got {wrt!r}")
    if grad_of not in GRAD_OF:
        raise ValueError(f"grad_of must be one of {GRAD_OF}, got {grad_of!r}")
    _check_common(mu, "mu", pairs, normalize)
    if add_to is not None and add_to.shape != mu.shape:
        raise ValueError(f"add_to must have mu's shape {tuple(mu.shape)}, got {tuple(add_to.shape)}")
    mu = mu.detach() if mu.requires_grad else mu  # a detach is one more operation per step
    groups = side if isinstance(side, Groups) else \
        Groups(side, mu.shape[0], mu.device, mu.dtype, n_groups)
    units = mu.shape[1] if normalize == "per_unit" else 1
    # No branch on |P| = 0 (that would read it back to the host): every sum over P is then 0.
    scale = groups.pair_scale / units if units != 1 else groups.pair_scale
    clamped = _needs_clamp(mu, eps)
    c = mu.clamp(eps, 1 - eps) if clamped else mu  # read-only from here on
    out_of_range = (mu < eps) | (mu > 1 - eps) if clamped and wrt is not None else None

    def finish(grad: Tensor, factor: Tensor | None = None, alpha: float = 1.0) -> Tensor:
        return _finish_grad(grad, factor, alpha * grad_scale, out_of_range, add_to)

    if pairs == "all" and divergence in _CLOSED:
        pair_w = _pair_weights(groups, scale, grad_of, mu.shape[1], normalize)
        return _CLOSED[divergence](c, groups, units, pair_w, wrt, finish)
    kernel, grads = KERNELS[divergence], wrt is not None
    group_w = _group_weights(groups, scale, grad_of, mu.shape[1], normalize)
    row_w = groups.per_row(group_w) if grad_of == "row_mean" else 0.5 * scale
    if pairs == "all":
        total, grad = all_pairs_exact(c, groups, kernel, grads, eps, row_w)
    else:
        total, grad = sampled_pairs(c, groups, kernel, pairs, generator, grads, eps, row_w)
    value = total * scale
    if grad is None:
        return value, None
    # both passes hand back a fresh buffer
    return value, finish(grad.mul_(c - c * c) if wrt == "logit" else grad)


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


def posterior_divergence_and_grad(mu: Tensor, side: Tensor | Groups, *, divergence: str,
                                  pairs: Pairs = "all", generator: torch.Generator | None = None,
                                  normalize: str = "sum", eps: float = EPS,
                                  grad_wrt: GradWrt = "mu", n_groups: int | None = None,
                                  grad_of: GradOf = "pair_mean", grad_scale: float = 1.0,
                                  add_to: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(value, gradient) without autograd: value 0-d, gradient (B, H) like mu, a fresh tensor.

    Same arguments and value as ``posterior_divergence`` (the mean over P); ``side`` may also
    be the batch's ``Groups`` already built (``Groups.of_batches``: what the RBM trainer
    passes, so that a step does no group bookkeeping). The gradient is
    that of the value (``grad_of="pair_mean"``), or of the row mean
    R = (1/B) sum_p (mean of d(p, q) over p's cross-group partners q) (``"row_mean"``, what
    the RBM update ascends: a row's push is the same whatever the number of pairs in its
    batch; R equals the mean over P on batches whose rows all have as many partners). With
    pairs=K the gradient is that of the same draws' estimate. ``grad_wrt="logit"`` gives
    d/dz for mu = sigmoid(z), i.e. d/dmu * mu (1 - mu), computed without the division and
    re-multiplication (the RBM's DR update). Either way the gradient is 0 where mu was
    clamped, and on rows without a group. The second result is grad_scale times the gradient,
    or with ``add_to`` (B, H), add_to + grad_scale * the gradient (the RBM's positive
    statistics, without a pass of their own).
    """
    value, grad = _divergence_and_grad(mu, side, divergence, pairs, generator, normalize, eps,
                                       grad_wrt, n_groups, grad_of, grad_scale, add_to)
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
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
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
