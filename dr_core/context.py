"""What a trainer takes besides its config: the data, and the run context.

Every trainer has the shape ``train_x(config, Examples, RunContext, ...) -> history``
(minGPT's Trainer, as functions): the frozen config says *what* to train, ``Examples`` holds
the tensors, and ``RunContext`` says where random numbers come from, whom to tell about
progress, and where to resume. Whatever only a caller knows (its notion of overall progress,
state entries of its own) it adds by wrapping the callback (``dr_core.events.EventAdapter``),
not by threading parameters through the trainers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dr_core.events import Callback, NullCallback, TrainingStopped


@dataclass(frozen=True)
class Examples:
    """Training tensors on one device: X (N, D) features, y (N,) int64 class indices (-1: no
    label) or None, side (N,) int64 DR group labels (>= 0; -1: no group) or None (no DR)."""

    X: Tensor
    y: Tensor | None = None
    side: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.X.shape[0]
        for name in ("y", "side"):
            t = getattr(self, name)
            if t is not None and t.shape != (n,):
                raise ValueError(f"{name}: expected shape ({n},) to match X, got {tuple(t.shape)}")

    def __len__(self) -> int:
        return self.X.shape[0]

    def to(self, device: torch.device | str) -> Examples:
        """The same examples on ``device`` (no copy for tensors already there)."""
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return Examples(self.X.to(device), move(self.y), move(self.side))


@dataclass(frozen=True)
class RunContext:
    """How one training run is driven.

    ``generator`` makes every random draw (seed it; it lives on the data's device, or on CPU
    where a trainer says so). ``callback`` gets an event after every epoch and is asked after
    every mini-batch whether to stop. ``resume`` is the ``state`` of an earlier event of the
    same trainer (see each trainer), or None to start afresh. ``cuda_graphs``: replay the
    full-size training steps from CUDA graphs (``dr_core.cuda_graphs``) when the data and the
    generator are on a CUDA device; the same numbers as the eager steps, fewer launches.
    """

    generator: torch.Generator
    callback: Callback = field(default_factory=NullCallback)
    resume: dict[str, Any] | None = None
    cuda_graphs: bool = False

    def replace(self, **changes: Any) -> RunContext:
        return dataclasses.replace(self, **changes)

    def stop_if_asked(self, where: str) -> None:
        """Cooperative cancellation: raise ``TrainingStopped`` when the callback asks to stop."""
        if self.callback.should_stop():
            raise TrainingStopped(f"stopped in {where}")
