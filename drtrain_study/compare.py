"""The study's comparisons: each DR arm against its own no-DR control and against the Glorot arm
of its depth (and any further reference it names), paired by seed. Holm's correction runs over
the whole study's family: one family for test error, a separate one for the gradient ratio."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drtrain_study.runs import ARM_BY_KEY, RunResult
from drtrain_study.stats import Paired, by_seed, common_seeds, holm, paired

if TYPE_CHECKING:
    from drtrain_study.records import DatasetOutcome, Study

ALPHA = 0.05
TEST_ERROR, GRAD_RATIO = "test error", "grad ratio first/last"
# metric -> (what is read from a run, whether higher is better)
METRICS = {TEST_ERROR: (lambda r: r.test_error, False),
           GRAD_RATIO: (lambda r: r.grad_ratio, True)}


@dataclass(frozen=True)
class Comparison:
    regime: str
    treatment: str
    reference: str
    roles: tuple[str, ...]  # "control", "glorot", "also": why the reference is compared against
    metric: str
    result: Paired
    holm_p: float

    @property
    def wins(self) -> bool:
        """Significantly better after Holm's correction."""
        return self.holm_p < ALPHA and self.result.better > 0 and \
            (self.result.mean > 0 if METRICS[self.metric][1] else self.result.mean < 0)


def references(arms: tuple[str, ...], arm_key: str) -> list[tuple[str, tuple[str, ...]]]:
    """(reference arm, roles) of one DR arm, only those the regime ran; a control that is also
    the Glorot arm is compared once, in both roles."""
    arm = ARM_BY_KEY[arm_key]
    roles: dict[str, list[str]] = {}
    for role, ref in (("control", arm.control), ("glorot", arm.glorot), *(("also", r) for r in arm.also)):
        if ref is not None and ref in arms:
            roles.setdefault(ref, []).append(role)
    return [(ref, tuple(r)) for ref, r in roles.items()]


def _paired(runs: list[RunResult], treat: str, ref: str, metric: str) -> Paired | None:
    seeds = common_seeds(runs, treat, ref)
    if not seeds:
        return None
    get, higher = METRICS[metric]
    t, c = by_seed(runs, treat), by_seed(runs, ref)
    return paired([get(t[s]) for s in seeds], [get(c[s]) for s in seeds], higher)


def _raw(outcome: DatasetOutcome, metric: str) -> list[tuple[str, str, tuple[str, ...], Paired]]:
    rows = []
    for arm_key in outcome.plan.arms:
        if not ARM_BY_KEY[arm_key].is_dr:
            continue
        for ref, roles in references(outcome.plan.arms, arm_key):
            res = _paired(outcome.runs, arm_key, ref, metric)
            if res is not None:
                rows.append((arm_key, ref, roles, res))
    return rows


def family(study: Study, metric: str) -> list[Comparison]:
    """Every comparison of ``metric`` in the study, with Holm's p over all of them."""
    raw = [(o.name, *row) for o in study.outcomes for row in _raw(o, metric)]
    adjusted = holm([row[4].p for row in raw])
    return [Comparison(name, t, r, roles, metric, res, p)
            for (name, t, r, roles, res), p in zip(raw, adjusted)]


def find(comparisons: list[Comparison], regime: str, arm: str, role: str) -> Comparison | None:
    return next((c for c in comparisons
                 if c.regime == regime and c.treatment == arm and role in c.roles), None)


def winners(comparisons: list[Comparison], outcome: DatasetOutcome) -> list[str]:
    """DR arms that beat both their own no-DR control and the Glorot arm on test error, each at
    Holm p < 0.05 (an arm that lacks either comparison cannot qualify)."""
    out = []
    for arm in outcome.plan.arms:
        own = find(comparisons, outcome.name, arm, "control")
        glorot = find(comparisons, outcome.name, arm, "glorot")
        if own and glorot and own.wins and glorot.wins:
            out.append(arm)
    return out


def fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")
