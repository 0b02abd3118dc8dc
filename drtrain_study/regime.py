"""One regime of the study in flight: its tuning sweeps, its choices and its test sweeps.

Identical specs run once (keyed by drtrain_study.runs.canonical_key): a DR arm's lambda-0 point
is its control's job, and a DR arm whose tuning chose lambda = 0 shares its control's test runs
when both chose the same learning rate.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from drtrain_study.data import StudyData
from drtrain_study.logreg import logreg_errors
from drtrain_study.records import Choice, DatasetOutcome, DatasetPlan, TuningCell
from drtrain_study.runs import ARM_BY_KEY, RunResult, canonical_key, job_spec, run_result
from drtrain_study.service import Uploaded
from drtrain_study.tuning import Weight, arm_weights, build_cells, choose, claim_fresh
from drtrain_study.work import Work

LR_PATH = "finetune.learning_rate"


class Regime:
    def __init__(self, plan: DatasetPlan, data: StudyData, uploaded: Uploaded) -> None:
        self.plan, self.data, self.uploaded = plan, data, uploaded
        self.tuning_owners: dict[str, str] = {}  # canonical key -> arm that submitted it
        self.test_owners: dict[str, str] = {}
        self.results: dict[str, RunResult] = {}  # canonical key -> the finished job's measurements
        self.tuning_runs: list[RunResult] = []
        self.cells: list[TuningCell] = []
        self.choices: dict[str, Choice] = {}

    def spec(self, arm_key: str, lr: float, weight: Weight, seed: int, phase: str) -> dict[str, Any]:
        return job_spec(self.plan.budget, ARM_BY_KEY[arm_key], lr, weight, dataset_id=self.uploaded.train,
                        test_id=self.uploaded.test, validation_fraction=self.data.validation_fraction,
                        seed=seed, name=f"study {self.plan.name} {phase} {arm_key}",
                        tags=["study", f"regime-{self.plan.name}", f"arm-{arm_key}", phase])

    def key(self, arm_key: str, lr: float, weight: Weight, seed: int) -> str:
        return canonical_key(self.spec(arm_key, lr, weight, seed, ""))

    def _sweep(self, arm_key: str, lrs: list[float], weights: list[Weight], seeds: list[int], phase: str,
               record: Callable[[RunResult], None]) -> Work:
        """One sweep of an arm over learning rates, its DR weights and seeds."""
        arm = ARM_BY_KEY[arm_key]
        grid: dict[str, list[Any]] = {LR_PATH: lrs, "seed": seeds}
        if arm.weight_path and weights != [0.0]:
            grid[arm.weight_path] = weights
        base_weight = next((w for w in weights if w), weights[0])  # a DR section the grid's values fill in

        def done(point: dict[str, Any] | None, job: dict[str, Any], points: list[dict[str, Any]]) -> None:
            if point is None:  # every job of a sweep has its grid point
                raise ValueError(f"{arm_key}: a {phase} job without its grid point")
            weight = point.get(arm.weight_path, base_weight) if arm.weight_path else None
            run = run_result(self.plan.name, arm, point["seed"], point[LR_PATH], weight, self.plan.budget,
                             job, points)
            self.results[self.key(arm_key, run.learning_rate, weight, run.seed)] = run
            record(run)

        spec = self.spec(arm_key, lrs[0], base_weight, seeds[0], phase)
        return Work((self.plan.name, phase, arm_key), spec, done, grid=grid)

    def tuning_work(self) -> list[Work]:
        out = []
        for arm_key in self.plan.arms:
            keys = {w: [self.key(arm_key, lr, w, s)
                        for lr in self.plan.lr_grid for s in self.plan.sweep_seeds]
                    for w in arm_weights(self.plan, arm_key)}
            fresh, _ = claim_fresh(arm_key, keys, self.tuning_owners)
            if fresh:
                out.append(self._sweep(arm_key, list(self.plan.lr_grid), fresh, list(self.plan.sweep_seeds),
                                       "tuning", self.tuning_runs.append))
        return out

    def choose(self, log: Callable[[str], None]) -> None:
        for arm_key in self.plan.arms:
            self.cells += build_cells(self.plan, arm_key, functools.partial(self.key, arm_key),
                                      self.results, self.tuning_owners)
            choice = self.choices[arm_key] = choose(self.plan, arm_key, self.cells)
            weight = "" if choice.weight is None else f", lambda {choice.weight:g}"
            log(f"  {self.plan.name} {arm_key}: lr {choice.learning_rate:g}{weight} (val error "
                f"{100 * choice.score:.2f} %){' edge: ' + ', '.join(choice.edges) if choice.edges else ''}")

    def test_work(self) -> list[Work]:
        out = []
        seeds = list(range(self.plan.seeds))
        for arm_key in self.plan.arms:
            c = self.choices[arm_key]
            fresh, _ = claim_fresh(arm_key, {c.weight: [self.key(arm_key, c.learning_rate, c.weight, s)
                                                        for s in seeds]}, self.test_owners)
            if fresh:
                out.append(self._sweep(arm_key, [c.learning_rate], [c.weight], seeds, "test",
                                       lambda run: None))
        return out

    def test_runs(self) -> list[RunResult]:
        """Every arm's test run per seed; a shared job appears under each arm that chose it."""
        runs = []
        for arm_key in self.plan.arms:
            c = self.choices[arm_key]
            for seed in range(self.plan.seeds):
                run = self.results[self.key(arm_key, c.learning_rate, c.weight, seed)]
                runs.append(dataclasses.replace(run, arm=arm_key, weight=c.weight))
        return runs

    def outcome(self) -> DatasetOutcome:
        self.tuning_runs.sort(key=lambda r: (self.plan.arms.index(r.arm), r.learning_rate, r.weight or 0.0,
                                             r.seed))
        return DatasetOutcome(self.plan.name, self.data.description, self.plan, self.tuning_runs, self.cells,
                              self.choices, self.test_runs(), logreg_errors(self.data, self.plan.seeds),
                              n_labelled=self.data.n_labelled, n_rows=len(self.data.y))
