"""The queries for datasets: the one place their SQL lives, each scoped by tenant."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from drtrain.kit.models import ACTIVE_STATUSES, Dataset, Job


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
