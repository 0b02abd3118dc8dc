"""PNG figures next to the study's tables: learning curves and gradient norms per arm.

matplotlib with the Agg backend (no display); a test extra, like the study itself.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bench.study_runs import ARM_BY_KEY, RunResult  # noqa: E402
from bench.study_types import DatasetOutcome, Study  # noqa: E402


def curves_name(dataset: str) -> str:
    return f"study_{dataset}_curves.png"


def gradients_name(dataset: str) -> str:
    return f"study_{dataset}_gradients.png"


def _by_arm(outcome: DatasetOutcome) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = {}
    for run in outcome.runs:
        out.setdefault(run.arm, []).append(run)
    return out


def plot_curves(outcome: DatasetOutcome, path: Path) -> None:
    """Validation error per fine-tuning epoch: mean over seeds, a band of one std."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for arm, runs in sorted(_by_arm(outcome).items()):
        n = min(len(r.val_errors) for r in runs)
        if n == 0:
            continue
        errs = 100 * np.array([r.val_errors[:n] for r in runs])
        mean, std = errs.mean(axis=0), errs.std(axis=0)
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, mean, marker="o", markersize=3, label=f"({arm}) {ARM_BY_KEY[arm].label}")
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_yscale("log")
    ax.set_title(f"{outcome.name}: validation error, mean ± std over {outcome.seeds} seeds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_gradients(outcome: DatasetOutcome, path: Path) -> None:
    """Mean |dL/dW| in the first fine-tuning epoch: first and last hidden layer and the head."""
    arms = sorted(_by_arm(outcome).items())
    parts = (("first hidden", "grad_first"), ("last hidden", "grad_last"), ("head", "grad_head"))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    width = 0.8 / len(parts)
    for i, (label, attr) in enumerate(parts):
        means = [float(np.mean([getattr(r, attr) for r in runs])) for _, runs in arms]
        ax.bar(np.arange(len(arms)) + i * width, means, width, label=label)
    ax.set_xticks(np.arange(len(arms)) + width, [f"({a})" for a, _ in arms])
    ax.set_yscale("log")
    ax.set_ylabel("mean |dL/dW|, first epoch (log)")
    ax.set_title(f"{outcome.name}: gradient norms per layer (the vanishing-gradient view)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(study: Study, out_dir: Path) -> list[Path]:
    written = []
    for outcome in study.outcomes:
        for name, plot in ((curves_name, plot_curves), (gradients_name, plot_gradients)):
            path = out_dir / name(outcome.name)
            plot(outcome, path)
            written.append(path)
    return written
