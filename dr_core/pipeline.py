"""A whole job: normalise, optional greedy DBN pretraining, unroll into an MLP, supervised training.

``run_pipeline`` is what the worker calls. Every event it emits carries a resumable ``state``;
passing one back as ``resume=`` continues from that point and (on CPU) ends with the same
weights, bit for bit, as an uninterrupted run with the same seed.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dr_core.config import PipelineConfig
from dr_core.data import normalization_for, to_tensor
from dr_core.dbn import pretrain_dbn, rbm_state, rbms_from_state
from dr_core.events import Callback, Event, NullCallback
from dr_core.mlp import MLP, evaluate, init_mlp, train_mlp


@dataclass
class DataSplit:
    """Raw arrays: X (N, D) float32, labels (N,) int64 in 0..C-1, side (N,) int64 DR groups."""

    X_train: np.ndarray
    y_train: np.ndarray
    side_train: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass
class PipelineResult:
    model: torch.nn.Module | None
    rbms: list = field(default_factory=list)
    normalization: tuple[np.ndarray, np.ndarray] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[Event] = field(default_factory=list)


class _Recorder:
    """Forwards events to the caller's callback and keeps state-free copies for the history."""

    def __init__(self, inner: Callback, history: list[Event]) -> None:
        self.inner, self.history = inner, history

    def on_epoch_end(self, event: Event) -> None:
        self.history.append(dataclasses.replace(event, state=None))
        self.inner.on_epoch_end(event)

    def on_layer_end(self, event: Event) -> None:
        self.history.append(dataclasses.replace(event, state=None))
        self.inner.on_layer_end(event)

    def should_stop(self) -> bool:
        return self.inner.should_stop()


def _final_metrics(model: MLP, tensors: dict[str, tuple[torch.Tensor, torch.Tensor] | None]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for prefix, pair in tensors.items():
        if pair is None or pair[0].shape[0] == 0:
            continue
        result = evaluate(model, pair[0], pair[1])
        metrics[f"{prefix}_loss"] = float(result["loss"])
        metrics[f"{prefix}_accuracy"] = float(result["accuracy"])
    return metrics


def run_pipeline(cfg: PipelineConfig, data: DataSplit, *, n_classes: int, visible: str,
                 generator: torch.Generator, device: str | torch.device = "cpu",
                 callback: Callback | None = None, resume: dict[str, Any] | None = None) -> PipelineResult:
    """Run ``cfg`` on ``data``. ``generator`` must live on ``device`` (create it there and seed it).

    ``visible`` ("bernoulli" | "gaussian") decides the input normalisation and overrides the
    first RBM's visible type. X_val, when given, is the held-out sample of the free-energy gap
    and the validation set of fine-tuning; X_test only enters the final metrics.
    """
    started = time.perf_counter()
    device = torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(f"generator lives on {generator.device}, data on {device}: create it on the device")
    callback = callback or NullCallback()
    history: list[Event] = []
    recorder = _Recorder(callback, history)

    mean, std = normalization_for(data.X_train, visible)
    X = to_tensor(data.X_train, mean, std, device)
    y = torch.as_tensor(np.asarray(data.y_train, dtype=np.int64), device=device)
    side = torch.as_tensor(np.asarray(data.side_train, dtype=np.int64), device=device)
    X_val = to_tensor(data.X_val, mean, std, device) if data.X_val is not None else None
    y_val = torch.as_tensor(np.asarray(data.y_val, dtype=np.int64), device=device) \
        if data.y_val is not None else None
    if visible == "bernoulli":
        for name, arr in (("X_train", data.X_train), ("X_val", data.X_val), ("X_test", data.X_test)):
            if arr is not None and arr.size and (float(np.min(arr)) < 0.0 or float(np.max(arr)) > 1.0):
                raise ValueError(f"{name}: bernoulli visible units need features in [0, 1]")

    pre_epochs = sum(c.epochs for c in cfg.pretrain) if cfg.pretrain else 0
    ft_epochs = cfg.finetune.epochs if cfg.finetune else 0
    total = max(1, pre_epochs + ft_epochs)
    extra: dict[str, Any] = {"norm.mean": torch.from_numpy(mean), "norm.std": torch.from_numpy(std),
                             "visible": visible}
    phase = str(resume["phase"]) if resume is not None else "pretrain"

    rbms: list = []
    if cfg.pretrain:
        if phase == "pretrain":
            layer_cfgs = (dataclasses.replace(cfg.pretrain[0], visible=visible), *cfg.pretrain[1:])
            rbms = pretrain_dbn(layer_cfgs, X, side, generator=generator, callback=recorder, resume=resume,
                                X_holdout=X_val, progress_offset=0.0, progress_scale=pre_epochs / total,
                                state_extra=extra)
        else:
            rbms = rbms_from_state(resume, device, X.dtype)
    elif phase == "pretrain" and resume is not None:
        generator.set_state(resume["generator"])

    model = None
    if cfg.finetune is not None:
        ft = cfg.finetune
        if rbms:
            weights = [(r.W.detach(), r.c.detach()) for r in rbms]
            model = MLP.from_rbms(weights, n_classes=n_classes, activation=ft.activation, generator=generator)
        else:
            model = init_mlp(X.shape[1], list(cfg.hidden_layers), n_classes, ft.activation, generator)
        model = model.to(device)
        train_mlp(model, ft, X, y, side, generator=generator, callback=recorder, X_val=X_val, y_val=y_val,
                  resume=resume if phase == "finetune" else None,
                  progress_offset=pre_epochs / total, progress_scale=ft_epochs / total,
                  state_extra={**extra, **rbm_state(rbms)})

    metrics: dict[str, float] = {}
    if model is not None:
        X_test = to_tensor(data.X_test, mean, std, device) if data.X_test is not None else None
        y_test = torch.as_tensor(np.asarray(data.y_test, dtype=np.int64), device=device) \
            if data.y_test is not None else None
        metrics.update(_final_metrics(model, {
            "train": (X, y), "val": (X_val, y_val) if X_val is not None and y_val is not None else None,
            "test": (X_test, y_test) if X_test is not None and y_test is not None else None}))
    metrics["epochs_pretrain"] = float(pre_epochs)
    metrics["epochs_finetune"] = float(ft_epochs)
    metrics["wall_seconds"] = time.perf_counter() - started
    return PipelineResult(model=model, rbms=rbms, normalization=(mean, std), metrics=metrics, history=history)
