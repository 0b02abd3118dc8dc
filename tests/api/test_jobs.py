"""Jobs API: every /v1/jobs route against PostgreSQL.

Worker behaviour is simulated by writing Job/MetricPoint/Checkpoint rows directly.
"""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from api.app import create_app
from drtrain.jobs.service import request_hash
from drtrain.kit.models import Dataset, Job, JobStatus, Tenant, utcnow
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name
from tests.factories import add_dataset, add_job, add_points, small_spec, tenant_id


@pytest.fixture
def ds_a(db: Session, auth_a: dict) -> Dataset:
    ds = add_dataset(db, tenant_id(db))
    return ds


# ---------------------------------------------------------------- POST /v1/jobs


def test_submit_queues_job_and_publishes_after_commit(client, db, auth_a, ds_a, published) -> None:
    resp = client.post("/v1/jobs", json=small_spec(ds_a.id, seed=7), headers=auth_a)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "queued" and body["attempt"] == 1 and body["dataset_id"] == ds_a.id
    assert body["spec"]["seed"] == 7 and body["spec"]["pretrain"]["cd_k"] == 1  # defaulted
    assert published == [(body["id"], True)]
    row = db.get(Job, body["id"])
    assert row.status == JobStatus.queued and row.max_attempts == 3
    assert row.request_hash == request_hash(body["spec"])


def test_submit_stores_max_attempts_from_spec(client, db, auth_a, ds_a, published) -> None:
    resp = client.post("/v1/jobs", json=small_spec(ds_a.id, max_attempts=5), headers=auth_a)
    assert resp.status_code == 202
    assert db.get(Job, resp.json()["id"]).max_attempts == 5


def test_max_attempts_defaults_to_the_server_setting(client, app, db, auth_a, ds_a,
                                                    published) -> None:
    app.state.settings.max_attempts = 7
    resp = client.post("/v1/jobs", json=small_spec(ds_a.id), headers=auth_a)
    assert resp.status_code == 202
    # The stored spec carries the number, so a retry or a reader never has to guess.
    assert resp.json()["spec"]["max_attempts"] == 7
    assert db.get(Job, resp.json()["id"]).max_attempts == 7


