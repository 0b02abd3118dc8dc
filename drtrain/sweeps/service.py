"""Sweeps: expand a grid over a base JobSpec into child jobs, and summarise them.

Every grid point is validated (schema and dataset) before any job is added, so a sweep is
accepted whole or not at all.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from drtrain.jobs import queue, retention
from drtrain.jobs.service import (
    RETRY_AFTER_SECONDS,
    cancel_active,
    check_against_dataset,
    check_not_deleted,
    deleted_datasets,
    new_job,
)
from drtrain.jobs.spec import spec_to_dict
from drtrain.kit.errors import Conflict, Invalid, NotFound, TooManyJobs
from drtrain.kit.models import Job, JobStatus, Sweep
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from drtrain.sweeps import repository as sweeps_repo
from drtrain.sweeps.grid import expand_grid
from drtrain.sweeps.schemas import (
    MetricSummary,
    SummaryRow,
    SweepChild,
    SweepList,
    SweepListItem,
    SweepOut,
    SweepRequest,
)
from drtrain.tenants import quota


def create_sweep(session: Session, settings: Settings, tenant_id: str,
                 request: SweepRequest) -> tuple[Sweep, list[Job]]:
    base = spec_to_dict(request.base)
    points = expand_grid(base, request.grid)
    facts = [_at_point(point, partial(check_against_dataset, session, settings, tenant_id, spec))
             for point, spec in points]
    free = _check_capacity(session, settings, tenant_id, len(points))
    # Read again under the tenant's lock: a dataset deleted since its check refuses the sweep.
    deleted = deleted_datasets(session, tenant_id, [spec for _, spec in points])
    for point, spec in points:
        _at_point(point, partial(check_not_deleted, spec, deleted))
    sweep = Sweep(tenant_id=tenant_id, base=base, grid=request.grid)
    session.add(sweep)
    session.flush()
    # The children join the tenant's queue behind the jobs already waiting in it.
    promoted = queue.dispatch_oldest(session, tenant_id, free)
    queue.publish_after_commit(session, settings, promoted)
    free -= len(promoted)
    children = [new_job(session, settings, tenant_id, spec, sweep_id=sweep.id, grid_point=point,
                        facts=fact, dispatched=n < free)
                for n, ((point, spec), fact) in enumerate(zip(points, facts))]
    session.flush()
    return sweep, children


T = TypeVar("T")


def _at_point(point: dict[str, Any], check: Callable[[], T]) -> T:
    """``check()``, its 422 naming the grid point."""
    try:
        return check()
    except Invalid as exc:
        raise Invalid(f"grid point {point}: {exc.detail}", errors=exc.errors) from exc


def _check_capacity(session: Session, settings: Settings, tenant_id: str,
                    n_children: int) -> int:
    """A sweep is accepted whole only while the tenant's active jobs plus its children stay
    within ``max_sweep_jobs_per_tenant``: larger than the single-job queue (a sweep is many
    jobs at once) but still a bound, so no tenant can fill the database. Its children share
    the tenant's running slots with every other job. Returns the tenant's free slots."""
    cap = settings.max_sweep_jobs_per_tenant
    if n_children > cap:
        raise Invalid(f"the grid has {n_children} points; a tenant may have at most {cap} "
                      "active jobs, so this sweep could never run whole",
                      errors=[{"loc": ["body", "grid"], "msg": "more points than the cap",
                               "type": "value_error"}])
    # The same lock as single submits: no overshoot by races.
    slots = queue.locked_slots(session, tenant_id)
    active = slots.dispatched + slots.waiting
    if active + n_children > cap:
        raise TooManyJobs(f"this sweep's {n_children} jobs and the {active} active ones exceed "
                          f"the limit of {cap} active jobs per tenant for sweeps",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    quota.check_new_work(session, settings, tenant_id)
    return max(0, settings.max_concurrent_jobs_per_tenant - slots.dispatched)


def get_sweep(session: Session, tenant_id: str, sweep_id: str, *, lock: bool = False) -> Sweep:
    sweep = sweeps_repo.get_sweep(session, tenant_id, sweep_id, lock=lock)
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def cancel_sweep(session: Session, settings: Settings, tenant_id: str,
                 sweep_id: str) -> tuple[Sweep, int]:
    """Cancel every child that has not ended, each as ``POST /v1/jobs/{id}/cancel`` does
    (waiting and queued ones now, running ones within a batch), in one transaction; ended
    children stay as they are. Returns (the sweep, how many children this call cancelled or
    set cancelling): 0 for a repeat, or a sweep with nothing left to cancel."""
    sweep = get_sweep(session, tenant_id, sweep_id, lock=True)  # one sweep cancel at a time
    # Children already cancelling were told when they were set so: nothing to do for them.
    movable = [job.id for job in sweeps_repo.sweep_children(session, sweep.id)
               if job.status in (JobStatus.queued, JobStatus.running)]
    return sweep, cancel_active(session, settings, tenant_id, movable)


def delete_sweep(session: Session, store: ObjectStore, tenant_id: str, sweep_id: str) -> None:
    """Remove a sweep and every child job, each as ``DELETE /v1/jobs/{id}`` removes one (its
    rows now, its objects after the commit), in one transaction. 404 for another tenant's
    sweep; 409 naming the children still active, with nothing deleted (an ended job never
    becomes active again, so the check cannot go stale)."""
    sweep = get_sweep(session, tenant_id, sweep_id, lock=True)  # a second delete waits, then 404s
    children = sweeps_repo.sweep_children(session, sweep.id)
    active = [job for job in children if not JobStatus(job.status).terminal]
    if active:
        named = ", ".join(f"{job.id} ({JobStatus(job.status).value})" for job in active)
        raise Conflict(f"sweep {sweep_id} has {len(active)} active job(s): {named}; cancel the "
                       f"sweep (POST /v1/sweeps/{sweep_id}/cancel, `drtrain sweeps cancel ID`) "
                       "and delete it once they have ended")
    for job in children:
        retention.delete_job(session, store, tenant_id, job.id)
    session.delete(sweep)
    session.flush()


def _numbers(result: dict[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a result, nested keys joined with dots."""
    out: dict[str, float] = {}
    for key, value in (result or {}).items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def final_metrics(result: dict[str, Any] | None) -> dict[str, float]:
    """The metrics worth averaging. The worker's result keeps them under "metrics" (next to
    bookkeeping such as model sizes); other results contribute all their numeric leaves."""
    if result and isinstance(result.get("metrics"), dict):
        out = _numbers(result["metrics"])
        out.update(_numbers({k: result[k] for k in ("wall_seconds",) if k in result}))
        return out
    return _numbers(result)


