"""A job that ends passes its running slot to its tenant's oldest waiting job (the runner),
and concurrent refills of one tenant never hand out more slots than it has, nor dispatch a
job twice (PostgreSQL, real transactions from several threads)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from drtrain.jobs import queue
from drtrain.kit.db import session_scope
from drtrain.kit.models import Job, JobStatus
from tests.factories import get_job
from worker.runner import run_job


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr("drtrain.kit.broker.publish_run_job",
                        lambda _s, job_id, **_: sent.append(job_id))
    monkeypatch.setattr("drtrain.kit.broker.publish_run_jobs",
                        lambda _s, job_ids, **_: sent.extend(job_ids))
    return sent


def test_a_finished_job_passes_its_slot_to_the_oldest_waiting_job(
        settings, factory, store, make_job, published) -> None:
    settings = settings.model_copy(update={"max_concurrent_jobs_per_tenant": 1})
    running = make_job(pretrain={"epochs": 1}, finetune={"epochs": 1})
    older, newer = make_job(dispatched=False), make_job(dispatched=False)

    run_job(running, settings=settings, sessionmaker=factory, store=store, worker_id="w1")

    assert get_job(factory, running).status == JobStatus.succeeded
    assert published == [older]
    assert get_job(factory, older).dispatched_at is not None
    assert get_job(factory, newer).dispatched_at is None


def test_a_job_that_cannot_be_claimed_passes_nothing_on(settings, factory, store, make_job,
                                                        published) -> None:
    """A duplicate message for a job that runs elsewhere: the slot is still that job's."""
    settings = settings.model_copy(update={"max_concurrent_jobs_per_tenant": 1})
    elsewhere = make_job(JobStatus.running)
    with session_scope(factory) as s:
        s.get(Job, elsewhere).worker_id = "w0"
    make_job(dispatched=False)
    run_job(elsewhere, settings=settings, sessionmaker=factory, store=store, worker_id="w1")
    assert published == []


def test_concurrent_refills_dispatch_each_job_once_within_the_cap(
        settings, factory, make_job, tenant_id) -> None:
    cap, threads = 3, 8
    settings = settings.model_copy(update={"max_concurrent_jobs_per_tenant": cap})
    waiting = [make_job(dispatched=False) for _ in range(10)]
    barrier = threading.Barrier(threads)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def refill() -> None:
        try:
            barrier.wait()
            with session_scope(factory) as s:
                results.append(queue.refill(s, settings, tenant_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=refill) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert not errors
    dispatched = [job_id for batch in results for job_id in batch]
    assert dispatched == waiting[:cap]  # once each, oldest first, no more than the cap
    with factory() as s:
        marked = s.scalars(select(Job.id).where(Job.tenant_id == tenant_id,
                                                Job.dispatched_at.is_not(None))).all()
    assert sorted(marked) == sorted(waiting[:cap])
