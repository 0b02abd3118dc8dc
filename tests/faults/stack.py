"""The production-like stack the fault tests break: PostgreSQL + Redis on 127.0.0.1, a local
object folder, ``drtrain api`` and ``drtrain worker`` as separate process groups configured only
by environment, with short reliability timings.

Every process is started in its own session (``start_new_session=True``) so that ``os.killpg``
reaches a worker's Celery pool children too; ``Stack.close`` kills whatever is still alive.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, func, select, update

from drtrain.kit.db import make_engine
from drtrain.kit.models import Checkpoint, Job, JobStatus, MetricPoint, utcnow
from tests.e2e.flow import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
# 11 and 12 belong to tests/e2e and tests/worker.
REDIS_DB = 13
QUEUE = "drtrain"  # the API always publishes to the default queue
TERMINAL = ("succeeded", "failed", "cancelled")
METRICS_TOKEN = "faults-metrics-token"

# Short enough that a lost worker is noticed in seconds, long enough not to flap on 2 busy cores.
TIMINGS = {
    "DRTRAIN_HEARTBEAT_SECONDS": "0.5",
    # Faults strike mid-job: every epoch is a checkpoint to resume from.
    "DRTRAIN_CHECKPOINT_EVERY_EPOCHS": "1",
    "DRTRAIN_LEASE_SECONDS": "3",
    "DRTRAIN_REQUEUE_QUEUED_AFTER_SECONDS": "2",
    "DRTRAIN_CANCEL_GRACE_SECONDS": "1",
}

# builtin:digits (1437 training rows after a 0.2 validation split) through a [512, 256] DBN in
# batches of 8: short epochs in a job many epochs long, so a kill after the first metric point
# lands mid-epoch with most of the job still to run; it learns (val accuracy near 0.9), so a
# broken resume shows.
LONG_SPEC: dict[str, Any] = {
    "dataset_id": "builtin:digits",
    "validation_fraction": 0.2,
    "model": {"hidden_layers": [512, 256]},
    "pretrain": {"epochs": 6, "batch_size": 8, "learning_rate": 0.05,
                 "dr": {"weight": 0.5, "divergence": "hellinger", "pairs": {"sample": 4}}},
    "finetune": {"epochs": 4, "batch_size": 16, "learning_rate": 0.1,
                 "dr": {"weight": 0.05, "distance": "euclidean", "layers": "all"}},
    "seed": 5,
    "device": "cpu",
    "max_attempts": 3,
}

SHORT_SPEC: dict[str, Any] = {
    **LONG_SPEC,
    "model": {"hidden_layers": [32]},
    "pretrain": {**LONG_SPEC["pretrain"], "epochs": 1, "batch_size": 64},
    "finetune": {**LONG_SPEC["finetune"], "epochs": 2, "batch_size": 64},
}


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process and everything it forked (its own session), then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
    # A forked child may outlive its parent for a moment; the group must be empty.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Stack:
    """One module's service: its database, broker db, object folder, API and workers."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.broker_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
        self.objects = root / "objects"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
        self.env.update(
            DRTRAIN_ENVIRONMENT="production",
            DRTRAIN_DATABASE_URL=self.database_url,
            DRTRAIN_BROKER_URL=self.broker_url,
            DRTRAIN_STORAGE_URL=self.objects.resolve().as_uri(),
            DRTRAIN_DATA_DIR=str(root / "scratch"),
            DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT="50",
            # Production protects /metrics with a token by default (docs/reliability.md).
            DRTRAIN_METRICS_TOKEN=METRICS_TOKEN,
            # This tree's code, whatever the venv's editable install points at today.
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            **TIMINGS,
        )
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.api: subprocess.Popen | None = None
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = ""
        self.engine: Engine = make_engine(self.database_url)
        self.redis = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        self._logs = 0

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self._logs += 1
        with open(self.root / f"{self._logs:02d}-{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def prepare(self) -> None:
        drtrain = str(BIN / "drtrain")
        subprocess.run([drtrain, "migrate"], env=self.env, check=True, timeout=120,
                       capture_output=True)
        out = subprocess.run([drtrain, "keys", "create", "--tenant", "faults"], env=self.env,
                             check=True, capture_output=True, text=True, timeout=60).stdout
        self.key = out.strip().splitlines()[-1].split()[-1]
        assert self.key.startswith("drt_"), out

    def start_api(self) -> subprocess.Popen:
        assert self.api is None or self.api.poll() is not None, "the API is already running"
        self.api = self._spawn("api", [str(BIN / "drtrain"), "api", "--host", "127.0.0.1",
                                       "--port", str(self.port)])

        def ready() -> bool:
            assert self.api is not None and self.api.poll() is None, "the API exited"
            try:
                return httpx.get(self.base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for("the API to be ready", ready, timeout=60, interval=0.2)
        return self.api

    def kill_api(self) -> None:
        assert self.api is not None
        kill_group(self.api)

    def start_worker(self, name: str) -> subprocess.Popen:
        proc = self._spawn(name, [str(BIN / "drtrain"), "worker", "--loglevel", "INFO"])
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str) -> None:
        kill_group(self.workers[name])

    def worker_running(self, job_id: str) -> str:
        """The name of the worker whose pool process holds the job's lease (worker ids are
        ``host:pid`` of the pool child, which lives in its worker's process group)."""
        worker_id = self.job_row(job_id).worker_id
        assert worker_id, f"job {job_id} has no worker"
        pgid = os.getpgid(int(worker_id.rsplit(":", 1)[1]))
        names = [n for n, p in self.workers.items() if p.pid == pgid and p.poll() is None]
        assert len(names) == 1, (worker_id, pgid, {n: p.pid for n, p in self.workers.items()})
        return names[0]

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            kill_group(proc)
        self.workers.clear()

    def close(self) -> None:
        for proc in self.procs:
            kill_group(proc)
        self.procs.clear()
        self.workers.clear()
        self.engine.dispose()
        self.redis.close()

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted(self.root.glob("*.log")))

    def abandon_live_jobs(self) -> None:
        """End every unfinished job, so that the next test's workers (whose reapers see the
        whole database) never pick up this test's leftovers."""
        with self.engine.begin() as conn:
            conn.execute(update(Job).where(Job.status.notin_(TERMINAL))
                         .values(status=JobStatus.failed, status_reason="abandoned by the test",
                                 finished_at=utcnow(), lease_expires_at=None))
        self.redis.flushdb()

    # -- HTTP --------------------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30,
                            headers={"Authorization": f"Bearer {self.key}"})

    def submit(self, spec: dict[str, Any], expect: int = 202, **headers: str) -> dict[str, Any]:
        """POST the job (202 when created, 200 for an Idempotency-Key replay)."""
        with self.client() as c:
            r = c.post("/v1/jobs", json=spec, headers=headers)
        assert r.status_code == expect, r.text
        return r.json()

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, job_id: str, pred: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            job = self.get_job(job_id)
            if pred(job):
                return job
            if job["status"] in TERMINAL:
                raise AssertionError(f"job ended {job['status']} ({job['status_reason']}) "
                                     f"while waiting for {what}")
            return None
        return wait_for(what, probe, timeout, interval=0.2)

    def wait_final(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(f"job {job_id} to finish",
                        lambda: (j := self.get_job(job_id))["status"] in TERMINAL and j,
                        timeout, interval=0.2)

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = []
        since = 0
        with self.client() as c:
            while True:
                r = c.get(f"/v1/jobs/{job_id}/metrics", params={"since": since})
                assert r.status_code == 200, r.text
                page = r.json()
                if not page["items"]:
                    return points
                points += page["items"]
                since = page["next_since"]

    def wait_first_metric(self, job_id: str, timeout: float = 60) -> list[dict[str, Any]]:
        return wait_for(f"a first metric point of job {job_id}",
                        lambda: self.metrics(job_id), timeout, interval=0.1)

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.get(f"/v1/jobs/{job_id}/checkpoints")
        assert r.status_code == 200, r.text
        return r.json()["items"]

    # -- SQL (what the API does not show) ----------------------------------------------------
    def job_row(self, job_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(Job).where(Job.id == job_id)).one()

    def metric_count(self, job_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(MetricPoint)
                                .where(MetricPoint.job_id == job_id)).scalar_one()

    def metric_attempts(self, job_id: str) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        with self.engine.connect() as conn:
            for (attempt,) in conn.execute(select(MetricPoint.attempt)
                                           .where(MetricPoint.job_id == job_id)):
                counts[attempt] += 1
        return dict(counts)

    def checkpoint_rows(self, job_id: str) -> list[Any]:
        """Layer and epoch checkpoints, newest first (the order resume tries them in)."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(Checkpoint).where(Checkpoint.job_id == job_id,
                                         Checkpoint.kind.in_(("layer", "epoch")))
                .order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())))


# -- what every fault test asserts about a job's outcome -----------------------------------

def expected_epochs(spec: dict[str, Any]) -> list[tuple[str, int | None, int]]:
    """Every (phase, layer, epoch) the spec produces metrics for, in training order."""
    keys: list[tuple[str, int | None, int]] = []
    if spec.get("pretrain"):
        for layer in range(len(spec["model"]["hidden_layers"])):
            keys += [("pretrain", layer, e) for e in range(1, spec["pretrain"]["epochs"] + 1)]
    if spec.get("finetune"):
        keys += [("finetune", None, e) for e in range(1, spec["finetune"]["epochs"] + 1)]
    return keys


def assert_metric_series(points: list[dict[str, Any]], spec: dict[str, Any], *,
                         complete: bool) -> list[tuple[str, int | None, int]]:
    """No gap, no duplicate: seqs strictly increase; each (phase, layer, epoch) reported
    carries the same metric names as every other epoch of its (phase, layer), exactly once
    each; the epochs reported are the spec's, in training order, all of them when
    ``complete`` (else a prefix: a stopped job reports what it finished). Returns the epochs."""
    seqs = [p["seq"] for p in points]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), f"seqs not strictly increasing: {seqs}"
    full = [(p["phase"], p["layer"], p["epoch"], p["name"]) for p in points]
    assert len(full) == len(set(full)), "a metric point was written twice"
    order = expected_epochs(spec)
    position = {k: i for i, k in enumerate(order)}
    seen: list[tuple[str, int | None, int]] = []
    names: dict[tuple[str, int | None, int], set[str]] = defaultdict(set)
    for phase, layer, epoch, name in full:
        key = (phase, layer, epoch)
        assert key in position, f"{key} is not an epoch of the spec"
        if not seen or seen[-1] != key:
            assert key not in seen, f"points of {key} are not contiguous in seq order"
            seen.append(key)
        names[key].add(name)
    assert seen == order[:len(seen)], f"epochs out of training order or with a gap: {seen}"
    if complete:
        assert seen == order, f"missing epochs: {sorted(set(order) - set(seen), key=str)}"
    for key in seen:
        same_layer = [k for k in seen if k[:2] == key[:2]]
        assert names[key] == names[same_layer[0]], (key, names[key], names[same_layer[0]])
        assert names[key], key
    return seen


def assert_final_model(stack: Stack, job: dict[str, Any], tmp: Path) -> None:
    """The model downloads, matches the final checkpoint row's sha256 and loads back."""
    from dr_core.model_file import load_model

    final = [c for c in stack.checkpoints(job["id"]) if c["kind"] == "final"]
    assert len(final) == 1, final
    assert final[0]["attempt"] == job["attempt"]
    with stack.client() as c:
        r = c.get(f"/v1/jobs/{job['id']}/model")
    assert r.status_code == 200, r.text
    sha = hashlib.sha256(r.content).hexdigest()
    assert sha == final[0]["sha256"] == job["result"]["model_sha256"]
    path = tmp / f"{job['id']}.safetensors"
    path.write_bytes(r.content)
    model, meta = load_model(path)
    assert meta["hidden_layers"] == job["spec"]["model"]["hidden_layers"]
    assert sum(p.numel() for p in model.parameters()) > 0
    if job["spec"]["model"]["hidden_layers"] == LONG_SPEC["model"]["hidden_layers"]:
        # Resumed training still learns (chance is 0.1).
        assert job["result"]["val_accuracy"] > 0.5, job["result"]


def assert_no_model(stack: Stack, job_id: str) -> None:
    with stack.client() as c:
        r = c.get(f"/v1/jobs/{job_id}/model")
    assert r.status_code == 409, r.text
    assert not [c for c in stack.checkpoints(job_id) if c["kind"] == "final"]


def live_group_members(pgids: list[int]) -> list[int]:
    """Pids of live (not zombie) processes in these process groups, from /proc."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) in pgids:
            alive.append(int(entry.name))
    return alive
