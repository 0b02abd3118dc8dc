"""Group bookkeeping of one mini-batch for the DR penalties: who is whose cross-group partner.

With side labels s (B,), the cross-group pairs are P = {(p, q): p < q, s_p != s_q}; example p
has n_p = B - n_{g(p)} cross-group partners and |P| = sum_p n_p / 2 (docs/dr.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest (B, G) one-hot matrix worth building: beyond ~4M entries it costs more memory than
# it saves time.
ONE_HOT_MAX_ELEMENTS = 2**22


class Groups:
    """Group labels of one mini-batch, on the data's device.

    ``inv`` (B,) group index in 0..G-1, ``counts`` (G,), ``n_cross`` (B,) number of cross-group
    partners of each example (data dtype; ``n_cross_int`` the same as int64), ``n_pairs``
    (0-d, data dtype) = |P|.
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
        if self.batch * self.n_groups > ONE_HOT_MAX_ELEMENTS:
            return None
        if self._onehot is None or self._onehot.dtype != x.dtype:
            self._onehot = F.one_hot(self.inv, self.n_groups).to(x.dtype)
        return self._onehot

    def class_sums(self, x: Tensor) -> Tensor:
        """(G, H) sums of the rows of x (B, H) by group; out of place, so autograd can use it.

        A one-hot matmul while the one-hot matrix is small: deterministic on CUDA, unlike
        index_add's atomics.
        """
        onehot = self._one_hot(x)
        if onehot is not None:
            return onehot.T @ x
        return x.new_zeros((self.n_groups, x.shape[1])).index_add(0, self.inv, x)

    def expand(self, per_group: Tensor) -> Tensor:
        """(B, H) rows of per_group (G, H) for each example's group."""
        onehot = self._one_hot(per_group)
        return onehot @ per_group if onehot is not None else per_group[self.inv]

    def other_groups_sum(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """(B, H): row p holds the sum of x (B, H) over the rows of the groups other than p's.

        Written into ``out`` (B, H) when given. No autograd (the closed forms differentiate by
        hand). index_add/index_select rather than one-hot matmuls: a (B, G) @ (G, H) product
        with a tiny inner dimension costs 2.5-4x more on CPU (measured at B=128, G=10, H=2000).
        """
        by_group = x.new_zeros(self.n_groups, x.shape[1]).index_add_(0, self.inv, x)
        return torch.index_select(by_group.sum(0).sub(by_group), 0, self.inv, out=out)

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
        """(B,) weight w_p = n_p / (2 K |P|) of each of p's K draws (see dr_core.regularizers)."""
        return self.n_cross / (2 * k * self.n_pairs.clamp_min(1))


def cross_group_pair_count(side: Tensor) -> int:
    """|P|: the number of unordered pairs of examples with different side labels."""
    side = torch.as_tensor(side)
    _, counts = torch.unique(side.reshape(-1), return_counts=True)
    n = int(side.numel())
    return (n * n - int((counts.long() ** 2).sum())) // 2
