"""The worker's object store rides out a blip: a write or read that fails for a transient
reason (the endpoint unreachable, a 5xx, throttling: ``drtrain.kit.storage.is_transient``) is
tried again with backoff for up to a lease, inside the attempt, while the heartbeat keeps the
lease. Only an outage longer than that ends the attempt (the reaper resumes the job from its
last checkpoint). Anything else (a missing object, a refused credential, a full disk) is
raised at once: retrying would fail the same way."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from drtrain.kit.storage import ObjectStore, StoredObject, is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 5.0


class PatientStore:
    """``inner`` with ``put_stream``, ``put_file`` and ``get_to_file`` retried for up to
    ``seconds``; every other call goes straight to ``inner``."""

    def __init__(self, inner: ObjectStore, seconds: float,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.seconds, self._sleep, self._clock = inner, seconds, sleep, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_stream(self, key: str, chunks: Iterable[bytes], **kwargs: Any) -> StoredObject:
        # A retry sends the bytes again, so they are kept: the worker's states and models are
        # in memory already when it stores them.
        parts = list(chunks)
        return self._retried(f"store {key}", lambda: self.inner.put_stream(key, parts, **kwargs))

    def put_file(self, key: str, path: Path) -> StoredObject:
        return self._retried(f"store {key}", lambda: self.inner.put_file(key, path))

    def get_to_file(self, key: str, path: Path) -> None:
        self._retried(f"read {key}", lambda: self.inner.get_to_file(key, path))

    def _retried(self, what: str, call: Callable[[], T]) -> T:
        deadline = self._clock() + self.seconds
        wait = FIRST_WAIT_SECONDS
        while True:
            try:
                return call()
            except Exception as exc:
                left = deadline - self._clock()
                if not is_transient(exc) or left <= 0:
                    raise
                log.warning("object store: cannot %s (%s: %s); trying again in %.1fs",
                            what, type(exc).__name__, exc, min(wait, left))
                self._sleep(min(wait, left))
                wait = min(wait * 2, LONGEST_WAIT_SECONDS)
