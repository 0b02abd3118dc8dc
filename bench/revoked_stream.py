"""Frames a revoked key's open event stream still receives, in embedded mode.

    .venv/bin/python -m bench.revoked_stream [--ttl 1] [--before CHECKOUT]

One API process (uvicorn, as ``drtrain up`` starts it, ``DRTRAIN_AUTH_CACHE_SECONDS=--ttl``)
serves a job that a writer thread gives a metric point every 20 ms, as a worker would. A
client opens the job's event stream, the key is revoked after 2 s, and the client reads
until the stream closes or 6 s after the revoke. Printed: frames (metric and status; not the
closing ``error``) received more than the TTL after the revoke, and the last event. ``--before`` serves another checkout of the same
schema in the same run.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import update

from bench.service_stack import ROOT, Stack
from drtrain.kit.db import session_scope
from drtrain.kit.models import Job, JobStatus, MetricPoint
from drtrain.tenants.keys import revoke_key

READ_AFTER_REVOKE = 6.0


def write_points(stack: Stack, job_id: str, stop: threading.Event) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        with session_scope(stack.factory) as s:
            s.add(MetricPoint(job_id=job_id, seq=seq, attempt=1, phase="finetune", layer=None,
                              layer_key=-1, epoch=seq, name="train_loss", value=1.0 / seq))
        time.sleep(0.02)


def measure(source: Path, ttl: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack("embedded", Path(tmp), source=source)
        try:
            url = stack.start_api(env={"DRTRAIN_AUTH_CACHE_SECONDS": str(ttl)})
            job_id = stack.seed_jobs(1)[0]
            with session_scope(stack.factory) as s:
                s.execute(update(Job).where(Job.id == job_id).values(
                    status=JobStatus.running.value, finished_at=None, progress=0.5))
            stop = threading.Event()
            writer = threading.Thread(target=write_points, args=(stack, job_id, stop))
            writer.start()
            revoked_at: float | None = None
            late, last_event = 0, ""
            try:
                with httpx.Client(timeout=30) as client, client.stream(
                        "GET", f"{url}/v1/jobs/{job_id}/events", headers=stack.auth) as resp:
                    opened = time.monotonic()
                    for line in resp.iter_lines():
                        now = time.monotonic()
                        if line.startswith("event: "):
                            last_event = line.removeprefix("event: ")
                            if (revoked_at is not None and now > revoked_at + ttl
                                    and last_event != "error"):
                                late += 1
                        if revoked_at is None and now > opened + 2:
                            with session_scope(stack.factory) as s:
                                revoke_key(s, stack.key)
                            revoked_at = time.monotonic()
                        if revoked_at is not None and now > revoked_at + READ_AFTER_REVOKE:
                            break
            finally:
                stop.set()
                writer.join()
            return (f"{source.name}: TTL {ttl:g} s: {late} frames more than the TTL after the "
                    f"revoke; last event {last_event!r}")
        finally:
            stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--before", type=Path, help="another checkout to measure first")
    args = parser.parse_args()
    for source in ([args.before] if args.before else []) + [ROOT]:
        print(measure(source.resolve(), args.ttl), flush=True)


if __name__ == "__main__":
    main()
