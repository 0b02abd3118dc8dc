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
from dr_core.context import Examples, RunContext
from dr_core.data import normalization_for, to_tensor
from dr_core.dbn import pretrain_dbn, rbm_state, rbms_from_state
from dr_core.events import Callback, Event, EventAdapter, NullCallback, with_state
from dr_core.mlp import MLP, evaluate, init_mlp
from dr_core.mlp_trainer import train_mlp
from dr_core.precision import matmul_precision


@dataclass
class DataSplit:
    """Raw arrays: X (N, D) float32, labels (N,) int64 in 0..C-1 or -1 (no label: pretraining
    only), side (N,) int64 DR groups >= 0 or -1 (no side value: no DR pairs)."""

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


class _RunReport(EventAdapter):
    """The caller's callback as the trainers of one pipeline see it.

    Every event gets the pipeline's state entries (normalisation, visible type) and the
    overall progress: the epochs done, over all layers and fine-tuning, / all epochs.
    A state-free copy of each event goes to ``history``.
    """

    def __init__(self, inner: Callback, cfg: PipelineConfig, extra: dict[str, Any]) -> None:
        super().__init__(inner, self._complete)
        layer_epochs = [c.epochs for c in cfg.pretrain or ()]
        self._before = [sum(layer_epochs[:i]) for i in range(len(layer_epochs))]
        self._pretrain_epochs = sum(layer_epochs)
        finetune_epochs = cfg.finetune.epochs if cfg.finetune is not None else 0
        self._total = max(1, self._pretrain_epochs + finetune_epochs)
        self._extra = extra
        self.history: list[Event] = []

    def progress(self, phase: str, layer: int | None, epoch: int) -> float:
        """Fraction of the pipeline's epochs done after ``epoch`` epochs of (phase, layer)."""
        done = self._before[layer] if phase == "pretrain" else self._pretrain_epochs
        return (done + epoch) / self._total

    def _complete(self, event: Event) -> Event:
        state = None if event.state is None else {**self._extra, **event.state}
        event = dataclasses.replace(event, state=state,
                                    progress=self.progress(event.phase, event.layer, event.epoch))
        self.history.append(dataclasses.replace(event, state=None))
        return event


@dataclass
class _Tensors:
    """A DataSplit normalised and on the device; ``mean``, ``std`` (D,) the normalisation."""

    train: Examples
    val: Examples | None
    test: Examples | None
    mean: np.ndarray
    std: np.ndarray


