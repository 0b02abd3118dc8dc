"""Submit-time checks against the dataset: pretrain.side_rows_per_batch against the batch size
(an explicit one, or "auto" for the dataset), a test set's classes, and the
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


def test_side_rows_at_or_above_an_auto_batch_are_refused_at_submit(client, auth_a):
    # builtin:digits: 1,797 rows, 180 held out by default, so "auto" is a batch of 16
    spec = {"dataset_id": "builtin:digits", "model": {"hidden_layers": [4]},
            "pretrain": {"epochs": 1, "side_rows_per_batch": 16}, "finetune": {"epochs": 1}}
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == (
        'pretrain.side_rows_per_batch: (16) must be below the batch size: batch_size "auto" is '
        "16 for this dataset's 1617 training rows; lower it, or set pretrain.batch_size")
    sweep = client.post("/v1/sweeps", json={"base": dict(spec, pretrain={"epochs": 1}),
                                            "grid": {"pretrain.side_rows_per_batch": [4, 16]}},
                        headers=auth_a)
    assert sweep.status_code == 422 and "side_rows_per_batch" in sweep.json()["detail"], sweep.text
    spec["pretrain"]["side_rows_per_batch"] = 15
    assert client.post("/v1/jobs", json=spec, headers=auth_a).status_code == 202


def test_a_test_set_with_classes_the_training_set_lacks_is_refused_at_submit(client, auth_a):
    rng = np.random.default_rng(0)
    X = rng.random((40, 3))

    def csv(labels: list[str]) -> bytes:
        rows = [",".join(f"{v:.3f}" for v in x) + f",{label}" for x, label in zip(X, labels)]
        return ("a,b,c,label\n" + "\n".join(rows) + "\n").encode()

    train = upload_ready(client, auth_a, csv(["3.0", "4.0"] * 20), "train.csv")
    as_ints = upload_ready(client, auth_a, csv(["3", "4"] * 20), "test.csv")  # a pandas trap
    spec = {"dataset_id": train["id"], "test_dataset_id": as_ints["id"],
            "model": {"hidden_layers": [4]}, "pretrain": None, "finetune": {"epochs": 1}}
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == (
        "test_dataset_id: classes ['3', '4'] do not occur in the training set, whose classes "
        "are ['3.0', '4.0'] (labels are compared as text: 3 and 3.0 are two classes)")
    spec["test_dataset_id"] = upload_ready(client, auth_a, csv(["4.0", "3.0"] * 20), "t2.csv")["id"]
    assert client.post("/v1/jobs", json=spec, headers=auth_a).status_code == 202
