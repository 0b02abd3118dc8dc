"""Object storage: one small interface, a local-folder backend and an S3 backend.

Every write is atomic (a reader never sees half an object) and returns the object's sha256.
Keys are checked before they touch a path or a bucket, so a key can never escape the store.
Missing objects raise ``FileNotFoundError`` in both backends.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

from drtrain.kit.db import after_commit
from drtrain.kit.errors import TooLarge

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drtrain.kit.settings import Settings

_KEY_RE = re.compile(r"^[A-Za-z0-9/_.-]+$")
_COPY_CHUNK = 1 << 20


class BucketMissing(OSError):
    """The store's bucket does not exist: a misconfiguration (or a deleted bucket), not an
    outage. Its message says which bucket."""


class InvalidKey(ValueError):
    """A key that could name something outside the store (or nothing sensible)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size_bytes: int


class ObjectStore(Protocol):
    def put_stream(self, key: str, chunks: Iterable[bytes], *,
                   max_bytes: int | None = None) -> StoredObject: ...
    def put_file(self, key: str, path: Path) -> StoredObject: ...
    def get_to_file(self, key: str, path: Path) -> None: ...
    def iter_range(self, key: str, start: int = 0, end: int | None = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]: ...
    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def presign(self, key: str, seconds: int) -> str | None: ...
    def ping(self) -> None: ...
    def ensure_bucket(self) -> None: ...


def check_key(key: str) -> str:
    parts = key.split("/")
    if (not _KEY_RE.match(key) or key.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or ".." in key):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def spool(chunks: Iterable[bytes], dest, max_bytes: int | None) -> tuple[str, int]:  # noqa: ANN001
    """Copy ``chunks`` into the open binary file ``dest``; returns (sha256, size).

    Counts as it goes so an over-long stream stops at the limit instead of filling the disk.
    """
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(f"upload exceeds the limit of {max_bytes} bytes")
        digest.update(chunk)
        dest.write(chunk)
    return digest.hexdigest(), size


def file_chunks(path: Path, chunk: int = _COPY_CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            yield block


def _check_range(start: int, end: int | None, total: int) -> int:
    last = total - 1 if end is None else min(end, total - 1)
    if start < 0 or (total and start > last) or (end is not None and end < start):
        raise ValueError(f"range {start}-{end} outside object of {total} bytes")
    return last


class LocalStore:
    """Objects as files under ``root``; writes go to ``root/.tmp`` then ``os.replace``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def _staged(self, key: str) -> Iterator[Path]:
        """A temporary file under ``.tmp`` that becomes object ``key`` (one ``os.replace``)
        when the block ends normally, and is removed when it raises."""
        target = self._path(key)
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        os.close(fd)
        try:
            yield Path(tmp_name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_stream(self, key: str, chunks: Iterable[bytes], *,
                   max_bytes: int | None = None) -> StoredObject:
        with self._staged(key) as tmp, open(tmp, "wb") as fh:
            sha, size = spool(chunks, fh, max_bytes)
            fh.flush()
            os.fsync(fh.fileno())
        return StoredObject(key, sha, size)

    def put_file(self, key: str, path: Path) -> StoredObject:
        """The kernel copies the bytes (no pass through Python) and the hash reads the source
        in large blocks: much faster than ``put_stream`` for a large file."""
        with self._staged(key) as tmp:
            with open(path, "rb") as src:
                sha = hashlib.file_digest(src, "sha256").hexdigest()
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
                size = os.fstat(fh.fileno()).st_size
        return StoredObject(key, sha, size)

    def get_to_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise FileNotFoundError(key)
        _atomic_copy(source, Path(path))

    def iter_range(self, key: str, start: int = 0, end: int | None = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        last = _check_range(start, end, self.size(key))
        remaining = last - start + 1
        with open(path, "rb") as fh:
            fh.seek(start)
            while remaining > 0 and (block := fh.read(min(chunk, remaining))):
                remaining -= len(block)
                yield block

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Every object under ``prefix/`` (a folder here), and the folder."""
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def presign(self, key: str, seconds: int) -> str | None:
        check_key(key)
        return None

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"object folder {self.root} is not writable")

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


