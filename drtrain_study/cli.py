"""Does DR help, fairly tuned and with enough seeds? The reproduction study, run through the
service: every arm's tuning grid and its test seeds are sweeps submitted over HTTP; the report is
built from the API's results and metric points only (plus a logistic-regression floor computed
locally).

    drtrain-study [--url URL] [--quick] [--regimes digits-10pct,fashion-1pct] [--seeds 10]

Without ``--url`` it starts the embedded service (``drtrain up``, ``--workers`` training workers
of one torch thread each) in a temporary folder and stops it at the end. With ``--url`` the API
key comes from DRTRAIN_API_KEY (or ``--data-dir``), as for every client command.

Every arm gets the same learning-rate grid, DR arms also a lambda grid that includes 0; each arm
runs at the setting with the lowest mean validation error over the sweep seeds, then on paired
test seeds. Full mode writes study.md, study_curves.csv, PNG plots and study_results.json into
docs/ of the current folder (run it from the repository root; ``--report-from
docs/study_results.json`` rebuilds the report from it without training). ``--quick``
(digits-10pct, tiny network, 2 seeds, a tiny grid) is a smoke run of the same path: it writes to
a temporary folder unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from drtrain_client import Client
from drtrain_study.plans import DEFAULT_REGIMES, PLANS, full_config, parse_seeds, quick_config
from drtrain_study.run import run_study, write_outputs
from drtrain_study.service import embedded_service
from drtrain_study.store import RESULTS_NAME, load

PROGRAM = "drtrain-study"


def _parser() -> argparse.ArgumentParser:
    summary = " ".join((__doc__ or "").split("\n\n")[0].split())  # the docstring's first paragraph
    parser = argparse.ArgumentParser(prog=PROGRAM, description=summary)
    parser.add_argument("--url", default=None, help="a running service (default: start the embedded one)")
    parser.add_argument("--data-dir", default=None, help="with --url: where to find the API key file")
    parser.add_argument("--workers", type=int, default=2,
                        help="embedded service: training workers (default 2)")
    parser.add_argument("--quick", action="store_true", help="digits-10pct, tiny net and grid, 2 seeds")
    parser.add_argument("--regimes", default=None,
                        help=f"comma-separated, from {', '.join(PLANS)} "
                             f"(default {','.join(DEFAULT_REGIMES)})")
    parser.add_argument("--seeds", default=None, help="N, or per regime: digits-10pct=10,fashion-1pct=5")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default ./docs; quick: a temp folder)")
    parser.add_argument("--report-from", type=Path, default=None,
                        help=f"rebuild the report and plots from a {RESULTS_NAME} (no training)")
    return parser


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
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
    seeds = parse_seeds(args.seeds, regimes, args.quick)
    cfg = quick_config(regimes, seeds) if args.quick else full_config(regimes, seeds)
    out = args.out or (Path(tempfile.gettempdir()) / "drtrain-study-quick" if args.quick else Path("docs"))
    command = " ".join([PROGRAM, *argv])
    if args.url:
        with Client(args.url, data_dir=args.data_dir, timeout=120) as client:
            study = run_study(cfg, client, f"the service at {args.url}", command, _log)
    else:
        with embedded_service(args.workers) as client:
            service = f"the embedded service (`drtrain up`, {args.workers} workers of one torch thread)"
            study = run_study(cfg, client, service, command, _log)
    report, curves = write_outputs(study, out)
    print(f"wrote {report} and {curves} in {study.seconds / 60:.1f} min")
    return 0
