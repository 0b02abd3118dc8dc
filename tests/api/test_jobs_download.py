"""GET /v1/jobs/{id}/model: streaming, Range, ETag/304, 416, presigned redirect."""
from __future__ import annotations

import hashlib

import pytest

from api.http import parse_range
from drtrain.kit.errors import RangeNotSatisfiable
from drtrain.kit.models import Checkpoint, JobStatus
from tests.factories import add_job, tenant_id

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable mod 256


@pytest.fixture
def model_job(db, store, auth_a):  # noqa: ANN001, ANN201
    job = add_job(db, tenant_id(db), JobStatus.succeeded)
    stored = store.put_stream(f"jobs/{job.id}/final.safetensors", [PAYLOAD])
    db.add(Checkpoint(job_id=job.id, kind="final", phase="finetune", attempt=1,
                      object_key=stored.key, sha256=stored.sha256, size_bytes=stored.size_bytes))
    db.commit()
    return job


def test_full_download(client, auth_a, model_job) -> None:
    resp = client.get(f"/v1/jobs/{model_job.id}/model", headers=auth_a)
    assert resp.status_code == 200
    assert resp.content == PAYLOAD
    h = resp.headers
    assert h["content-length"] == str(len(PAYLOAD))
    assert h["etag"] == f'"{hashlib.sha256(PAYLOAD).hexdigest()}"'
    assert h["accept-ranges"] == "bytes"
    assert h["content-type"] == "application/octet-stream"
    assert h["content-disposition"] == f'attachment; filename="{model_job.id}.safetensors"'


@pytest.mark.parametrize("header, start, end", [
    ("bytes=100-299", 100, 299), ("bytes=10000-", 10000, 10239), ("bytes=-17", 10223, 10239),
    ("bytes=10200-99999", 10200, 10239),
])
def test_range_download_returns_the_slice(client, auth_a, model_job, header, start, end) -> None:
    resp = client.get(f"/v1/jobs/{model_job.id}/model", headers={**auth_a, "Range": header})
    assert resp.status_code == 206
    assert resp.content == PAYLOAD[start:end + 1]
    assert resp.headers["content-range"] == f"bytes {start}-{end}/{len(PAYLOAD)}"
    assert resp.headers["content-length"] == str(end - start + 1)


def test_unsatisfiable_range_is_416_problem(client, auth_a, model_job) -> None:
    resp = client.get(f"/v1/jobs/{model_job.id}/model",
                      headers={**auth_a, "Range": f"bytes={len(PAYLOAD)}-"})
    assert resp.status_code == 416
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["content-range"] == f"bytes */{len(PAYLOAD)}"


def test_if_none_match_answers_304(client, auth_a, model_job) -> None:
    etag = client.get(f"/v1/jobs/{model_job.id}/model", headers=auth_a).headers["etag"]
    resp = client.get(f"/v1/jobs/{model_job.id}/model", headers={**auth_a, "If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b""
    other = client.get(f"/v1/jobs/{model_job.id}/model",
                       headers={**auth_a, "If-None-Match": '"0000"'})
    assert other.status_code == 200


def test_redirect_to_presigned_url(app, client, auth_a, model_job, store, monkeypatch) -> None:
    plain = client.get(f"/v1/jobs/{model_job.id}/model", params={"redirect": "true"},
                       headers=auth_a)
    assert plain.status_code == 200  # the local store cannot presign: stream instead
    monkeypatch.setattr(store, "presign", lambda key, seconds: f"https://s3.test/{key}?ttl={seconds}")
    resp = client.get(f"/v1/jobs/{model_job.id}/model", params={"redirect": "true"},
                      headers=auth_a, follow_redirects=False)
    assert resp.status_code == 307
    assert resp.headers["location"].startswith(f"https://s3.test/jobs/{model_job.id}/")


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running, JobStatus.failed])
def test_no_model_before_success_is_409(client, db, auth_a, status) -> None:
    job = add_job(db, tenant_id(db), status)
    assert client.get(f"/v1/jobs/{job.id}/model", headers=auth_a).status_code == 409


def test_succeeded_without_final_checkpoint_is_404(client, db, auth_a) -> None:
    job = add_job(db, tenant_id(db), JobStatus.succeeded)
    assert client.get(f"/v1/jobs/{job.id}/model", headers=auth_a).status_code == 404


def test_other_tenant_gets_404(client, auth_b, model_job) -> None:
    assert client.get(f"/v1/jobs/{model_job.id}/model", headers=auth_b).status_code == 404


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
    ("bytes=90-500", (90, 99)), ("bytes=-500", (0, 99)),
    (None, None), ("items=0-1", None), ("bytes=0-1,5-6", None), ("bytes=x-y", None),
    ("bytes=-", None), ("bytes=9-3", None),
])
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 100)
    assert info.value.headers["Content-Range"] == "bytes */100"


def test_checkpoint_download(client, db, store, auth_a, auth_b, model_job) -> None:
    layer = store.put_stream(f"jobs/{model_job.id}/layer0.safetensors", [b"layer-zero" * 10])
    ck = Checkpoint(job_id=model_job.id, kind="layer", phase="pretrain", layer=0, epoch=3,
                    attempt=1, object_key=layer.key, sha256=layer.sha256,
                    size_bytes=layer.size_bytes)
    db.add(ck)
    db.commit()
    listed = client.get(f"/v1/jobs/{model_job.id}/checkpoints", headers=auth_a).json()["items"]
    assert {c["id"] for c in listed} >= {ck.id}
    url = f"/v1/jobs/{model_job.id}/checkpoints/{ck.id}"
    resp = client.get(url, headers=auth_a)
    assert resp.status_code == 200 and resp.content == b"layer-zero" * 10
    assert resp.headers["etag"] == f'"{layer.sha256}"'
    assert "layer" in resp.headers["content-disposition"]
    part = client.get(url, headers={**auth_a, "Range": "bytes=0-4"})
    assert part.status_code == 206 and part.content == b"layer"
    assert client.get(url, headers={**auth_a, "If-None-Match": resp.headers["etag"]}).status_code == 304
    # Another tenant, another job's checkpoint id, or an unknown id: 404 problem+json.
    assert client.get(url, headers=auth_b).status_code == 404
    missing = client.get(f"/v1/jobs/{model_job.id}/checkpoints/nosuchid", headers=auth_a)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_settings_say_the_servers_checkpoint_cadence(client, auth_a, settings) -> None:  # noqa: ANN001
    """The web app says when checkpoints are written from this, not from a copy of the default."""
    settings.checkpoint_every_epochs, settings.checkpoint_every_seconds = 7, 45.0
    body = client.get("/v1/settings", headers=auth_a).json()
    assert body == {"checkpoint_every_epochs": 7, "checkpoint_every_seconds": 45.0}
    assert client.get("/v1/settings").status_code == 401
