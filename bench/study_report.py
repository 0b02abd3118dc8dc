"""Markdown report and per-epoch CSV of the reproduction study (written by bench/reproduce.py)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

from bench.study_plots import curves_name, gradients_name
from bench.study_runs import ARM_BY_KEY, DISC, RunResult
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

# (treatment, control, what the comparison isolates)
COMPARISONS = (
    ("c", "b", "generative DR (hellinger) vs the same DBN without DR"),
    ("c16", "b", "generative DR (bhattacharyya, K=16) vs the same DBN without DR"),
    ("d", "c", "adding discriminative DR to fine-tuning of (c)"),
    ("c", "a", "DBN + generative DR vs random initialisation"),
    ("b", "a", "DBN without DR vs random initialisation (is pretraining itself the cause?)"),
    ("e", "a", "discriminative DR vs plain backprop, both from random initialisation"),
)


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
        reused = " (pretraining of c reused)" if any(r.pretrain_reused for r in runs) else ""
        lines.append("| " + " | ".join([
            f"({key}) {ARM_BY_KEY[key].label}",
            _pct(*mean_std([r.test_error for r in runs])),
            _pct(*mean_std([r.val_errors[0] for r in runs])),
            _pct(*mean_std([r.val_errors[-1] for r in runs])),
            _epochs_cell(runs, target),
            _num(*mean_std([r.grad_first for r in runs])),
            _num(*mean_std([r.grad_last for r in runs])),
            _num(*mean_std([r.grad_ratio for r in runs])),
            f"{wall[0]:.1f} ± {wall[1]:.1f} ({pre:.1f} + {wall[0] - pre:.1f}){reused}",
        ]) + " |")
    return lines


def _divergence_table(outcome: DatasetOutcome, n_layers: int) -> list[str]:
    head = " | ".join(f"L{i + 1} val" for i in range(n_layers))
    train = " | ".join(f"L{i + 1} train" for i in range(n_layers))
    recon = " | ".join(f"L{i + 1} recon" for i in range(n_layers))
    lines = [f"| arm | {head} | {train} | {recon} |", "|---" * (1 + 3 * n_layers) + "|"]
    for key in outcome.arms:
        runs = _arm_runs(outcome, key)
        if not runs:
            continue
        cells = [_num(*mean_std([r.init_divergence[i] for r in runs])) for i in range(n_layers)]
        for attr in ("train_divergence", "recon_errors"):
            for i in range(n_layers):
                values = [getattr(r, attr)[i] for r in runs if getattr(r, attr) is not None]
                cells.append(_num(*mean_std(values)) if values else "—")
        lines.append(f"| ({key}) | " + " | ".join(cells) + " |")
    return lines


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
    for treat, ctrl, desc in COMPARISONS:
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
            if name != metric or (treat, ctrl) not in {("c", "b"), ("c16", "b"), ("d", "c"), ("e", "a"), ("c", "a")}:
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
            f"{k} = {v:g}" for k, v in sorted(outcome.weights.items())) + "."]
    lines = ["| DR weight | arm swept | value | selection score (mean val error % of the last 3 epochs) | chosen |",
             "|---|---|---|---|---|"]
    for point in outcome.sweep:
        chosen = "**yes**" if outcome.weights[point.weight_name] == point.value else ""
        lines.append(f"| {point.weight_name} | ({point.arm}) | {point.value:g} | {100 * point.score:.2f} | {chosen} |")
    edges = [name for name, grid in outcome.grids.items()
             if len(grid) > 1 and outcome.weights[name] in (min(grid), max(grid))]
    if edges:
        lines += ["", "Chosen at the edge of its grid (a better value may lie outside it): " + ", ".join(edges) + "."]
    return lines


CAVEATS = """\
- **DR as defined here.** The paper's equations, datasets and numbers are not public to us (see
  docs/dr.md); this measures this project's definition of DR, not the paper's exact method.
- **Small study.** One architecture (sigmoid, [256, 256, 256]), two small datasets, a handful of seeds,
  one fixed data split. Many comparisons are tested at once, so an isolated p < 0.05 may be chance;
  with 3 to 5 seeds, "inconclusive" means the study cannot tell, not that there is no effect.
- **Same budget** means the same number of fine-tuning epochs, batch size and learning rate for every
  arm; pretrained arms additionally spend the pretraining epochs (see the wall-time column), so
  random-initialisation arms received less total compute.
- **DR weights** were chosen on the validation set with one sweep seed that is not among the study
  seeds; the discriminative weight was swept on arm (e) and reused for arm (d). The test set never
  entered any choice.
- **Gradient norms** are the mean Frobenius norms of d loss / d W over the batches of the first
  fine-tuning epoch; for arms (d) and (e) the loss includes the DR term. The ratio first/last hidden
  layer is the vanishing-gradient indicator: much below 1 means lower layers learn slowly. Its size
  also depends on the weight scale of the initialisation (RBM weights are small), so read it together
  with the error columns.
