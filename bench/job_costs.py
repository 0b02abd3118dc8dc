"""Where a job's time goes through the service: each fixed cost of bench/service_overhead.py's
job, itemised, in both modes, in one command:

    .venv/bin/python -m bench.job_costs [--modes embedded production] [--repeats 5] [--no-write]

Per mode (embedded: SQLite, filesystem broker, local objects; production: PostgreSQL, Redis,
local objects), after one untimed job of each arm:

- once per worker process: the interpreter's start, the Celery app's imports (the worker's
  parent) and the first task's (runner, torch, dr_core; a pool child pays them once), each
  in a fresh interpreter;
- per job, through the stack (API + Celery worker, as bench/service_overhead.py starts it):
  the queue latency (``started_at - created_at``) and the job's ``finished_at - started_at``;
- per job, in ``worker.runner.run_job`` run in this process: each step's wall and CPU time
  (claim, data, training, model file, final rows ...), timed by wrapping the functions the
  runner calls (only calls made from the runner's own thread count: the recorder's writes
  during training are part of "training");
- dr_core directly: ``run_pipeline`` on the same rows and configs (bench/service_overhead.py's
  ``directly``).

The arms alternate, each after the machine is quiet (``wait_until_quiet``); each figure is the
median of ``--repeats`` with its min and max. CPU times
are the process's (``time.process_time``, all threads), steadier than wall time on a shared
machine. It rewrites the "Fixed costs of a job" section of docs/benchmarks.md and prints it.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.benchmarks_doc import write_section
from bench.service_overhead import SPEC, directly, in_runner, through_service
from bench.service_stack import Stack, open_stack, wait_until_quiet

BEGIN, END = "<!-- job-costs:begin -->", "<!-- job-costs:end -->"

# (row, module, attribute, parent row): the functions the runner calls, in the order a job
# calls them. A name the code no longer has is skipped (its time shows in "other").
STEPS: list[tuple[str, str, str, str | None]] = [
    ("claim (fenced UPDATE)", "drtrain.jobs.lifecycle", "claim", None),
    ("spec parse", "worker.runner", "parse_spec", None),
    ("lease keeper: start and first beat", "worker.heartbeat", "Heartbeat.start", None),
    ("lease keeper: start and first beat", "worker.heartbeat", "Heartbeat.beat_or_log", None),
    ("cancel watch: open", "drtrain.kit.cancel_signal", "watch", None),
    ("data: load, split, copy", "worker.runner", "prepare_data", None),
    ("resumable checkpoints query", "worker.runner", "resumable_checkpoints", None),
    ("warnings row", "drtrain.jobs.lifecycle", "add_warnings", None),
    ("dr_core configs", "worker.runner", "build_pipeline_config", None),
    ("training (with the recorder, and its drain)", "worker.training", "train", None),
    ("run_pipeline", "worker.training", "run_pipeline", "training (with the recorder, and its drain)"),
    ("model file: encode", "dr_core.model_file", "encode_model", None),
    ("model file: encode", "dr_core.model_file", "save_model", None),  # before: also wrote it
    ("model file: into the store", "drtrain.kit.storage", "LocalStore.put_stream", None),
    ("model file: into the store", "drtrain.kit.storage", "LocalStore.put_file", None),
    ("final checkpoint row", "drtrain.jobs.lifecycle", "add_checkpoint", None),
    ("finish (status, result, retention)", "worker.runner", "_finish", None),
    ("lease keeper: stop", "worker.heartbeat", "Heartbeat.stop", None),
]
OTHER = "other (work folder, threads, sessions)"


class Steps:
    """While entered, the STEPS functions are wrapped to add their wall and CPU seconds to
    ``totals[row]`` (calls from the thread that entered only)."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, row: str, fn: Any) -> Any:
        owner = threading.get_ident()

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != owner:
                return fn(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                total = self.totals[row]
                total[0] += time.perf_counter() - wall
                total[1] += time.process_time() - cpu
        return timed

    def __enter__(self) -> Steps:
        for row, module, attr, _ in STEPS:
            target: Any = importlib.import_module(module)
            *path, name = attr.split(".")
            for part in path:
                target = getattr(target, part, None)
            if target is None or not hasattr(target, name):
                continue
            original = target.__dict__[name] if isinstance(target, type) else getattr(target, name)
            self._undo.append((target, name, original))
            setattr(target, name, self._wrap(row, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for target, name, original in reversed(self._undo):
            setattr(target, name, original)


# ---------------------------------------------------------------- once per worker process
PROCESS_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import worker.celery_app
t1 = time.perf_counter()
import worker.tasks, worker.runner, worker.training, dr_core.model_file
t2 = time.perf_counter()
print(json.dumps({"celery app imports": t1 - t0, "first task's imports": t2 - t1}))
"""


def process_costs(stack: Stack) -> dict[str, float]:
    """Seconds of a fresh interpreter's start, and of each group of imports after it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=stack.env, check=True)
    start = time.perf_counter() - started
    out = subprocess.run([sys.executable, "-c", PROCESS_PROBE], env=stack.env, check=True,
                         capture_output=True, text=True, cwd=stack.source).stdout
    return {"interpreter start": start, **json.loads(out.strip().splitlines()[-1])}


# ---------------------------------------------------------------- per job
def _queue_latency(job: dict[str, Any]) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(job["started_at"]) - parse(job["created_at"])).total_seconds()


def measure(mode: str, repeats: int) -> dict[str, Any]:
    """Every figure of one mode: {row: [per-run (wall, cpu)]} plus the per-process costs."""
    torch.set_num_threads(1)  # the stack's worker runs with OMP_NUM_THREADS=1
    spec = {**SPEC, "device": "cpu"}
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix=f"drtrain-costs-{mode}-") as tmp, \
            open_stack(mode, Path(tmp)) as stack, \
            httpx.Client(headers=stack.auth, timeout=30) as client:
        api = stack.start_api()
        stack.start_worker()
        process = {name: [] for name in ("interpreter start", "celery app imports",
                                         "first task's imports")}
        through_service(client, api, {**spec, "seed": 99})  # warms the worker process
        in_runner(stack, {**spec, "seed": 99}, {})  # ... and this one
        for _ in range(repeats):
            for name, seconds in process_costs(stack).items():
                process[name].append(seconds)
            wait_until_quiet()
            seconds, job = through_service(client, api, spec)
            wait_until_quiet()  # the stack's worker may still be finishing its job
            runs["queue latency (created -> started)"].append((_queue_latency(job), float("nan")))
            runs["through the stack (started -> finished)"].append((seconds, float("nan")))
            with Steps() as steps:
                wall, cpu, _ = in_runner(stack, spec, {})
            top = list(dict.fromkeys(row for row, _m, _a, parent in STEPS if parent is None))
            nested = list(dict.fromkeys(row for row, _m, _a, parent in STEPS if parent))
            for row in top + nested:
                if row in steps.totals:
                    runs[row].append(tuple(steps.totals[row]))
            accounted = [sum(steps.totals[r][i] for r in top if r in steps.totals)
                         for i in (0, 1)]
            runs[OTHER].append((wall - accounted[0], cpu - accounted[1]))
            runs["the runner in all"].append((wall, cpu))
            wait_until_quiet()
            d_wall, d_cpu, _ = directly(spec, Path(tmp) / "direct")
            runs["dr_core directly (run_pipeline)"].append((d_wall, d_cpu))
            print(f"{mode}: stack {seconds:.2f} s | runner {wall:.2f} s ({cpu:.2f} s CPU) | "
                  f"dr_core {d_wall:.2f} s ({d_cpu:.2f} s CPU)", flush=True)
    return {"process": process, "runs": dict(runs)}


# ---------------------------------------------------------------- the table
def _spread(values: list[float], scale: float = 1000.0) -> str:
    values = [v for v in values if v == v]  # NaN: not measured
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * scale:.1f}"
    return (f"{statistics.median(values) * scale:.1f} "
            f"({min(values) * scale:.1f}–{max(values) * scale:.1f})")


