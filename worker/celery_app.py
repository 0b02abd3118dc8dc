"""The Celery app of the workers: ``celery -A worker.celery_app worker``.

One job per worker process (concurrency 1, prefetch 1, late acks). Nothing heavy happens at
import: engines, the object store and torch are created lazily in the process that runs the
task (after fork), so the parent never holds CUDA or a database connection its children share.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from functools import lru_cache

from celery import signals
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from drtrain.kit.broker import DEFAULT_QUEUE, make_celery
from drtrain.kit.db import make_sessionmaker, worker_engine
from drtrain.kit.outages import log_failure
from drtrain.kit.settings import Settings, get_settings
from drtrain.kit.storage import ObjectStore, make_store
from worker.store_retry import PatientStore
from worker.threads import host_cpus

log = logging.getLogger(__name__)

settings = get_settings()
settings.check_production()
app = make_celery(settings)
app.conf.update(worker_concurrency=1, include=["worker.tasks"])


# How a training process's connections show in PostgreSQL's pg_stat_activity.
APPLICATION_NAME = "drtrain-worker"


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    store: ObjectStore
    worker_id: str


@lru_cache(maxsize=1)
def _runtime_for(pid: int) -> Runtime:
    engine = worker_engine(settings.resolved_database_url, APPLICATION_NAME)
    return Runtime(settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine),
                   store=PatientStore(make_store(settings), settings.lease_seconds),
                   worker_id=f"{socket.gethostname()}:{pid}")


def runtime() -> Runtime:
    """This process's engine and store (keyed by pid: a forked child makes its own)."""
    return _runtime_for(os.getpid())


# Jobs this worker runs at once (its pool's size, noted when it starts, before its pool
# children fork): their training processes share the host's CPUs (worker/threads.py).
_jobs_at_once = 1


@signals.worker_init.connect
def _note_pool_size(sender: object = None, **_: object) -> None:
    global _jobs_at_once
    size = getattr(sender, "concurrency", None)
    # Celery resolves --concurrency=auto later, to as many processes as it sees fit: count on
    # one per CPU, so that no job's threads crowd another's.
    _jobs_at_once = size if isinstance(size, int) and size > 0 else host_cpus()


def jobs_at_once() -> int:
    return _jobs_at_once


# Set once this process has ended the leases of its host's dead training processes (set
# where no pool child starts: the solo pool has none to wait for).
_dead_released = threading.Event()
_dead_released.set()


@signals.worker_process_init.connect
def _fresh_child(**_: object) -> None:
    # A forked pool child must never reuse the parent's pooled connections.
    _runtime_for.cache_clear()
    # A child starts when the worker starts, and when one has died: in either case a job held
    # by a process of this host that is gone must not wait out its lease. In a thread: a
    # child has seconds to come up, and a slow database must not cost it its start.
    _dead_released.clear()
    threading.Thread(target=release_the_dead, name="drtrain-release-dead", daemon=True).start()


def wait_for_the_dead_released() -> None:
    """Before a job: a dead process's job, redelivered to this child, is claimable once its
    lease has ended (waited for at most a lease: then it would have run out anyway)."""
    _dead_released.wait(timeout=settings.lease_seconds)


def release_the_dead() -> None:
    """``lifecycle.expire_leases_of_dead`` for this host, on a connection used once."""
    from drtrain.jobs.lifecycle import expire_leases_of_dead
    from drtrain.kit.db import burst_engine, session_scope

    engine = burst_engine(settings.resolved_database_url, APPLICATION_NAME)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            ended = expire_leases_of_dead(session, socket.gethostname(), _alive)
        for job_id in ended:
            log.warning("job %s: its training process is gone; its lease ends now, so the "
                        "job runs again without waiting it out", job_id)
    except Exception as exc:  # noqa: BLE001 - such a lease then runs out by itself
        log_failure(log, logging.WARNING, exc, "checking for jobs of dead training processes failed")
    finally:
        engine.dispose()
        _dead_released.set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


@signals.worker_ready.connect
def _start_reaper(sender: object = None, **_: object) -> None:
    from worker.reaper import start_reaper_thread

    # Re-publish to the queue this worker consumes (``-Q``), so a worker on a dedicated queue
    # recovers its own jobs.
    consumed = list(getattr(getattr(sender, "app", app).amqp.queues, "consume_from", {}) or [])
    start_reaper_thread(settings, queue=consumed[0] if consumed else DEFAULT_QUEUE)


@signals.worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    from worker.reaper import stop_reaper_thread

    stop_reaper_thread()
