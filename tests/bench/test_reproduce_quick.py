"""The reproduction study (bench/reproduce.py) on a tiny config, through a real embedded service
(`drtrain up`, one worker): the same path as the committed study, so it is also an end-to-end
test of uploads with partial labels and side information, jobs, sweeps and metric reads.
Structure and finiteness only, never the outcome (which arm wins is what the study measures)."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from bench import reproduce, study_data
from bench.study_report import CSV_COLUMNS, where_dr_helps
from bench.study_runs import ARM_BY_KEY, DISC, GEN, GEN_COARSE, Budget, RunResult
from bench.study_service import embedded_service
from bench.study_store import RESULTS_NAME
from bench.study_types import DatasetOutcome

TINY = Budget(hidden=(16, 12), deep_hidden=(8,) * 6, pretrain_epochs=1, finetune_epochs=3)
SEEDS = 2
DIGITS_ARMS = ("a", "b", "c", "e", "f0", "f1")
SCARCE_ARMS = ("a", "b", "cg")
DIGITS_GRIDS = {GEN: (0.1, 1.0), DISC: (0.1, 1.0)}
HAVE_FASHION = (study_data.FASHION_ROOT / "train-images-idx3-ubyte.gz").exists()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    plans = [reproduce.DatasetPlan("digits", SEEDS, TINY, DIGITS_ARMS, dict(reproduce.DEFAULT_WEIGHTS),
                                   DIGITS_GRIDS)]
    if HAVE_FASHION:
        plans.append(reproduce.DatasetPlan("fashion-10pct", 1, TINY, SCARCE_ARMS, dict(reproduce.DEFAULT_WEIGHTS)))
    cfg = reproduce.StudyConfig("test", tuple(plans), train_limit=400)
    with embedded_service(workers=1, data_dir=tmp_path_factory.mktemp("svc")) as client:
        study = reproduce.run_study(cfg, client, "the test's embedded service", command="pytest tiny config")
        yield study, client


def _outcome(study, name: str) -> DatasetOutcome:
    return next(o for o in study.outcomes if o.name == name)


def test_every_arm_and_seed_ran_as_a_job_with_finite_measurements(served):
    study, client = served
    for outcome in study.outcomes:
        assert sorted((r.arm, r.seed) for r in outcome.runs) == \
            sorted((a, s) for a in outcome.arms for s in range(outcome.seeds))
        for run in outcome.runs:
            arm = ARM_BY_KEY[run.arm]
            assert 0.0 <= run.test_error <= 1.0
            assert len(run.val_errors) == len(run.train_losses) == TINY.finetune_epochs
            hidden = TINY.deep_hidden if arm.deep else TINY.hidden
            assert len(run.grad_layers) == len(hidden)
            assert all(math.isfinite(v) for v in (*run.train_losses, *run.grad_layers, run.grad_head,
                                                  run.wall_seconds))
            assert (run.train_divergence is not None) == arm.pretrain == (run.recon_errors is not None)
    ids = [r.job_id for o in study.outcomes for r in o.runs]
    assert len(set(ids)) == len(ids)
    # The numbers are the service's: the job's stored result says the same.
    run = _outcome(study, "digits").runs[0]
    job = client.get_job(run.job_id)
    assert job["status"] == "succeeded"
    assert run.test_error == pytest.approx(1.0 - job["result"]["test_accuracy"])


def test_each_arm_submits_the_spec_it_claims(served):
    study, client = served
    digits = _outcome(study, "digits")
    specs = {r.arm: client.get_job(r.job_id)["spec"] for r in digits.runs if r.seed == 0}
    assert specs["a"]["pretrain"] is None and specs["a"]["finetune"]["init"] == "glorot"
    assert specs["b"]["pretrain"]["dr"] is None and specs["b"]["finetune"]["dr"] is None
    assert specs["c"]["pretrain"]["dr"]["weight"] == digits.weights[GEN]
    assert specs["e"]["pretrain"] is None and specs["e"]["finetune"]["dr"]["weight"] == digits.weights[DISC]
    assert specs["f0"]["finetune"]["init"] == "normal" and specs["f0"]["model"]["hidden_layers"] == [8] * 6
    assert specs["f1"]["finetune"]["dr"] is not None
    assert len({s["dataset_id"] for s in specs.values()}) == 1  # digits has no coarse upload


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_label_scarce_regime_pretrains_on_every_row_and_groups_by_the_coarse_class(served):
    study, client = served
    scarce = _outcome(study, "fashion-10pct")
    assert 0 < scarce.n_labelled < scarce.n_rows == 400
    runs = {r.arm: r for r in scarce.runs}
    coarse = client.get_job(runs["cg"].job_id)
    plain = client.get_job(runs["b"].job_id)
    assert coarse["dataset_id"] != plain["dataset_id"]
    dataset = client.get_dataset(coarse["dataset_id"])
    assert dataset["n_with_side"] == 400 and dataset["n_labelled"] == scarce.n_labelled
    assert any(f"only the {scarce.n_labelled} labelled rows" in w for w in plain["warnings"])
    assert coarse["spec"]["pretrain"]["dr"]["weight"] == scarce.weights[GEN_COARSE]


def test_sweeps_run_as_service_sweeps_and_pick_by_validation(served):
    study, client = served
    digits = _outcome(study, "digits")
    assert {(p.weight_name, p.value) for p in digits.sweep} == \
        {(name, v) for name, grid in DIGITS_GRIDS.items() for v in grid}
    for name in DIGITS_GRIDS:
        points = [p for p in digits.sweep if p.weight_name == name]
        assert all(p.run.seed == study.config.sweep_seed for p in points)
        assert digits.weights[name] == min((p.score, p.value) for p in points)[1]
        job = client.get_job(points[0].run.job_id)
        sweep = client.get_sweep(job["sweep_id"])
        assert {c["job_id"] for c in sweep["children"]} == {p.run.job_id for p in points}
    # not swept: kept as given
    assert digits.weights["disc_deep"] == reproduce.DEFAULT_WEIGHTS["disc_deep"]


def test_report_plots_and_curves(served, tmp_path):
    study, _ = served
    report_path, curves_path = reproduce.write_outputs(study, tmp_path)
    report = report_path.read_text()
    for heading in ("## Answer", "## Setup", "## Results: digits", "## Reading", "## Files"):
        assert heading in report
    assert "pytest tiny config" in report and "the test's embedded service" in report
    for key in DIGITS_ARMS:
        assert f"| ({key}) {ARM_BY_KEY[key].label} |" in report
    assert "| (f1) vs (f0) | test error |" in report
    assert not re.search(r"\bnan\b", report, re.IGNORECASE)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert len(links) == 2 * len(study.outcomes)
    for name in links:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    with curves_path.open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    n_runs = sum(len(o.runs) + len(o.sweep) for o in study.outcomes)
    assert len(rows) - 1 == n_runs * TINY.finetune_epochs


def test_the_report_rebuilds_identically_from_the_stored_results(served, tmp_path):
    study, _ = served
    report, _ = reproduce.write_outputs(study, tmp_path / "first")
    assert reproduce.main(["--report-from", str(tmp_path / "first" / RESULTS_NAME), "--out",
                           str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "study.md").read_text() == report.read_text()
    assert (tmp_path / "again" / RESULTS_NAME).read_text() == (tmp_path / "first" / RESULTS_NAME).read_text()


def _run(arm: str, seed: int, test_error: float) -> RunResult:
    return RunResult("x", arm, seed, f"{arm}{seed}", test_error, [0.5], [1.0], [1.0, 1.0], 1.0, None, None, 0.0, 1.0)


def test_where_dr_helps_needs_both_the_own_control_and_random_init():
    noise = [0.001, -0.002, 0.0015, -0.001, 0.002]
    runs = []
    for s, n in enumerate(noise):
        runs += [_run("a", s, 0.20 + n), _run("b", s, 0.30 + n), _run("c", s, 0.10 + n / 3),
                 _run("e", s, 0.20 - n / 2)]
    outcome = DatasetOutcome("x", "", TINY, 5, ("a", "b", "c", "e"), {}, {}, [], runs, 10, 10)
    found = where_dr_helps(outcome)
    # (c) beats (b) and (a); (e) is no better than (a) on average
    assert [(arm, ctrl) for arm, ctrl, _, _ in found] == [("c", "b")]
    # a DR arm that beats only its weak control is not counted
    worse = [r if r.arm != "c" else _run("c", r.seed, 0.25 + noise[r.seed]) for r in runs]
    outcome = DatasetOutcome("x", "", TINY, 5, ("a", "b", "c", "e"), {}, {}, [], worse, 10, 10)
    assert where_dr_helps(outcome) == []


def test_seed_counts_parse_globally_or_per_regime():
    regimes = ["digits", "fashion-mnist"]
    assert reproduce._parse_seeds("4", regimes, quick=False) == {"digits": 4, "fashion-mnist": 4}
    assert reproduce._parse_seeds("fashion-mnist=2", regimes, quick=False) == \
        {"digits": reproduce.FULL_PLANS["digits"][0], "fashion-mnist": 2}
    assert reproduce._parse_seeds(None, ["digits"], quick=True) == {"digits": 2}


def test_the_committed_study_was_made_through_the_service():
    report = (Path(__file__).resolve().parents[2] / "docs" / "study.md").read_text()
    assert report.startswith("# Where does DR help?")
    assert "submitted over HTTP with drtrain_client" in report
