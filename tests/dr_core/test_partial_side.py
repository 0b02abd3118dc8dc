"""Partial side information: rows with side -1 carry no group and pair with nobody,
and the deterministic sums that replace CUDA's atomics give the same values."""
from __future__ import annotations

import math

import pytest
import torch

from dr_core import groups as G
from dr_core import pair_kernels as PK
from dr_core import regularizers as R
from dr_core.config import DISTANCES, DIVERGENCES, NORMALIZE
from tests.dr_core import brute_force as bf

SIDE = torch.tensor([5, -1, 5, 2, -1, 9, 9, -1, 2, 5, -1])
LABELLED = SIDE >= 0


def _mu(b, h, seed):
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(b, h, generator=g, dtype=torch.float64)


def _h(b, h, seed):
    return torch.randn(b, h, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_partial_side_divergence_equals_brute_force_over_labelled_rows(divergence, normalize):
    mu = _mu(len(SIDE), 4, seed=1)
    value, grad = R.posterior_divergence_and_grad(mu, SIDE, divergence=divergence,
                                                  normalize=normalize)
    leaf = mu.clone().requires_grad_(True)
    want = bf.posterior_divergence(leaf, SIDE, divergence, normalize=normalize)
    want.backward()
    torch.testing.assert_close(value, want.detach())
    torch.testing.assert_close(grad, leaf.grad)
    assert not grad[~LABELLED].any()  # rows without a group get no DR gradient
    # ... and the value is the same as on the labelled rows alone
    only = R.posterior_divergence(mu[LABELLED], SIDE[LABELLED], divergence=divergence,
                                  normalize=normalize)
    torch.testing.assert_close(value, only)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_partial_side_exact_pair_pass_in_small_blocks(divergence, monkeypatch):
    monkeypatch.setattr(PK, "CHUNK_ELEMENTS", 9)
    mu = _mu(len(SIDE), 3, seed=2)
    groups = G.Groups(SIDE, len(SIDE), mu.device, mu.dtype)
    total, grad = PK.all_pairs_exact(mu, groups, PK.KERNELS[divergence], grads=True, eps=R.EPS)
    leaf = mu.clone().requires_grad_(True)
    want = bf.posterior_divergence(leaf, SIDE, divergence)
    want.backward()
    torch.testing.assert_close(total / groups.n_pairs, want.detach())
    torch.testing.assert_close(grad / groups.n_pairs, leaf.grad)


@pytest.mark.parametrize("distance", DISTANCES)
def test_partial_side_feature_distance_and_gradient(distance):
    h = _h(len(SIDE), 4, seed=3).requires_grad_(True)
    got = R.feature_distance(h, SIDE, distance=distance)
    leaf = h.detach().clone().requires_grad_(True)
    want = bf.feature_distance(leaf, SIDE, distance)
    want.backward()
    got.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(h.grad, leaf.grad)
    assert not h.grad[~LABELLED].any()


def test_sampled_partners_carry_a_group_and_rows_without_one_weigh_nothing():
    groups = G.Groups(SIDE, len(SIDE), torch.device("cpu"), torch.float64)
    partners = groups.sample_partners(3000, torch.Generator().manual_seed(0))
    w = groups.draw_weights(3000)
    for p in range(len(SIDE)):
        if SIDE[p] < 0:
            assert w[p] == 0
            continue
        others = {q for q in range(len(SIDE)) if SIDE[q] >= 0 and SIDE[q] != SIDE[p]}
        assert set(partners[p].tolist()) == others
    assert groups.n_pairs.item() == len(bf.cross_pairs(SIDE.tolist()))


@pytest.mark.parametrize("divergence", ["hellinger", "bhattacharyya"])
def test_partial_side_sampled_estimate_is_unbiased(divergence):
    mu = _mu(len(SIDE), 3, seed=4)
    exact = R.posterior_divergence(mu, SIDE, divergence=divergence)
    values = torch.stack([R.posterior_divergence(mu, SIDE, divergence=divergence, pairs=2,
                                                 generator=torch.Generator().manual_seed(i))
                          for i in range(400)])
    se = values.std() / math.sqrt(len(values))
    assert abs(values.mean() - exact) < 4 * se and se < 0.05 * exact


def test_group_ids_keep_minus_one_and_refuse_lower_labels():
    ids, n = G.group_ids(torch.tensor([7, -1, 3, 7, -1]))
    assert ids.tolist() == [1, -1, 0, 1, -1] and n == 2
    assert G.group_ids(torch.tensor([-1, -1]))[1] == 0
    with pytest.raises(ValueError, match="-1 for a row without a group"):
        G.group_ids(torch.tensor([0, -2]))
    assert G.cross_group_pair_count(SIDE) == len(bf.cross_pairs(SIDE.tolist()))


def test_dense_ids_need_no_renumbering():
    """What trainers pass: ids from group_ids once per job, n_groups given, same result."""
    mu = _mu(len(SIDE), 4, seed=5)
    ids, n = G.group_ids(SIDE)
    for div in DIVERGENCES:
        torch.testing.assert_close(
            R.posterior_divergence(mu, ids, divergence=div, n_groups=n),
            R.posterior_divergence(mu, SIDE, divergence=div), rtol=0, atol=0)


# ------------------------------------------------ the deterministic (CUDA) sums, run on CPU
@pytest.fixture(params=["one_hot", "segments"])
def deterministic_sums(request, monkeypatch):
    """The sums CUDA uses (one-hot products, or sorted segment sums for large B * G)."""
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    if request.param == "segments":
        monkeypatch.setattr(G, "ONE_HOT_MAX_ELEMENTS", 1)
    return request.param


@pytest.mark.parametrize("pairs", ["all", 3])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_deterministic_sums_equal_index_add(divergence, pairs, deterministic_sums, monkeypatch):
    mu = _mu(len(SIDE), 5, seed=6)
    kw = dict(divergence=divergence, pairs=pairs, grad_wrt="logit")
    value, grad = R.posterior_divergence_and_grad(mu, SIDE, generator=torch.Generator().manual_seed(1), **kw)
    again = R.posterior_divergence_and_grad(mu, SIDE, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(value, again[0]) and torch.equal(grad, again[1])
    # the index_add path (CPU, where the one-hot matrix would be large)
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset({"cpu"}))
    monkeypatch.setattr(G, "ONE_HOT_MAX_ELEMENTS", 1)
    want_value, want_grad = R.posterior_divergence_and_grad(
        mu, SIDE, generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grad, want_grad)


@pytest.mark.parametrize("pairs", ["all", 3])
@pytest.mark.parametrize("distance", DISTANCES)
def test_deterministic_feature_distance_gradients(distance, pairs, deterministic_sums):
    h = _h(len(SIDE), 3, seed=7).requires_grad_(True)

    def f(x):
        return R.feature_distance(x, SIDE, distance=distance, pairs=pairs,
                                  generator=torch.Generator().manual_seed(5))

    assert torch.autograd.gradcheck(f, (h,), eps=1e-6, atol=1e-7, rtol=1e-5)
    if pairs == "all":
        torch.testing.assert_close(f(h), bf.feature_distance(h, SIDE, distance))


def test_scatter_rows_is_the_same_sum_on_every_path(monkeypatch):
    g = torch.Generator().manual_seed(8)
    index = torch.randint(0, 6, (40,), generator=g)
    src = torch.randn(40, 3, generator=g, dtype=torch.float64)
    want = torch.zeros(6, 3, dtype=torch.float64).index_add_(0, index, src)
    monkeypatch.setattr(G, "INDEX_ADD_DEVICES", frozenset())
    torch.testing.assert_close(G.scatter_rows(index, src, 6), want)
    monkeypatch.setattr(G, "ONE_HOT_MAX_ELEMENTS", 1)
    torch.testing.assert_close(G.scatter_rows(index, src, 6), want)
