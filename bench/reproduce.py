"""Where does DR help? The reproduction study, run through the service: every arm is a job (and
every DR weight grid a sweep) submitted over HTTP; the report is built from the API's results
and metric points only.

    python bench/reproduce.py [--url URL] [--quick] [--regimes digits,fashion-1pct] [--seeds 3]

Without ``--url`` it starts the embedded service (``drtrain up``, ``--workers`` training workers
of one torch thread each) in a temporary folder and stops it at the end. With ``--url`` the API
key comes from DRTRAIN_API_KEY (or ``--data-dir``), as for every client command.

Full mode writes docs/study.md (setup, sweeps, tables of mean ± std over seeds, paired tests, a
reading), docs/study_curves.csv, PNG plots and docs/study_results.json (every run's measurements;
``--report-from docs/study_results.json`` rebuilds the report from it without training). ``--quick`` (digits, 2 seeds, few epochs, fixed
DR weights, no sweep) is a smoke run of the same path: it writes to a temporary folder unless
``--out`` is given, so it never overwrites the committed study.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import study_data  # noqa: E402
from bench.study_plots import write_plots  # noqa: E402
from bench.study_report import render, write_curves  # noqa: E402
from bench.study_runs import (  # noqa: E402
    ARM_BY_KEY,
    DISC,
    DISC_COARSE,
    DISC_DEEP,
    GEN,
    GEN_COARSE,
    SWEPT_ON,
    Budget,
    RunResult,
    job_spec,
    run_result,
    selection_score,
)
from bench.study_service import Uploaded, Work, embedded_service, run_all, upload_regime  # noqa: E402
from bench.study_store import RESULTS_NAME, load, save  # noqa: E402
from bench.study_types import CURVES_NAME, DatasetOutcome, DatasetPlan, Study, StudyConfig, SweepPoint  # noqa: E402
from drtrain_client import Client  # noqa: E402

REPORT_NAME = "study.md"

FULL_LABEL_ARMS = ("a", "b", "c", "d", "e", "f0", "f1")
SCARCE_ARMS = ("a", "b", "c", "cg", "e", "eg")
# Start values (used as they are in quick mode): what earlier sweeps chose on digits.
DEFAULT_WEIGHTS = {GEN: 1.0, GEN_COARSE: 1.0, DISC: 0.1, DISC_COARSE: 0.1, DISC_DEEP: 0.1}
# Log-spaced, ten-fold steps: a sweep is one job per value, and the study runs on two CPU cores.
# A first run with (0.01, 0.1, 1) chose an edge of the grid for 7 of 14 weights, so the grids now
# reach a decade further where that happened.
DECADES = (0.01, 0.1, 1.0, 10.0)
FULL_LABEL_GRIDS = {GEN: (0.01, 0.03, 0.1, 0.3, 1.0, 3.0), DISC: (0.001, *DECADES), DISC_DEEP: DECADES}
SCARCE_GRIDS = {GEN: DECADES, GEN_COARSE: DECADES, DISC: DECADES, DISC_COARSE: DECADES}
# digits is tiny (1,527 train+val images): many epochs of small batches. Fashion-MNIST (10,000 train
# images) has 313 batches per epoch. The label-scarce regimes pretrain on ~60,000 images (batch 128:
# ~470 updates per epoch and layer) and fine-tune on 480 or 4,800 labelled ones.
FULL_PLANS = {
    "digits": (5, Budget(pretrain_epochs=30, finetune_epochs=30), FULL_LABEL_ARMS, FULL_LABEL_GRIDS),
    "fashion-mnist": (3, Budget(pretrain_epochs=8, finetune_epochs=15), FULL_LABEL_ARMS, FULL_LABEL_GRIDS),
    "fashion-1pct": (5, Budget(pretrain_epochs=5, pretrain_batch=128, finetune_epochs=30), SCARCE_ARMS,
                     SCARCE_GRIDS),
    "fashion-10pct": (5, Budget(pretrain_epochs=5, pretrain_batch=128, finetune_epochs=30), SCARCE_ARMS,
                      SCARCE_GRIDS),
}
FULL_NOTE = ("Budget compromises, to keep the whole study near an hour on two CPU cores shared with other "
             "work: 5 seeds (3 on the fully labelled Fashion-MNIST subsample), 5 pretraining epochs per layer "
             "in the label-scarce regimes, each DR weight swept on a single seed over ten-fold steps. With 3 "
             "to 5 seeds only large, consistent effects reach p < 0.05.")


def full_config(regimes: list[str], seeds: dict[str, int]) -> StudyConfig:
    plans = tuple(DatasetPlan(name, seeds[name], FULL_PLANS[name][1], FULL_PLANS[name][2], dict(DEFAULT_WEIGHTS),
                              dict(FULL_PLANS[name][3])) for name in regimes)
    return StudyConfig("full", plans, note=FULL_NOTE)


def quick_config(regimes: list[str], seeds: dict[str, int]) -> StudyConfig:
    budget = Budget(hidden=(64, 64), deep_hidden=(64,) * 6, pretrain_epochs=3, finetune_epochs=5)
    plans = tuple(DatasetPlan(name, seeds[name], budget, FULL_PLANS[name][2], dict(DEFAULT_WEIGHTS))
                  for name in regimes)
    return StudyConfig("quick", plans)


def _weights_used(plan: DatasetPlan) -> list[str]:
    used = {w for key in plan.arms for w in (ARM_BY_KEY[key].gen, ARM_BY_KEY[key].disc) if w}
    return [w for w in (GEN, GEN_COARSE, DISC, DISC_COARSE, DISC_DEEP) if w in used]


class _Regime:
    """One regime's data, uploads and collected runs while the study is in flight."""

    def __init__(self, plan: DatasetPlan, data: study_data.StudyData, uploaded: Uploaded) -> None:
        self.plan, self.data, self.uploaded = plan, data, uploaded
        self.weights = dict(plan.weights)
        self.sweep: list[SweepPoint] = []
        self.runs: list[RunResult] = []

    def spec(self, arm_key: str, weights: dict[str, float], seed: int, what: str) -> dict[str, Any]:
        arm = ARM_BY_KEY[arm_key]
        return job_spec(self.plan.budget, arm, weights, dataset_id=self.uploaded.train_id(arm.side),
                        test_id=self.uploaded.test, validation_fraction=self.data.validation_fraction,
                        seed=seed, name=f"study {self.plan.name} {what}",
                        tags=["study", f"regime-{self.plan.name}", f"arm-{arm_key}"])

    def sweep_work(self, seed: int) -> list[Work]:
        out = []
        for wkey in _weights_used(self.plan):
            grid = self.plan.grids.get(wkey, ())
            if not grid:
                continue
            arm_key = SWEPT_ON[wkey]
            path = "pretrain.dr.weight" if wkey in (GEN, GEN_COARSE) else "finetune.dr.weight"

            def done(value: Any, job: dict[str, Any], points: list[dict[str, Any]],
                     wkey: str = wkey, arm_key: str = arm_key) -> None:
                trial = {**self.weights, wkey: float(value)}
                run = run_result(self.plan.name, ARM_BY_KEY[arm_key], seed, self.plan.budget, job, points)
                self.sweep.append(SweepPoint(wkey, float(value), arm_key, selection_score(run), run, trial))

            out.append(Work((self.plan.name, wkey), self.spec(arm_key, self.weights, seed, f"sweep {wkey}"),
                            done, sweep_path=path, sweep_values=tuple(grid)))
        return out

    def choose_weights(self, log: Callable[[str], None]) -> None:
        for wkey in _weights_used(self.plan):
            points = sorted((p.score, p.value) for p in self.sweep if p.weight_name == wkey)
            if points:
                self.weights[wkey] = points[0][1]  # ties go to the smaller weight
                log(f"  {self.plan.name}: {wkey} = {self.weights[wkey]:g} (val error "
                    f"{100 * points[0][0]:.2f} %)")
        self.sweep.sort(key=lambda p: (p.weight_name, p.value))

    def study_work(self) -> list[Work]:
        out = []
        for seed in range(self.plan.seeds):
            for arm_key in self.plan.arms:
                def done(_: Any, job: dict[str, Any], points: list[dict[str, Any]],
                         arm_key: str = arm_key, seed: int = seed) -> None:
                    self.runs.append(run_result(self.plan.name, ARM_BY_KEY[arm_key], seed, self.plan.budget,
                                                job, points))

                out.append(Work((self.plan.name, arm_key, seed),
                                self.spec(arm_key, self.weights, seed, f"({arm_key}) seed {seed}"), done))
        return out

    def outcome(self) -> DatasetOutcome:
        self.runs.sort(key=lambda r: (self.plan.arms.index(r.arm), r.seed))
        return DatasetOutcome(self.plan.name, self.data.description, self.plan.budget, self.plan.seeds,
                              self.plan.arms, self.weights, dict(self.plan.grids), self.sweep, self.runs,
                              n_labelled=self.data.n_labelled, n_rows=len(self.data.y))


