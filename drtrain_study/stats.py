"""Statistics of the reproduction study: means with t confidence intervals, paired comparisons
(mean difference, CI, Cohen's dz, paired t-test) and Holm's correction over a family of tests."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from drtrain_study.runs import RunResult

LEVEL = 0.95


def t_half_width(std: float, n: int, level: float = LEVEL) -> float:
    """Half-width of the two-sided t interval of a mean of ``n`` values (0 for n < 2)."""
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t confidence interval."""
    a = np.asarray(values, dtype=np.float64)
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return float(a.mean()), t_half_width(std, int(a.size))


@dataclass(frozen=True)
class Paired:
    """Paired (same seed) difference treatment - control of one metric."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    dz: float  # Cohen's dz: mean difference / std of the differences; nan without variance
    better: int  # seeds where the treatment is better (lower, or higher when higher_is_better)
    worse: int
    p: float  # two-sided paired t-test; nan when undefined (n < 2 or no variance)


def paired(treatment: list[float], control: list[float], higher_is_better: bool = False) -> Paired:
    d = np.asarray(treatment, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        raise ValueError("no paired values")
    m = float(d.mean())
    s = float(d.std(ddof=1)) if n > 1 else 0.0
    half = t_half_width(s, n)
    sign = 1.0 if higher_is_better else -1.0
    dz = m / s if s > 0 else math.nan
    p = float(2.0 * stats.t.sf(abs(m / (s / math.sqrt(n))), n - 1)) if n >= 2 and s > 0 else math.nan
    better, worse = int(np.sum(sign * d > 1e-12)), int(np.sum(sign * d < -1e-12))
    return Paired(n, m, s, m - half, m + half, dz, better, worse, p)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order. An undefined p (nan: no variance)
    counts as 1, so it still enlarges the family and can never be declared significant."""
    p = [1.0 if math.isnan(v) else v for v in pvalues]
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def by_seed(runs: list[RunResult], arm: str) -> dict[int, RunResult]:
    return {r.seed: r for r in runs if r.arm == arm}


def common_seeds(runs: list[RunResult], *arms: str) -> list[int]:
    sets = [set(by_seed(runs, a)) for a in arms]
    return sorted(set.intersection(*sets)) if sets else []
