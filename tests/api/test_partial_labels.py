"""Missing labels and side values: an empty CSV cell, or -1 in an NPZ array, is a
-1 code in the arrays a worker trains on; a dataset says how many rows carry each; a job that
needs what a dataset does not have is a 422 naming the field, and its warnings say which rows
fine-tuning and DR will use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drtrain.datasets.formats import inspect_upload, read_any
from drtrain.datasets.loading import load_arrays
from drtrain.kit.models import Dataset
from drtrain.kit.settings import Settings
from tests.factories import npz_bytes, upload_ready

LIMITS = Settings(environment="test")
CSV = (b"a,b,label,source\n"
       b"0.1,0.2,cat,u\n"
       b"0.3,0.4,,v\n"        # no label
       b"0.5,0.6,dog,\n"      # no side value
       b"0.7,0.8, ,  \n"      # neither (blank cells count as empty)
       b"0.9,1.0,dog,v\n")


def _read(path: Path, fmt: str, side: str | None = None):  # noqa: ANN202
    kw = {"labels_path": None, "label_column": "label", "side_info_column": side,
          "limits": LIMITS}
    return read_any(path, fmt, **kw), inspect_upload(path, fmt, **kw)


def test_csv_empty_cells_are_missing_labels_and_side_values(tmp_path: Path):
    path = tmp_path / "p.csv"
    path.write_bytes(CSV)
    data, summary = _read(path, "csv", side="source")
    assert data.classes == ["cat", "dog"]
    assert data.y.tolist() == [0, -1, 1, -1, 1]
    assert data.groups.tolist() == [0, 1, -1, -1, 1]
    assert (summary.n_samples, summary.n_labelled, summary.n_with_side) == (5, 3, 3)
    assert summary.class_counts == {"cat": 1, "dog": 2} and summary.n_classes == 2


def test_without_a_side_column_the_side_values_are_the_labels(tmp_path: Path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"a,label\n0.1,cat\n0.2,\n0.3,dog\n0.4,dog\n")
    data, summary = _read(path, "csv")
    assert data.groups is None and data.y.tolist() == [0, -1, 1, 1]
    assert (summary.n_labelled, summary.n_with_side) == (3, 3)


def test_npz_minus_one_is_a_missing_label_or_group(tmp_path: Path):
    path = tmp_path / "p.npz"
    path.write_bytes(npz_bytes(X=np.zeros((6, 2)), y=np.array([4, -1, 7, 4, -1, 7]),
                               groups=np.array([-1, 2, 2, 5, -1, -1])))
    data, summary = _read(path, "npz")
    assert data.classes == ["4", "7"] and data.y.tolist() == [0, -1, 1, 0, -1, 1]
    assert data.groups.tolist() == [-1, 0, 0, 1, -1, -1]
    assert (summary.n_labelled, summary.n_with_side) == (4, 3)
    assert summary.class_counts == {"4": 2, "7": 2}


def test_npz_empty_text_is_missing(tmp_path: Path):
    path = tmp_path / "t.npz"
    path.write_bytes(npz_bytes(X=np.zeros((3, 2)), y=np.array(["a", "", "b"]),
                               groups=np.array(["", "g", "g"])))
    data, summary = _read(path, "npz")
    assert data.y.tolist() == [0, -1, 1] and data.groups.tolist() == [-1, 0, 0]
    assert (summary.n_labelled, summary.n_with_side) == (2, 2)


def test_an_unlabelled_dataset_is_accepted_but_one_labelled_class_is_not(tmp_path: Path):
    from drtrain.kit.errors import Invalid

    path = tmp_path / "u.npz"
    path.write_bytes(npz_bytes(X=np.zeros((3, 2)), y=np.full(3, -1)))
    data, summary = _read(path, "npz")
    assert data.y.tolist() == [-1, -1, -1] and data.classes == []
    assert (summary.n_classes, summary.n_labelled, summary.n_with_side) == (0, 0, 0)
    path.write_bytes(npz_bytes(X=np.zeros((3, 2)), y=np.array([-1, 5, 5])))
    with pytest.raises(Invalid, match="one class only"):
        _read(path, "npz")


# ------------------------------------------------------------------ through the API
def test_upload_reports_the_counts_and_the_worker_gets_minus_one(client, auth_a, store,
                                                                 settings, db, tmp_path):
    body = upload_ready(client, auth_a, CSV, side_info_column="source")
    assert (body["n_samples"], body["n_labelled"], body["n_with_side"]) == (5, 3, 3)
    data = load_arrays(store, db.get(Dataset, body["id"]), None, settings, tmp_path)
    assert data.y.tolist() == [0, -1, 1, -1, 1]
    assert data.groups.tolist() == [0, 1, -1, -1, 1]


def _spec(dataset_id: str, **over: object) -> dict:
    spec: dict = {"dataset_id": dataset_id, "model": {"hidden_layers": [4]},
                  "pretrain": {"epochs": 1, "dr": {"weight": 1.0}},
                  "finetune": {"epochs": 1, "dr": None}}
    spec.update(over)
    return spec


def _problem(resp) -> tuple[list, str]:  # noqa: ANN001
    assert resp.status_code == 422, resp.text
    body = resp.json()
    return body["errors"][0]["loc"], body["detail"]


def test_dr_on_a_dataset_without_side_values_is_a_422_naming_the_field(client, auth_a):
    no_side = b"a,label,source\n0.1,x,\n0.2,y,\n0.3,x,\n"
    ds = upload_ready(client, auth_a, no_side, side_info_column="source")
    assert ds["n_with_side"] == 0 and ds["n_labelled"] == 3
    loc, detail = _problem(client.post("/v1/jobs", json=_spec(ds["id"]), headers=auth_a))
    assert loc == ["body", "pretrain", "dr"]
    assert "no rows with a side value" in detail
    spec = _spec(ds["id"], pretrain=None, finetune={"epochs": 1, "dr": {"weight": 0.1}})
    loc, _ = _problem(client.post("/v1/jobs", json=spec, headers=auth_a))
    assert loc == ["body", "finetune", "dr"]
    # Without DR the same dataset is fine.
    spec = _spec(ds["id"], pretrain={"epochs": 1, "dr": None})
    assert client.post("/v1/jobs", json=spec, headers=auth_a).status_code == 202


def test_finetune_on_an_unlabelled_dataset_is_a_422(client, auth_a):
    ds = upload_ready(client, auth_a, npz_bytes(X=np.zeros((4, 2)), y=np.full(4, -1)),
                      "u.npz")
    assert ds["n_labelled"] == 0 and ds["n_classes"] == 0
    spec = _spec(ds["id"], pretrain={"epochs": 1, "dr": None})
    loc, detail = _problem(client.post("/v1/jobs", json=spec, headers=auth_a))
    assert loc == ["body", "finetune"] and "no labelled rows" in detail
    pretrain_only = _spec(ds["id"], pretrain={"epochs": 1, "dr": None}, finetune=None)
    assert client.post("/v1/jobs", json=pretrain_only, headers=auth_a).status_code == 202


def test_warnings_say_which_rows_finetuning_and_dr_use(client, auth_a):
    ds = upload_ready(client, auth_a, CSV, side_info_column="source")
    resp = client.post("/v1/jobs", json=_spec(ds["id"]), headers=auth_a)
    assert resp.status_code == 202, resp.text
    warnings = resp.json()["warnings"]
    assert any(w.startswith("finetune uses only the 3 labelled rows of the 5") for w in warnings)
    assert any(w.startswith("dr pairs only the 3 rows of the 5") for w in warnings)
    assert any("validation_fraction holds out" in w for w in warnings)
    none_held = client.post("/v1/jobs", json={**_spec(ds["id"]), "validation_fraction": 0.0},
                            headers=auth_a)
    assert not any("validation_fraction" in w for w in none_held.json()["warnings"])
