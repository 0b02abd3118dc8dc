"""Several jobs per GPU: aggregate throughput of K small jobs sharing one device
against the same jobs run one at a time, through the service, in one command:

    .venv/bin/python -m bench.gpu_packing [--jobs 4] [--device cuda] [--repeats 2] [--no-write]

Both arms use the embedded stack of bench/service_stack.py (API + Celery worker, SQLite,
local objects). One at a time: a worker with ``--concurrency 1``. Packed: ``--concurrency K``
with ``DRTRAIN_JOBS_PER_DEVICE=K`` (worker/packing.py admits jobs by estimated memory). The
same K jobs (different seeds) are submitted at once; the figure is the makespan, first
``started_at`` to last ``finished_at``, and the ratio one-at-a-time / packed is the aggregate
throughput gain (target >= 2.5x for four small jobs on a GPU). ``--device cpu`` is a dry run
of the bench itself (a CPU has no idle launch gaps to fill: expect about 1x or less).
It rewrites the "Jobs per GPU" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.benchmarks_doc import write_section
from bench.service_stack import QUEUE, Stack

BEGIN, END = "<!-- gpu-packing:begin -->", "<!-- gpu-packing:end -->"
TARGET = 2.5
# A small job: launch-bound on a GPU (batch 128, widths 256), a few seconds alone.
SMALL_JOB: dict[str, Any] = {
    "dataset_id": "builtin:digits", "validation_fraction": 0.1,
    "model": {"hidden_layers": [256, 256]},
    "pretrain": {"epochs": 10, "batch_size": 32, "dr": {"weight": 0.5, "divergence": "hellinger"}},
    "finetune": {"epochs": 10, "batch_size": 32, "dr": None},
}


def _makespan(jobs: list[dict[str, Any]]) -> float:
    parse = datetime.datetime.fromisoformat
    return (max(parse(j["finished_at"]) for j in jobs)
            - min(parse(j["started_at"]) for j in jobs)).total_seconds()


def _run_batch(client: httpx.Client, api: str, device: str, n: int, seed0: int) -> float:
    ids = [client.post(f"{api}/v1/jobs", json={**SMALL_JOB, "device": device, "seed": seed0 + i}
                       ).json()["id"] for i in range(n)]
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 3600
    while len(done) < n and time.monotonic() < deadline:
        for job_id in ids:
            if job_id not in done:
                job = client.get(f"{api}/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"job {job['status']}: {job.get('status_reason')}")
                    done[job_id] = job
        time.sleep(0.1)
    return _makespan(list(done.values()))


def arm(concurrency: int, device: str, n: int, repeats: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="drtrain-packing-") as tmp:
        stack = Stack("embedded", Path(tmp))
        stack.env["DRTRAIN_JOBS_PER_DEVICE"] = str(concurrency)
        try:
            api = stack.start_api()
            stack._start("worker", [sys.executable, "-m", "celery", "-A", "worker.celery_app",
                                    "worker", f"--concurrency={concurrency}", "--pool=prefork",
                                    f"--queues={QUEUE}", "--loglevel=WARNING", "--without-gossip",
                                    "--without-mingle", "--without-heartbeat"], None)
            with httpx.Client(headers=stack.auth, timeout=30) as client:
                _run_batch(client, api, device, concurrency, 1000)  # warm every pool process
                return [_run_batch(client, api, device, n, 100 * r) for r in range(repeats)]
        except Exception:
            print(f"--- worker log\n{stack.log('worker')}", file=sys.stderr)
            raise
        finally:
            stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available (use --device cpu for a dry run)")
    serial = statistics.median(arm(1, args.device, args.jobs, args.repeats))
    packed = statistics.median(arm(args.jobs, args.device, args.jobs, args.repeats))
    gain = serial / packed
    verdict = "met" if gain >= TARGET else "NOT met"
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPUs"
    text = f"""{BEGIN}
## Jobs per GPU (`bench/gpu_packing.py`)

Command: `.venv/bin/python -m bench.gpu_packing --jobs {args.jobs} --device {args.device} --repeats {args.repeats}`.
Date: {datetime.date.today().isoformat()}; torch {torch.__version__}; {name}.
{args.jobs} small jobs ({SMALL_JOB['model']['hidden_layers']} on `builtin:digits`, 10 + 10
pretraining epochs with Hellinger DR, 10 fine-tuning epochs, batch 32) submitted at once;
makespan from the first start to the last finish, median of {args.repeats}.

| one at a time (`--concurrency 1`) | packed (`--concurrency {args.jobs}`, `DRTRAIN_JOBS_PER_DEVICE={args.jobs}`) | aggregate throughput | target >= {TARGET}x |
|---|---|---|---|
| {serial:.1f} s | {packed:.1f} s | {gain:.2f}x | {verdict} |
{END}
"""
    print(text)
    if not args.no_write:
        write_section(text, BEGIN, END)


if __name__ == "__main__":
    main()
