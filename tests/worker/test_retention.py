"""Checkpoint retention in the worker: while a job runs it keeps only its newest
``keep_checkpoints`` layer/epoch checkpoints (rows and objects), a requeued job keeps them and
resumes from the newest, and a job that has ended keeps only its final model. The reaper
sweeps up jobs that ended without their worker (cancelled while queued, failed by a reaper)."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from drtrain.kit.db import session_scope
from drtrain.kit.models import Checkpoint, Job, JobStatus
from tests.factories import get_job
from tests.worker.test_resume import SPEC, Killed, _crash_after, _expire_and_reap, _run, record_one_at_a_time
from worker.reaper import reap_once


def _rows(factory, job_id):
    with factory() as s:
        return s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                         .order_by(Checkpoint.created_at.desc())).scalars().all()


def _objects(store, job_id) -> set[str]:
    root = Path(store.root)
    return {str(p.relative_to(root)) for p in (root / "jobs" / job_id).rglob("*") if p.is_file()}


@pytest.mark.parametrize("keep", [1, 2])
def test_a_running_job_keeps_its_newest_checkpoints_and_ends_with_its_model_only(
        settings, factory, store, make_job, monkeypatch, keep):
    settings.keep_checkpoints = keep
    job_id = make_job(**SPEC)
    seen: list[tuple[int, list[str], set[str]]] = []
    stored = 0

    def after(self, kind, event):
        nonlocal stored
        stored += event.state is not None
        rows = [c.object_key for c in _rows(factory, job_id) if c.kind != "final"]
        seen.append((stored, rows, _objects(store, job_id)))

    record_one_at_a_time(monkeypatch, after)
    _run(job_id, settings, factory, store, "w1")
    assert get_job(factory, job_id).status == JobStatus.succeeded
    # 2 layers x 2 epochs + 2 layer ends + 3 fine-tune epochs = 9 events; each layer's last
    # epoch leaves its state to the layer's end: 7 checkpoints written.
    assert len(seen) == 9 and seen[-1][0] == 7
    for stored_so_far, rows, objects in seen:
        assert len(rows) == min(stored_so_far, keep), (stored_so_far, rows)
        assert objects == set(rows), (stored_so_far, rows, objects)  # pruned objects are gone too
    final = _rows(factory, job_id)
    assert [c.kind for c in final] == ["final"]
    assert _objects(store, job_id) == {final[0].object_key}


def test_a_requeued_job_keeps_its_latest_checkpoints_and_resumes_from_the_newest(
        settings, factory, store, make_job, monkeypatch):
    job_id = make_job(**SPEC)
    _crash_after(monkeypatch, 5)
    with pytest.raises(Killed):
        _run(job_id, settings, factory, store, "doomed")
    monkeypatch.undo()
    _expire_and_reap(factory, job_id)
    reap_once(settings, factory, publish=lambda _id: None, missing=set, store=store)
    kept = _rows(factory, job_id)
    assert get_job(factory, job_id).status == JobStatus.queued
    assert len(kept) == settings.keep_checkpoints == 2  # not purged: it will resume
    assert _objects(store, job_id) == {c.object_key for c in kept}

    _run(job_id, settings, factory, store, "rescuer")
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded and job.attempt == 2, job.status_reason
    assert job.result["resumed_from"] == kept[0].object_key
    assert [c.kind for c in _rows(factory, job_id)] == ["final"]


def test_the_reaper_removes_checkpoints_of_jobs_that_ended_without_their_worker(
        settings, factory, store, make_job, monkeypatch):
    job_id = make_job(**SPEC)
    _crash_after(monkeypatch, 3)
    with pytest.raises(Killed):
        _run(job_id, settings, factory, store, "doomed")
    monkeypatch.undo()
    _expire_and_reap(factory, job_id)
    assert _rows(factory, job_id)
    # Cancelled while queued for its retry (what POST /cancel does): nothing will resume it.
    with session_scope(factory) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.cancelled))
    reap_once(settings, factory, publish=lambda _id: None, missing=set, store=store)
    assert _rows(factory, job_id) == []
    assert _objects(store, job_id) == set()
