"""The study's plan and outcome records, shared by the runner (reproduce) and the report."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from bench.study_runs import ARMS, Budget, RunResult

CURVES_NAME = "study_curves.csv"


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    seeds: int
    budget: Budget
    weights: dict[str, float]  # used as they are when there is no sweep; else the sweep's start
    grids: dict[str, tuple[float, ...]] = field(default_factory=dict)  # weight name -> values to sweep


@dataclass(frozen=True)
class StudyConfig:
    mode: str
    plans: tuple[DatasetPlan, ...]
    arms: tuple[str, ...] = tuple(a.key for a in ARMS)
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
    seconds: float


@dataclass
class Study:
    config: StudyConfig
    command: str
    started: datetime.datetime
    seconds: float
    torch_version: str
    threads: int
    machine: str
    outcomes: list[DatasetOutcome]
    curves_name: str = CURVES_NAME
