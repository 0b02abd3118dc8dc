"""Hostile input: one table of uploads and one of job specs, each with its expected answer.

An upload is refused at once (422) when its headers show what is wrong, else by its check
after the 202 (``later``: the dataset ends ``failed`` with the reason). Every hostile upload
runs next to an existing dataset of the same tenant, and afterwards: no usable dataset row
was added, no object was left in the store, no temporary file was left behind, and the
existing dataset (row and bytes) is unchanged. Limits are set small here
(256 KiB uploads, 1 MiB decompressed) so bombs and oversized bodies stay cheap to build.
"""
from __future__ import annotations

import gzip
import io
import struct
import tempfile
import tracemalloc
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from drtrain.kit.models import Dataset, DatasetStatus
from tests.factories import add_dataset, checked, idx_bytes, npz_bytes, small_spec, tenant_id

MAX_UPLOAD = 256 * 1024
MAX_DECOMPRESSED = 1024 * 1024
BOUNDARY = "hostile-boundary-7d1f"
GOOD_CSV = b"a,b,label\n0,1,x\n1,0,y\n0.5,0.5,x\n"


# ---------------------------------------------------------------- building raw bodies
def multipart(file: bytes, filename: str = "data.csv", *, labels: bytes | None = None,
              **fields: str) -> bytes:
    """A multipart body written byte by byte, so filenames and fields reach the server
    exactly as given (an HTTP client would percent-encode a NUL, for instance)."""
    out = io.BytesIO()

    def part(disposition: str, payload: bytes) -> None:
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n")
        out.write(head.encode())
        out.write(payload + b"\r\n")

    for name, value in fields.items():
        part(f'name="{name}"', value.encode())
    part(f'name="file"; filename="{filename}"', file)
    if labels is not None:
        part('name="labels_file"; filename="labels.gz"', labels)
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def npz_raw(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy_header_only(shape: tuple[int, ...], dtype: str = "<f8", body: bytes = b"") -> bytes:
    """An .npy member whose header declares ``shape`` but carries only ``body``."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def npz_with_lying_size() -> bytes:
    """A zip whose directory says its member is small while it inflates to much more."""
    real = np.zeros(200_000).tobytes()  # 1.6 MB of zeros, deflates to almost nothing
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("X.npy", npy_header_only((200_000,), body=real))
        zf.writestr("y.npy", npy_header_only((2,), "<i8", bytes(16)))
    data = bytearray(buf.getvalue())
    # Patch the uncompressed size (local header offset 22, central directory offset 24).
    true_size = struct.pack("<I", len(npy_header_only((200_000,), body=real)))
    fake_size = struct.pack("<I", 1000)
    return bytes(data).replace(true_size, fake_size)


def gzip_bomb_idx() -> bytes:
    """A consistent-looking IDX header over 8 MB of zeros: some 8 kB on the wire."""
    dims = (2000, 64, 64)
    return gzip.compress(bytes([0, 0, 0x08, 3]) + b"".join(struct.pack(">I", d) for d in dims)
                         + bytes(2000 * 64 * 64), compresslevel=9)


def trailing_bomb_idx() -> bytes:
    """A small valid IDX followed by megabytes of zeros inside the same gzip stream."""
    head = idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8), gz=False)
    return gzip.compress(head + bytes(4 * 1024 * 1024), compresslevel=9)


def npz_compressed(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def pickled_npz() -> bytes:
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, {"b": 2}]
    return npz_bytes(X=obj, y=np.arange(2))


LABELS4 = idx_bytes(np.array([0, 1, 0, 1], dtype=np.uint8))
IMAGES4 = idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8))
WIDE_HEADER = (",".join(f"c{i}" for i in range(1_000_000)) + ",label\n").encode()


@dataclass(frozen=True)
class Hostile:
    id: str
    body: Callable[[], bytes]  # the whole multipart body
    status: int
    phrase: str
    headers: dict[str, str] = field(default_factory=dict)
    later: bool = False  # found by the check after the 202, not by the headers


def up(file: bytes | Callable[[], bytes], filename: str = "data.csv", **kw) -> Callable[[], bytes]:
    return lambda: multipart(file() if callable(file) else file, filename, **kw)


HOSTILE = [
    # size
    Hostile("oversized", up(b"a,label\n" + b"1,0\n" * 80_000), 413, "exceeds the limit"),
    Hostile("content-length-lies-small", up(b"a,label\n" + b"1,0\n" * 80_000), 413,
            "exceeds the limit", {"Content-Length": "1000"}),
    # IDX
    Hostile("idx-gzip-bomb", up(gzip_bomb_idx, "images.gz", labels=LABELS4), 422,
            "more than the limit"),
    Hostile("idx-bomb-after-body", up(trailing_bomb_idx, "images.gz", labels=LABELS4), 422,
            "data after the IDX body", later=True),
    Hostile("idx-huge-dims", up(idx_bytes(np.zeros(0, np.uint8), dims=(60000, 5000, 5000)),
                                "images.gz", labels=LABELS4), 422, "more than the limit"),
    Hostile("idx-wrong-magic", up(gzip.compress(b"\x01\x02\x08\x03" + bytes(40)), "images.gz",
                                  labels=LABELS4), 422, "wrong IDX magic"),
    Hostile("idx-dims-vs-data", up(idx_bytes(np.zeros((4, 2, 2), np.uint8), dims=(4, 3, 3)),
                                   "images.gz", labels=LABELS4), 422, "need 36", later=True),
    Hostile("idx-length-mismatch", up(IMAGES4, "images.gz",
                                      labels=idx_bytes(np.arange(5, dtype=np.uint8))), 422,
            "5 labels for 4 images"),
    Hostile("idx-truncated-gzip", up(IMAGES4[:-3], "images.gz", labels=LABELS4), 422,
            "not a readable IDX", later=True),
    Hostile("idx-no-labels", up(IMAGES4, "images.gz"), 422, "needs its labels file"),
    # CSV
    Hostile("csv-ragged", up(b"a,b,label\n1,2,x\n1,y\n"), 422, "row 2: 2 fields", later=True),
    Hostile("csv-non-numeric", up(b"a,label\n1,x\nabc,y\n"), 422, "'abc' is not a number",
            later=True),
    Hostile("csv-nan", up(b"a,label\n1,x\nnan,y\n"), 422, "not finite", later=True),
    Hostile("csv-inf", up(b"a,label\n-inf,x\n1,y\n"), 422, "not finite", later=True),
    Hostile("csv-float32-overflow", up(b"a,label\n1e39,x\n1,y\n"), 422, "overflows float32",
            later=True),
    Hostile("csv-empty", up(b""), 422, "empty"),
    Hostile("csv-header-only", up(b"a,b,label\n"), 422, "no rows"),
    # Empty names are the densest header (one byte a column); a million is tested below.
    Hostile("csv-too-many-columns", up(b"," * 120_000 + b"label\n"), 422, "limit 100000"),
    Hostile("csv-label-missing", up(b"a,b\n1,2\n3,4\n"), 422, "label column 'label' not found"),
    Hostile("csv-single-class", up(b"a,label\n1,x\n2,x\n"), 422, "one class", later=True),
    Hostile("csv-not-utf8", up(b"a,label\n1,\xff\xfe\n2,y\n"), 422, "not readable CSV"),
    Hostile("csv-not-utf8-later", up(b"a,label\n" + b"1,x\n" * 5000 + b"1,\xff\xfe\n2,y\n"), 422,
            "not readable CSV", later=True),
    Hostile("csv-duplicate-columns", up(b"a,a,label\n1,2,x\n3,4,y\n"), 422, "unique"),
    Hostile("csv-no-header", up(b"1,2,3\n4,5,6\n"), 422, "header row naming the columns"),
    # NPZ
    Hostile("npz-pickled-objects", up(pickled_npz, "evil.npz"), 422, "plain numeric"),
    Hostile("npz-missing-X", up(npz_bytes(y=np.arange(4)), "a.npz"), 422, "array 'X': missing"),
    Hostile("npz-missing-y", up(npz_bytes(X=np.zeros((4, 2))), "a.npz"), 422,
            "array 'y': missing"),
    Hostile("npz-X-1d", up(npz_bytes(X=np.zeros(4), y=np.arange(4)), "a.npz"), 422,
            "expected (samples, features)"),
    Hostile("npz-X-0d", up(npz_bytes(X=np.float64(3.0), y=np.arange(4)), "a.npz"), 422,
            "expected (samples, features)"),
    # A 3-D X is an image stack and is flattened (test_datasets); one with no features is not.
    Hostile("npz-X-3d-empty", up(npz_bytes(X=np.zeros((4, 0, 3)), y=np.arange(4)), "a.npz"),
            422, "no feature columns"),
    Hostile("npz-length-mismatch", up(npz_bytes(X=np.zeros((4, 2)), y=np.arange(3)), "a.npz"),
            422, "array 'y': shape (3,)"),
    Hostile("npz-X-text", up(npz_bytes(X=np.array([["a", "b"], ["c", "d"]]), y=np.arange(2)),
                             "a.npz"), 422, "not numeric"),
    Hostile("npz-X-complex", up(npz_bytes(X=np.ones((4, 2), complex), y=np.arange(4)), "a.npz"),
            422, "not numeric"),
    Hostile("npz-y-bytes", up(npz_bytes(X=np.zeros((2, 2)), y=np.array([b"a", b"b"])), "a.npz"),
            422, "not usable as labels"),
    Hostile("npz-X-nan", up(npz_bytes(X=np.array([[1.0, np.nan], [0, 1]]), y=np.arange(2)),
                            "a.npz"), 422, "not finite", later=True),
    Hostile("npz-bomb", up(lambda: npz_compressed(X=np.zeros((400, 400)), y=np.arange(400) % 2),
                           "a.npz"), 422, "more than the limit"),
    Hostile("npz-header-claims-huge-shape",
            up(lambda: npz_raw({"X.npy": npy_header_only((10**6, 10**6)),
                                "y.npy": npy_header_only((10**6,), "<i8")}), "a.npz"),
            422, "more than the limit"),
    Hostile("npz-zip-size-lies", up(npz_with_lying_size, "a.npz"), 422, "not a valid NPZ"),
    Hostile("zip-not-npz", up(lambda: npz_raw({"readme.txt": b"hello"}), "a.npz"), 422,
            "is not a .npy array"),
    Hostile("zip-npy-garbage", up(lambda: npz_raw({"X.npy": b"garbage", "y.npy": b"junk"}),
                                  "a.npz"), 422, "is not a .npy array"),
    Hostile("npz-header-more-than-data",
            up(lambda: npz_raw({"X.npy": npy_header_only((1000, 10)),
                                "y.npy": npy_header_only((1000,), "<i8")}), "a.npz"),
            422, "the member holds"),
    Hostile("npz-object-header", up(lambda: npz_raw({"X.npy": npy_header_only((2, 2), "|O"),
                                                     "y.npy": npy_header_only((2,), "<i8")}),
                                    "a.npz"), 422, "would need pickle"),
    Hostile("not-a-zip", up(b"PK but not really a zip", "a.npz"), 422, "not a valid NPZ"),
    # names, fields and formats
    Hostile("name-control-chars", up(GOOD_CSV, name="evil\x1b[31mname"), 422,
            "name: control characters"),
    Hostile("name-nul", up(GOOD_CSV, name="a\x00b"), 422, "name: control characters"),
    Hostile("label-column-nul", up(GOOD_CSV, label_column="la\x00bel"), 422,
            "label_column: control characters"),
    Hostile("label-column-too-long",
            up(b"a," + b"L" * 300 + b"\n1,x\n2,y\n", label_column="L" * 300), 422,
            "label_column: at most 200"),
    Hostile("unknown-format", up(b"\x89PNG\r\n\x1a\n" + bytes(64), "picture.png"), 422,
            "not readable CSV"),
    Hostile("labels-with-csv", up(GOOD_CSV, labels=LABELS4), 422, "only IDX uploads"),
]


# ---------------------------------------------------------------- fixtures and checks
@pytest.fixture
def small_limits(app, settings):  # noqa: ANN001, ANN201
    app.state.settings = settings.model_copy(update={"max_upload_bytes": MAX_UPLOAD,
                                                     "max_decompressed_bytes": MAX_DECOMPRESSED})
    return app.state.settings


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:  # noqa: ANN001
    """Temporary files of this test go here, so leftovers can be counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def existing(client, auth_a, small_limits):  # noqa: ANN001, ANN201
    resp = client.post("/v1/datasets", headers=auth_a,
                       files={"file": ("good.csv", GOOD_CSV, "text/csv")})
    body = checked(client, auth_a, resp)
    assert body["status"] == "ready", body
    return body


def usable_rows(db) -> int:  # noqa: ANN001
    return db.scalar(select(func.count()).select_from(Dataset)
                     .where(Dataset.status != DatasetStatus.failed))


def objects(settings) -> list[Path]:  # noqa: ANN001
    root = settings.data_dir.parent / "objects"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def post_raw(client, auth, body: bytes,  # noqa: ANN001, ANN201
             headers: dict[str, str] | None = None):
    return client.post("/v1/datasets", content=body, headers={
        **auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})})


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_hostile_upload(client, db, store, auth_a, settings, existing, private_tmp,
                        case: Hostile) -> None:  # noqa: ANN001
    before_objects = objects(settings)
    before_rows = usable_rows(db)
    resp = post_raw(client, auth_a, case.body(), case.headers)
    if case.later:
        failed = checked(client, auth_a, resp)
        assert failed["status"] == "failed", failed
        assert case.phrase in failed["status_reason"], failed["status_reason"]
    else:
        assert resp.status_code == case.status, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = resp.json()
        assert problem["status"] == case.status
        assert case.phrase in problem["detail"], problem["detail"]
    # Nothing stored, nothing left over, and what was there is intact.
    assert usable_rows(db) == before_rows
    assert objects(settings) == before_objects
    assert list(private_tmp.iterdir()) == []
    again = client.get(f"/v1/datasets/{existing['id']}", headers=auth_a)
    assert again.status_code == 200 and again.json() == existing
    assert b"".join(store.iter_range(db.get(Dataset, existing["id"]).object_key)) == GOOD_CSV


