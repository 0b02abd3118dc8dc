"""drtrain.kit.batching.BatchThread: the threads behind the group commit of submits and their publishing."""
from __future__ import annotations

import threading
import time

from drtrain.kit.batching import BatchThread


def _wait(condition, seconds: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_items_are_handled_in_order_in_batches_of_at_most_max_batch() -> None:
    gate = threading.Event()
    batches: list[list[int]] = []

    def handle(batch: list[int]) -> None:
        gate.wait(5)
        batches.append(batch)

    worker = BatchThread(handle, name="t", idle_seconds=5, max_batch=3)
    for i in range(8):
        worker.put(i)
    gate.set()
    assert worker.drain(5)
    assert [i for b in batches for i in b] == list(range(8))
    assert all(len(b) <= 3 for b in batches)
    assert len(batches) >= 3  # 8 items, at most 3 a batch


def test_drain_waits_for_the_batch_in_hand() -> None:
    release = threading.Event()
    started = threading.Event()

    def handle(_batch: list[int]) -> None:
        started.set()
        release.wait(5)

    worker = BatchThread(handle, name="t", idle_seconds=5)
    assert worker.drain(0)  # nothing put yet
    worker.put(1)
    assert started.wait(5)
    assert not worker.drain(0.1)
    release.set()
    assert worker.drain(5)


def test_a_failing_batch_does_not_stop_the_thread() -> None:
    handled: list[int] = []

    def handle(batch: list[int]) -> None:
        if batch == [1]:
            raise RuntimeError("bug")
        handled.extend(batch)

    worker = BatchThread(handle, name="t", idle_seconds=5)
    worker.put(1)
    assert worker.drain(5)
    worker.put(2)
    assert worker.drain(5)
    assert handled == [2]


def test_the_thread_ends_when_idle_and_the_next_put_starts_another() -> None:
    handled: list[int] = []
    worker = BatchThread(handled.extend, name="batching-idle-test", idle_seconds=0.05)
    worker.put(1)
    assert _wait(lambda: handled == [1])

    def alive() -> bool:
        return any(t.name == "batching-idle-test" for t in threading.enumerate())

    assert _wait(lambda: not alive())
    worker.put(2)
    assert _wait(lambda: handled == [1, 2])


def test_put_waits_while_max_pending_items_wait() -> None:
    release = threading.Event()
    worker = BatchThread(lambda _b: release.wait(5), name="t", idle_seconds=5, max_pending=2)
    worker.put(0)  # taken at once: in hand, not waiting
    assert _wait(lambda: worker._busy)
    worker.put(1)
    worker.put(2)  # two waiting now
    third = threading.Thread(target=worker.put, args=(3,))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # held back
    release.set()
    third.join(5)
    assert not third.is_alive()
    assert worker.drain(5)
