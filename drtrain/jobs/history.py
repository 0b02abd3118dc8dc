"""Bounded metric history: the metric curves of a job that ended long enough ago are
downsampled, so the history kept per job stops growing with its epochs.

A curve is one metric of one phase and layer (``phase, layer, name``), one point per epoch.
Once a job has been ended for ``settings.metric_history_full_days``, the reaper keeps, of each
curve:

- every point of its last ``metric_history_recent_epochs`` epochs (the end of training, where
  a reader looks closest);
- of the points before those, at most ``metric_history_points_per_curve``: the first one, and
  the lowest and the highest point of each of equal runs of epochs, so that a chart drawn
  from what is left has the same envelope (the curve's first, last, minimum and maximum are
  always kept).

Kept points keep their ``seq``; a reader paging by ``since`` sees gaps, not changes. A job
is downsampled once (``jobs.metrics_downsampled_at``); an ended job's points never change
after that, since no worker writes to an ended job.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from drtrain.kit.models import Job, MetricPoint
from drtrain.kit.settings import Settings

Point = tuple[int, int, float]  # (row id, epoch, value)


def _extremes(run: Sequence[Point]) -> set[int]:
    low = min(run, key=lambda p: (p[2], p[1]))
    high = max(run, key=lambda p: (p[2], -p[1]))
    return {low[0], high[0]}


def keep_of_curve(points: Sequence[Point], recent_epochs: int, budget: int) -> set[int]:
    """The row ids to keep of one curve (its points in any order)."""
    ordered = sorted(points, key=lambda p: p[1])
    epochs = sorted({p[1] for p in ordered})
    if len(ordered) <= recent_epochs + budget:
        return {p[0] for p in ordered}
    cut = epochs[-recent_epochs]
    older = [p for p in ordered if p[1] < cut]
    keep = {p[0] for p in ordered if p[1] >= cut} | {older[0][0]}
    runs = max(1, (budget - 1) // 2)  # two points a run, and the first point
    size = -(-len(older) // runs)
    for start in range(0, len(older), size):
        keep |= _extremes(older[start:start + size])
    return keep


def downsample_job(session: Session, job_id: str, recent_epochs: int, budget: int) -> int:
    """Drop the points of one job that its curves do not keep; returns how many."""
    rows = session.execute(
        select(MetricPoint.id, MetricPoint.phase, MetricPoint.layer_key, MetricPoint.name,
               MetricPoint.epoch, MetricPoint.value)
        .where(MetricPoint.job_id == job_id)).tuples().all()
    curves: dict[tuple[str, int, str], list[Point]] = defaultdict(list)
    for row_id, phase, layer_key, name, epoch, value in rows:
        curves[(phase, layer_key, name)].append((row_id, epoch, value))
    keep: set[int] = set()
    for points in curves.values():
        keep |= keep_of_curve(points, recent_epochs, budget)
    drop = [row[0] for row in rows if row[0] not in keep]
    for start in range(0, len(drop), 1000):
        session.execute(delete(MetricPoint).where(MetricPoint.id.in_(drop[start:start + 1000]))
                        .execution_options(synchronize_session=False))
    return len(drop)


def due_jobs(session: Session, ended_before: datetime, limit: int) -> list[str]:
    """Ended jobs, ended before ``ended_before``, whose history is not downsampled yet."""
    return list(session.scalars(
        select(Job.id).where(Job.metrics_downsampled_at.is_(None),
                             Job.finished_at < ended_before)
        .order_by(Job.finished_at).limit(limit)))


def downsample_due(session: Session, settings: Settings, now: datetime,
                   limit: int = 20) -> dict[str, int]:
    """Downsample up to ``limit`` due jobs (the oldest first); returns points dropped by job.
    A job taken by a concurrent caller meanwhile is skipped (the conditional UPDATE)."""
    ended_before = now - timedelta(days=settings.metric_history_full_days)
    dropped: dict[str, int] = {}
    for job_id in due_jobs(session, ended_before, limit):
        taken = session.execute(
            update(Job).where(Job.id == job_id, Job.metrics_downsampled_at.is_(None))
            # updated_at unchanged: the job itself did not change.
            .values(metrics_downsampled_at=now, updated_at=Job.updated_at)
            .execution_options(synchronize_session=False))
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            dropped[job_id] = downsample_job(session, job_id,
                                             settings.metric_history_recent_epochs,
                                             settings.metric_history_points_per_curve)
    return dropped
