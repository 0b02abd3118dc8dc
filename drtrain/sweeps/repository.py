"""The queries for sweeps, each scoped by tenant."""
from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from drtrain.jobs.repository import decode_cursor, encode_cursor
from drtrain.kit.models import Job, Sweep


def get_sweep(session: Session, tenant_id: str, sweep_id: str, *,
              lock: bool = False) -> Sweep | None:
    stmt = select(Sweep).where(Sweep.id == sweep_id, Sweep.tenant_id == tenant_id)
    return session.scalars(stmt.with_for_update() if lock else stmt).one_or_none()


def sweep_children(session: Session, sweep_id: str) -> list[Job]:
    return list(session.scalars(
        select(Job).where(Job.sweep_id == sweep_id).order_by(Job.created_at, Job.id)))


def list_sweeps(session: Session, tenant_id: str, *, page_size: int,
                page_token: str | None) -> tuple[list[Sweep], str | None]:
    """Newest first, with the same (created_at, id) cursor as the job list."""
    stmt = select(Sweep).where(Sweep.tenant_id == tenant_id)
    if page_token:
        created, sweep_id = decode_cursor(page_token)
        stmt = stmt.where(or_(Sweep.created_at < created,
                              and_(Sweep.created_at == created, Sweep.id < sweep_id)))
    rows = list(session.scalars(
        stmt.order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(page_size + 1)))
    if len(rows) > page_size:
        rows = rows[:page_size]
        return rows, encode_cursor(rows[-1])
    return rows, None


def child_status_counts(session: Session, sweep_ids: list[str]) -> dict[str, dict[str, int]]:
    """sweep id -> {status: number of its children}."""
    out: dict[str, dict[str, int]] = {sweep_id: {} for sweep_id in sweep_ids}
    rows = session.execute(select(Job.sweep_id, Job.status, func.count())
                           .where(Job.sweep_id.in_(sweep_ids))
                           .group_by(Job.sweep_id, Job.status)).tuples()
    for sweep_id, status, n in rows:
        if sweep_id is not None:
            out[sweep_id][status] = n
    return out