- **The baseline (a)** uses Glorot-uniform initialisation with the gain 4 suited to sigmoid units, a
  stronger baseline than the small-random initialisation common when DBN pretraining was proposed.
- **Epochs to target**: the target is the median final validation error of arm (a); "never" counts as
  budget + 1 in paired tests. **Divergences** are mean squared-Hellinger distances between p(h|x) of
  cross-class pairs, divided by the layer width (so in [0, 1]), of the hidden layers as fine-tuning
  starts: "val" on the validation set, "train" is the pretraining metric on a training subsample.
"""


def _results(outcome: DatasetOutcome) -> list[str]:
    """The results section of one dataset: tables, figures and paired comparisons."""
    target = target_error(outcome.runs)
    return [f"## Results: {outcome.name}", "",
            f"Target validation error for \"epochs to target\": {100 * target:.2f} % (median final "
            f"validation error of arm (a)). Wall time of this dataset: {outcome.seconds / 60:.1f} min.",
            "", *_main_table(outcome, target), "",
            f"![{outcome.name}: validation error per epoch]({curves_name(outcome.name)})", "",
            f"![{outcome.name}: gradient norms per layer]({gradients_name(outcome.name)})", "",
            "Cross-class divergence of each hidden layer as fine-tuning starts (per unit, in [0, 1]) "
            "and RBM reconstruction error (pretrained arms):", "",
            *_divergence_table(outcome, len(outcome.budget.hidden)), "",
            "Paired comparisons (same seed). What each isolates: "
            + "; ".join(f"({t}) vs ({c}): {d}" for t, c, d in COMPARISONS) + ".", "",
            *_comparison_table(comparisons(outcome)), ""]


def render(study: Study) -> str:
    cfg = study.config
    lines = [
        "# Does DR do what the paper claims? A reproduction study",
        "",
        f"Generated by `{study.command}` ({cfg.mode} mode) on {study.started:%Y-%m-%d %H:%M} UTC in "
        f"{study.seconds / 60:.1f} min. torch {study.torch_version}, {study.threads} intra-op thread(s), "
        f"{study.machine}. Numbers are mean ± sample std over seeds unless stated; errors in %.",
        "",
        "Claims tested (arXiv:1911.02048, abstract): DR gives a better initialisation, less vanishing "
        "gradient (larger gradient norms in lower layers), faster convergence and lower test error than "
        "the same network without DR at the same budget.",
        "",
        "## Setup",
        "",
        "Arms (same architecture, fine-tuning budget and seeds; all sigmoid networks, SGD with momentum, "
        "softmax head):",
        "",
    ]
    for key in cfg.arms:
        lines.append(f"- ({key}) {ARM_BY_KEY[key].label}")
    lines += ["", "Discriminative DR: squared euclidean distance between hidden features of cross-class pairs, "
              "all hidden layers, all pairs, divided by the layer width. Generative DR: mean over "
              "cross-class pairs of the divergence between p(h|v), summed over units, in every RBM layer. "
              "Side information = the class label.", ""]
    for outcome in study.outcomes:
        b = outcome.budget
        lines += [f"- **{outcome.name}**: {outcome.description}. Seeds {outcome.seeds}. Hidden {list(b.hidden)}; "
                  f"pretraining CD-1, {b.pretrain_epochs} epochs per layer, batch {b.pretrain_batch}, lr "
                  f"{b.pretrain_lr:g}; fine-tuning {b.finetune_epochs} epochs, batch {b.finetune_batch}, lr "
                  f"{b.finetune_lr:g}, momentum {b.finetune_momentum:g}. DR weights: "
                  + ", ".join(f"{k} = {v:g}" for k, v in sorted(outcome.weights.items())) + "."]
    if cfg.note:
        lines += ["", cfg.note]
    lines += ["", "Weight sweep (validation set, sweep seed "
              f"{cfg.sweep_seed}, the study's own budget):", ""]
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
              "- Reproduce: the command above; `--quick` is a 2-seed digits smoke run (fixed weights, few "
              "epochs) whose numbers are not evidence.", ""]
    return "\n".join(lines)


CSV_COLUMNS = ("dataset", "run", "arm", "seed", "gen_weight", "disc_weight", "epoch", "val_error", "train_loss")


def write_curves(study: Study, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for outcome in study.outcomes:
            tagged = [("sweep", p.run, p.weights) for p in outcome.sweep] + \
                [("study", r, outcome.weights) for r in sorted(outcome.runs, key=lambda r: (r.arm, r.seed))]
            for kind, run, weights in tagged:
                arm = ARM_BY_KEY[run.arm]
                gen = weights[arm.weight_name] if arm.weight_name else 0.0
                disc = weights[DISC] if arm.discriminative else 0.0
                for epoch, (err, loss) in enumerate(zip(run.val_errors, run.train_losses), start=1):
                    writer.writerow([outcome.name, kind, run.arm, run.seed, f"{gen:g}", f"{disc:g}", epoch,
                                     f"{err:.6f}", f"{loss:.6f}"])
