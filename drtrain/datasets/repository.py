"""The queries for datasets: the one place their SQL lives, each scoped by tenant."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from drtrain.kit.models import ACTIVE_STATUSES, Dataset, DatasetStatus, Job
from drtrain.tenants import repository as tenants_repo


def object_prefix(tenant_id: str, dataset_id: str) -> str:
    """The folder (local store) or prefix (S3) that holds every object of one dataset."""
    return f"datasets/{tenant_id}/{dataset_id}"


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(
        Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)).one_or_none()


def list_datasets(session: Session, tenant_id: str) -> Sequence[Dataset]:
    return session.scalars(select(Dataset).where(Dataset.tenant_id == tenant_id)
                           .order_by(Dataset.created_at.desc(), Dataset.id)).all()


def active_job_using(session: Session, tenant_id: str, dataset_id: str) -> tuple[str, str] | None:
    """(id, status) of a queued or running job that reads the dataset, if any: the one that
    blocks its deletion, named in the refusal."""
    row = session.execute(select(Job.id, Job.status).where(
        Job.tenant_id == tenant_id,
        Job.status.in_([s.value for s in ACTIVE_STATUSES]),
        or_(Job.dataset_id == dataset_id, Job.test_dataset_id == dataset_id),
    ).order_by(Job.created_at).limit(1)).first()
    return None if row is None else (row[0], str(row[1]))


def existing_ids(session: Session, tenant_id: str, dataset_ids: set[str]) -> set[str]:
    """Which of ``dataset_ids`` the tenant still has a row for."""
    return set(session.scalars(select(Dataset.id).where(
        Dataset.tenant_id == tenant_id, Dataset.id.in_(sorted(dataset_ids)))))


def add_dataset(session: Session, row: Dataset) -> None:
    """Insert an uploaded dataset's row and count its bytes against the tenant's quota."""
    session.add(row)
    session.flush()
    tenants_repo.add_storage(session, row.tenant_id, row.size_bytes)


def finish_validation(session: Session, dataset_id: str, **values: Any) -> bool:
    """Move a dataset out of ``validating`` (conditional: False when it is no longer there,
    deleted meanwhile or already failed by the stale sweep). A failed upload keeps its row
    but no object: its bytes stop counting against the quota."""
    moved = session.execute(
        update(Dataset).where(Dataset.id == dataset_id,
                              Dataset.status == DatasetStatus.validating.value)
        .values(**values).returning(Dataset.tenant_id, Dataset.size_bytes)
        .execution_options(synchronize_session=False)).first()
    if moved is None:
        return False
    if values.get("status") == DatasetStatus.failed:
        tenants_repo.add_storage(session, moved.tenant_id, -moved.size_bytes)
    return True


def delete_dataset(session: Session, tenant_id: str, dataset_id: str) -> bool:
    """Delete the row and stop counting its bytes (those of the row as deleted: a check
    failing it meanwhile has already stopped counting them). False when it was gone."""
    gone = session.execute(
        delete(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
        .returning(Dataset.status, Dataset.size_bytes)
        .execution_options(synchronize_session=False)).first()
    if gone is None:
        return False
    if gone.status != DatasetStatus.failed:
        tenants_repo.add_storage(session, tenant_id, -gone.size_bytes)
    return True


def stale_validations(session: Session, before: datetime) -> Sequence[Dataset]:
    return session.scalars(select(Dataset).where(
        Dataset.status == DatasetStatus.validating.value, Dataset.created_at < before)).all()
