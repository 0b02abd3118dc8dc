"""Job and job-list bodies kept until the tenant's jobs change.

A body is stored with the version of ``drtrain.kit.job_changes`` read before its query, and served
only while the version is still that one, so a committed change is never hidden (the module's
docstring says why). Entries also expire after ``max_age`` seconds, a bound on what a lost
notification could ever cost. Bounded by the bytes held, least recently used first.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

Body = tuple[bytes, str]  # (JSON, its weak ETag), as api.reads answers


class BodiesByBytes:
    """Response bodies by key, bounded by the bytes held (least recently used go first); a
    body over ``1 / largest_share`` of the bound is never kept. Thread-safe."""

    def __init__(self, max_bytes: int, largest_share: int) -> None:
        self.max_bytes = max_bytes
        self.largest = max_bytes // largest_share
        self._held = 0
        self._entries: OrderedDict[Hashable, tuple[Any, Body]] = OrderedDict()
        self._lock = threading.Lock()

    def _lookup(self, key: Hashable) -> tuple[Any, Body] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _store(self, key: Hashable, tag: Any, body: Body) -> None:
        """Keeps ``body`` with ``tag`` (what the subclass checks it against), replacing any."""
        size = len(body[0])
        if size > self.largest:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._held -= len(old[1][0])
            self._entries[key] = (tag, body)
            self._held += size
            while self._held > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._held -= len(dropped[0])

    def __len__(self) -> int:
        return len(self._entries)


class JobBodies(BodiesByBytes):
    def __init__(self, max_bytes: int = 32 * 2**20, max_age: float = 30.0) -> None:
        super().__init__(max_bytes, largest_share=8)
        self.max_age = max_age

    def get(self, key: Hashable, version: Hashable) -> Body | None:
        entry = self._lookup(key)
        if entry is None:
            return None
        (stored_version, stored_at), body = entry
        if stored_version != version or time.monotonic() - stored_at > self.max_age:
            return None
        return body

    def put(self, key: Hashable, version: Hashable, body: Body) -> None:
        self._store(key, (version, time.monotonic()), body)


class FullPages(BodiesByBytes):
    """Metrics pages that can no longer change, by (job, since, limit): a page that came
    back full. Points are only ever appended, each with a seq above every committed one
    (``drtrain.jobs.lifecycle.add_metrics``), and go only with their job, so the first
    ``limit`` points after ``since`` stay those points. The job's existence (and tenant) is
    still checked on every request."""

    def __init__(self, max_bytes: int = 32 * 2**20) -> None:
        super().__init__(max_bytes, largest_share=4)

    def get(self, key: Hashable) -> Body | None:
        entry = self._lookup(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, page: Body) -> None:
        self._store(key, None, page)
