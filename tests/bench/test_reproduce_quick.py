"""The reproduction study's core (bench/reproduce.py) on a tiny config: structure and finiteness of
what it writes, never its outcome (which arm wins is what the study measures, not a contract)."""
from __future__ import annotations

import csv
import math
import re

import pytest
import torch

from bench import reproduce, study_data
from bench.study_report import CSV_COLUMNS
from bench.study_runs import ARM_BY_KEY, ARMS, DISC, Budget, run_arm

TINY_BUDGET = Budget(hidden=(16, 12), pretrain_epochs=1, finetune_epochs=3)
WEIGHTS = {"hellinger": 1.0, "bhattacharyya": 0.3, DISC: 1.0}
GRIDS = {"hellinger": (0.1, 1.0), DISC: (0.1, 1.0)}
SEEDS = 2


@pytest.fixture(scope="module")
def study():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = reproduce.StudyConfig(
            mode="test", plans=(reproduce.DatasetPlan("digits", SEEDS, TINY_BUDGET, dict(WEIGHTS), GRIDS),),
            train_limit=200)
        yield reproduce.run_study(cfg, command="pytest tiny config")
    finally:
        torch.set_num_threads(threads)


def _finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_every_arm_and_seed_runs_with_finite_measurements(study):
    (outcome,) = study.outcomes
    assert sorted((r.arm, r.seed) for r in outcome.runs) == sorted((a.key, s) for a in ARMS for s in range(SEEDS))
    for run in outcome.runs:
        assert 0.0 <= run.test_error <= 1.0
        assert len(run.val_errors) == len(run.train_losses) == TINY_BUDGET.finetune_epochs
        assert all(0.0 <= e <= 1.0 for e in run.val_errors)
        assert all(_finite(v) for v in (*run.train_losses, run.grad_first, run.grad_last, run.grad_head,
                                        run.grad_ratio, run.wall_seconds))
        assert len(run.init_divergence) == len(TINY_BUDGET.hidden)
        assert all(_finite(d) and 0.0 <= d <= 1.0 for d in run.init_divergence)
        pretrained = ARM_BY_KEY[run.arm].pretrain
        assert (run.train_divergence is not None) == pretrained
        assert (run.recon_errors is not None) == pretrained
        if pretrained:
            assert all(_finite(v) for v in (*run.train_divergence, *run.recon_errors))
            assert run.pretrain_seconds > 0.0


def test_sweep_picks_each_weight_from_its_grid_by_validation(study):
    (outcome,) = study.outcomes
    swept = {(p.weight_name, p.value) for p in outcome.sweep}
    assert swept == {(name, v) for name, grid in GRIDS.items() for v in grid}
    for name in GRIDS:
        points = [p for p in outcome.sweep if p.weight_name == name]
        assert all(p.run.seed == study.config.sweep_seed for p in points)
        assert outcome.weights[name] == min((p.score, p.value) for p in points)[1]
    # Not swept here: kept as given.
    assert outcome.weights["bhattacharyya"] == WEIGHTS["bhattacharyya"]


def test_report_has_the_documented_sections_and_no_nan(study, tmp_path):
    report_path, curves_path = reproduce.write_outputs(study, tmp_path)
    report = report_path.read_text()
    for heading in ("# Does DR do what the paper claims?", "## Setup", "## Results: digits", "## Reading",
                    "## Files"):
        assert heading in report
    assert "pytest tiny config" in report
    assert f"torch {torch.__version__}" in report
    for arm in ARMS:
        assert f"| ({arm.key}) {arm.label} |" in report  # one row per arm in the main table
    for metric in ("test error", "epochs to target", "grad ratio first/last", "grad norm first layer"):
        assert f"| ({'c'}) vs ({'b'}) | {metric} |" in report
    assert not re.search(r"\bnan\b", report, re.IGNORECASE)
    assert re.search(r"\d+\.\d+ ± \d+\.\d+", report)  # mean ± std cells


def test_plots_are_written_and_linked_from_the_report(study, tmp_path):
    report_path, _ = reproduce.write_outputs(study, tmp_path)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report_path.read_text())
    assert sorted(links) == ["study_digits_curves.png", "study_digits_gradients.png"]
    for name in links:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_curves_csv_has_one_row_per_run_and_epoch(study, tmp_path):
    _, curves_path = reproduce.write_outputs(study, tmp_path)
    with curves_path.open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    (outcome,) = study.outcomes
    n_runs = len(outcome.runs) + len(outcome.sweep)
    assert len(rows) - 1 == n_runs * TINY_BUDGET.finetune_epochs
    col = {name: i for i, name in enumerate(CSV_COLUMNS)}
    for row in rows[1:]:
        assert row[col["run"]] in ("study", "sweep")
        assert row[col["arm"]] in ARM_BY_KEY
        assert 1 <= int(row[col["epoch"]]) <= TINY_BUDGET.finetune_epochs
        assert all(math.isfinite(float(row[col[c]]))
                   for c in ("val_error", "train_loss", "gen_weight", "disc_weight"))


def test_reusing_the_pretrained_stack_equals_pretraining_again():
    """Arm (d) fine-tunes arm (c)'s stack through run_pipeline(resume=...) to save time; that is
    only honest if it gives exactly the run a fresh pretraining would."""
    torch.set_num_threads(1)
    data = study_data.shrink(study_data.digits(), 150)
    _, stack = run_arm(data, TINY_BUDGET, ARM_BY_KEY["c"], 7, WEIGHTS)
    reused, _ = run_arm(data, TINY_BUDGET, ARM_BY_KEY["d"], 7, WEIGHTS, reuse=stack)
    fresh, _ = run_arm(data, TINY_BUDGET, ARM_BY_KEY["d"], 7, WEIGHTS)
    assert reused.pretrain_reused and not fresh.pretrain_reused
    assert reused.val_errors == fresh.val_errors
    assert reused.train_losses == fresh.train_losses
    assert reused.test_error == fresh.test_error
    assert reused.init_divergence == fresh.init_divergence


def test_seed_counts_parse_globally_or_per_dataset():
    datasets = ["digits", "fashion-mnist"]
    assert reproduce._parse_seeds("4", datasets, quick=False) == {"digits": 4, "fashion-mnist": 4}
    assert reproduce._parse_seeds("fashion-mnist=2", datasets, quick=False) == \
        {"digits": reproduce.FULL_SEEDS["digits"], "fashion-mnist": 2}
    assert reproduce._parse_seeds(None, ["digits"], quick=True) == {"digits": 2}