def _atomic_copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class S3Store:
    """Objects in ``bucket`` under ``prefix``. An S3 PUT is already atomic, so a stream is
    spooled to a local temp file first (to hash and bound it), then uploaded in one go."""

    def __init__(self, bucket: str, prefix: str = "", *, client=None,  # noqa: ANN001
                 endpoint_url: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, region: str = "us-east-1") -> None:
        if client is None:
            import boto3  # imported here so the local backend never pays for boto3

            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                  aws_access_key_id=access_key_id,
                                  aws_secret_access_key=secret_access_key)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (MinIO and moto start empty); any other failure
        (refused credentials, an unreachable endpoint) is raised as it is."""
        try:
            self.ping()
        except BucketMissing:
            self.client.create_bucket(Bucket=self.bucket)
            log.warning("created the missing bucket %s", self.bucket)

    def put_stream(self, key: str, chunks: Iterable[bytes], *,
                   max_bytes: int | None = None) -> StoredObject:
        name = self._name(key)
        with tempfile.TemporaryFile() as fh:
            sha, size = spool(chunks, fh, max_bytes)
            fh.seek(0)
            self.client.upload_fileobj(fh, self.bucket, name,
                                       ExtraArgs={"Metadata": {"sha256": sha}})
        return StoredObject(key, sha, size)

    def put_file(self, key: str, path: Path) -> StoredObject:
        """Uploaded from the file itself (no spooled copy), hashed first."""
        name = self._name(key)
        with open(path, "rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        self.client.upload_file(str(path), self.bucket, name,
                                ExtraArgs={"Metadata": {"sha256": sha}})
        return StoredObject(key, sha, Path(path).stat().st_size)

    def get_to_file(self, key: str, path: Path) -> None:
        name = self._name(key)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, name, tmp_name)
            os.replace(tmp_name, dest)
        except Exception as exc:
            Path(tmp_name).unlink(missing_ok=True)
            if _is_missing(exc):
                raise FileNotFoundError(key) from exc
            raise

    def iter_range(self, key: str, start: int = 0, end: int | None = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        name = self._name(key)
        last = _check_range(start, end, self.size(key))
        if last < start:  # empty object: S3 refuses a range on it
            return
        body = self.client.get_object(Bucket=self.bucket, Key=name,
                                      Range=f"bytes={start}-{last}")["Body"]
        try:
            yield from body.iter_chunks(chunk)
        finally:
            body.close()

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket,
                                               Key=self._name(key))["ContentLength"])
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError(key) from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def delete_prefix(self, prefix: str) -> None:
        """Every object whose key starts with ``prefix/``, a listing page at a time."""
        name = self._name(prefix.rstrip("/")) + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=name)
        for page in pages:
            batch = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def presign(self, key: str, seconds: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)},
            ExpiresIn=seconds)

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _is_missing(exc) or _error_code(exc) == "NoSuchBucket":
                raise BucketMissing(f"bucket {self.bucket!r} does not exist") from exc
            raise


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


_TRANSIENT_S3_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable",
                       "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException"}


# ENOSPC: no space left; EDQUOT: a disk quota; EFBIG: past a file size limit.
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# What S3 and MinIO answer when they cannot take more bytes.
_FULL_S3_CODES = {"XMinioStorageFull", "StorageFull", "InsufficientStorage", "QuotaExceeded",
                  "XMinioAdminBucketQuotaExceeded", "507"}


# SQLite's SQLITE_FULL ("database or disk is full"); PostgreSQL's disk_full SQLSTATE class.
_SQLITE_FULL = 13
_PG_FULL_SQLSTATES = {"53100"}


def is_out_of_space(exc: BaseException) -> bool:
    """True for a write refused because the store, the database (or a disk under either)
    is full; a database driver's error counts whether SQLAlchemy wrapped it or not, and so
    does an error raised while handling one (SQLite rolls a full transaction back itself,
    so undoing its savepoint then fails with "no such savepoint")."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of causes is short; a cycle must not loop
        if seen is None:
            return False
        if _one_out_of_space(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _one_out_of_space(exc: BaseException) -> bool:
    driver_error = getattr(exc, "orig", None)
    if isinstance(driver_error, BaseException) and _database_full(driver_error):
        return True
    if _database_full(exc):
        return True
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") \
        if isinstance(response, dict) else None
    return code in _FULL_S3_CODES or status == 507


def _database_full(exc: BaseException) -> bool:
    if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    return getattr(exc, "sqlstate", None) in _PG_FULL_SQLSTATES


def is_transient(exc: BaseException) -> bool:
    """True for an object-store failure worth retrying later: the endpoint unreachable or
    timing out, a 5xx, throttling. A missing object, a refused credential or a full disk is
    not: retrying would fail the same way."""
    try:
        from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # the local backend alone needs no botocore
        return False
    if isinstance(exc, (BotoConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) in _TRANSIENT_S3_CODES
    return False


def make_store(settings: Settings) -> ObjectStore:
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=settings.s3_endpoint_url,
                       access_key_id=settings.s3_access_key_id,
                       secret_access_key=(settings.s3_secret_access_key.get_secret_value()
                                          if settings.s3_secret_access_key else None),
                       region=settings.s3_region)
    raise ValueError(f"unsupported storage URL {url!r} (use file:// or s3://)")


def remove_after_commit(session: Session, store: ObjectStore, keys: Iterable[str],
                        prefixes: Iterable[str] = ()) -> None:
    """Delete these objects once the transaction that dropped their rows has committed."""
    keys, prefixes = list(keys), list(prefixes)
    if not keys and not prefixes:
        return

    def _remove() -> None:
        for key in keys:
            try:
                store.delete(key)
            except Exception:  # noqa: BLE001 - an orphan object is harmless; say so and go on
                log.warning("could not delete object %s", key, exc_info=True)
        for prefix in prefixes:
            try:
                store.delete_prefix(prefix)
            except Exception:  # noqa: BLE001 - as above
                log.warning("could not delete objects under %s", prefix, exc_info=True)

    after_commit(session, _remove)
