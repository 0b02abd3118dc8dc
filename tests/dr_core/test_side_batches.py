"""Side rows per batch (dr_core.batches): the sampler's guarantee, its independence from DR,
determinism, exact resume, and the cross-group pair count it reports."""
from __future__ import annotations

import pytest
import torch

from dr_core import batches as B
from dr_core import rbm_trainer
from dr_core.config import PosteriorDRConfig, RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.events import RecordingCallback
from dr_core.groups import Groups, group_ids
from dr_core.rbm_trainer import train_rbm


def _partial_side(n: int, labelled: int, groups: int, seed: int = 0) -> torch.Tensor:
    """n rows, ``labelled`` of them (at random places) with a group in [0, groups)."""
    g = torch.Generator().manual_seed(seed)
    side = torch.full((n,), -1)
    where = torch.randperm(n, generator=g)[:labelled]
    side[where] = torch.arange(labelled) % groups
    return side


def _side_row_plan(side: torch.Tensor, batch: int, k: int, seed: int = 3) -> list[torch.Tensor]:
    ids, n_groups = group_ids(side)
    return B.side_row_batches(ids, n_groups, batch, k, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,labelled,groups,batch,k", [(1000, 10, 10, 64, 8), (300, 7, 3, 32, 5),
                                                       (257, 40, 2, 16, 2), (90, 90, 4, 32, 8)])
def test_every_batch_holds_side_rows_from_several_groups(n, labelled, groups, batch, k):
    side = _partial_side(n, labelled, groups)
    plan = _side_row_plan(side, batch, k)
    for idx in plan:
        head = side[idx[:k]]
        assert bool((side[idx] >= 0).sum() >= k)
        assert bool((head >= 0).all())
        assert len(set(head.tolist())) == min(k, groups)
        assert idx.numel() <= batch
    # the rest of the batches is one shuffle of every row: each visited exactly once there
    rest = torch.cat([idx[k:] for idx in plan])
    assert sorted(rest.tolist()) == list(range(n))
    assert len(plan) == -(-n // (batch - k))


def test_side_rows_are_spread_over_the_labelled_rows():
    side = _partial_side(2000, 20, 4)
    plan = _side_row_plan(side, 100, 10)
    used = torch.cat([idx[:10] for idx in plan])
    counts = torch.bincount(used, minlength=2000)[side >= 0]
    # 220 side slots over 20 rows: each row 11 times, give or take the last round
    assert int(counts.min()) >= 10 and int(counts.max()) <= 12


def test_plan_is_deterministic_and_depends_on_seed_layer_and_epoch():
    side = _partial_side(500, 12, 3)
    ids, n_groups = group_ids(side)

    def plan(seed, layer, epoch):
        gen = B.plan_generator(seed, layer, epoch, torch.device("cpu"))
        return torch.cat(B.side_row_batches(ids, n_groups, 32, 4, gen))

    assert torch.equal(plan(7, 0, 1), plan(7, 0, 1))
    assert not torch.equal(plan(7, 0, 1), plan(7, 0, 2))
    assert not torch.equal(plan(7, 0, 1), plan(7, 1, 1))
    assert not torch.equal(plan(7, 0, 1), plan(8, 0, 1))


def test_no_groups_gives_a_plain_epoch_and_bad_counts_are_refused():
    side = torch.full((50,), -1)
    ids, n_groups = group_ids(side)
    plan = B.side_row_batches(ids, n_groups, 16, 4, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(plan).tolist()) == list(range(50))
    for bad in (0, 16, 20):
        with pytest.raises(ValueError, match="side_rows_per_batch"):
            B.side_row_batches(ids, n_groups, 16, bad, torch.Generator())
    with pytest.raises(ValueError, match="side_rows_per_batch"):
        RBMConfig(n_hidden=4, batch_size=16, side_rows_per_batch=16)


def test_pairs_per_batch_equals_a_direct_count():
    side = _partial_side(400, 30, 3)
    ids, n_groups = group_ids(side)
    plan = _side_row_plan(side, 32, 6)
    direct = []
    for idx in plan:
        s = side[idx].tolist()
        direct.append(sum(1 for p in range(len(s)) for q in range(p + 1, len(s))
                          if s[p] >= 0 and s[q] >= 0 and s[p] != s[q]))
    got = B.cross_pairs_per_batch(Groups.of_batches(plan, ids, n_groups, torch.float32))
    assert float(got) == pytest.approx(sum(direct) / len(direct), rel=1e-12)


def _data(n=240, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    return X, _partial_side(n, 12, 3, seed)


def _run(cfg, X, side, resume=None, seed=11):
    cb = RecordingCallback()
    gen = torch.Generator().manual_seed(seed)
    if resume is not None:
        gen.set_state(resume["generator"])
    rbm, events = train_rbm(cfg, Examples(X, side=side), RunContext(gen, cb, resume))
    return rbm, events


def _recorded_batches(monkeypatch, cfg, X, side):
    seen: list[torch.Tensor] = []
    real = rbm_trainer._epoch_batches

    def record(*args, **kwargs):
        plan = real(*args, **kwargs)
        seen.extend(plan)
        return plan

    monkeypatch.setattr(rbm_trainer, "_epoch_batches", record)
    _run(cfg, X, side)
    monkeypatch.setattr(rbm_trainer, "_epoch_batches", real)
    return seen


def test_batches_do_not_depend_on_dr(monkeypatch):
    X, side = _data()
    base = dict(n_hidden=5, epochs=3, batch_size=24, side_rows_per_batch=6)
    plain = _recorded_batches(monkeypatch, RBMConfig(**base), X, side)
    for dr in (PosteriorDRConfig(weight=1.0), PosteriorDRConfig(weight=1.0, divergence="bhattacharyya",
                                                                pairs=4)):
        guided = _recorded_batches(monkeypatch, RBMConfig(**base, dr=dr), X, side)
        assert len(guided) == len(plain) and all(torch.equal(a, b) for a, b in zip(guided, plain))


def test_side_rows_off_is_the_plain_shuffle(monkeypatch):
    X, side = _data()
    cfg = RBMConfig(n_hidden=5, epochs=1, batch_size=24)
    seen = _recorded_batches(monkeypatch, cfg, X, side)
    gen = torch.Generator().manual_seed(11)
    torch.randn(X.shape[1], 5, generator=gen, dtype=X.dtype)  # the layer's initial weights
    want = torch.randperm(len(X), generator=gen).split(24)
    assert len(seen) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(seen, want))


@pytest.mark.parametrize("dr", [None, PosteriorDRConfig(weight=2.0)])
def test_resume_at_an_epoch_boundary_is_exact(dr):
    X, side = _data()
    cfg = RBMConfig(n_hidden=5, epochs=4, batch_size=24, side_rows_per_batch=6, dr=dr)
    whole, events = _run(cfg, X, side)
    resumed, rest = _run(cfg, X, side, resume=events[1].state)
    assert torch.equal(whole.W, resumed.W) and torch.equal(whole.c, resumed.c)
    assert [e.metrics for e in rest] == [e.metrics for e in events[2:]]


def test_side_rows_raise_the_pairs_dr_works_with():
    X, side = _data()
    off = _run(RBMConfig(n_hidden=5, epochs=1, batch_size=24), X, side)[1]
    on = _run(RBMConfig(n_hidden=5, epochs=1, batch_size=24, side_rows_per_batch=6), X, side)[1]
    assert on[0].metrics["dr_pairs_per_batch"] >= 12  # 6 rows over 3 groups: at least 12 pairs
    assert off[0].metrics["dr_pairs_per_batch"] < on[0].metrics["dr_pairs_per_batch"]
