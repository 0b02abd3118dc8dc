"""Markdown report and per-epoch CSV of the reproduction study (written by bench/reproduce.py)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

from bench.study_plots import curves_name, gradients_name
from bench.study_runs import ARM_BY_KEY, WEIGHT_LABELS, RunResult
from bench.study_stats import (
    Paired,
    by_seed,
    censored_epochs,
    common_seeds,
    epochs_to,
    mean_std,
    paired,
    target_error,
    verdict,
)

if TYPE_CHECKING:
    from bench.study_types import DatasetOutcome, Study

# (treatment, control, what the comparison isolates); only those whose arms a regime ran.
COMPARISONS = (
    ("c", "b", "generative DR (side = label) vs the same DBN without DR"),
    ("cg", "b", "generative DR (side = coarse group) vs the same DBN without DR"),
    ("cg", "c", "generative DR grouped by the coarse group vs by the label"),
    ("d", "c", "adding feature DR to fine-tuning of (c)"),
    ("c", "a", "DBN + generative DR vs random initialisation"),
    ("cg", "a", "DBN + generative DR (coarse group) vs random initialisation"),
    ("b", "a", "DBN without DR vs random initialisation (is pretraining itself the cause?)"),
    ("e", "a", "feature DR vs plain backprop, both from random initialisation"),
    ("eg", "a", "feature DR (coarse group) vs plain backprop, both from random initialisation"),
    ("f1", "f0", "feature DR in the classic deep small-init sigmoid net"),
    ("f0", "a", "the classic deep small-init net vs the 3-layer Glorot net (is the classic setting harder?)"),
)
# Each DR arm's own control without DR (the question "does DR help?" needs both it and (a)).
DR_CONTROLS = {"c": "b", "cg": "b", "d": "b", "e": "a", "eg": "a", "f1": "f0"}


def _pct(m: float, s: float) -> str:
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def _num(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}g} ± {s:.2g}"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def _epochs_cell(runs: list[RunResult], target: float) -> str:
    reached = [epochs_to(r, target) for r in runs]
    hits = sorted(e for e in reached if e is not None)
    if not hits:
        return f"never (0/{len(runs)})"
    censored = sorted(e if e is not None else math.inf for e in reached)
    med = censored[(len(censored) - 1) // 2] if len(censored) % 2 else \
        (censored[len(censored) // 2 - 1] + censored[len(censored) // 2]) / 2
    med_txt = f">{len(runs[0].val_errors)}" if math.isinf(med) else f"{med:g}"
    return f"{med_txt} ({len(hits)}/{len(runs)})"


def _arm_runs(outcome: DatasetOutcome, arm: str) -> list[RunResult]:
    return sorted((r for r in outcome.runs if r.arm == arm), key=lambda r: r.seed)


def _main_table(outcome: DatasetOutcome, target: float) -> list[str]:
    lines = ["| arm | test error % | val error % after epoch 1 | final val error % | epochs to target "
             "(median, reached) | ‖∇W₁‖ epoch 1 | ‖∇W_last‖ epoch 1 | ratio first/last | wall s (pretrain + fine-tune) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in outcome.arms:
        runs = _arm_runs(outcome, key)
        if not runs:
            continue
        wall = mean_std([r.wall_seconds for r in runs])
        pre = mean_std([r.pretrain_seconds for r in runs])[0]
        lines.append("| " + " | ".join([
            f"({key}) {ARM_BY_KEY[key].label}",
            _pct(*mean_std([r.test_error for r in runs])),
            _pct(*mean_std([r.val_errors[0] for r in runs])),
            _pct(*mean_std([r.val_errors[-1] for r in runs])),
            _epochs_cell(runs, target),
            _num(*mean_std([r.grad_first for r in runs])),
            _num(*mean_std([r.grad_last for r in runs])),
            _num(*mean_std([r.grad_ratio for r in runs])),
            f"{wall[0]:.1f} ± {wall[1]:.1f} ({pre:.1f} + {wall[0] - pre:.1f})",
        ]) + " |")
    return lines


def _divergence_table(outcome: DatasetOutcome) -> list[str]:
    pretrained = [k for k in outcome.arms if ARM_BY_KEY[k].pretrain and _arm_runs(outcome, k)]
    if not pretrained:
        return []
    n_layers = len(outcome.budget.hidden)
    div = " | ".join(f"L{i + 1} divergence" for i in range(n_layers))
    recon = " | ".join(f"L{i + 1} recon" for i in range(n_layers))
    lines = ["Cross-group divergence of each RBM at the end of pretraining (mean squared Hellinger "
             "distance between p(h|v) of pairs from different groups, per unit, in [0, 1], on a training "
             "subsample; the groups are the arm's side information) and reconstruction error:", "",
             f"| arm | {div} | {recon} |", "|---" * (1 + 2 * n_layers) + "|"]
    for key in pretrained:
        runs = _arm_runs(outcome, key)
        cells = [_num(*mean_std([getattr(r, attr)[i] for r in runs]))
                 for attr in ("train_divergence", "recon_errors") for i in range(n_layers)]
        lines.append(f"| ({key}) | " + " | ".join(cells) + " |")
    return lines + [""]


def _comparisons_run(outcome: DatasetOutcome) -> list[tuple[str, str, str]]:
    return [(t, c, d) for t, c, d in COMPARISONS if t in outcome.arms and c in outcome.arms]


def comparisons(outcome: DatasetOutcome) -> list[tuple[str, str, str, str, Paired, str]]:
    """(treatment, control, description, metric, paired result, verdict) for every comparison run."""
    target = target_error(outcome.runs)
    metrics = (
        ("test error", lambda r: r.test_error, False),
        ("val error after epoch 1", lambda r: r.val_errors[0], False),
        ("epochs to target", lambda r: censored_epochs(r, target), False),
        ("grad norm first layer", lambda r: r.grad_first, True),
        ("grad ratio first/last", lambda r: r.grad_ratio, True),
    )
    rows = []
    for treat, ctrl, desc in _comparisons_run(outcome):
        seeds = common_seeds(outcome.runs, treat, ctrl)
        if not seeds:
            continue
        t_runs, c_runs = by_seed(outcome.runs, treat), by_seed(outcome.runs, ctrl)
        for name, get, higher in metrics:
            res = paired([get(t_runs[s]) for s in seeds], [get(c_runs[s]) for s in seeds], higher)
            text = verdict(res)
            if name == "epochs to target" and all(epochs_to(runs[s], target) is None
                                                  for runs in (t_runs, c_runs) for s in seeds):
                text = "neither arm reached the target"
            rows.append((treat, ctrl, desc, name, res, text))
    return rows


def _comparison_table(rows) -> list[str]:
    lines = ["| comparison | metric | mean Δ (treatment − control) ± std | treatment better / worse / tie "
             "(seeds) | paired t-test p | reading |", "|---|---|---|---|---|---|"]
    for treat, ctrl, _, name, res, text in rows:
        scale, unit = (100.0, " pp") if "error" in name else (1.0, "")
        ties = res.n - res.better - res.worse
        lines.append(f"| ({treat}) vs ({ctrl}) | {name} | {scale * res.mean:+.3g} ± {scale * res.std:.2g}{unit} | "
                     f"{res.better} / {res.worse} / {ties} | {_p(res.p)} | {text} |")
    return lines


def _effect(outcome: DatasetOutcome, treat: str, ctrl: str, metric: str, res: Paired) -> str:
    """The mean paired difference in the metric's unit, and relative to the control's mean where that reads well."""
    if "error" in metric:
        return f"Δ {100 * res.mean:+.2f} pp"
    if metric == "epochs to target":
        return f"Δ {res.mean:+.1f} epochs"
    control = [r for r in outcome.runs if r.arm == ctrl]
    base = mean_std([r.grad_first if metric == "grad norm first layer" else r.grad_ratio for r in control])[0]
    rel = f" ({100 * res.mean / base:+.0f} %)" if base else ""
    return f"Δ {res.mean:+.3g}{rel}"


def _is_dr_question(treat: str, ctrl: str) -> bool:
    """A DR arm against its own no-DR control or random init, or feature DR added to (c)."""
    return treat in DR_CONTROLS and ctrl in (DR_CONTROLS[treat], "a") or (treat, ctrl) == ("d", "c")


def _reading(outcome: DatasetOutcome) -> list[str]:
    """One line per claim, built only from the paired comparisons above."""
    rows = comparisons(outcome)
    claims = (("better initialisation", "val error after epoch 1"),
              ("larger lower-layer gradients", "grad norm first layer"),
              ("less vanishing gradient", "grad ratio first/last"),
              ("faster convergence", "epochs to target"),
              ("lower test error", "test error"))
    means = sorted((mean_std([r.test_error for r in _arm_runs(outcome, k)])[0], k)
                   for k in outcome.arms if _arm_runs(outcome, k))
    lines = ["- Mean test error, best to worst: " + ", ".join(f"({k}) {100 * m:.2f} %" for m, k in means) + "."]
    for claim, metric in claims:
        parts = []
        for treat, ctrl, _, name, res, text in rows:
            if name != metric or not _is_dr_question(treat, ctrl):
                continue
            parts.append(f"({treat}) vs ({ctrl}): {text} ({_effect(outcome, treat, ctrl, name, res)}, "
                         f"{res.better}/{res.n} seeds better, p = {_p(res.p)})")
        if parts:
            lines.append(f"- **{claim}** ({metric}): " + "; ".join(parts) + ".")
    return lines


def _context(outcome: DatasetOutcome) -> list[str]:
    """Facts a reader needs before crediting or blaming DR, derived from the same paired tests."""
    rows = {(t, c, m): (res, text) for t, c, _, m, res, text in comparisons(outcome)}
    lines = []
    base = rows.get(("b", "a", "test error"))
    if base and base[1] == "contradicts the claim":
        lines.append(f"- Context: DBN pretraining *without* DR is itself worse than random initialisation here "
                     f"((b) vs (a): Δ {100 * base[0].mean:+.2f} pp test error, p = {_p(base[0].p)}), so (c) vs (b) "
                     f"measures DR against a weak pretrained baseline; (c) vs (a) is what choosing between the "
                     f"two recipes would give.")
    grads = rows.get(("c", "a", "grad norm first layer"))
    ratio = rows.get(("c", "a", "grad ratio first/last"))
    if grads and ratio and grads[0].mean < 0 < ratio[0].mean:
        lines.append("- Context: relative to random initialisation the pretrained networks have a larger "
                     "first/last gradient ratio but a *smaller* first-layer gradient: the ratio grows because "
                     "the last layer's gradient shrinks more than the first's (plausibly the small RBM weights), "
                     "not because lower layers learn faster.")
    return lines


def _sweep_table(outcome: DatasetOutcome) -> list[str]:
    if not outcome.sweep:
        return ["No sweep in this mode: fixed weights " + ", ".join(
            f"{k} = {v:g}" for k, v in sorted(outcome.weights.items()) if k in _used(outcome)) + "."]
    lines = ["| DR weight | arm swept | value | selection score (mean val error % of the last 3 epochs) | chosen |",
             "|---|---|---|---|---|"]
    for point in outcome.sweep:
        chosen = "**yes**" if outcome.weights[point.weight_name] == point.value else ""
        lines.append(f"| {WEIGHT_LABELS[point.weight_name]} | ({point.arm}) | {point.value:g} | "
                     f"{100 * point.score:.2f} | {chosen} |")
    edges = [WEIGHT_LABELS[name] for name, grid in outcome.grids.items()
             if len(grid) > 1 and name in _used(outcome) and outcome.weights[name] in (min(grid), max(grid))]
    if edges:
        lines += ["", "Chosen at the edge of its grid (a better value may lie outside it): " + "; ".join(edges) + "."]
    return lines


def _used(outcome: DatasetOutcome) -> set[str]:
    return {w for k in outcome.arms for w in (ARM_BY_KEY[k].gen, ARM_BY_KEY[k].disc) if w}


def where_dr_helps(outcome: DatasetOutcome) -> list[tuple[str, str, Paired, Paired | None]]:
    """DR arms whose test error beats their own no-DR control *and* random init (a), each with
    p < 0.05 in a paired t-test: (arm, control, vs control, vs (a) or None when the control is (a))."""
    found = []
    for arm, ctrl in DR_CONTROLS.items():
        own = _test_error_paired(outcome, arm, ctrl)  # None when either arm did not run
        if own is None or not _wins(own):
            continue
        vs_a = None
        if ctrl != "a":
            vs_a = _test_error_paired(outcome, arm, "a")
            if vs_a is None or not _wins(vs_a):
                continue
        found.append((arm, ctrl, own, vs_a))
    return found


def _wins(res: Paired) -> bool:
    return not math.isnan(res.p) and res.p < 0.05 and res.mean < 0


def _test_error_paired(outcome: DatasetOutcome, treat: str, ctrl: str) -> Paired | None:
    seeds = common_seeds(outcome.runs, treat, ctrl)
    if not seeds:
        return None
    t, c = by_seed(outcome.runs, treat), by_seed(outcome.runs, ctrl)
    return paired([t[s].test_error for s in seeds], [c[s].test_error for s in seeds])


def _verdict_lines(study: Study) -> list[str]:
    """The issue's question, answered from the paired tests: does any DR arm beat both its own
    no-DR control and random initialisation on test error (p < 0.05)?"""
    lines = []
    for outcome in study.outcomes:
        for arm, ctrl, own, vs_a in where_dr_helps(outcome):
            also = "" if vs_a is None else (f" and random init (a) by {-100 * vs_a.mean:.2f} pp "
                                            f"(p = {_p(vs_a.p)})")
            lines.append(f"- **{outcome.name}**: ({arm}) {ARM_BY_KEY[arm].label} beats its control ({ctrl}) "
                         f"by {-100 * own.mean:.2f} pp test error (p = {_p(own.p)}){also}.")
    if not lines:
        tried = ", ".join(o.name for o in study.outcomes)
        lines.append(f"- In no regime tried ({tried}) does a DR arm beat both its own no-DR control and random "
                     "initialisation on test error with p < 0.05.")
    helps, hurts = _significant(study)
    lines += ["", "Every test-error difference with p < 0.05 that involves a DR arm or pretraining (each DR "
              "arm against its own control and against random init (a); the DBN (b) against (a)):", ""]
    lines += [f"- DR or pretraining **helps**: {h}" for h in helps] or ["- helps: none"]
    lines += [f"- DR or pretraining **hurts**: {h}" for h in hurts] or ["- hurts: none"]
    return lines


def _significant(study: Study) -> tuple[list[str], list[str]]:
    helps, hurts = [], []
    for outcome in study.outcomes:
        for treat, ctrl, _, metric, res, _ in comparisons(outcome):
            if metric != "test error" or math.isnan(res.p) or res.p >= 0.05:
                continue
            if not (_is_dr_question(treat, ctrl) or (treat, ctrl) == ("b", "a")):
                continue
            text = (f"{outcome.name}: ({treat}) vs ({ctrl}) {100 * res.mean:+.2f} pp test error "
                    f"({res.better}/{res.n} seeds better, p = {_p(res.p)})")
            (helps if res.mean < 0 else hurts).append(text)
    return helps, hurts


CAVEATS = """\
- **DR as defined here.** The paper's equations, datasets and numbers are not public to us (see
  docs/dr.md); this measures this project's definition of DR, not the paper's exact method.
