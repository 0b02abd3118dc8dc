"""Group commit of plain submits: many ``POST /v1/jobs`` without an
Idempotency-Key in one transaction, one commit and one publish batch.

A submit alone spends most of its time on what every transaction costs (a thread hop, a
session, the flush, the tenant's lock, the commit, a broker round trip). ``SubmitBatcher``
runs on one thread of its own and takes every submit waiting when it is free, so under load
those costs are paid once per batch; a lone submit is a batch of one.

Each submission gets what ``service.submit_job`` would do for it (the same checks, the same
rows, its message published only after the commit: here once it is answered, on a thread of
its own), or nothing at all (``job`` stays None): then its caller answers it through the
ordinary per-request path, which gives every refusal (a dataset error, the cap, the quota, a
database error) exactly as it always has.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs import repository as jobs_repo
from drtrain.jobs import service
from drtrain.jobs.spec import JobSpec
from drtrain.kit.batching import BatchThread
from drtrain.kit.errors import DomainError
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

# Publishes committed jobs (drtrain.jobs.publishing.ChildPublisher, or service.publish_jobs).
Publish = Callable[[Settings, list[str]], None]

MAX_BATCH = 64
# Committed batches waiting for the broker beyond this hold the next commit back (memory
# stays bounded when the broker is slower than the submits).
MAX_BATCHES_UNPUBLISHED = 256
# The thread ends after this long without work (and starts again with the next submit).
IDLE_SECONDS = 5.0


@dataclass(eq=False, slots=True)
class Submission:
    factory: sessionmaker[Session]
    settings: Settings
    tenant_id: str
    spec: JobSpec
    token: Any = None  # the caller's, handed back with the result
    # The new job's columns (service.answer_view) once committed; None: the ordinary path
    # answers.
    job: dict[str, Any] | None = None
    error: Exception | None = None  # the commit failed (and may have committed): a 500


def add_jobs(session: Session, settings: Settings, subs: list[Submission]) -> list[Submission]:
    """Adds the jobs of the submissions that ``service.submit_job`` would accept, without
    publishing them, and returns those (their ``job`` set). The others are left out whole:
    any refusal is for the ordinary path to give.

    Each tenant's lock is taken, sorted by tenant, before its jobs are added (as a sweep
    takes it), and held until the commit: the count it reads is every active job committed
    before, so accepting only as many as the cap leaves room for cannot overshoot it."""
    checked: dict[str, list[tuple[Submission, JobSpec, service.DatasetFacts]]] = {}
    seen: service.FactsSeen = {}  # most of a batch names the same few datasets
    for sub in subs:
        spec = service.with_server_defaults(sub.spec, settings)
        try:
            facts = service.check_against_dataset(session, settings, sub.tenant_id, spec,
                                                  seen=seen)
        except DomainError:
            continue
        checked.setdefault(sub.tenant_id, []).append((sub, spec, facts))
    accepted, rows = [], []
    for tenant_id in sorted(checked):
        try:
            active = service.locked_active_jobs(session, settings, tenant_id)
        except DomainError:  # the quota
            continue
        room = settings.max_concurrent_jobs_per_tenant - active
        for sub, spec, facts in checked[tenant_id][:max(room, 0)]:
            row = service.job_row(settings, tenant_id, spec, facts=facts)
            rows.append(row)
            sub.job = service.answer_view(row)
            accepted.append(sub)
    if rows:
        jobs_repo.insert_jobs(session, rows)
    return accepted


def commit_jobs(subs: list[Submission]) -> list[str]:
    """One transaction for submissions sharing a sessionmaker and settings; returns the ids
    of the jobs it committed, to publish. Anything failing before the commit keeps no job
    (``job`` None for all: each goes the ordinary way); a failing commit may have committed,
    so it is every accepted submission's ``error``, as it would have been its request's."""
    settings = subs[0].settings
    session = subs[0].factory()
    try:
        try:
            accepted = add_jobs(session, settings, subs)
        except BaseException as exc:  # each goes its own way and meets the error there
            for sub in subs:
                sub.job = None
            session.rollback()
            if not isinstance(exc, Exception):
                raise
            log.warning("a batch of %d submits failed; each goes the ordinary way", len(subs),
                        exc_info=True)
            return []
        try:
            session.commit()
        except BaseException as exc:  # answered as the route's commit error would be
            for sub in accepted:
                sub.job = None
                sub.error = exc if isinstance(exc, Exception) else RuntimeError("interrupted")
            session.rollback()
            if not isinstance(exc, Exception):
                raise
            return []
    finally:
        session.close()
    return [sub.job["id"] for sub in accepted if sub.job is not None]


class SubmitBatcher:
    """Commits submissions in batches on one thread; ``deliver(batch)`` is called (on that
    thread) once each submission of the batch has its answer. The committed jobs are
    published after that, on a second thread, so the next batch need not wait for the
    broker; ``drain`` waits for all of it (an app shutting down)."""

    def __init__(self, deliver: Callable[[list[Submission]], None], *,
                 publish: Publish | None = None, max_batch: int = MAX_BATCH,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.deliver = deliver
        self.publish = publish  # None: service.publish_jobs, here
        self._commits: BatchThread[Submission] = BatchThread(
            self._commit_and_answer, name="submit-batcher", idle_seconds=idle_seconds,
            max_batch=max_batch)
        self._publishes: BatchThread[tuple[Settings, list[str]]] = BatchThread(
            self._publish, name="submit-publisher", idle_seconds=idle_seconds,
            max_pending=MAX_BATCHES_UNPUBLISHED)

    def submit(self, sub: Submission) -> None:
        self._commits.put(sub)

    def drain(self, timeout: float) -> bool:
        """Waits until every submission handed in is answered and its job published; False
        if that took longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return (self._commits.drain(timeout)
                and self._publishes.drain(max(0.0, deadline - time.monotonic())))

    def _commit_and_answer(self, batch: list[Submission]) -> None:
        committed: list[tuple[Settings, list[str]]] = []
        try:
            groups: dict[tuple[int, int], list[Submission]] = {}
            for sub in batch:
                groups.setdefault((id(sub.factory), id(sub.settings)), []).append(sub)
            for group in groups.values():
                committed.append((group[0].settings, commit_jobs(group)))
        except Exception:  # noqa: BLE001 - never leave a caller waiting
            log.exception("submit batch failed")
        finally:
            try:
                self.deliver(batch)
            except Exception:  # noqa: BLE001
                log.exception("delivering submit results failed")
        # Published once answered: what the answer says is settled by the commit (a publish
        # that fails leaves the job queued for the reaper, and the answer is the same 202).
        for settings, job_ids in committed:
            if job_ids:
                self._publishes.put((settings, job_ids))

    def _publish(self, batches: list[tuple[Settings, list[str]]]) -> None:
        """The jobs of every batch committed since the last publish, together per settings."""
        together: dict[int, tuple[Settings, list[str]]] = {}
        for settings, job_ids in batches:
            together.setdefault(id(settings), (settings, []))[1].extend(job_ids)
        publish = self.publish or service.publish_jobs
        for settings, job_ids in together.values():
            publish(settings, job_ids)
