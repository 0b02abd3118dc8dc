"""pretrain.side_rows_per_batch at the API: bounds, the check against the batch size, and the
submit-time warning that suggests it when side values are scarce."""
from __future__ import annotations

import numpy as np
import pytest

from drtrain.jobs.spec import JobSpec
from drtrain.jobs.warnings import training_warnings
from tests.api.test_datasets import npz_bytes, upload_ready


def _spec(**pretrain) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": "builtin:digits",
                                   "pretrain": {"batch_size": 128, **pretrain}})


def _warnings(spec: JobSpec, n_rows: int, n_with_side: int) -> list[str]:
    return training_warnings(spec, n_rows=n_rows, n_val=0, class_counts={}, n_groups=None,
                             n_labelled=n_with_side, n_with_side=n_with_side)


def test_scarce_side_values_warn_and_name_the_field():
    warned = [w for w in _warnings(_spec(), 60_000, 600) if "side_rows_per_batch" in w]
    assert len(warned) == 1
    assert "1% of rows" in warned[0] and "batch of 128" in warned[0] and "for example 32" in warned[0]


@pytest.mark.parametrize("pretrain,n_with_side", [({"side_rows_per_batch": 32}, 600),
                                                  ({"dr": None}, 600),
                                                  ({}, 30_000)])
def test_no_starvation_warning_when_side_rows_are_set_dr_is_off_or_values_are_plenty(pretrain, n_with_side):
    assert not [w for w in _warnings(_spec(**pretrain), 60_000, n_with_side) if "side_rows_per_batch" in w]


@pytest.mark.parametrize("rows", [-1, 4097, 1.5, "8"])
def test_out_of_range_values_are_refused(rows):
    with pytest.raises(ValueError):
        _spec(side_rows_per_batch=rows)


def test_side_rows_must_be_below_the_batch_size(client, auth_a):
    spec = {"dataset_id": "builtin:digits", "model": {"hidden_layers": [4]},
            "pretrain": {"epochs": 1, "batch_size": 16, "side_rows_per_batch": 16},
            "finetune": {"epochs": 1}}
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422, resp.text
    assert "side_rows_per_batch (16) must be below batch_size (16)" in resp.json()["detail"]
    spec["pretrain"]["side_rows_per_batch"] = 4
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 202, resp.text
    assert resp.json()["spec"]["pretrain"]["side_rows_per_batch"] == 4


def test_a_partly_labelled_upload_gets_the_warning_at_submit(client, auth_a):
    y = np.full(200, -1)
    y[:4] = [0, 1, 0, 1]
    ds = upload_ready(client, auth_a, npz_bytes(X=np.random.default_rng(0).random((200, 3)), y=y), "p.npz")
    spec = {"dataset_id": ds["id"], "model": {"hidden_layers": [4]},
            "pretrain": {"epochs": 1, "batch_size": 64}, "finetune": {"epochs": 1},
            "validation_fraction": 0.0}
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 202, resp.text
    assert any("side_rows_per_batch (for example 16)" in w for w in resp.json()["warnings"])