def _interleaved(groups: list[list[Work]]) -> list[Work]:
    """Round-robin over regimes, so long (pretraining) and short jobs share the workers."""
    out: list[Work] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def run_study(cfg: StudyConfig, client: Client, service: str, command: str = "",
              log: Callable[[str], None] | None = None) -> Study:
    """Upload every regime, sweep the DR weights on validation, then run every arm and seed."""
    log = log or (lambda msg: None)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    regimes = []
    for plan in cfg.plans:
        data = study_data.load(plan.name)
        if cfg.train_limit is not None:
            data = study_data.shrink(data, cfg.train_limit)
        log(f"{plan.name}: {plan.seeds} seed(s), arms {', '.join(plan.arms)}")
        regimes.append(_Regime(plan, data, upload_regime(client, data, log)))
    sweeps = [w for r in regimes for w in r.sweep_work(cfg.sweep_seed)]
    if sweeps:
        log(f"weight sweeps: {sum(w.size for w in sweeps)} jobs")
        run_all(client, sweeps, log)
        for r in regimes:
            r.choose_weights(log)
    study = _interleaved([r.study_work() for r in regimes])
    log(f"study: {len(study)} jobs")
    run_all(client, study, log)
    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU(s) (shared)"
    return Study(cfg, command, started, time.perf_counter() - t0, service, machine,
                 [r.outcome() for r in regimes])


