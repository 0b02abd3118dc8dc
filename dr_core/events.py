"""What trainers tell their caller, and how the caller asks them to stop.

Trainers never print, log or touch settings; they call a ``Callback``:

* ``on_epoch_end(event)`` once per finished epoch, with that epoch's metrics and a
  ``state`` dict from which training resumes exactly (see ``dr_core.checkpoint``);
* ``on_layer_end(event)`` once per finished pretraining layer (state included);
* ``should_stop()`` after every mini-batch: returning True makes the trainer raise
  ``TrainingStopped`` before the next batch (cooperative cancellation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Phase = Literal["pretrain", "finetune"]


@dataclass
class Event:
    """One progress report.

    ``layer`` is the 0-based hidden layer being pretrained (``None`` in fine-tuning),
    ``epoch`` is 1-based (the epoch just finished; 0 for a layer_end event before
    any epoch ran), ``metrics`` maps metric names to floats (names are the keys
    documented in each trainer), ``progress`` is the fraction of the whole
    pipeline done in [0, 1], ``state`` the resumable training state (tensors and
    plain JSON-able values) at this point.
    """

    phase: Phase
    layer: int | None
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    progress: float = 0.0
    state: dict[str, Any] | None = None


class TrainingStopped(Exception):
    """Raised by a trainer when ``Callback.should_stop()`` returned True."""


class Callback(Protocol):
    def on_epoch_end(self, event: Event) -> None: ...

    def on_layer_end(self, event: Event) -> None: ...

    def should_stop(self) -> bool: ...


class NullCallback:
    """Callback that records nothing and never stops."""

    def on_epoch_end(self, event: Event) -> None:
        pass

    def on_layer_end(self, event: Event) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class RecordingCallback(NullCallback):
    """Keeps every event (handy in tests and notebooks)."""

    def __init__(self, stop_after_batches: int | None = None) -> None:
        self.events: list[Event] = []
        self._stop_after = stop_after_batches
        self.batches = 0

    def on_epoch_end(self, event: Event) -> None:
        self.events.append(event)

    def on_layer_end(self, event: Event) -> None:
        self.events.append(event)

    def should_stop(self) -> bool:
        self.batches += 1
        return self._stop_after is not None and self.batches >= self._stop_after
