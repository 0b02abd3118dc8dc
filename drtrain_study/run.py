"""One study from start to report: upload every regime, tune every arm on validation, run every
arm on the test seeds, then write the report, the curves, the plots and the raw results."""
from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from drtrain_client import Client
from drtrain_study import data as study_data
from drtrain_study.records import CURVES_NAME, Study, StudyConfig
from drtrain_study.regime import Regime
from drtrain_study.report import render, write_curves
from drtrain_study.service import upload_regime
from drtrain_study.store import RESULTS_NAME, save
from drtrain_study.work import Work, run_all

REPORT_NAME = "study.md"


def _interleaved(groups: list[list[Work]]) -> list[Work]:
    """Round-robin over regimes, so long (pretraining) and short jobs share the workers."""
    out: list[Work] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _jobs(work: list[Work]) -> int:
    return sum(w.size for w in work)


def run_study(cfg: StudyConfig, client: Client, service: str, command: str = "",
              log: Callable[[str], None] | None = None) -> Study:
    """Upload every regime, tune every arm on validation, then run every arm on the test seeds."""
    log = log or (lambda msg: None)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    regimes = []
    for plan in cfg.plans:
        data = study_data.load(plan.name)
        if cfg.train_limit is not None:
            data = study_data.shrink(data, cfg.train_limit)
        log(f"{plan.name}: {plan.seeds} test seed(s), arms {', '.join(plan.arms)}")
        regimes.append(Regime(plan, data, upload_regime(client, data, log)))
    tuning = _interleaved([r.tuning_work() for r in regimes])
    log(f"tuning: {_jobs(tuning)} jobs in {len(tuning)} sweeps")
    run_all(client, tuning, log)
    for r in regimes:
        r.choose(log)
    testing = _interleaved([r.test_work() for r in regimes])
    log(f"test: {_jobs(testing)} jobs in {len(testing)} sweeps")
    run_all(client, testing, log)
    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU(s) (shared)"
    return Study(cfg, command, started, time.perf_counter() - t0, service, machine,
                 [r.outcome() for r in regimes])


def write_outputs(study: Study, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    save(study, out_dir / RESULTS_NAME)  # first: the hours of results never wait on a figure
    report, curves = out_dir / REPORT_NAME, out_dir / CURVES_NAME
    report.write_text(render(study))
    write_curves(study, curves)
    write_figures(study, out_dir)
    return report, curves


def write_figures(study: Study, out_dir: Path) -> None:
    """The figures, or a line on stderr saying why not: matplotlib is the optional `study`
    extra, imported only here so that the rest of the study runs without it."""
    try:
        from drtrain_study.plots import write_plots
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "matplotlib":
            raise
        print("drtrain-study: figures skipped: they need matplotlib "
              "(pip install 'drtrain[study]')", file=sys.stderr)
        return
    write_plots(study, out_dir)
