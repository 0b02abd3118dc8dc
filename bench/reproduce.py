"""Does DR help, fairly tuned and with enough seeds? The reproduction study, run through the
service: every arm's tuning grid and its test seeds are sweeps submitted over HTTP; the report is
built from the API's results and metric points only (plus a logistic-regression floor computed
locally).

    python bench/reproduce.py [--url URL] [--quick] [--regimes digits-10pct,fashion-1pct] [--seeds 10]

Without ``--url`` it starts the embedded service (``drtrain up``, ``--workers`` training workers
of one torch thread each) in a temporary folder and stops it at the end. With ``--url`` the API
key comes from DRTRAIN_API_KEY (or ``--data-dir``), as for every client command.

Every arm gets the same learning-rate grid, DR arms also a lambda grid that includes 0; each arm
runs at the setting with the lowest mean validation error over the sweep seeds, then on paired
test seeds. Full mode writes docs/study.md, docs/study_curves.csv, PNG plots and
docs/study_results.json (``--report-from docs/study_results.json`` rebuilds the report from it
without training). ``--quick`` (digits-10pct, tiny network, 2 seeds, a tiny grid) is a smoke run
of the same path: it writes to a temporary folder unless ``--out`` is given.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import study_data  # noqa: E402
from bench.study_plots import write_plots  # noqa: E402
from bench.study_regime import Regime  # noqa: E402
from bench.study_report import render, write_curves  # noqa: E402
from bench.study_runs import ARMS, Budget  # noqa: E402
from bench.study_service import Work, embedded_service, run_all, upload_regime  # noqa: E402
from bench.study_store import RESULTS_NAME, load, save  # noqa: E402
from bench.study_types import CURVES_NAME, DatasetPlan, Study, StudyConfig  # noqa: E402
from drtrain_client import Client  # noqa: E402

REPORT_NAME = "study.md"

LEARNING_RATES = (0.03, 0.1, 0.3)
LAMBDAS = (0.0, 0.1, 1.0, 10.0)
# Reduced for two CPU cores: pretraining on 60,000 rows is what costs, so fewer, larger batches
# and epochs, two hidden layers, the arms that answer the main question, one sweep seed.
FASHION_BUDGET = Budget(hidden=(256, 256), pretrain_epochs=10, pretrain_batch=128, finetune_epochs=30,
                        finetune_batch=32)
FASHION_ARMS = ("glorot", "dbn", "dbn_sr", "dr", "dr_sr")
PLANS = {
    "digits-10pct": DatasetPlan("digits-10pct", 10, Budget(), tuple(a.key for a in ARMS), LEARNING_RATES, LAMBDAS,
                                (1000, 1001, 1002), protocol=True),
    "fashion-1pct": DatasetPlan("fashion-1pct", 5, FASHION_BUDGET, FASHION_ARMS, LEARNING_RATES, LAMBDAS, (1000,)),
    "fashion-10pct": DatasetPlan("fashion-10pct", 5, FASHION_BUDGET, FASHION_ARMS, LEARNING_RATES, LAMBDAS,
                                 (1000,)),
}
DEFAULT_REGIMES = ("digits-10pct", "fashion-1pct")
QUICK_BUDGET = Budget(hidden=(32, 32), deep_hidden=(16,) * 6, pretrain_epochs=2, finetune_epochs=8)


def full_config(regimes: list[str], seeds: dict[str, int]) -> StudyConfig:
    return StudyConfig("full", tuple(dataclasses.replace(PLANS[name], seeds=seeds[name]) for name in regimes))


def quick_config(regimes: list[str], seeds: dict[str, int]) -> StudyConfig:
    plans = tuple(dataclasses.replace(PLANS[name], seeds=seeds[name], budget=QUICK_BUDGET, lr_grid=(0.1,),
                                      weight_grid=(0.0, 1.0), sweep_seeds=(1000,)) for name in regimes)
    return StudyConfig("quick", plans)


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
    report, curves = out_dir / REPORT_NAME, out_dir / CURVES_NAME
    report.write_text(render(study))
    write_curves(study, curves)
    write_plots(study, out_dir)
    save(study, out_dir / RESULTS_NAME)
    return report, curves


def _parse_seeds(text: str | None, regimes: list[str], quick: bool) -> dict[str, int]:
    if text is None:
        return {name: (2 if quick else PLANS[name].seeds) for name in regimes}
    if "=" not in text:
        return {name: int(text) for name in regimes}
    pairs = dict(item.split("=", 1) for item in text.split(","))
    return {name: int(pairs.get(name, PLANS[name].seeds)) for name in regimes}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running service (default: start the embedded one)")
    parser.add_argument("--data-dir", default=None, help="with --url: where to find the API key file")
    parser.add_argument("--workers", type=int, default=2, help="embedded service: training workers (default 2)")
    parser.add_argument("--quick", action="store_true", help="digits-10pct, tiny net and grid, 2 seeds")
    parser.add_argument("--regimes", default=None,
                        help=f"comma-separated, from {', '.join(PLANS)} (default {','.join(DEFAULT_REGIMES)})")
    parser.add_argument("--seeds", default=None, help="N, or per regime: digits-10pct=10,fashion-1pct=5")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default docs/; quick: a temp folder)")
    parser.add_argument("--report-from", type=Path, default=None,
                        help=f"rebuild the report and plots from a {RESULTS_NAME} (no training)")
    args = parser.parse_args(argv)
    if args.report_from:
        study = load(args.report_from)
        report, _ = write_outputs(study, args.out or args.report_from.parent)
        print(f"rebuilt {report} from {args.report_from}")
        return 0
    regimes = (args.regimes or ("digits-10pct" if args.quick else ",".join(DEFAULT_REGIMES))).split(",")
    for name in regimes:
        if name not in PLANS:
            parser.error(f"unknown regime {name!r}; choose from {', '.join(PLANS)}")
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