def post_measuring_peak(client, auth, body: bytes):  # noqa: ANN001, ANN201
    """The response to an upload, and the peak Python memory the request took."""
    tracemalloc.start()
    try:
        resp = post_raw(client, auth, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return resp, peak


def test_a_million_columns_are_refused_without_parsing_them(client, auth_a, small_limits,
                                                            app) -> None:  # noqa: ANN001
    """The wide header is refused while it is counted, not after a million fields were made
    into strings: the request's peak memory stays a small multiple of the body."""
    app.state.settings = small_limits.model_copy(update={"max_upload_bytes": 16 * 1024 * 1024})
    body = multipart(WIDE_HEADER)
    resp, peak = post_measuring_peak(client, auth_a, body)
    assert resp.status_code == 422 and "limit 100000" in resp.json()["detail"]
    assert peak < 4 * len(body), f"peak {peak} bytes for a {len(body)}-byte body"


def test_one_endless_row_is_refused_without_parsing_it(client, auth_a, small_limits,
                                                       app) -> None:  # noqa: ANN001
    app.state.settings = small_limits.model_copy(update={"max_upload_bytes": 16 * 1024 * 1024})
    body = multipart(b"a,label\n1,x\n" + b"0," * 3_000_000 + b"y\n")
    resp, peak = post_measuring_peak(client, auth_a, body)
    failed = checked(client, auth_a, resp)  # the rows are read by the check, after the 202
    assert failed["status"] == "failed" and "line 3 of the file (the header is line 1): longer than" in failed["status_reason"]
    assert peak < 4 * len(body), f"peak {peak} bytes for a {len(body)}-byte body"


def test_chunked_upload_without_content_length_is_cut_at_the_limit(  # noqa: ANN001
        client, auth_a, db, small_limits) -> None:
    def chunks():  # noqa: ANN202 - a generator: sent chunked, with no Content-Length at all
        body = multipart(b"a,label\n" + b"1,0\n" * 100_000)
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    resp = client.post("/v1/datasets", content=chunks(), headers={
        **auth_a, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert resp.status_code == 413
    assert db.scalar(select(func.count()).select_from(Dataset)) == 0


@pytest.mark.parametrize("filename, shown", [
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("..\\..\\windows\\evil.csv", "evil.csv"),
    ("data\x00.csv", "data.csv"),
    ("..", "dataset"),
    ("\x00", "dataset"),
])
def test_filenames_never_reach_a_path(client, db, store, auth_a, settings, tmp_path, filename,
                                      shown) -> None:  # noqa: ANN001
    """Whatever the client calls its file, the object key is made of ids only and the
    name shown is a cleaned last component; nothing appears outside the store."""
    before = set(tmp_path.rglob("*"))
    body = checked(client, auth_a, post_raw(client, auth_a, multipart(GOOD_CSV, filename)))
    assert body["status"] == "ready", body
    assert body["name"] == shown
    row = db.get(Dataset, body["id"])
    owner = tenant_id(db)
    assert row.object_key == f"datasets/{owner}/{body['id']}/data.csv"
    created = set(tmp_path.rglob("*")) - before
    objects_root = settings.data_dir.parent / "objects"
    assert all(p == objects_root or objects_root in p.parents for p in created), created
    assert b"".join(store.iter_range(row.object_key)) == GOOD_CSV


# ---------------------------------------------------------------- JobSpec bounds
def _set(spec: dict, path: str, value: object) -> dict:
    node = spec
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return spec


# (dotted path, value, what the 422 must name). Each is a way to ask for too much machine.
SPEC_BOUNDS = [
    ("model.hidden_layers", [8193], "model.hidden_layers"),
    ("model.hidden_layers", [8] * 9, "model.hidden_layers"),
    ("model.hidden_layers", [], "model.hidden_layers"),
    ("model.hidden_layers", [8192, 8192, 8192], "model.hidden_layers"),  # > 50M parameters
    ("pretrain.epochs", 1001, "pretrain.epochs"),
    ("finetune.epochs", 10**9, "finetune.epochs"),
    ("pretrain.batch_size", 8193, "pretrain.batch_size"),
    ("finetune.batch_size", 0, "finetune.batch_size"),
    ("pretrain.cd_k", 51, "pretrain.cd_k"),
    ("pretrain.dr.pairs", {"sample": 1025}, "pretrain.dr.pairs"),
    ("finetune.dr.pairs", {"sample": 10**6}, "finetune.dr.pairs"),
    ("max_runtime_seconds", 604801, "max_runtime_seconds"),
    ("max_attempts", 11, "max_attempts"),
    ("seed", 2**31, "seed"),
    ("validation_fraction", 0.9, "validation_fraction"),
    ("device", "cuda:999", "device"),
    ("dataset_id", "a\x00b", "dataset_id"),
    ("dataset_id", "../../etc/passwd", "dataset_id"),
    ("finetune.dr.layers", [5], "finetune.dr.layers"),
]


@pytest.mark.parametrize("path, value, named", SPEC_BOUNDS,
                         ids=[f"{p}={str(v)[:20]}" for p, v, _ in SPEC_BOUNDS])
def test_spec_out_of_bounds_is_422_naming_the_field(client, db, auth_a, path, value,
                                                    named) -> None:  # noqa: ANN001
    ds = add_dataset(db, tenant_id(db), n_features=64)
    spec = _set(small_spec(ds.id), path, value)
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    locs = [".".join(str(p) for p in e["loc"][1:]) for e in problem.get("errors") or []]
    assert named in problem["detail"] or any(loc.startswith(named) for loc in locs), problem
    assert client.get("/v1/jobs", headers=auth_a).json()["items"] == []


def test_sweep_grid_size_is_bounded(client, db, auth_a) -> None:  # noqa: ANN001
    ds = add_dataset(db, tenant_id(db))
    grid = {"seed": list(range(17)), "finetune.epochs": list(range(1, 17))}  # 272 points
    resp = client.post("/v1/sweeps", json={"base": small_spec(ds.id), "grid": grid},
                       headers=auth_a)
    assert resp.status_code == 422
    assert "grid" in resp.json()["detail"] and "at most 256" in resp.json()["detail"]
    assert client.get("/v1/jobs", headers=auth_a).json()["items"] == []
