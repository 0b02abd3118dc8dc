"""A REAL Celery worker process on Redis (dedicated db and queue): one tiny job end to end
through publish_run_job, a duplicate message, and kill -9 of the worker mid-job."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from drtrain.jobs import logs
from drtrain.kit.broker import publish_run_job
from drtrain.kit.models import JobStatus, MetricPoint
from drtrain.kit.settings import Settings
from tests.factories import get_job
from tests.pg import fresh_database
from worker.threads import host_cpus

REDIS_DB = 12
QUEUE = f"drtrain-test-{os.getpid()}"
BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"


# Its own database: a worker's reaper sees every job in its database, and must not pick up
# the other worker tests' deliberately abandoned jobs.
@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database("celery") as url:
        yield url


@pytest.fixture
def broker_settings(settings: Settings) -> Settings:
    client = redis.Redis.from_url(BROKER)
    client.ping()  # no Redis is a failure, never a skip
    client.delete(QUEUE)
    client.close()
    return settings.model_copy(update={"broker_url": BROKER})


@pytest.fixture
def start_worker(broker_settings: Settings, tmp_path: Path):
    procs: list[subprocess.Popen] = []

    def start(name: str, lease_seconds: str = "2", concurrency: int = 1,
              one_thread: bool = True) -> subprocess.Popen:
        s = broker_settings
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DRTRAIN_") and k != "OMP_NUM_THREADS"}
        env.update(DRTRAIN_DATABASE_URL=s.database_url, DRTRAIN_BROKER_URL=BROKER,
                   DRTRAIN_STORAGE_URL=s.storage_url, DRTRAIN_DATA_DIR=str(s.data_dir),
                   DRTRAIN_ENVIRONMENT="test", DRTRAIN_HEARTBEAT_SECONDS="0.3",
                   DRTRAIN_LEASE_SECONDS=lease_seconds, DRTRAIN_CHECKPOINT_EVERY_EPOCHS="1",
                   PYTHONUNBUFFERED="1", **({"OMP_NUM_THREADS": "1"} if one_thread else {}))
        log = open(tmp_path / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=prefork",
             f"--concurrency={concurrency}", f"--queues={QUEUE}", f"--hostname={name}@%h",
             "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for log in sorted(tmp_path.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text()[-3000:]}")


def _wait(factory, job_id, pred, timeout=180.0):
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(factory, job_id)
        if pred(job):
            return job
        assert time.monotonic() < deadline, f"timed out; job is {job.status} {job.status_reason}"
        time.sleep(0.1)


def test_real_worker_runs_a_published_job(broker_settings, factory, make_job, start_worker):
    job_id = make_job()
    publish_run_job(broker_settings, job_id, queue=QUEUE)
    publish_run_job(broker_settings, job_id, queue=QUEUE)  # a duplicate must be harmless
    start_worker("w1")
    job = _wait(factory, job_id, lambda j: j.status in ("succeeded", "failed", "cancelled"))
    assert job.status == JobStatus.succeeded, job.status_reason
    assert job.attempt == 1 and job.result["val_accuracy"] is not None
    time.sleep(1.0)  # let the duplicate be consumed: it must change nothing
    again = get_job(factory, job_id)
    assert (again.status, again.attempt, again.finished_at) == (JobStatus.succeeded, 1,
                                                                job.finished_at)


def test_kill_9_mid_job_then_a_new_worker_resumes_it(broker_settings, factory, make_job,
                                                    start_worker):
    job_id = make_job(pretrain={"epochs": 40, "batch_size": 16}, finetune={"epochs": 5})
    publish_run_job(broker_settings, job_id, queue=QUEUE)
    first = start_worker("w1")
    _wait(factory, job_id, lambda j: j.status == "running" and (j.epoch or 0) >= 2)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its training child, no goodbye
    first.wait(10)
    killed_at = get_job(factory, job_id)
    assert killed_at.status == JobStatus.running and killed_at.attempt == 1

    start_worker("w2")  # its reaper sees the lease expire, requeues and re-publishes
    job = _wait(factory, job_id, lambda j: j.status in ("succeeded", "failed", "cancelled"))
    assert job.status == JobStatus.succeeded, job.status_reason
    assert job.attempt == 2 and job.result["resumed_from"] is not None
    with factory() as s:
        pts = s.execute(select(MetricPoint).where(MetricPoint.job_id == job_id)
                        .order_by(MetricPoint.seq)).scalars().all()
    assert [p.seq for p in pts] == list(range(1, len(pts) + 1))
    epochs = {(p.phase, p.layer, p.epoch) for p in pts}
    assert len({(p.phase, p.layer, p.epoch, p.name) for p in pts}) == len(pts)
    assert len(epochs) == 2 * 40 + 5  # every epoch of both layers and fine-tuning, once


def test_a_killed_training_process_is_requeued_without_waiting_out_its_lease(
        broker_settings, factory, make_job, start_worker):
    # A lease far longer than the test: only the worker's main process, which sees its pool
    # child die, can make the job run again in time.
    job_id = make_job(pretrain={"epochs": 40, "batch_size": 16}, finetune={"epochs": 5})
    publish_run_job(broker_settings, job_id, queue=QUEUE)
    start_worker("w1", lease_seconds="3600")
    running = _wait(factory, job_id, lambda j: j.status == "running" and (j.epoch or 0) >= 2)
    child = int(running.worker_id.rsplit(":", 1)[1])
    os.kill(child, signal.SIGKILL)  # the training process alone (out of memory, say)
    job = _wait(factory, job_id, lambda j: j.status in ("succeeded", "failed", "cancelled"),
                timeout=120)
    assert job.status == JobStatus.succeeded, job.status_reason
    assert job.attempt == 2 and job.result["resumed_from"] is not None


def test_a_worker_shares_the_cpus_among_the_jobs_it_runs_at_once(broker_settings, factory,
                                                                 make_job, start_worker):
    """Without OMP_NUM_THREADS or DRTRAIN_TORCH_THREADS, each of a worker's K training
    processes uses the host's CPUs / K (torch alone would take them all in each), and the
    job's log says how many."""
    job_id = make_job()
    publish_run_job(broker_settings, job_id, queue=QUEUE)
    start_worker("w1", concurrency=2, one_thread=False)
    job = _wait(factory, job_id, lambda j: j.status in ("succeeded", "failed", "cancelled"))
    assert job.status == JobStatus.succeeded, job.status_reason
    with factory() as s:
        lines = logs.read(s, job.tenant_id, job_id, None, 0).lines
    expected = max(1, host_cpus() // 2)
    said = [line for line in lines if "CPU thread" in line]
    plural = "" if expected == 1 else "s"
    assert said and said[0].endswith(f"trains on cpu with {expected} CPU thread{plural}"), lines
