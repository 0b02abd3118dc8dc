"""The study's raw results as JSON next to the report (``study_results.json``), so the report and
plots can be rebuilt (``drtrain-study --report-from FILE``) without training again."""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

from drtrain_study.records import Choice, DatasetOutcome, DatasetPlan, Study, StudyConfig, TuningCell
from drtrain_study.runs import Budget, RunResult

RESULTS_NAME = "study_results.json"


def save(study: Study, path: Path) -> Path:
    data = dataclasses.asdict(study)
    data["started"] = study.started.isoformat()
    path.write_text(json.dumps(data, indent=1, allow_nan=False))
    return path


def _budget(d: dict[str, Any]) -> Budget:
    return Budget(**{**d, "hidden": tuple(d["hidden"]), "deep_hidden": tuple(d["deep_hidden"])})


def _plan(d: dict[str, Any]) -> DatasetPlan:
    tuples = {k: tuple(d[k]) for k in ("arms", "lr_grid", "weight_grid", "sweep_seeds")}
    return DatasetPlan(**{**d, **tuples, "budget": _budget(d["budget"])})


def _outcome(d: dict[str, Any]) -> DatasetOutcome:
    return DatasetOutcome(**{
        **d, "plan": _plan(d["plan"]),
        "tuning_runs": [RunResult(**r) for r in d["tuning_runs"]],
        "cells": [TuningCell(**c) for c in d["cells"]],
        "choices": {k: Choice(**c) for k, c in d["choices"].items()},
        "runs": [RunResult(**r) for r in d["runs"]],
    })


def load(path: Path) -> Study:
    d = json.loads(path.read_text())
    cfg = d["config"]
    config = StudyConfig(cfg["mode"], tuple(_plan(p) for p in cfg["plans"]), cfg["train_limit"])
    return Study(config, d["command"], datetime.datetime.fromisoformat(d["started"]), d["seconds"],
                 d["service"], d["machine"], [_outcome(o) for o in d["outcomes"]], d["curves_name"])
