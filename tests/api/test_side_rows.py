"""pretrain.side_rows_per_batch at the API: the check against the batch size, and the
submit-time warning that suggests it when side values are scarce."""
from __future__ import annotations

import numpy as np

from tests.factories import npz_bytes, upload_ready


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
