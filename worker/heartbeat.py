"""The lease keeper of a running job: a thread beside training.

Every ``interval`` seconds it renews the lease in SQL and learns whether the job is still this
worker's (fenced), whether a cancel was requested and whether the runtime budget is spent. It
never stops training itself: it sets ``stop_reason`` and training stops cooperatively at the
next batch (``should_stop``). If training has not stopped ``grace`` seconds later (a batch
stuck in a kernel), ``on_stuck`` runs: in a Celery worker it ends the job and kills the
training process (see worker/tasks.py).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs import lifecycle
from drtrain.kit.db import session_scope

log = logging.getLogger(__name__)


class StopReason(StrEnum):
    cancel = "cancel"
    max_runtime = "max_runtime"
    fenced = "fenced"


class Heartbeat:
    def __init__(self, factory: sessionmaker[Session], *, job_id: str, attempt: int,
                 worker_id: str, interval: float, lease_seconds: float,
                 deadline: float | None, grace: float,
                 on_stuck: Callable[[StopReason], None] | None = None) -> None:
        """``deadline`` is a ``time.monotonic()`` instant (max runtime) or None."""
        self._factory = factory
        self._job_id, self._attempt, self._worker_id = job_id, attempt, worker_id
        self._interval, self._lease = interval, lease_seconds
        self._deadline, self._grace, self._on_stuck = deadline, grace, on_stuck
        self._done = threading.Event()
        self._reason: StopReason | None = None
        self._stop_at: float | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}",
                                        daemon=True)

    @property
    def stop_reason(self) -> StopReason | None:
        return self._reason

    def request_stop(self, reason: StopReason) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
                self._stop_at = time.monotonic()
                log.info("job %s attempt %s: stopping (%s)", self._job_id, self._attempt, reason)

    def should_stop(self) -> bool:
        if self._reason is None and self._deadline is not None and time.monotonic() > self._deadline:
            self.request_stop(StopReason.max_runtime)
        return self._reason is not None

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=max(5.0, self._interval * 2))

    def beat(self) -> None:
        """One renewal (also called directly by tests)."""
        with session_scope(self._factory) as s:
            res = lifecycle.heartbeat(s, self._job_id, self._attempt, self._worker_id, self._lease)
        if not res.ok:
            self.request_stop(StopReason.fenced)
        elif res.cancel_requested:
            self.request_stop(StopReason.cancel)
        self.should_stop()

    def beat_or_log(self) -> None:
        """``beat``, with a failure logged rather than raised: the next beat retries."""
        try:
            self.beat()
        except Exception:  # noqa: BLE001 - a lost DB connection must not kill the lease keeper
            log.exception("heartbeat for job %s failed; retrying", self._job_id)

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            self.beat_or_log()
            stuck = (self._stop_at is not None and self._on_stuck is not None
                     and time.monotonic() - self._stop_at > self._grace)
            if stuck and not self._done.is_set() and self._reason is not None:
                log.error("job %s did not stop within %.0fs of %s", self._job_id, self._grace,
                          self._reason)
                self._on_stuck(self._reason)
                return
