"""``/v1/datasets``: every format, every malformed case, limits, auth, tenancy, built-ins.

An upload is answered 202 (``validating``) and checked afterwards, in a process of its own;
the test client returns only once the response's background check has run, so a GET right
after an upload sees its outcome (``ready``, or ``failed`` with the reason).
"""
from __future__ import annotations

import gzip
import hashlib
import io
from datetime import UTC

import numpy as np
import pytest
from sqlalchemy import func, select

from drtrain.datasets.loading import load_arrays
from drtrain.datasets.repository import object_prefix
from drtrain.kit.models import Dataset, DatasetStatus, Job, JobStatus
from drtrain.tenants.repository import tenant_by_name
from tests.factories import checked, idx_bytes, npz_bytes, upload, upload_ready


def refusal(client, headers, resp) -> str:  # noqa: ANN001
    """Why a malformed upload was refused: at once (422) when its headers show it, else by
    its check (202, then ``failed`` with the reason)."""
    if resp.status_code == 422:
        assert resp.headers["content-type"] == "application/problem+json"
        return resp.json()["detail"]
    body = checked(client, headers, resp)
    assert body["status"] == "failed" and body["n_samples"] is None, body
    return body["status_reason"]


def dataset_count(db) -> int:  # noqa: ANN001
    """Datasets a job could use (a failed upload's row stays, to say why, but holds nothing)."""
    return db.scalar(select(func.count()).select_from(Dataset)
                     .where(Dataset.status != DatasetStatus.failed))


def stored_files(settings) -> list:  # noqa: ANN001
    root = settings.data_dir.parent / "objects"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ------------------------------------------------------------------ CSV
def test_csv_upload_describes_and_stores_the_file(client, auth_a, digits_csv, store, db):
    body = upload_ready(client, auth_a, digits_csv, "digits.csv", name="digits")
    assert body["format"] == "csv" and body["name"] == "digits"
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (200, 64, 10)
    assert sum(body["class_counts"].values()) == 200
    assert body["feature_range"] == [0.0, 16.0]
    assert body["visible_units_hint"] == "gaussian"
    assert body["sha256"] == hashlib.sha256(digits_csv).hexdigest()
    assert body["size_bytes"] == len(digits_csv)
    row = db.get(Dataset, body["id"])
    assert store.exists(row.object_key)
    assert b"".join(store.iter_range(row.object_key)) == digits_csv

    assert client.get(f"/v1/datasets/{body['id']}", headers=auth_a).json() == body
    listed = client.get("/v1/datasets", headers=auth_a).json()["items"]
    assert body in listed


def test_csv_in_unit_range_hints_bernoulli_and_keeps_side_info(client, auth_a, store, settings,
                                                               db, tmp_path):
    csv_text = "a,b,group,label\n0,1,g1,cat\n0.5,0.25,g2,dog\n1,0,g1,dog\n"
    body = upload_ready(client, auth_a, csv_text.encode(), side_info_column="group")
    assert body["visible_units_hint"] == "bernoulli"
    assert body["n_features"] == 2  # the group column is not a feature
    assert body["feature_names"] == ["a", "b"]  # in the model's order, label and side left out
    assert client.get(f"/v1/datasets/{body['id']}", headers=auth_a).json()["feature_names"] \
        == ["a", "b"]
    assert body["class_counts"] == {"cat": 1, "dog": 2}
    assert body["side_info_column"] == "group"

    data = load_arrays(store, db.get(Dataset, body["id"]), None, settings, tmp_path / "work")
    np.testing.assert_array_equal(data.X, np.array([[0, 1], [0.5, 0.25], [1, 0]], np.float32))
    assert data.classes == ["cat", "dog"]
    assert data.y.tolist() == [0, 1, 1]
    assert data.groups.tolist() == [0, 1, 0]


