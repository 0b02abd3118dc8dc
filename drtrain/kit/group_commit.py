"""Group commit: work handed in from any thread, committed in batches on one thread, each
batch's callers answered at once, then what the batch committed published on a second
thread, so the next batch need not wait for the broker.

Under load a transaction's fixed costs (a session, the flush, locks, the commit, a broker
round trip) are paid once per batch; a lone item is a batch of one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from drtrain.kit.batching import BatchThread

log = logging.getLogger(__name__)

T = TypeVar("T")  # an item handed in
P = TypeVar("P")  # what a committed batch hands to ``publish``

MAX_BATCH = 64
# Committed batches waiting for the broker beyond this hold the next commit back (memory
# stays bounded when the broker is slower than the commits).
MAX_BATCHES_UNPUBLISHED = 256
# Each thread ends after this long without work (and starts again with the next item).
IDLE_SECONDS = 5.0


class GroupCommit(Generic[T, P]):
    """``commit(batch)`` on one thread (it settles each item's outcome and returns what to
    publish), then ``deliver(batch)`` (answers the callers), then ``publish(done)`` on a
    second thread for everything committed since its last call. ``drain`` waits for all of
    it (an app shutting down)."""

    def __init__(self, commit: Callable[[list[T]], Sequence[P]],
                 deliver: Callable[[list[T]], None], publish: Callable[[list[P]], None], *,
                 name: str, max_batch: int = MAX_BATCH,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.commit, self.deliver, self.publish = commit, deliver, publish
        self._commits: BatchThread[T] = BatchThread(
            self._commit_and_deliver, name=name, idle_seconds=idle_seconds,
            max_batch=max_batch)
        self._publishes: BatchThread[P] = BatchThread(
            self.publish, name=f"{name}-publisher", idle_seconds=idle_seconds,
            max_pending=MAX_BATCHES_UNPUBLISHED)

    def put(self, item: T) -> None:
        self._commits.put(item)

    def drain(self, timeout: float) -> bool:
        """Waits until every item handed in is answered and published; False if that took
        longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return (self._commits.drain(timeout)
                and self._publishes.drain(max(0.0, deadline - time.monotonic())))

    def _commit_and_deliver(self, batch: list[T]) -> None:
        done: Sequence[P] = ()
        try:
            done = self.commit(batch)
        except Exception:  # noqa: BLE001 - never leave a caller waiting
            log.exception("a batch of %d failed to commit", len(batch))
        finally:
            try:
                self.deliver(batch)
            except Exception:  # noqa: BLE001
                log.exception("delivering a batch's outcomes failed")
        # Published once answered: the answer is settled by the commit (a publish that
        # fails leaves the work for its recovery, and the answer is the same).
        for item in done:
            self._publishes.put(item)
