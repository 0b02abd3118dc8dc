"""Taking an upload in: stage it (answered 202), check it in a validation process, record
the outcome (``ready`` or ``failed``), and clean up after checks that never finished.

1. ``receive`` (a thread, in the request): copy the body into a private folder (bounded),
   check its fields and what the headers allow (422 at once).
2. ``start_check``: the whole file checked in a child process (``drtrain.datasets.validation``),
   started now so that it runs while the file is stored.
3. ``admit`` (a thread, in the request): the tenant's quota (413), the file stored (507 when
   the store is full, nothing half-stored), the row added as ``validating``; then the 202.
   Each database step is a short session of its own: no connection is held during a copy.
4. ``finish_upload`` (after the answer): the row moved to ``ready`` with its summary, or to
   ``failed`` with the reason and its objects deleted. The private folder goes in every case.
5. ``sweep_stale`` (API start-up, then every minute): a row still ``validating`` past the
   check's deadline belonged to a process that died; it is failed and its objects deleted.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import anyio
from sqlalchemy.orm import Session, sessionmaker

from drtrain.datasets import repository as repo
from drtrain.datasets import validation
from drtrain.datasets.formats import check_headers, detect_format
from drtrain.datasets.schemas import DatasetOut
from drtrain.kit.db import session_scope
from drtrain.kit.errors import InsufficientStorage, Invalid, TooLarge
from drtrain.kit.models import Dataset, DatasetStatus, new_id, utcnow
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, StoredObject, is_out_of_space, spool
from drtrain.tenants import quota

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
FOLDER_PREFIX = "drtrain-upload-"
# C0, DEL and C1 controls: never wanted in a name, and NUL cannot be stored by PostgreSQL.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"
_CONTROL = re.compile(CONTROL_CHARACTERS)
# A name or a column name as the upload's form states it (its OpenAPI schema says the same).
TEXT_FIELD_PATTERN = rf"^[^{CONTROL_CHARACTERS[1:-1]}]*$"
MAX_TEXT_FIELD = 200  # the width of its database column
# Past its check's deadline, a validating row is left this long for its result to be written.
_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Staged:
    """An upload answered 202: its row (``validating``), its folder and its objects."""

    dataset: DatasetOut
    folder: Path
    object_keys: list[str]

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _copy(source: BinaryIO, dest: Path, limit: int) -> int:
    """``source`` from its current position into ``dest``, refused past ``limit`` bytes (413).
    A source with a file descriptor (the spooled upload) is copied by the kernel."""
    try:
        fd = source.fileno()
    except (OSError, AttributeError, io.UnsupportedOperation):
        fd = -1
    with open(dest, "wb") as out:
        if fd < 0:
            return spool(iter(lambda: source.read(_CHUNK), b""), out, limit)[1]
        start = source.tell()
        size = os.fstat(fd).st_size - start
        if size > limit:
            raise TooLarge(f"upload exceeds the limit of {limit} bytes")
        done = 0
        while done < size:
            sent = os.sendfile(out.fileno(), fd, start + done, size - done)
            if sent == 0:
                break
            done += sent
        return done


def _name_from(filename: str) -> str:
    """A display name from the client's filename, which is never used as a path: its last
    component without control characters (NUL included), else "dataset"."""
    base = _CONTROL.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return base[:200] if base not in ("", ".", "..") else "dataset"


def _check_fields(name: str | None, label_column: str, side_info_column: str | None) -> None:
    if name is not None and not 0 < len(name) <= MAX_TEXT_FIELD:
        raise Invalid(f"name: 1 to {MAX_TEXT_FIELD} characters")
    for field, value in (("name", name), ("label_column", label_column),
                         ("side_info_column", side_info_column)):
        if value is not None and _CONTROL.search(value):
            raise Invalid(f"{field}: control characters are not allowed")
        if value is not None and len(value) > MAX_TEXT_FIELD:
            raise Invalid(f"{field}: at most {MAX_TEXT_FIELD} characters")


@contextmanager
def _space(what: str) -> Iterator[None]:
    """A full disk or store is a 507 saying which, never a bare 500."""
    try:
        yield
    except InsufficientStorage:
        raise
    except Exception as exc:
        if is_out_of_space(exc):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InsufficientStorage(f"{what} is full: {reason}") from exc
        raise


@dataclass
class Received:
    """An upload copied into its private folder, whose headers passed: its check can start."""

    folder: Path
    request: validation.Request
    size: int  # of the data file; ``total`` with the labels file
    total: int
    filename: str
    name: str | None
    deadline: float  # time.monotonic() by which the check must have ended

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def receive(settings: Settings, *, data: BinaryIO, filename: str, name: str | None,
            label_column: str, side_info_column: str | None,
            labels: BinaryIO | None) -> Received:
    """Copy the upload into a private folder (bounded) and check its fields and headers
    (422 at once). Blocking: run it in a thread. On error the folder is gone."""
    _check_fields(name, label_column, side_info_column)
    deadline = time.monotonic() + settings.upload_validation_seconds
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    try:
        data_path, labels_path = folder / "data", folder / "labels"
        with _space("the API's temporary space for uploads"):
            size = _copy(data, data_path, settings.max_upload_bytes)
            total = size + (_copy(labels, labels_path, settings.max_upload_bytes - size)
                            if labels is not None else 0)
        with open(data_path, "rb") as fh:
            fmt = detect_format(filename, fh.read(8))
        if fmt != "idx" and labels is not None:
            raise Invalid(f"labels_file: only IDX uploads take a labels file, this is {fmt}")
        given_labels = labels_path if labels is not None else None
        check_headers(data_path, fmt, labels_path=given_labels, label_column=label_column,
                      side_info_column=side_info_column, limits=settings)
        request = validation.Request(
            data_path, fmt, given_labels, label_column, side_info_column,
            validation.Limits(settings.max_decompressed_bytes, settings.max_classes))
        return Received(folder, request, size, total, filename, name, deadline)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def admit(factory: sessionmaker[Session], store: ObjectStore, settings: Settings,
          tenant_id: str, received: Received) -> Staged:
    """The tenant's quota (413), the file stored (507 when the store is full), the row added
    as ``validating``: everything else before the 202. Blocking: run it in a thread. On
    error no row and no object is left (the folder is the caller's)."""
    request = received.request
    with session_scope(factory) as session:
        # Before storing: most refusals cost no write to the store.
        quota.check_upload(session, settings, tenant_id, received.total)
    dataset_id = new_id()
    stored = _store(store, repo.object_prefix(tenant_id, dataset_id), request.fmt, request.path,
                    request.labels_path)
    keys = [obj.key for obj in stored]
    csv = request.fmt == "csv"
    try:
        with session_scope(factory) as session:
            # Again, counting the uploads admitted since the first check.
            quota.check_upload_locked(session, settings, tenant_id, received.total)
            row = Dataset(
                id=dataset_id, tenant_id=tenant_id,
                name=received.name or _name_from(received.filename), format=request.fmt,
                object_key=keys[0], labels_object_key=keys[1] if len(keys) > 1 else None,
                label_column=request.label_column if csv else None,
                side_info_column=request.side_info_column if csv else None,
                status=DatasetStatus.validating, sha256=stored[0].sha256,
                size_bytes=received.size)
            repo.add_dataset(session, row)
            out = DatasetOut.model_validate(row)
    except BaseException:
        _delete(store, keys)
        raise
    return Staged(out, received.folder, keys)


def start_check(validator: validation.Validator, received: Received) -> asyncio.Task:
    """The check, started as soon as the headers passed (it runs while the file is stored)."""
    return asyncio.ensure_future(validator.run(received.request, received.deadline))


async def abandon(check: asyncio.Task, received: Received) -> None:
    """An upload refused after its check started: stop the check, remove the folder."""
    check.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await check
    received.discard()


def _store(store: ObjectStore, base: str, fmt: str, data_path: Path,
           labels_path: Path | None) -> list[StoredObject]:
    """Both objects or neither (the store hashes what it writes: the dataset's sha256)."""
    stored: list[StoredObject] = []
    try:
        with _space("the object store"):
            stored.append(store.put_file(f"{base}/data.{fmt}", data_path))
            if labels_path is not None:
                stored.append(store.put_file(f"{base}/labels.idx", labels_path))
    except BaseException:
        _delete(store, [obj.key for obj in stored])
        raise
    return stored


def _delete(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # noqa: BLE001 - an orphan object is harmless; say so and go on
            log.warning("could not delete object %s", key, exc_info=True)


async def finish_upload(factory: sessionmaker[Session], store: ObjectStore,
                        check: asyncio.Future, staged: Staged) -> None:
    """After the 202: wait for the check and record its outcome. Never raises: a failure to
    record the outcome leaves the row to ``sweep_stale``."""
    dataset_id = staged.dataset.id
    try:
        outcome: validation.Outcome = await check
        log.info("dataset %s checked in %.2f s (peak RSS %.0f MiB): %s", dataset_id,
                 outcome.seconds, outcome.peak_rss_bytes / 2**20,
                 "ready" if outcome.summary else f"failed: {outcome.problem or outcome.error}")
        for attempt in range(4):
            try:
                await anyio.to_thread.run_sync(_record, factory, store, staged, outcome)
                return
            except Exception:  # noqa: BLE001 - the database may be back in a moment
                log.warning("recording the check of dataset %s failed (attempt %d)",
                            dataset_id, attempt + 1, exc_info=True)
                await asyncio.sleep(2 ** attempt)
    except Exception:  # noqa: BLE001 - a background task has no one to raise to
        log.exception("checking dataset %s failed", dataset_id)
    finally:
        staged.discard()


def _record(factory: sessionmaker[Session], store: ObjectStore, staged: Staged,
            outcome: validation.Outcome) -> None:
    summary = outcome.summary
    if summary is None:
        _delete(store, staged.object_keys)  # first, so a failed row never keeps objects
        reason = outcome.problem or f"the file could not be checked: {outcome.error}"
        with session_scope(factory) as session:
            repo.finish_validation(session, staged.dataset.id, status=DatasetStatus.failed,
                                   status_reason=reason)
        return
    with session_scope(factory) as session:
        moved = repo.finish_validation(
            session, staged.dataset.id, status=DatasetStatus.ready, n_samples=summary.n_samples,
            n_features=summary.n_features, n_classes=summary.n_classes,
            class_counts=summary.class_counts, feature_range=summary.feature_range,
            visible_units_hint=summary.visible_units_hint, n_labelled=summary.n_labelled,
            n_with_side=summary.n_with_side, feature_names=summary.feature_names)
    if not moved:  # deleted while it was checked (its objects went with it) or swept
        _delete(store, staged.object_keys)


def sweep_stale(factory: sessionmaker[Session], store: ObjectStore, settings: Settings) -> int:
    """Fail the rows whose check cannot still be running, delete their objects and the
    private folders left by a process that died. Returns how many rows it failed."""
    horizon = settings.upload_validation_seconds + _GRACE_SECONDS
    failed = 0
    with session_scope(factory) as session:
        stale = repo.stale_validations(session, utcnow() - timedelta(seconds=horizon))
        doomed = [(d.id, [k for k in (d.object_key, d.labels_object_key) if k]) for d in stale]
    for dataset_id, keys in doomed:
        _delete(store, keys)
        with session_scope(factory) as session:
            failed += repo.finish_validation(
                session, dataset_id, status=DatasetStatus.failed,
                status_reason="the check of this upload was interrupted (the API stopped); "
                              "upload the file again")
    cutoff = time.time() - horizon
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
    return failed
