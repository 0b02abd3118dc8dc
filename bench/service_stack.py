"""The processes bench/service.py measures: the API (uvicorn, as ``drtrain up`` starts it), a
bare FastAPI app under the same uvicorn command (the baseline), and a training worker, over
either the embedded backends (SQLite, filesystem broker, local objects) or PostgreSQL + Redis;
plus the rows a benchmark reads (finished jobs, a job with its metric points), written
directly into the database."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, create_engine, text, update

from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec, spec_to_dict
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Job, JobStatus, MetricPoint, utcnow
from drtrain.tenants.keys import create_key

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("DRTRAIN_BENCH_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DRTRAIN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE = "drtrain"


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database brought up to date by Alembic, dropped afterwards: its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"drtrain_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_and_total_ticks() -> tuple[int, int]:
    """The machine's CPU ticks so far (/proc/stat): busy, and all."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def wait_until_quiet(busy_below: float = 0.1, interval: float = 0.2,
                     timeout: float = 10.0) -> float:
    """Wait until the whole machine uses less than ``busy_below`` of one core over an
    ``interval`` (or ``timeout`` passed); returns the seconds waited. Between the arms of a
    comparison: what the previous arm left running (a worker finishing its job, the database
    writing behind it) must not be charged to the next arm."""
    start = time.monotonic()
    cores = os.cpu_count() or 1
    while time.monotonic() - start < timeout:
        busy0, total0 = _busy_and_total_ticks()
        time.sleep(interval)
        busy1, total1 = _busy_and_total_ticks()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) * cores < busy_below:
            break
    return time.monotonic() - start


def status_bytes(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status (``VmRSS``, ``VmHWM``...) in bytes; 0 if absent."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    return status_bytes(pid, "VmRSS")


class Stack:
    """``source``: the checkout whose API and worker are served (default: this one; another
    checkout of the same schema gives a before/after comparison in one run)."""

    def __init__(self, mode: str, root: Path, source: Path = ROOT) -> None:
        assert mode in ("embedded", "production")
        self.mode, self.root, self.source = mode, root, source
        self.data_dir = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
        self.env.update(DRTRAIN_DATA_DIR=str(self.data_dir), PYTHONPATH=str(source),
                        PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                        DRTRAIN_FASHION_MNIST_DIR=str(root / "no-fashion-mnist"),
                        # the submit benchmarks create thousands of queued jobs
                        DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT="1000000")
        self._admin: Engine | None = None
        self._pg_name = ""
        if mode == "production":
            self._admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            self._pg_name = f"drtrain_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            with self._admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self._pg_name}"'))
            self.database_url = self._admin.url.set(database=self._pg_name).render_as_string(
                hide_password=False)
            self.redis = redis.Redis.from_url(REDIS_URL)
            self.redis.flushdb()
            self.env.update(DRTRAIN_ENVIRONMENT="production", DRTRAIN_DATABASE_URL=self.database_url,
                            DRTRAIN_BROKER_URL=REDIS_URL,
                            DRTRAIN_STORAGE_URL=(root / "objects").resolve().as_uri())
        else:
            self.database_url = f"sqlite:///{(self.data_dir / 'drtrain.sqlite3').resolve()}"
            self.env.update(DRTRAIN_ENVIRONMENT="embedded")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.database_url)
        self.engine = make_engine(self.database_url)
        self.factory = make_sessionmaker(self.engine)
        with session_scope(self.factory) as s:
            self.key = create_key(s, "bench")
        with self.engine.connect() as conn:
            self.tenant_id = conn.execute(text("SELECT id FROM tenants WHERE name = 'bench'")
                                          ).scalar_one()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    # ---------------------------------------------------------------- processes
    def _start(self, name: str, argv: list[str], health: str | None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, cwd=self.source, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        if health:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)}")
                try:
                    if httpx.get(health, timeout=1).status_code == 200:
                        return proc
                except httpx.HTTPError:
                    time.sleep(0.2)
            raise RuntimeError(f"{name} not healthy in time:\n{self.log(name)}")
        return proc

    def _uvicorn(self, name: str, app: list[str], env: dict[str, str] | None = None) -> str:
        port = free_port()
        self.urls[name] = url = f"http://127.0.0.1:{port}"
        self._start(name, [sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1",
                           "--port", str(port), "--log-level", "warning"], f"{url}/healthz"
                    if name.startswith("api") else f"{url}/bare", env)
        return url

    def start_api(self, name: str = "api", env: dict[str, str] | None = None) -> str:
        return self._uvicorn(name, ["api.app:main_app", "--factory"], env)

    def start_bare(self) -> str:
        return self._uvicorn("bare", ["bench.bare_app:app"])

    def start_worker(self) -> None:
        self._start("worker", [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                               "--concurrency=1", "--pool=prefork", f"--queues={QUEUE}",
                               "--loglevel=WARNING", "--without-gossip", "--without-mingle",
                               "--without-heartbeat"], None)

    def start_process(self, name: str, argv: list[str],
                      env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Another process of the stack, started like the others (its own session, its log
        ``<name>.log`` in the stack's folder, stopped by ``close``), with no health check."""
        return self._start(name, argv, None, env)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.engine.dispose()
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))
            self._admin.dispose()
            self.redis.flushdb()
            self.redis.close()

    # ---------------------------------------------------------------- rows
    def seed_jobs(self, n: int, points: int = 0) -> list[str]:
        """``n`` succeeded jobs with a realistic result; the first gets ``points`` metric
        points. Returns their ids."""
        spec = spec_to_dict(JobSpec.model_validate(JOB_SPEC_EXAMPLE))
        result: dict[str, Any] = {
            "metrics": {f"{split}_{m}": 0.5 for split in ("test", "validation", "train")
                        for m in ("accuracy", "loss")},
            "epochs": {"pretrain": [5, 5], "finetune": 20}, "wall_seconds": 12.5,
            "n_parameters": 287_000}
        ids = []
        with session_scope(self.factory) as s:
            for _ in range(n):
                job = Job(tenant_id=self.tenant_id, dataset_id="builtin:digits", spec=spec,
                          status=JobStatus.succeeded, progress=1.0, started_at=utcnow(),
                          finished_at=utcnow(), heartbeat_at=utcnow(), result=result,
                          request_hash="0" * 64)
                s.add(job)
                s.flush()
                ids.append(job.id)
            s.add_all(MetricPoint(job_id=ids[0], seq=i, attempt=1, phase="finetune", layer=None,
                                  layer_key=-1, epoch=i // 8, name=f"metric_{i % 8}",
                                  value=1.0 / i) for i in range(1, points + 1))
        return ids

    def forget_queued(self) -> None:
        """Cancel the jobs the submit benchmarks queued and empty the broker, so a worker
        started afterwards has only the benchmark's own jobs to run."""
        with session_scope(self.factory) as s:
            s.execute(update(Job).where(Job.status == JobStatus.queued.value)
                      .values(status=JobStatus.cancelled.value, finished_at=utcnow()))
        if self.mode == "production":
            self.redis.flushdb()
        else:
            shutil.rmtree(self.data_dir / "broker" / "queue", ignore_errors=True)
            (self.data_dir / "broker" / "queue").mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def open_stack(mode: str, root: Path, source: Path = ROOT) -> Iterator[Stack]:
    """A Stack, closed at the end; on an error the API's and the worker's logs go to stderr
    first (what the error alone does not say)."""
    stack = Stack(mode, root, source)
    try:
        yield stack
    except Exception:
        for name in ("api", "worker"):
            print(f"--- {name} log\n{stack.log(name)}", file=sys.stderr)
        raise
    finally:
        stack.close()
