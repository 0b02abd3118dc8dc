"""What generative DR adds to a CD step, and what the trainer reads of the whole training set:
counted in tensor operations and elements written, never timed.

A Hellinger DR step over all pairs is O(B*H + G*H), but every extra pass over a (B, H) batch
and every extra tiny operation on the group bookkeeping costs a share of the step on a CPU; the
bounds below hold the step to the passes its closed form needs (dr_core.regularizers)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dr_core.rbm_trainer as rbm_trainer
from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.groups import Groups
from dr_core.rbm import positive_statistics

# Operations that write no element: views, and allocations whose contents a later op writes.
_NO_WRITE = {"aten::view", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze_",
             "aten::detach", "aten::as_strided", "aten::t", "aten::transpose", "aten::expand",
             "aten::split", "aten::split_with_sizes", "aten::permute",
             "aten::empty", "aten::new_empty", "aten::empty_strided", "aten::_local_scalar_dense"}


class Work(TorchDispatchMode):
    """Counts tensor operations, the elements they write, and their tensor arguments' shapes."""

    def __init__(self):
        super().__init__()
        self.ops, self.written, self.arg_shapes, self.writes = 0, 0, [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.name in _NO_WRITE:
            return out
        self.ops += 1
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.writes.append((func._schema.name,
                            sum(o.numel() for o in outs if isinstance(o, torch.Tensor))))
        self.written += self.writes[-1][1]
        self.arg_shapes.append((func._schema.name, [tuple(a.shape) for a in args
                                                    if isinstance(a, torch.Tensor)]))
        return out


def _dr_step_work(divergence: str, b: int = 128, h: int = 500, groups: int = 10) -> Work:
    g = torch.Generator().manual_seed(0)
    mu = torch.rand(b, h, generator=g) * 0.98 + 0.01
    side = torch.randint(0, groups, (b,), generator=g)
    work = Work()
    with work:
        positive_statistics(mu, side, PosteriorDRConfig(weight=0.1, divergence=divergence),
                            g, n_groups=groups)
    return work


def test_hellinger_dr_step_writes_few_batch_sized_tensors():
    """s and t, their per-row sums over the partners, the value and the gradient: some 15
    (B, H) tensors' worth of writes (28 when every sum over partners was a pass of its own),
    and few operations on the group bookkeeping."""
    work = _dr_step_work("hellinger")
    assert work.written <= 18 * 128 * 500
    assert work.ops <= 60


def test_hellinger_dr_step_on_built_groups_does_no_bookkeeping_and_one_pass_for_the_value():
    """Given its batch's Groups (as the trainer builds them for an epoch), a step does no group
    bookkeeping (counts, partners, weights); the value comes from the group tables, so the
    only writes of [s | t]'s size are [s | t] itself and the gather of the gradient's partner
    sums (the value's own gather and difference were two more). The tables are two products
    (the sums by slot, then both partner tables at once with the epoch's stacked weights), and
    the positive statistics mu + lambda B grad come out of the gradient's last operation:
    16 operations in all (21 with a product per table and a pass of their own)."""
    b, h, n_groups = 128, 500, 10
    g = torch.Generator().manual_seed(0)
    mu = torch.rand(b, h, generator=g) * 0.98 + 0.01
    ids = torch.randint(0, n_groups, (b,), generator=g)
    (groups,) = Groups.of_batches([torch.arange(b)], ids, n_groups, mu.dtype)
    work = Work()
    with work:
        positive_statistics(mu, groups, PosteriorDRConfig(weight=0.1, divergence="hellinger"), g)
    assert work.ops <= 16
    assert work.written <= 11 * b * h
    bookkeeping = [name for name, shapes in work.arg_shapes if shapes and shapes[0] in ((b,),)]
    assert bookkeeping == []
    assert [name for name, n in work.writes if n >= b * 2 * h] == ["aten::sqrt_",
                                                                    "aten::index_select"]


def test_epoch_group_bookkeeping_costs_the_same_for_any_number_of_batches():
    ids = torch.randint(-1, 7, (4000,), generator=torch.Generator().manual_seed(0))
    counts = []
    for n_batches in (3, 30):
        batches = list(torch.randperm(4000)[:n_batches * 64].split(64))
        work = Work()
        with work:
            Groups.of_batches(batches, ids, 7, torch.float32)
        counts.append(work.ops)
    assert counts[0] == counts[1]


def test_trainer_hellinger_dr_adds_few_operations_per_batch():
    """What DR adds to an epoch of the trainer, per batch: the step's closed form and the sum
    of its value; the group bookkeeping is built once per epoch."""
    n, d, b = 640, 20, 32
    g = torch.Generator().manual_seed(0)
    X, side = torch.rand(n, d, generator=g), torch.randint(0, 5, (n,), generator=g)
    ops = {}
    for dr in (None, PosteriorDRConfig(weight=0.1, divergence="hellinger")):
        work = Work()
        with work:
            rbm_trainer.train_rbm(RBMConfig(n_hidden=16, epochs=1, batch_size=b, dr=dr),
                                  Examples(X, side=side), RunContext(torch.Generator().manual_seed(1)))
        ops[dr is not None] = work.ops
    assert (ops[True] - ops[False]) / (n // b) <= 32


def test_jeffreys_dr_step_writes_few_batch_sized_tensors():
    work = _dr_step_work("jeffreys")
    assert work.written <= 18 * 128 * 500


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_trainer_reads_the_whole_training_set_at_most_once(visible):
    """Batches and the metric sample gather rows; only the range check of Bernoulli data reads
    all of X, in one pass for both extremes."""
    n, d = 300, 12
    X = torch.rand(n, d, generator=torch.Generator().manual_seed(0))
    work = Work()
    with work:
        rbm_trainer.train_rbm(RBMConfig(n_hidden=5, epochs=1, visible=visible), Examples(X),
                              RunContext(torch.Generator().manual_seed(1)))
    full_reads = [name for name, shapes in work.arg_shapes
                  if (n, d) in shapes and name not in ("aten::index", "aten::index_select")]
    assert len(full_reads) == (1 if visible == "bernoulli" else 0), full_reads
