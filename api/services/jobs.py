"""Job logic: submit (with idempotency and a per-tenant cap), cancel, the final model, predict.

Every status change here is a conditional UPDATE on the status it expects, so a worker
moving the same job concurrently can never be overwritten (the loser sees rowcount 0).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.db import after_commit, discard_after_commit
from api.errors import Conflict, Invalid, NotFound, RangeNotSatisfiable, TooManyJobs
from api.models import Checkpoint, Dataset, Job, JobStatus, Tenant, utcnow
from api.predict import ModelFormatError, model_cache
from api.schemas.jobs import MAX_PARAMETERS, JobOut, JobSpec, MetricPointOut, spec_to_dict
from api.services import job_queries as q
from api.settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
SSE_BATCH = 1000


def request_hash(spec_dict: dict[str, Any]) -> str:
    canonical = json.dumps(spec_dict, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _publish(settings: Settings, job_id: str) -> None:
    # Imported late: the broker module pulls in Celery, which request-free code paths
    # (and unit tests of this module) do not need.
    from api.broker import publish_run_job

    try:
        publish_run_job(settings, job_id)
    except Exception:  # noqa: BLE001
        # The row is already committed as queued and the reaper re-publishes queued jobs,
        # so a broker outage must not turn an accepted submission into a 500.
        log.warning("publishing job %s failed; the reaper will retry", job_id, exc_info=True)


@dataclass(frozen=True)
class DatasetFacts:
    n_features: int
    n_classes: int
    feature_range: tuple[float, float]


def dataset_facts(session: Session, settings: Settings, tenant_id: str,
                  dataset_id: str) -> DatasetFacts | None:
    """What a spec must agree with; None when the tenant cannot use that dataset."""
    if dataset_id.startswith("builtin:"):
        from api.builtins import builtin_facts  # reads files: only when a builtin is named

        summary = builtin_facts(dataset_id, settings)
        if summary is None:
            return None
        lo, hi = summary.feature_range
        return DatasetFacts(summary.n_features, summary.n_classes, (float(lo), float(hi)))
    ds = session.scalars(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    ).one_or_none()
    if ds is None:
        return None
    lo, hi = ds.feature_range
    return DatasetFacts(ds.n_features, ds.n_classes, (float(lo), float(hi)))


def _invalid(loc: list[str | int], msg: str) -> Invalid:
    return Invalid(f"{'.'.join(map(str, loc))}: {msg}",
                   errors=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def check_against_dataset(session: Session, settings: Settings, tenant_id: str,
                          spec: JobSpec, loc: tuple[str | int, ...] = ()) -> None:
    """The checks a spec's schema cannot make alone (it needs the dataset): 422 each."""
    facts = dataset_facts(session, settings, tenant_id, spec.dataset_id)
    if facts is None:
        raise _invalid([*loc, "dataset_id"], f"dataset {spec.dataset_id!r} does not exist")
    if spec.test_dataset_id is not None:
        test = dataset_facts(session, settings, tenant_id, spec.test_dataset_id)
        if test is None:
            raise _invalid([*loc, "test_dataset_id"],
                           f"dataset {spec.test_dataset_id!r} does not exist")
        if test.n_features != facts.n_features:
            raise _invalid([*loc, "test_dataset_id"],
                           f"has {test.n_features} features, the training set {facts.n_features}")
    lo, hi = facts.feature_range
    if spec.model.visible_units == "bernoulli" and (lo < 0.0 or hi > 1.0):
        raise _invalid([*loc, "model", "visible_units"],
                       f"bernoulli visible units need data in [0, 1]; this dataset spans [{lo}, {hi}]")
    n_params = spec.parameter_count(facts.n_features, facts.n_classes)
    if n_params > MAX_PARAMETERS:
        raise _invalid([*loc, "model", "hidden_layers"],
                       f"{n_params} parameters for {facts.n_features} features exceeds {MAX_PARAMETERS}")


def with_server_defaults(spec: JobSpec, settings: Settings) -> JobSpec:
    """The spec with the fields whose default is the server's setting filled in."""
    if spec.max_attempts is None:
        return spec.model_copy(update={"max_attempts": settings.max_attempts})
    return spec


def new_job(session: Session, settings: Settings, tenant_id: str, spec: JobSpec, *,
            idempotency_key: str | None = None, sweep_id: str | None = None,
            grid_point: dict[str, Any] | None = None) -> Job:
    """Add a queued job and schedule its message for after the commit that makes it durable."""
    spec = with_server_defaults(spec, settings)
    spec_dict = spec_to_dict(spec)
    job = Job(tenant_id=tenant_id, dataset_id=spec.dataset_id, test_dataset_id=spec.test_dataset_id,
              spec=spec_dict, idempotency_key=idempotency_key, request_hash=request_hash(spec_dict),
              status=JobStatus.queued, max_attempts=spec.max_attempts, attempt=1,
              sweep_id=sweep_id, grid_point=grid_point)
    session.add(job)
    after_commit(session, lambda: _publish(settings, job.id))
    return job


