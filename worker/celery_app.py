"""The Celery app of the workers: ``celery -A worker.celery_app worker``.

One job per worker process (concurrency 1, prefetch 1, late acks). Nothing heavy happens at
import: engines, the object store and torch are created lazily in the process that runs the
task (after fork), so the parent never holds CUDA or a database connection its children share.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from functools import lru_cache

from celery import signals
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from drtrain.kit.broker import DEFAULT_QUEUE, make_celery
from drtrain.kit.db import make_sessionmaker, worker_engine
from drtrain.kit.settings import Settings, get_settings
from drtrain.kit.storage import ObjectStore, make_store
from worker.store_retry import PatientStore

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


@signals.worker_process_init.connect
def _fresh_child(**_: object) -> None:
    # A forked pool child must never reuse the parent's pooled connections.
    _runtime_for.cache_clear()


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
