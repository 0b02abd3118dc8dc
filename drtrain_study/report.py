"""Markdown report and per-epoch CSV of the reproduction study (written by drtrain_study.run).
The answer comes first, computed from the Holm-corrected paired tests; nothing is hard-coded."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

from drtrain_study.compare import GRAD_RATIO, TEST_ERROR, Comparison, family, find, fmt_p, winners
from drtrain_study.records import curves_name, gradients_name
from drtrain_study.report_setup import lambda_text, setup, tuning
from drtrain_study.runs import ARM_BY_KEY, RunResult
from drtrain_study.stats import mean_ci

if TYPE_CHECKING:
    from drtrain_study.records import DatasetOutcome, Study

TITLE = "# Where does DR help? Study v2: equal tuning, paired seeds, Holm-corrected, run through the service"
QUESTION = "Does any DR arm beat both its own no-DR control and Glorot, at Holm p < 0.05?"


def _arm_runs(outcome: DatasetOutcome, arm: str) -> list[RunResult]:
    return sorted((r for r in outcome.runs if r.arm == arm), key=lambda r: r.seed)


def _err(values: list[float]) -> str:
    m, h = mean_ci(values)
    return f"{100 * m:.2f} ± {100 * h:.2f}"


def _num(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    return f"{sum(finite) / len(finite):.3g}" if finite else "—"


def _answer(study: Study, tests: list[Comparison]) -> list[str]:
    lines = [f"**{QUESTION}**", ""]
    for outcome in study.outcomes:
        found = winners(tests, outcome)
        if not found:
            lines.append(f"- **{outcome.name}**: no.")
            continue
        parts = [f"`{a}` ({_gain(tests, outcome.name, a, 'control')} vs its control, "
                 f"{_gain(tests, outcome.name, a, 'glorot')} vs Glorot)" for a in found]
        lines.append(f"- **{outcome.name}**: yes: " + "; ".join(parts) + ".")
    return lines + ["", *_answer_table(study, tests), ""]


def _gain(tests: list[Comparison], regime: str, arm: str, role: str) -> str:
    c = find(tests, regime, arm, role)
    if c is None:  # winners() only names arms that have both comparisons
        raise ValueError(f"{regime} {arm}: no {role} comparison")
    return f"{100 * c.result.mean:+.2f} pp, Holm p {fmt_p(c.holm_p)}"


def _answer_table(study: Study, tests: list[Comparison]) -> list[str]:
    lines = ["| regime | arm | test error % (mean ± 95% CI) | Holm p vs control | Holm p vs Glorot |",
             "|---|---|---|---|---|"]
    for outcome in study.outcomes:
        for arm in outcome.plan.arms:
            if not ARM_BY_KEY[arm].is_dr:
                continue
            cells = []
            for role in ("control", "glorot"):
                c = find(tests, outcome.name, arm, role)
                cells.append("—" if c is None else
                             f"{fmt_p(c.holm_p)} ({100 * c.result.mean:+.2f} pp vs `{c.reference}`)")
            errors = [r.test_error for r in _arm_runs(outcome, arm)]
            lines.append(f"| {outcome.name} | `{arm}` | {_err(errors)} | {cells[0]} | {cells[1]} |")
    return lines


def _arms_table(outcome: DatasetOutcome) -> list[str]:
    lines = ["| arm | test error % (mean ± 95% CI) | lr | lambda | DR pairs per batch, RBM 1 | ‖∇W₁‖ class., "
             "epoch 1 | ‖∇W_last‖ class., epoch 1 | ratio first/last | ‖∇W₁‖ of the DR term | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in outcome.plan.arms:
        runs = _arm_runs(outcome, arm)
        c = outcome.choices[arm]
        lines.append("| " + " | ".join([
            f"`{arm}` {ARM_BY_KEY[arm].label}", _err([r.test_error for r in runs]), f"{c.learning_rate:g}",
            lambda_text(c), _num([r.dr_pairs[0] if r.dr_pairs else math.nan for r in runs]),
            _num([r.grad_first for r in runs]), _num([r.grad_last for r in runs]),
            _num([r.grad_ratio for r in runs]),
            _num([r.grad_dr_layers[0] if r.grad_dr_layers else math.nan for r in runs]),
            f"{sum(r.wall_seconds for r in runs) / len(runs):.1f}"]) + " |")
    lines.append(f"| logistic regression (local, not through the service) | {_err(outcome.logreg_errors)} "
                 "| — | — | — | — | — | — | — | — |")
    return lines


def _comparison_table(tests: list[Comparison], regime: str, unit_pp: bool) -> list[str]:
    lines = ["| comparison | reference's role | mean Δ (DR − reference) [95% CI] | Cohen's dz | "
             "DR better / worse (seeds) | paired t p | Holm p |", "|---|---|---|---|---|---|---|"]
    scale, unit = (100.0, " pp") if unit_pp else (1.0, "")
    for c in (c for c in tests if c.regime == regime):
        r = c.result
        dz = "n/a" if math.isnan(r.dz) else f"{r.dz:+.2f}"
        lines.append(f"| `{c.treatment}` vs `{c.reference}` | {', '.join(c.roles)} | "
                     f"{scale * r.mean:+.3g}{unit} [{scale * r.ci_low:+.3g}, {scale * r.ci_high:+.3g}] | "
                     f"{dz} | {r.better} / {r.worse} | "
                     f"{fmt_p(r.p)} | {fmt_p(c.holm_p)} |")
    return lines


def _results(outcome: DatasetOutcome, tests: list[Comparison], grads: list[Comparison]) -> list[str]:
    compute = sum(r.wall_seconds for r in outcome.tuning_runs) + \
        sum(r.wall_seconds for r in {r.job_id: r for r in outcome.runs}.values())
    return [f"## Results: {outcome.name}", "",
            f"{outcome.n_rows:,} training rows, {outcome.n_labelled:,} labelled; "
            f"test seeds 0..{outcome.plan.seeds - 1}. "
            "Job time of this regime (tuning and test, summed over distinct jobs): "
            f"{compute / 60:.1f} min.", "",
            *_arms_table(outcome), "",
            f"![{outcome.name}: validation error per epoch]({curves_name(outcome.name)})", "",
            f"![{outcome.name}: gradient norms per layer]({gradients_name(outcome.name)})", "",
            "Test error, paired by seed (Holm over every test-error comparison of the study):", "",
            *_comparison_table(tests, outcome.name, True), "",
            "Gradient ratio first/last hidden layer, classification loss only, first fine-tuning epoch "
            "(higher = less vanishing; Holm over every gradient-ratio comparison of the study, "
            "a family of its own):", "",
            *_comparison_table(grads, outcome.name, False), ""]


CAVEATS = """\
- **DR as defined here.** The paper's equations, datasets and numbers are not public to us (see
  docs/dr.md); this measures this project's definition of DR, not the paper's exact method.
