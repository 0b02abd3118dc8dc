"""The reaper (requeue + re-publish) and the heartbeat's stop signals, without a broker."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import update

from drtrain.jobs import lifecycle
from drtrain.kit.db import session_scope
from drtrain.kit.models import Job, JobStatus, utcnow
from tests.factories import get_job
from worker.heartbeat import Heartbeat, StopReason
from worker.reaper import reap_once


def _age(factory, job_id, **values):
    with session_scope(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def test_reaper_requeues_dead_workers_jobs_and_republishes_them(settings, factory, make_job):
    job_id = make_job()
    with session_scope(factory) as s:
        lifecycle.claim(s, job_id, "dead", 30.0)
    _age(factory, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    sent: list[str] = []
    did = reap_once(settings, factory, publish=sent.append, missing=set)
    assert job_id in did["requeued"] and job_id in sent
    job = get_job(factory, job_id)
    assert job.status == JobStatus.queued and job.attempt == 2 and job.published_at is not None


def test_a_requeued_job_is_published_once_in_its_round(settings, factory, make_job):
    """Requeued jobs are stale by the queued-job test too (published_at cleared, created long
    ago); the round that requeued and published one must not re-publish it as lost."""
    job_id = make_job()
    long_ago = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds + 5)
    _age(factory, job_id, created_at=long_ago)
    with session_scope(factory) as s:
        lifecycle.claim(s, job_id, "dead", 30.0)
    _age(factory, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    sent: list[str] = []
    did = reap_once(settings, factory, publish=sent.append, missing=set)
    # (The database is shared by this module's tests: other jobs may be reaped too.)
    assert job_id in did["requeued"] and job_id not in did["republished"]
    assert sent.count(job_id) == 1


def test_a_message_in_the_broker_is_never_duplicated(settings, factory, make_job):
    """A stale queued job whose message is still in the broker (waiting, or taken by a
    worker that has not claimed the job yet) is left alone, however short the queue."""
    job_id = make_job()
    long_ago = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds + 5)
    _age(factory, job_id, created_at=long_ago, published_at=long_ago)
    sent: list[str] = []
    for _ in range(3):
        reap_once(settings, factory, publish=sent.append, missing=lambda ids: set(ids) - {job_id},
                  suspects=set())
    assert job_id not in sent


def test_a_lost_message_is_resent_after_two_rounds_without_it(settings, factory, make_job):
    """A message is re-sent only once two rounds in a row found it missing: a worker that
    took it in between has claimed the job by the second round."""
    taken, lost = make_job(), make_job()
    long_ago = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds + 5)
    for job_id in (taken, lost):
        _age(factory, job_id, created_at=long_ago, published_at=long_ago)
    suspects: set[str] = set()
    sent: list[str] = []
    reap_once(settings, factory, publish=sent.append, missing=set, suspects=suspects)
    assert not {taken, lost} & set(sent) and {taken, lost} <= suspects
    with session_scope(factory) as s:  # the worker that had taken it claims it now
        lifecycle.claim(s, taken, "w1", 30.0)
    did = reap_once(settings, factory, publish=sent.append, missing=set, suspects=suspects)
    assert lost in did["republished"] and sent.count(lost) == 1 and taken not in sent
    assert not {taken, lost} & suspects


def test_of_two_reapers_only_one_resends_a_lost_message(settings, factory, make_job):
    job_id = make_job()
    long_ago = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds + 5)
    _age(factory, job_id, created_at=long_ago, published_at=long_ago)
    older_than = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds)
    # Both found it stale; the conditional UPDATE lets exactly one of them send it.
    with session_scope(factory) as s:
        assert lifecycle.take_for_republish(s, job_id, older_than)
    with session_scope(factory) as s:
        assert not lifecycle.take_for_republish(s, job_id, older_than)


def test_reaper_republishes_queued_jobs_whose_message_vanished(settings, factory, make_job):
    old = make_job()
    fresh = make_job()
    long_ago = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds + 5)
    _age(factory, old, created_at=long_ago, published_at=long_ago)

    sent: list[str] = []
    # The broker still holds its message: nothing is lost, nothing is re-sent.
    reap_once(settings, factory, publish=sent.append, missing=lambda ids: set(ids) - {old, fresh})
    assert old not in sent

    # The broker is empty (Redis restarted) while jobs are queued: re-send the stale one only.
    did = reap_once(settings, factory, publish=sent.append, missing=set)
    assert old in did["republished"] and old in sent and fresh not in sent
    assert get_job(factory, old).published_at > long_ago

    # Re-sent once per interval, not on every round.
    sent.clear()
    reap_once(settings, factory, publish=sent.append, missing=set)
    assert old not in sent


def test_reaper_survives_a_broker_that_refuses(settings, factory, make_job):
    job_id = make_job()
    long_ago = utcnow() - timedelta(seconds=settings.requeue_queued_after_seconds + 5)
    _age(factory, job_id, created_at=long_ago, published_at=None)

    def down(_job_id):
        raise ConnectionError("broker down")

    did = reap_once(settings, factory, publish=down, missing=lambda ids: None)
    assert did["republished"] == []
    assert get_job(factory, job_id).published_at is None  # so the next round tries again


def _heartbeat(factory, job_id, **kw) -> Heartbeat:
    args = dict(job_id=job_id, attempt=1, worker_id="w1", interval=0.05, lease_seconds=30.0,
                deadline=None, grace=30.0)
    args.update(kw)
    return Heartbeat(factory, **args)


def test_heartbeat_signals_cancel_and_fencing(factory, make_job):
    job_id = make_job()
    with session_scope(factory) as s:
        lifecycle.claim(s, job_id, "w1", 30.0)
    hb = _heartbeat(factory, job_id)
    hb.beat()
    assert not hb.should_stop()
    _age(factory, job_id, status=JobStatus.cancelling, cancel_requested=True)
    hb.beat()
    assert hb.should_stop() and hb.stop_reason is StopReason.cancel

    other = make_job()
    with session_scope(factory) as s:
        lifecycle.claim(s, other, "w1", 30.0)
    _age(factory, other, attempt=2)
    hb = _heartbeat(factory, other)
    hb.beat()
    assert hb.stop_reason is StopReason.fenced


def test_heartbeat_max_runtime_and_hard_stop_after_grace(factory, make_job):
    job_id = make_job()
    with session_scope(factory) as s:
        lifecycle.claim(s, job_id, "w1", 30.0)
    stuck = threading.Event()
    reasons: list[StopReason] = []

    def on_stuck(reason):
        reasons.append(reason)
        stuck.set()

    hb = _heartbeat(factory, job_id, deadline=time.monotonic() + 0.2, grace=0.3,
                    on_stuck=on_stuck).start()
    try:
        assert not hb.should_stop()
        # Training "ignores" the stop request: on_stuck must fire after the grace period.
        assert stuck.wait(10)
    finally:
        hb.stop()
    assert reasons == [StopReason.max_runtime]
    assert get_job(factory, job_id).heartbeat_at is not None