- **Small study.** One architecture per arm family (sigmoid, [256, 256, 256]; six layers of 256 for
  (f0)/(f1)), two datasets, a handful of seeds. Many comparisons are tested at once, so an isolated
  p < 0.05 may be chance; with 3 to 5 seeds, "inconclusive" means the study cannot tell, not that there
  is no effect.
- **Same budget** means the same number of fine-tuning epochs, batch size and learning rate for every
  arm of a regime; pretrained arms additionally spend the pretraining epochs (see the wall-time column),
  so random-initialisation arms received less total compute.
- **DR weights** were chosen on the validation set with one sweep seed that is not among the study
  seeds; (d) reuses the weights chosen for (c) and (e). The test set never entered any choice.
- **Validation** is drawn by the service from the labelled rows with the job's seed, so each seed
  also sees a different validation split (paired tests compare arms on the same split). In the
  label-scarce regimes it is small (120 images at 1 %), so the sweep's choices are noisy there.
- **Gradient norms** are the mean Frobenius norms of d loss / d W over the batches of the first
  fine-tuning epoch; for DR arms the loss includes the DR term. The ratio first/last hidden layer is the
  vanishing-gradient indicator: much below 1 means lower layers learn slowly. Its size also depends on
  the weight scale of the initialisation (RBM weights are small), so read it with the error columns.
