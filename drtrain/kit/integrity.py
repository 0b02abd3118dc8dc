"""Integrity on serve: stored bytes are checked against their recorded sha256 before they are
used (predict) or while they are sent (downloads), and a mismatch is never served as if right.

Process-wide state, all thread-safe: a counter of failures by where they were found (shown
in ``/metrics``), and the set of objects whose last full check failed ("suspect"). A suspect
object is hashed whole before it is served again, so after one aborted stream every later
request gets a clean error, and a repaired object is served again as soon as it verifies.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator

from drtrain.kit.errors import IntegrityFailure, ObjectMissing

log = logging.getLogger(__name__)

_lock = threading.Lock()
_failures: Counter[str] = Counter()
_suspect: set[tuple[str, str]] = set()


def record_failure(where: str, key: str, expected: str, actual: str) -> None:
    log.error("integrity failure (%s): object %s has sha256 %s, recorded %s", where, key,
              actual, expected)
    with _lock:
        _failures[where] += 1
        _suspect.add((key, expected))


def failures() -> dict[str, int]:
    with _lock:
        return dict(_failures)


def is_suspect(key: str, expected: str) -> bool:
    with _lock:
        return (key, expected) in _suspect


def clear_suspect(key: str, expected: str) -> None:
    with _lock:
        _suspect.discard((key, expected))


def failure(key: str) -> IntegrityFailure:
    return IntegrityFailure(f"stored object {key} does not match its recorded sha256; it is not "
                            "served (the operator has been alerted in the log and /metrics)")


def missing(where: str, key: str, expected: str) -> ObjectMissing:
    """The object is not in the store at all: counted with the failures (an operator must
    know), but told apart from altered bytes."""
    record_failure(where, key, expected, "<missing>")
    return ObjectMissing(f"stored object {key} is missing from the object store (its record "
                         "is kept; restoring the store from a backup brings it back)")


def verify_bytes(data: bytes, expected: str, *, key: str, where: str) -> bytes:
    """``data`` when its sha256 is ``expected``; else record the failure and raise."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        record_failure(where, key, expected, actual)
        raise failure(key)
    clear_suspect(key, expected)
    return data


def verify_chunks(chunks: Iterable[bytes], expected: str, *, key: str, where: str) -> None:
    """Hash a whole object; raise (and record) when it is not ``expected``."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        record_failure(where, key, expected, actual)
        raise failure(key)
    clear_suspect(key, expected)


class StreamAborted(Exception):  # noqa: N818 - what happened to the response, not an error kind
    """Raised inside a response whose headers are already sent: the server cuts the
    connection (there is no status left to change)."""


def verified_stream(chunks: Iterable[bytes], expected: str, *, key: str,
                    where: str) -> Iterator[bytes]:
    """Yield a whole object's chunks, holding the last one back until the sha256 of all of
    them is known: on a mismatch the stream ends with an error before its final bytes, so
    a client never receives a complete wrong file (its Content-Length is never reached)."""
    digest = hashlib.sha256()
    held: bytes | None = None
    for chunk in chunks:
        digest.update(chunk)
        if held is not None:
            yield held
        held = chunk
    actual = digest.hexdigest()
    if actual != expected:
        record_failure(where, key, expected, actual)
        raise StreamAborted(f"stream of {key} aborted before its last bytes: sha256 mismatch")
    clear_suspect(key, expected)
    if held is not None:
        yield held
