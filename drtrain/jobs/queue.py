"""Each tenant's queue: a running cap, and a bounded line of jobs waiting behind it.

A tenant has at most ``max_concurrent_jobs_per_tenant`` jobs *dispatched* (sent to the
workers: running, cancelling, or queued in the broker). Its other queued jobs wait here, in
the order they were submitted, with ``dispatched_at`` null, up to
``max_queued_jobs_per_tenant`` of them (a submit past that answers 429). Each tenant's slots
are its own, so no tenant's backlog delays another's jobs by more than the cap; when several
tenants' slots free at once (``refill_all``), their jobs go to the broker in turn, one per
tenant.

A waiting job is dispatched exactly once: under the tenant's submit lock the free slots are
counted and that many waiting jobs, oldest first, are marked by a conditional UPDATE that
only a still-waiting job matches. The caller publishes the jobs the UPDATE returned, after
its commit; a lost message is the reaper's to re-send, as for any queued job.

Slots are given back wherever a dispatched job ends (the worker, a cancel, the reaper),
and the reaper's round refills every tenant with room, so a raised cap, or an ending whose
refill was lost with its process, is caught up within a round.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import chain, zip_longest

from sqlalchemy import BindParameter, Integer, and_, bindparam, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs.repository import get_job
from drtrain.kit.db import after_commit, session_scope
from drtrain.kit.models import ACTIVE_STATUSES, WAITING_SQL, Job, TenantUsage, utcnow
from drtrain.kit.publishing import publish_jobs
from drtrain.kit.settings import Settings
from drtrain.tenants.repository import lock_tenant

_ACTIVE = [s.value for s in ACTIVE_STATUSES]
_WAITING = text(WAITING_SQL)
_TENANT: BindParameter[str] = bindparam("tenant_id")

_DISPATCHED = (select(func.count()).select_from(Job)
               .where(Job.tenant_id == _TENANT, Job.status.in_(_ACTIVE),
                      Job.dispatched_at.is_not(None)))
_WAITING_COUNT = select(func.count()).select_from(Job).where(Job.tenant_id == _TENANT, _WAITING)
_COUNTS = select(_DISPATCHED.scalar_subquery(), _WAITING_COUNT.scalar_subquery(),
                 select(TenantUsage.storage_bytes).where(TenantUsage.tenant_id == _TENANT)
                 .scalar_subquery())
_OLDEST_WAITING = (select(Job.id).where(Job.tenant_id == _TENANT, _WAITING)
                   .order_by(Job.created_at, Job.id).limit(bindparam("n", type_=Integer)))


@dataclass(frozen=True)
class Slots:
    """A tenant's jobs as its limits count them, and its counted storage bytes."""

    dispatched: int
    waiting: int
    stored: int


def locked_slots(session: Session, tenant_id: str) -> Slots:
    """Takes the tenant's submit lock (held until the transaction ends) and reads its counts,
    this transaction's own writes included: what the caller decides on cannot change before
    it commits."""
    lock_tenant(session, tenant_id)
    dispatched, waiting, stored = session.connection().execute(
        _COUNTS, {"tenant_id": tenant_id}).one()
    return Slots(int(dispatched or 0), int(waiting or 0), int(stored or 0))


def dispatch_oldest(session: Session, tenant_id: str, n: int,
                    now: datetime | None = None) -> list[str]:
    """Gives ``n`` free slots to the tenant's oldest waiting jobs (the caller holds the
    tenant's lock and counted the slots); returns those it marked, in queue order."""
    if n <= 0:
        return []
    ids = list(session.execute(_OLDEST_WAITING, {"tenant_id": tenant_id, "n": n}).scalars())
    if not ids:
        return []
    now = now or utcnow()
    # Only a job still waiting matches: one cancelled meanwhile is skipped, never revived.
    marked = set(session.execute(
        update(Job).where(Job.id.in_(ids), _WAITING)
        .values(dispatched_at=now, updated_at=now)
        .returning(Job.id).execution_options(synchronize_session=False)).scalars())
    return [job_id for job_id in ids if job_id in marked]


def refill(session: Session, settings: Settings, tenant_id: str) -> list[str]:
    """Dispatches as many of the tenant's waiting jobs as it has free slots."""
    slots = locked_slots(session, tenant_id)
    return dispatch_oldest(session, tenant_id,
                           settings.max_concurrent_jobs_per_tenant - slots.dispatched)


_WAITING_TENANTS = select(Job.tenant_id).where(_WAITING).distinct()


def refill_all(session: Session, settings: Settings) -> list[str]:
    """Every tenant with waiting jobs refilled; the jobs in turn, one per tenant, so the
    broker serves tenants alike when many slots free at once."""
    tenants = sorted(session.execute(_WAITING_TENANTS).scalars())
    per_tenant = [refill(session, settings, tenant_id) for tenant_id in tenants]
    return [job_id for job_id in chain.from_iterable(zip_longest(*per_tenant)) if job_id]


def pass_on_slots(session: Session, settings: Settings, tenant_id: str) -> list[str]:
    """``refill``, the jobs it dispatched published once ``session`` has committed: for the
    places where a dispatched job ends."""
    dispatched = refill(session, settings, tenant_id)
    publish_after_commit(session, settings, dispatched)
    return dispatched


def publish_after_commit(session: Session, settings: Settings, job_ids: list[str]) -> None:
    """The messages of jobs this transaction dispatched, sent once it has committed."""
    if job_ids:
        after_commit(session, lambda: publish_jobs(settings, job_ids))


def refill_and_publish(factory: sessionmaker[Session], settings: Settings,
                       tenant_id: str) -> list[str]:
    """``pass_on_slots`` in a transaction of its own."""
    with session_scope(factory) as session:
        return pass_on_slots(session, settings, tenant_id)


@dataclass(frozen=True)
class QueueView:
    dispatched: int
    waiting: int
    job_ids: list[str]  # the first waiting jobs, in dispatch order
    position: int | None = None  # of the job asked about (1 = next), None if not waiting


def queue_view(session: Session, tenant_id: str, limit: int,
               job_id: str | None = None) -> QueueView:
    """The tenant's queue as it stands: its counts, the next ``limit`` waiting jobs, and with
    ``job_id`` that job's place (None when it is not waiting; NotFound when it is not one of
    the tenant's jobs)."""
    dispatched, waiting, _ = session.execute(_COUNTS, {"tenant_id": tenant_id}).one()
    ids = list(session.execute(_OLDEST_WAITING, {"tenant_id": tenant_id, "n": limit}).scalars())
    return QueueView(int(dispatched or 0), int(waiting or 0), ids,
                     None if job_id is None else _position(session, tenant_id, job_id))


def _position(session: Session, tenant_id: str, job_id: str) -> int | None:
    mine = session.execute(select(Job.created_at).where(
        Job.id == job_id, Job.tenant_id == tenant_id, _WAITING)).scalar_one_or_none()
    if mine is None:
        get_job(session, tenant_id, job_id)  # an id that is not the tenant's job: 404
        return None
    ahead = session.execute(select(func.count()).select_from(Job).where(
        Job.tenant_id == tenant_id, _WAITING,
        (Job.created_at < mine) | and_(Job.created_at == mine, Job.id < job_id))).scalar_one()
    return int(ahead) + 1


_ALL_WAITING = select(func.count()).select_from(Job).where(_WAITING)


def count_waiting(session: Session) -> int:
    """Every tenant's waiting jobs together (a gauge of ``/metrics``)."""
    return int(session.execute(_ALL_WAITING).scalar_one())
