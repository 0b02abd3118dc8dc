"""A real API process (uvicorn, as ``drtrain api`` runs it) on a free loopback port, over a
fresh PostgreSQL database or SQLite file, with its tenant and key made beforehand; and helpers
that write what a worker would (jobs, metric points) straight into its database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.db import make_engine, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Job, JobStatus, MetricPoint, utcnow
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name
from tests.e2e.flow import free_port
from tests.pg import fresh_database

REPO = Path(__file__).resolve().parents[2]
# The tree the API process runs: this one, or (to see a test fail without a fix) another
# checkout of the project named here.
SERVER_TREE = os.environ.get("DRTRAIN_LOAD_SERVER_TREE", str(REPO))
SPEC = {"dataset_id": "builtin:digits", "model": {"hidden_layers": [8]},
        "pretrain": {"epochs": 1}, "finetune": {"epochs": 1}}
# Five jobs a tenant may have before a submit answers 429: three running, two waiting.
CAPPED = {"max_concurrent_jobs_per_tenant": "3", "max_queued_jobs_per_tenant": "2"}


class Api:
    def __init__(self, database_url: str, root: Path, **settings: str) -> None:
        self.database_url = database_url
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.engine: Engine = make_engine(database_url)
        self.factory = lambda: Session(self.engine, expire_on_commit=False)
        with session_scope(self.factory) as s:  # type: ignore[arg-type]
            self.key = create_key(s, "load")
            self.tenant_id = tenant_by_name(s, "load").id  # type: ignore[union-attr]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
        self.env.update(
            DRTRAIN_ENVIRONMENT="test", DRTRAIN_DATABASE_URL=database_url,
            DRTRAIN_BROKER_URL="filesystem://localhost/", DRTRAIN_DATA_DIR=str(root / "data"),
            DRTRAIN_STORAGE_URL=(root / "objects").resolve().as_uri(),
            DRTRAIN_FASHION_MNIST_DIR=str(root / "none"), PYTHONPATH=SERVER_TREE,
            **{f"DRTRAIN_{k.upper()}": v for k, v in settings.items()})
        self.log = root / f"api-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def new_tenant(self, name: str) -> dict[str, str]:
        """Auth headers for a new tenant (its own caps and counts)."""
        with session_scope(self.factory) as s:  # type: ignore[arg-type]
            return {"Authorization": f"Bearer {create_key(s, name)}"}

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.app:main_app", "--factory", "--host",
                 "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                 # The clients share the test's interpreter with 255 others: on busy cores
                 # one may take longer than uvicorn's 5 s keep-alive to send its next request,
                 # and a connection closed under it would count as a server error.
                 "--timeout-keep-alive", "60"],
                env=self.env, cwd=SERVER_TREE, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.logs()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the API did not come up\n" + self.logs())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)
        self.engine.dispose()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    # -- what a worker would write ---------------------------------------------------------
    def add_job(self, status: JobStatus = JobStatus.running, **kw: object) -> str:
        spec = spec_to_dict(JobSpec.model_validate(SPEC))
        with session_scope(self.factory) as s:  # type: ignore[arg-type]
            job = Job(tenant_id=self.tenant_id, dataset_id="builtin:digits", spec=spec,
                      status=status, **{"dispatched_at": utcnow(), **kw})
            s.add(job)
            s.flush()
            return job.id

    def add_points(self, job_id: str, n: int, start: int = 1) -> None:
        with session_scope(self.factory) as s:  # type: ignore[arg-type]
            s.add_all(MetricPoint(job_id=job_id, seq=i, attempt=1, phase="pretrain", layer=0,
                                  layer_key=0, epoch=i, name="reconstruction_error", value=1 / i)
                      for i in range(start, start + n))

    def set_job(self, job_id: str, **values: object) -> None:
        with session_scope(self.factory) as s:  # type: ignore[arg-type]
            job = s.get(Job, job_id)
            assert job is not None
            for k, v in values.items():
                setattr(job, k, v)


@contextmanager
def pg_api(root: Path, **settings: str) -> Iterator[Api]:
    with fresh_database("load") as url:
        api = Api(url, root, **settings)
        try:
            api.start()
            yield api
        finally:
            api.stop()


@contextmanager
def sqlite_api(root: Path, **settings: str) -> Iterator[Api]:
    url = f"sqlite:///{root / f'load-{uuid.uuid4().hex[:6]}.sqlite3'}"
    upgrade(url)
    api = Api(url, root, **settings)
    try:
        api.start()
        yield api
    finally:
        api.stop()