def summarise(children: list[Job]) -> list[SummaryRow]:
    """Per grid point with seeds pooled: mean, sample std (0 for one run) and number of runs
    of every final metric over the succeeded children."""
    groups: dict[str, list[Job]] = defaultdict(list)
    for job in children:
        point = {k: v for k, v in (job.grid_point or {}).items() if k != "seed"}
        groups[json.dumps(point, sort_keys=True)].append(job)
    rows = []
    for key, jobs in groups.items():
        done = [j for j in jobs if j.status == JobStatus.succeeded]
        values: dict[str, list[float]] = defaultdict(list)
        for job in done:
            for name, value in final_metrics(job.result).items():
                values[name].append(value)
        metrics = {name: MetricSummary(mean=_mean(v), std=_std(v), n=len(v))
                   for name, v in values.items()}
        rows.append(SummaryRow(point=json.loads(key), n=len(jobs), n_done=len(done),
                               metrics=metrics))
    return rows


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _std(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    m = _mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def sweep_view(session: Session, sweep: Sweep) -> SweepOut:
    children = sweeps_repo.sweep_children(session, sweep.id)
    return SweepOut(
        id=sweep.id, base=sweep.base, grid=sweep.grid, created_at=sweep.created_at,
        children=[SweepChild(job_id=j.id, grid_point=j.grid_point or {}, status=j.status,
                             result=j.result) for j in children],
        summary=summarise(children))


def list_sweeps(session: Session, tenant_id: str, page_size: int,
                page_token: str | None) -> SweepList:
    rows, token = sweeps_repo.list_sweeps(session, tenant_id, page_size=page_size,
                                          page_token=page_token)
    counts = sweeps_repo.child_status_counts(session, [s.id for s in rows])
    return SweepList(items=[SweepListItem(id=s.id, grid=s.grid, created_at=s.created_at,
                                          n_children=sum(counts[s.id].values()),
                                          children_by_status=counts[s.id]) for s in rows],
                     next_page_token=token)