def _labels(y: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return torch.as_tensor(np.asarray(y, dtype=np.int64), device=device) if y is not None else None


def _to_tensors(data: DataSplit, visible: str, device: torch.device) -> _Tensors:
    if visible == "bernoulli":
        for name, arr in (("X_train", data.X_train), ("X_val", data.X_val), ("X_test", data.X_test)):
            if arr is not None and arr.size and (float(np.min(arr)) < 0.0 or float(np.max(arr)) > 1.0):
                raise ValueError(f"{name}: bernoulli visible units need features in [0, 1]")
    mean, std = normalization_for(data.X_train, visible)

    def examples(X, y, side=None) -> Examples | None:
        if X is None:
            return None
        return Examples(to_tensor(X, mean, std, device), _labels(y, device), _labels(side, device))

    return _Tensors(examples(data.X_train, data.y_train, data.side_train),
                    examples(data.X_val, data.y_val), examples(data.X_test, data.y_test), mean, std)


def _pretrain(cfg: PipelineConfig, data: _Tensors, run: RunContext, visible: str) -> list:
    """The DBN: trained (or resumed) when the run is in pretraining, else read from the state."""
    phase = str(run.resume["phase"]) if run.resume is not None else "pretrain"
    if not cfg.pretrain:
        if phase == "pretrain" and run.resume is not None:
            run.generator.set_state(run.resume["generator"])
        return []
    if phase != "pretrain":
        return rbms_from_state(run.resume, data.train.X.device, data.train.X.dtype)
    # The first layer's visible type is the job's, whatever the config says.
    layer_cfgs = (dataclasses.replace(cfg.pretrain[0], visible=visible), *cfg.pretrain[1:])
    holdout = data.val.X if data.val is not None else None
    return pretrain_dbn(layer_cfgs, data.train, run, holdout=holdout)


def _finetune(cfg: PipelineConfig, data: _Tensors, run: RunContext, rbms: list,
              n_classes: int) -> MLP:
    """The MLP (the unrolled DBN, or a fresh one) trained by ``train_mlp``."""
    ft = cfg.finetune
    if rbms:
        weights = [(r.W.detach(), r.c.detach()) for r in rbms]
        model = MLP.from_rbms(weights, n_classes=n_classes, activation=ft.activation,
                              generator=run.generator, init=ft.init, init_std=ft.init_std)
    else:
        model = init_mlp(data.train.X.shape[1], list(cfg.hidden_layers), n_classes,
                         ft.activation, run.generator, init=ft.init, init_std=ft.init_std)
    model = model.to(data.train.X.device)
    in_finetune = run.resume is not None and run.resume["phase"] == "finetune"
    # Fine-tuning states carry the pretrained layers: a resumed job rebuilds them from there.
    ft_run = run.replace(callback=with_state(run.callback, rbm_state(rbms)),
                         resume=run.resume if in_finetune else None)
    train_mlp(model, ft, data.train, ft_run, val=data.val)
    return model


def _final_metrics(model: MLP, data: _Tensors) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for prefix, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        if split is None or split.y is None or not bool((split.y >= 0).any()):
            continue
        result = evaluate(model, split.X, split.y)
        metrics[f"{prefix}_loss"] = float(result["loss"])
        metrics[f"{prefix}_accuracy"] = float(result["accuracy"])
    return metrics


def run_pipeline(cfg: PipelineConfig, data: DataSplit, *, n_classes: int, visible: str,
                 generator: torch.Generator, device: str | torch.device = "cpu",
                 callback: Callback | None = None, resume: dict[str, Any] | None = None,
                 cuda_graphs: bool = False) -> PipelineResult:
    """Run ``cfg`` on ``data``. ``generator`` must live on ``device`` (create it there and seed it).

    ``visible`` ("bernoulli" | "gaussian") decides the input normalisation and overrides the
    first RBM's visible type. X_val, when given, is the held-out sample of the free-energy gap
    and the validation set of fine-tuning; X_test only enters the final metrics. ``callback``
    gets every event with the overall progress and a state that ``resume`` accepts.
    Every split moves to ``device`` once; batches are indexed there. ``cfg.precision`` holds
    for the run (``dr_core.precision``); ``cuda_graphs`` replays full-size steps from CUDA
    graphs on a CUDA device (``dr_core.cuda_graphs``; ignored on CPU).
    """
    started = time.perf_counter()
    device = torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(f"generator lives on {generator.device}, data on {device}: create it on the device")
    tensors = _to_tensors(data, visible, device)
    extra = {"norm.mean": torch.from_numpy(tensors.mean), "norm.std": torch.from_numpy(tensors.std),
             "visible": visible}
    report = _RunReport(callback or NullCallback(), cfg, extra)
    run = RunContext(generator, report, resume, cuda_graphs=cuda_graphs)
    with matmul_precision(cfg.precision):
        rbms = _pretrain(cfg, tensors, run, visible)
        model = _finetune(cfg, tensors, run, rbms, n_classes) if cfg.finetune is not None else None
        metrics = _final_metrics(model, tensors) if model is not None else {}
    metrics["epochs_pretrain"] = float(sum(c.epochs for c in cfg.pretrain or ()))
    metrics["epochs_finetune"] = float(cfg.finetune.epochs if cfg.finetune else 0)
    metrics["wall_seconds"] = time.perf_counter() - started
    return PipelineResult(model=model, rbms=rbms, normalization=(tensors.mean, tensors.std),
                          metrics=metrics, history=report.history)
