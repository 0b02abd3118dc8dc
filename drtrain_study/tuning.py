"""Equal tuning: every arm gets the same learning-rate grid, DR arms also a lambda grid with 0 in
it; identical specs run once; each arm's setting is the one with the lowest mean validation
score over the sweep seeds (ties to the smaller lambda, then the smaller learning rate)."""
from __future__ import annotations

from collections.abc import Callable

from drtrain_study.records import Choice, DatasetPlan, TuningCell
from drtrain_study.runs import ARM_BY_KEY, RunResult, selection_score

Weight = float | None  # None: an arm without DR


def arm_weights(plan: DatasetPlan, arm_key: str) -> tuple[Weight, ...]:
    return plan.weight_grid if ARM_BY_KEY[arm_key].is_dr else (None,)


def claim_fresh(arm_key: str, keys: dict[Weight, list[str]], owners: dict[str, str]
                ) -> tuple[list[Weight], dict[Weight, str]]:
    """Which of an arm's weights it submits itself, and which reuse another arm's identical jobs
    (a lambda-0 point is its control's spec). ``keys``: weight -> canonical keys of its points
    (every learning rate and seed). Claims the fresh keys in ``owners`` (key -> arm)."""
    fresh: list[Weight] = []
    shared: dict[Weight, str] = {}
    for weight, wkeys in keys.items():
        known = {owners.get(k) for k in wkeys}
        others = {owner for owner in known if owner is not None}
        if not others:
            fresh.append(weight)
            owners.update(dict.fromkeys(wkeys, arm_key))
        elif None in known or len(others) > 1:
            raise ValueError(f"arm {arm_key}: weight {weight} is partly shared with {others}")
        else:
            shared[weight] = others.pop()
    return fresh, shared


def build_cells(plan: DatasetPlan, arm_key: str, key_of: Callable[[float, Weight, int], str],
                runs_by_key: dict[str, RunResult], owners: dict[str, str]) -> list[TuningCell]:
    """One cell per (learning rate, weight) of the arm, scored on every sweep seed."""
    cells = []
    for weight in arm_weights(plan, arm_key):
        for lr in plan.lr_grid:
            keys = [key_of(lr, weight, seed) for seed in plan.sweep_seeds]
            runs = [runs_by_key[k] for k in keys]
            owner = owners[keys[0]]
            cells.append(TuningCell(arm_key, lr, weight, [selection_score(r) for r in runs],
                                    [r.job_id for r in runs], None if owner == arm_key else owner))
    return cells


def choose(plan: DatasetPlan, arm_key: str, cells: list[TuningCell]) -> Choice:
    mine = [c for c in cells if c.arm == arm_key]
    best = min(mine, key=lambda c: (c.score, c.weight or 0.0, c.learning_rate))
    return Choice(arm_key, best.learning_rate, best.weight, best.score,
                  edge_flags(best.learning_rate, best.weight, plan))


def _edge(name: str, value: float, grid: tuple[float, ...]) -> list[str]:
    values = sorted(v for v in grid if v > 0)
    if len(values) < 2:
        return []
    if value == values[0]:
        return [f"{name} {value:g} (lowest)"]
    return [f"{name} {value:g} (highest)"] if value == values[-1] else []


def edge_flags(learning_rate: float, weight: Weight, plan: DatasetPlan) -> list[str]:
    """A choice at the lowest or highest nonzero value of its grid: a better value may lie
    outside it. Lambda 0 is no edge (it is reported as "tuning switched DR off")."""
    flags = _edge("lr", learning_rate, plan.lr_grid)
    if weight:
        flags += _edge("lambda", weight, plan.weight_grid)
    return flags
