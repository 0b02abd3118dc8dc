"""The reaper: puts jobs of dead workers back in the queue and re-publishes lost messages.

Runs as a thread in every worker's main process (all its writes are conditional UPDATEs, so
several reapers at once are harmless). Jobs whose lease expired go back to ``queued`` with
attempt + 1 (or fail after max_attempts) and are re-published; ``queued`` jobs whose message
may have vanished (Redis restarted empty) are re-published after
``settings.requeue_queued_after_seconds``, but only while the broker holds fewer messages than
there are queued jobs, so a long queue is not flooded with duplicates.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs import lifecycle
from drtrain.kit.broker import DEFAULT_QUEUE, publish_run_job, queue_depth
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.models import utcnow
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

Publisher = Callable[[str], None]


def _publish_all(ids: list[str], publish: Publisher) -> list[str]:
    sent = []
    for job_id in ids:
        try:
            publish(job_id)
            sent.append(job_id)
        except Exception as exc:  # noqa: BLE001 - broker down: retried on the next round
            log.warning("re-publishing job %s failed: %s", job_id, type(exc).__name__)
    return sent


def reap_once(settings: Settings, factory: sessionmaker[Session], *,
              queue: str = DEFAULT_QUEUE, publish: Publisher | None = None,
              depth: Callable[[], int | None] | None = None) -> dict[str, list[str]]:
    """One round; returns what it did (tests call it directly)."""
    publish = publish or (lambda job_id: publish_run_job(settings, job_id, queue=queue))
    depth = depth or (lambda: queue_depth(settings, queue=queue))
    now = utcnow()
    with session_scope(factory) as s:
        requeued = lifecycle.requeue_expired(s, now)
    sent = _publish_all(requeued, publish)
    republished: list[str] = []
    with session_scope(factory) as s:
        stale = lifecycle.stale_queued(
            s, now - timedelta(seconds=settings.requeue_queued_after_seconds))
        if stale:
            waiting = depth()
            if waiting is None or waiting < lifecycle.count_queued(s):
                republished = _publish_all(stale, publish)
        lifecycle.mark_published(s, sent + republished, now)
    if requeued or republished:
        log.info("reaper: requeued %s, re-published %s", requeued, republished)
    return {"requeued": requeued, "republished": republished}


class _Reaper:
    def __init__(self, settings: Settings, queue: str) -> None:
        self.settings, self.queue = settings, queue
        self.stop = threading.Event()
        self.interval = max(0.5, min(settings.heartbeat_seconds, 10.0))
        self.thread = threading.Thread(target=self._loop, name="drtrain-reaper", daemon=True)

    def _loop(self) -> None:
        engine = make_engine(self.settings.resolved_database_url)
        # Pool children forked later must not touch this engine's sockets.
        os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        factory = make_sessionmaker(engine)
        while not self.stop.wait(self.interval):
            try:
                reap_once(self.settings, factory, queue=self.queue)
            except Exception:  # noqa: BLE001 - a DB hiccup must not end the reaper for good
                log.exception("reaper round failed")
        engine.dispose()


_current: _Reaper | None = None


def start_reaper_thread(settings: Settings, queue: str = DEFAULT_QUEUE) -> None:
    global _current
    if _current is None:
        _current = _Reaper(settings, queue)
        _current.thread.start()


def stop_reaper_thread() -> None:
    global _current
    if _current is not None:
        _current.stop.set()
        _current = None