@pytest.mark.parametrize(("content", "fragment"), [
    (b"a,b,label\n1,2,x\n1,2\n", "row 2: 2 fields, the header has 3"),
    (b"a,b,label\n1,zz,x\n3,4,y\n", "row 1, column 'b': 'zz' is not a number"),
    (b"a,b,label\n1,2,x\n3,,y\n", "row 2, column 'b': empty; a feature needs a number"),
    (b"a,b,label\n1,2,x\nnan,4,y\n", "row 2, column 'a'"),
    (b"a,b,label\n1,inf,x\n3,4,y\n", "not finite"),
    (b"a,b,label\n1,1e39,x\n3,4,y\n", "overflows float32"),
    (b"1,2,3\n4,5,6\n", "header row"),
    (b"a,b,target\n1,2,x\n3,4,y\n", "label column 'label' not found (columns: a, b, target); "
                                   "a file without labels still needs the column: add an "
                                   "empty 'label' column"),
    (b"a,b,Label\n1,2,x\n3,4,y\n", "label column 'label' not found (columns: a, b, Label); "
                                  "did you mean 'Label'? (names are compared exactly)"),
    (b"a;b;label\n1;2;x\n3;4;y\n", "the header holds ';' between names"),
    (b"a,b,label\n", "no rows"),
    (b"a,b,label\n1,2,x\n3,4,x\n", "one class"),
    (b"", "empty"),
    (b"a,b,label\n1,2,\n3,4,y\n", "the labels hold one class only ('y')"),
    (b"label\nx\ny\n", "no feature columns"),
    (b"a,a,label\n1,2,x\n3,4,y\n", "column names must be unique; ['a'] appear more than once"),
    (b"a,b,label\n\xff\xfe,2,x\n", "not readable CSV"),
])
def test_malformed_csv_is_refused_naming_the_problem(client, auth_a, db, settings, content,
                                                     fragment):
    assert fragment in refusal(client, auth_a, upload(client, auth_a, content))
    assert dataset_count(db) == 0
    assert stored_files(settings) == []


def test_a_header_alone_is_422_at_once(client, auth_a):
    resp = upload(client, auth_a, b"a,b,label\n")
    assert resp.status_code == 422
    assert "the dataset has no rows" in resp.json()["detail"]
    # a blank line after the header is no proof that no row follows: the check decides
    later = upload(client, auth_a, b"a,b,label\n\n1,2,x\n3,4,y\n")
    assert later.status_code == 202, later.text


def test_a_header_without_feature_columns_is_422_at_once(client, auth_a):
    resp = upload(client, auth_a, b"a,label\n1,x\n2,y\n", side_info_column="a")
    assert resp.status_code == 422
    assert "no feature columns" in resp.json()["detail"]


def test_csv_side_info_column_must_exist(client, auth_a):
    resp = upload(client, auth_a, b"a,label\n1,x\n2,y\n", side_info_column="nope")
    assert resp.status_code == 422
    assert "'nope'" in resp.json()["detail"]


def test_csv_with_too_many_columns_is_refused(client, auth_a):
    header = ",".join(f"c{i}" for i in range(100_001)) + ",label\n"
    resp = upload(client, auth_a, header.encode())
    assert resp.status_code == 422
    assert "limit 100000" in resp.json()["detail"]


# ------------------------------------------------------------------ NPZ
def test_npz_upload(client, auth_a, store, settings, db, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2, 3))
    y = np.repeat(np.array([3, 1, 2]), 10)
    groups = np.tile(np.array(["u", "v"]), 15)
    body = upload_ready(client, auth_a, npz_bytes(X=X, y=y, groups=groups), "arrays.npz")
    assert body["format"] == "npz"
    assert body["feature_names"] is None  # arrays name no columns
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (30, 6, 3)
    assert body["class_counts"] == {"1": 10, "2": 10, "3": 10}
    assert body["visible_units_hint"] == "gaussian"
    data = load_arrays(store, db.get(Dataset, body["id"]), None, settings, tmp_path)
    np.testing.assert_allclose(data.X, X.reshape(30, 6).astype(np.float32))
    assert [data.classes[i] for i in data.y] == [str(v) for v in y]
    assert data.groups.tolist() == [0, 1] * 15


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"X": np.zeros((4, 2))}, "array 'y': missing"),
    ({"X": np.zeros((4, 2)), "y": np.arange(3)}, "array 'y': shape (3,)"),
    ({"X": np.array([[1.0, np.nan], [0, 1]]), "y": np.arange(2)}, "row 0, feature 1 is not finite"),
    ({"X": np.array([["a", "b"], ["c", "d"]]), "y": np.arange(2)}, "not numeric"),
    ({"X": np.zeros(4), "y": np.arange(4)}, "expected (samples, features)"),
    ({"X": np.zeros((4, 2)), "y": np.zeros(4)}, "one class"),
    ({"X": np.zeros((4, 2)), "y": np.array([0.5, 1, 0, 1])}, "whole numbers"),
    ({"X": np.zeros((4, 2)), "y": np.arange(4), "groups": np.arange(3)}, "array 'groups'"),
])
def test_malformed_npz_is_refused(client, auth_a, db, settings, arrays, fragment):
    assert fragment in refusal(client, auth_a, upload(client, auth_a, npz_bytes(**arrays), "bad.npz"))
    assert stored_files(settings) == []
    assert dataset_count(db) == 0


