"""The reproduction study (drtrain_study, the `drtrain-study` command) in its --quick config, through a real embedded
service (`drtrain up`): the same path as the committed study, so it is also an end-to-end test of
uploads with partial labels, sweeps over several paths, side rows and metric reads.
Structure and finiteness only, never the outcome (which arm wins is what the study measures)."""
from __future__ import annotations

import csv
import math
import re

import pytest

from drtrain_study.cli import main
from drtrain_study.plans import quick_config
from drtrain_study.report import CSV_COLUMNS, QUESTION, TITLE
from drtrain_study.run import run_study, write_outputs
from drtrain_study.runs import ARM_BY_KEY
from drtrain_study.service import embedded_service
from drtrain_study.store import RESULTS_NAME

REGIME = "digits-10pct"
SEEDS = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cfg = quick_config([REGIME], {REGIME: SEEDS})
    with embedded_service(workers=2, data_dir=tmp_path_factory.mktemp("svc")) as client:
        study = run_study(cfg, client, "the test's embedded service", command="pytest quick config")
        yield study, client


def test_every_arm_and_seed_has_a_test_run_with_finite_measurements(served):
    study, client = served
    outcome = study.outcomes[0]
    budget = outcome.plan.budget
    assert sorted((r.arm, r.seed) for r in outcome.runs) == \
        sorted((a, s) for a in outcome.plan.arms for s in range(SEEDS))
    for run in outcome.runs:
        arm = ARM_BY_KEY[run.arm]
        assert 0.0 <= run.test_error <= 1.0
        assert len(run.val_errors) == len(run.train_losses) == budget.finetune_epochs
        assert len(run.grad_layers) == len(budget.deep_hidden if arm.deep else budget.hidden)
        assert all(math.isfinite(v) for v in (*run.train_losses, *run.grad_layers, run.grad_head, run.wall_seconds))
        if arm.gen and run.weight:
            assert run.dr_pairs is not None and all(math.isfinite(v) and v >= 0 for v in run.dr_pairs)
        if not arm.pretrain:
            assert run.dr_pairs is None
        assert (run.grad_dr_layers is not None) == bool(arm.feat and run.weight)
    assert len(outcome.logreg_errors) == SEEDS and all(0.0 <= e <= 1.0 for e in outcome.logreg_errors)
    run = outcome.runs[0]
    job = client.get_job(run.job_id)
    assert job["status"] == "succeeded"
    assert run.test_error == pytest.approx(1.0 - job["result"]["test_accuracy"])


def test_each_arm_submits_the_spec_it_claims(served):
    study, client = served
    outcome = study.outcomes[0]
    k = outcome.plan.budget.pretrain_batch // 4
    specs = {r.arm: client.get_job(r.job_id)["spec"] for r in outcome.runs if r.seed == 0}
    assert specs["glorot"]["pretrain"] is None and specs["glorot"]["finetune"]["init"] == "glorot"
    assert specs["dbn"]["pretrain"]["dr"] is None and not specs["dbn"]["pretrain"].get("side_rows_per_batch")
    assert specs["dbn_sr"]["pretrain"]["side_rows_per_batch"] == k
    assert specs["deep_normal"]["finetune"]["init"] == "normal"
    assert len(specs["deep_dbn_sr"]["model"]["hidden_layers"]) == 6
    for arm in ("dr", "dr_sr", "bh_sr", "deep_dr_sr", "feat"):
        weight = outcome.choices[arm].weight
        section = specs[arm]["finetune" if arm == "feat" else "pretrain"]["dr"]
        assert (section is None) if weight == 0 else section["weight"] == weight
    if outcome.choices["bh_sr"].weight:
        assert specs["bh_sr"]["pretrain"]["dr"]["pairs"] == {"sample": 16}


def test_tuning_ran_as_service_sweeps_with_lambda_zero_shared(served):
    study, client = served
    outcome = study.outcomes[0]
    plan = outcome.plan
    for arm in plan.arms:
        cells = [c for c in outcome.cells if c.arm == arm]
        weights = plan.weight_grid if ARM_BY_KEY[arm].is_dr else (None,)
        assert {(c.learning_rate, c.weight) for c in cells} == {(lr, w) for lr in plan.lr_grid for w in weights}
        for cell in cells:
            assert len(cell.scores) == len(plan.sweep_seeds)
            assert cell.shared_from == (ARM_BY_KEY[arm].control if cell.weight == 0 else None)
        assert outcome.choices[arm].score == min(c.score for c in cells)
    ids = [r.job_id for r in outcome.tuning_runs]
    assert len(ids) == len(set(ids))
    job = client.get_job(ids[0])
    sweep = client.get_sweep(job["sweep_id"])
    assert set(sweep["grid"]) >= {"finetune.learning_rate", "seed"}
    assert {c["job_id"] for c in sweep["children"]} <= set(ids)


def test_report_answers_first_and_plots_and_curves(served, tmp_path):
    study, _ = served
    report_path, curves_path = write_outputs(study, tmp_path)
    lines = report_path.read_text().splitlines()
    assert lines[0] == TITLE and lines[2] == f"**{QUESTION}**"
    assert re.match(rf"- \*\*{REGIME}\*\*: (no\.|yes: )", lines[4])
    report = "\n".join(lines)
    for heading in ("## Setup", "## Tuning", f"## Results: {REGIME}", "## Caveats", "## Files"):
        assert heading in report
    assert "pytest quick config" in report and "logistic regression (local, not through the service)" in report
    for arm in study.outcomes[0].plan.arms:
        assert f"| `{arm}` {ARM_BY_KEY[arm].label} |" in report
    assert "| `dr_sr` vs `dbn_sr` | control |" in report
    assert not re.search(r"\bnan\b", report, re.IGNORECASE)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert len(links) == 2
    for name in links:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with curves_path.open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    outcome = study.outcomes[0]
    assert len(rows) - 1 == (len(outcome.runs) + len(outcome.tuning_runs)) * outcome.plan.budget.finetune_epochs


def test_the_report_rebuilds_identically_from_the_stored_results(served, tmp_path):
    study, _ = served
    report, _ = write_outputs(study, tmp_path / "first")
    assert main(["--report-from", str(tmp_path / "first" / RESULTS_NAME), "--out",
                           str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "study.md").read_text() == report.read_text()
    assert (tmp_path / "again" / RESULTS_NAME).read_text() == (tmp_path / "first" / RESULTS_NAME).read_text()
