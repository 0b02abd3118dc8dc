"""Bounded metric history: an ended job's curves, once it is old enough, keep every point of
their last epochs and a bounded number before them, drawn so that the chart keeps its shape
(first, last, minimum and maximum, and the envelope of each run of epochs)."""
from __future__ import annotations

import math
import random
from datetime import timedelta

from sqlalchemy import select

from drtrain.jobs import history
from drtrain.kit.models import Job, JobStatus, MetricPoint, Tenant, utcnow
from drtrain.kit.settings import Settings
from tests.factories import add_job


def _curve(n: int, seed: int) -> list[history.Point]:
    """A noisy decaying loss with a spike: what a chart must not lose."""
    rng = random.Random(seed)
    values = [math.exp(-e / 80) + rng.uniform(-0.05, 0.05) for e in range(1, n + 1)]
    values[n // 3] = 5.0  # a divergence spike mid-way
    return [(1000 + e, e, v) for e, v in enumerate(values, start=1)]


def test_a_long_curve_keeps_its_ends_its_extremes_and_its_envelope() -> None:
    points = _curve(1000, seed=1)
    keep = history.keep_of_curve(points, recent_epochs=10, budget=50)
    kept = [p for p in points if p[0] in keep]
    assert len(kept) <= 10 + 50
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert [p[1] for p in kept[-10:]] == list(range(991, 1001))  # the last epochs, all of them
    values = [p[2] for p in points]
    assert min(p[2] for p in kept) == min(values) and max(p[2] for p in kept) == max(values)
    # The envelope: wherever a chart has a run of 50 epochs, it shows the same low and high
    # within one run of the downsampled grid (990 older points in 24 runs of 42).
    for start in range(0, 990, 42):
        window = points[start:start + 42]
        shown = [p for p in kept if window[0][1] <= p[1] <= window[-1][1]]
        assert min(p[2] for p in shown) == min(p[2] for p in window)
        assert max(p[2] for p in shown) == max(p[2] for p in window)


def test_a_short_curve_is_kept_whole() -> None:
    points = _curve(60, seed=2)
    assert history.keep_of_curve(points, recent_epochs=10, budget=50) == {p[0] for p in points}


def _points(db, job: Job, epochs: int) -> None:  # noqa: ANN001
    seq = 0
    for layer, name in ((0, "reconstruction_error"), (-1, "loss")):
        for e, (_, _, value) in enumerate(_curve(epochs, seed=layer + 5), start=1):
            seq += 1
            db.add(MetricPoint(job_id=job.id, seq=seq, attempt=1,
                               phase="pretrain" if layer == 0 else "finetune",
                               layer=None if layer < 0 else layer, layer_key=layer, epoch=e,
                               name=name, value=value))
    db.commit()


def _count(db, job: Job) -> int:  # noqa: ANN001
    return len(db.scalars(select(MetricPoint.id).where(MetricPoint.job_id == job.id)).all())


def test_only_jobs_ended_long_enough_ago_are_downsampled_and_only_once(db) -> None:  # noqa: ANN001
    tenant = Tenant(name="history")
    db.add(tenant)
    db.commit()
    now = utcnow()
    old = add_job(db, tenant.id, JobStatus.succeeded, finished_at=now - timedelta(days=8))
    recent = add_job(db, tenant.id, JobStatus.failed, finished_at=now - timedelta(days=1))
    running = add_job(db, tenant.id, JobStatus.running)
    for job in (old, recent, running):
        _points(db, job, 500)
    settings = Settings(environment="test", metric_history_full_days=7,
                        metric_history_recent_epochs=10, metric_history_points_per_curve=50)
    dropped = history.downsample_due(db, settings, now)
    assert set(dropped) == {old.id}
    assert _count(db, old) <= 2 * (10 + 50) and dropped[old.id] == 1000 - _count(db, old)
    assert _count(db, recent) == _count(db, running) == 1000
    db.refresh(old)
    assert old.metrics_downsampled_at is not None
    assert history.downsample_due(db, settings, now) == {}  # done once
