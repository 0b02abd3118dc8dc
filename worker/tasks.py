"""Thin, named Celery tasks. They take ids, never objects; the runner does the work."""
from __future__ import annotations

import logging

from drtrain.kit.broker import RUN_JOB_TASK
from worker.celery_app import app, jobs_at_once, runtime, wait_for_the_dead_released

log = logging.getLogger(__name__)


@app.task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> None:
    if not isinstance(job_id, str) or not job_id.isalnum() or len(job_id) > 64:
        log.warning("ignoring run_job with a malformed id %r", job_id)
        return
    # Imported here so the worker's parent process never loads torch (no CUDA before fork).
    import torch

    from worker.runner import run_job as run
    from worker.threads import host_cpus, training_threads

    rt = runtime()
    threads = training_threads(rt.settings.torch_threads, jobs_at_once(), host_cpus())
    if threads is not None:
        torch.set_num_threads(threads)
    wait_for_the_dead_released()
    run(job_id, settings=rt.settings, sessionmaker=rt.sessionmaker, store=rt.store,
        worker_id=rt.worker_id, hard_kill=True)
