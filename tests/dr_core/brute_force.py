"""Brute-force twins of the DR penalties: plain Python loops over every pair, straight from the
per-unit formulas of docs/dr.md. Slow (O(B^2 H)), obviously right, differentiable by autograd."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _bern_entropy(x: Tensor) -> Tensor:
    return -(x * torch.log(x) + (1 - x) * torch.log(1 - x))


def pair_divergence(a: Tensor, b: Tensor, divergence: str) -> Tensor:
    """Per-unit divergence between Bern(a) and Bern(b), summed over units."""
    if divergence == "hellinger":
        term = 1 - torch.sqrt(a * b) - torch.sqrt((1 - a) * (1 - b))
    elif divergence == "jeffreys":
        # symmetric KL: KL(a||b) + KL(b||a), written out from the definition
        kl_ab = a * torch.log(a / b) + (1 - a) * torch.log((1 - a) / (1 - b))
        kl_ba = b * torch.log(b / a) + (1 - b) * torch.log((1 - b) / (1 - a))
        term = kl_ab + kl_ba
    elif divergence == "bhattacharyya":
        term = -torch.log(torch.sqrt(a * b) + torch.sqrt((1 - a) * (1 - b)))
    elif divergence == "jensen_shannon":
        m = (a + b) / 2
        kl_am = a * torch.log(a / m) + (1 - a) * torch.log((1 - a) / (1 - m))
        kl_bm = b * torch.log(b / m) + (1 - b) * torch.log((1 - b) / (1 - m))
        term = (kl_am + kl_bm) / 2
    else:
        raise ValueError(divergence)
    return term.sum()


def pair_distance(x: Tensor, y: Tensor, distance: str) -> Tensor:
    if distance == "euclidean":
        return ((x - y) ** 2).sum()
    if distance == "cosine":
        return 1 - (F.normalize(x, dim=0) * F.normalize(y, dim=0)).sum()
    raise ValueError(distance)


def cross_pairs(side) -> list[tuple[int, int]]:
    """Every (p, q), p < q, of rows that both carry a group (side >= 0) and differ in it: a row
    with side -1 has no side value and pairs with nobody."""
    s = [int(v) for v in side]
    return [(p, q) for p in range(len(s)) for q in range(p + 1, len(s))
            if s[p] != -1 and s[q] != -1 and s[p] != s[q]]


def _mean_over_pairs(rows: Tensor, side, term, per_unit: bool) -> Tensor:
    pairs = cross_pairs(side)
    if not pairs:
        return rows.sum() * 0
    total = sum(term(rows[p], rows[q]) for p, q in pairs)
    value = total / len(pairs)
    return value / rows.shape[1] if per_unit else value


def posterior_divergence(mu, side, divergence, normalize="sum", eps=1e-6):
    m = mu.clamp(eps, 1 - eps)
    return _mean_over_pairs(m, side, lambda a, b: pair_divergence(a, b, divergence),
                            normalize == "per_unit")


def feature_distance(h, side, distance, normalize="sum"):
    return _mean_over_pairs(h, side, lambda a, b: pair_distance(a, b, distance),
                            normalize == "per_unit" and distance == "euclidean")


def row_mean_divergence(mu, side, divergence, normalize="sum", eps=1e-6):
    """R = (1/B) sum_p (mean of d(p, q) over p's cross-group partners q); rows without a
    partner add 0 but count in B. The objective whose gradient the RBM update follows."""
    m = mu.clamp(eps, 1 - eps)
    s = [int(v) for v in side]
    total = m.sum() * 0
    for p in range(len(s)):
        partners = [q for q in range(len(s)) if q != p and s[p] != -1 and s[q] != -1 and s[q] != s[p]]
        if partners:
            total = total + sum(pair_divergence(m[p], m[q], divergence) for q in partners) / len(partners)
    value = total / len(s)
    return value / m.shape[1] if normalize == "per_unit" else value
