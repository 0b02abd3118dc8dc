"""The reaper: puts jobs of dead workers back in the queue, gives free running slots to waiting
jobs (``drtrain.jobs.queue``), re-publishes lost messages, sweeps
up the checkpoints of jobs that have ended, and downsamples the metric history of jobs that
ended long ago (``drtrain.jobs.history``).

Runs as a thread in every worker's main process, but only the worker that holds the reaper's
lease (``drtrain.kit.election``) does the work: one reaper, not one per worker. All its writes
are conditional UPDATEs anyway, so two at once (a lease handed over) are harmless.

Jobs whose lease expired go back to ``queued`` with attempt + 1 (or fail after max_attempts)
and are published once, by the reaper that requeued them. A ``queued`` job whose message may
have vanished (Redis restarted empty) is re-published only when all of these hold:

- it has been queued and unpublished for ``settings.requeue_queued_after_seconds``;
- no message for it is in the broker, waiting or taken by a worker
  (``drtrain.kit.broker_messages``), in this round and in the previous one: a worker that
  has just taken its message has claimed the job one round later;
- this reaper wins the conditional UPDATE that marks it published (so of several reapers
  exactly one sends it).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs import history, lifecycle, retention
from drtrain.jobs.queue import refill_all
from drtrain.kit.broker import DEFAULT_QUEUE, publish_run_job
from drtrain.kit.broker_messages import missing_from_broker
from drtrain.kit.db import burst_engine, make_sessionmaker, session_scope
from drtrain.kit.election import ReaperLease
from drtrain.kit.models import utcnow
from drtrain.kit.outages import log_failure
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, make_store, remove_after_commit

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
              missing: Callable[[list[str]], set[str] | None] | None = None,
              suspects: set[str] | None = None,
              store: ObjectStore | None = None) -> dict[str, list[str]]:
    """One round; returns what it did (tests call it directly).

    ``missing`` tells which of the ids given have no message in the broker (None: unknown).
    ``suspects`` carries, from one round to the next, the stale queued jobs that had no
    message; a job is re-published only when it is in it already (None: at once). With a
    ``store``, ended jobs' leftover checkpoints are removed too."""
    publish = publish or (lambda job_id: publish_run_job(settings, job_id, queue=queue))
    missing_of = missing or (lambda ids: missing_from_broker(settings, queue=queue, wanted=ids))
    now = utcnow()
    with session_scope(factory) as s:
        requeued = lifecycle.requeue_expired(s, now)
    # Slots given back by jobs that ended without their worker's refill (failed or cancelled
    # above, a worker killed just after finishing), or opened by a raised cap.
    with session_scope(factory) as s:
        dispatched = refill_all(s, settings)
    sent = _publish_all(requeued + dispatched, publish)
    with session_scope(factory) as s:
        lifecycle.mark_published(s, sent, now)
    older_than = now - timedelta(seconds=settings.requeue_queued_after_seconds)
    with session_scope(factory) as s:
        # A job requeued (and published) above is never sent twice in the same round.
        stale = [j for j in lifecycle.stale_queued(s, older_than) if j not in requeued]
    lost: list[str] = []
    if stale:  # only then is the broker asked
        # The broker is read before SQL is read again: a message taken after this snapshot
        # belongs to a job that is claimed by then, or is only a suspect (not yet due).
        absent = missing_of(stale)
        with session_scope(factory) as s:
            still = set(lifecycle.stale_queued(s, older_than))
        lost = [j for j in stale if j in still and (absent is None or j in absent)]
    due = lost if suspects is None else [j for j in lost if j in suspects]
    if suspects is not None:
        suspects.clear()
        suspects.update(j for j in lost if j not in due)
    republished = _republish(factory, due, older_than, publish)
    if store is not None:
        _sweep_ended(factory, store)
    with session_scope(factory) as s:
        history.downsample_due(s, settings, now)
    if requeued or republished or dispatched:
        log.info("reaper: requeued %s, re-published %s, dispatched %s", requeued, republished,
                 dispatched)
    return {"requeued": requeued, "republished": republished, "dispatched": dispatched}


def _republish(factory: sessionmaker[Session], due: list[str], older_than: datetime,
               publish: Publisher) -> list[str]:
    done = []
    for job_id in due:
        marked = utcnow()
        with session_scope(factory) as s:
            if not lifecycle.take_for_republish(s, job_id, older_than, marked):
                continue  # claimed, cancelled or re-sent by another reaper meanwhile
        if _publish_all([job_id], publish):
            done.append(job_id)
        else:
            with session_scope(factory) as s:
                lifecycle.untake_for_republish(s, job_id, marked)
    return done


def _sweep_ended(factory: sessionmaker[Session], store: ObjectStore) -> None:
    """Checkpoints of ended jobs that nothing resumes any more (cancelled while queued,
    failed or cancelled by a reaper, killed before the worker could purge them)."""
    with session_scope(factory) as s:
        for job_id in retention.ended_with_leftovers(s):
            remove_after_commit(s, store, retention.purge_ended(s, job_id))


# Rounds a worker whose round failed stays out of the reaper election: long enough for the
# other workers, which try every round, to take the lease.
SIT_OUT_ROUNDS = 3


class _Reaper:
    def __init__(self, settings: Settings, queue: str) -> None:
        self.settings, self.queue = settings, queue
        self.stop = threading.Event()
        self.interval = max(0.5, min(settings.heartbeat_seconds, 10.0))
        self.thread = threading.Thread(target=self._loop, name="drtrain-reaper", daemon=True)

    def _loop(self) -> None:
        # A connection only while a round runs (one for the round's transactions, connected
        # once): between rounds the reaper holds none.
        engine = burst_engine(self.settings.resolved_database_url, "drtrain-reaper")
        # Pool children forked later must not touch this engine's sockets.
        os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        factory = make_sessionmaker(engine)
        store = make_store(self.settings)
        # Three rounds' worth: a holder that missed one renewal keeps the lease; one that died
        # hands it over within three rounds.
        lease = ReaperLease(self.settings, self.queue, ttl_seconds=3 * self.interval)
        suspects: set[str] = set()
        sit_out = 0
        while not self.stop.wait(self.interval):
            if sit_out:
                sit_out -= 1
                continue
            if not lease.held():
                suspects.clear()  # what a former holder suspected is stale by its next turn
                continue
            try:
                reap_once(self.settings, factory, queue=self.queue, suspects=suspects,
                          store=store)
            except Exception as exc:  # noqa: BLE001 - a DB hiccup must not end the reaper
                # This worker may be the only one that cannot reach the database: it hands
                # the lease on and stays out of the next election, so that a worker that can
                # reap does, instead of none while this one keeps the lease.
                log_failure(log, logging.ERROR, exc,
                            "reaper round failed; handing the reaper lease on")
                lease.release()
                suspects.clear()
                sit_out = SIT_OUT_ROUNDS
            finally:
                engine.dispose()
        lease.release()
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
