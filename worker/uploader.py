"""Off the training thread: a job's checkpoint uploads, metric inserts and progress writes.

dr_core calls the job's callback after every epoch. Recording an event (serialise the state,
sha256, fsync, upload, then fenced rows) can take longer than a GPU epoch of a small network,
so ``BackgroundRecorder`` only queues the event and returns; one thread records the events in
order through the synchronous recorder (``worker.job_callback.JobCallback``: the states in the
store first, then the fenced rows).

* Gathered: the thread hands the recorder every event that arrives within ``flush_seconds``
  of the first one it takes (and any already waiting), up to the first that carries a state,
  and the recorder writes them in one transaction. A job of short epochs then pays one
  transaction per ``flush_seconds`` instead of one per epoch (its statements cost the
  worker's CPU and the database's), and live views lag by at most that much.
* Bounded: at most ``max_pending`` events wait in the queue, and one more state is being
  recorded (each a copy of the training state); training blocks on a full queue, so a slow
  store slows training instead of filling memory.
* Errors: whatever the thread raises (an outage of the store or database, a crash) is raised
  in the training thread at its next callback call (``should_stop`` runs after every batch),
  so the runner handles it as before; the events queued after it are not recorded.
* Nothing lost beyond what resume covers: leaving the ``with`` block records every queued
  event at once (the runner writes the final model and finishes the job only then). A
  process that dies loses the events not yet recorded; they all come after the newest
  recorded checkpoint, so the next attempt retrains them (metric points are deduplicated by
  their natural key).
* Cadence (``CheckpointCadence``): an epoch's state goes to the store every ``every_epochs``
  epochs or ``every_seconds`` seconds, whichever comes first; its metrics and progress are
  recorded every epoch. A layer's end always carries its state, so the last epoch of a
  pretraining layer never does: the layer's end follows it at once, with the same weights and
  the finished layer added, and a second upload would store nothing resume could use.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol

from dr_core.events import Event

log = logging.getLogger(__name__)

_STOP = object()

# (kind, event): kind "epoch" or "layer", as dr_core's callback was called
Item = tuple[str, Event]


class Recorder(Protocol):
    """What ``BackgroundRecorder`` hands events to: ``record`` writes events in order, at
    once; ``should_stop`` is dr_core's."""

    def record(self, items: list[Item]) -> None: ...

    def should_stop(self) -> bool: ...


class CheckpointCadence:
    """Whether an event's state should be stored (see the module docstring); ``layer_epochs``
    are the epochs of each pretraining layer, in order."""

    def __init__(self, every_epochs: int = 1, every_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 layer_epochs: Sequence[int] = ()) -> None:
        if every_epochs < 1 or every_seconds < 0:
            raise ValueError("every_epochs must be >= 1 and every_seconds >= 0")
        self.every_epochs, self.every_seconds, self.clock = every_epochs, every_seconds, clock
        self.layer_epochs = tuple(layer_epochs)
        self._epochs, self._since = 0, clock()

    def _ends_layer(self, kind: str, event: Event) -> bool:
        """Whether ``event`` is the last epoch of a pretraining layer (its end comes next)."""
        return (kind == "epoch" and event.phase == "pretrain" and event.layer is not None
                and event.layer < len(self.layer_epochs)
                and event.epoch == self.layer_epochs[event.layer])

    def due(self, kind: str, event: Event) -> bool:
        if self._ends_layer(kind, event):
            return False
        self._epochs += 1
        now = self.clock()
        timed = self.every_seconds > 0 and now - self._since >= self.every_seconds
        if kind == "layer" or self._epochs >= self.every_epochs or timed:
            self._epochs, self._since = 0, now
            return True
        return False


class BackgroundRecorder:
    """A dr_core callback that hands events to ``inner`` on a thread of its own, gathered
    (see the module docstring); a context manager (leaving it drains the queue, and raises
    the thread's error if the block did not raise one of its own)."""

    def __init__(self, inner: Recorder, *, max_pending: int = 4,
                 cadence: CheckpointCadence | None = None, flush_seconds: float = 0.0) -> None:
        self.inner = inner
        self.cadence = cadence or CheckpointCadence()
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None  # raised by the thread, not yet re-raised
        self._raised: BaseException | None = None  # ... and once it has been
        self._thread = threading.Thread(target=self._drain, name="checkpoint-uploader",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- the training thread
    def on_epoch_end(self, event: Event) -> None:
        self._put("epoch", event)

    def on_layer_end(self, event: Event) -> None:
        self._put("layer", event)

    def should_stop(self) -> bool:
        self._raise_pending()
        return self.inner.should_stop()

    def _put(self, kind: str, event: Event) -> None:
        self._raise_pending()
        if event.state is not None and not self.cadence.due(kind, event):
            event = dataclasses.replace(event, state=None)  # metrics and progress only
        while True:  # a full queue blocks training, but never past the thread's death
            try:
                self._queue.put((kind, event), timeout=0.5)
                return
            except queue.Full:
                self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            self._raised, self._error = self._error, None
            raise self._raised
        if self._raised is not None:
            raise RuntimeError("the checkpoint uploader has stopped") from self._raised

    def __enter__(self) -> BackgroundRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._queue.put((None, _STOP))
        self._thread.join()
        if exc is None:
            self._raise_pending()
        elif self._error is not None:
            log.warning("checkpoint uploader failed too: %r", self._error)

    # ------------------------------------------------------------------- the upload thread
    def _drain(self) -> None:
        failed = False
        while True:
            items, stopped = self._gather()
            if items and not failed:  # after an error nothing more is recorded
                try:
                    self.inner.record(items)
                except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                    self._error, failed = exc, True
            if stopped:
                return

    def _gather(self) -> tuple[list[Item], bool]:
        """(the next events to record together, whether the block has ended): the next
        event, then those already waiting or arriving within ``flush_seconds`` of it, up to
        the first that carries a state (so that each transaction stores one state at most,
        and the store holds at most one beyond the retained checkpoints)."""
        kind, event = self._queue.get()
        if event is _STOP:
            return [], True
        items = [(kind, event)]
        deadline = time.monotonic() + self.flush_seconds
        while event.state is None:
            left = deadline - time.monotonic()
            try:
                kind, event = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if event is _STOP:
                return items, True
            items.append((kind, event))
        return items, False
