"""The queries for datasets: the one place their SQL lives, each scoped by tenant."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from drtrain.kit.models import ACTIVE_STATUSES, Dataset, DatasetStatus, Job


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


def finish_validation(session: Session, dataset_id: str, **values: Any) -> bool:
    """Move a dataset out of ``validating`` (conditional: False when it is no longer there,
    deleted meanwhile or already failed by the stale sweep)."""
    result = session.execute(
        update(Dataset).where(Dataset.id == dataset_id,
                              Dataset.status == DatasetStatus.validating.value)
        .values(**values).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def stale_validations(session: Session, before: datetime) -> Sequence[Dataset]:
    return session.scalars(select(Dataset).where(
        Dataset.status == DatasetStatus.validating.value, Dataset.created_at < before)).all()
