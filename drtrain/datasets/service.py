"""Dataset logic: check an upload, store it, describe it, delete it when nothing uses it."""
from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from drtrain.datasets import builtins
from drtrain.datasets import repository as repo
from drtrain.datasets.formats import detect_format, inspect_upload
from drtrain.datasets.schemas import DatasetOut
from drtrain.kit.db import after_commit
from drtrain.kit.errors import Conflict, Invalid, NotFound
from drtrain.kit.models import Dataset, Tenant, new_id
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, spool

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
# C0, DEL and C1 controls: never wanted in a name, and NUL cannot be stored by PostgreSQL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    while block := fh.read(_CHUNK):
        yield block


def _name_from(filename: str) -> str:
    """A display name from the client's filename, which is never used as a path: its last
    component without control characters (NUL included), else "dataset"."""
    base = _CONTROL.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return base[:200] if base not in ("", ".", "..") else "dataset"


def create_dataset(session: Session, store: ObjectStore, settings: Settings, tenant: Tenant, *,
                   data: BinaryIO, filename: str, name: str | None, label_column: str,
                   side_info_column: str | None, labels: BinaryIO | None) -> Dataset:
    """Copy the upload to a private temp folder (bounded, hashed), check it there, and
    only then store it: a malformed file never reaches the object store."""
    if name is not None and not 0 < len(name) <= 200:
        raise Invalid("name: 1 to 200 characters")
    for field, value in (("name", name), ("label_column", label_column),
                         ("side_info_column", side_info_column)):
        if value is not None and _CONTROL.search(value):
            raise Invalid(f"{field}: control characters are not allowed")
        if value is not None and len(value) > 200:  # the width of its database column
            raise Invalid(f"{field}: at most 200 characters")
    with tempfile.TemporaryDirectory(prefix="drtrain-upload-") as tmp:
        data_path, labels_path = Path(tmp) / "data", Path(tmp) / "labels"
        with open(data_path, "wb") as out:
            sha, size = spool(_chunks(data), out, settings.max_upload_bytes)
        if labels is not None:
            with open(labels_path, "wb") as out:
                spool(_chunks(labels), out, settings.max_upload_bytes - size)
        with open(data_path, "rb") as fh:
            fmt = detect_format(filename, fh.read(8))
        if fmt != "idx" and labels is not None:
            raise Invalid(f"labels_file: only IDX uploads take a labels file, this is {fmt}")
        summary = inspect_upload(data_path, fmt, labels_path=labels_path if labels else None,
                                 label_column=label_column, side_info_column=side_info_column,
                                 limits=settings)
        dataset_id = new_id()
        base = f"datasets/{tenant.id}/{dataset_id}"
        stored = [store.put_file(f"{base}/data.{fmt}", data_path)]
        if labels is not None:
            stored.append(store.put_file(f"{base}/labels.idx", labels_path))
    row = Dataset(
        id=dataset_id, tenant_id=tenant.id, name=name or _name_from(filename),
        format=fmt, object_key=stored[0].key,
        labels_object_key=stored[1].key if len(stored) > 1 else None,
        label_column=label_column if fmt == "csv" else None,
        side_info_column=side_info_column if fmt == "csv" else None,
        n_samples=summary.n_samples, n_features=summary.n_features,
        n_classes=summary.n_classes, class_counts=summary.class_counts,
        feature_range=summary.feature_range, visible_units_hint=summary.visible_units_hint,
        sha256=sha, size_bytes=size)
    try:
        session.add(row)
        session.flush()
    except Exception:
        for obj in stored:
            store.delete(obj.key)
        raise
    return row


def _builtin_out(found: builtins.BuiltinDataset) -> DatasetOut:
    s = found.summary
    return DatasetOut(id=found.id, name=found.name, format="builtin", n_samples=s.n_samples,
                      n_features=s.n_features, n_classes=s.n_classes,
                      class_counts=s.class_counts, feature_range=s.feature_range,
                      visible_units_hint=s.visible_units_hint, sha256=found.sha256,
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
    row = repo.get_dataset(session, tenant.id, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    if repo.dataset_in_active_use(session, tenant.id, dataset_id):
        raise Conflict(f"dataset {dataset_id!r} is used by a queued or running job")
    keys = [k for k in (row.object_key, row.labels_object_key) if k]
    session.delete(row)

    def _remove_objects() -> None:
        # Only once the row is gone for good: a rolled-back delete keeps its data.
        for key in keys:
            try:
                store.delete(key)
            except Exception:  # noqa: BLE001 - an orphan object is harmless; say so and go on
                log.warning("could not delete object %s", key, exc_info=True)

    after_commit(session, _remove_objects)
