"""bench/scale.py's parts that do not depend on timing: the sleep entry's jobs go through the
runner as training jobs do, and the projection's arithmetic."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from bench.scale_extrapolation import Measured, project
from bench.sleep_worker import EPOCH_METRICS, EPOCHS_ENV, SLEEP_SECONDS_ENV, _use_sleep_train
from drtrain.kit.models import Checkpoint, JobStatus, MetricPoint
from tests.factories import get_job
from worker import runner


@pytest.fixture
def sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLEEP_SECONDS_ENV, "0.01")
    monkeypatch.setenv(EPOCHS_ENV, "3")
    monkeypatch.setattr(runner, "_train", runner._train)  # restored after the test
    _use_sleep_train()


def test_a_sleep_job_ends_succeeded_with_its_epochs_recorded_and_no_checkpoint(
        sleeping, settings, factory, store, make_job):
    job_id = make_job()
    runner.run_job(job_id, settings=settings, sessionmaker=factory, store=store,
                   worker_id="w-sleep")

    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded, job.status_reason
    assert (job.phase, job.epoch, job.progress) == ("finetune", 3, 1.0)
    assert job.result["epochs"] == {"pretrain": 0, "finetune": 3}
    with factory() as s:
        points = s.execute(select(MetricPoint).where(MetricPoint.job_id == job_id)).scalars().all()
        checkpoints = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
    assert sorted((p.epoch, p.name) for p in points) == sorted(
        (epoch, name) for epoch in (1, 2, 3) for name in EPOCH_METRICS)
    assert checkpoints == []


def test_projection_multiplies_per_worker_rates_and_per_job_costs():
    measured = Measured(workers=3, jobs_per_s_per_worker=2.0, pg_xacts_per_job=10.0,
                        pg_xacts_per_submit=0.5, redis_per_job=12.0, redis_per_submit=1.0,
                        redis_idle_per_worker_s=1.5, reaper_pg_xacts_per_s=0.8,
                        connections_per_worker=1.5, connections_api=3, heartbeat_seconds=5.0)
    p = project(measured, workers=100, jobs_per_day=86_400)  # one job a second

    assert p.peak_jobs_per_s == 200.0
    assert p.peak_pg_xacts_per_s == 200.0 * 10.5
    assert p.peak_redis_per_s == 200.0 * 13.0
    assert p.day_pg_xacts_per_s == pytest.approx(10.5 + 100 / 5.0 + 0.8)
    assert p.day_redis_per_s == pytest.approx(13.0 + 100 * 1.5)
    assert p.connections == 1.5 * 100 + 1 + 3
