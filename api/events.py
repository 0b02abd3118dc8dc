"""The job event stream (SSE): metric points and status changes, read in short sessions."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
from sqlalchemy.orm import Session, sessionmaker

from api.http import sse_frame
from api.schemas.jobs import JobOut, MetricPointOut
from drtrain.jobs import repository as q
from drtrain.kit.models import JobStatus

SSE_BATCH = 1000


def _poll(factory: sessionmaker[Session], tenant_id: str, job_id: str,
          after_seq: int) -> tuple[str, bool, list[str], int, bool]:
    """One short-lived session per poll, so a long stream never holds a transaction open.

    Returns (job JSON, terminal, metric frames, last seq, more metrics pending)."""
    with factory() as session:
        job = q.get_job(session, tenant_id, job_id)
        points = q.metrics_since(session, job_id, after_seq, SSE_BATCH)
        frames = [sse_frame("metric", MetricPointOut.model_validate(p).model_dump_json(), p.seq)
                  for p in points]
        last = points[-1].seq if points else after_seq
        body = JobOut.model_validate(job).model_dump_json()
        return body, JobStatus(job.status).terminal, frames, last, len(points) == SSE_BATCH


async def job_events(factory: sessionmaker[Session], tenant_id: str, job_id: str,
                     after_seq: int = 0, *, poll_interval: float = 0.5,
                     keepalive_interval: float = 15.0) -> AsyncIterator[str]:
    """SSE frames: metric points after ``after_seq`` (id = seq), a status frame whenever the
    job changes, keep-alive comments when idle; ends once a terminal status was sent."""
    last_status: str | None = None
    idle_since = time.monotonic()
    while True:
        body, terminal, frames, after_seq, more = await anyio.to_thread.run_sync(
            _poll, factory, tenant_id, job_id, after_seq)
        for frame in frames:
            yield frame
        sent = bool(frames)
        # While catching up on a backlog, hold the status back so a terminal one comes last.
        if body != last_status and not more:
            last_status, sent = body, True
            yield sse_frame("status", body)
        if sent:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= keepalive_interval:
            idle_since = time.monotonic()
            yield ": keep-alive\n\n"
        if terminal and not more:
            return
        if not more:
            await anyio.sleep(poll_interval)
