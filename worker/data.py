"""A job's data as dr_core wants it: train/validation split, optional test set, DR side info.

The validation split is a seeded permutation (the spec's seed), so every attempt of a job,
and a resumed one in particular, trains on exactly the same rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from dr_core.pipeline import DataSplit
from drtrain.datasets.builtins import test_split_id
from drtrain.datasets.formats import LoadedData
from drtrain.datasets.loading import load_arrays
from drtrain.jobs.spec import JobSpec
from drtrain.jobs.validation_split import split_validation
from drtrain.jobs.warnings import training_warnings
from drtrain.kit.models import Dataset, Job
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from worker.spec import SpecError, parse_spec, resolve_visible

BUILTIN = "builtin:"


@dataclass
class Prepared:
    split: DataSplit
    classes: list[str]
    visible: str

    def warnings(self, spec: JobSpec) -> list[str]:
        """What looks wrong with this spec on these rows (drtrain.jobs.warnings)."""
        s = self.split
        n_val = 0 if s.y_val is None else len(s.y_val)
        labels = s.y_train if s.y_val is None else np.concatenate([s.y_train, s.y_val])
        # -1: a row without a label, or without a side value; neither counts.
        counts = np.bincount(labels[labels >= 0], minlength=len(self.classes))
        return training_warnings(spec, n_rows=len(s.y_train) + n_val, n_val=n_val,
                                 class_counts=dict(zip(self.classes, counts.tolist())),
                                 n_groups=int(np.unique(s.side_train[s.side_train >= 0]).size))


def _load(session: Session, store: ObjectStore, job: Job, dataset_id: str, settings: Settings,
          workdir: Path) -> LoadedData:
    if dataset_id.startswith(BUILTIN):
        return load_arrays(store, None, dataset_id, settings, workdir)
    row = session.get(Dataset, dataset_id)
    # The API checked ownership at submit; checking again keeps a tampered row from reading
    # another tenant's data.
    if row is None or row.tenant_id != job.tenant_id:
        raise SpecError(f"dataset {dataset_id} no longer exists")
    return load_arrays(store, row, None, settings, workdir)


def _remap(test_y: np.ndarray, test_classes: list[str], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    missing = [c for c in test_classes if c not in index]
    if missing:
        raise SpecError(f"test_dataset_id: classes {missing[:5]} do not occur in the training data")
    lut = np.asarray([index[c] for c in test_classes], dtype=np.int64)
    test_y = np.asarray(test_y, dtype=np.int64)
    return np.where(test_y >= 0, lut[np.maximum(test_y, 0)] if len(lut) else -1, -1)


def prepare_data(session: Session, store: ObjectStore, job: Job, settings: Settings,
                 workdir: Path) -> Prepared:
    spec = parse_spec(job.spec)
    data = _load(session, store, job, job.dataset_id, settings, workdir)
    X = np.asarray(data.X, dtype=np.float32)
    y = np.asarray(data.y, dtype=np.int64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise SpecError(f"dataset {job.dataset_id}: needs at least 2 rows, got shape {X.shape}")
    # Without side information DR groups by label; either way -1 marks a row without one.
    side = np.asarray(data.groups, dtype=np.int64) if data.groups is not None else y
    classes = [str(c) for c in data.classes]

    test_id = job.test_dataset_id
    if test_id is None and job.dataset_id.startswith(BUILTIN):
        test_id = test_split_id(job.dataset_id)
    X_test = y_test = None
    if test_id:
        test = _load(session, store, job, test_id, settings, workdir)
        X_test = np.asarray(test.X, dtype=np.float32)
        if X_test.shape[1] != X.shape[1]:
            raise SpecError(f"test_dataset_id: {X_test.shape[1]} features, training data has "
                            f"{X.shape[1]}")
        y_test = _remap(test.y, [str(c) for c in test.classes], classes)

    lo, hi = float(X.min()), float(X.max())
    if X_test is not None and X_test.size:
        lo, hi = min(lo, float(X_test.min())), max(hi, float(X_test.max()))
    visible = resolve_visible(spec.model.visible_units, lo, hi)

    tr, va = split_validation(y, spec.validation_fraction, spec.seed)
    split = DataSplit(X_train=X[tr], y_train=y[tr], side_train=side[tr],
                      X_val=X[va] if va.size else None, y_val=y[va] if va.size else None,
                      X_test=X_test, y_test=y_test)
    return Prepared(split=split, classes=classes, visible=visible)