def test_npz_object_arrays_are_never_unpickled(client, auth_a):
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, {"b": 2}]
    resp = upload(client, auth_a, npz_bytes(X=obj, y=np.arange(2)), "evil.npz")
    assert resp.status_code == 422
    assert "plain numeric" in resp.json()["detail"]


def test_npz_that_is_not_a_zip(client, auth_a):
    resp = upload(client, auth_a, b"this is not a zip archive", "fake.npz")
    assert resp.status_code == 422
    assert "not a valid NPZ" in resp.json()["detail"]


def test_npz_decompressed_size_is_bounded(app, client, auth_a):
    app.state.settings = app.state.settings.model_copy(update={"max_decompressed_bytes": 4096})
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.zeros((100, 100)), y=np.arange(100) % 2)
    assert len(buf.getvalue()) < 4096  # small on the wire, 80 kB inside
    resp = upload(client, auth_a, buf.getvalue(), "bomb.npz")
    assert resp.status_code == 422
    assert "more than the limit 4096" in resp.json()["detail"]


# ------------------------------------------------------------------ IDX
def test_idx_upload(client, auth_a, store, settings, db, tmp_path):
    images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    body = upload_ready(client, auth_a, idx_bytes(images), "imgs-idx3-ubyte.gz",
                        labels=idx_bytes(labels))
    assert body["format"] == "idx"
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (6, 16, 3)
    assert body["feature_range"] == [0.0, 95.0]
    data = load_arrays(store, db.get(Dataset, body["id"]), None, settings, tmp_path)
    np.testing.assert_array_equal(data.X, images.reshape(6, 16).astype(np.float32))
    assert data.y.tolist() == labels.tolist()


def test_idx_float_images_uncompressed(client, auth_a):
    images = np.linspace(0, 1, 4 * 9).reshape(4, 3, 3).astype(np.float32)
    labels = np.array([1, 0, 1, 0], dtype=np.uint8)
    body = upload_ready(client, auth_a, idx_bytes(images, 0x0D, gz=False), "imgs.idx",
                        labels=idx_bytes(labels, gz=False))
    assert body["visible_units_hint"] == "bernoulli"


def _images() -> np.ndarray:
    return np.zeros((4, 2, 2), dtype=np.uint8)


@pytest.mark.parametrize(("images", "labels", "fragment"), [
    (idx_bytes(_images()), None, "labels_file: an IDX upload needs its labels file"),
    (gzip.compress(b"\x01\x02\x08\x03" + b"\x00" * 40), idx_bytes(np.arange(4, dtype=np.uint8)),
     "wrong IDX magic"),
    (idx_bytes(_images()), idx_bytes(np.arange(5, dtype=np.uint8)), "5 labels for 4 images"),
    (idx_bytes(_images()), idx_bytes(np.zeros((4, 1), dtype=np.uint8)), "expected (samples,)"),
    (idx_bytes(_images(), dims=(4, 3, 3)), idx_bytes(np.arange(4, dtype=np.uint8)),
     "dimensions [4, 3, 3] need 36"),
    (idx_bytes(np.zeros(0, dtype=np.uint8), dims=(60000, 5000, 5000)),
     idx_bytes(np.arange(4, dtype=np.uint8)), "more than the limit"),
    (idx_bytes(_images()) [:-3], idx_bytes(np.arange(4, dtype=np.uint8)), "not a readable IDX"),
    (idx_bytes(_images()), idx_bytes(np.zeros(4, dtype=np.uint8)), "one class"),
])
def test_malformed_idx_is_refused(client, auth_a, db, settings, images, labels, fragment):
    assert fragment in refusal(client, auth_a, upload(client, auth_a, images, "images.gz",
                                                      labels=labels))
    assert stored_files(settings) == []
    assert dataset_count(db) == 0


