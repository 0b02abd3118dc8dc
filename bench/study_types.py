"""The study's plan and outcome records, shared by the runner (reproduce) and the report."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from bench.study_runs import Budget, RunResult

CURVES_NAME = "study_curves.csv"


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    seeds: int
    budget: Budget
    arms: tuple[str, ...]
    weights: dict[str, float]  # used as they are when a weight has no grid
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)  # weight key -> values to sweep


@dataclass(frozen=True)
class StudyConfig:
    mode: str
    plans: tuple[DatasetPlan, ...]
    sweep_seed: int = 1000
    train_limit: int | None = None  # cut the training set (tiny test configs only)
    note: str = ""  # budget compromises, printed in the report's setup


@dataclass
class SweepPoint:
    weight_name: str
    value: float
    arm: str
    score: float
    run: RunResult
    weights: dict[str, float]


@dataclass
class DatasetOutcome:
    name: str
    description: str
    budget: Budget
    seeds: int
    arms: tuple[str, ...]
    weights: dict[str, float]
    grids: dict[str, tuple[float, ...]]
    sweep: list[SweepPoint]
    runs: list[RunResult]
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
