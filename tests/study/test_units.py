"""The study's statistics and tuning rules, without a service: Holm's correction and the t
interval against hand computations, the dedupe of lambda-0 specs, edge flags, the answer rule."""
from __future__ import annotations

import dataclasses
import datetime
import math

import numpy as np
import pytest

from drtrain_study.compare import TEST_ERROR, family, winners
from drtrain_study.data import load, shrink
from drtrain_study.plans import PLANS
from drtrain_study.records import Choice, DatasetOutcome, Study, StudyConfig, TuningCell
from drtrain_study.regime import Regime
from drtrain_study.runs import ARM_BY_KEY, RunResult
from drtrain_study.service import Uploaded
from drtrain_study.stats import holm, mean_ci, paired
from drtrain_study.tuning import choose, claim_fresh, edge_flags

PLAN = PLANS["digits-10pct"]


def test_holm_matches_a_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([math.nan, 0.01]) == pytest.approx([1.0, 0.02])  # nan counts in m, as p = 1


def test_confidence_interval_and_paired_effects_match_hand_computations():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    # t(0.975, 3) = 3.182446; s = sqrt(5/3) = 1.290994; half = t * s / sqrt(4)
    assert mean == 2.5 and half == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)
    assert mean_ci([0.3]) == (0.3, 0.0)
    res = paired([0.10, 0.12, 0.11, 0.15], [0.20, 0.20, 0.20, 0.20])
    d = np.array([-0.10, -0.08, -0.09, -0.05])
    assert res.mean == pytest.approx(d.mean()) and res.dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert res.ci_low < res.mean < res.ci_high and (res.better, res.worse) == (4, 0) and res.p < 0.01


def test_lambda_zero_is_the_controls_spec_and_is_submitted_once():
    data = shrink(load("digits-10pct"), 300)
    regime = Regime(PLAN, data, Uploaded("ds-train", "ds-test"))
    for arm in ("dr", "dr_sr", "bh_sr", "feat", "deep_dr_sr"):
        control = ARM_BY_KEY[arm].control
        assert regime.key(arm, 0.1, 0.0, 1000) == regime.key(control, 0.1, None, 1000)
        assert regime.key(arm, 0.1, 1.0, 1000) != regime.key(control, 0.1, None, 1000)
    work = {w.key[2]: w for w in regime.tuning_work()}
    assert set(work) == set(PLAN.arms)
    assert work["dr"].grid["pretrain.dr.weight"] == [0.1, 1.0, 10.0]
    assert work["feat"].grid["finetune.dr.weight"] == [0.1, 1.0, 10.0]
    assert "pretrain.dr.weight" not in work["dbn"].grid
    n_lr, n_seeds = len(PLAN.lr_grid), len(PLAN.sweep_seeds)
    n_dr = sum(ARM_BY_KEY[a].is_dr for a in PLAN.arms)
    assert sum(w.size for w in work.values()) == n_lr * n_seeds * ((len(PLAN.arms) - n_dr) + 3 * n_dr)


def test_claim_fresh_shares_whole_weights_and_refuses_a_partial_overlap():
    owners = {"k1": "dbn", "k2": "dbn"}
    fresh, shared = claim_fresh("dr", {0.0: ["k1", "k2"], 1.0: ["k3", "k4"]}, owners)
    assert fresh == [1.0] and shared == {0.0: "dbn"} and owners["k3"] == "dr"
    with pytest.raises(ValueError):
        claim_fresh("x", {0.0: ["k1", "new"]}, owners)


def test_edge_flags_and_tie_breaks():
    assert edge_flags(0.1, 1.0, PLAN) == []
    assert edge_flags(0.03, 0.1, PLAN) == ["lr 0.03 (lowest)", "lambda 0.1 (lowest)"]
    assert edge_flags(0.3, 10.0, PLAN) == ["lr 0.3 (highest)", "lambda 10 (highest)"]
    assert edge_flags(0.1, 0.0, PLAN) == []  # lambda 0: "DR switched off", not an edge
    assert edge_flags(0.1, 1.0, dataclasses.replace(PLAN, lr_grid=(0.1,), weight_grid=(0.0, 1.0))) == []
    cells = [TuningCell("dr", lr, w, [0.2], ["j"]) for lr in (0.03, 0.1) for w in (0.0, 1.0)]
    choice = choose(PLAN, "dr", cells)
    assert (choice.learning_rate, choice.weight, choice.dr_off) == (0.03, 0.0, True)


def _run(arm: str, seed: int, test_error: float) -> RunResult:
    return RunResult("x", arm, seed, f"{arm}{seed}", 0.1, None, test_error, [0.5], [1.0], [1.0, 1.0], 1.0, None,
                     None, 0.0, 1.0)


def _study(errors: dict[str, float]) -> tuple[Study, DatasetOutcome]:
    noise = [0.001, -0.002, 0.0015, -0.001, 0.002, 0.0, 0.0005, -0.0005, 0.001, -0.0015]
    runs = [_run(arm, s, base + n * (1 + i)) for i, (arm, base) in enumerate(errors.items())
            for s, n in enumerate(noise)]
    plan = dataclasses.replace(PLAN, arms=tuple(errors))
    choices = {a: Choice(a, 0.1, None, 0.1) for a in errors}
    outcome = DatasetOutcome("x", "", plan, [], [], choices, runs, [0.3] * 10, 10, 10)
    study = Study(StudyConfig("test", (plan,)), "", datetime.datetime.now(datetime.UTC), 1.0, "", "", [outcome])
    return study, outcome


def test_an_arm_must_beat_both_its_control_and_glorot_after_holm():
    study, outcome = _study({"glorot": 0.20, "dbn": 0.30, "dbn_sr": 0.30, "dr": 0.10, "dr_sr": 0.25})
    tests = family(study, TEST_ERROR)
    assert {(c.treatment, c.reference) for c in tests} == \
        {("dr", "dbn"), ("dr", "glorot"), ("dr_sr", "dbn_sr"), ("dr_sr", "glorot"), ("dr_sr", "dr")}
    assert all(c.holm_p >= c.result.p for c in tests)
    # dr beats dbn and glorot; dr_sr beats only its weak control
    assert winners(tests, outcome) == ["dr"]