def test_publish_sees_the_committed_row_from_another_connection(settings, engine, store,
                                                                  monkeypatch) -> None:
    """Without the test's shared transaction: the publisher must find the row durable."""
    name = f"real-commit-{uuid.uuid4().hex[:8]}"
    with Session(engine) as s:
        key = create_key(s, name)
        owner = tenant_by_name(s, name).id
        ds_id = add_dataset(s, owner).id
        s.commit()
    seen: list[str | None] = []

    def publish(_settings: object, job_id: str) -> None:
        with engine.connect() as conn:
            seen.append(conn.execute(text("SELECT status FROM jobs WHERE id = :id"),
                                     {"id": job_id}).scalar())

    monkeypatch.setattr("drtrain.kit.broker.publish_run_job", publish)
    try:
        with TestClient(create_app(settings, engine=engine, store=store)) as c:
            resp = c.post("/v1/jobs", json=small_spec(ds_id),
                          headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 202, resp.text
        assert seen == ["queued"]
    finally:
        with Session(engine) as s:
            s.execute(text("DELETE FROM jobs WHERE tenant_id = :t"), {"t": owner})
            s.delete(s.get(Tenant, owner))
            s.commit()


def test_broker_failure_after_commit_still_answers_202(client, db, auth_a, ds_a,
                                                      monkeypatch) -> None:
    def broken(_settings: object, _job_id: str) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr("drtrain.kit.broker.publish_run_job", broken)
    resp = client.post("/v1/jobs", json=small_spec(ds_a.id), headers=auth_a)
    assert resp.status_code == 202
    assert db.get(Job, resp.json()["id"]).status == JobStatus.queued


def test_builtin_datasets_are_checked_like_uploaded_ones(client, auth_a, published) -> None:
    ok = client.post("/v1/jobs", json=small_spec("builtin:digits"), headers=auth_a)
    assert ok.status_code == 202, ok.text
    assert ok.json()["dataset_id"] == "builtin:digits"
    # fashion-mnist's files are absent in the test settings, so it is not a dataset here.
    for dataset_id in ("builtin:fashion-mnist", "builtin:nope"):
        resp = client.post("/v1/jobs", json=small_spec(dataset_id), headers=auth_a)
        assert resp.status_code == 422
        assert resp.json()["errors"][0]["loc"] == ["body", "dataset_id"]
    huge = client.post("/v1/jobs", json=small_spec("builtin:digits",
                                                    model={"hidden_layers": [8192, 8192]}),
                       headers=auth_a)
    assert huge.status_code == 422 and "exceeds" in huge.json()["detail"]
    assert len(published) == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-key"}])
def test_routes_need_a_valid_key(client, headers) -> None:
    for method, url in [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"),
                        ("GET", "/v1/jobs/x/metrics"), ("POST", "/v1/jobs/x/cancel"),
                        ("GET", "/v1/jobs/x/checkpoints"), ("GET", "/v1/jobs/x/model"),
                        ("POST", "/v1/jobs/x/predict"), ("GET", "/v1/jobs/x/events")]:
        resp = client.request(method, url, headers=headers,
                              json=small_spec("x") if method == "POST" else None)
        assert resp.status_code == 401, (method, url, resp.status_code)
        assert resp.headers["content-type"] == "application/problem+json"


def test_bad_spec_is_problem_json_with_errors(client, auth_a, ds_a, published) -> None:
    spec = small_spec(ds_a.id)
    spec["pretrain"]["cd_k"] = 0
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    assert any(e["loc"][-1] == "cd_k" for e in resp.json()["errors"])
    assert published == []


@pytest.mark.parametrize("path, value", [
    (("seed",), "7"), (("seed",), False), (("seed",), 7.0),
    (("pretrain", "epochs"), "1"), (("pretrain", "epochs"), True),
    (("finetune", "epochs"), 1.0), (("pretrain", "persistent"), 0),
    (("pretrain", "persistent"), "true"), (("model", "hidden_layers", 0), 8.0),
])
def test_a_wrong_json_type_is_422_naming_the_field(client, auth_a, ds_a, published, path,
                                                   value) -> None:
    """The document's integer is an integer, its boolean a boolean: nothing is coerced."""
    spec = small_spec(ds_a.id)
    node = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert [e["loc"] for e in resp.json()["errors"]] == [["body", *path]]
    assert published == []


def test_a_body_that_is_not_json_is_422_saying_so(client, auth_a, ds_a, published) -> None:
    bad = client.post("/v1/jobs", content=b'{"dataset_id": ,}', headers={
        **auth_a, "Content-Type": "application/json"})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"].startswith("the body is not valid JSON at character 15: "), bad.text
    as_form = client.post("/v1/jobs", content=json.dumps(small_spec(ds_a.id)).encode(), headers={
        **auth_a, "Content-Type": "application/x-www-form-urlencoded"})
    assert as_form.status_code == 422, as_form.text
    assert "sent with Content-Type: application/json; this request's is " \
           "application/x-www-form-urlencoded" in as_form.json()["detail"], as_form.text
    assert published == []


def test_a_float_field_takes_a_json_integer(client, auth_a, ds_a, published) -> None:
    spec = small_spec(ds_a.id, validation_fraction=0)
    spec["pretrain"]["learning_rate"] = 1
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 202, resp.text
    assert resp.json()["spec"]["pretrain"]["learning_rate"] == 1.0


def test_unknown_or_foreign_dataset_is_422_naming_dataset_id(client, db, auth_a, auth_b,
                                                             published) -> None:
    foreign = add_dataset(db, tenant_id(db, "tenant-b"))
    for dataset_id in ("does-not-exist", foreign.id):
        resp = client.post("/v1/jobs", json=small_spec(dataset_id), headers=auth_a)
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["loc"] == ["body", "dataset_id"]
    assert published == [] and db.scalar(select(Job.id)) is None


def test_bernoulli_on_data_outside_unit_interval_is_422(client, db, auth_a, published) -> None:
    # as an upload stores them: float32 extremes
    ds = add_dataset(db, tenant_id(db), feature_range=(float(np.float32(0.1)),
                                                       float(np.float32(7.9))))
    spec = small_spec(ds.id, model={"hidden_layers": [8], "visible_units": "bernoulli"})
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == ["body", "model", "visible_units"]
    assert resp.json()["detail"].endswith("this dataset spans [0.1, 7.9]")
    spec["model"]["visible_units"] = "auto"
    assert client.post("/v1/jobs", json=spec, headers=auth_a).status_code == 202


def test_too_many_parameters_for_the_dataset_is_422(client, db, auth_a, published) -> None:
    wide = add_dataset(db, tenant_id(db), n_features=8000)
    spec = small_spec(wide.id, model={"hidden_layers": [8000]})  # 64M weights
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422
    assert "exceeds" in resp.json()["detail"]
    spec["model"]["hidden_layers"] = [1000]
    assert client.post("/v1/jobs", json=spec, headers=auth_a).status_code == 202


def test_idempotency_key_replays_or_rejects(client, db, auth_a, ds_a, published) -> None:
    headers = {**auth_a, "Idempotency-Key": "abc-1"}
    first = client.post("/v1/jobs", json=small_spec(ds_a.id), headers=headers)
    again = client.post("/v1/jobs", json=small_spec(ds_a.id), headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(published) == 1
    other = client.post("/v1/jobs", json=small_spec(ds_a.id, seed=9), headers=headers)
    assert other.status_code == 422
    assert other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert len(db.scalars(select(Job)).all()) == 1


# ---------------------------------------------------------------- GET /v1/jobs[/{id}]


def test_get_job_with_etag_and_304(client, db, auth_a, auth_b) -> None:
    job = add_job(db, tenant_id(db), JobStatus.running, phase="pretrain", layer=0, epoch=2,
                  progress=0.25)
    resp = client.get(f"/v1/jobs/{job.id}", headers=auth_a)
    assert resp.status_code == 200
    body = resp.json()
    assert {k: body[k] for k in ("status", "phase", "layer", "epoch", "progress")} == {
        "status": "running", "phase": "pretrain", "layer": 0, "epoch": 2, "progress": 0.25}
    for key in ("status_reason", "attempt", "spec", "dataset_id", "created_at", "started_at",
                "finished_at", "heartbeat_at", "result"):
        assert key in body
    etag = resp.headers["etag"]
    cached = client.get(f"/v1/jobs/{job.id}", headers={**auth_a, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    job.progress = 0.5
    db.commit()
    changed = client.get(f"/v1/jobs/{job.id}", headers={**auth_a, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert client.get(f"/v1/jobs/{job.id}", headers=auth_b).status_code == 404


def test_list_pages_walk_all_jobs_newest_first(client, db, auth_a, auth_b) -> None:
    owner = tenant_id(db)
    base = utcnow()
    ids = [add_job(db, owner, created_at=base + timedelta(seconds=i)).id for i in range(7)]
    # Two jobs with the same created_at: the id breaks the tie, nothing is skipped.
    ids.append(add_job(db, owner, created_at=base + timedelta(seconds=3)).id)
    add_job(db, tenant_id(db, "tenant-b"))
    seen, token, pages = [], None, 0
    while True:
        params = {"page_size": 3, **({"page_token": token} if token else {})}
        page = client.get("/v1/jobs", params=params, headers=auth_a).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
    assert pages == 3 and sorted(seen) == sorted(ids) and len(set(seen)) == len(seen)
    created = [db.get(Job, i).created_at for i in seen]
    assert created == sorted(created, reverse=True)


def test_list_filters_by_status_and_rejects_bad_tokens(client, db, auth_a) -> None:
    owner = tenant_id(db)
    running = add_job(db, owner, JobStatus.running)
    add_job(db, owner, JobStatus.queued)
    page = client.get("/v1/jobs", params={"status": "running"}, headers=auth_a).json()
    assert [j["id"] for j in page["items"]] == [running.id] and page["next_page_token"] is None
    for token in ("!!!", "bm90LWpzb24"):
        resp = client.get("/v1/jobs", params={"page_token": token}, headers=auth_a)
        assert resp.status_code == 422
    assert client.get("/v1/jobs", params={"page_size": 0}, headers=auth_a).status_code == 422
    assert client.get("/v1/jobs", params={"page_size": 201}, headers=auth_a).status_code == 422


# ---------------------------------------------------------------- metrics, checkpoints


def test_metrics_since_and_limit(client, db, auth_a, auth_b) -> None:
    job = add_job(db, tenant_id(db), JobStatus.running)
    add_points(db, job, 5)
    resp = client.get(f"/v1/jobs/{job.id}/metrics", params={"since": 2}, headers=auth_a).json()
    assert [p["seq"] for p in resp["items"]] == [3, 4, 5] and resp["next_since"] == 5
    assert resp["items"][0] == {**resp["items"][0], "phase": "pretrain", "layer": 0, "epoch": 3,
                                 "name": "reconstruction_error"}
    assert resp["items"][0]["value"] == pytest.approx(1 / 3)
    limited = client.get(f"/v1/jobs/{job.id}/metrics", params={"limit": 2}, headers=auth_a).json()
    assert [p["seq"] for p in limited["items"]] == [1, 2] and limited["next_since"] == 2
    empty = client.get(f"/v1/jobs/{job.id}/metrics", params={"since": 5}, headers=auth_a).json()
    assert empty == {"items": [], "next_since": 5}
    assert client.get(f"/v1/jobs/{job.id}/metrics", params={"limit": 10001},
                      headers=auth_a).status_code == 422
    assert client.get(f"/v1/jobs/{job.id}/metrics", headers=auth_b).status_code == 404


def test_checkpoints_list(client, db, auth_a, auth_b) -> None:
    from drtrain.kit.models import Checkpoint

    job = add_job(db, tenant_id(db), JobStatus.running)
    db.add(Checkpoint(job_id=job.id, kind="layer", phase="pretrain", layer=0, epoch=4, attempt=1,
                      object_key="k/1", sha256="a" * 64, size_bytes=10))
    db.flush()
    resp = client.get(f"/v1/jobs/{job.id}/checkpoints", headers=auth_a)
    assert resp.status_code == 200
    body = resp.json()
    assert body["next_page_token"] is None
    [ck] = body["items"]
    assert {k: ck[k] for k in ("kind", "layer", "epoch", "sha256", "size_bytes")} == {
        "kind": "layer", "layer": 0, "epoch": 4, "sha256": "a" * 64, "size_bytes": 10}
    assert "id" in ck and "created_at" in ck
    assert client.get(f"/v1/jobs/{job.id}/checkpoints", headers=auth_b).status_code == 404


# ---------------------------------------------------------------- cancel


def test_cancel_queued_job_is_immediate(client, db, auth_a) -> None:
    job = add_job(db, tenant_id(db))
    resp = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "cancelled" and body["status_reason"] == "cancelled by user"
    assert body["finished_at"] is not None


def test_cancel_running_job_asks_the_worker(client, db, auth_a) -> None:
    job = add_job(db, tenant_id(db), JobStatus.running)
    resp = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert resp.status_code == 202
    assert resp.json()["status"] == "cancelling" and resp.json()["cancel_requested"] is True
    again = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert again.status_code == 202 and again.json()["status"] == "cancelling"
    db.expire_all()
    assert db.get(Job, job.id).status == JobStatus.cancelling


def test_cancel_signals_the_running_jobs_worker_directly(client, db, auth_a, settings) -> None:
    """Embedded mode's direct path: a flag the worker looks for between batches
    (drtrain.kit.cancel_signal); a queued job is cancelled on the spot and needs none."""
    running = add_job(db, tenant_id(db), JobStatus.running)
    queued = add_job(db, tenant_id(db))
    assert client.post(f"/v1/jobs/{running.id}/cancel", headers=auth_a).status_code == 202
    assert client.post(f"/v1/jobs/{queued.id}/cancel", headers=auth_a).status_code == 202
    flags = settings.broker_folder / "cancel"
    assert (flags / running.id).exists() and not (flags / queued.id).exists()


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed])
def test_cancel_terminal_job_is_409(client, db, auth_a, status) -> None:
    # (A cancelled job answers 200: tests/api/test_job_lifecycle_api.py.)
    job = add_job(db, tenant_id(db), status)
    resp = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert resp.status_code == 409
    assert resp.json()["detail"] == f"job {job.id} has already {status}: there is nothing to cancel"
    db.expire_all()
    assert db.get(Job, job.id).status == status


def test_cancel_retries_once_when_the_worker_moves_the_job(client, db, auth_a,
                                                           monkeypatch) -> None:
    """The job is claimed between our read and our UPDATE: the queued->cancelled UPDATE
    matches no row, and the retry cancels it as a running job instead."""
    from drtrain.jobs import lifecycle

    job = add_job(db, tenant_id(db))
    real = lifecycle.transition
    raced = {"done": False}

    def racing(session, job_id, expected, **values):  # noqa: ANN001, ANN003, ANN202
        if not raced["done"]:
            raced["done"] = True
            session.execute(text("UPDATE jobs SET status = 'running' WHERE id = :id"), {"id": job_id})
        return real(session, job_id, expected, **values)

    monkeypatch.setattr(lifecycle, "transition", racing)
    resp = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert resp.status_code == 202 and resp.json()["status"] == "cancelling"


def test_cancel_other_tenants_job_is_404(client, db, auth_a, auth_b) -> None:
    job = add_job(db, tenant_id(db))
    assert client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_b).status_code == 404
    db.expire_all()
    assert db.get(Job, job.id).status == JobStatus.queued
