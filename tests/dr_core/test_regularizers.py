"""DR penalties against their brute-force twins (float64, tiny random batches)."""
from __future__ import annotations

import math

import pytest
import torch

from dr_core import groups as G
from dr_core import pair_kernels as PK
from dr_core import regularizers as R
from dr_core.config import DISTANCES, DIVERGENCES, MAX_SAMPLED_PAIRS, NORMALIZE, PosteriorDRConfig
from tests.dr_core import brute_force as bf

# (side labels) cases: uneven groups, non-contiguous labels, single group, B=1, B=2, many groups;
# -1 marks a row without a side value (partial side information)
SIDES = {
    "uneven": [5, 5, 5, 5, 2, 9, 9, 5, 2],
    "two_equal": [0, 1, 0, 1, 1, 0],
    "single_group": [3, 3, 3, 3],
    "b1": [7],
    "b2_cross": [1, 4],
    "b2_same": [4, 4],
    "all_distinct": [10, 20, 30, 40, 50],
    "partial": [5, -1, 5, 2, -1, 9, 9, -1, 2],
    "partial_one_group": [-1, 3, -1, 3, 3],
    "none_labelled": [-1, -1, -1],
}
PARTIAL = ["partial", "partial_one_group", "none_labelled"]


def _mu(b: int, h: int, seed: int, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # keep away from 0 and 1 so the clamp is inactive and finite differences are well defined
    mu = 0.05 + 0.9 * torch.rand(b, h, generator=g, dtype=torch.float64)
    return mu.requires_grad_(requires_grad)


def _h(b: int, h: int, seed: int, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


@pytest.mark.parametrize("case", list(SIDES))
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_all_pairs_equals_brute_force(divergence, case):
    side = torch.tensor(SIDES[case])
    mu = _mu(len(side), 4, seed=len(case))
    got = R.posterior_divergence(mu, side, divergence=divergence, pairs="all")
    want = bf.posterior_divergence(mu, side, divergence)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if not bf.cross_pairs(side):
        assert got.item() == 0.0
    else:
        assert got.item() > 0.0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_clamps_extreme_means(divergence):
    side = torch.tensor([0, 0, 1, 2, 1])
    mu = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 1e-9], [0.3, 1.0, 0.0],
                       [1.0, 1.0, 1.0], [0.0, 0.2, 0.9]], dtype=torch.float64)
    got = R.posterior_divergence(mu, side, divergence=divergence)
    want = bf.posterior_divergence(mu, side, divergence)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_closed_form_matches_exact_pair_pass(divergence, monkeypatch):
    """Force the blocked exact pass into many small blocks: the value must not depend on them."""
    side = torch.tensor(SIDES["uneven"])
    mu = _mu(len(side), 5, seed=3)
    want = bf.posterior_divergence(mu, side, divergence)
    monkeypatch.setattr(PK, "CHUNK_ELEMENTS", 7)  # blocks of 1 column x 1 row
    groups = G.Groups(side, len(side), mu.device, mu.dtype)
    total, grad = PK.all_pairs_exact(mu, groups, PK.KERNELS[divergence], grads=True, eps=R.EPS)
    torch.testing.assert_close(total / groups.n_pairs, want)
    mu_ = mu.clone().requires_grad_(True)
    bf.posterior_divergence(mu_, side, divergence).backward()
    torch.testing.assert_close(grad / groups.n_pairs, mu_.grad)


@pytest.mark.parametrize("case", ["uneven", "single_group", "b1", "b2_cross", "all_distinct",
                                  *PARTIAL])
@pytest.mark.parametrize("distance", DISTANCES)
def test_distance_all_pairs_equals_brute_force(distance, case):
    side = torch.tensor(SIDES[case])
    h = _h(len(side), 4, seed=len(case))
    got = R.feature_distance(h, side, distance=distance)
    want = bf.feature_distance(h, side, distance)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_cosine_treats_zero_feature_as_orthogonal():
    side = torch.tensor([0, 1, 1])
    h = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0]], dtype=torch.float64)
    got = R.feature_distance(h, side, distance="cosine")
    torch.testing.assert_close(got, bf.feature_distance(h, side, "cosine"))
    assert got.item() == pytest.approx(1.0)


