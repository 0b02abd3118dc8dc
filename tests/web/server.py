"""Start `drtrain up` in a temporary data folder for the browser tests and the screenshot script."""
from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from drtrain.jobs.lifecycle import MetricValue

DRTRAIN = str(Path(sys.executable).with_name("drtrain"))
TERMINAL = {"succeeded", "failed", "cancelled"}

# Small on builtin:digits (64 features, 1797 samples): a job ends while the browser watches.
TINY: dict[str, Any] = {
    "dataset_id": "builtin:digits",
    "validation_fraction": 0.2,
    "model": {"hidden_layers": [32]},
    "pretrain": {"epochs": 2, "batch_size": 64, "learning_rate": 0.1,
                 "dr": {"weight": 0.5, "divergence": "hellinger"}},
    "finetune": {"epochs": 4, "batch_size": 64, "learning_rate": 0.2,
                 "dr": {"weight": 0.05, "distance": "euclidean"}},
    "seed": 0,
}


# A job that runs long enough to be watched and cancelled (about 20 epochs a second here);
# the runtime cap ends it even if the cancel test never runs.
LONG = copy.deepcopy(TINY) | {"max_runtime_seconds": 120}
LONG["pretrain"] = dict(TINY["pretrain"], epochs=1000, batch_size=32)
LONG["finetune"] = dict(TINY["finetune"], epochs=1000)
PLAIN = copy.deepcopy(TINY)  # DR off: the arm to compare against
PLAIN["pretrain"]["dr"] = None
PLAIN["finetune"]["dr"] = None
PLAIN["seed"] = 1
SWEEP_BASE = copy.deepcopy(TINY)
SWEEP_BASE["pretrain"]["epochs"] = 1
SWEEP_BASE["finetune"]["epochs"] = 2
SWEEP_GRID = {"finetune.dr.weight": [0, 0.1], "seed": [0, 1]}
# Two hidden layers with DR in both phases: DR diagnostics per layer to draw.
DIAGNOSED = copy.deepcopy(TINY)
DIAGNOSED["model"] = {"hidden_layers": [16, 8]}
DIAGNOSED["finetune"]["epochs"] = 3
DIAGNOSED["seed"] = 2

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DRTRAIN_WEB_ARTIFACTS", REPO / "build" / "web-screenshots"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    key: str
    data_dir: Path
    proc: subprocess.Popen
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.key}"})

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/v1/jobs", json=spec)
            assert r.status_code in (200, 202), r.text
            return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            return r.json()

    def wait(self, job_id: str, done: set[str] | None = None, timeout: float = 120) -> dict[str, Any]:
        done = done or TERMINAL
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in done:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            assert self.proc.poll() is None, "drtrain up exited:\n" + self.log_tail()
            time.sleep(0.3)

    def put_metrics(self, job_id: str, points: list[MetricValue]) -> None:
        """Write metric points into the server's database as a worker would, for metrics the
        installed worker may not record (yet): a point whose (phase, layer, epoch, name) is
        already there gets the given value. Only for a finished job, whose seqs no worker
        assigns any more."""
        from sqlalchemy import func, select

        from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
        from drtrain.kit.models import Job, MetricPoint

        engine = make_engine(f"sqlite:///{self.data_dir / 'drtrain.sqlite3'}")
        try:
            with session_scope(make_sessionmaker(engine)) as s:
                attempt = s.execute(select(Job.attempt).where(Job.id == job_id)).scalar_one()
                seq = s.execute(select(func.coalesce(func.max(MetricPoint.seq), 0))
                                .where(MetricPoint.job_id == job_id)).scalar_one()
                for p in points:
                    layer_key = -1 if p.layer is None else p.layer
                    row = s.execute(select(MetricPoint).where(
                        MetricPoint.job_id == job_id, MetricPoint.phase == p.phase,
                        MetricPoint.layer_key == layer_key, MetricPoint.epoch == p.epoch,
                        MetricPoint.name == p.name)).scalar_one_or_none()
                    if row is not None:
                        row.value = p.value
                        continue
                    seq += 1
                    s.add(MetricPoint(job_id=job_id, seq=seq, attempt=attempt, phase=p.phase,
                                      layer=p.layer, layer_key=layer_key, epoch=p.epoch,
                                      name=p.name, value=p.value))
        finally:
            engine.dispose()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def start(data_dir: Path, *, workers: int = 2, timeout: float = 120,
          settings: dict[str, str] | None = None) -> Server:
    """`drtrain up` on a free port with its own data folder; returns once the API answers and
    the key file exists. Each process trains on one thread, so two workers share two cores.
    ``settings`` are ``DRTRAIN_*`` variables for it; none of the caller's own is passed on."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(settings or {}))
    log_path = data_dir.parent / f"{data_dir.name}-up.log"
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([DRTRAIN, "up", "--port", str(port), "--data-dir", str(data_dir),
                             "--workers", str(workers)],
                            cwd=data_dir.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Server(url, "", data_dir, proc, log_path)
    deadline = time.monotonic() + timeout
    key_file = data_dir / "api-key"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"drtrain up exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200 and key_file.exists() \
                    and key_file.read_text().strip():
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"drtrain up not ready after {timeout}s:\n{server.log_tail()}")
        time.sleep(0.3)
    server.key = key_file.read_text().strip()
    return server


@contextmanager
def serving(data_dir: Path, *, workers: int = 2,
            settings: dict[str, str] | None = None) -> Iterator[Server]:
    """``start``'s server for the block, stopped after it (its log printed if it failed)."""
    srv = start(data_dir, workers=workers, settings=settings)
    try:
        yield srv
    finally:
        code = srv.stop()
        if code not in (0, None):
            print(srv.log_tail())