def test_labels_file_only_with_idx(client, auth_a):
    resp = upload(client, auth_a, b"a,label\n1,x\n2,y\n", labels=b"whatever")
    assert resp.status_code == 422
    assert "labels_file" in resp.json()["detail"]


# ------------------------------------------------------------------ limits and auth
def test_upload_over_the_limit_is_413_and_leaves_nothing(app, client, auth_a, db, settings):
    app.state.settings = app.state.settings.model_copy(update={"max_upload_bytes": 2048})
    content = b"a,label\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(3000))
    # Content-Length is not trusted: the body is counted as it streams.
    resp = upload(client, auth_a, content)
    assert resp.status_code == 413, resp.text
    assert resp.json()["type"].endswith("/too-large")
    assert dataset_count(db) == 0
    assert stored_files(settings) == []


def test_file_just_under_the_limit_is_accepted(app, client, auth_a):
    app.state.settings = app.state.settings.model_copy(update={"max_upload_bytes": 2048})
    content = b"a,label\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(200))
    assert len(content) < 2048
    upload_ready(client, auth_a, content)


def test_missing_file_part_is_422(client, auth_a):
    resp = client.post("/v1/datasets", headers=auth_a, files={"other": ("x.csv", b"a")})
    assert resp.status_code == 422
    assert "'file'" in resp.json()["detail"]


def test_json_body_is_422(client, auth_a):
    resp = client.post("/v1/datasets", headers=auth_a, json={"file": "x"})
    assert resp.status_code == 422
    assert "multipart" in resp.json()["detail"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer drt_not-a-real-key"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
])
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/datasets"), ("GET", "/v1/datasets/builtin:digits"),
    ("DELETE", "/v1/datasets/abc"), ("POST", "/v1/datasets"),
])
def test_missing_or_wrong_key_is_401(client, tenant_a_key, headers, method, path):
    resp = client.request(method, path, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"] == "Bearer"
    assert tenant_a_key not in resp.text


def test_revoked_key_is_401(app, client, db, tenant_a_key, auth_a):
    from datetime import datetime

    from drtrain.kit.models import ApiKey

    assert client.get("/v1/datasets", headers=auth_a).status_code == 200
    for key in db.scalars(select(ApiKey)):
        key.revoked_at = datetime.now(UTC)
    db.flush()
    # A key stays cached for DRTRAIN_AUTH_CACHE_SECONDS (tests/api/test_reads.py covers that
    # window); past it the key is checked again.
    app.state.key_cache.clear()
    assert client.get("/v1/datasets", headers=auth_a).status_code == 401


# ------------------------------------------------------------------ tenancy and delete
def test_other_tenant_sees_404_and_cannot_delete(client, auth_a, auth_b, digits_csv):
    ds = upload_ready(client, auth_a, digits_csv)
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth_b).status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth_b).status_code == 404
    assert ds["id"] not in {d["id"] for d in client.get("/v1/datasets", headers=auth_b)
                            .json()["items"]}
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth_a).status_code == 200


@pytest.mark.parametrize(("field", "status"), [
    ("dataset_id", JobStatus.queued), ("dataset_id", JobStatus.running),
    ("test_dataset_id", JobStatus.cancelling),
])
def test_delete_refused_while_an_active_job_uses_it(client, auth_a, db, store, digits_csv,
                                                    field, status):
    ds = upload_ready(client, auth_a, digits_csv)
    tenant = tenant_by_name(db, "tenant-a")
    refs = {"dataset_id": "builtin:digits", "test_dataset_id": None, field: ds["id"]}
    job = Job(tenant_id=tenant.id, spec={}, status=status, **refs)
    db.add(job)
    db.flush()
    resp = client.delete(f"/v1/datasets/{ds['id']}", headers=auth_a)
    assert resp.status_code == 409
    # the refusal names the job that blocks it, so a person knows what to cancel
    assert f"used by job {job.id} ({status.value})" in resp.json()["detail"]
    assert store.exists(db.get(Dataset, ds["id"]).object_key)

    job.status = JobStatus.succeeded  # finished jobs no longer hold the dataset
    db.flush()
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth_a).status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth_a).status_code == 404


