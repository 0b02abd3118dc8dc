"""Uploads are answered 202 and checked afterwards, in processes of their own: the outcome is
recorded, jobs wait for ``ready``, a full store is a 507 leaving nothing behind, checks that
stall or die are stopped and said so, the sweep cleans up after a crash, classes are capped.
"""
from __future__ import annotations

import asyncio
import errno
import io
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select, text

from drtrain.datasets import intake, validation
from drtrain.kit.migrate import downgrade, upgrade
from drtrain.kit.models import Dataset, DatasetStatus, utcnow
from drtrain.kit.storage import is_out_of_space
from tests.factories import checked, idx_bytes, npz_bytes, small_spec, tenant_id, upload, upload_ready

GOOD_CSV = b"a,b,label\n0,1,x\n1,0,y\n0.5,0.5,x\n"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def objects(settings) -> list[Path]:  # noqa: ANN001 - every file, the store's .tmp included
    root = settings.data_dir.parent / "objects"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def rows(db) -> int:  # noqa: ANN001
    return db.scalar(select(func.count()).select_from(Dataset))


def add_row(db, owner: str, status: DatasetStatus, **kw: object) -> Dataset:  # noqa: ANN001
    row = Dataset(tenant_id=owner, name="pending", format="csv", object_key=kw.pop(
        "object_key", "datasets/x/data.csv"), sha256="0" * 64, size_bytes=10, status=status,
                  **kw)
    db.add(row)
    db.commit()
    return row


# ---------------------------------------------------------------- the 202 and the outcome
def test_upload_is_answered_202_then_checked(client, auth_a, db, store):
    resp = upload(client, auth_a, GOOD_CSV, "good.csv")
    assert resp.status_code == 202
    accepted = resp.json()
    assert accepted["status"] == "validating" and accepted["n_classes"] is None
    assert resp.headers["location"] == f"/v1/datasets/{accepted['id']}"
    assert store.exists(db.get(Dataset, accepted["id"]).object_key)  # stored before the 202
    ready = client.get(resp.headers["location"], headers=auth_a).json()
    assert ready["status"] == "ready" and ready["status_reason"] is None
    assert (ready["n_samples"], ready["n_features"], ready["class_counts"]) == (3, 2, {"x": 2, "y": 1})
    listed = {d["id"]: d for d in client.get("/v1/datasets", headers=auth_a).json()["items"]}
    assert listed[accepted["id"]] == ready


def test_a_failed_check_keeps_the_reason_and_nothing_else(client, auth_a, db, settings):
    body = checked(client, auth_a, upload(client, auth_a, b"a,label\n1,x\n2,x\n"))
    assert body["status"] == "failed" and "one class only" in body["status_reason"]
    assert objects(settings) == []
    # Deleting it is allowed and removes the row.
    assert client.delete(f"/v1/datasets/{body['id']}", headers=auth_a).status_code == 204
    assert rows(db) == 0


def test_jobs_wait_for_a_dataset_to_be_ready(client, db, auth_a):
    owner = tenant_id(db)
    pending = add_row(db, owner, DatasetStatus.validating)
    resp = client.post("/v1/jobs", json=small_spec(pending.id), headers=auth_a)
    assert resp.status_code == 409, resp.text
    assert "still being checked" in resp.json()["detail"]
    assert resp.headers["retry-after"]
    failed = add_row(db, owner, DatasetStatus.failed, status_reason="row 3: 2 fields")
    resp = client.post("/v1/jobs", json=small_spec(failed.id), headers=auth_a)
    assert resp.status_code == 422
    assert "failed its check" in resp.json()["detail"] and "row 3: 2 fields" in resp.json()["detail"]
    resp = client.post("/v1/jobs", json=small_spec("builtin:digits", test_dataset_id=pending.id),
                       headers=auth_a)
    assert resp.status_code == 409
    assert client.get("/v1/jobs", headers=auth_a).json()["items"] == []


# ---------------------------------------------------------------- classes
def test_classes_beyond_the_cap_are_refused(app, client, auth_a, settings):
    app.state.settings = settings.model_copy(update={"max_classes": 3})
    three = b"a,label\n" + b"".join(b"%d,c%d\n" % (i, i % 3) for i in range(9))
    assert upload_ready(client, auth_a, three)["n_classes"] == 3
    four = b"a,label\n" + b"".join(b"%d,c%d\n" % (i, i % 4) for i in range(9))
    body = checked(client, auth_a, upload(client, auth_a, four))
    assert body["status"] == "failed"
    assert body["status_reason"] == "row 4, column 'label': more than 3 distinct classes (the limit is 3)"
    y = np.arange(40) % 5
    body = checked(client, auth_a, upload(client, auth_a, npz_bytes(X=np.zeros((40, 2)), y=y),
                                          "a.npz"))
    assert body["status_reason"] == "array 'y': more than 3 distinct classes (the limit is 3)"
    labels = idx_bytes((np.arange(8) % 4).astype(np.uint8))
    body = checked(client, auth_a, upload(client, auth_a, idx_bytes(np.zeros((8, 2, 2), np.uint8)),
                                          "i.gz", labels=labels))
    assert "labels_file: more than 3 distinct classes" in body["status_reason"]