def lock_tenant(session: Session, tenant_id: str) -> None:
    # Serialises concurrent submits of one tenant so the active-job cap cannot be overshot
    # (FOR UPDATE is a no-op on SQLite, whose writers are serial anyway).
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def submit_job(session: Session, settings: Settings, tenant_id: str, spec: JobSpec,
               idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Returns (job, created). A replay with the same key and body returns the original."""
    spec = with_server_defaults(spec, settings)
    digest = request_hash(spec_to_dict(spec))
    if idempotency_key:
        existing = q.find_by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, digest), False
    check_against_dataset(session, settings, tenant_id, spec)
    lock_tenant(session, tenant_id)
    if q.count_active(session, tenant_id) >= settings.max_concurrent_jobs_per_tenant:
        raise TooManyJobs(
            f"at most {settings.max_concurrent_jobs_per_tenant} active jobs per tenant",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    try:
        with session.begin_nested():
            job = new_job(session, settings, tenant_id, spec, idempotency_key=idempotency_key)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same key won the insert; answer as a replay.
        discard_after_commit(session)  # the losing insert's publish must not run
        existing = q.find_by_idempotency_key(session, tenant_id, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, digest), False
    return job, True


def _replay(job: Job, digest: str) -> Job:
    if job.request_hash != digest:
        raise Invalid("Idempotency-Key was already used with a different request body",
                      errors=[{"loc": ["header", "Idempotency-Key"],
                               "msg": "key reused with another body", "type": "value_error"}])
    return job


def _transition(session: Session, job_id: str, expected: str, **values: Any) -> bool:
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == expected)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """queued -> cancelled now; running -> cancelling (the worker stops within a batch);
    cancelling -> no-op; terminal -> 409. One retry if the worker moved the job meanwhile."""
    for _ in range(2):
        job = q.get_job(session, tenant_id, job_id, fresh=True)
        status = JobStatus(job.status)
        if status is JobStatus.cancelling:
            return job
        if status.terminal:
            raise Conflict(f"job {job_id} is already {status.value}")
        if status is JobStatus.queued:
            moved = _transition(session, job_id, "queued", status=JobStatus.cancelled.value,
                                finished_at=utcnow(), status_reason="cancelled by user",
                                cancel_requested=True)
        else:
            moved = _transition(session, job_id, "running", status=JobStatus.cancelling.value,
                                cancel_requested=True)
        if moved:
            return q.get_job(session, tenant_id, job_id, fresh=True)
    raise Conflict(f"job {job_id} changed state concurrently; try again")


def final_model(session: Session, tenant_id: str, job_id: str) -> Checkpoint:
    """The job's final checkpoint row; 409 while the job has not succeeded."""
    job = q.get_job(session, tenant_id, job_id)
    if job.status != JobStatus.succeeded:
        raise Conflict(f"job {job_id} is {job.status}; the model exists once it has succeeded")
    ck = q.final_checkpoint(session, job_id)
    if ck is None:
        raise NotFound(f"job {job_id} has no final model")
    return ck


def read_object(store: Any, key: str, size: int) -> bytes:
    return b"".join(store.iter_range(key, 0, size - 1)) if size else b""


def predict(session: Session, store: Any, tenant_id: str, job_id: str,
            inputs: list[list[float]]) -> tuple[list[str], list[list[float]]]:
    ck = final_model(session, tenant_id, job_id)
    try:
        model = model_cache.get(ck.sha256, lambda: read_object(store, ck.object_key, ck.size_bytes))
    except ModelFormatError as exc:
        raise Conflict(f"cannot predict with this model: {exc}") from exc
    widths = {len(row) for row in inputs}
    if widths != {model.n_features}:
        raise Invalid(f"every input row needs {model.n_features} values, got widths {sorted(widths)}",
                      errors=[{"loc": ["body", "inputs"], "msg": "wrong row width",
                               "type": "value_error"}])
    x = np.asarray(inputs, dtype=np.float64)
    if not np.isfinite(x).all():
        raise Invalid("inputs must be finite numbers",
                      errors=[{"loc": ["body", "inputs"], "msg": "non-finite value",
                               "type": "value_error"}])
    labels, probs = model.predict(x)
    return labels, probs.tolist()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b | a- | -n`` -> inclusive (start, end), or None for the whole file.

    A header this server does not understand (other unit, several ranges, bad syntax) is
    ignored as RFC 9110 allows; a well-formed range outside the file raises 416.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes="):].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return None
    if first and last and not (first.isdigit() and last.isdigit() and int(last) >= int(first)):
        return None  # "9-3" is invalid syntax, not an unsatisfiable range
    unsatisfiable = RangeNotSatisfiable(f"range {header!r} is outside the {size}-byte file",
                                        headers={"Content-Range": f"bytes */{size}"})
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise unsatisfiable
    return start, end


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _poll(factory: sessionmaker[Session], tenant_id: str, job_id: str,
          after_seq: int) -> tuple[str, bool, list[str], int, bool]:
    """One short-lived session per poll, so a long stream never holds a transaction open.

    Returns (job JSON, terminal, metric frames, last seq, more metrics pending)."""
    with factory() as session:
        job = q.get_job(session, tenant_id, job_id)
        points = q.metrics_since(session, job_id, after_seq, SSE_BATCH)
        frames = [_sse("metric", MetricPointOut.model_validate(p).model_dump_json(), p.seq)
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
            yield _sse("status", body)
        if sent:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= keepalive_interval:
            idle_since = time.monotonic()
            yield ": keep-alive\n\n"
        if terminal and not more:
            return
        if not more:
            await anyio.sleep(poll_interval)
