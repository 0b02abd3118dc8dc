"""DELETE /v1/jobs/{id}, a repeated cancel, the per-tenant storage quota, and timestamps that
always carry their UTC offset."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from drtrain.kit.models import Checkpoint, Job, JobStatus, MetricPoint
from drtrain.tenants import repository as tenants_repo
from drtrain.tenants.quota import size_text
from tests.factories import add_job, small_spec, tenant_id, upload


def _with_objects(db, store, job: Job) -> list[str]:  # noqa: ANN001
    """A final model, two epoch checkpoints, an orphan object and metric points for ``job``."""
    keys = []
    for kind, name in (("final", "attempt-1/model"), ("epoch", "checkpoints/1-a"),
                       ("epoch", "checkpoints/1-b")):
        stored = store.put_stream(f"jobs/{job.id}/{name}.safetensors", [b"x" * 100])
        db.add(Checkpoint(job_id=job.id, kind=kind, attempt=1, object_key=stored.key,
                          sha256=stored.sha256, size_bytes=stored.size_bytes))
        # Counted against the tenant's quota, as lifecycle.add_checkpoint does for a worker.
        tenants_repo.add_storage(db, job.tenant_id, stored.size_bytes)
        keys.append(stored.key)
    # What a fenced-out worker may leave: an object no row points to.
    keys.append(store.put_stream(f"jobs/{job.id}/checkpoints/9-orphan.safetensors", [b"o"]).key)
    db.add_all([MetricPoint(job_id=job.id, seq=i, attempt=1, phase="finetune", layer=None,
                            layer_key=-1, epoch=i, name="loss", value=1.0) for i in (1, 2)])
    db.commit()
    return keys


def _count(db, model, job_id: str) -> int:  # noqa: ANN001
    return db.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))


@pytest.mark.parametrize("status", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
def test_delete_an_ended_job_removes_its_rows_and_objects(client, db, store, auth_a,
                                                          status) -> None:
    job = add_job(db, tenant_id(db), status)
    keys = _with_objects(db, store, job)
    assert all(store.exists(k) for k in keys)
    resp = client.delete(f"/v1/jobs/{job.id}", headers=auth_a)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    db.expire_all()
    assert db.get(Job, job.id) is None
    assert _count(db, Checkpoint, job.id) == 0 and _count(db, MetricPoint, job.id) == 0
    assert not any(store.exists(k) for k in keys)
    assert client.get(f"/v1/jobs/{job.id}", headers=auth_a).status_code == 404
    assert client.delete(f"/v1/jobs/{job.id}", headers=auth_a).status_code == 404


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running, JobStatus.cancelling])
def test_delete_an_active_job_is_409_and_changes_nothing(client, db, store, auth_a,
                                                         status) -> None:
    job = add_job(db, tenant_id(db), status)
    keys = _with_objects(db, store, job)
    resp = client.delete(f"/v1/jobs/{job.id}", headers=auth_a)
    assert resp.status_code == 409, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert status.value in resp.json()["detail"]
    db.expire_all()
    assert db.get(Job, job.id) is not None and _count(db, Checkpoint, job.id) == 3
    assert all(store.exists(k) for k in keys)


def test_a_repeated_cancel_of_a_cancelled_job_is_idempotent(client, db, auth_a) -> None:
    job = add_job(db, tenant_id(db), JobStatus.queued)
    first = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert first.status_code == 202 and first.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    for status in (JobStatus.succeeded, JobStatus.failed):
        done = add_job(db, tenant_id(db), status)
        resp = client.post(f"/v1/jobs/{done.id}/cancel", headers=auth_a)
        assert resp.status_code == 409 and f"already {status.value}" in resp.json()["detail"]


def test_upload_past_the_storage_quota_is_413_naming_the_quota(app, client, db, store, auth_a,
                                                               digits_csv, monkeypatch) -> None:
    monkeypatch.setattr(app.state.settings, "tenant_storage_quota_bytes",
                        len(digits_csv) + 1000)
    first = upload(client, auth_a, digits_csv)
    assert first.status_code in (201, 202), first.text  # stored (checked now or later)
    second = upload(client, auth_a, digits_csv)
    assert second.status_code == 413, second.text
    body = second.json()
    assert body["type"] == "https://drtrain.dev/problems/storage-quota"
    assert body["detail"].startswith(f"this upload is {size_text(len(digits_csv))}, and the "
                                     "tenant already uses ")
    assert "storage quota exceeded" not in body["detail"].lower()  # the title says it
    listed = client.get("/v1/datasets", headers=auth_a).json()["items"]
    assert len([d for d in listed if not d.get("builtin")]) == 1


@pytest.mark.usefixtures("published")  # no broker: publishing is recorded, not sent
def test_new_jobs_are_429_while_the_tenant_is_at_its_quota(app, client, db, store, auth_a,
                                                           auth_b, monkeypatch) -> None:
    owner = tenant_id(db)
    done = add_job(db, owner, JobStatus.succeeded)
    _with_objects(db, store, done)  # 300 bytes of checkpoints
    monkeypatch.setattr(app.state.settings, "tenant_storage_quota_bytes", 300)
    resp = client.post("/v1/jobs", json=small_spec("builtin:digits"), headers=auth_a)
    assert resp.status_code == 429, resp.text
    assert resp.json()["detail"] == ("the tenant uses 300 bytes of its 300 bytes storage quota; "
                                     "delete finished jobs (DELETE /v1/jobs/{id}) or datasets "
                                     "first")
    sweep = client.post("/v1/sweeps", json={"base": small_spec("builtin:digits"),
                                            "grid": {"seed": [0, 1]}}, headers=auth_a)
    assert sweep.status_code == 429, sweep.text
    # The other tenant is not affected; deleting the finished job frees A's space.
    assert client.post("/v1/jobs", json=small_spec("builtin:digits"),
                       headers=auth_b).status_code == 202
    assert client.delete(f"/v1/jobs/{done.id}", headers=auth_a).status_code == 204
    assert client.post("/v1/jobs", json=small_spec("builtin:digits"),
                       headers=auth_a).status_code == 202


def test_timestamps_are_utc_with_an_offset(client, db, auth_a) -> None:
    # A naive value is taken as UTC, an aware one is converted: both come back the same.
    naive = datetime(2024, 5, 6, 7, 8, 9)
    aware = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    job = add_job(db, tenant_id(db), JobStatus.succeeded, started_at=naive, finished_at=aware)
    body = client.get(f"/v1/jobs/{job.id}", headers=auth_a).json()
    assert body["started_at"] == body["finished_at"] == "2024-05-06T07:08:09Z"
    assert body["created_at"].endswith("Z")