def _ratio(a: list[tuple[float, float]], b: list[tuple[float, float]], i: int) -> str:
    ratios = [x[i] / y[i] for x, y in zip(a, b)]
    return f"{statistics.median(ratios):.3f}x ({min(ratios):.3f}–{max(ratios):.3f})"


def table(mode: str, m: dict[str, Any]) -> str:
    lines = [f"| {mode}: cost | per | wall ms, median (min–max) | CPU ms, median (min–max) |",
             "|---|---|---|---|"]
    for name, values in m["process"].items():
        lines.append(f"| {name} | worker process | {_spread(values)} | - |")
    runs = m["runs"]
    parents = {row: parent for row, _, _, parent in STEPS}
    for row, values in runs.items():
        label = f"… of which {row}" if parents.get(row) else row
        lines.append(f"| {label} | job | {_spread([w for w, _ in values])} | "
                     f"{_spread([c for _, c in values])} |")
    runner, direct = runs["the runner in all"], runs["dr_core directly (run_pipeline)"]
    stack = [(s, float("nan")) for s, _ in runs["through the stack (started -> finished)"]]
    lines.append(f"| runner / dr_core | job | {_ratio(runner, direct, 0)} | "
                 f"{_ratio(runner, direct, 1)} |")
    lines.append(f"| stack / dr_core | job | {_ratio(stack, direct, 0)} | - |")
    return "\n".join(lines)


def section(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    tables = "\n\n".join(table(mode, m) for mode, m in results.items())
    return f"""{BEGIN}
## Fixed costs of a job (`bench/job_costs.py`)

Command: `.venv/bin/python -m bench.job_costs --modes {' '.join(args.modes)} --repeats {args.repeats}`.
Date: {datetime.date.today().isoformat()}; torch {torch.__version__}; Python
{platform.python_version()}; {os.cpu_count()} CPUs shared with other processes; load average
at the end: {load}.

The job of bench/service_overhead.py (`builtin:digits`, [256, 128], 10 + 10 pretraining epochs
with Hellinger DR, 10 fine-tuning epochs, one thread, default checkpoint cadence). "worker
process": paid once by each worker process (a fresh interpreter each run), not by each job.
"job": the queue latency and the stack's time come from the job rows of a job submitted over
HTTP to the API and Celery worker; the steps are `worker.runner.run_job` in the bench's
process, each function the runner calls timed from the runner's thread ("… of which": part of
the row above it; "other": the runner's time outside the named steps). Production: PostgreSQL
and Redis, local objects. Median of {args.repeats} interleaved runs, each arm started once the
machine is quiet, min–max in brackets.

{tables}
{END}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["embedded", "production"],
                        choices=["embedded", "production"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, leave the docs alone")
    args = parser.parse_args()
    results = {mode: measure(mode, args.repeats) for mode in args.modes}
    text = section(results, args)
    if not args.no_write:
        write_section(text, BEGIN, END)
    print(text)


if __name__ == "__main__":
    main()