def test_per_unit_divides_by_number_of_units():
    side = torch.tensor(SIDES["uneven"])
    mu, h = _mu(len(side), 6, seed=1), _h(len(side), 6, seed=2)
    for div in DIVERGENCES:
        s = R.posterior_divergence(mu, side, divergence=div)
        u = R.posterior_divergence(mu, side, divergence=div, normalize="per_unit")
        torch.testing.assert_close(u, s / 6)
    s = R.feature_distance(h, side, distance="euclidean")
    u = R.feature_distance(h, side, distance="euclidean", normalize="per_unit")
    torch.testing.assert_close(u, s / 6)
    # cosine is not a sum over units: normalize leaves it alone (documented)
    torch.testing.assert_close(R.feature_distance(h, side, distance="cosine", normalize="per_unit"),
                               R.feature_distance(h, side, distance="cosine"))


@pytest.mark.parametrize("pairs", ["all", 3])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_gradcheck(divergence, pairs):
    side = torch.tensor(SIDES["uneven"])
    mu = _mu(len(side), 3, seed=11, requires_grad=True)

    def f(x):  # a fresh generator per call: finite differences must see the same draws
        return R.posterior_divergence(x, side, divergence=divergence, pairs=pairs,
                                      generator=torch.Generator().manual_seed(5))

    assert torch.autograd.gradcheck(f, (mu,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_exact_pass_gradcheck_in_small_blocks(divergence, monkeypatch):
    monkeypatch.setattr(PK, "CHUNK_ELEMENTS", 8)
    side = torch.tensor(SIDES["two_equal"])
    mu = _mu(len(side), 2, seed=12, requires_grad=True)
    f = lambda x: R.posterior_divergence(x, side, divergence=divergence, pairs="all")  # noqa: E731
    assert torch.autograd.gradcheck(f, (mu,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("pairs", ["all", 3])
@pytest.mark.parametrize("distance", DISTANCES)
def test_distance_gradcheck(distance, pairs):
    side = torch.tensor(SIDES["uneven"])
    h = _h(len(side), 3, seed=13, requires_grad=True)

    def f(x):
        return R.feature_distance(x, side, distance=distance, pairs=pairs,
                                  generator=torch.Generator().manual_seed(5))

    assert torch.autograd.gradcheck(f, (h,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_analytic_gradient_equals_autograd_of_brute_force(divergence, normalize):
    side = torch.tensor(SIDES["uneven"])
    mu = _mu(len(side), 4, seed=21)
    # a few means outside [eps, 1-eps]: their gradient must be 0, as through torch.clamp
    mu[0, 0], mu[3, 2] = 0.0, 1.0
    value, grad = R.posterior_divergence_and_grad(mu, side, divergence=divergence,
                                                  normalize=normalize)
    leaf = mu.clone().requires_grad_(True)
    want = bf.posterior_divergence(leaf, side, divergence, normalize=normalize)
    want.backward()
    torch.testing.assert_close(value, want.detach())
    torch.testing.assert_close(grad, leaf.grad)
    assert grad[0, 0] == 0 and grad[3, 2] == 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_sampled_analytic_gradient_equals_autograd_of_same_draws(divergence):
    """Rebuild the sampled estimate by hand from the same draws and differentiate it."""
    side = torch.tensor(SIDES["uneven"])
    mu = _mu(len(side), 3, seed=22)
    k = 4
    value, grad = R.posterior_divergence_and_grad(mu, side, divergence=divergence, pairs=k,
                                                  generator=torch.Generator().manual_seed(9))
    groups = G.Groups(side, len(side), mu.device, mu.dtype)
    partners = groups.sample_partners(k, torch.Generator().manual_seed(9))
    leaf = mu.clone().requires_grad_(True)
    n_pairs = bf.cross_pairs(side).__len__()
    est = 0
    for p in range(len(side)):
        n_cross = sum(int(s) != int(side[p]) for s in side)
        for q in partners[p].tolist():
            assert int(side[q]) != int(side[p])
            est = est + n_cross / (2 * k * n_pairs) * bf.pair_divergence(leaf[p], leaf[q], divergence)
    est.backward()
    torch.testing.assert_close(value, est.detach())
    torch.testing.assert_close(grad, leaf.grad)


def test_zero_when_no_cross_pairs_still_backpropagates():
    for side in (torch.tensor([2, 2, 2]), torch.tensor([1])):
        mu = _mu(len(side), 3, seed=1, requires_grad=True)
        h = _h(len(side), 3, seed=1, requires_grad=True)
        for pairs in ("all", 2):
            v = R.posterior_divergence(mu, side, divergence="bhattacharyya", pairs=pairs)
            d = R.feature_distance(h, side, distance="euclidean", pairs=pairs)
            assert v.item() == 0.0 and d.item() == 0.0
            assert v.grad_fn is not None and d.grad_fn is not None
            (v + d).backward()
            assert torch.count_nonzero(mu.grad) == 0 and torch.count_nonzero(h.grad) == 0


def test_sampled_partners_are_uniform_over_other_groups():
    side = torch.tensor([3, 3, 3, 3, 3, 8, 1, 1])
    groups = G.Groups(side, 8, torch.device("cpu"), torch.float64)
    partners = groups.sample_partners(4000, torch.Generator().manual_seed(0))
    for p in range(8):
        others = [q for q in range(8) if side[q] != side[p]]
        counts = torch.bincount(partners[p], minlength=8).double()
        assert set(torch.nonzero(counts).flatten().tolist()) == set(others)
        expected = 4000 / len(others)
        # each count is Binomial(4000, 1/n): within 5 standard deviations of its mean
        sd = math.sqrt(4000 * (1 / len(others)) * (1 - 1 / len(others)))
        assert (counts[others] - expected).abs().max() < 5 * sd


def _sampled_mean_and_se(fn, draws: int):
    values = torch.stack([fn(torch.Generator().manual_seed(i)) for i in range(draws)])
    return values.mean(), values.std() / math.sqrt(draws)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_sampled_divergence_is_unbiased(divergence):
    side = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 2])  # uneven: uniform draw weights would bias
    mu = _mu(len(side), 3, seed=31)
    mu[6], mu[7:] = 0.97, 0.03  # groups 1 and 2 far apart: their few pairs weigh a lot
    exact = R.posterior_divergence(mu, side, divergence=divergence)
    mean, se = _sampled_mean_and_se(
        lambda g: R.posterior_divergence(mu, side, divergence=divergence, pairs=2, generator=g), 400)
    # the mean of 400 independent estimates is within 4 standard errors of its expectation
    assert abs(mean - exact) < 4 * se
    assert se < 0.05 * exact  # and the test is sharp enough to see a real bias


@pytest.mark.parametrize("distance", DISTANCES)
def test_sampled_distance_is_unbiased(distance):
    side = torch.tensor([4, 4, 4, 4, 4, 4, 9, 0, 0])
    h = _h(len(side), 3, seed=32)
    exact = R.feature_distance(h, side, distance=distance)
    mean, se = _sampled_mean_and_se(
        lambda g: R.feature_distance(h, side, distance=distance, pairs=2, generator=g), 400)
    assert abs(mean - exact) < 4 * se
    assert se < 0.05 * exact


def test_naive_uniform_weighting_would_be_biased():
    """The unbiasedness tests are sharp: uniformly weighted draws miss the exact value."""
    side = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2, 2])
    mu = _mu(len(side), 3, seed=31)
    mu[6], mu[7:] = 0.97, 0.03
    exact = R.posterior_divergence(mu, side, divergence="hellinger")
    groups = G.Groups(side, len(side), mu.device, mu.dtype)
    partners = groups.sample_partners(4000, torch.Generator().manual_seed(0))
    naive = torch.stack([bf.pair_divergence(mu[p], mu[q], "hellinger")
                         for p in range(len(side)) for q in partners[p, :200].tolist()]).mean()
    assert abs(naive - exact) > 0.1 * exact


def test_cross_group_pair_count():
    for side in SIDES.values():
        assert R.cross_group_pair_count(torch.tensor(side)) == len(bf.cross_pairs(side))


def test_float32_closed_forms_are_accurate():
    side = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(0))
    mu = _mu(128, 64, seed=4)
    for div in DIVERGENCES:
        want = R.posterior_divergence(mu, side, divergence=div)
        got = R.posterior_divergence(mu.float(), side, divergence=div)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_float32_hellinger_of_close_posteriors_is_accurate():
    """Posteriors a few hundredths apart (an RBM's at initialisation): the divergence is a small
    difference of large sums; float32 data give it as well as the float32 rounding of
    sqrt(mu) and sqrt(1 - mu) allows (relative errors of about 1e-4 here, whatever the form)."""
    side = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(5)
    mu = 0.5 + 0.02 * torch.rand(128, 500, generator=g, dtype=torch.float64)
    want = bf.posterior_divergence(mu[:, :50], side, "hellinger")
    torch.testing.assert_close(R.posterior_divergence(mu[:, :50], side, divergence="hellinger"),
                               want, rtol=1e-10, atol=0)
    want = R.posterior_divergence(mu, side, divergence="hellinger")
    got = R.posterior_divergence(mu.float(), side, divergence="hellinger")
    torch.testing.assert_close(got.double(), want, rtol=5e-4, atol=0)


def test_generator_on_other_device_than_data_is_accepted():
    side = torch.tensor([0, 1, 1, 2])
    mu = _mu(4, 3, seed=1).float()
    v1 = R.posterior_divergence(mu, side, divergence="bhattacharyya", pairs=3,
                                generator=torch.Generator().manual_seed(1))
    v2 = R.posterior_divergence(mu, side, divergence="bhattacharyya", pairs=3,
                                generator=torch.Generator().manual_seed(1))
    assert v1.item() == v2.item()


@pytest.mark.parametrize("bad", [dict(divergence="kl"), dict(divergence="hellinger", pairs=0),
                                 dict(divergence="hellinger", pairs="some"),
                                 dict(divergence="hellinger", normalize="mean")])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        R.posterior_divergence(_mu(3, 2, seed=0), torch.tensor([0, 1, 1]), **bad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pairs", ["all", 4])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_cuda_matches_cpu(divergence, pairs):
    side = torch.tensor(SIDES["uneven"])
    mu = _mu(len(side), 5, seed=41)
    kw = dict(divergence=divergence, pairs=pairs)
    v_cpu, g_cpu = R.posterior_divergence_and_grad(mu, side, generator=torch.Generator().manual_seed(0), **kw)
    v_gpu, g_gpu = R.posterior_divergence_and_grad(mu.cuda(), side.cuda(),
                                                   generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(v_gpu.cpu(), v_cpu)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [1e-6, 1e-12])
@pytest.mark.parametrize("h", [8, 7, 6])
def test_bhattacharyya_products_of_units_neither_underflow_nor_lose_units(h, eps, dtype):
    """Opposite posteriors (cos d near its floor 2 sqrt(eps)), widths not divisible by 8."""
    side = torch.tensor([0, 1, 0, 1])
    mu = torch.tensor([[0.0] * h, [1.0] * h, [1.0] * h, [0.3] * h], dtype=dtype)
    got = R.posterior_divergence(mu, side, divergence="bhattacharyya", pairs="all", eps=eps)
    # reference in float64 on the same clamped input (float32 rounds 1 - eps itself)
    want = bf.posterior_divergence(mu.clamp(eps, 1 - eps).double(), side, "bhattacharyya", eps=0.0)
    assert torch.isfinite(got)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_feature_distances_without_one_hot_matmul(monkeypatch):
    """Large B * G falls back to index_add / gather: same values and gradients."""
    monkeypatch.setattr(G, "ONE_HOT_MAX_ELEMENTS", 1)
    side = torch.tensor(SIDES["uneven"])
    h = _h(len(side), 4, seed=52, requires_grad=True)
    for dist in DISTANCES:
        torch.testing.assert_close(R.feature_distance(h, side, distance=dist),
                                   bf.feature_distance(h, side, dist))
        assert torch.autograd.gradcheck(lambda x, d=dist: R.feature_distance(x, side, distance=d), (h,))


@pytest.mark.parametrize("pairs", ["all", 3])
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_logit_gradient_is_the_mu_gradient_times_the_sigmoid_slope(divergence, normalize, pairs):
    """grad_wrt="logit" (what the RBM uses): d/dmu * mu (1 - mu), 0 where mu was clamped."""
    g = torch.Generator().manual_seed(11)
    mu = torch.sigmoid(5 * torch.randn(23, 9, generator=g, dtype=torch.float64))
    mu[0, 0], mu[1, 1] = 1.0, 0.0  # saturated units: clamped, so no gradient
    side = torch.tensor([3, 3, 1, 7, 7, 7, 1, 3, 9] + [1, 3, 7] * 4 + [9, 9])
    kw = dict(divergence=divergence, normalize=normalize, pairs=pairs)
    value, grad = R.posterior_divergence_and_grad(mu, side, generator=torch.Generator().manual_seed(2), **kw)
    value_z, grad_z = R.posterior_divergence_and_grad(mu, side, grad_wrt="logit",
                                                      generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(value_z, value, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_z, grad * mu * (1 - mu), rtol=1e-10, atol=1e-15)
    assert grad_z[0, 0] == 0 and grad_z[1, 1] == 0
    if pairs == "all":  # and both against the brute-force twin
        leaf = mu.clone().requires_grad_(True)
        want = bf.posterior_divergence(leaf, side, divergence, normalize=normalize)
        want.backward()
        torch.testing.assert_close(value, want.detach())
        torch.testing.assert_close(grad_z, leaf.grad * mu * (1 - mu))
    zero_value, zero_grad = R.posterior_divergence_and_grad(mu, torch.zeros(23, dtype=torch.long),
                                                            grad_wrt="logit", **kw)
    assert zero_value == 0 and not zero_grad.any()


@pytest.mark.parametrize("pairs", ["all", 3])
@pytest.mark.parametrize("wrt", ["mu", "logit"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_scaled_gradient_added_to_a_base_is_that_sum(divergence, wrt, pairs):
    """grad_scale and add_to (the RBM's positive statistics mu + lambda B grad in the gradient's
    own last pass): base + scale * gradient, 0 added where mu was clamped, base untouched."""
    g = torch.Generator().manual_seed(12)
    mu = torch.sigmoid(5 * torch.randn(23, 9, generator=g, dtype=torch.float64))
    mu[0, 0], mu[1, 1] = 1.0, 0.0
    side = torch.tensor([3, 3, 1, 7, 7, 7, 1, 3, 9] + [1, 3, 7] * 4 + [-1, 9])
    base = torch.randn(23, 9, generator=g, dtype=torch.float64)
    kept = base.clone()
    kw = dict(divergence=divergence, pairs=pairs, grad_wrt=wrt, grad_of="row_mean")
    value, grad = R.posterior_divergence_and_grad(mu, side, generator=torch.Generator().manual_seed(2), **kw)
    value_s, scaled = R.posterior_divergence_and_grad(
        mu, side, generator=torch.Generator().manual_seed(2), grad_scale=-2.5, **kw)
    value_a, added = R.posterior_divergence_and_grad(
        mu, side, generator=torch.Generator().manual_seed(2), grad_scale=-2.5, add_to=base, **kw)
    assert torch.equal(value_s, value) and torch.equal(value_a, value)
    torch.testing.assert_close(scaled, -2.5 * grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(added, base - 2.5 * grad, rtol=1e-12, atol=1e-15)
    assert added[0, 0] == base[0, 0] and added[1, 1] == base[1, 1]
    assert torch.equal(base, kept)


def test_add_to_must_have_the_shape_of_mu():
    mu = _mu(6, 3, seed=13)
    with pytest.raises(ValueError, match=r"add_to must have mu's shape \(6, 3\)"):
        R.posterior_divergence_and_grad(mu, torch.tensor([0, 0, 1, 1, 2, 2]), divergence="hellinger",
                                        add_to=torch.zeros(6, 4, dtype=mu.dtype))


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("n_groups", [1, 4])
def test_partner_tables_from_the_epoch_weights_equal_the_small_products(n_groups, large, monkeypatch):
    """A batch of Groups.of_batches gives the row mean's partner tables from the epoch's stacked
    weights; any other pair weights (a copy here), or an epoch whose stacked weights and one-hot
    matrices would be large, from products of their own: the same tables."""
    if large:
        monkeypatch.setattr(G, "ONE_HOT_MAX_ELEMENTS", 1)
    g = torch.Generator().manual_seed(14)
    ids = torch.randint(-1, n_groups, (50,), generator=g)
    batches = list(torch.randperm(50, generator=g).split(16))
    x = torch.rand(50, 7, generator=g, dtype=torch.float64)
    for groups, rows in zip(G.Groups.of_batches(batches, ids, n_groups, torch.float64), batches):
        assert (groups.partner_weights is None) == large
        got = groups.partner_tables(x[rows], groups.row_pair_weights)
        want = groups.partner_tables(x[rows], groups.row_pair_weights.clone())
        sums = torch.zeros(n_groups + 1, 7, dtype=torch.float64).index_add_(
            0, ids[rows].remainder(n_groups + 1), x[rows])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got[0], sums, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got[1], -0.5 * groups.cross_slots @ sums, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got[2], groups.row_pair_weights @ sums, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("divergence", ["hellinger", "jeffreys"])
def test_closed_forms_leave_their_input_alone(divergence):
    """The closed forms reuse buffers in place: never the caller's mu."""
    side = torch.tensor(SIDES["uneven"])
    mu = _mu(len(side), 4, seed=61)
    kept = mu.clone()
    for wrt in ("mu", "logit"):
        R.posterior_divergence_and_grad(mu, side, divergence=divergence, grad_wrt=wrt)
    R.posterior_divergence(mu, side, divergence=divergence)
    assert torch.equal(mu, kept)


@pytest.mark.parametrize("bad", [0, MAX_SAMPLED_PAIRS + 1, True, 2.0, "some"])
def test_one_pairs_check_for_configs_and_penalties(bad):
    with pytest.raises(ValueError, match="dr.pairs"):
        PosteriorDRConfig(weight=1.0, pairs=bad)
    with pytest.raises(ValueError, match="pairs"):
        R.posterior_divergence(_mu(3, 2, seed=0), torch.tensor([0, 1, 1]), divergence="hellinger", pairs=bad)
    PosteriorDRConfig(weight=1.0, pairs=MAX_SAMPLED_PAIRS)