def test_a_label_per_row_is_refused_by_the_default_cap(client, auth_a):
    """10^6 classes used to be accepted, and every listing then carried the class table."""
    csv = b"a,label\n" + b"".join(b"%d,id-%d\n" % (i % 7, i) for i in range(5000))
    body = checked(client, auth_a, upload(client, auth_a, csv))
    assert body["status"] == "failed"
    assert "more than 1000 distinct classes" in body["status_reason"]
    assert all(d["status"] != "ready" or len(d["class_counts"] or {}) <= 1000
               for d in client.get("/v1/datasets", headers=auth_a).json()["items"])


def test_a_label_longer_than_the_limit_is_refused(client, auth_a):
    csv = b"a,label\n1,x\n2," + b"y" * 201 + b"\n"
    body = checked(client, auth_a, upload(client, auth_a, csv))
    assert body["status_reason"] == "row 2, column 'label': the label is longer than 200 characters"


def test_what_a_worker_would_hold_as_float32_is_bounded(app, client, auth_a, settings):
    """2,400 bytes of uint8 pixels inflate to 9,600 bytes of float32 features to train on."""
    app.state.settings = settings.model_copy(update={"max_decompressed_bytes": 4096})
    resp = upload(client, auth_a, idx_bytes(np.zeros((600, 2, 2), np.uint8)), "i.gz",
                  labels=idx_bytes((np.arange(600) % 2).astype(np.uint8)))
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == ("file: 600 x 4 values take 9600 bytes as float32 for "
                                     "training, more than the limit 4096")


