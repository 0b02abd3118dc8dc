"""Greedy layer-wise DBN pretraining: layer l is an RBM trained on the posterior means of layer l-1.

The same side labels (DR groups) guide every layer. Resume works from any epoch of any layer:
finished layers are stored in the state as ``rbm.{i}.W|b|c``, the layer in progress as
``current.*`` (see ``dr_core.rbm_trainer.train_rbm``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dr_core.config import RBMConfig
from dr_core.context import Examples, RunContext
from dr_core.events import Event, with_state
from dr_core.rbm import RBM
from dr_core.rbm_trainer import train_rbm


def rbm_state(rbms: Sequence[RBM]) -> dict[str, Any]:
    """Finished layers as state entries ``rbm.{i}.W``, ``rbm.{i}.b``, ``rbm.{i}.c``, ``rbm.{i}.visible``."""
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


def _layer_resume(resume: dict[str, Any] | None, layer: int) -> dict[str, Any] | None:
    """The part of a DBN state that resumes ``layer`` mid-way, if it is that layer's."""
    if resume is not None and "current.W" in resume and int(resume.get("layer", -1)) == layer:
        return resume
    return None


def pretrain_dbn(cfgs: Sequence[RBMConfig], train: Examples, run: RunContext, *,
                 holdout: torch.Tensor | None = None) -> list[RBM]:
    """Pretrain one RBM per config on ``train`` (X (N, D), side (N,) or None); bottom first.

    Layer l trains on the posterior means of layer l-1 (``holdout`` (M, D) follows along), with
    the same side labels. Every epoch event of ``train_rbm`` reaches ``run.callback`` with the
    finished layers added to its state; after each layer ``on_layer_end`` gets an event whose
    state starts the next layer (``layer`` = next index, ``epoch`` = 0). Progress in events is
    the layer's own. ``run.resume`` may be any of these states.
    """
    rbms: list[RBM] = []
    if run.resume is not None:
        rbms = rbms_from_state(run.resume, train.X.device, train.X.dtype)
        run.generator.set_state(run.resume["generator"])
    data, held = train.X, holdout
    for rbm in rbms:
        data, held = propagate(rbm, data), (propagate(rbm, held) if held is not None else None)
    for layer in range(len(rbms), len(cfgs)):
        layer_run = run.replace(callback=with_state(run.callback, rbm_state(rbms)),
                                resume=_layer_resume(run.resume, layer))
        rbm, events = train_rbm(cfgs[layer], Examples(data, side=train.side), layer_run,
                                holdout=held, layer=layer)
        rbms.append(rbm)
        state = {**rbm_state(rbms), "phase": "pretrain", "layer": layer + 1, "epoch": 0,
                 "generator": run.generator.get_state()}
        metrics = dict(events[-1].metrics) if events else {}
        run.callback.on_layer_end(Event("pretrain", layer, cfgs[layer].epochs, metrics, 1.0, state))
        if layer + 1 < len(cfgs):
            data, held = propagate(rbm, data), (propagate(rbm, held) if held is not None else None)
    return rbms
