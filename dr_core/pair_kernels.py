"""Per-pair DR terms ("pair kernels") and the two passes that sum them over pairs.

Used for the divergences without a closed form (bhattacharyya, jensen_shannon) with
``pairs="all"``, and for every divergence with ``pairs=K``. Both passes return the **sum** over
P (exact, or the unbiased estimate) and its gradient w.r.t. the clamped means; dr_core.regularizers
turns sums into means. Shapes: m (B, H) clamped posterior means, groups a ``Groups`` of the batch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from dr_core.groups import Groups, add_rows_

# Largest number of elements in one block of per-pair tensors (a few such blocks are alive at
# once): keeps the exact all-pairs pass and the sampled pass at a few tens of MB whatever B is.
CHUNK_ELEMENTS = 2**22
# The sampled pass works on smaller blocks: (B, k, H) blocks that stay in cache are faster.
SAMPLE_CHUNK_ELEMENTS = 2**19


# A kernel has prep(m) -> (per-example feature tensors (B, H), per-example gradient factor or
# None), and pair(fa, fb, grads) -> (value summed over units, ga, gb): the per-unit derivatives
# of the term w.r.t. its first and second argument. fa are the first examples' features shaped
# (n, 1, H), fb the partners' shaped (n, k, H) or (1, c, H); eps is the clamp of mu.
#
# Hellinger and Bhattacharyya: with t = asin(sqrt(mu)), sqrt(ab) + sqrt((1-a)(1-b)) = cos(d),
# d = t_a - t_b. The per-unit terms are 1 - cos d and -ln cos d; their derivative w.r.t. t_a is
# g(d) = sin d or tan d, and -g(d) w.r.t. t_b ("antisymmetric"), so one scatter-add serves both
# sides, and dt/dmu = 1 / (2 sqrt(mu (1 - mu))) is applied once per example at the end.
# cos d and sin d come from products of s = sqrt(mu) and c = sqrt(1 - mu): on CPU products are
# far cheaper than trigonometric functions.
class _AngleKernel:
    antisymmetric = True

    @staticmethod
    def prep(m):
        return (m.sqrt(), (1 - m).sqrt()), 0.5 * torch.rsqrt(m * (1 - m))


class _Hellinger(_AngleKernel):
    @staticmethod
    def pair(fa, fb, grads, eps):
        (sa, ca), (sb, cb) = fa, fb
        # 1 - cos d written as a sum of squares: no cancellation for close posteriors
        value = 0.5 * (torch.square(sa - sb) + torch.square(ca - cb)).sum(-1)
        if not grads:
            return value, None, None
        return value, torch.addcmul(sa * cb, ca, sb, value=-1), None


def _sum_log(x: Tensor, eps: float) -> Tensor:
    """sum(log x, -1) for x in [2 sqrt(eps), 1] with fewer logs: log of products of up to 8
    units (a product is much cheaper than a log), as many as cannot underflow the dtype."""
    h = x.shape[-1]
    floor = 2 * math.sqrt(eps * (1 - eps))  # smallest cos d once mu is clamped to [eps, 1-eps]
    most = int(math.log(torch.finfo(x.dtype).tiny) / math.log(floor)) if floor < 1 else 8
    block = next(k for k in (8, 4, 2, 1) if k <= most and h % k == 0)
    if block > 1:
        x = x.unflatten(-1, (block, h // block)).prod(-2)
    return x.log().sum(-1)


class _Bhattacharyya(_AngleKernel):
    @staticmethod
    def pair(fa, fb, grads, eps):
        (sa, ca), (sb, cb) = fa, fb
        cos_d = torch.addcmul(sa * sb, ca, cb)
        value = -_sum_log(cos_d, eps)
        if not grads:
            return value, None, None
        sin_d = torch.addcmul(sa * cb, ca, sb, value=-1)
        return value, sin_d.div_(cos_d), None


class _Jeffreys:
    antisymmetric = False

    @staticmethod
    def prep(m):
        return (m, m.log() - torch.log1p(-m), 1 / (m * (1 - m))), None

    @staticmethod
    def pair(fa, fb, grads, eps):
        a, la, ra = fa
        b, lb, rb = fb
        da, dl = a - b, la - lb
        value = (da * dl).sum(-1)
        if not grads:
            return value, None, None
        return value, dl + da * ra, -dl - da * rb


class _JensenShannon:
    """JS(Bern a, Bern b) = H((a+b)/2) - (H(a) + H(b))/2 (nats); d/da = (logit a - logit m)/2."""

    antisymmetric = False

    @staticmethod
    def prep(m):
        return (m / 2, m.logit() / 2, (torch.special.entr(m) + torch.special.entr(1 - m)) / 2), None

    @staticmethod
    def pair(fa, fb, grads, eps):
        half_a, half_la, half_ha = fa
        half_b, half_lb, half_hb = fb
        mid = half_a + half_b
        value = (torch.special.entr(mid) + torch.special.entr(1 - mid) - half_ha - half_hb).sum(-1)
        if not grads:
            return value, None, None
        half_lmid = mid.logit() / 2
        return value, half_la - half_lmid, half_lb - half_lmid


KERNELS = {"hellinger": _Hellinger, "jeffreys": _Jeffreys, "bhattacharyya": _Bhattacharyya,
           "jensen_shannon": _JensenShannon}


def _pair_once_weight(m: Tensor) -> Tensor:
    """The row weight whose objective is the plain sum over P (each pair counted once)."""
    return m.new_tensor(0.5)


def all_pairs_exact(m: Tensor, groups: Groups, kernel, grads: bool, eps: float,
                    row_w: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Sum over P of the kernel's term, by blocks of (rows x columns x H) <= CHUNK_ELEMENTS,
    and the gradient of the row-weighted objective sum_p row_w_p sum_{q cross p} term(p, q).

    ``row_w`` is 0-d (the same weight for every row) or (B,); None is 1/2, whose objective is
    the sum over P itself. The term is symmetric, so p's gradient is
    sum_{q cross p} (w_p + w_q) d/da term(p, q), and d/db is never needed.
    """
    b, h = m.shape
    row_w = _pair_once_weight(m) if row_w is None else row_w
    feats, factor = kernel.prep(m)
    cols = min(b, max(1, CHUNK_ELEMENTS // h))
    rows = max(1, CHUNK_ELEMENTS // (cols * h))
    total = m.new_zeros(())
    grad = torch.zeros_like(m) if grads else None
    w = row_w.expand(b)
    for r0 in range(0, b, rows):
        r1 = min(b, r0 + rows)
        fa = [f[r0:r1, None, :] for f in feats]
        for c0 in range(0, b, cols):
            c1 = min(b, c0 + cols)
            fb = [f[None, c0:c1, :] for f in feats]
            value, ga, _ = kernel.pair(fa, fb, grads, eps)
            cross = groups.cross_mask(slice(r0, r1), slice(c0, c1), m.dtype)
            total = total + (value * cross).sum() / 2
            if grads:
                pair_w = cross * (w[r0:r1, None] + w[None, c0:c1])
                grad[r0:r1] += torch.bmm(pair_w[:, None, :], ga).squeeze(1)
    if grads and factor is not None:
        grad = grad * factor
    return total, grad


def sampled_pairs(m: Tensor, groups: Groups, kernel, k: int, generator, grads: bool, eps: float,
                  row_w: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Unbiased estimate of the sum over P (weights n_p / 2K per draw), and the exact gradient
    of the same draws' estimate of sum_p row_w_p sum_{q cross p} term(p, q) (weights
    row_w_p n_p / K per draw; ``row_w`` as in ``all_pairs_exact``)."""
    b, h = m.shape
    row_w = _pair_once_weight(m) if row_w is None else row_w
    partners = groups.sample_partners(k, generator)
    w = groups.n_cross / (2 * k)
    w3 = (row_w * groups.n_cross / k)[:, None, None].expand(b, 1, 1)
    feats, factor = kernel.prep(m)
    fa = [f[:, None, :] for f in feats]
    step = max(1, SAMPLE_CHUNK_ELEMENTS // (b * h))
    total = m.new_zeros(())
    grad = torch.zeros_like(m) if grads else None
    for k0 in range(0, k, step):
        idx = partners[:, k0:k0 + step]
        flat = idx.reshape(-1)
        fb = [f.index_select(0, flat).view(b, -1, h) for f in feats]
        value, ga, gb = kernel.pair(fa, fb, grads, eps)
        total = total + (value.sum(1) * w).sum()
        if not grads:
            continue
        # Each draw (p, q) adds its weight * d/da to p's row and * d/db to q's (a scatter-add,
        # in a fixed order on every device: dr_core.groups.add_rows_).
        ga = ga * w3
        grad += ga.sum(1)
        if kernel.antisymmetric:
            add_rows_(grad, flat, ga.reshape(-1, h), alpha=-1)
        else:
            add_rows_(grad, flat, (gb * w3).reshape(-1, h))
    if grads and factor is not None:
        grad = grad * factor
    return total, grad