# ---------------------------------------------------------------- a full store: 507
def _fill_after(monkeypatch: pytest.MonkeyPatch, *, calls_before: int = 0) -> None:
    """The object store's disk fills during a copy: half the bytes land, then ENOSPC."""
    real = shutil.copyfile
    seen = {"calls": 0}

    def copyfile(src, dst, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["calls"] += 1
        if seen["calls"] <= calls_before:
            return real(src, dst, *args, **kw)
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("drtrain.kit.storage.shutil.copyfile", copyfile)


def _assert_507(resp, what: str) -> None:  # noqa: ANN001
    assert resp.status_code == 507, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == 507 and problem["title"] == "Insufficient storage"
    assert problem["detail"] == f"{what} is full: No space left on device"


def test_a_full_object_store_is_507_and_nothing_half_stored(client, auth_a, db, settings,
                                                            private_tmp, monkeypatch):
    _fill_after(monkeypatch)
    _assert_507(upload(client, auth_a, GOOD_CSV), "the object store")
    assert rows(db) == 0 and objects(settings) == [] and list(private_tmp.iterdir()) == []


def test_a_store_that_fills_between_two_files_keeps_neither(client, auth_a, db, settings,
                                                            private_tmp, monkeypatch):
    _fill_after(monkeypatch, calls_before=1)  # the images fit, the labels do not
    resp = upload(client, auth_a, idx_bytes(np.zeros((4, 2, 2), np.uint8)), "i.gz",
                  labels=idx_bytes(np.array([0, 1, 0, 1], np.uint8)))
    _assert_507(resp, "the object store")
    assert rows(db) == 0 and objects(settings) == [] and list(private_tmp.iterdir()) == []


def test_a_full_temporary_space_is_507(client, auth_a, db, private_tmp, monkeypatch):
    def full(*_args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("drtrain.datasets.intake.os.sendfile", full)
    big = b"a,label\n" + b"1,x\n2,y\n" * 200_000  # past the 1 MB a spooled upload keeps in memory
    _assert_507(upload(client, auth_a, big), "the API's temporary space for uploads")
    assert rows(db) == 0 and list(private_tmp.iterdir()) == []


def test_out_of_space_is_told_from_other_store_errors():
    from botocore.exceptions import ClientError

    def s3(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "PutObject")

    assert is_out_of_space(OSError(errno.ENOSPC, "full"))
    assert is_out_of_space(OSError(errno.EDQUOT, "quota"))
    assert is_out_of_space(s3("XMinioStorageFull", 507))
    assert not is_out_of_space(s3("NoSuchBucket", 404))
    assert not is_out_of_space(OSError(errno.EACCES, "denied"))


# ---------------------------------------------------------------- checks that stall or die
def _fifo(tmp_path: Path) -> Path:
    """A named pipe nobody writes to: a check that opens it waits forever."""
    path = tmp_path / "stalls.csv"
    os.mkfifo(path)
    return path


def _reader_left(fifo: Path) -> bool:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:  # ENXIO: no process has it open for reading
        assert exc.errno == errno.ENXIO
        return False
    os.close(fd)
    return True


def _request(path: Path) -> validation.Request:
    return validation.Request(path, "csv", None, "label", None, validation.Limits(1 << 30, 1000))


def test_a_check_past_its_time_is_stopped(tmp_path):
    fifo = _fifo(tmp_path)
    checker = validation.Validator(1, 1.0, 0)
    started = time.monotonic()
    outcome = asyncio.run(checker.run(_request(fifo), time.monotonic() + 1.0))
    assert outcome.summary is None and outcome.error == "checking it took longer than 1 s"
    assert time.monotonic() - started < 10
    assert not _reader_left(fifo)  # the child was killed, not left reading


def test_a_check_waits_for_a_slot_no_longer_than_its_deadline(tmp_path):
    fifo = _fifo(tmp_path)
    checker = validation.Validator(1, 30.0, 0)

    async def both() -> validation.Outcome:
        first = asyncio.ensure_future(checker.run(_request(fifo), time.monotonic() + 30))
        await asyncio.sleep(0.5)
        second = await checker.run(_request(fifo), time.monotonic() + 0.5)
        first.cancel()  # an upload refused after its check started: the child must go
        with pytest.raises(asyncio.CancelledError):
            await first
        return second

    outcome = asyncio.run(both())
    assert outcome.error == "the service was too busy to check it in time; upload it again"
    assert not _reader_left(fifo)


def test_a_check_that_runs_out_of_memory_fails_the_upload(app, client, auth_a, settings):
    app.state.validator = validation.Validator(1, 60.0, 64 << 20)
    body = checked(client, auth_a, upload(client, auth_a, GOOD_CSV))
    assert body["status"] == "failed"
    assert body["status_reason"].startswith("the file could not be checked: ")
    assert objects(settings) == []


# ---------------------------------------------------------------- after a crash
def test_the_sweep_fails_checks_that_cannot_still_run(app, db, store, settings, private_tmp,
                                                     tenant_a_key):
    owner = tenant_id(db)
    old_obj = store.put_stream("datasets/x/old.csv", [b"a,label\n"])
    young_obj = store.put_stream("datasets/x/young.csv", [b"a,label\n"])
    old = add_row(db, owner, DatasetStatus.validating, object_key=old_obj.key,
                  created_at=utcnow() - timedelta(hours=1))
    young = add_row(db, owner, DatasetStatus.validating, object_key=young_obj.key)
    dead_folder = private_tmp / f"{intake.FOLDER_PREFIX}dead"
    live_folder = private_tmp / f"{intake.FOLDER_PREFIX}live"
    for folder in (dead_folder, live_folder):
        folder.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(dead_folder, (an_hour_ago, an_hour_ago))

    assert intake.sweep_stale(app.state.sessionmaker, store, settings) == 1
    db.expire_all()
    assert db.get(Dataset, old.id).status == DatasetStatus.failed
    assert "interrupted" in db.get(Dataset, old.id).status_reason
    assert not store.exists(old_obj.key)
    assert db.get(Dataset, young.id).status == DatasetStatus.validating
    assert store.exists(young_obj.key)
    assert not dead_folder.exists() and live_folder.exists()


def test_a_dataset_removed_while_checked_leaves_no_object(app, db, store, settings, tenant_a_key):
    owner = tenant_id(db)
    received = intake.receive(settings, data=io.BytesIO(GOOD_CSV), filename="d.csv", name=None,
                              label_column="label", side_info_column=None, labels=None)
    staged = intake.admit(app.state.sessionmaker, store, settings, owner, received)
    row = db.get(Dataset, staged.dataset.id)
    key = row.object_key
    db.delete(row)  # gone (a tenant removed, say) without its objects
    db.commit()
    outcome = validation.check(received.request)
    assert outcome.summary is not None

    async def finish() -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result(outcome)
        await intake.finish_upload(app.state.sessionmaker, store, done, staged)

    asyncio.run(finish())
    assert not store.exists(key) and not staged.folder.exists()
    assert db.get(Dataset, staged.dataset.id) is None


# ---------------------------------------------------------------- the schema
def test_migration_marks_existing_datasets_ready_and_drops_unfinished_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    upgrade(url, "0002")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', '2025-01-01')"))
            conn.execute(text(
                "INSERT INTO datasets (id, tenant_id, name, format, object_key, n_samples, "
                "n_features, n_classes, class_counts, feature_range, visible_units_hint, sha256, "
                "size_bytes, created_at) VALUES ('old', 't', 'n', 'csv', 'k', 3, 2, 2, '{}', "
                "'[0, 1]', 'bernoulli', 's', 1, '2025-01-01')"))
        upgrade(url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT status FROM datasets")).scalar() == "ready"
            conn.execute(text(
                "INSERT INTO datasets (id, tenant_id, name, format, object_key, status, sha256, "
                "size_bytes, created_at) VALUES ('new', 't', 'n', 'csv', 'k', 'validating', 's', "
                "1, '2025-01-01')"))
        downgrade(url, "0002")
        with engine.begin() as conn:
            assert conn.execute(text("SELECT id FROM datasets")).scalars().all() == ["old"]
    finally:
        engine.dispose()
