"""The study's side of the service: start an embedded one (``drtrain up``) or use a URL, upload
the regimes' data, and run jobs and sweeps to completion over HTTP with drtrain_client.

Nothing here trains: every number of the study comes from a job's result and metric points.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.service_stack import free_port
from bench.study_data import StudyData, write_npz
from drtrain_client import Client
from drtrain_client.connection import KEY_FILE, URL_FILE
from drtrain_client.errors import DrtrainError

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "cancelled"}


@contextlib.contextmanager
def embedded_service(workers: int, data_dir: Path | None = None, start_timeout: float = 120.0
                     ) -> Iterator[Client]:
    """``drtrain up`` in a temporary data folder, ``workers`` training workers of one torch
    thread each (the cores are shared between them, not oversubscribed); stopped on exit."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drtrain-study-")))
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = (data_dir / "service.log").open("w")
        stack.callback(log.close)
        proc = subprocess.Popen([sys.executable, "-m", "drtrain_cli.main", "up", "--data-dir", str(data_dir),
                                 "--port", str(port), "--workers", str(workers)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_timeout
        while not (data_dir / URL_FILE).exists() or not _healthy(url):  # written once healthy
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"drtrain up did not start; see {data_dir / 'service.log'}")
            time.sleep(0.3)
        key = (data_dir / KEY_FILE).read_text().strip()
        client = stack.enter_context(Client(url, key, timeout=120))
        yield client


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Uploaded:
    """A regime's dataset ids: the training data grouped by label, by coarse group, and the test set."""

    label: str
    test: str
    coarse: str | None = None

    def train_id(self, side: str) -> str:
        if side == "coarse":
            if self.coarse is None:
                raise ValueError("this regime has no coarse grouping")
            return self.coarse
        return self.label


def upload_regime(client: Client, data: StudyData, log: Callable[[str], None]) -> Uploaded:
    """Upload the regime's NPZ files (the service's own format) and wait until they are checked."""
    with tempfile.TemporaryDirectory(prefix="drtrain-study-upload-") as tmp:
        def put(name: str, *arrays: Any) -> str:
            path = write_npz(Path(tmp) / f"{name}.npz", *arrays)
            created = client.upload_dataset(path, name=name)
            ready = client.wait_dataset(created["id"], timeout=600)
            log(f"  uploaded {name}: {ready.get('n_samples')} rows, {ready.get('n_labelled')} labelled, "
                f"{ready.get('n_with_side')} with a side value -> {ready['id']}")
            return str(ready["id"])

        label = put(f"study-{data.name}-train", data.X, data.y)
        test = put(f"study-{data.name}-test", data.X_test, data.y_test)
        coarse = put(f"study-{data.name}-train-coarse", data.X, data.y, data.coarse) \
            if data.coarse is not None else None
    return Uploaded(label, test, coarse)


@dataclass
class Work:
    """A job, or a sweep over one JobSpec path; ``done`` gets each finished child job with its
    metric points (one call for a job, one per grid value for a sweep)."""

    key: Any
    spec: dict[str, Any]
    done: Callable[[Any, dict[str, Any], list[dict[str, Any]]], None]
    sweep_path: str | None = None
    sweep_values: tuple[Any, ...] = ()
    job_ids: dict[str, Any] = field(default_factory=dict)  # job id -> grid value (None for a job)

    @property
    def size(self) -> int:
        return len(self.sweep_values) if self.sweep_path else 1


def run_all(client: Client, work: list[Work], log: Callable[[str], None], max_active: int = 8,
            poll: float = 1.0) -> None:
    """Submit ``work`` in order, never more than ``max_active`` jobs at once (the tenant's cap),
    and hand each finished job to its ``done``. A 429 (cap reached) waits; anything else raises."""
    pending, active = list(work), {}
    total, finished = sum(w.size for w in work), 0
    started = time.monotonic()
    while pending or active:
        while pending and len(active) + pending[0].size <= max_active:  # active: one entry per job
            item = pending[0]
            if not _submit(client, item):
                break
            pending.pop(0)
            for job_id in item.job_ids:
                active[job_id] = item
        time.sleep(poll)
        for job_id in list(active):
            job = client.get_job(job_id)
            if job["status"] not in TERMINAL:
                continue
            item = active.pop(job_id)
            item.done(item.job_ids[job_id], dict(job), client.metrics(job_id))
            finished += 1
            if finished % 5 == 0 or finished == total:
                log(f"  {finished}/{total} jobs done ({(time.monotonic() - started) / 60:.1f} min)")


def _submit(client: Client, item: Work) -> bool:
    try:
        if item.sweep_path is None:
            item.job_ids[client.submit_job(item.spec)["id"]] = None
        else:
            sweep = client.create_sweep(item.spec, {item.sweep_path: list(item.sweep_values)})
            for child in sweep["children"]:
                item.job_ids[child["job_id"]] = child["grid_point"][item.sweep_path]
    except DrtrainError as exc:
        if getattr(exc, "status", None) == 429:
            return False
        raise
    return True
