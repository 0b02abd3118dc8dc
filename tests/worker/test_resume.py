"""Crash, takeover and resume: fenced out stale workers, no duplicate metric points, and a
corrupt latest checkpoint falls back to the previous one. A resumed job ends with exactly
the weights of an uninterrupted run (dr_core's bit-exact resume on CPU)."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch
from sqlalchemy import select, update

from dr_core.model_file import load_model
from drtrain.jobs import lifecycle
from drtrain.kit.db import session_scope
from drtrain.kit.models import Checkpoint, Job, JobStatus, MetricPoint, utcnow
from tests.factories import get_job
from worker import job_callback
from worker.runner import run_job
from worker.store_retry import PatientStore

SPEC = {"finetune": {"epochs": 3, "batch_size": 32, "learning_rate": 0.1,
                     "dr": {"weight": 0.05, "distance": "euclidean", "layers": "all"}}}


class Killed(BaseException):
    """Stands for kill -9: not an Exception, so the runner cannot record anything."""


def _run(job_id, settings, factory, store, worker):
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id=worker)


def record_one_at_a_time(monkeypatch, after) -> None:
    """JobCallback records each event in a transaction of its own, then calls
    ``after(self, kind, event)``: a test can look, or crash, between any two events."""
    original = job_callback.JobCallback.record

    def record(self, items):
        for kind, event in items:
            original(self, [(kind, event)])
            after(self, kind, event)

    monkeypatch.setattr(job_callback.JobCallback, "record", record)


def _crash_after(monkeypatch, n_epochs: int) -> None:
    """Killed right after the n-th epoch is recorded."""
    seen = {"n": 0}

    def after(self, kind, event):
        seen["n"] += kind == "epoch"
        if kind == "epoch" and seen["n"] == n_epochs:
            raise Killed()

    record_one_at_a_time(monkeypatch, after)


def _expire_and_reap(factory, job_id) -> None:
    with session_scope(factory) as s:
        s.execute(update(Job).where(Job.id == job_id)
                  .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with session_scope(factory) as s:
        # The folder's database is shared: jobs other tests left running (leases of 30 s)
        # may have expired by now and are requeued too.
        assert job_id in lifecycle.requeue_expired(s)


def _final_weights(factory, store, job_id, tmp_path):
    with factory() as s:
        ck = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id,
                                                Checkpoint.kind == "final")).scalar_one()
    path = tmp_path / f"{job_id}.safetensors"
    store.get_to_file(ck.object_key, path)
    model, _ = load_model(path)
    return model.state_dict()


def _assert_points_complete(factory, job_id):
    with factory() as s:
        pts = s.execute(select(MetricPoint).where(MetricPoint.job_id == job_id)
                        .order_by(MetricPoint.seq)).scalars().all()
    assert [p.seq for p in pts] == list(range(1, len(pts) + 1))
    natural = [(p.phase, p.layer, p.epoch, p.name) for p in pts]
    assert len(natural) == len(set(natural))
    epochs = {(p.phase, p.layer, p.epoch) for p in pts}
    assert epochs == {("pretrain", 0, 1), ("pretrain", 0, 2), ("pretrain", 1, 1),
                      ("pretrain", 1, 2), ("finetune", None, 1), ("finetune", None, 2),
                      ("finetune", None, 3)}
    # every epoch has the same metric names, whichever attempt wrote it
    by_epoch: dict = {}
    for phase, layer, epoch, name in natural:
        by_epoch.setdefault((phase, layer), {}).setdefault(epoch, set()).add(name)
    for per_epoch in by_epoch.values():
        assert len({frozenset(v) for v in per_epoch.values()}) == 1
    return pts


@pytest.fixture
def reference(settings, factory, store, make_job, tmp_path):
    job_id = make_job(**SPEC)
    _run(job_id, settings, factory, store, "ref")
    assert get_job(factory, job_id).status == JobStatus.succeeded
    return _final_weights(factory, store, job_id, tmp_path)


@pytest.mark.parametrize("crash_after", [3, 5], ids=["in-pretraining", "in-finetuning"])
def test_resume_after_a_crash_continues_exactly(settings, factory, store, make_job, tmp_path,
                                                monkeypatch, reference, crash_after):
    job_id = make_job(**SPEC)
    _crash_after(monkeypatch, crash_after)
    with pytest.raises(Killed):
        _run(job_id, settings, factory, store, "doomed")
    monkeypatch.undo()
    job = get_job(factory, job_id)
    assert job.status == JobStatus.running and job.attempt == 1  # nobody knows it died yet

    _expire_and_reap(factory, job_id)
    _run(job_id, settings, factory, store, "rescuer")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded and job.attempt == 2, job.status_reason
    assert job.result["resumed_from"].startswith(f"jobs/{job_id}/checkpoints/1-")
    pts = _assert_points_complete(factory, job_id)
    assert {p.attempt for p in pts} == {1, 2}
    weights = _final_weights(factory, store, job_id, tmp_path)
    assert weights.keys() == reference.keys()
    for name in reference:
        assert torch.equal(weights[name], reference[name]), name


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(settings, factory, store, make_job,
                                                              tmp_path, monkeypatch, reference):
    job_id = make_job(**SPEC)
    _crash_after(monkeypatch, 5)  # after fine-tuning epoch 1
    with pytest.raises(Killed):
        _run(job_id, settings, factory, store, "doomed")
    monkeypatch.undo()
    with factory() as s:
        cks = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                        .order_by(Checkpoint.created_at.desc())).scalars().all()
    latest, previous = cks[0], cks[1]
    assert (latest.phase, latest.epoch) == ("finetune", 1)
    bad = tmp_path / "garbage"
    bad.write_bytes(b"\x00not a checkpoint" * 64)
    store.put_file(latest.object_key, bad)  # same key, different bytes: sha256 no longer matches

    _expire_and_reap(factory, job_id)
    _run(job_id, settings, factory, store, "rescuer")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded, job.status_reason
    assert job.result["resumed_from"] == previous.object_key
    _assert_points_complete(factory, job_id)  # fine-tune epoch 1 ran twice, recorded once
    weights = _final_weights(factory, store, job_id, tmp_path)
    for name in reference:
        assert torch.equal(weights[name], reference[name]), name


def test_a_worker_fenced_out_mid_run_stops_and_writes_nothing(settings, factory, store,
                                                               make_job):
    job_id = make_job(pretrain={"epochs": 400, "batch_size": 32}, finetune={"epochs": 2})
    t = threading.Thread(target=_run, args=(job_id, settings, factory, store, "old"))
    t.start()
    deadline = time.monotonic() + 60
    while get_job(factory, job_id).epoch is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # Another worker takes the job over (as after a network partition and a reaper round).
    # One transaction, so the old worker's heartbeat cannot renew the lease in between.
    try:
        with session_scope(factory) as s:
            s.execute(update(Job).where(Job.id == job_id)
                      .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
            assert lifecycle.claim(s, job_id, "new", 60.0).attempt == 2
        taken_over = utcnow()
    finally:
        t.join(30)
    assert not t.is_alive()
    job = get_job(factory, job_id)
    assert (job.status, job.attempt, job.worker_id) == (JobStatus.running, 2, "new")
    assert job.status_reason is None and job.finished_at is None
    with factory() as s:
        late = s.execute(select(MetricPoint).where(MetricPoint.job_id == job_id,
                                                   MetricPoint.at > taken_over)).scalars().all()
        late_cks = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id,
                                                      Checkpoint.created_at > taken_over)
                             ).scalars().all()
    assert late == [] and late_cks == []


class _FlakyStore:
    """The test store, but its endpoint goes away after ``ok_puts`` successful writes, for
    ``down_puts`` writes (for good when None)."""

    def __init__(self, inner, ok_puts: int, down_puts: int | None = None) -> None:
        self._inner, self._left, self._down = inner, ok_puts, down_puts

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def put_stream(self, key, chunks, **kwargs):
        from botocore.exceptions import EndpointConnectionError

        if self._left <= 0 and (self._down is None or self._down > 0):
            if self._down is not None:
                self._down -= 1
            raise EndpointConnectionError(endpoint_url="http://object-store.invalid")
        self._left -= 1
        return self._inner.put_stream(key, chunks, **kwargs)


def test_an_object_store_blip_costs_no_attempt(settings, factory, store, make_job, tmp_path,
                                               reference):
    """Four failed writes in a row mid-job: the worker's store tries again with backoff
    within the attempt, and the job ends as if nothing happened."""
    job_id = make_job(**SPEC)
    flaky = _FlakyStore(store, ok_puts=3, down_puts=4)
    _run(job_id, settings, factory, PatientStore(flaky, settings.lease_seconds), "blip")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded and job.attempt == 1, job.status_reason
    assert flaky._down == 0  # the outage did happen
    assert job.result["resumed_from"] is None
    _assert_points_complete(factory, job_id)
    weights = _final_weights(factory, store, job_id, tmp_path)
    for name in reference:
        assert torch.equal(weights[name], reference[name]), name


def test_object_store_outage_leaves_the_job_for_a_retry_that_resumes(
        settings, factory, store, make_job, tmp_path, reference):
    job_id = make_job(**SPEC)
    # Down for good: retried for a lease (worker/store_retry.py), then the attempt gives up.
    _run(job_id, settings, factory, PatientStore(_FlakyStore(store, ok_puts=3),
                                                 settings.lease_seconds), "cut-off")
    job = get_job(factory, job_id)
    # Not failed: an outage is not the job's fault. Its lease runs out and the reaper retries it.
    assert job.status == JobStatus.running and job.attempt == 1 and job.status_reason is None

    _expire_and_reap(factory, job_id)
    _run(job_id, settings, factory, store, "after-the-outage")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded and job.attempt == 2, job.status_reason
    assert job.result["resumed_from"].startswith(f"jobs/{job_id}/checkpoints/1-")
    _assert_points_complete(factory, job_id)
    weights = _final_weights(factory, store, job_id, tmp_path)
    for name in reference:
        assert torch.equal(weights[name], reference[name]), name


def test_a_missing_bucket_is_not_an_outage_and_fails_the_job(settings, factory, store, make_job):
    from botocore.exceptions import ClientError

    class NoBucket(_FlakyStore):
        def put_stream(self, key, chunks, **kwargs):
            raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "PutObject")

    job_id = make_job(**SPEC)
    _run(job_id, settings, factory, NoBucket(store, 0), "w")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.failed and "NoSuchBucket" in job.status_reason
