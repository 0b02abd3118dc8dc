"""Object storage contract, run against both backends: a folder and S3 (a moto server)."""
from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from drtrain.kit.errors import TooLarge
from drtrain.kit.settings import Settings
from drtrain.kit.storage import (
    BucketMissing,
    InvalidKey,
    LocalStore,
    ObjectStore,
    S3Store,
    make_store,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _s3_settings(endpoint: str, bucket: str) -> Settings:
    return Settings(storage_url=f"s3://{bucket}/some/prefix", s3_endpoint_url=endpoint,
                    s3_access_key_id="testing", s3_secret_access_key="testing")


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path: Path) -> ObjectStore:  # noqa: ANN001
    if request.param == "local":
        return make_store(Settings(storage_url=(tmp_path / "objects").as_uri()))
    endpoint = request.getfixturevalue("s3_endpoint")
    store = make_store(_s3_settings(endpoint, f"b-{request.node.name.split('[')[0][-30:]}"
                                    .replace("_", "-").lower()))
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    return store


def _chunks(data: bytes, size: int = 7) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


DATA = bytes(range(256)) * 41  # 10496 bytes, not a multiple of the chunk sizes used


def test_round_trip_with_sha256(object_store: ObjectStore, tmp_path: Path):
    stored = object_store.put_stream("jobs/j1/model.safetensors", _chunks(DATA))
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert stored.size_bytes == len(DATA) == object_store.size("jobs/j1/model.safetensors")
    assert object_store.exists("jobs/j1/model.safetensors")
    out = tmp_path / "down" / "copy.bin"
    object_store.get_to_file("jobs/j1/model.safetensors", out)
    assert out.read_bytes() == DATA
    assert b"".join(object_store.iter_range("jobs/j1/model.safetensors", chunk=1000)) == DATA


def test_put_file(object_store: ObjectStore, tmp_path: Path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA[:999])
    stored = object_store.put_file("a/b.bin", src)
    assert (stored.key, stored.size_bytes) == ("a/b.bin", 999)
    assert stored.sha256 == hashlib.sha256(DATA[:999]).hexdigest()


@pytest.mark.parametrize(("start", "end"), [(0, 0), (10, 19), (100, None), (10000, 10495),
                                            (10490, 99999)])
def test_ranges_are_inclusive(object_store: ObjectStore, start: int, end: int | None):
    object_store.put_stream("r.bin", [DATA])
    got = b"".join(object_store.iter_range("r.bin", start, end, chunk=3))
    want = DATA[start:] if end is None else DATA[start:end + 1]
    assert got == want


def test_range_outside_the_object_is_refused(object_store: ObjectStore):
    object_store.put_stream("r.bin", [b"abc"])
    with pytest.raises(ValueError, match="outside"):
        list(object_store.iter_range("r.bin", 5, 9))


def test_too_large_leaves_nothing(object_store: ObjectStore):
    with pytest.raises(TooLarge):
        object_store.put_stream("big.bin", _chunks(DATA), max_bytes=1000)
    assert not object_store.exists("big.bin")


def test_failed_stream_leaves_nothing_and_keeps_the_old_object(object_store: ObjectStore):
    object_store.put_stream("obj.bin", [b"old"])

    def broken() -> Iterator[bytes]:
        yield b"new data, half"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        object_store.put_stream("obj.bin", broken())
    with pytest.raises(ConnectionError):
        object_store.put_stream("never.bin", broken())
    assert b"".join(object_store.iter_range("obj.bin")) == b"old"
    assert not object_store.exists("never.bin")


def test_missing_objects(object_store: ObjectStore, tmp_path: Path):
    assert not object_store.exists("nope.bin")
    with pytest.raises(FileNotFoundError):
        object_store.size("nope.bin")
    with pytest.raises(FileNotFoundError):
        object_store.get_to_file("nope.bin", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    object_store.delete("nope.bin")  # deleting what is not there is not an error


def test_delete(object_store: ObjectStore):
    object_store.put_stream("d/x.bin", [b"x"])
    object_store.delete("d/x.bin")
    assert not object_store.exists("d/x.bin")


def test_delete_prefix_leaves_nothing_of_it(object_store: ObjectStore):
    """What a dataset delete relies on: its keys and folder (or prefix) gone, a neighbour kept."""
    for key in ("datasets/t/ds1/data.npz", "datasets/t/ds1/labels.gz", "datasets/t/ds2/data.npz"):
        object_store.put_stream(key, [b"x"])
    object_store.delete("datasets/t/ds1/data.npz")
    object_store.delete_prefix("datasets/t/ds1/")
    assert not object_store.exists("datasets/t/ds1/labels.gz")
    assert object_store.exists("datasets/t/ds2/data.npz")
    if isinstance(object_store, S3Store):
        listed = object_store.client.list_objects_v2(Bucket=object_store.bucket,
                                                      Prefix=object_store._name("datasets/t/ds1"))
        assert listed.get("KeyCount", 0) == 0
    else:
        assert not (object_store.root / "datasets/t/ds1").exists()


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", "a//b", "a/./b", "",
                                 "spa ce", "a\\b", "a/..", "ok/\x00"])
def test_unsafe_keys_are_refused(object_store: ObjectStore, key: str, tmp_path: Path):
    with pytest.raises(InvalidKey):
        object_store.put_stream(key, [b"x"])
    with pytest.raises(InvalidKey):
        object_store.exists(key)
    with pytest.raises(InvalidKey):
        object_store.get_to_file(key, tmp_path / "x")
    with pytest.raises(InvalidKey):
        object_store.delete(key)


def test_ping(object_store: ObjectStore):
    object_store.ping()


def test_local_store_writes_nothing_outside_its_root(tmp_path: Path):
    store = LocalStore(tmp_path / "root")
    with pytest.raises(InvalidKey):
        store.put_stream("../escaped.bin", [b"x"])
    assert not (tmp_path / "escaped.bin").exists()
    assert store.presign("a.bin", 60) is None
    store.put_stream("a.bin", [b"x"])
    assert [p.name for p in (tmp_path / "root" / ".tmp").iterdir()] == []


def test_s3_presign_and_prefix(s3_endpoint: str):
    import boto3
    import httpx

    store = make_store(_s3_settings(s3_endpoint, "presign-bucket"))
    store.ensure_bucket()
    store.put_stream("m/model.bin", [b"weights"])
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="presign-bucket")["Contents"]]
    assert keys == ["some/prefix/m/model.bin"]
    url = store.presign("m/model.bin", 60)
    assert url is not None
    assert httpx.get(url).content == b"weights"


def test_s3_ping_fails_for_a_missing_bucket(s3_endpoint: str):
    store = make_store(_s3_settings(s3_endpoint, "no-such-bucket"))
    with pytest.raises(BucketMissing, match="bucket 'no-such-bucket' does not exist"):
        store.ping()
    store.ensure_bucket()  # made when missing
    store.ping()


def test_make_store_refuses_unknown_schemes():
    with pytest.raises(ValueError, match="unsupported"):
        make_store(Settings(storage_url="ftp://host/x"))
