"""Jobs at once on one host: a worker running K jobs, with every CPU per training process
(torch's default) against the worker's share of the CPUs (worker/threads.py), in one command:

    .venv/bin/python -m bench.jobs_at_once [--jobs 2] [--repeats 3] [--no-write]

A stack of bench/service_stack.py (embedded: the API and a Celery worker with
``--concurrency=K``, no OMP_NUM_THREADS) runs K copies of bench/service_overhead.py's job,
submitted over HTTP at once. Two arms, alternating, each with a fresh worker:
- **every CPU per job**: ``DRTRAIN_TORCH_THREADS`` = the host's CPUs, what each training
  process used before the worker shared them out (torch's own default);
- **shared** (the default, ``DRTRAIN_TORCH_THREADS`` unset): the host's CPUs / K each.
The figure is the makespan (first ``started_at`` to last ``finished_at``, from the job rows),
median of ``--repeats`` with min-max. It rewrites the "Jobs at once on one host" section of
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.benchmarks_doc import write_section
from bench.service_overhead import SPEC, _wait
from bench.service_stack import QUEUE, Stack, open_stack, wait_until_quiet
from worker.threads import host_cpus, training_threads

BEGIN, END = "<!-- jobs-at-once:begin -->", "<!-- jobs-at-once:end -->"
EVERY_CPU, SHARED = "every CPU per job (torch's default)", "shared (the default)"


def start_worker(stack: Stack, jobs: int, threads: int | None) -> None:
    # The stack pins one thread for its other benches; here the worker must choose.
    stack.env.pop("OMP_NUM_THREADS", None)
    env = {"DRTRAIN_TORCH_THREADS": str(threads)} if threads else {}
    stack.start_process("worker", [sys.executable, "-m", "celery", "-A", "worker.celery_app",
                                   "worker", f"--concurrency={jobs}", "--pool=prefork",
                                   f"--queues={QUEUE}", "--loglevel=INFO", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat"], env)


def makespan(client: httpx.Client, api: str, jobs: int) -> tuple[float, list[dict[str, Any]]]:
    """(first start -> last finish seconds, the jobs) of ``jobs`` jobs submitted at once."""
    ids = [client.post(f"{api}/v1/jobs", json=SPEC).json()["id"] for _ in range(jobs)]
    done = [_wait(client, f"{api}/v1/jobs/{job_id}") for job_id in ids]
    parse = datetime.datetime.fromisoformat
    start = min(parse(job["started_at"]) for job in done)
    return (max(parse(job["finished_at"]) for job in done) - start).total_seconds(), done


def measure(stack: Stack, api: str, jobs: int, repeats: int
            ) -> tuple[dict[str, list[float]], dict[str, set[float]]]:
    """(makespans, validation accuracies seen) per arm."""
    arms = {EVERY_CPU: host_cpus(), SHARED: None}
    times: dict[str, list[float]] = {name: [] for name in arms}
    accuracies: dict[str, set[float]] = {name: set() for name in arms}
    with httpx.Client(headers=stack.auth, timeout=60) as client:
        for round_ in range(repeats + 1):  # the first round warms the page cache: untimed
            for name, threads in arms.items():
                start_worker(stack, jobs, threads)
                wait_until_quiet()
                seconds, done = makespan(client, api, jobs)
                stack.stop("worker")
                if round_:
                    times[name].append(seconds)
                accuracies[name].update(job["result"]["val_accuracy"] for job in done)
                print(f"{name}: {seconds:.2f} s", flush=True)
    return times, accuracies


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def section(times: dict[str, list[float]], accuracies: dict[str, set[float]],
            args: argparse.Namespace) -> str:
    cpus = host_cpus()
    rows = "\n".join(
        f"| {name} | {cpus if name == EVERY_CPU else training_threads(0, args.jobs, cpus, {})} | {_spread(v)} | "
        f"{statistics.median(v) / statistics.median(times[SHARED]):.2f}x | "
        f"{', '.join(f'{a:.4f}' for a in sorted(accuracies[name]))} |"
        for name, v in times.items())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{BEGIN}
## Jobs at once on one host (`bench/jobs_at_once.py`)

Command: `.venv/bin/python -m bench.jobs_at_once --jobs {args.jobs} --repeats {args.repeats}`.
Date: {datetime.date.today().isoformat()}; Python {platform.python_version()}; {cpus} CPUs;
load average at the end: {load}.

A Celery worker with `--concurrency={args.jobs}` (embedded stack) runs {args.jobs} copies of the
service-overhead job (`builtin:digits`, [256, 128], 10 + 10 pretraining epochs with Hellinger
DR, 10 fine-tuning epochs), submitted at once; the makespan runs from the first job's start
to the last one's finish (median of {args.repeats}, min-max in brackets; arms alternate, each
with a fresh worker). `DRTRAIN_TORCH_THREADS` sets the first arm's threads; the second is the
default, the host's CPUs shared out among the jobs run at once (`worker/threads.py`).

| threads per training process | threads | makespan | / shared | validation accuracy |
|---|---|---|---|---|
{rows}

The last column lists every validation accuracy an arm's jobs ended with. Sums split over
another number of threads round differently, and training carries that on: accuracies may
differ between the arms, and between runs where more than one thread shares a sum.
{END}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="the worker's --concurrency")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, leave the docs alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drtrain-jobs-at-once-") as tmp, \
            open_stack("embedded", Path(tmp)) as stack:
        times, accuracies = measure(stack, stack.start_api(), args.jobs, args.repeats)
    text = section(times, accuracies, args)
    if not args.no_write:
        write_section(text, BEGIN, END)
    print(text)


if __name__ == "__main__":
    main()