def write_outputs(study: Study, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report, curves = out_dir / REPORT_NAME, out_dir / CURVES_NAME
    report.write_text(render(study))
    write_curves(study, curves)
    write_plots(study, out_dir)
    save(study, out_dir / RESULTS_NAME)
    return report, curves


def _parse_seeds(text: str | None, regimes: list[str], quick: bool) -> dict[str, int]:
    if text is None:
        return {name: (2 if quick else FULL_PLANS[name][0]) for name in regimes}
    if "=" not in text:
        return {name: int(text) for name in regimes}
    pairs = dict(item.split("=", 1) for item in text.split(","))
    return {name: int(pairs.get(name, FULL_PLANS[name][0])) for name in regimes}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running service (default: start the embedded one)")
    parser.add_argument("--data-dir", default=None, help="with --url: where to find the API key file")
    parser.add_argument("--workers", type=int, default=2, help="embedded service: training workers (default 2)")
    parser.add_argument("--quick", action="store_true", help="digits only, 2 seeds, few epochs, no sweep")
    parser.add_argument("--regimes", default=None, help=f"comma-separated, from {', '.join(FULL_PLANS)}")
    parser.add_argument("--seeds", default=None, help="N, or per regime: digits=5,fashion-mnist=3")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default docs/; quick: a temp folder)")
    parser.add_argument("--report-from", type=Path, default=None,
                        help=f"rebuild the report and plots from a {RESULTS_NAME} (no training)")
    args = parser.parse_args(argv)
    if args.report_from:
        study = load(args.report_from)
        report, _ = write_outputs(study, args.out or args.report_from.parent)
        print(f"rebuilt {report} from {args.report_from}")
        return 0
    regimes = (args.regimes or ("digits" if args.quick else ",".join(FULL_PLANS))).split(",")
    for name in regimes:
        if name not in FULL_PLANS:
            parser.error(f"unknown regime {name!r}; choose from {', '.join(FULL_PLANS)}")
    seeds = _parse_seeds(args.seeds, regimes, args.quick)
    cfg = quick_config(regimes, seeds) if args.quick else full_config(regimes, seeds)
    out = args.out or (Path(tempfile.gettempdir()) / "drtrain-study-quick" if args.quick else ROOT / "docs")
    command = " ".join(["python bench/reproduce.py", *argv])

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.url:
        with Client(args.url, data_dir=args.data_dir, timeout=120) as client:
            study = run_study(cfg, client, f"the service at {args.url}", command, log)
    else:
        with embedded_service(args.workers) as client:
            service = f"the embedded service (`drtrain up`, {args.workers} workers of one torch thread)"
            study = run_study(cfg, client, service, command, log)
    report, curves = write_outputs(study, out)
    print(f"wrote {report} and {curves} in {study.seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
