"""Submitting jobs: the one path every ``POST /v1/jobs`` takes, committed in batches
(``drtrain.kit.group_commit``): the route's submit is a batch of one, or of as many as wait
alongside it.

``add_jobs`` decides each submission's outcome in one place: a replay of its
Idempotency-Key, a refusal (the dataset checks, the storage quota, a full queue, a key reused
with another body), or a new queued job, given a running slot or waiting for one
(``drtrain.jobs.queue``). ``commit_submissions`` commits a batch and returns the jobs to
publish; their messages go out only after the commit, on the publishing thread.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs import queue, service
from drtrain.jobs import repository as q
from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.errors import Conflict, DomainError, Invalid, TooManyJobs
from drtrain.kit.models import Job
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Submission:
    factory: sessionmaker[Session]
    settings: Settings
    tenant_id: str
    spec: JobSpec
    idempotency_key: str | None = None
    token: Any = None  # the caller's, handed back with the outcome
    # The outcome: the job's columns (new, or the replayed one's), else the error to answer.
    job: dict[str, Any] | None = None
    created: bool = False
    error: Exception | None = None
    # Its key is new to the database but another submission of this batch carries it too:
    # a replay of that one's job, read once the batch has committed.
    replays_batch: bool = False

    def refuse(self, error: Exception) -> None:
        self.job, self.created, self.error = None, False, error

    def reset(self) -> None:
        self.job, self.created, self.error, self.replays_batch = None, False, None, False


def _columns(job: Job) -> dict[str, Any]:
    return {column.key: getattr(job, column.key) for column in Job.__table__.columns}


def _replay(sub: Submission, job: Job, spec: JobSpec) -> None:
    if job.request_hash != service.request_hash(spec_to_dict(spec)):
        sub.refuse(Invalid("Idempotency-Key was already used with a different request body",
                           errors=[{"loc": ["header", "Idempotency-Key"],
                                    "msg": "key reused with another body",
                                    "type": "value_error"}]))
    else:
        sub.job, sub.created = _columns(job), False


Checked = tuple[Submission, JobSpec, service.DatasetFacts]


def _check(session: Session, settings: Settings, subs: list[Submission],
           ) -> dict[str, list[Checked]]:
    """Replays answered and refusals made; the rest, by tenant, ready to insert."""
    checked: dict[str, list[Checked]] = {}
    seen: service.FactsSeen = {}  # most of a batch names the same few datasets
    keys_in_batch: set[tuple[str, str]] = set()
    for sub in subs:
        spec = service.with_server_defaults(sub.spec, settings)
        key = sub.idempotency_key
        if key:
            existing = q.find_by_idempotency_key(session, sub.tenant_id, key)
            if existing is not None:
                _replay(sub, existing, spec)
                continue
            if (sub.tenant_id, key) in keys_in_batch:
                sub.replays_batch = True
                continue
            keys_in_batch.add((sub.tenant_id, key))
        try:
            facts = service.check_against_dataset(session, settings, sub.tenant_id, spec,
                                                  seen=seen)
        except DomainError as exc:
            sub.refuse(exc)
            continue
        checked.setdefault(sub.tenant_id, []).append((sub, spec, facts))
    return checked


def add_jobs(session: Session, settings: Settings, subs: list[Submission]) -> list[str]:
    """Settles each submission's outcome and adds the new jobs (not yet committed, nor
    published); returns the jobs to publish once committed: those given a running slot, new
    ones and waiting ones alike (``drtrain.jobs.queue``).

    Each tenant's lock is taken, sorted by tenant, before its jobs are added (as a sweep
    takes it), and held until the commit: the counts it reads are every job committed before,
    so handing out only the free slots and queue places cannot overshoot either limit. A
    tenant's waiting jobs get free slots before its new ones: its queue stays in order."""
    to_publish: list[str] = []
    plain_rows: list[dict[str, Any]] = []
    for tenant_id, checked in sorted(_check(session, settings, subs).items()):
        try:
            slots = service.locked_slots(session, settings, tenant_id)
        except DomainError as exc:  # the storage quota
            for sub, _, _ in checked:
                sub.refuse(exc)
            continue
        free = settings.max_concurrent_jobs_per_tenant - slots.dispatched
        promoted = queue.dispatch_oldest(session, tenant_id, min(free, slots.waiting))
        to_publish += promoted
        places = _Places(free - len(promoted), settings.max_queued_jobs_per_tenant
                         - slots.waiting + len(promoted))
        deleted = service.deleted_datasets(session, tenant_id, [spec for _, spec, _ in checked])
        for sub, spec, facts in checked:
            try:
                service.check_not_deleted(spec, deleted)
            except DomainError as exc:
                sub.refuse(exc)
                continue
            dispatched = places.slot_free()
            if not dispatched and not places.queue_free():
                sub.refuse(_queue_full(settings))
                continue
            row = service.job_row(settings, tenant_id, spec, facts=facts,
                                  idempotency_key=sub.idempotency_key, dispatched=dispatched)
            if sub.idempotency_key and not _insert_keyed(session, row):
                existing = q.find_by_idempotency_key(session, tenant_id, sub.idempotency_key)
                if existing is None:
                    raise RuntimeError("an Idempotency-Key collided with no stored job")
                _replay(sub, existing, spec)  # a concurrent submit with this key won
                continue
            places.take(dispatched)  # a submission that turned out a replay takes no place
            if not sub.idempotency_key:
                plain_rows.append(row)
            sub.job, sub.created = service.answer_view(row), True
            if dispatched:
                to_publish.append(row["id"])
    if plain_rows:
        q.insert_jobs(session, plain_rows)
    return to_publish


