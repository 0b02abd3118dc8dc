"""PNG figures next to the study's tables: learning curves and gradient norms per arm.

matplotlib's object API without pyplot: a Figure saves its PNG with the Agg canvas, so no
display and no global backend are involved. matplotlib is an optional dependency (the "study"
and "test" extras).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from drtrain_study.records import DatasetOutcome, Study, curves_name, gradients_name
from drtrain_study.runs import ARM_BY_KEY, RunResult


def _by_arm(outcome: DatasetOutcome) -> dict[str, list[RunResult]]:
    """Runs per arm, in the regime's arm order."""
    out: dict[str, list[RunResult]] = {key: [] for key in outcome.plan.arms}
    for run in outcome.runs:
        out[run.arm].append(run)
    return {k: v for k, v in out.items() if v}


def plot_curves(outcome: DatasetOutcome, path: Path) -> None:
    """Validation error per fine-tuning epoch: mean over seeds, a band of one std."""
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.subplots()
    for arm, runs in _by_arm(outcome).items():
        n = min(len(r.val_errors) for r in runs)
        if n == 0:
            continue
        errs = 100 * np.array([r.val_errors[:n] for r in runs])
        mean, std = errs.mean(axis=0), errs.std(axis=0)
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, mean, marker="o", markersize=3, label=f"{arm}: {ARM_BY_KEY[arm].label}")
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_yscale("log")
    ax.set_title(f"{outcome.name}: validation error, mean ± std over {outcome.plan.seeds} seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def plot_gradients(outcome: DatasetOutcome, path: Path) -> None:
    """Mean ‖dL/dW‖ of every hidden layer and the head in the first fine-tuning epoch, one line
    per arm (mean over seeds): a line falling towards the input is a vanishing gradient."""
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.subplots()
    for arm, runs in _by_arm(outcome).items():
        per_layer = np.array([[*r.grad_layers, r.grad_head] for r in runs]).mean(axis=0)
        ax.plot(np.arange(1, len(per_layer) + 1), per_layer, marker="o", markersize=3,
                label=f"{arm}: {ARM_BY_KEY[arm].label}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (1 = first hidden; the last point of each line is the softmax head)")
    ax.set_yscale("log")
    ax.set_ylabel("mean ‖dL_class/dW‖, first epoch (log)")
    ax.set_title(f"{outcome.name}: gradient norm per layer (the vanishing-gradient view)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def write_plots(study: Study, out_dir: Path) -> list[Path]:
    written = []
    for outcome in study.outcomes:
        for name, plot in ((curves_name, plot_curves), (gradients_name, plot_gradients)):
            path = out_dir / name(outcome.name)
            plot(outcome, path)
            written.append(path)
    return written
