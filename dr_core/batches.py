"""The mini-batches of one pretraining epoch, and how many cross-group pairs they hold.

With few rows carrying a side value (1 % of labels), most random batches hold no cross-group
pair, and DR has nothing to work on. ``side_rows`` > 0 gives every batch that many rows that
carry a side value, drawn in turn from each group (so a batch's side rows span
min(side_rows, G) groups), cycling through each group's rows in a fresh order as often as the
epoch needs; the rest of each batch is the next ``batch_size - side_rows`` rows of a shuffle
of all rows, so an epoch still visits every row, in ceil(N / (batch_size - side_rows)) batches.

The side-row plan draws from a generator of its own, seeded by (the run's seed, layer, epoch):
it does not depend on DR (a no-DR control trains on the same batches), consumes nothing of the
training generator, and is the same again when a run resumes at an epoch boundary.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dr_core.groups import Groups

_PLAN_SEED = 0x5_1DE_B47C


def plan_generator(run_seed: int, layer: int, epoch: int, device: torch.device) -> torch.Generator:
    """The side-row plan's generator for (run seed, layer, epoch)."""
    g = torch.Generator(device=device)
    g.manual_seed((run_seed * 1_000_003 + _PLAN_SEED + 7919 * layer + epoch) % (2**63))
    return g


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator,
                     device: torch.device) -> list[Tensor]:
    """A plain epoch: one shuffle of the n rows, cut into batches of ``batch_size``."""
    perm = torch.randperm(n, generator=generator, device=device)
    return list(perm.split(batch_size))


def _side_stream(ids: Tensor, n_groups: int, length: int, generator: torch.Generator) -> Tensor:
    """``length`` row indices of rows with a group (ids >= 0), slot i from group
    order[i mod G], each group's rows cycled in fresh shuffles."""
    device = ids.device
    order = torch.randperm(n_groups, generator=generator, device=device)
    slot_groups = order[torch.arange(length, device=device) % n_groups]
    stream = torch.empty(length, dtype=torch.long, device=device)
    for g in range(n_groups):
        rows = torch.nonzero(ids == g).flatten()
        where = torch.nonzero(slot_groups == g).flatten()
        if where.numel() == 0:
            continue
        rounds = -(-where.numel() // rows.numel())
        picks = torch.cat([rows[torch.randperm(rows.numel(), generator=generator, device=device)]
                           for _ in range(rounds)])
        stream[where] = picks[:where.numel()]
    return stream


def side_row_batches(ids: Tensor, n_groups: int, batch_size: int, side_rows: int,
                     generator: torch.Generator) -> list[Tensor]:
    """An epoch whose every batch opens with ``side_rows`` rows that carry a group.

    ``ids`` (N,) dense group ids (``dr_core.groups.group_ids``), -1 for a row without one;
    needs 0 < side_rows < batch_size. With no group in the data it is a plain epoch.
    """
    if not 0 < side_rows < batch_size:
        raise ValueError(f"side_rows_per_batch: must be in [1, {batch_size - 1}] for batches "
                         f"of {batch_size}, got {side_rows}")
    n, device = ids.shape[0], ids.device
    if n_groups == 0:
        return shuffled_batches(n, batch_size, generator, device)
    rest = torch.randperm(n, generator=generator, device=device).split(batch_size - side_rows)
    stream = _side_stream(ids, n_groups, side_rows * len(rest), generator)
    return [torch.cat((side, part)) for side, part in zip(stream.split(side_rows), rest)]


def cross_pairs_per_batch(groups: list[Groups]) -> Tensor:
    """Mean number of cross-group pairs in a batch (0-d, float64), from the batches' ``Groups``
    (``Groups.of_batches``, the ones a DR step uses): for each batch (L_b^2 - sum_g n_bg^2) / 2,
    L_b its rows with a group, n_bg those of group g. Counts in float32 are exact up to 2^24
    pairs a batch. No host read."""
    return torch.stack([g.n_pairs for g in groups]).double().mean()
