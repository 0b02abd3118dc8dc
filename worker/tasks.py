"""Thin, named Celery tasks. They take ids, never objects; the runner does the work."""
from __future__ import annotations

import logging

from drtrain.kit.broker import RUN_JOB_TASK
from worker.celery_app import app, runtime, wait_for_the_dead_released

log = logging.getLogger(__name__)


@app.task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> None:
    if not isinstance(job_id, str) or not job_id.isalnum() or len(job_id) > 64:
        log.warning("ignoring run_job with a malformed id %r", job_id)
        return
    # Imported here so the worker's parent process never loads torch (no CUDA before fork).
    from worker.runner import run_job as run

    rt = runtime()
    wait_for_the_dead_released()
    run(job_id, settings=rt.settings, sessionmaker=rt.sessionmaker, store=rt.store,
        worker_id=rt.worker_id, hard_kill=True)
