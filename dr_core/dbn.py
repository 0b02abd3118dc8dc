"""Greedy layer-wise DBN pretraining: layer l is an RBM trained on the posterior means of layer l-1.

The same side labels (DR groups) guide every layer. Resume works from any epoch of any layer:
finished layers are stored in the state as ``rbm.{i}.W|b|c``, the layer in progress as
``current.*`` (see ``dr_core.rbm.train_rbm``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from dr_core.config import RBMConfig
from dr_core.events import Callback, Event, NullCallback
from dr_core.rbm import RBM, train_rbm


def rbm_state(rbms: Sequence[RBM]) -> dict[str, Any]:
    """Finished layers as state entries ``rbm.{i}.W``, ``rbm.{i}.b``, ``rbm.{i}.c`` and ``rbm.{i}.visible``."""
    state: dict[str, Any] = {}
    for i, rbm in enumerate(rbms):
        state[f"rbm.{i}.W"] = rbm.W.detach().clone()
        state[f"rbm.{i}.b"] = rbm.b.detach().clone()
        state[f"rbm.{i}.c"] = rbm.c.detach().clone()
        state[f"rbm.{i}.visible"] = rbm.visible
    return state


def rbms_from_state(state: dict[str, Any], device: torch.device | str, dtype: torch.dtype) -> list[RBM]:
    """Inverse of ``rbm_state``: the finished layers, in order."""
    rbms = []
    i = 0
    while f"rbm.{i}.W" in state:
        W = state[f"rbm.{i}.W"]
        rbm = RBM(W.shape[0], W.shape[1], state.get(f"rbm.{i}.visible", "bernoulli"), init_std=0.0,
                  device=device, dtype=dtype)
        with torch.no_grad():
            rbm.W.copy_(W)
            rbm.b.copy_(state[f"rbm.{i}.b"])
            rbm.c.copy_(state[f"rbm.{i}.c"])
        rbms.append(rbm)
        i += 1
    return rbms


@torch.no_grad()
def propagate(rbm: RBM, X: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Posterior means of ``rbm`` for every row of X, (N, H), in chunks to bound peak memory."""
    return torch.cat([rbm.hidden_probs(X[s:s + chunk]) for s in range(0, X.shape[0], chunk)]) \
        if X.shape[0] else X.new_zeros((0, rbm.n_hidden))


def pretrain_dbn(cfgs: Sequence[RBMConfig], X: torch.Tensor, side: torch.Tensor | None, *,
                 generator: torch.Generator, callback: Callback | None = None,
                 resume: dict[str, Any] | None = None, X_holdout: torch.Tensor | None = None,
                 progress_offset: float = 0.0, progress_scale: float = 1.0,
                 state_extra: dict[str, Any] | None = None, history: list[Event] | None = None
                 ) -> list[RBM]:
    """Pretrain one RBM per config on X (N, D) and return the stack (bottom first).

    ``callback.on_layer_end`` receives, after each layer, a state whose position is the start
    of the next layer (``layer`` = next index, ``epoch`` = 0). Events are appended to ``history``
    when given. Progress runs from ``progress_offset`` to ``progress_offset + progress_scale``,
    each layer weighted by its number of epochs.
    """
    callback = callback or NullCallback()
    extra = dict(state_extra or {})
    rbms: list[RBM] = []
    if resume is not None:
        rbms = rbms_from_state(resume, X.device, X.dtype)
        generator.set_state(resume["generator"])
    total_epochs = sum(c.epochs for c in cfgs) or 1
    epochs_before = [sum(c.epochs for c in cfgs[:i]) for i in range(len(cfgs))]

    data, holdout = X, X_holdout
    for rbm in rbms:
        data = propagate(rbm, data)
        holdout = propagate(rbm, holdout) if holdout is not None else None

    for layer in range(len(rbms), len(cfgs)):
        cfg = cfgs[layer]
        layer_resume = resume if resume is not None and "current.W" in resume \
            and int(resume.get("layer", -1)) == layer else None
        rbm, events = train_rbm(
            cfg, data, side, generator=generator, callback=callback, layer=layer, X_holdout=holdout,
            resume=layer_resume,
            progress_offset=progress_offset + progress_scale * epochs_before[layer] / total_epochs,
            progress_scale=progress_scale * cfg.epochs / total_epochs,
            state_extra={**extra, **rbm_state(rbms)})
        rbms.append(rbm)
        if history is not None:
            history.extend(events)
        state = {**extra, **rbm_state(rbms), "phase": "pretrain", "layer": layer + 1, "epoch": 0,
                 "generator": generator.get_state()}
        done = progress_offset + progress_scale * (epochs_before[layer] + cfg.epochs) / total_epochs
        layer_event = Event("pretrain", layer, cfg.epochs, dict(events[-1].metrics) if events else {},
                            done, state)
        if history is not None:
            history.append(layer_event)
        callback.on_layer_end(layer_event)
        if layer + 1 < len(cfgs):
            data = propagate(rbm, data)
            holdout = propagate(rbm, holdout) if holdout is not None else None
    return rbms
