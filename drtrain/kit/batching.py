"""Work handed in from any thread and done in batches on one thread of its own.

The thread starts with the first item and ends after ``idle_seconds`` without work (the
next item starts it again), so an idle process holds no thread. ``drain`` waits until
everything handed in has been handled: what an app shutting down calls.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchThread(Generic[T]):
    """``handle(batch)`` on one thread for every item ``put`` (at most ``max_batch`` at a
    time, in the order put). With ``max_pending``, ``put`` waits while that many are
    waiting: a handler that falls behind slows its producers instead of growing memory."""

    def __init__(self, handle: Callable[[list[T]], None], *, name: str,
                 idle_seconds: float, max_batch: int | None = None,
                 max_pending: int | None = None) -> None:
        self.handle = handle
        self.name = name
        self.idle_seconds = idle_seconds
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[T] = []
        lock = threading.Lock()
        self._work = threading.Condition(lock)  # items for the thread
        self._room = threading.Condition(lock)  # fewer than max_pending waiting
        self._settled = threading.Condition(lock)  # none waiting, none in hand
        self._running = False
        self._busy = False  # a batch taken and not yet handled

    def put(self, item: T) -> None:
        with self._work:
            if self.max_pending is not None:
                self._room.wait_for(lambda: len(self._pending) < self.max_pending)  # type: ignore[operator]
            self._pending.append(item)
            if self._running:
                self._work.notify()
                return
            self._running = True
        threading.Thread(target=self._loop, name=self.name, daemon=True).start()

    def drain(self, timeout: float) -> bool:
        """Waits until every item put has been handled; False after ``timeout`` seconds."""
        with self._settled:
            return self._settled.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _take(self) -> list[T] | None:
        with self._work:
            self._busy = False
            if not self._pending:
                self._settled.notify_all()
                self._work.wait(self.idle_seconds)
                if not self._pending:
                    self._running = False
                    return None
            size = len(self._pending) if self.max_batch is None else self.max_batch
            batch = self._pending[:size]
            del self._pending[:size]
            self._busy = True
            self._room.notify_all()
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self.handle(batch)
            except Exception:  # noqa: BLE001 - the thread must go on for the next batch
                log.exception("%s: a batch of %d failed", self.name, len(batch))
            except BaseException:  # the thread ends: the next put starts another
                with self._work:
                    self._running = self._busy = False
                    self._settled.notify_all()
                raise
