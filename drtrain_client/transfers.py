"""Byte streams in both directions: counted uploads, and downloads appended to a part file while
their sha256 is computed, so that a file is renamed into place only when it is correct."""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

# Called with (bytes done so far, total bytes or None when the total is unknown).
ProgressCallback = Callable[[int, int | None], None]

_CHUNK = 1024 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Meter:
    """Bytes moved so far across one transfer (possibly several files), told to a callback."""

    def __init__(self, total: int | None, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback

    def add(self, n: int) -> None:
        self.done += n
        if self._callback is not None and n:
            self._callback(self.done, self.total)

    def start(self, done: int = 0) -> None:
        self.done = done
        if self._callback is not None:
            self._callback(self.done, self.total)


class CountingReader:
    """A read-only binary file that reports each chunk httpx reads from it for the request body.

    httpx asks for ``fileno`` (to learn the length for ``Content-Length``), seeks to 0 and then
    reads in chunks, so the file is streamed and never held whole in memory.
    """

    def __init__(self, raw: BinaryIO, meter: Meter) -> None:
        self._raw = raw
        self._meter = meter
        self._position = 0

    def fileno(self) -> int:
        return self._raw.fileno()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._raw.seek(offset, whence)
        # A rewind (a resent body) counts those bytes again; a length probe does not count.
        self._meter.done -= self._position - min(self._position, position)
        self._position = min(self._position, position)
        return position

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self._position += len(chunk)
        self._meter.add(len(chunk))
        return chunk


def append_chunks(chunks: Iterator[bytes], part: Path, offset: int,
                  meter: Meter) -> str:
    """Write ``chunks`` to ``part`` after its first ``offset`` bytes (0: a new file); returns
    the sha256 of the whole part file. fsynced, so a resume can trust what is there."""
    digest = hashlib.sha256()
    if offset:
        with part.open("rb") as existing:
            for block in iter(lambda: existing.read(_CHUNK), b""):
                digest.update(block)
    with part.open("ab" if offset else "wb") as out:
        # Chunks as they arrive: a size here would buffer up to it in memory and lose that
        # much on an interruption instead of keeping it for the resume.
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            meter.add(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def etag_sha256(etag: str | None) -> str | None:
    if not etag:
        return None
    value = etag.removeprefix("W/").strip('"').lower()
    return value if _SHA256_HEX.match(value) else None


def content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None