@dataclass(slots=True)
class _Places:
    """What is left of a tenant's running slots and queue places in this batch."""

    slots: int
    queue: int

    def slot_free(self) -> bool:
        return self.slots > 0

    def queue_free(self) -> bool:
        return self.queue > 0

    def take(self, dispatched: bool) -> None:
        if dispatched:
            self.slots -= 1
        else:
            self.queue -= 1


def _queue_full(settings: Settings) -> TooManyJobs:
    return TooManyJobs(f"at most {settings.max_concurrent_jobs_per_tenant} running and "
                       f"{settings.max_queued_jobs_per_tenant} queued jobs per tenant; this "
                       "tenant's queue is full",
                       headers={"Retry-After": str(service.RETRY_AFTER_SECONDS)})


def _insert_keyed(session: Session, row: dict[str, Any]) -> bool:
    """Inserts a job carrying an Idempotency-Key in a savepoint of its own; False when another
    transaction committed the same key first (the unique index refuses it)."""
    try:
        with session.begin_nested():
            q.insert_jobs(session, [row])
    except IntegrityError:
        return False
    return True


def commit_submissions(batch: list[Submission]) -> list[tuple[Settings, list[str]]]:
    """Commits a batch (one transaction per sessionmaker and settings) and settles every
    submission's outcome; returns the committed jobs to publish."""
    groups: dict[tuple[int, int], list[Submission]] = {}
    for sub in batch:
        groups.setdefault((id(sub.factory), id(sub.settings)), []).append(sub)
    done = []
    for group in groups.values():
        job_ids = _commit_apart_on_error(group)
        if job_ids:
            done.append((group[0].settings, job_ids))
    return done


def _commit_apart_on_error(subs: list[Submission]) -> list[str]:
    """``_commit``; a batch that fails before its commit is tried again one submission at a
    time, so one submission's error is never another's. (``_commit`` raises only before its
    commit: nothing is committed twice.)"""
    try:
        return _commit(subs)
    except Exception as exc:  # noqa: BLE001 - the submission's own error, if it is alone
        if len(subs) == 1:
            subs[0].refuse(exc)
            return []
        log.warning("a batch of %d submits failed; each is tried alone", len(subs),
                    exc_info=True)
    return [job_id for sub in subs for job_id in _commit_apart_on_error([sub])]


def _commit(subs: list[Submission]) -> list[str]:
    """One transaction for ``subs``; raises only before its commit. A failing commit may
    have committed: it is every accepted submission's error (a 500), never a retry."""
    for sub in subs:
        sub.reset()
    session = subs[0].factory()
    try:
        to_publish = add_jobs(session, subs[0].settings, subs)
        try:
            session.commit()
        except Exception as exc:  # noqa: BLE001 - answered, never retried
            for sub in [*(s for s in subs if s.created), *(s for s in subs if s.replays_batch)]:
                sub.refuse(exc)
            return []
    finally:
        session.close()
    _settle_batch_replays(subs)
    return to_publish


def _settle_batch_replays(subs: list[Submission]) -> None:
    """The submissions repeating a key another of the batch carried: that one's job, read
    after the commit (each its own error if the read fails: the batch stays committed)."""
    for sub in subs:
        if not (sub.replays_batch and sub.idempotency_key):
            continue
        try:
            with sub.factory() as session:
                existing = q.find_by_idempotency_key(session, sub.tenant_id,
                                                     sub.idempotency_key)
                if existing is None:  # the submission that carried the key was refused
                    sub.refuse(Conflict("a request with this Idempotency-Key was refused at "
                                        "the same moment; send it again"))
                else:
                    _replay(sub, existing, service.with_server_defaults(sub.spec,
                                                                        sub.settings))
        except Exception as exc:  # noqa: BLE001 - this submission's 500, nobody else's
            sub.refuse(exc)