- **The baseline (a)** uses Glorot-uniform initialisation with the gain 4 suited to sigmoid units, a
  stronger baseline than the small-random initialisation common when DBN pretraining was proposed;
  (f0) is that classic setting.
- **Epochs to target**: the target is the median final validation error of arm (a); "never" counts as
  budget + 1 in paired tests.
"""


def _results(outcome: DatasetOutcome) -> list[str]:
    """The results section of one regime: tables, figures and paired comparisons."""
    target = target_error(outcome.runs)
    compute = sum(r.wall_seconds for r in outcome.runs) + sum(p.run.wall_seconds for p in outcome.sweep)
    rows = _comparisons_run(outcome)
    return [f"## Results: {outcome.name}", "",
            f"{outcome.n_rows:,} training rows, {outcome.n_labelled:,} labelled. Target validation error for "
            f"\"epochs to target\": {100 * target:.2f} % (median final validation error of arm (a)). Job "
            f"time of this regime (sweep and study, summed over jobs): {compute / 60:.1f} min.",
            "", *_main_table(outcome, target), "",
            f"![{outcome.name}: validation error per epoch]({curves_name(outcome.name)})", "",
            f"![{outcome.name}: gradient norms per layer]({gradients_name(outcome.name)})", "",
            *_divergence_table(outcome),
            "Paired comparisons (same seed). What each isolates: "
            + "; ".join(f"({t}) vs ({c}): {d}" for t, c, d in rows) + ".", "",
            *_comparison_table(comparisons(outcome)), ""]


def _setup(study: Study) -> list[str]:
    arms = [k for k in ARM_BY_KEY if any(k in o.arms for o in study.outcomes)]
    lines = ["## Setup", "",
             f"Every arm is a job of {study.service}, submitted over HTTP with drtrain_client; each DR "
             "weight grid is one sweep (`POST /v1/sweeps`). Every number below comes from the jobs' "
             "results and metric points as the API returns them.", "",
             "Arms (all sigmoid networks, SGD with momentum, softmax head; a regime runs the arms listed "
             "with it):", ""]
    lines += [f"- ({k}) {ARM_BY_KEY[k].label}" for k in arms]
    lines += ["", "Generative DR: the mean over pairs of examples from different groups of the squared "
              "Hellinger distance between p(h|v), summed over hidden units, in every RBM layer; rows without "
              "a side value take part in the likelihood but in no pair. Feature DR: the squared euclidean "
              "distance between hidden features of pairs from different groups, all hidden layers, all "
              "pairs, divided by the layer width. Side information is the class label, or for (cg)/(eg) the "
              "coarse group (tops, bottoms, footwear, bags) that every image carries.", ""]
    for outcome in study.outcomes:
        b = outcome.budget
        pre = (f"pretraining CD-1, {b.pretrain_epochs} epochs per layer, batch {b.pretrain_batch}, lr "
               f"{b.pretrain_lr:g}; ") if any(ARM_BY_KEY[k].pretrain for k in outcome.arms) else ""
        deep = f" ({list(b.deep_hidden)} for (f0)/(f1), N(0, {b.init_std:g}) init)" \
            if any(ARM_BY_KEY[k].deep for k in outcome.arms) else ""
        lines.append(f"- **{outcome.name}**: {outcome.description}. Seeds {outcome.seeds}; arms "
                     f"{', '.join(f'({k})' for k in outcome.arms)}. Hidden {list(b.hidden)}{deep}; {pre}"
                     f"fine-tuning {b.finetune_epochs} epochs, batch {b.finetune_batch}, lr {b.finetune_lr:g}, "
                     f"momentum {b.finetune_momentum:g}. DR weights: "
                     + ", ".join(f"{WEIGHT_LABELS[k]} = {v:g}" for k, v in sorted(outcome.weights.items())
                                 if k in _used(outcome)) + ".")
    if study.config.note:
        lines += ["", study.config.note]
    return lines + [""]


def render(study: Study) -> str:
    cfg = study.config
    lines = [
        "# Where does DR help? A reproduction study, run through the service",
        "",
        f"Generated by `{study.command}` ({cfg.mode} mode) on {study.started:%Y-%m-%d %H:%M} UTC in "
        f"{study.seconds / 60:.1f} min, on {study.machine}. Numbers are mean ± sample std over seeds unless "
        "stated; errors in %.",
        "",
        "Claims tested (arXiv:1911.02048, abstract): DR gives a better initialisation, less vanishing "
        "gradient (larger gradient norms in lower layers), faster convergence and lower test error than "
        "the same network without DR at the same budget. Regimes: fully labelled data (digits, a "
        "Fashion-MNIST subsample), the classic deep small-initialisation sigmoid net where gradients "
        "vanish, and the label-scarce regime where layer-wise pretraining historically pays (1 % and 10 % "
        "of Fashion-MNIST labelled, pretraining on all 60,000 images), with side information that is the "
        "label or a coarse grouping that is not.",
        "",
        "## Answer",
        "",
        "Does a DR arm beat both its own no-DR control and random initialisation on test error, with "
        "p < 0.05 in a paired t-test over seeds?",
        "",
        *_verdict_lines(study),
        "",
        *_setup(study),
        "Weight sweeps (validation set, sweep seed "
        f"{cfg.sweep_seed}, the regime's own budget):",
        "",
    ]
    for outcome in study.outcomes:
        lines += [f"**{outcome.name}**", "", *_sweep_table(outcome), ""]
    for outcome in study.outcomes:
        lines += _results(outcome)
    lines += ["## Reading", "",
              "Each line restates the paired tests above (p < 0.05 and the right direction = \"supports\"); "
              "nothing here goes beyond them.", ""]
    for outcome in study.outcomes:
        lines += [f"**{outcome.name}**", "", *_reading(outcome), *_context(outcome), ""]
    lines += ["What these numbers do not support, whatever they show:", "", CAVEATS,
              "## Files", "",
              f"- Per-epoch validation error and training loss of every run (study and sweep): "
              f"`{study.curves_name}` (columns: {', '.join(CSV_COLUMNS)}).",
              "- Every run's measurements (what this report is built from): `study_results.json`; "
              "`python bench/reproduce.py --report-from docs/study_results.json` rebuilds this report and "
              "its plots without training.",
              "- Reproduce: the command above; `--quick` is a 2-seed digits smoke run (fixed weights, few "
              "epochs) whose numbers are not evidence.", ""]
    return "\n".join(lines)


CSV_COLUMNS = ("regime", "run", "arm", "seed", "job_id", "gen_weight", "disc_weight", "epoch", "val_error",
               "train_loss")


def write_curves(study: Study, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for outcome in study.outcomes:
            tagged = [("sweep", p.run, p.weights) for p in outcome.sweep] + \
                [("study", r, outcome.weights) for r in outcome.runs]
            for kind, run, weights in tagged:
                arm = ARM_BY_KEY[run.arm]
                gen = weights[arm.gen] if arm.gen else 0.0
                disc = weights[arm.disc] if arm.disc else 0.0
                for epoch, (err, loss) in enumerate(zip(run.val_errors, run.train_losses), start=1):
                    writer.writerow([outcome.name, kind, run.arm, run.seed, run.job_id, f"{gen:g}", f"{disc:g}",
                                     epoch, f"{err:.6f}", f"{loss:.6f}"])
