"""Dataset logic: describe datasets, delete them when nothing uses them. Taking an upload
in (stage, check, record) is ``drtrain.datasets.intake``."""
from __future__ import annotations

from sqlalchemy.orm import Session

from drtrain.datasets import builtins
from drtrain.datasets import repository as repo
from drtrain.datasets.schemas import DatasetOut
from drtrain.kit.errors import Conflict, NotFound
from drtrain.kit.models import Tenant
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, remove_after_commit
from drtrain.tenants.repository import lock_tenant


def _builtin_out(found: builtins.BuiltinDataset) -> DatasetOut:
    s = found.summary
    return DatasetOut(id=found.id, name=found.name, format="builtin", n_samples=s.n_samples,
                      n_features=s.n_features, n_classes=s.n_classes,
                      class_counts=s.class_counts, feature_range=s.feature_range,
                      visible_units_hint=s.visible_units_hint, n_labelled=s.n_labelled,
                      n_with_side=s.n_with_side, sha256=found.sha256,
                      size_bytes=found.size_bytes, created_at=found.created_at, builtin=True)


def list_datasets(session: Session, settings: Settings, tenant: Tenant) -> list[DatasetOut]:
    own = [DatasetOut.model_validate(d) for d in repo.list_datasets(session, tenant.id)]
    return own + [_builtin_out(b) for b in builtins.list_builtins(settings)]


def get_dataset(session: Session, settings: Settings, tenant: Tenant, dataset_id: str) -> DatasetOut:
    if dataset_id.startswith(builtins.PREFIX):
        found = builtins.get_builtin(dataset_id, settings)
        if found is None:
            raise NotFound(f"dataset {dataset_id!r} not found")
        return _builtin_out(found)
    row = repo.get_dataset(session, tenant.id, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    return DatasetOut.model_validate(row)


def delete_dataset(session: Session, store: ObjectStore, tenant: Tenant, dataset_id: str) -> None:
    if dataset_id.startswith(builtins.PREFIX):
        raise Conflict(f"dataset {dataset_id!r} is built in and cannot be deleted")
    # The tenant's submit lock, held until the commit: a submit naming the dataset either
    # committed its job before (and the delete sees it) or reads the dataset again under the
    # same lock after the delete (and is refused): never both a new job and a deleted dataset.
    lock_tenant(session, tenant.id)
    row = repo.get_dataset(session, tenant.id, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    blocking = repo.active_job_using(session, tenant.id, dataset_id)
    if blocking is not None:
        job_id, status = blocking
        raise Conflict(f"dataset {dataset_id!r} is used by job {job_id} ({status}); "
                       "cancel it or wait until it ends")
    keys = [k for k in (row.object_key, row.labels_object_key) if k]
    if not repo.delete_dataset(session, tenant.id, dataset_id):
        raise NotFound(f"dataset {dataset_id!r} not found")
    session.expunge(row)

    # Only once the row is gone for good: a rolled-back delete keeps its data. The prefix
    # takes the dataset's folder too (the local store's objects live in one).
    remove_after_commit(session, store, keys, prefixes=[repo.object_prefix(tenant.id, dataset_id) + "/"])
