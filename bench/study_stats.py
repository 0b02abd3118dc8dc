"""Summaries of the reproduction study's runs: per-arm mean ± std, epochs to a target, paired tests."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.study_runs import RunResult


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def target_error(runs: list[RunResult], baseline_arm: str = "a") -> float:
    """The dataset's target validation error: the median final validation error of the baseline arm."""
    finals = [r.val_errors[-1] for r in runs if r.arm == baseline_arm]
    if not finals:
        raise ValueError(f"no runs of baseline arm {baseline_arm!r}")
    return float(np.median(finals))


def epochs_to(run: RunResult, target: float) -> int | None:
    """First 1-based fine-tuning epoch whose validation error is <= target; None if never."""
    for epoch, err in enumerate(run.val_errors, start=1):
        if err <= target + 1e-12:
            return epoch
    return None


def censored_epochs(run: RunResult, target: float) -> float:
    """Epochs to target, with "never" counted as budget + 1 (so paired differences stay defined)."""
    e = epochs_to(run, target)
    return float(e if e is not None else len(run.val_errors) + 1)


@dataclass(frozen=True)
class Paired:
    """Paired (same seed) difference treatment - control of one metric."""

    n: int
    mean: float
    std: float
    better: int  # seeds where the treatment is better (lower, or higher when higher_is_better)
    worse: int
    p: float  # two-sided paired t-test; nan when undefined (n < 2 or no variance)


def paired(treatment: list[float], control: list[float], higher_is_better: bool = False) -> Paired:
    t = np.asarray(treatment, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    d = t - c
    n = int(d.size)
    m, s = mean_std(list(d)) if n else (math.nan, math.nan)
    sign = 1.0 if higher_is_better else -1.0
    better = int(np.sum(sign * d > 1e-12))
    worse = int(np.sum(sign * d < -1e-12))
    p = math.nan
    if n >= 2 and s > 0:
        tstat = m / (s / math.sqrt(n))
        p = float(2.0 * stats.t.sf(abs(tstat), n - 1))
    return Paired(n, m, s, better, worse, p)


def verdict(result: Paired, alpha: float = 0.05) -> str:
    """A deliberately plain reading of one paired comparison."""
    if result.n < 2 or math.isnan(result.p):
        if result.better == result.n and result.n > 0:
            return "better in every seed, no variance to test"
        if result.worse == result.n and result.n > 0:
            return "worse in every seed, no variance to test"
        return "no detectable difference"
    if result.p < alpha:
        return "supports the claim" if result.better > result.worse else "contradicts the claim"
    return "inconclusive"


def by_seed(runs: list[RunResult], arm: str) -> dict[int, RunResult]:
    return {r.seed: r for r in runs if r.arm == arm}


def common_seeds(runs: list[RunResult], *arms: str) -> list[int]:
    sets = [set(by_seed(runs, a)) for a in arms]
    return sorted(set.intersection(*sets)) if sets else []
