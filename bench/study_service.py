"""The study's side of the service: start an embedded one (``drtrain up``) or use a URL, upload
the regimes' data, and run jobs and sweeps to completion over HTTP with drtrain_client.

Nothing here trains: every number of the study comes from a job's result and metric points.
"""
from __future__ import annotations

import contextlib
import math
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
    """A regime's dataset ids: the training data (labels, -1 for none) and the test set."""

    train: str
    test: str


def upload_regime(client: Client, data: StudyData, log: Callable[[str], None]) -> Uploaded:
    """Upload the regime's NPZ files (the service's own format) and wait until they are checked."""
    with tempfile.TemporaryDirectory(prefix="drtrain-study-upload-") as tmp:
        def put(name: str, X: Any, y: Any) -> str:
            path = write_npz(Path(tmp) / f"{name}.npz", X, y)
            created = client.upload_dataset(path, name=name)
            ready = client.wait_dataset(created["id"], timeout=600)
            log(f"  uploaded {name}: {ready.get('n_samples')} rows, {ready.get('n_labelled')} labelled "
                f"-> {ready['id']}")
            return str(ready["id"])

        return Uploaded(put(f"study-{data.name}-train", data.X, data.y),
                        put(f"study-{data.name}-test", data.X_test, data.y_test))


@dataclass
class Work:
    """A job, or a sweep over a grid of JobSpec paths; ``done`` gets each finished child job with
    its metric points (one call for a job, with point None; one per grid point for a sweep)."""

    key: Any
    spec: dict[str, Any]
    done: Callable[[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]]], None]
    grid: dict[str, list[Any]] | None = None
    job_ids: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # job id -> grid point
    sweep_id: str | None = None
    running: set[str] = field(default_factory=set)  # submitted, not yet handed to ``done``

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1


def run_all(client: Client, work: list[Work], log: Callable[[str], None], max_active: int = 8,
            max_sweep_active: int = 256, poll: float = 1.0) -> None:
    """Submit ``work`` in order, never more than the tenant's caps at once (``max_active`` for
    single jobs; a sweep is accepted while active jobs plus its children stay within
    ``max_sweep_active``), and hand each finished job to its ``done``. A 429 (cap reached)
    waits; anything else raises."""
    pending, active = list(work), []
    total, finished = sum(w.size for w in work), 0
    started = time.monotonic()
    while pending or active:
        while pending and _room(active, pending[0], max_active, max_sweep_active):
            if not _submit(client, pending[0]):
                break
            active.append(pending.pop(0))
        time.sleep(poll)
        for item in list(active):
            for job_id in _newly_ended(client, item):
                item.done(item.job_ids[job_id], dict(client.get_job(job_id)), client.metrics(job_id))
                finished += 1
                if finished % 10 == 0 or finished == total:
                    log(f"  {finished}/{total} jobs done ({(time.monotonic() - started) / 60:.1f} min)")
            if not item.running:
                active.remove(item)


def _room(active: list[Work], item: Work, max_active: int, max_sweep_active: int) -> bool:
    in_flight = sum(len(w.running) for w in active)
    return in_flight + item.size <= (max_sweep_active if item.grid else max_active)


def _newly_ended(client: Client, item: Work) -> list[str]:
    """Jobs of ``item`` that reached a terminal status since the last look: one sweep read
    covers all its children, so polling costs one request per sweep, not per job."""
    if item.sweep_id is None:
        statuses = {job_id: client.get_job(job_id)["status"] for job_id in item.running}
    else:
        statuses = {c["job_id"]: c["status"] for c in client.get_sweep(item.sweep_id)["children"]}
    ended = [job_id for job_id in item.running if statuses.get(job_id) in TERMINAL]
    item.running.difference_update(ended)
    return ended


def _submit(client: Client, item: Work) -> bool:
    try:
        if item.grid is None:
            item.job_ids[client.submit_job(item.spec)["id"]] = None
        else:
            sweep = client.create_sweep(item.spec, item.grid)
            item.sweep_id = sweep["id"]
            for child in sweep["children"]:
                item.job_ids[child["job_id"]] = dict(child["grid_point"])
    except DrtrainError as exc:
        if getattr(exc, "status", None) == 429:
            return False
        raise
    item.running = set(item.job_ids)
    return True
