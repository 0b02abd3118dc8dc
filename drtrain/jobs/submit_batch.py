"""Group commit of plain submits (issue 12): many ``POST /v1/jobs`` without an
Idempotency-Key in one transaction, one commit and one publish batch.

A submit alone spends most of its time on what every transaction costs (a thread hop, a
session, the flush, the tenant's lock, the commit, a broker round trip). ``SubmitBatcher``
runs on one thread of its own and takes every submit waiting when it is free, so under load
those costs are paid once per batch; a lone submit is a batch of one.

Each submission gets what ``service.submit_job`` would do for it (the same checks, the same
rows, its message published only after the commit), or nothing at all (``job`` stays None):
then its caller answers it through the ordinary per-request path, which gives every refusal
(a dataset error, the cap, the quota, a database error) exactly as it always has.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs import repository as jobs_repo
from drtrain.jobs import service
from drtrain.jobs.spec import JobSpec
from drtrain.kit.errors import DomainError
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

MAX_BATCH = 64
# The thread ends after this long without work (and starts again with the next submit).
IDLE_SECONDS = 5.0


@dataclass(eq=False, slots=True)
class Submission:
    factory: sessionmaker[Session]
    settings: Settings
    tenant_id: str
    spec: JobSpec
    token: Any = None  # the caller's, handed back with the result
    # The new job's columns (service.answer_view) once committed and published; None: the
    # ordinary path answers.
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


def commit_batch(subs: list[Submission]) -> None:
    """One transaction for submissions sharing a sessionmaker and settings, then one publish
    for the jobs it committed. Anything failing before the commit keeps no job (``job`` None
    for all: each goes the ordinary way); a failing commit may have committed, so it is
    every accepted submission's ``error``, as it would have been its request's."""
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
            return
        try:
            session.commit()
        except BaseException as exc:  # answered as the route's commit error would be
            for sub in accepted:
                sub.job = None
                sub.error = exc if isinstance(exc, Exception) else RuntimeError("interrupted")
            session.rollback()
            if not isinstance(exc, Exception):
                raise
            return
    finally:
        session.close()
    if accepted:
        service.publish_jobs(settings, [sub.job["id"] for sub in accepted if sub.job is not None])


class SubmitBatcher:
    """Commits submissions in batches on one thread; ``deliver(batch)`` is called (on that
    thread) once each submission of the batch has its answer."""

    def __init__(self, deliver: Callable[[list[Submission]], None], *,
                 max_batch: int = MAX_BATCH, idle_seconds: float = IDLE_SECONDS) -> None:
        self.deliver = deliver
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self._pending: list[Submission] = []
        self._ready = threading.Condition()
        self._running = False

    def submit(self, sub: Submission) -> None:
        with self._ready:
            self._pending.append(sub)
            if self._running:
                self._ready.notify()
                return
            self._running = True
        threading.Thread(target=self._loop, name="submit-batcher", daemon=True).start()

    def _take(self) -> list[Submission] | None:
        with self._ready:
            if not self._pending:
                self._ready.wait(self.idle_seconds)
                if not self._pending:
                    self._running = False
                    return None
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            try:
                groups: dict[tuple[int, int], list[Submission]] = {}
                for sub in batch:
                    groups.setdefault((id(sub.factory), id(sub.settings)), []).append(sub)
                for group in groups.values():
                    commit_batch(group)
            except Exception:  # noqa: BLE001 - never leave a caller waiting
                log.exception("submit batch failed")
            finally:
                try:
                    self.deliver(batch)
                except Exception:  # noqa: BLE001
                    log.exception("delivering submit results failed")
