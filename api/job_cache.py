"""Job and job-list bodies kept until the tenant's jobs change (issue 12).

A body is stored with the version of ``drtrain.jobs.changes`` read before its query, and served
only while the version is still that one, so a committed change is never hidden (the module's
docstring says why). Entries also expire after ``max_age`` seconds, a bound on what a lost
notification could ever cost. Bounded by the bytes held, least recently used first.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

Body = tuple[bytes, str]  # (JSON, its weak ETag), as api.reads answers


class JobBodies:
    def __init__(self, max_bytes: int = 32 * 2**20, max_age: float = 30.0) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._held = 0
        self._entries: OrderedDict[Hashable, tuple[Hashable, float, Body]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Hashable) -> Body | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored_version, stored_at, body = entry
            if stored_version != version or time.monotonic() - stored_at > self.max_age:
                return None
            self._entries.move_to_end(key)
            return body

    def put(self, key: Hashable, version: Hashable, body: Body) -> None:
        size = len(body[0])
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._held -= len(old[2][0])
            self._entries[key] = (version, time.monotonic(), body)
            self._held += size
            while self._held > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._held -= len(dropped[0])

    def __len__(self) -> int:
        return len(self._entries)
