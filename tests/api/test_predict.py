"""POST /v1/jobs/{id}/predict: the stored model's answer, checked against a hand computation;
bad inputs and jobs without a usable model are refused."""
from __future__ import annotations

import hashlib

import numpy as np

from drtrain.kit.models import Checkpoint, JobStatus
from tests.factories import add_job, hand_forward, make_model_bytes, tenant_id


def _job_with_model(db, store, data: bytes, status=None):  # noqa: ANN001, ANN202
    job = add_job(db, tenant_id(db), status or JobStatus.succeeded)
    stored = store.put_stream(f"jobs/{job.id}/final.safetensors", [data])
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    db.add(Checkpoint(job_id=job.id, kind="final", attempt=1, object_key=stored.key,
                      sha256=stored.sha256, size_bytes=stored.size_bytes))
    db.commit()
    return job


def test_predict_route_equals_hand_computation(client, db, store, auth_a, auth_b) -> None:
    data = make_model_bytes(activation="tanh", seed=11, classes=("3", "5", "8"))
    job = _job_with_model(db, store, data)
    x = [[0.5, 1.5, -0.5], [3.0, -3.0, 0.0], [0.0, 0.0, 0.0]]
    resp = client.post(f"/v1/jobs/{job.id}/predict", json={"inputs": x}, headers=auth_a)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    expected = hand_forward(data, x, "tanh")
    np.testing.assert_allclose(body["probabilities"], expected, rtol=1e-9)
    assert body["predictions"] == [("3", "5", "8")[int(np.argmax(p))] for p in expected]
    assert body["classes"] == ["3", "5", "8"]
    assert client.post(f"/v1/jobs/{job.id}/predict", json={"inputs": x},
                       headers=auth_b).status_code == 404


def test_predict_rejects_wrong_width_and_non_finite(client, db, store, auth_a) -> None:
    job = _job_with_model(db, store, make_model_bytes())
    url = f"/v1/jobs/{job.id}/predict"
    wrong = client.post(url, json={"inputs": [[1.0, 2.0]]}, headers=auth_a)
    assert wrong.status_code == 422 and "3 values" in wrong.json()["detail"]
    ragged = client.post(url, json={"inputs": [[1.0, 2.0, 3.0], [1.0]]}, headers=auth_a)
    assert ragged.status_code == 422
    nan = client.post(url, content=b'{"inputs": [[1.0, NaN, 3.0]]}',
                      headers={**auth_a, "Content-Type": "application/json"})
    assert nan.status_code == 422
    too_many = client.post(url, json={"inputs": [[0.0, 0.0, 0.0]] * 10001}, headers=auth_a)
    assert too_many.status_code == 422


def test_predict_inputs_are_json_numbers(client, db, store, auth_a) -> None:
    job = _job_with_model(db, store, make_model_bytes())
    url = f"/v1/jobs/{job.id}/predict"
    for value in ("0.5", True):
        resp = client.post(url, json={"inputs": [[0.0, value, 1.0]]}, headers=auth_a)
        assert resp.status_code == 422, resp.text
        assert [e["loc"] for e in resp.json()["errors"]] == [["body", "inputs", 0, 1]]
    integers = client.post(url, json={"inputs": [[0, 1, 2]]}, headers=auth_a)
    assert integers.status_code == 200, integers.text


def test_predict_needs_a_succeeded_job_with_a_head(client, db, store, auth_a) -> None:
    running = _job_with_model(db, store, make_model_bytes(), JobStatus.running)
    resp = client.post(f"/v1/jobs/{running.id}/predict", json={"inputs": [[0, 0, 0]]},
                       headers=auth_a)
    assert resp.status_code == 409
    dbn = _job_with_model(db, store, make_model_bytes(fmt="drtrain-dbn", head=False, seed=5))
    resp = client.post(f"/v1/jobs/{dbn.id}/predict", json={"inputs": [[0, 0, 0]]}, headers=auth_a)
    assert resp.status_code == 409 and "head" in resp.json()["detail"]
