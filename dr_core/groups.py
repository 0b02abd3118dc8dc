"""Group bookkeeping of one mini-batch for the DR penalties: who is whose cross-group partner.

Side labels are integers >= 0, or -1 (``NO_GROUP``) for a row that carries no side value. With
side labels s (B,), the cross-group pairs are P = {(p, q): p < q, s_p >= 0, s_q >= 0,
s_p != s_q}: a row without a group has no partner and contributes nothing to DR. Example p has
n_p = L - n_{g(p)} cross-group partners (L the rows that carry a group; n_p = 0 for the others)
and |P| = sum_p n_p / 2 (docs/dr.md).

Reproducible by construction: every accumulation over rows is a matrix product, a cumulative
sum, or ``index_add`` on CPU (which adds in index order). Sums by group are one-hot matrix
products where the one-hot is small (B x G); beyond, ``index_add`` on CPU, and on CUDA, whose
``index_add``/``scatter_add`` use atomics that add in a varying order, sorted segment sums
(float64 cumulative sums of rows sorted by group). No
function here reads a value back to the host, so a trainer that passes dense group ids
(``group_ids``, once per job) runs without a host synchronisation.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

NO_GROUP = -1
# Largest one-hot matrix (rows x columns) worth a matrix product: beyond ~4M entries it costs
# more memory than it saves time; sorted segment sums take over.
ONE_HOT_MAX_ELEMENTS = 2**22
# Devices whose index_add adds in a fixed order. Elsewhere (CUDA atomics) sums by group or by
# destination row are one-hot products or sorted segment sums. Tests empty it to run the
# deterministic paths on CPU.
INDEX_ADD_DEVICES = frozenset({"cpu"})


def group_ids(side: Tensor) -> tuple[Tensor, int]:
    """(ids (N,) int64, G): side labels renumbered 0..G-1 in sorted order, -1 kept for rows
    without a group. One ``torch.unique`` (one host read): call it once per job, not per batch.
    ValueError for a label below -1."""
    side = torch.as_tensor(side).reshape(-1)
    values, inv = torch.unique(side, return_inverse=True)
    if values.numel() == 0:
        return inv.long(), 0
    lowest = int(values[0])
    if lowest < NO_GROUP:
        raise ValueError(f"side: group labels must be >= 0, or -1 for a row without a group; "
                         f"got {lowest}")
    if lowest == NO_GROUP:
        return inv.long() - 1, int(values.numel()) - 1
    return inv.long(), int(values.numel())


def _deterministic_sums(device: torch.device) -> bool:
    return device.type not in INDEX_ADD_DEVICES


def _one_hot(index: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """(len(index), n) float one-hot; an index outside [0, n) gives a zero row. Built by a
    comparison (F.one_hot reads the maximum back on CPU and checks bounds)."""
    return (index[:, None] == torch.arange(n, device=index.device)).to(dtype)


def scatter_rows(index: Tensor, src: Tensor, n_rows: int) -> Tensor:
    """(n_rows, H): row d is the sum of the rows of src (N, H) whose index (N,) is d.

    index_add where it is ordered (CPU), else a one-hot product or a sorted segment sum, so the
    result is the same bits in every run.
    """
    if not _deterministic_sums(src.device):
        return src.new_zeros((n_rows, src.shape[1])).index_add_(0, index, src)
    if index.numel() * n_rows <= ONE_HOT_MAX_ELEMENTS:
        return _one_hot(index, n_rows, src.dtype).T @ src
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    prefix = _prefix_sums(src[order])
    dest = torch.arange(n_rows, device=index.device)
    lo = torch.searchsorted(sorted_index, dest, right=False)
    hi = torch.searchsorted(sorted_index, dest, right=True)
    return (prefix[hi] - prefix[lo]).to(src.dtype)


def add_rows_(dst: Tensor, index: Tensor, src: Tensor, alpha: float = 1.0) -> Tensor:
    """dst (B, H) += alpha * scatter_rows(index, src, B), in place (index_add_ on CPU)."""
    if not _deterministic_sums(src.device):
        return dst.index_add_(0, index, src, alpha=alpha)
    return dst.add_(scatter_rows(index, src, dst.shape[0]), alpha=alpha)


def _prefix_sums(x: Tensor) -> Tensor:
    """(N + 1, H) float64: row i is the sum of the first i rows of x (N, H). float64, so that
    differences of two prefix sums lose nothing that matters in float32."""
    prefix = torch.zeros((x.shape[0] + 1, x.shape[1]), dtype=torch.float64, device=x.device)
    torch.cumsum(x, 0, dtype=torch.float64, out=prefix[1:])
    return prefix


def _renumber_per_batch(n_groups: int, batch: int, device: torch.device) -> bool:
    """Whether a batch's ids are renumbered to its own groups: on CPU a (G, H) table for G far
    above B would cost more than the batch (torch.unique is no device synchronisation there)."""
    return n_groups >= batch and not _deterministic_sums(device)


def _batch_of_rows(sizes: list[int], device: torch.device) -> Tensor:
    """(sum of sizes,) the batch index of each row of consecutive batches of ``sizes``, one
    arange per run of equal sizes (an epoch's batches are one size but the last): device
    kernels only, no copy from the host, so that a CUDA graph can capture it."""
    parts, first = [], 0
    for size, run in itertools.groupby(sizes):
        count = len(list(run))
        parts.append(torch.arange(first, first + count, device=device).repeat_interleave(size))
        first += count
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _BatchTables:
    """The group bookkeeping of consecutive batches at once (their dense ids ``ids`` (sum of
    ``sizes``,) in [-1, n_groups), concatenated), in a fixed number of operations whatever the
    number of batches; ``Groups`` of batch i are views of row i. Per batch: ``slot``,
    ``n_cross`` (size,), ``counts``, ``slot_partners``, ``row_weight`` (G + 1,),
    ``row_pair_weights`` (G + 1, G + 1), ``n_pairs``, ``pair_scale`` (0-d), as documented in
    ``Groups``; ``onehot`` (size, G + 1) and ``partner_weights``, or None; ``cross_slots`` and
    ``neg_half_cross_slots`` (G + 1, G + 1), the same for every batch."""

    def __init__(self, ids: Tensor, sizes: list[int], n_groups: int, dtype: torch.dtype):
        device, width, n = ids.device, n_groups + 1, len(sizes)
        self.sizes, self.n_groups, self.dtype = sizes, n_groups, dtype
        slot = ids.long().remainder(width)  # -1 -> the extra slot G
        key = slot + width * _batch_of_rows(sizes, device)
        # integer adds: any order gives the same counts, so scatter_add_ is fine on every device
        counts = torch.zeros(n * width, dtype=torch.long, device=device).scatter_add_(
            0, key, torch.ones_like(key)).view(n, width)
        size = counts.sum(1)
        # partners of a row of each slot: the labelled rows outside its group; none for slot G
        partners = (size - counts[:, n_groups])[:, None] - counts
        partners[:, n_groups] = 0
        slot_partners = partners.to(dtype)
        n_cross = slot_partners.view(-1)[key]
        self.counts, self.slot_partners = counts, slot_partners
        # 1 for two different slots that both carry a group: cross_slots @ (a per-slot table)
        # sums each slot's partners' entries
        labelled = torch.ones(width, device=device, dtype=dtype)
        labelled[n_groups] = 0
        self.cross_slots = torch.outer(labelled, labelled).fill_diagonal_(0)
        self.n_pairs = (counts * partners).sum(1).to(dtype) / 2
        self.pair_scale = self.n_pairs.clamp_min(1).reciprocal()
        # 1 / (B n_p), 0 where a row has no partner
        self.row_weight = (slot_partners * size[:, None]).reciprocal_().nan_to_num_(posinf=0.0)
        # w_g + w_g' for two different slots that both carry a group: built here once per
        # epoch rather than in every DR step
        self.row_pair_weights = (self.row_weight[:, :, None] + self.row_weight[:, None, :]
                                 ).mul_(self.cross_slots)
        # with sums (G + 1, H) of x over each slot,
        # sum(sums * (neg_half_cross_slots @ sums)) = -(sum over P of x_p . x_q)
        self.neg_half_cross_slots = self.cross_slots * -0.5
        self.slot, self.n_cross = slot.split(sizes), n_cross.split(sizes)
        # every batch's (B, G + 1) one-hot at once, where the epoch's is small: sums by slot
        # are then one matrix product per table on every device
        self.onehot = _one_hot(slot, width, dtype).split(sizes) \
            if slot.numel() * width <= ONE_HOT_MAX_ELEMENTS else None
        # the row mean's partner_tables in one small product, where the epoch's are small
        self.partner_weights = torch.cat(
            (self.neg_half_cross_slots.expand(n, -1, -1), self.row_pair_weights), 1) \
            if n * 2 * width * width <= ONE_HOT_MAX_ELEMENTS else None


class Groups:
    """Groups of one mini-batch, on the data's device.

    ``Groups(side, B, device, dtype)`` takes any side labels (>= 0, -1 = no group) and renumbers
    them with ``group_ids`` (one host read); with ``n_groups`` given, ``side`` must already be
    such ids in [-1, n_groups) (what trainers pass: no host read at all).

    ``slot`` (B,) group index, rows without a group in the extra slot G; ``counts`` (G + 1,)
    int64 rows per slot; ``slot_partners`` (G + 1,) number of cross-group partners of a row of
    each slot (data dtype; 0 for slot G); ``n_cross`` (B,) the same for each row
    (``n_cross_int`` as int64); ``n_pairs`` (0-d, data dtype) = |P|; ``pair_scale`` (0-d)
    1 / |P| (1 when there is no pair: every sum over P is then 0); ``row_weight`` (G + 1,)
    1 / (B n_p) for a row of each slot, 0 for a slot without partners; ``cross_slots``
    (G + 1, G + 1) 1 where two different slots both carry a group (slot pairs whose rows are
    partners), else 0; ``row_pair_weights`` (G + 1, G + 1) ``row_weight`` of one slot plus
    that of the other where ``cross_slots`` is 1, else 0; ``neg_half_cross_slots`` (G + 1,
    G + 1) ``cross_slots`` times -1/2; ``partner_weights`` (2 (G + 1), G + 1)
    ``neg_half_cross_slots`` over ``row_pair_weights`` (``partner_tables``), or None where an
    epoch's would be large.

    Sums over the other groups are built from per-group tables: ``group_tables(x)`` gives each
    group's sum of x and the sum over the labelled rows outside it, (G, H) each, and
    ``per_row(table)`` hands row p its group's entry. A closed form that needs several such
    sums per row then pays one pass over the batch for the tables and one per row-wise result.
    """

    def __init__(self, side: Tensor, batch: int, device: torch.device, dtype: torch.dtype,
                 n_groups: int | None = None):
        side = torch.as_tensor(side)
        if side.dim() != 1 or side.numel() != batch:
            raise ValueError(f"side must have shape ({batch},), got {tuple(side.shape)}")
        side = side.to(device)
        if n_groups is None or _renumber_per_batch(n_groups, batch, device):
            side, n_groups = group_ids(side)
        self._take(_BatchTables(side, [batch], n_groups, dtype), 0)

    def _take(self, tables: _BatchTables, i: int) -> None:
        """This object is batch ``i`` of ``tables``: views of their rows, no operation."""
        self.batch, self.n_groups, self.dtype = tables.sizes[i], tables.n_groups, tables.dtype
        self.slot, self.n_cross = tables.slot[i], tables.n_cross[i]
        self.counts, self.slot_partners = tables.counts[i], tables.slot_partners[i]
        self.n_pairs, self.pair_scale = tables.n_pairs[i], tables.pair_scale[i]
        self.row_weight, self.cross_slots = tables.row_weight[i], tables.cross_slots
        self.row_pair_weights = tables.row_pair_weights[i]
        self.neg_half_cross_slots = tables.neg_half_cross_slots
        self.partner_weights = tables.partner_weights[i] \
            if tables.partner_weights is not None else None
        self._onehot = tables.onehot[i] if tables.onehot is not None else None

    @classmethod
    def of_batches(cls, batches: list[Tensor], ids: Tensor, n_groups: int,
                   dtype: torch.dtype) -> list[Groups]:
        """The ``Groups`` of each batch of row indices into ``ids`` (dense group ids of all rows,
        ``group_ids``), built together: a few operations for a whole epoch, then each batch's
        bookkeeping is views of the epoch's tables. Where a batch's groups are renumbered
        (many groups on CPU, see ``Groups``), each batch is built on its own."""
        if not batches:
            return []
        if _renumber_per_batch(n_groups, max(b.numel() for b in batches), ids.device):
            return [cls(ids[b], b.numel(), ids.device, dtype, n_groups) for b in batches]
        tables = _BatchTables(ids[torch.cat(batches)], [b.numel() for b in batches], n_groups,
                              dtype)
        out = []
        for i in range(len(batches)):
            groups = cls.__new__(cls)
            groups._take(tables, i)
            out.append(groups)
        return out

    @property
    def n_cross_int(self) -> Tensor:
        return self.slot_partners.long()[self.slot]

    def _one_hot_matrix(self) -> Tensor | None:
        """(B, G + 1) one-hot of the slots: the epoch's (``_BatchTables``), else built here
        where it is small and sums cannot be index_adds; None otherwise."""
        if self._onehot is None and _deterministic_sums(self.slot.device) \
                and self.batch * (self.n_groups + 1) <= ONE_HOT_MAX_ELEMENTS:
            self._onehot = _one_hot(self.slot, self.n_groups + 1, self.dtype)
        return self._onehot

    def group_tables(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(sums, others), each (G + 1, H): row g < G of ``sums`` is the sum of x (B, H) over
        group g's rows, row g of ``others`` the sum over the rows of the other groups (rows
        without a group count in neither). Row G of ``others`` is zero, so that ``per_row``
        hands a row without a group zeros; row G of ``sums`` is that of the rows without a
        group: use it only through a table that weighs slot G by 0 (``cross_slots``,
        ``row_pair_weights``). No autograd.
        """
        sums = self.slot_sums(x)
        # one small product rather than the total minus each row: fewer operations, and no
        # cancellation for a group that holds nearly all of the total
        return sums, self.cross_slots @ sums

    def partner_tables(self, x: Tensor, pair_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(sums, neg_half_cross_slots @ sums, pair_w @ sums), each (G + 1, H), with sums =
        ``slot_sums(x)``: the last two from one small product (with the epoch's stacked
        weights when ``pair_w`` is the batch's ``row_pair_weights``, the RBM's row mean)."""
        sums = self.slot_sums(x)
        weights = self.partner_weights
        if weights is None or pair_w is not self.row_pair_weights:
            weights = torch.cat((self.neg_half_cross_slots, pair_w))
        return (sums, *(weights @ sums).chunk(2))

    def slot_sums(self, x: Tensor) -> Tensor:
        """(G + 1, H): row g is the sum of x (B, H) over the rows of slot g (slot G: the rows
        without a group).

        A one-hot product where the one-hot is small (on CPU it costs less than index_add
        too); beyond, index_add on CPU, elsewhere float64 sums of segments of the rows sorted
        by slot, so that the result is the same bits in every run.
        """
        if (onehot := self._one_hot_matrix()) is not None:
            return onehot.T @ x
        if not _deterministic_sums(x.device):
            return x.new_zeros(self.n_groups + 1, x.shape[1]).index_add_(0, self.slot, x)
        return self._segment_sums(x).to(x.dtype)

    def _segment_sums(self, x: Tensor) -> Tensor:
        """(G + 1, H) float64 sums of x over each slot: rows sorted by slot, differences of
        float64 prefix sums (which lose nothing that matters in float32)."""
        prefix = _prefix_sums(x[torch.argsort(self.slot, stable=True)])
        ends = torch.cumsum(self.counts, 0)
        return prefix[ends] - prefix[ends - self.counts]

    def per_row(self, table: Tensor, out: Tensor | None = None) -> Tensor:
        """(B, ...): row p is the row of ``table`` (G + 1, ...) for p's slot (written into
        ``out`` when given)."""
        return torch.index_select(table, 0, self.slot, out=out)

    def other_groups_sum(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """(B, H): row p holds the sum of x (B, H) over the rows of the groups other than p's
        (0 for a row without a group), written into ``out`` when given. No autograd
        (``OtherGroupsSum`` differentiates it)."""
        return self.per_row(self.group_tables(x)[1], out=out)

    def sample_partners(self, k: int, generator: torch.Generator | None) -> Tensor:
        """(B, k) indices of partners drawn uniformly from the other groups, with replacement.

        Examples are sorted by slot (rows without a group last), so that "the other groups" of
        an example of group g are the sorted positions of [0, L) outside [start_g, start_g +
        n_g): draw r in [0, L - n_g) and skip the block. Integers come from ``randint`` (not
        floor(rand * m), which can round up to m). A row without partners gets an arbitrary
        valid index: its draws weigh 0.
        """
        device = self.slot.device
        order = torch.argsort(self.slot, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        n_own = self.counts[self.slot][:, None]
        start = starts[self.slot][:, None]
        span = self.n_cross_int.clamp_min(1)[:, None]
        gen_device = generator.device if generator is not None else device
        r = torch.randint(0, 2**62, (self.batch, k), generator=generator, device=gen_device)
        r = r.to(device) % span
        pos = torch.where(r < start, r, r + n_own).clamp_max(self.batch - 1)
        return order[pos]

    def draw_weights(self, k: int) -> Tensor:
        """(B,) weight w_p = n_p / (2 K |P|) of each of p's K draws (see dr_core.regularizers)."""
        return self.n_cross / (2 * k * self.n_pairs.clamp_min(1))

    def cross_mask(self, rows: slice, cols: slice, dtype: torch.dtype) -> Tensor:
        """(r, c) 1.0 where (row, column) is a cross-group pair of rows that both carry a group."""
        a, b = self.slot[rows, None], self.slot[None, cols]
        return ((a != b) & (a < self.n_groups) & (b < self.n_groups)).to(dtype)


class OtherGroupsSum(torch.autograd.Function):
    """``groups.other_groups_sum(x)`` with autograd. The map is x -> M x with M symmetric
    (M_pq = 1 for cross-group pairs), so its backward is the same deterministic sum."""

    @staticmethod
    def forward(ctx, x: Tensor, groups: Groups) -> Tensor:
        ctx.groups = groups
        return groups.other_groups_sum(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.groups.other_groups_sum(grad.contiguous()), None


class GatherRows(torch.autograd.Function):
    """x[index] for x (B, H), index (N,): (N, H), whose backward is ``scatter_rows`` (ordered on
    every device) instead of index_put's atomics."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.n_rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return scatter_rows(index, grad.contiguous(), ctx.n_rows), None


def cross_group_pair_count(side: Tensor) -> int:
    """|P|: the number of unordered pairs of examples with different side labels, both >= 0."""
    ids, _ = group_ids(torch.as_tensor(side))
    ids = ids[ids >= 0]
    _, counts = torch.unique(ids, return_counts=True)
    n = int(ids.numel())
    return (n * n - int((counts.long() ** 2).sum())) // 2
