"""A ``drtrain worker`` whose jobs sleep instead of training, for bench/scale.py: only the
control plane is measured.

    python -m bench.sleep_worker worker --name NAME [drtrain worker's options]

It is the product's worker (the drtrain CLI, Celery, ``worker.tasks`` -> ``worker.runner``)
with one part replaced in each training process: ``worker.runner._train`` (data, dr_core,
the final model) becomes ``sleep_train``, which sleeps ``BENCH_SCALE_SLEEP_SECONDS`` split
into ``BENCH_SCALE_EPOCHS`` epochs and records each epoch's metrics and progress through the
runner's own recorder (``worker.uploader.BackgroundRecorder`` over ``worker.job_callback
.JobCallback``), without a checkpoint. The claim, the lease and its heartbeat, the cancel
watch, the job log, the finish and the reaper all run as in production.

With ``BENCH_SCALE_DIR`` set, the worker also writes there:

- ``ready-<pid>`` once Celery is ready to take messages;
- ``reaper-<pid>.jsonl``, one line per round its reaper ran (only the elected reaper runs
  rounds): wall seconds, SQL statements, commits, rollbacks and Redis commands of the
  round.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

SLEEP_SECONDS_ENV, EPOCHS_ENV, DIR_ENV = ("BENCH_SCALE_SLEEP_SECONDS", "BENCH_SCALE_EPOCHS",
                                          "BENCH_SCALE_DIR")
# What a fine-tuning epoch records (dr_core.events.FINETUNE_METRICS), with made-up values.
EPOCH_METRICS = {"train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.6,
                 "val_accuracy": 0.75, "dr": 0.1}
STOP_POLL_SECONDS = 0.02  # dr_core asks should_stop after every batch; a batch is about this


def sleep_train(job: Any, hb: Any, cancel: Any, *, settings: Any, factory: Any, store: Any,
                worker_id: str, workdir: Path) -> dict[str, Any] | None:
    """``worker.runner._train`` with the training replaced by sleeping (same signature and
    outcome: the job's result, None when fenced out; TrainingStopped when asked to stop)."""
    from dr_core.events import Event, TrainingStopped
    from worker.heartbeat import StopReason
    from worker.job_callback import JobCallback
    from worker.uploader import BackgroundRecorder

    seconds = float(os.environ.get(SLEEP_SECONDS_ENV, "0.2"))
    epochs = max(1, int(os.environ.get(EPOCHS_ENV, "2")))
    started = time.perf_counter()
    callback = JobCallback(job_id=job.id, attempt=job.attempt, worker_id=worker_id,
                           factory=factory, store=store, heartbeat=hb, cancel=cancel,
                           workdir=workdir, keep_checkpoints=settings.keep_checkpoints)
    with BackgroundRecorder(callback, max_pending=settings.upload_queue_events,
                            flush_seconds=settings.record_every_seconds) as recorder:
        for epoch in range(1, epochs + 1):
            end = time.monotonic() + seconds / epochs
            while (left := end - time.monotonic()) > 0:
                if recorder.should_stop():
                    raise TrainingStopped("stop requested")
                time.sleep(min(STOP_POLL_SECONDS, left))
            recorder.on_epoch_end(Event("finetune", None, epoch, dict(EPOCH_METRICS),
                                        progress=epoch / epochs))
    if hb.stop_reason is StopReason.fenced:
        return None
    metrics = {**EPOCH_METRICS, "epochs_finetune": float(epochs)}
    return {"result": {**metrics, "metrics": metrics,
                       "epochs": {"pretrain": 0, "finetune": epochs},
                       "wall_seconds": time.perf_counter() - started}}


# ---------------------------------------------------------------- the reaper's cost
_round = threading.local()


def _count(what: str) -> None:
    counts = getattr(_round, "counts", None)
    if counts is not None:
        counts[what] += 1


def _timed_reap_once(inner: Any, out: Path) -> Any:
    def reap_once(*args: Any, **kwargs: Any) -> Any:
        _round.counts = {"statements": 0, "commits": 0, "rollbacks": 0, "redis_commands": 0}
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            line = {"at": time.time(), "seconds": time.perf_counter() - started,
                    **_round.counts}
            _round.counts = None
            with out.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
    return reap_once


def _count_reaper_rounds(folder: Path) -> None:
    """Wrap ``worker.reaper.reap_once`` (looked up by the reaper's loop at each round) so each
    round's statements, commits, rollbacks and Redis commands, counted on the reaper's thread only, are
    written to ``reaper-<pid>.jsonl``."""
    import redis
    from sqlalchemy import Engine, event

    import worker.reaper

    event.listen(Engine, "before_cursor_execute", lambda *_: _count("statements"))
    event.listen(Engine, "commit", lambda *_: _count("commits"))
    event.listen(Engine, "rollback", lambda *_: _count("rollbacks"))
    send = redis.Redis.execute_command

    def execute_command(self: redis.Redis, *args: Any, **options: Any) -> Any:
        _count("redis_commands")
        return send(self, *args, **options)

    redis.Redis.execute_command = execute_command  # type: ignore[method-assign]
    worker.reaper.reap_once = _timed_reap_once(worker.reaper.reap_once,
                                               folder / f"reaper-{os.getpid()}.jsonl")


# ---------------------------------------------------------------- wiring
def _use_sleep_train(**_: object) -> None:
    import worker.runner

    worker.runner._train = sleep_train  # type: ignore[assignment]


def install() -> None:
    """Connect the replacements to Celery's signals (before the worker starts): each pool
    process replaces ``_train`` once forked, so the parent stays torch-free as in production."""
    from celery import signals

    signals.worker_process_init.connect(_use_sleep_train, weak=False)
    folder = os.environ.get(DIR_ENV)
    if folder:
        _count_reaper_rounds(Path(folder))

        def ready(**_: object) -> None:
            (Path(folder) / f"ready-{os.getpid()}").touch()
        signals.worker_ready.connect(ready, weak=False)


def main() -> None:
    install()
    from drtrain_cli.main import app

    app(prog_name="drtrain")


if __name__ == "__main__":
    main()
