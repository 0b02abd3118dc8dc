"""Reproduction study: does DR give better initialisation, less vanishing gradient, faster
convergence and lower test error than the same network without DR, at the same budget?

    python bench/reproduce.py [--quick] [--datasets digits,fashion-mnist] [--seeds 5]

Full mode writes docs/study.md (setup, tables of mean ± std over seeds, paired tests, a plain
reading) and docs/study_curves.csv (per-epoch validation curves). ``--quick`` (digits, 2 seeds,
few epochs, fixed DR weights, no sweep) is a smoke run: it writes to a temporary folder unless
``--out`` is given, so it never overwrites the committed study. ``--seeds`` is one count for
every dataset or per dataset, e.g. ``digits=5,fashion-mnist=3`` (the full default, sized for
about 25 minutes on two shared CPU cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import study_data  # noqa: E402
from bench.study_plots import write_plots  # noqa: E402
from bench.study_report import render, write_curves  # noqa: E402
from bench.study_runs import ARM_BY_KEY, DISC, Budget, Pretrained, RunResult, run_arm, selection_score  # noqa: E402
from bench.study_types import CURVES_NAME, DatasetOutcome, DatasetPlan, Study, StudyConfig, SweepPoint  # noqa: E402

REPORT_NAME = "study.md"


# Weights of the quick mode: the values the full study's sweep chose on digits (docs/study.md).
QUICK_WEIGHTS = {"hellinger": 1.0, "bhattacharyya": 0.1, DISC: 1.0}
# Log-spaced; Bhattacharyya is unbounded per unit and already hurts at 0.3-1 on both datasets.
SWEEP_GRIDS = {"hellinger": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0), "bhattacharyya": (0.01, 0.03, 0.1, 0.3),
               DISC: (0.01, 0.1, 1.0)}
FULL_BUDGETS = {
    # digits is tiny (1,257 training images = 40 batches of 32): many epochs so each RBM gets
    # about 1,200 updates; Fashion-MNIST has 313 batches per epoch, 8 epochs ~ 2,500 updates.
    "digits": Budget(pretrain_epochs=30, finetune_epochs=30),
    "fashion-mnist": Budget(pretrain_epochs=8, finetune_epochs=15),
}
FULL_SEEDS = {"digits": 5, "fashion-mnist": 3}
FULL_NOTE = ("Budget compromises, to keep the whole run near 25 minutes on two CPU cores shared with other "
             "work: Fashion-MNIST is subsampled and by default gets 3 seeds instead of 5 and fewer epochs than "
             "digits (numbers above); each DR weight is swept on a single seed. This limits statistical power: "
             "with 3 seeds only large, consistent effects reach p < 0.05.")


def full_config(datasets: list[str], seeds: dict[str, int]) -> StudyConfig:
    plans = tuple(DatasetPlan(name, seeds[name], FULL_BUDGETS[name], dict(QUICK_WEIGHTS), dict(SWEEP_GRIDS))
                  for name in datasets)
    return StudyConfig("full", plans, note=FULL_NOTE)


def quick_config() -> StudyConfig:
    return StudyConfig("quick", (DatasetPlan("digits", 2, Budget(pretrain_epochs=10, finetune_epochs=10),
                                             dict(QUICK_WEIGHTS)),))


def _needed_weights(arms: tuple[str, ...]) -> list[tuple[str, str]]:
    """(weight name, arm to sweep it on), in sweep order, for the weights the chosen arms use."""
    out = []
    for name, arm in (("hellinger", "c"), ("bhattacharyya", "c16"), (DISC, "e")):
        users = [k for k in arms if ARM_BY_KEY[k].weight_name == name or (name == DISC and ARM_BY_KEY[k].discriminative)]
        if users:
            out.append((name, arm))
    return out


def _sweep(data: study_data.StudyData, plan: DatasetPlan, arms: tuple[str, ...], seed: int,
           log: Callable[[str], None]) -> tuple[dict[str, float], list[SweepPoint]]:
    weights = dict(plan.weights)
    points: list[SweepPoint] = []
    for name, arm_key in _needed_weights(arms):
        grid = plan.grids.get(name, ())
        if not grid:
            continue
        scored = []
        for value in grid:
            trial = {**weights, name: value}
            run, _ = run_arm(data, plan.budget, ARM_BY_KEY[arm_key], seed, trial)
            score = selection_score(run)
            points.append(SweepPoint(name, value, arm_key, score, run, trial))
            scored.append((score, value))
            log(f"  sweep {data.name} {name}={value:g} on ({arm_key}): val error {100 * score:.2f} %")
        weights[name] = min(scored)[1]  # ties go to the smaller weight
    return weights, points


def run_dataset(plan: DatasetPlan, cfg: StudyConfig, log: Callable[[str], None]) -> DatasetOutcome:
    started = time.perf_counter()
    data = study_data.load(plan.name)
    if cfg.train_limit is not None:
        data = study_data.shrink(data, cfg.train_limit)
    weights, points = _sweep(data, plan, cfg.arms, cfg.sweep_seed, log)
    runs: list[RunResult] = []
    for seed in range(plan.seeds):
        stacks: dict[str, Pretrained] = {}
        for key in cfg.arms:
            arm = ARM_BY_KEY[key]
            run, stack = run_arm(data, plan.budget, arm, seed, weights,
                                 reuse=stacks.get(arm.reuses) if arm.reuses else None)
            if stack is not None:
                stacks[key] = stack
            runs.append(run)
            log(f"  {plan.name} seed {seed} ({key}): test error {100 * run.test_error:.2f} %, "
                f"{run.wall_seconds:.1f} s")
    return DatasetOutcome(plan.name, data.description, plan.budget, plan.seeds, cfg.arms, weights,
                          dict(plan.grids), points, runs, time.perf_counter() - started)


def run_study(cfg: StudyConfig, command: str = "", log: Callable[[str], None] | None = None) -> Study:
    """Run every dataset plan of ``cfg`` (sweep, then every arm and seed) and return the results."""
    log = log or (lambda msg: None)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    outcomes = []
    for plan in cfg.plans:
        log(f"{plan.name}: {plan.seeds} seed(s), arms {', '.join(cfg.arms)}")
        outcomes.append(run_dataset(plan, cfg, log))
    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU(s) (shared)"
    return Study(cfg, command, started, time.perf_counter() - t0, torch.__version__, torch.get_num_threads(),
                 machine, outcomes)


def write_outputs(study: Study, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report, curves = out_dir / REPORT_NAME, out_dir / CURVES_NAME
    report.write_text(render(study))
    write_curves(study, curves)
    write_plots(study, out_dir)
    return report, curves


def _parse_seeds(text: str | None, datasets: list[str], quick: bool) -> dict[str, int]:
    if text is None:
        return {name: (2 if quick else FULL_SEEDS[name]) for name in datasets}
    if "=" not in text:
        return {name: int(text) for name in datasets}
    pairs = dict(item.split("=", 1) for item in text.split(","))
    return {name: int(pairs.get(name, FULL_SEEDS[name])) for name in datasets}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, 2 seeds, few epochs, no sweep")
    parser.add_argument("--datasets", default=None, help="comma-separated: digits,fashion-mnist")
    parser.add_argument("--seeds", default=None, help="N, or per dataset: digits=5,fashion-mnist=3")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default docs/; quick: a temp folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets = (args.datasets or ("digits" if args.quick else "digits,fashion-mnist")).split(",")
    for name in datasets:
        if name not in study_data.LOADERS:
            parser.error(f"unknown dataset {name!r}; choose from {sorted(study_data.LOADERS)}")
    seeds = _parse_seeds(args.seeds, datasets, args.quick)
    if args.quick:
        base = quick_config()
        cfg = dataclasses.replace(base, plans=tuple(dataclasses.replace(base.plans[0], name=n, seeds=seeds[n])
                                                    for n in datasets))
        out = args.out or Path(tempfile.gettempdir()) / "drtrain-study-quick"
    else:
        cfg = full_config(datasets, seeds)
        out = args.out or ROOT / "docs"
    command = " ".join(["python bench/reproduce.py", *argv])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    study = run_study(cfg, command, log)
    report, curves = write_outputs(study, out)
    print(f"wrote {report} and {curves} in {study.seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