def test_delete_removes_the_objects(client, auth_a, db, settings, store):
    images = np.arange(4 * 4, dtype=np.uint8).reshape(4, 2, 2)
    ds = upload_ready(client, auth_a, idx_bytes(images), "i.gz",
                      labels=idx_bytes(np.array([0, 1, 0, 1], np.uint8)))
    row = db.get(Dataset, ds["id"])
    keys = [row.object_key, row.labels_object_key]
    assert all(store.exists(k) for k in keys)
    folder = store.root / object_prefix(row.tenant_id, ds["id"])
    assert folder.is_dir()
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth_a).status_code == 204
    assert not any(store.exists(k) for k in keys)
    assert not folder.exists()  # no empty folder left behind either


def test_unknown_dataset_is_404(client, auth_a):
    assert client.get("/v1/datasets/nope", headers=auth_a).status_code == 404
    assert client.get("/v1/datasets/builtin:nope", headers=auth_a).status_code == 404


# ------------------------------------------------------------------ built-ins
def test_builtin_digits_listed_for_every_tenant(client, auth_a, auth_b):
    for headers in (auth_a, auth_b):
        items = {d["id"]: d for d in client.get("/v1/datasets", headers=headers).json()["items"]}
        digits = items["builtin:digits"]
        assert digits["builtin"] is True
        assert (digits["n_samples"], digits["n_features"], digits["n_classes"]) == (1797, 64, 10)
        assert digits["feature_range"] == [0.0, 1.0]
        assert digits["visible_units_hint"] == "bernoulli"
        assert "builtin:fashion-mnist" not in items  # its folder is absent in these tests
    assert client.get("/v1/datasets/builtin:digits", headers=auth_a).json() == digits
    assert client.delete("/v1/datasets/builtin:digits", headers=auth_a).status_code == 409


def test_builtin_fashion_mnist_when_its_files_exist(app, client, auth_a, tmp_path, store):
    folder = tmp_path / "fashion"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 12), ("t10k", 5)):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            idx_bytes(rng.integers(0, 256, size=(n, 3, 3), dtype=np.uint8)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            idx_bytes((np.arange(n) % 10).astype(np.uint8)))
    settings = app.state.settings.model_copy(update={"fashion_mnist_dir": folder})
    app.state.settings = settings
    items = {d["id"]: d for d in client.get("/v1/datasets", headers=auth_a).json()["items"]}
    assert items["builtin:fashion-mnist"]["n_samples"] == 12
    assert items["builtin:fashion-mnist-test"]["n_samples"] == 5
    assert items["builtin:fashion-mnist"]["n_features"] == 9
    assert items["builtin:fashion-mnist"]["visible_units_hint"] == "bernoulli"
    data = load_arrays(store, None, "builtin:fashion-mnist", settings, tmp_path / "w")
    assert data.X.shape == (12, 9) and data.X.dtype == np.float32
    assert 0.0 <= data.X.min() and data.X.max() <= 1.0
    assert data.classes == [str(i) for i in range(10)]

    from drtrain.datasets import builtins

    assert builtins.test_split_id("builtin:fashion-mnist") == "builtin:fashion-mnist-test"
    assert builtins.test_split_id("builtin:digits") is None


def test_builtin_digits_arrays(store, settings, tmp_path):
    data = load_arrays(store, None, "builtin:digits", settings, tmp_path)
    assert data.X.shape == (1797, 64) and data.X.dtype == np.float32
    assert data.X.max() == 1.0 and data.X.min() == 0.0
    assert np.bincount(data.y).tolist()[0] == 178
    assert data.groups is None
