"""The RBM update's DR weighting (the row mean R of docs/dr.md) against its brute-force
definition, and the property it exists for: a row's push does not grow when its batch holds
few cross-group pairs."""
from __future__ import annotations

import pytest
import torch

from dr_core import groups as G
from dr_core import regularizers as R
from dr_core.config import DIVERGENCES, NORMALIZE
from tests.dr_core import brute_force as bf
from tests.dr_core.test_regularizers import SIDES, _mu

CASES = ["uneven", "two_equal", "single_group", "b2_cross", "all_distinct", "partial",
         "partial_one_group", "none_labelled"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_row_mean_gradient_equals_autograd_of_brute_force(divergence, normalize, case):
    side = torch.tensor(SIDES[case])
    mu = _mu(len(side), 4, seed=31)
    value, grad = R.posterior_divergence_and_grad(mu, side, divergence=divergence,
                                                  normalize=normalize, grad_of="row_mean")
    leaf = mu.clone().requires_grad_(True)
    bf.row_mean_divergence(leaf, side, divergence, normalize=normalize).backward()
    # the value stays the divergence's own: the mean over the batch's cross-group pairs
    want_value = bf.posterior_divergence(mu, side, divergence, normalize=normalize)
    torch.testing.assert_close(value, want_value.detach())
    torch.testing.assert_close(grad, leaf.grad)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_row_mean_logit_gradient_is_mu_gradient_times_slope(divergence):
    side = torch.tensor(SIDES["partial"])
    mu = _mu(len(side), 5, seed=32)
    _, g_mu = R.posterior_divergence_and_grad(mu, side, divergence=divergence, grad_of="row_mean")
    _, g_z = R.posterior_divergence_and_grad(mu, side, divergence=divergence, grad_of="row_mean",
                                             grad_wrt="logit")
    torch.testing.assert_close(g_z, g_mu * mu * (1 - mu))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_row_mean_sampled_gradient_equals_autograd_of_same_draws(divergence):
    """Each of p's K draws weighs 1 / (B K): rebuild the estimate by hand and differentiate it."""
    side = torch.tensor(SIDES["partial"])
    mu = _mu(len(side), 3, seed=33)
    k = 4
    _, grad = R.posterior_divergence_and_grad(mu, side, divergence=divergence, pairs=k,
                                              generator=torch.Generator().manual_seed(5),
                                              grad_of="row_mean")
    groups = G.Groups(side, len(side), mu.device, mu.dtype)
    partners = groups.sample_partners(k, torch.Generator().manual_seed(5))
    leaf = mu.clone().requires_grad_(True)
    est = leaf.sum() * 0
    for p in range(len(side)):
        if int(groups.n_cross_int[p]) == 0:
            continue
        for q in partners[p].tolist():
            est = est + bf.pair_divergence(leaf[p], leaf[q], divergence) / (len(side) * k)
    est.backward()
    torch.testing.assert_close(grad, leaf.grad)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_row_mean_equals_pair_mean_when_every_row_has_as_many_partners(divergence):
    """On balanced, fully labelled batches lambda keeps its meaning: R = the mean over P."""
    side = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    mu = _mu(len(side), 4, seed=34)
    _, g_row = R.posterior_divergence_and_grad(mu, side, divergence=divergence, grad_of="row_mean")
    _, g_pair = R.posterior_divergence_and_grad(mu, side, divergence=divergence)
    torch.testing.assert_close(g_row, g_pair)


def test_a_lone_pair_pushes_its_rows_no_harder_than_a_full_batch_does():
    """The pair mean gives the two rows of a batch's only pair the whole mean's gradient
    (B/2 times a full batch's per-row push); the row mean gives them one row's share."""
    b, h = 64, 6
    mu = _mu(b, h, seed=35)
    full = torch.arange(b) % 2
    lone = torch.full((b,), -1)
    lone[:2] = torch.tensor([0, 1])
    push = {}
    for name, side in (("full", full), ("lone", lone)):
        for grad_of in ("pair_mean", "row_mean"):
            _, g = R.posterior_divergence_and_grad(mu, side, divergence="hellinger", grad_of=grad_of)
            push[name, grad_of] = float(g[:2].abs().mean())
    # the pair mean's push on the lone pair is tens of times a full batch's
    assert push["lone", "pair_mean"] > 10 * push["full", "pair_mean"]
    # the row mean's is of the same size (one partner's gradient against the mean of 32)
    assert push["lone", "row_mean"] < 3 * push["full", "row_mean"]


def test_unknown_grad_of_is_refused():
    side = torch.tensor(SIDES["uneven"])
    with pytest.raises(ValueError, match="grad_of"):
        R.posterior_divergence_and_grad(_mu(len(side), 2, 1), side, divergence="hellinger",
                                        grad_of="rows")
