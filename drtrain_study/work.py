"""The study's jobs and sweeps, run to completion over HTTP with drtrain_client within the
tenant's caps; each finished job goes to its ``done`` with its metric points."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drtrain_client import Client
from drtrain_client.errors import DrtrainError

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Work:
    """A job, or a sweep over a grid of JobSpec paths; ``done`` gets each finished child job with
    its metric points (one call for a job, with point None; one per grid point for a sweep)."""

    key: Any
    spec: dict[str, Any]
    done: Callable[[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]]], None]
    grid: dict[str, list[Any]] | None = None
    job_ids: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # job id -> grid point
    sweep_id: str | None = None
    running: set[str] = field(default_factory=set)  # submitted, not yet handed to ``done``

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else 1


def run_all(client: Client, work: list[Work], log: Callable[[str], None], max_active: int = 8,
            max_sweep_active: int = 256, poll: float = 1.0) -> None:
    """Submit ``work`` in order, never more than the tenant's caps at once (``max_active`` for
    single jobs; a sweep is accepted while active jobs plus its children stay within
    ``max_sweep_active``), and hand each finished job to its ``done``. A 429 (cap reached)
    waits; anything else raises."""
    pending = list(work)
    active: list[Work] = []
    total, finished = sum(w.size for w in work), 0
    started = time.monotonic()
    while pending or active:
        while pending and _room(active, pending[0], max_active, max_sweep_active):
            if not _submit(client, pending[0]):
                break
            active.append(pending.pop(0))
        time.sleep(poll)
        for item in list(active):
            for job_id in _newly_ended(client, item):
                item.done(item.job_ids[job_id], dict(client.get_job(job_id)), client.metrics(job_id))
                finished += 1
                if finished % 10 == 0 or finished == total:
                    log(f"  {finished}/{total} jobs done ({(time.monotonic() - started) / 60:.1f} min)")
            if not item.running:
                active.remove(item)


def _room(active: list[Work], item: Work, max_active: int, max_sweep_active: int) -> bool:
    in_flight = sum(len(w.running) for w in active)
    return in_flight + item.size <= (max_sweep_active if item.grid else max_active)


def _newly_ended(client: Client, item: Work) -> list[str]:
    """Jobs of ``item`` that reached a terminal status since the last look: one sweep read
    covers all its children, so polling costs one request per sweep, not per job."""
    if item.sweep_id is None:
        statuses = {job_id: client.get_job(job_id)["status"] for job_id in item.running}
    else:
        statuses = {c["job_id"]: c["status"] for c in client.get_sweep(item.sweep_id)["children"]}
    ended = [job_id for job_id in item.running if statuses.get(job_id) in TERMINAL]
    item.running.difference_update(ended)
    return ended


def _submit(client: Client, item: Work) -> bool:
    try:
        if item.grid is None:
            item.job_ids[client.submit_job(item.spec)["id"]] = None
        else:
            sweep = client.create_sweep(item.spec, item.grid)
            item.sweep_id = sweep["id"]
            for child in sweep["children"]:
                item.job_ids[child["job_id"]] = dict(child["grid_point"])
    except DrtrainError as exc:
        if getattr(exc, "status", None) == 429:
            return False
        raise
    item.running = set(item.job_ids)
    return True
