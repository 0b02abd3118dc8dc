"""Runs one job: claim it, load its data, drive dr_core, record everything fenced, finish it.

Called by the Celery task, and directly (no broker) by tests. Idempotent: a job that cannot
be claimed (running elsewhere, terminal) is left alone, so a duplicate message is harmless.
Checkpoint retention (``drtrain.jobs.retention``): while the job runs, its newest
``DRTRAIN_KEEP_CHECKPOINTS`` layer/epoch checkpoints are kept; once it has ended, only the
final model.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dr_core.events import TrainingStopped
from drtrain.jobs import lifecycle, queue, retention
from drtrain.jobs.repository import resumable_checkpoints
from drtrain.kit import cancel_signal, storage
from drtrain.kit.db import session_scope
from drtrain.kit.errors import DomainError
from drtrain.kit.models import Job, JobStatus
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, remove_after_commit
from worker.checkpoints import load_latest_valid, model_key
from worker.data import prepare_data
from worker.heartbeat import Heartbeat, StopReason
from worker.job_callback import JobCallback
from worker.job_log import attempt_log, write_job_log
from worker.spec import SpecError, build_pipeline_config, parse_spec

log = logging.getLogger(__name__)

STOP_OUTCOME = {
    StopReason.cancel: (JobStatus.cancelled, "cancelled by user"),
    StopReason.max_runtime: (JobStatus.failed, "max_runtime_seconds exceeded"),
}


def _resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device: {requested} requested but no CUDA device is available")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"device: {requested} does not exist "
                            f"({torch.cuda.device_count()} CUDA devices)")
    return requested


def _transient(exc: BaseException) -> bool:
    """An outage of the object store or the database, rather than a problem of the job."""
    return storage.is_transient(exc) or isinstance(exc, (OperationalError, InterfaceError))


def _finish(factory: sessionmaker[Session], job: Job, worker_id: str, status: JobStatus,
            reason: str | None, result: dict[str, Any] | None = None, *,
            store: ObjectStore | None = None) -> bool:
    log.info("job %s attempt %s ended: %s%s", job.id, job.attempt, status,
             f" ({reason})" if reason else "")
    write_job_log(job.id)  # its lines are readable by the time the job looks ended
    with session_scope(factory) as s:
        ok = lifecycle.finish(s, job.id, job.attempt, status, reason, result, worker_id=worker_id)
        if ok and store is not None:
            # Nothing resumes an ended job: only its final model stays (the reaper sweeps up
            # the jobs that end without passing here).
            remove_after_commit(s, store, retention.purge_ended(s, job.id))
    if not ok:
        log.warning("job %s attempt %s: finish(%s) refused (no longer ours)", job.id, job.attempt,
                    status)
    return ok


def make_hard_kill(factory: sessionmaker[Session], job: Job,
                   worker_id: str) -> Callable[[StopReason], None]:
    """For a Celery worker process: end the job, then kill this process (Celery's pool replaces
    it). Used only when training ignored a stop request for the whole grace period."""
    def kill(reason: StopReason) -> None:
        status, text = STOP_OUTCOME.get(reason, (None, None))
        if status is not None:
            _finish(factory, job, worker_id, status, f"{text} (training process killed after "
                                                     "the grace period)")
        logging.shutdown()
        os._exit(70)
    return kill


def run_job(job_id: str, *, settings: Settings, sessionmaker: sessionmaker[Session],
            store: ObjectStore, worker_id: str, hard_kill: bool = False) -> None:
    with session_scope(sessionmaker) as s:
        job = lifecycle.claim(s, job_id, worker_id, settings.lease_seconds)
    if job is None:
        log.info("job %s not claimable; nothing to do", job_id)
        return
    # What this attempt logs from here on is kept as the job's log (worker/job_log.py).
    try:
        with attempt_log(sessionmaker, job.id, job.attempt,
                         max_bytes=settings.job_log_max_bytes,
                         flush_seconds=settings.job_log_flush_seconds):
            _run_attempt(job, settings=settings, sessionmaker=sessionmaker, store=store,
                         worker_id=worker_id, hard_kill=hard_kill)
    finally:
        _pass_on_slot(sessionmaker, settings, job.tenant_id)


def _pass_on_slot(factory: sessionmaker[Session], settings: Settings, tenant_id: str) -> None:
    """The slot of a job that has ended goes to its tenant's next waiting job at once (a job
    still running, left for the reaper, keeps its slot: nothing is dispatched then)."""
    try:
        queue.refill_and_publish(factory, settings, tenant_id)
    except Exception:  # noqa: BLE001 - the reaper's next round refills the tenant instead
        log.warning("refilling tenant %s's running slots failed; the reaper will", tenant_id,
                    exc_info=True)


def _run_attempt(job: Job, *, settings: Settings, sessionmaker: sessionmaker[Session],
                 store: ObjectStore, worker_id: str, hard_kill: bool) -> None:
    log.info("job %s attempt %s claimed by %s", job.id, job.attempt, worker_id)
    try:
        max_runtime = parse_spec(job.spec).max_runtime_seconds
    except SpecError as exc:
        _finish(sessionmaker, job, worker_id, JobStatus.failed, str(exc))
        return
    started = job.started_at
    # Runtime is counted from the first start, across attempts. SQLite hands back naive
    # datetimes; they are UTC like everything we write.
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    elapsed = max(0.0, time.time() - started.timestamp()) if started is not None else 0.0
    deadline = time.monotonic() + (max_runtime - elapsed) if max_runtime else None
    hb = Heartbeat(sessionmaker, job_id=job.id, attempt=job.attempt, worker_id=worker_id,
                   interval=settings.heartbeat_seconds, lease_seconds=settings.lease_seconds,
                   deadline=deadline, grace=settings.cancel_grace_seconds,
                   on_stuck=make_hard_kill(sessionmaker, job, worker_id) if hard_kill else None)
    hb.start()
    cancel = cancel_signal.watch(settings, job.id)
    try:
        hb.beat_or_log()  # a cancel sent before the watch listened is in SQL already
        _run_claimed(job, hb, cancel, settings=settings, factory=sessionmaker, store=store,
                     worker_id=worker_id)
    finally:
        cancel.close()
        hb.stop()


def _remove_earlier_scratch(work_root: Path, job_id: str) -> None:
    """Delete what an earlier attempt of this job left in the scratch folder: a killed
    training process never reaches its TemporaryDirectory's cleanup, and its copy of the
    dataset would stay for good. No other attempt of the job runs now: this one holds its
    lease."""
    for folder in work_root.glob(f"job-{job_id}-*"):
        log.info("job %s: removing an earlier attempt's scratch folder %s", job_id, folder.name)
        shutil.rmtree(folder, ignore_errors=True)


def _run_claimed(job: Job, hb: Heartbeat, cancel: cancel_signal.CancelWatch, *,
                 settings: Settings, factory: sessionmaker[Session], store: ObjectStore,
                 worker_id: str) -> None:
    work_root = Path(settings.data_dir) / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    _remove_earlier_scratch(work_root, job.id)
    with tempfile.TemporaryDirectory(prefix=f"job-{job.id}-", dir=work_root) as tmp:
        workdir = Path(tmp)
        try:
            try:
                outcome = _train(job, hb, cancel, settings=settings, factory=factory,
                                 store=store, worker_id=worker_id, workdir=workdir)
            finally:
                # Training is over: no beat may find the row ended by _finish below and log a
                # stop after the attempt's end line. What is left takes well under a lease.
                hb.stop()
        except TrainingStopped:
            reason = hb.stop_reason
            if reason is None or reason is StopReason.fenced:
                log.warning("job %s attempt %s: fenced out, leaving it to the newer attempt",
                            job.id, job.attempt)
                return
            status, text = STOP_OUTCOME[reason]
            _finish(factory, job, worker_id, status, text, store=store)
            return
        except (SpecError, DomainError) as exc:
            _finish(factory, job, worker_id, JobStatus.failed, str(getattr(exc, "detail", exc)),
                    store=store)
            return
        except Exception as exc:  # noqa: BLE001 - any crash must end as a failed job, not a lost one
            if _transient(exc):
                # Not the job's fault: leave it running with a lease that now expires, so the
                # reaper requeues it (attempt + 1, resumed from its last checkpoint) after a
                # lease's wait, up to max_attempts.
                log.warning("job %s attempt %s: %s: %s; it will be retried once its lease "
                            "expires", job.id, job.attempt, type(exc).__name__, exc)
                return
            log.exception("job %s attempt %s crashed", job.id, job.attempt)
            _finish(factory, job, worker_id, JobStatus.failed, f"{type(exc).__name__}: {exc}",
                    store=store)
            return
        if outcome is None:
            return
        # No reason: lifecycle.finish gives one when a cancel came too late to stop training.
        _finish(factory, job, worker_id, JobStatus.succeeded, None, outcome["result"],
                store=store)


def _summary(raw: dict[str, float], *, wall: float, stored: Any, prepared: Any, device: str,
             resumed_from: str | None) -> dict[str, Any]:
    """The job's ``result``: final metrics (also flat, for lists), epochs, the model's hash.
    ``wall_seconds`` (a metric) is training alone; ``attempt_seconds`` the whole attempt, from
    loading the data to the stored model."""
    # JSON columns cannot hold NaN/inf (PostgreSQL refuses them): a diverged value becomes null.
    metrics = {k: float(v) if math.isfinite(float(v)) else None for k, v in raw.items()}
    return {
        **metrics,
        "metrics": metrics,
        "epochs": {"pretrain": int(metrics.get("epochs_pretrain") or 0),
                   "finetune": int(metrics.get("epochs_finetune") or 0)},
        "attempt_seconds": wall,
        "model_sha256": stored.sha256,
        "model_size_bytes": stored.size_bytes,
        "classes": prepared.classes,
        "visible": prepared.visible,
        "device": device,
        "resumed_from": resumed_from,
    }


def _train(job: Job, hb: Heartbeat, cancel: cancel_signal.CancelWatch, *, settings: Settings,
           factory: sessionmaker[Session], store: ObjectStore, worker_id: str,
           workdir: Path) -> dict[str, Any] | None:
    import torch

    from dr_core.model_file import encode_model
    from worker.training import train

    spec = parse_spec(job.spec)
    wall = time.perf_counter()
    with session_scope(factory) as s:
        prepared = prepare_data(s, store, job, settings, workdir)
        candidates = resumable_checkpoints(s, job.id)
    with session_scope(factory) as s:
        lifecycle.add_warnings(s, job.id, job.attempt, worker_id, prepared.warnings(spec))
    cfg = build_pipeline_config(spec, prepared.visible, len(prepared.split.y_train))
    device = _resolve_device(spec.device)
    found = load_latest_valid(store, candidates, workdir) if candidates else None
    resume = found[1] if found else None
    if found:
        log.info("job %s attempt %s resumes from %s", job.id, job.attempt, found[0].object_key)
    threads = torch.get_num_threads()
    log.info("job %s attempt %s trains on %s with %d CPU thread%s", job.id, job.attempt, device,
             threads, "" if threads == 1 else "s")
    generator = torch.Generator(device=device)
    generator.manual_seed(spec.seed)
    callback = JobCallback(job_id=job.id, attempt=job.attempt, worker_id=worker_id,
                           factory=factory, store=store, heartbeat=hb, cancel=cancel,
                           workdir=workdir, keep_checkpoints=settings.keep_checkpoints)
    # A slot on a shared GPU, then training with checkpoints, metrics and progress recorded
    # off the training thread (worker/training.py).
    result = train(cfg, prepared, spec=spec, settings=settings, device=device,
                   generator=generator, callback=callback, resume=resume)
    if hb.stop_reason is StopReason.fenced:
        return None

    key = model_key(job.id, job.attempt)
    # Straight into the store, which hashes and syncs it: a copy in the work folder first
    # would be written, synced and hashed a second time for nothing.
    stored = store.put_stream(key, [encode_model(
        result, classes=prepared.classes, spec=job.spec,
        extra_metadata={"job_id": job.id, "attempt": job.attempt})])
    with session_scope(factory) as s:
        ckpt = lifecycle.add_checkpoint(s, job.id, job.attempt, kind="final", phase=None,
                                        layer=None, epoch=None, object_key=key,
                                        sha256=stored.sha256, size_bytes=stored.size_bytes,
                                        worker_id=worker_id)
    if ckpt is None:
        hb.request_stop(StopReason.fenced)
        return None
    summary = _summary(result.metrics, wall=time.perf_counter() - wall, stored=stored,
                       prepared=prepared, device=device,
                       resumed_from=found[0].object_key if found else None)
    return {"result": summary}
