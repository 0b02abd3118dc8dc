"""Integrity on serve: a model altered in the store (same size) is never served as if it were
right. Predict answers a 500 problem+json naming the integrity failure and caches nothing, so
restoring the file is enough; a full download is aborted before its last bytes, and later
requests get a clean 500 until the object verifies again. HEAD and If-Range on the model."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest

from drtrain.jobs.predict import load_model, model_cache
from drtrain.kit import integrity
from drtrain.kit.models import Checkpoint, JobStatus
from tests.factories import add_job, make_model_bytes, tenant_id

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

INPUTS = np.random.default_rng(1).normal(size=(64, 3)).tolist()
BIG = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: several 1 MiB store chunks


def _succeeded_with(db, store, data: bytes):  # noqa: ANN001, ANN202
    job = add_job(db, tenant_id(db), JobStatus.succeeded)
    stored = store.put_stream(f"jobs/{job.id}/attempt-1/model.safetensors", [data])
    ck = Checkpoint(job_id=job.id, kind="final", phase="finetune", attempt=1,
                    object_key=stored.key, sha256=stored.sha256, size_bytes=stored.size_bytes)
    db.add(ck)
    db.commit()
    return job, ck


def _path(store, key: str) -> Path:  # noqa: ANN001
    return Path(store.root) / key


def _flip_one_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _assert_integrity_problem(resp) -> None:  # noqa: ANN001
    assert resp.status_code == 500, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == "https://drtrain.dev/problems/integrity"
    assert body["title"] == "Integrity check failed"
    assert "sha256" in body["detail"]


def _failures(client, where: str) -> int:  # noqa: ANN001
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'drtrain_integrity_failures_total{{where="{where}"}}'):
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError("no integrity counter in /metrics")


def test_predict_refuses_an_altered_model_and_serves_the_restored_one(client, db, store,
                                                                      auth_a) -> None:
    good = make_model_bytes(d=3, seed=11)
    job, ck = _succeeded_with(db, store, good)
    expected = load_model(good).predict(np.asarray(INPUTS))[0]
    # Same size, one weight changed: the file still parses and would predict something.
    header = int.from_bytes(good[:8], "little") + 8
    bad = _flip_one_byte(good, header + 5)
    assert len(bad) == len(good) and load_model(bad) is not None
    _path(store, ck.object_key).write_bytes(bad)
    before = _failures(client, "predict")

    url = f"/v1/jobs/{job.id}/predict"
    for _ in range(2):  # and again: nothing wrong was cached by the first refusal
        _assert_integrity_problem(client.post(url, json={"inputs": INPUTS}, headers=auth_a))
    assert ck.sha256 not in model_cache._items
    assert _failures(client, "predict") == before + 2

    _path(store, ck.object_key).write_bytes(good)  # the operator restores the file
    resp = client.post(url, json={"inputs": INPUTS}, headers=auth_a)
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == expected


def test_full_download_of_an_altered_model_is_aborted_then_refused(app, client, db, store,
                                                                   auth_a) -> None:
    job, ck = _succeeded_with(db, store, BIG)
    _path(store, ck.object_key).write_bytes(_flip_one_byte(BIG, len(BIG) // 2))
    before = _failures(client, "download")
    url = f"/v1/jobs/{job.id}/model"

    # The stream starts (headers are out) and is cut before its last bytes: the client never
    # holds a complete file under the original ETag.
    got = b""
    with TestClient(app) as raw:
        with pytest.raises(integrity.StreamAborted):
            with raw.stream("GET", url, headers=auth_a) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-length"] == str(len(BIG))
                for chunk in resp.iter_bytes():
                    got += chunk
    assert len(got) < len(BIG)
    assert _failures(client, "download") == before + 1
    assert integrity.is_suspect(ck.object_key, ck.sha256)

    # From now on the failure is known before a byte is sent: a clean problem+json.
    _assert_integrity_problem(client.get(url, headers=auth_a))
    _assert_integrity_problem(client.get(url, headers={**auth_a, "Range": "bytes=0-99"}))
    assert _failures(client, "download") == before + 3

    _path(store, ck.object_key).write_bytes(BIG)
    resp = client.get(url, headers=auth_a)
    assert resp.status_code == 200 and resp.content == BIG
    assert not integrity.is_suspect(ck.object_key, ck.sha256)


def _assert_missing_problem(resp, key: str) -> None:  # noqa: ANN001
    """Gone, not altered: a bucket that comes back empty is no integrity failure."""
    assert resp.status_code == 410, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == "https://drtrain.dev/problems/object-missing"
    assert body["title"] == "Stored object missing"
    assert key in body["detail"] and "missing" in body["detail"]
    assert "sha256" not in body["detail"]


def test_a_truncated_or_missing_model_is_refused_before_streaming(client, db, store,
                                                                  auth_a) -> None:
    job, ck = _succeeded_with(db, store, BIG)
    url = f"/v1/jobs/{job.id}/model"
    _path(store, ck.object_key).write_bytes(BIG[:-1])
    _assert_integrity_problem(client.get(url, headers=auth_a))
    before = _failures(client, "download")
    _path(store, ck.object_key).unlink()
    _assert_missing_problem(client.get(url, headers=auth_a), ck.object_key)
    assert _failures(client, "download") == before + 1  # still counted for the operator
    _assert_missing_problem(client.post(f"/v1/jobs/{job.id}/predict",
                                        json={"inputs": INPUTS}, headers=auth_a), ck.object_key)


def test_head_on_the_model_gives_the_headers_without_the_body(client, db, store, auth_a,
                                                              auth_b) -> None:
    job, ck = _succeeded_with(db, store, BIG)
    url = f"/v1/jobs/{job.id}/model"
    head = client.head(url, headers=auth_a)
    assert head.status_code == 200 and head.content == b""
    get = client.get(url, headers=auth_a)
    for name in ("content-length", "etag", "accept-ranges", "content-type",
                 "content-disposition"):
        assert head.headers[name] == get.headers[name], name
    assert head.headers["etag"] == f'"{hashlib.sha256(BIG).hexdigest()}"'
    part = client.head(url, headers={**auth_a, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.headers["content-length"] == "10"
    assert client.head(url, headers=auth_b).status_code == 404
    queued = add_job(db, tenant_id(db), JobStatus.queued)
    assert client.head(f"/v1/jobs/{queued.id}/model", headers=auth_a).status_code == 409


def test_if_range_serves_the_range_only_while_the_etag_still_matches(client, db, store,
                                                                     auth_a) -> None:
    job, ck = _succeeded_with(db, store, BIG)
    url = f"/v1/jobs/{job.id}/model"
    etag = f'"{ck.sha256}"'
    same = client.get(url, headers={**auth_a, "Range": "bytes=100-199", "If-Range": etag})
    assert same.status_code == 206 and same.content == BIG[100:200]
    for stale in ('"0000"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        full = client.get(url, headers={**auth_a, "Range": "bytes=100-199", "If-Range": stale})
        assert full.status_code == 200 and full.content == BIG, stale
        assert "content-range" not in full.headers