- **Equal tuning.** Every arm had the same learning-rate grid; DR arms also a lambda grid with 0 in
  it, so a DR arm can never be worse on validation than its control at the same lr except by noise.
  The test set entered no choice.
- **Validation** is drawn by the service from the labelled rows with the job's seed; it is small in
  these label-scarce regimes, so choices are noisy, most where one sweep seed is used.
- **The deep net's no-DR control has side rows** (`deep_dbn_sr`): a deep DBN without them was not
  run. Side rows without DR can hurt a DBN (compare `dbn_sr` with `dbn` in the shallow net), so that
  control may be handicapped by them; the deep DR arm's comparisons with Glorot and N(0, 0.01)
  initialisation do not depend on it.
- **Grid edges.** Where a chosen value sits on the edge of its grid (flagged in the tuning tables),
  a better value may lie outside it, for the DR arm and its control alike.
- **Gradient norms** are the mean Frobenius norms of d loss / d W of the classification loss alone over
  the first fine-tuning epoch (the DR term's own norm is its own column); the ratio first/last hidden
  layer is the vanishing-gradient indicator and also depends on the initial weight scale.
- **Compute**: pretrained arms spend pretraining epochs on top of the same fine-tuning budget (wall
  seconds column).
"""


def render(study: Study) -> str:
    tests, grads = family(study, TEST_ERROR), family(study, GRAD_RATIO)
    lines = [TITLE, "", *_answer(study, tests),
             f"Generated by `{study.command}` ({study.config.mode} mode) on "
             f"{study.started:%Y-%m-%d %H:%M} UTC in {study.seconds / 60:.1f} min, on {study.machine}. "
             "Errors in %; ± is the half-width of the 95 % t interval over test seeds.", "",
             *setup(study), "## Tuning", ""]
    for outcome in study.outcomes:
        lines += tuning(outcome)
    for outcome in study.outcomes:
        lines += _results(outcome, tests, grads)
    lines += ["## Caveats", "", CAVEATS, "## Files", "",
              "- Per-epoch validation error and training loss of every run (tuning and test): "
              f"`{study.curves_name}` (columns: {', '.join(CSV_COLUMNS)}).",
              "- Every run's measurements (what this report is built from): `study_results.json`; "
              "`drtrain-study --report-from docs/study_results.json` rebuilds this report and its "
              "plots without training.",
              "- Reproduce: the command above; `--quick` is a 2-seed digits-10pct smoke run "
              "(tiny network and grid) whose numbers are not evidence.", ""]
    return "\n".join(lines)


CSV_COLUMNS = ("regime", "phase", "arm", "seed", "job_id", "learning_rate", "dr_weight", "epoch", "val_error",
               "train_loss")


def write_curves(study: Study, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for outcome in study.outcomes:
            tagged = [("tuning", r) for r in outcome.tuning_runs] + [("test", r) for r in outcome.runs]
            for phase, run in tagged:
                weight = "" if run.weight is None else f"{run.weight:g}"
                for epoch, (err, loss) in enumerate(zip(run.val_errors, run.train_losses), start=1):
                    writer.writerow([outcome.name, phase, run.arm, run.seed, run.job_id,
                                     f"{run.learning_rate:g}", weight, epoch, f"{err:.6f}", f"{loss:.6f}"])
