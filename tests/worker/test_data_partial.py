"""Missing labels and side values (-1) reach dr_core as -1: the side array is the labels when
the dataset has none of its own, a test set keeps its -1, and the warnings skip them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drtrain.datasets.formats import LoadedData
from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.models import Job
from drtrain.kit.settings import Settings
from worker import data as worker_data

X = np.linspace(0, 1, 40, dtype=np.float32).reshape(20, 2)
Y = np.array([0, 1, -1, 1] * 5, dtype=np.int64)


def _prepare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, groups: np.ndarray | None,
             **spec: Any) -> worker_data.Prepared:
    def load(_s: object, _st: object, _job: object, dataset_id: str, *_a: object) -> LoadedData:
        if dataset_id == "test":
            return LoadedData(X=X[:3], y=np.array([1, -1, 0]), classes=["b", "a"])
        return LoadedData(X=X, y=Y, classes=["a", "b"], groups=groups)

    monkeypatch.setattr(worker_data, "_load", load)
    job_spec = JobSpec.model_validate({"dataset_id": "d", "validation_fraction": 0.0,
                                       "test_dataset_id": "test", **spec})
    job = Job(tenant_id="t", dataset_id="d", test_dataset_id="test",
              spec=spec_to_dict(job_spec))
    return worker_data.prepare_data(None, None, job, Settings(data_dir=str(tmp_path)),  # type: ignore[arg-type]
                                    tmp_path)


def test_side_defaults_to_the_labels_with_their_minus_ones(monkeypatch, tmp_path):
    prepared = _prepare(monkeypatch, tmp_path, None)
    assert prepared.split.y_train.tolist() == Y.tolist()
    assert prepared.split.side_train.tolist() == Y.tolist()
    assert prepared.split.y_test.tolist() == [0, -1, 1]  # remapped; -1 kept


def test_own_side_values_keep_their_minus_ones_and_warnings_skip_them(monkeypatch, tmp_path):
    groups = np.array([-1, 0] * 10, dtype=np.int64)
    prepared = _prepare(monkeypatch, tmp_path, groups)
    assert prepared.split.side_train.tolist() == groups.tolist()
    spec = JobSpec.model_validate({"dataset_id": "d", "validation_fraction": 0.0})
    warnings = prepared.warnings(spec)  # no crash on -1; a single real group
    assert any("single group" in w for w in warnings), warnings
