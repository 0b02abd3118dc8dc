"""What trainers tell their caller, and how the caller asks them to stop.

Trainers never print, log or touch settings; they call a ``Callback``:

* ``on_epoch_end(event)`` once per finished epoch, with that epoch's metrics and a
  ``state`` dict from which training resumes exactly (see ``dr_core.checkpoint``);
* ``on_layer_end(event)`` once per finished pretraining layer (state included);
* ``should_stop()`` after every mini-batch: returning True makes the trainer raise
  ``TrainingStopped`` before the next batch (cooperative cancellation).

A caller that knows more than a trainer (the pipeline knows the overall progress and the
input normalisation) wraps the callback in an ``EventAdapter`` that completes each event.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

Phase = Literal["pretrain", "finetune"]
PHASES: tuple[Phase, ...] = get_args(Phase)

# The metric names events carry, by phase (each trainer's docstring says what they measure).
# The web app's charts name them too; tests/test_lists.py holds its copies to these.
PRETRAIN_METRICS = ("recon_error", "free_energy_gap", "pseudo_log_likelihood", "dr",
                    "dr_pairs_per_batch", "cross_group_divergence")
FINETUNE_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "dr")
# Fine-tuning's per-layer gradient norms: a prefix, then "layer{i}" (0-based hidden layer) or
# "head"; GRAD_NORM of the classification loss alone, GRAD_NORM_DR of the weighted DR term.
GRAD_NORM = "grad_norm."
GRAD_NORM_DR = "grad_norm_dr."
# A whole run's metrics (dr_core.pipeline.PipelineResult.metrics): each split's final loss and
# accuracy where it has labels, the epochs of each phase and the wall time.
# What the worker measures of its own process at each epoch's end and records beside the epoch's
# metrics (worker/system_metrics.py): CPU use since the previous epoch's end (100 = one core
# busy), resident memory, and on a CUDA device its utilisation (where NVML is present) and the
# memory PyTorch holds now and at its peak. dr_core never measures them.
SYSTEM_METRICS = ("sys.cpu_percent", "sys.rss_bytes", "sys.gpu_utilization_percent",
                  "sys.gpu_memory_allocated_bytes", "sys.gpu_memory_peak_bytes")
FINAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy", *(f"epochs_{phase}" for phase in PHASES), "wall_seconds")


@dataclass
class Event:
    """One progress report.

    ``layer`` is the 0-based hidden layer being pretrained (``None`` in fine-tuning),
    ``epoch`` is 1-based (the epoch just finished; 0 for a layer_end event before
    any epoch ran), ``metrics`` maps metric names to floats (names are the keys
    documented in each trainer), ``progress`` the fraction done in [0, 1]: a trainer
    reports the fraction of its own epochs (of the layer, for pretraining), and
    ``dr_core.pipeline.run_pipeline`` replaces it by the fraction of the whole run.
    ``state`` is the resumable training state (tensors and plain JSON-able values) at
    this point. ``at`` is when the event was made (seconds since the Unix epoch): a caller
    that records events later, several at once, still knows when each epoch ended. Events
    compare without it.
    """

    phase: Phase
    layer: int | None
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    progress: float = 0.0
    state: dict[str, Any] | None = None
    at: float = field(default_factory=time.time, compare=False)


class TrainingStopped(Exception):
    """Raised by a trainer when ``Callback.should_stop()`` returned True."""


class Callback(Protocol):
    def on_epoch_end(self, event: Event) -> None: ...

    def on_layer_end(self, event: Event) -> None: ...

    def should_stop(self) -> bool: ...


class EventAdapter:
    """A callback that hands every event to ``inner`` after ``adapt`` (Event -> Event), and
    passes stop requests straight through."""

    def __init__(self, inner: Callback, adapt: Callable[[Event], Event]) -> None:
        self.inner, self.adapt = inner, adapt

    def on_epoch_end(self, event: Event) -> None:
        self.inner.on_epoch_end(self.adapt(event))

    def on_layer_end(self, event: Event) -> None:
        self.inner.on_layer_end(self.adapt(event))

    def should_stop(self) -> bool:
        return self.inner.should_stop()


def with_state(inner: Callback, extra: dict[str, Any]) -> EventAdapter:
    """``inner`` receiving every event's state with the entries of ``extra`` added (the
    event's own entries win): how a caller puts what it needs to resume into every state."""
    def adapt(event: Event) -> Event:
        if event.state is None:
            return event
        return dataclasses.replace(event, state={**extra, **event.state})
    return EventAdapter(inner, adapt)


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
