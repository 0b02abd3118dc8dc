"""The queries for tenants, keys and datasets (jobs have their own query module)."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from api.models import ACTIVE_STATUSES, ApiKey, Dataset, Job, Tenant


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def add_tenant(session: Session, name: str) -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def active_keys_with_prefix(session: Session, prefix: str) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(
        Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)).one_or_none()


def list_datasets(session: Session, tenant_id: str) -> Sequence[Dataset]:
    return session.scalars(select(Dataset).where(Dataset.tenant_id == tenant_id)
                           .order_by(Dataset.created_at.desc(), Dataset.id)).all()


def dataset_in_active_use(session: Session, tenant_id: str, dataset_id: str) -> bool:
    return bool(session.scalar(select(exists().where(
        Job.tenant_id == tenant_id,
        Job.status.in_([s.value for s in ACTIVE_STATUSES]),
        or_(Job.dataset_id == dataset_id, Job.test_dataset_id == dataset_id),
    ))))
