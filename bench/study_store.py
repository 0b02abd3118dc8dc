"""The study's raw results as JSON next to the report (``study_results.json``), so the report and
plots can be rebuilt (``bench/reproduce.py --report-from FILE``) without training again."""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

from bench.study_runs import Budget, RunResult
from bench.study_types import DatasetOutcome, DatasetPlan, Study, StudyConfig, SweepPoint

RESULTS_NAME = "study_results.json"


def save(study: Study, path: Path) -> Path:
    data = dataclasses.asdict(study)
    data["started"] = study.started.isoformat()
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
    return path


def _budget(d: dict[str, Any]) -> Budget:
    return Budget(**{**d, "hidden": tuple(d["hidden"]), "deep_hidden": tuple(d["deep_hidden"])})


def _run(d: dict[str, Any]) -> RunResult:
    return RunResult(**d)


def _tuples(grids: dict[str, list[float]]) -> dict[str, tuple[float, ...]]:
    return {k: tuple(v) for k, v in grids.items()}


def load(path: Path) -> Study:
    d = json.loads(path.read_text())
    cfg = d["config"]
    plans = tuple(DatasetPlan(p["name"], p["seeds"], _budget(p["budget"]), tuple(p["arms"]), p["weights"],
                              _tuples(p["grids"])) for p in cfg["plans"])
    config = StudyConfig(cfg["mode"], plans, cfg["sweep_seed"], cfg["train_limit"], cfg["note"])
    outcomes = [DatasetOutcome(o["name"], o["description"], _budget(o["budget"]), o["seeds"], tuple(o["arms"]),
                               o["weights"], _tuples(o["grids"]),
                               [SweepPoint(p["weight_name"], p["value"], p["arm"], p["score"], _run(p["run"]),
                                           p["weights"]) for p in o["sweep"]],
                               [_run(r) for r in o["runs"]], o["n_labelled"], o["n_rows"])
                for o in d["outcomes"]]
    return Study(config, d["command"], datetime.datetime.fromisoformat(d["started"]), d["seconds"], d["service"],
                 d["machine"], outcomes, d["curves_name"])
