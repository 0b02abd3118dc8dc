"""The study's plan and outcome records, shared by the runner (drtrain_study.run) and the report."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import numpy as np

from drtrain_study.runs import Budget, RunResult

CURVES_NAME = "study_curves.csv"


def curves_name(dataset: str) -> str:
    """The file of a dataset's validation-error figure."""
    return f"study_{dataset}_curves.png"


def gradients_name(dataset: str) -> str:
    """The file of a dataset's gradient-norm figure."""
    return f"study_{dataset}_gradients.png"


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    seeds: int  # test seeds 0 .. seeds - 1, paired across arms
    budget: Budget
    arms: tuple[str, ...]
    lr_grid: tuple[float, ...]  # finetune.learning_rate, the same for every arm
    weight_grid: tuple[float, ...]  # DR lambda of DR arms (0 = the arm's control)
    sweep_seeds: tuple[int, ...]  # validation runs per grid point; the choice uses their mean
    protocol: bool = False  # the fully protocolled regime the others' compromises are stated against


@dataclass(frozen=True)
class StudyConfig:
    mode: str
    plans: tuple[DatasetPlan, ...]
    train_limit: int | None = None  # cut the training set (tiny test configs only)


@dataclass
class TuningCell:
    """One arm's grid point: its validation score on every sweep seed. ``shared_from`` names the
    arm whose identical job it reuses (a lambda-0 point is its control's run)."""

    arm: str
    learning_rate: float
    weight: float | None
    scores: list[float]
    job_ids: list[str]
    shared_from: str | None = None

    @property
    def score(self) -> float:
        return float(np.mean(self.scores))


@dataclass
class Choice:
    arm: str
    learning_rate: float
    weight: float | None
    score: float
    edges: list[str] = field(default_factory=list)  # "lr 0.3 (highest)": a better value may lie outside

    @property
    def dr_off(self) -> bool:
        """Tuning chose lambda = 0: the DR arm ran as its own control."""
        return self.weight == 0


@dataclass
class DatasetOutcome:
    name: str
    description: str
    plan: DatasetPlan
    tuning_runs: list[RunResult]  # every distinct tuning job once, under the arm that submitted it
    cells: list[TuningCell]
    choices: dict[str, Choice]
    runs: list[RunResult]  # test runs, one per arm and seed (shared jobs appear under each arm)
    logreg_errors: list[float]  # local logistic regression's test error, one per test seed
    n_labelled: int
    n_rows: int


@dataclass
class Study:
    config: StudyConfig
    command: str
    started: datetime.datetime
    seconds: float
    service: str  # where the jobs ran: the URL, or the embedded service and its workers
    machine: str
    outcomes: list[DatasetOutcome]
    curves_name: str = CURVES_NAME
