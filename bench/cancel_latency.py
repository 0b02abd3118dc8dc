"""Cancel latency: from the 202 of POST /v1/jobs/{id}/cancel to the job read back `cancelled`,
for a job in the middle of training, through the API and a Celery worker as deployed, in the
embedded mode (SQLite, filesystem broker) and in production (PostgreSQL, Redis).

    python -m bench.cancel_latency [--modes embedded production] [--jobs 10] [--no-write]

Each job pretrains a small DBN for far longer than the measurement; it is cancelled once its
first epoch is recorded. The job is polled every 5 ms, so a figure carries up to 5 ms of
polling. Writes the "Cancel latency" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.benchmarks_doc import write_section
from bench.service_stack import Stack
from drtrain.kit.settings import Settings

BEGIN, END = "<!-- cancel_latency:begin -->", "<!-- cancel_latency:end -->"
POLL_SECONDS = 0.005
HEARTBEAT_SECONDS = Settings.model_fields["heartbeat_seconds"].default
LONG_JOB = {"dataset_id": "builtin:digits", "model": {"hidden_layers": [64]},
            "pretrain": {"epochs": 1000, "batch_size": 16, "dr": None},
            "finetune": {"epochs": 1}, "validation_fraction": 0.0}


def _wait(client: httpx.Client, job_id: str, done, timeout: float = 120.0) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"job {job_id} did not get there in {timeout:.0f} s")


def one_cancel(client: httpx.Client) -> float:
    """Seconds from the cancel's 202 to the job read back cancelled."""
    job_id = client.post("/v1/jobs", json=LONG_JOB).json()["id"]
    _wait(client, job_id, lambda j: j["status"] == "running" and j["epoch"] is not None)
    resp = client.post(f"/v1/jobs/{job_id}/cancel")
    answered = time.monotonic()
    assert resp.status_code == 202, resp.text
    job = _wait(client, job_id, lambda j: j["status"] in ("cancelled", "succeeded", "failed"))
    if job["status"] != "cancelled":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job['status_reason']}")
    return time.monotonic() - answered


def measure(mode: str, jobs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix=f"cancel-{mode}-") as tmp:
        stack = Stack(mode, Path(tmp))
        try:
            url = stack.start_api()
            stack.start_worker()
            with httpx.Client(base_url=url, headers=stack.auth, timeout=30) as client:
                return [one_cancel(client) for _ in range(jobs)]
        finally:
            stack.close()


def _row(mode: str, values: list[float]) -> str:
    ms = sorted(1000 * v for v in values)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return (f"| {mode} | {len(ms)} | {statistics.median(ms):.0f} | {p99:.0f} | {ms[0]:.0f} | "
            f"{ms[-1]:.0f} |")


def report(results: dict[str, list[float]], command: str) -> str:
    rows = "\n".join(_row(mode, values) for mode, values in results.items())
    return f"""{BEGIN}
## Cancel latency

`{command}` on {platform.machine()} Linux, Python {platform.python_version()}: the 202 of
`POST /v1/jobs/{{id}}/cancel` to the job read back `cancelled`, for a job in its first
pretraining epochs, through the API and one Celery worker (prefork, one process) as deployed.
The job is polled every {1000 * POLL_SECONDS:g} ms. The direct signal (`drtrain/kit/cancel_signal.py`: a
Redis channel in production, a flag file embedded) stops training at the next batch; the
heartbeat (every {HEARTBEAT_SECONDS:g} s) is the fallback.

| mode | cancels | p50 ms | p99 ms | min ms | max ms |
|---|---|---|---|---|---|
{rows}
{END}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["embedded", "production"],
                        choices=["embedded", "production"])
    parser.add_argument("--jobs", type=int, default=10, help="cancels per mode")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    args = parser.parse_args(argv)
    results = {mode: measure(mode, args.jobs) for mode in args.modes}
    command = " ".join(["python -m bench.cancel_latency", *(argv if argv is not None else sys.argv[1:])])
    text = report(results, command)
    print(text)
    if not args.no_write:
        write_section(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
