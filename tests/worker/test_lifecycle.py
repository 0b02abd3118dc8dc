"""Worker-side transitions are conditional and fenced: PostgreSQL, committed, for real."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, select, update

from drtrain.jobs import lifecycle
from drtrain.jobs.lifecycle import MetricValue
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Job, JobStatus, MetricPoint, Tenant, utcnow
from tests.factories import get_job


def _claim(factory, job_id, worker="w1", lease=30.0):
    with session_scope(factory) as s:
        return lifecycle.claim(s, job_id, worker, lease)


def _set(factory, job_id, **values):
    with session_scope(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def test_claim_once_then_refused_while_lease_lives(factory, make_job):
    job_id = make_job()
    job = _claim(factory, job_id, "w1")
    assert job is not None and job.status == JobStatus.running and job.worker_id == "w1"
    assert job.attempt == 1 and job.started_at is not None and job.lease_expires_at > utcnow()
    assert _claim(factory, job_id, "w2") is None
    assert get_job(factory, job_id).worker_id == "w1"


def test_claim_refuses_terminal_and_cancelling(factory, make_job):
    for status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled,
                   JobStatus.cancelling):
        job_id = make_job(status=status)
        assert _claim(factory, job_id) is None
        assert get_job(factory, job_id).status == status
    assert _claim(factory, "0" * 32) is None


def test_claim_takes_over_an_expired_lease_with_a_new_attempt(factory, make_job):
    job_id = make_job()
    _claim(factory, job_id, "dead")
    _set(factory, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    job = _claim(factory, job_id, "w2")
    assert job is not None and job.attempt == 2 and job.worker_id == "w2"


def test_the_leases_of_dead_processes_of_a_host_end_and_no_other(factory, make_job):
    dead, living, elsewhere, done = (make_job() for _ in range(4))
    _claim(factory, dead, "hostA:111", lease=600)
    _claim(factory, living, "hostA:222", lease=600)
    _claim(factory, elsewhere, "hostB:111", lease=600)  # the same pid on another machine
    _claim(factory, done, "hostA:111", lease=600)
    _set(factory, done, status=JobStatus.succeeded)
    with session_scope(factory) as s:
        ended = lifecycle.expire_leases_of_dead(s, "hostA", alive=lambda pid: pid == 222)
    assert ended == [dead]
    assert get_job(factory, dead).lease_expires_at <= utcnow()
    for job_id in (living, elsewhere):
        assert get_job(factory, job_id).lease_expires_at > utcnow() + timedelta(seconds=500)
    job = _claim(factory, dead, "hostA:333")  # the redelivered message takes it over at once
    assert job is not None and job.attempt == 2


def test_heartbeat_renews_reports_cancel_and_fences(factory, make_job):
    job_id = make_job()
    _claim(factory, job_id, "w1", lease=1.0)
    before = get_job(factory, job_id).lease_expires_at
    with session_scope(factory) as s:
        res = lifecycle.heartbeat(s, job_id, 1, "w1", 60.0)
    assert res.ok and not res.cancel_requested
    assert get_job(factory, job_id).lease_expires_at > before + timedelta(seconds=30)

    _set(factory, job_id, status=JobStatus.cancelling, cancel_requested=True)
    with session_scope(factory) as s:
        res = lifecycle.heartbeat(s, job_id, 1, "w1", 60.0)
    assert res.ok and res.cancel_requested

    with session_scope(factory) as s:  # wrong worker, wrong attempt: fenced out
        assert not lifecycle.heartbeat(s, job_id, 1, "intruder", 60.0).ok
        assert not lifecycle.heartbeat(s, job_id, 2, "w1", 60.0).ok


def test_metrics_get_consecutive_seqs_and_never_duplicate(factory, make_job):
    job_id = make_job()
    _claim(factory, job_id, "w1")
    pts = [MetricValue("pretrain", 0, 1, "recon_error", 0.5),
           MetricValue("pretrain", 0, 1, "dr", 0.1),
           MetricValue("finetune", None, 1, "train_loss", 2.0)]
    with session_scope(factory) as s:
        assert lifecycle.add_metrics(s, job_id, 1, pts, worker_id="w1") == 3
    with session_scope(factory) as s:  # a resumed attempt re-sending the same epoch
        again = [*pts, MetricValue("finetune", None, 2, "train_loss", 1.0)]
        assert lifecycle.add_metrics(s, job_id, 1, again, worker_id="w1") == 1
    with factory() as s:
        rows = s.execute(select(MetricPoint).where(MetricPoint.job_id == job_id)
                         .order_by(MetricPoint.seq)).scalars().all()
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert [(r.phase, r.layer, r.epoch, r.name) for r in rows][-1] == ("finetune", None, 2,
                                                                       "train_loss")
    assert rows[0].value == 0.5  # the first write wins; the duplicate did not overwrite it


def test_a_stale_attempt_can_write_nothing(factory, make_job):
    job_id = make_job()
    _claim(factory, job_id, "old")
    _set(factory, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert _claim(factory, job_id, "new").attempt == 2
    with session_scope(factory) as s:
        assert lifecycle.add_metrics(s, job_id, 1, [MetricValue("pretrain", 0, 1, "dr", 1.0)],
                                     worker_id="old") is None
        assert lifecycle.add_checkpoint(s, job_id, 1, kind="epoch", phase="pretrain", layer=0,
                                        epoch=1, object_key="k", sha256="0" * 64, size_bytes=1,
                                        worker_id="old") is None
        assert not lifecycle.report_progress(s, job_id, 1, "pretrain", 0, 1, 0.5,
                                             worker_id="old")
        assert not lifecycle.finish(s, job_id, 1, JobStatus.failed, "stale", worker_id="old")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.running and job.attempt == 2 and job.worker_id == "new"
    assert job.progress == 0.0 and job.status_reason is None
    with session_scope(factory) as s:
        assert lifecycle.finish(s, job_id, 2, JobStatus.succeeded, None, {"x": 1},
                                worker_id="new")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded and job.progress == 1.0 and job.result == {"x": 1}
    with session_scope(factory) as s:  # terminal states never change
        assert not lifecycle.finish(s, job_id, 2, JobStatus.failed, "late", worker_id="new")
    assert get_job(factory, job_id).status == JobStatus.succeeded


def test_requeue_expired(factory, make_job):
    live, retry, last, cancelling = (make_job(max_attempts=2) for _ in range(4))
    for job_id in (live, retry, last, cancelling):
        _claim(factory, job_id, "w")
    past = utcnow() - timedelta(seconds=5)
    _set(factory, retry, lease_expires_at=past)
    _set(factory, last, lease_expires_at=past, attempt=2)
    _set(factory, cancelling, lease_expires_at=past, status=JobStatus.cancelling,
         cancel_requested=True)
    with session_scope(factory) as s:
        requeued = lifecycle.requeue_expired(s)
    assert retry in requeued and live not in requeued and last not in requeued
    assert cancelling not in requeued

    job = get_job(factory, retry)
    assert (job.status, job.attempt, job.worker_id, job.lease_expires_at) == (
        JobStatus.queued, 2, None, None)
    job = get_job(factory, last)
    assert job.status == JobStatus.failed and job.status_reason == "worker lost 2 times"
    assert job.finished_at is not None
    assert get_job(factory, cancelling).status == JobStatus.cancelled
    assert get_job(factory, live).status == JobStatus.running
    with session_scope(factory) as s:  # nothing expired any more: a second reaper does nothing
        assert retry not in lifecycle.requeue_expired(s)
    assert get_job(factory, retry).attempt == 2


def test_a_job_that_completes_while_cancelling_says_the_cancel_came_too_late(factory, make_job):
    """Whatever the worker saw: the row decides, in the finishing UPDATE itself."""
    late, plain = make_job(), make_job()
    for job_id in (late, plain):
        _claim(factory, job_id)
    _set(factory, late, status=JobStatus.cancelling, cancel_requested=True)
    for job_id in (late, plain):
        with session_scope(factory) as s:
            assert lifecycle.finish(s, job_id, 1, JobStatus.succeeded, None, {}, worker_id="w1")
    assert get_job(factory, late).status == JobStatus.succeeded
    assert get_job(factory, late).status_reason == lifecycle.CANCEL_TOO_LATE
    assert get_job(factory, plain).status_reason is None


def test_an_epochs_points_go_in_with_one_insert(tmp_path):
    """A worker records every epoch's points: one statement for them all, however many (on
    SQLite the ORM sent one INSERT per point)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        tenant = Tenant(name="t")
        s.add(tenant)
        s.flush()
        job = Job(tenant_id=tenant.id, dataset_id="builtin:digits", spec={},
                  status=JobStatus.running, worker_id="w1", dispatched_at=utcnow())
        s.add(job)
        s.flush()
        job_id = job.id
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO METRIC_POINTS"):
            statements.append(statement)

    pts = [MetricValue("pretrain", 0, 1, f"m{i}", float(i)) for i in range(12)]
    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(factory) as s:
            assert lifecycle.add_metrics(s, job_id, 1, pts, worker_id="w1") == 12
    finally:
        event.remove(engine, "before_cursor_execute", count)
        engine.dispose()
    assert len(statements) == 1
