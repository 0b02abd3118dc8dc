"""Diversifying-regularization (DR) penalties, as defined in docs/dr.md ("DR as defined here").

Every penalty is the **mean over unordered cross-group pairs** P = {(p, q): p < q, s_p != s_q}
of a per-pair term **summed over units** (divided by H with ``normalize="per_unit"``).
|P| = 0 gives 0 (still connected to the input's graph, so ``backward`` works).

* ``posterior_divergence(mu, side, ...)``: generative DR between factorised Bernoulli posteriors
  with means ``mu`` (B, H). ``hellinger`` and ``jeffreys`` have exact O(B*H + G*H) closed forms
  (class sums); ``bhattacharyya`` and ``jensen_shannon`` with ``pairs="all"`` use an exact pass
  over pair blocks of bounded size. Gradients are analytic (no autograd graph of B*K*H
  intermediates), see ``posterior_divergence_and_grad``.
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

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

Pairs = Literal["all"] | int

# Largest number of elements in one block of per-pair tensors (a few such blocks are alive at
# once): keeps the exact all-pairs pass and the sampled pass at a few tens of MB whatever B is.
CHUNK_ELEMENTS = 2**22
# The sampled pass works on smaller blocks: (B, k, H) blocks that stay in cache are faster.
_SAMPLE_CHUNK_ELEMENTS = 2**19

__all__ = [
    "posterior_divergence",
    "posterior_divergence_and_grad",
    "feature_distance",
    "cross_group_pair_count",
]


# ----------------------------------------------------------------------------- group bookkeeping
class _Groups:
    """Group labels of one mini-batch, on the data's device.

    ``inv`` (B,) group index in 0..G-1, ``counts`` (G,), ``n_cross`` (B,) number of cross-group
    partners of each example, ``n_pairs`` (scalar, data dtype) = |P|.
    """

    def __init__(self, side: Tensor, batch: int, device: torch.device, dtype: torch.dtype):
        if side.dim() != 1 or side.numel() != batch:
            raise ValueError(f"side must have shape ({batch},), got {tuple(side.shape)}")
        # torch.unique synchronises with the device once (its output size is data-dependent);
        # this is the only host sync of the penalties.
        _, inv, counts = torch.unique(side.to(device), return_inverse=True, return_counts=True)
        self.inv = inv
        self.counts = counts
        self.n_groups = int(counts.numel())
        self.batch = batch
        self.n_cross_int = batch - counts[inv]
        self.n_cross = self.n_cross_int.to(dtype)
        self.n_pairs = self.n_cross.sum() / 2
        self._onehot: Tensor | None = None

    @property
    def has_pairs(self) -> bool:
        return self.n_groups >= 2

    def _one_hot(self, x: Tensor) -> Tensor | None:
        # A (B, G) one-hot matmul beats index_add/gather on CPU and GPU alike for small G;
        # beyond ~4M entries it would cost more memory than it saves time.
        if self.batch * self.n_groups > CHUNK_ELEMENTS:
            return None
        if self._onehot is None or self._onehot.dtype != x.dtype:
            self._onehot = F.one_hot(self.inv, self.n_groups).to(x.dtype)
        return self._onehot

    def class_sums(self, x: Tensor) -> Tensor:
        """(G, H) sums of the rows of x (B, H) by group; out-of-place so autograd can use it."""
        onehot = self._one_hot(x)
        if onehot is not None:
            return onehot.T @ x
        return x.new_zeros((self.n_groups, x.shape[1])).index_add(0, self.inv, x)

    def expand(self, per_group: Tensor) -> Tensor:
        """(B, H) rows of per_group (G, H) for each example's group."""
        onehot = self._one_hot(per_group)
        return onehot @ per_group if onehot is not None else per_group[self.inv]

    def sample_partners(self, k: int, generator: torch.Generator | None) -> Tensor:
        """(B, k) indices of partners drawn uniformly from the other groups, with replacement.

        Examples are sorted by group so that "the other groups" of an example of group g are
        the sorted positions outside [start_g, start_g + n_g): draw r in [0, B - n_g) and skip
        the block. Integers come from ``randint`` (not floor(rand * m), which can round up to m).
        """
        device = self.inv.device
        order = torch.argsort(self.inv, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        n_own = self.counts[self.inv][:, None]
        start = starts[self.inv][:, None]
        # With a single group there is nothing to draw from; any index will do since w_p = 0.
        span = self.n_cross_int.clamp_min(1)[:, None]
        gen_device = generator.device if generator is not None else device
        r = torch.randint(0, 2**62, (self.batch, k), generator=generator, device=gen_device)
        r = r.to(device) % span
        pos = torch.where(r < start, r, r + n_own).clamp_max(self.batch - 1)
        return order[pos]

    def draw_weights(self, k: int) -> Tensor:
        """(B,) weight w_p = n_p / (2 K |P|) of each of p's K draws (see module docstring)."""
        return self.n_cross / (2 * k * self.n_pairs.clamp_min(1))


def cross_group_pair_count(side: Tensor) -> int:
    """|P|: the number of unordered pairs of examples with different side labels."""
    side = torch.as_tensor(side)
    _, counts = torch.unique(side.reshape(-1), return_counts=True)
    n = int(side.numel())
    return (n * n - int((counts.long() ** 2).sum())) // 2


def _check_pairs(pairs: Pairs) -> None:
    if pairs == "all":
        return
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pairs must be 'all' or a positive int K, got {pairs!r}")


# ------------------------------------------------------------------------ closed-form pair sums
def _bilinear_cross_sum(x: Tensor, y: Tensor, groups: _Groups) -> tuple[Tensor, Tensor, Tensor]:
    """Q = sum over unordered cross pairs of (x_p - x_q) . (y_p - y_q), and dQ/dx, dQ/dy.

    Q = sum_p n_p x_p.y_p - sum_g X_g.(Y - Y_g) with X_g the class sums: O(B*H + G*H).
    x and y should be centred (Q is shift invariant) so the subtraction loses no precision.
    """
    xg, yg = groups.class_sums(x), groups.class_sums(y)
    xo = xg.sum(0) - xg  # (G, H): sum over the *other* groups
    yo = yg.sum(0) - yg
    nc = groups.n_cross[:, None]
    q = (nc * x * y).sum() - (xg * yo).sum()
    dq_dx = nc * y - groups.expand(yo)
    dq_dy = nc * x - groups.expand(xo)
    return q, dq_dx, dq_dy


def _hellinger_closed(m: Tensor, groups: _Groups) -> tuple[Tensor, Tensor]:
    """Sum over P of squared Hellinger, and its gradient w.r.t. m.

    1 - sqrt(ab) - sqrt((1-a)(1-b)) = ((sqrt a - sqrt b)^2 + (sqrt(1-a) - sqrt(1-b))^2) / 2
    because a + (1-a) = 1: a sum of two squared Euclidean distances, each a closed form.
    """
    s, t = m.sqrt(), (1 - m).sqrt()
    sc, tc = s - s.mean(0), t - t.mean(0)
    qs, gs, _ = _bilinear_cross_sum(sc, sc, groups)
    qt, gt, _ = _bilinear_cross_sum(tc, tc, groups)
    # d/dm of (qs + qt)/2 with dqs/ds = 2 gs, ds/dm = 1/(2s), dt/dm = -1/(2t)
    grad = gs / (2 * s) - gt / (2 * t)
    return (qs + qt) / 2, grad


def _jeffreys_closed(m: Tensor, groups: _Groups) -> tuple[Tensor, Tensor]:
    """Sum over P of sum_j (a - b)(logit a - logit b), and its gradient w.r.t. m."""
    logit = m.log() - torch.log1p(-m)
    q, dq_dm, dq_dl = _bilinear_cross_sum(m - m.mean(0), logit - logit.mean(0), groups)
    return q, dq_dm + dq_dl / (m * (1 - m))


_CLOSED = {"hellinger": _hellinger_closed, "jeffreys": _jeffreys_closed}


# ----------------------------------------------------------------- per-pair terms (pair kernels)
# A kernel has prep(m) -> (per-example feature tensors (B, H), per-example gradient factor or
# None), and pair(fa, fb, grads) -> (value summed over units, ga, gb): the per-unit derivatives
# of the term w.r.t. its first and second argument. fa are the first examples' features shaped
# (n, 1, H), fb the partners' shaped (n, k, H) or (1, c, H); eps is the clamp of mu.
#
# Hellinger and Bhattacharyya: with t = asin(sqrt(mu)), sqrt(ab) + sqrt((1-a)(1-b)) = cos(d),
# d = t_a - t_b. The per-unit terms are 1 - cos d and -ln cos d; their derivative w.r.t. t_a is
# g(d) = sin d or tan d, and -g(d) w.r.t. t_b ("antisymmetric"), so one scatter-add serves both
# sides, and dt/dmu = 1 / (2 sqrt(mu (1 - mu))) is applied once per example at the end.
# cos d and sin d come from products of s = sqrt(mu) and c = sqrt(1 - mu): on CPU these are far
# cheaper than trigonometric functions (measured: tan costs about 8 multiplications).
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
    units (a product is ~4x cheaper than a log), as many as cannot underflow the dtype."""
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


_KERNELS = {"hellinger": _Hellinger, "jeffreys": _Jeffreys, "bhattacharyya": _Bhattacharyya,
            "jensen_shannon": _JensenShannon}


def _all_pairs_exact(m: Tensor, groups: _Groups, kernel, grads: bool, eps: float) -> tuple[Tensor, Tensor | None]:
    """Sum over P of the kernel's term, by blocks of (rows x columns x H) <= CHUNK_ELEMENTS.

    Works on ordered pairs (each unordered pair twice, hence the halving); the term is
    symmetric, so p's gradient is 2 * sum_{q cross p} d/da term(p, q) and d/db is never needed.
    """
    b, h = m.shape
    feats, factor = kernel.prep(m)
    cols = min(b, max(1, CHUNK_ELEMENTS // h))
    rows = max(1, CHUNK_ELEMENTS // (cols * h))
    total = m.new_zeros(())
    grad = torch.zeros_like(m) if grads else None
    for r0 in range(0, b, rows):
        r1 = min(b, r0 + rows)
        fa = [f[r0:r1, None, :] for f in feats]
        for c0 in range(0, b, cols):
            c1 = min(b, c0 + cols)
            fb = [f[None, c0:c1, :] for f in feats]
            value, ga, _ = kernel.pair(fa, fb, grads, eps)
            cross = (groups.inv[r0:r1, None] != groups.inv[None, c0:c1]).to(m.dtype)
            total = total + (value * cross).sum() / 2
            if grads:
                grad[r0:r1] += torch.bmm(cross[:, None, :], ga).squeeze(1)
    if grads and factor is not None:
        grad = grad * factor
    return total, grad


def _sampled(m: Tensor, groups: _Groups, kernel, k: int, generator, grads: bool, eps: float):
    """Unbiased estimate of the sum over P (weights n_p / 2K per draw), and its exact gradient."""
    b, h = m.shape
    partners = groups.sample_partners(k, generator)
    w = groups.n_cross / (2 * k)
    w3 = w[:, None, None]
    feats, factor = kernel.prep(m)
    fa = [f[:, None, :] for f in feats]
    step = max(1, _SAMPLE_CHUNK_ELEMENTS // (b * h))
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
        # Each draw (p, q) adds w_p * d/da to p's row and w_p * d/db to q's (scatter-add).
        ga = ga * w3
        grad += ga.sum(1)
        if kernel.antisymmetric:
            grad.index_add_(0, flat, ga.reshape(-1, h), alpha=-1)
        else:
            grad.index_add_(0, flat, (gb * w3).reshape(-1, h))
    if grads and factor is not None:
        grad = grad * factor
    return total, grad


# ------------------------------------------------------------------------------------ public API
def _check_common(x: Tensor, name: str, pairs: Pairs, normalize: str) -> None:
    """The argument checks every penalty shares: pairs, normalize, a (B, H) input."""
    if normalize not in ("sum", "per_unit"):
        raise ValueError(f"normalize must be 'sum' or 'per_unit', got {normalize!r}")
    _check_pairs(pairs)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, H), got {tuple(x.shape)}")


def _divergence_and_grad(mu: Tensor, side: Tensor, divergence: str, pairs: Pairs,
                         generator, normalize: str, eps: float, grads: bool):
    if divergence not in _KERNELS:
        raise ValueError(f"divergence must be one of {tuple(_KERNELS)}, got {divergence!r}")
    _check_common(mu, "mu", pairs, normalize)
    mu = mu.detach()
    groups = _Groups(side, mu.shape[0], mu.device, mu.dtype)
    if not groups.has_pairs:
        return mu.new_zeros(()), (torch.zeros_like(mu) if grads else None)
    m = mu.clamp(eps, 1 - eps)
    if pairs == "all" and divergence in _CLOSED:
        total, grad = _CLOSED[divergence](m, groups)
    elif pairs == "all":
        total, grad = _all_pairs_exact(m, groups, _KERNELS[divergence], grads, eps)
    else:
        total, grad = _sampled(m, groups, _KERNELS[divergence], pairs, generator, grads, eps)
    scale = 1 / groups.n_pairs
    if normalize == "per_unit":
        scale = scale / mu.shape[1]
    value = total * scale
    if grads:
        # torch.clamp's convention: no gradient where the input was clamped (mu != m there;
        # NaN compares unequal too).
        grad = grad * ((mu == m) * scale)
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
                         eps: float = 1e-6) -> Tensor:
    """Mean over cross-group pairs of a divergence between Bernoulli posteriors (scalar).

    mu (B, H): posterior means in (0, 1) (clamped to [eps, 1 - eps]); side (B,): integer group
    labels (any values). divergence: hellinger | jeffreys | bhattacharyya | jensen_shannon.
    pairs: "all" (exact) or K (K sampled partners per example, unbiased, draws from
    ``generator``, which may live on another device than mu). Differentiable w.r.t. mu with an
    analytic gradient (first-order only).
    """
    def compute(grads: bool):
        return _divergence_and_grad(mu, side, divergence, pairs, generator, normalize, eps, grads)

    if mu.requires_grad and torch.is_grad_enabled():
        return _AnalyticGrad.apply(mu, compute)
    return compute(False)[0]


def posterior_divergence_and_grad(mu: Tensor, side: Tensor, *, divergence: str,
                                  pairs: Pairs = "all", generator: torch.Generator | None = None,
                                  normalize: str = "sum", eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(value, d value / d mu) without autograd: value scalar, gradient (B, H) like mu.

    Same arguments and value as ``posterior_divergence``; with pairs=K the gradient is that of
    the same sampled estimate (one set of draws for both).
    """
    value, grad = _divergence_and_grad(mu, side, divergence, pairs, generator, normalize, eps, True)
    return value, grad


def feature_distance(h: Tensor, side: Tensor, *, distance: str, pairs: Pairs = "all",
                     generator: torch.Generator | None = None, normalize: str = "sum") -> Tensor:
    """Mean over cross-group pairs of a distance between hidden features h (B, H) (scalar).

    distance: ``euclidean`` = ||h_p - h_q||^2 (summed over units; divided by H with
    normalize="per_unit"); ``cosine`` = 1 - cos(h_p, h_q), with a zero feature vector counting
    as orthogonal to everything (F.normalize's convention). Cosine is not a sum over units, so
    ``normalize`` leaves it unchanged (it is already bounded in [0, 2]).
    Squared euclidean is unbounded on unbounded features (ReLU): maximising it can blow the
    features up; prefer per_unit normalisation with a small weight, or cosine.
    Plain autograd (closed forms are O(B*H + G*H); pairs=K gathers B*K partner rows).
    """
    if distance not in ("euclidean", "cosine"):
        raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
    _check_common(h, "h", pairs, normalize)
    groups = _Groups(side, h.shape[0], h.device, h.dtype)
    if not groups.has_pairs:
        return h.sum() * 0
    x = F.normalize(h, dim=1) if distance == "cosine" else h - h.mean(0).detach()
    if pairs == "all":
        xg = groups.class_sums(x)
        cross_dot = (xg * (xg.sum(0) - xg)).sum() / 2  # sum over P of x_p . x_q
        if distance == "cosine":
            total = groups.n_pairs - cross_dot
        else:
            total = (groups.n_cross[:, None] * x * x).sum() - 2 * cross_dot
        value = total / groups.n_pairs
    else:
        partners = groups.sample_partners(pairs, generator)
        xb = x[partners]  # (B, K, H)
        if distance == "cosine":
            per_draw = 1 - (x[:, None, :] * xb).sum(-1)
        else:
            per_draw = (x[:, None, :] - xb).square().sum(-1)
        value = (per_draw.sum(1) * groups.draw_weights(pairs)).sum()
    if normalize == "per_unit" and distance == "euclidean":
        value = value / h.shape[1]
    return value
