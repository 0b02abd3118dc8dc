"""Supervised training of an MLP with discriminative DR.

Loss minimised per mini-batch (docs/dr.md, "DR as defined here"):
    cross_entropy(logits, y) - lambda * sum_{l in L} feature_distance(h_l, side)
with lambda = ``cfg.dr.weight``, L = ``cfg.dr.layers`` and the distance/pairs/normalize of
``cfg.dr``. DR rewards hidden features that differ between examples of different groups.

Risk: squared ``euclidean`` distance is unbounded on unbounded features (ReLU, or tanh/sigmoid
pre-saturation is fine): with a large lambda the optimiser can grow the features without limit
instead of fitting the labels. Keep ``normalize="per_unit"`` (FeatureDRConfig's default, divides
by the layer width) and a small weight, or use ``cosine`` (bounded in [0, 2]).
"""
from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dr_core.config import FinetuneConfig
from dr_core.context import Examples, RunContext
from dr_core.cuda_graphs import StepGraphs, use_graphs
from dr_core.events import GRAD_NORM, GRAD_NORM_DR, Event
from dr_core.groups import group_ids
from dr_core.mlp import MLP, evaluate
from dr_core.regularizers import feature_distance


def _make_optimizer(model: MLP, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def _training_state(model: MLP, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                    epoch: int) -> dict[str, Any]:
    """Everything needed to continue exactly: weights, optimiser buffers, RNG, epoch."""
    state: dict[str, Any] = {"phase": "finetune", "epoch": epoch}
    for name, p in model.named_parameters():
        state[f"model.{name}"] = p.detach().clone()
    opt = optimizer.state_dict()
    for index, buffers in opt["state"].items():
        for key, value in buffers.items():
            if isinstance(value, Tensor):
                state[f"optim.{index}.{key}"] = value.detach().clone()
    state["optim.param_groups"] = json.dumps(opt["param_groups"])
    state["generator"] = generator.get_state()
    return state


def _restore(state: dict[str, Any], model: MLP, optimizer: torch.optim.Optimizer,
             generator: torch.Generator) -> int:
    """Load a ``_training_state`` into model, optimizer and generator: the epochs done."""
    if state.get("phase") != "finetune":
        raise ValueError(f"resume state is for phase {state.get('phase')!r}, not 'finetune'")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(state[f"model.{name}"])
    buffers: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.startswith("optim.") and key != "optim.param_groups":
            _, index, name = key.split(".", 2)
            buffers.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": buffers,
                               "param_groups": json.loads(state["optim.param_groups"])})
    generator.set_state(state["generator"])
    return int(state["epoch"])


def _dr_term(features: list[Tensor], side: Tensor, n_groups: int, cfg: FinetuneConfig,
             generator: torch.Generator) -> Tensor:
    dr = cfg.dr
    return sum(feature_distance(features[i], side, distance=dr.distance, pairs=dr.pairs,
                                generator=generator, normalize=dr.normalize, n_groups=n_groups)
               for i in dr.layer_indices(len(features)))


def _dr_on(cfg: FinetuneConfig) -> bool:
    return cfg.dr is not None and cfg.dr.active


def _checked(model: MLP, cfg: FinetuneConfig, train: Examples) -> Examples:
    """Refuse what would fail mid-training: no head, no labels, DR without side labels.
    Returns the labelled rows (label >= 0): rows labelled -1 take no part in fine-tuning."""
    if model.head is None:
        raise ValueError("train_mlp needs an MLP with a classification head (n_classes)")
    if train.y is None:
        raise ValueError("train_mlp needs class labels (Examples.y)")
    if _dr_on(cfg):
        if train.side is None:
            raise ValueError("DR is on (cfg.dr.weight > 0) but no side labels were given")
        cfg.dr.layer_indices(len(model.hidden))  # raises on out-of-range layers
    unlabelled = train.y < 0
    if bool(unlabelled.any()):  # once per job
        keep = ~unlabelled
        train = Examples(train.X[keep], train.y[keep],
                         train.side[keep] if train.side is not None else None)
    if len(train) == 0:
        raise ValueError("train_mlp needs at least one labelled row (label >= 0)")
    return train


def _weights(model: MLP) -> list[Tensor]:
    """The weight matrices whose gradient norms are reported: hidden layers, then the head."""
    return [layer.weight for layer in model.hidden] + [model.head.weight]


def _split_backward(model: MLP, ce: Tensor, penalty: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Set every parameter's grad to that of ce - penalty, from two backward passes, and
    return the gradient norms of _weights for each term alone: (ce's, the penalty's hidden
    layers'). Reporting the sum would mix DR's own push into the vanishing-gradient view."""
    params = list(model.parameters())
    g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    g_pen = torch.autograd.grad(penalty, params, allow_unused=True)
    by_param = {}
    for p, a, b in zip(params, g_ce, g_pen):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        p.grad = a - b
        by_param[p] = (a, b)
    weights = _weights(model)
    ce_norms = [torch.linalg.vector_norm(by_param[w][0]) for w in weights]
    pen_norms = [torch.linalg.vector_norm(by_param[w][1]) for w in weights[:-1]]
    return ce_norms, pen_norms


def _train_batch(model: MLP, optimizer: torch.optim.Optimizer, cfg: FinetuneConfig,
                 batch: Examples, n_groups: int, generator: torch.Generator) -> Tensor:
    """One optimiser step on ``batch`` (side: dense group ids, ``n_groups`` of them); returns
    its statistics, float64 (3 + L + 1 [+ L with DR],): [cross-entropy * batch size, correct
    predictions, DR term, gradient norms of the cross-entropy alone at _weights, and with DR
    those of the weighted DR term at the hidden layers]."""
    logits, features = model.forward_features(batch.X)
    ce = F.cross_entropy(logits, batch.y)
    optimizer.zero_grad(set_to_none=True)
    if _dr_on(cfg):
        dr = _dr_term(features, batch.side, n_groups, cfg, generator)
        norms, dr_norms = _split_backward(model, ce, cfg.dr.weight * dr)
    else:
        dr = torch.zeros((), device=batch.X.device)
        ce.backward()
        norms = [torch.linalg.vector_norm(w.grad) for w in _weights(model)]
        dr_norms = []
    with torch.no_grad():
        correct = (logits.argmax(1) == batch.y).sum()
        stats = [ce.detach() * len(batch), correct, dr.detach(), *norms, *dr_norms]
        stats = torch.stack([v.double() for v in stats])
    optimizer.step()
    return stats


class _Steps:
    """_train_batch on the batch train[idx] (on the device): eagerly, or from a CUDA graph for
    full-size batches with SGD (Adam's eager step counter cannot be captured). Side labels
    become dense group ids once per run, so a step reads nothing back from the device."""

    def __init__(self, model: MLP, optimizer: torch.optim.Optimizer, cfg: FinetuneConfig,
                 train: Examples, run: RunContext) -> None:
        self.model, self.optimizer, self.cfg, self.train = model, optimizer, cfg, train
        self.generator = run.generator
        self.ids, self.n_groups = group_ids(train.side) if _dr_on(cfg) else (None, 0)
        device = train.X.device
        graphs = use_graphs(run.cuda_graphs, device, run.generator) and cfg.optimizer == "sgd"
        self.graphs = StepGraphs(run.generator) if graphs else None
        self.idx = torch.empty(cfg.batch_size, dtype=torch.long, device=device) if graphs else None

    def __call__(self, idx: Tensor) -> Tensor:
        if self.graphs is None or idx.numel() != self.cfg.batch_size:
            return self._step(idx)
        self.idx.copy_(idx)  # type: ignore[union-attr]
        return self.graphs(None, lambda: self._step(self.idx))

    def _step(self, idx: Tensor) -> Tensor:
        t = self.train
        batch = Examples(t.X[idx], t.y[idx], self.ids[idx] if self.ids is not None else None)
        return _train_batch(self.model, self.optimizer, self.cfg, batch, self.n_groups,
                            self.generator)


def _train_epoch(steps: _Steps, n_stats: int, run: RunContext, epoch: int
                 ) -> tuple[list[float], int]:
    """One pass over the training rows in a fresh random order: (summed batch statistics,
    batches). The statistics stay on the device until the epoch's one host read."""
    device, n, size = steps.train.X.device, len(steps.train), steps.cfg.batch_size
    perm = torch.randperm(n, generator=run.generator, device=run.generator.device).to(device)
    sums = torch.zeros(n_stats, dtype=torch.float64, device=device)
    batches = 0
    for b0 in range(0, n, size):
        sums += steps(perm[b0:b0 + size])
        batches += 1
        run.stop_if_asked(f"fine-tuning epoch {epoch}")
    return sums.tolist(), batches  # one host sync per epoch


def _n_stats(model: MLP, cfg: FinetuneConfig) -> int:
    layers = len(model.hidden)
    return 3 + layers + 1 + (layers if _dr_on(cfg) else 0)


def _epoch_metrics(model: MLP, totals: list[float], batches: int, n: int,
                   val: Examples | None, dr_on: bool) -> dict[str, float]:
    metrics = {"train_loss": totals[0] / n, "train_accuracy": totals[1] / n}
    if dr_on:  # without DR there is no DR value, rather than a 0 that reads as one
        metrics["dr"] = totals[2] / batches
    layers = len(model.hidden)
    for i in range(layers):
        metrics[f"{GRAD_NORM}layer{i}"] = totals[3 + i] / batches
    metrics[f"{GRAD_NORM}head"] = totals[3 + layers] / batches
    for i, total in enumerate(totals[4 + layers:]):
        metrics[f"{GRAD_NORM_DR}layer{i}"] = total / batches
    if val is not None and val.y is not None:
        result = evaluate(model, val.X, val.y)
        metrics["val_loss"], metrics["val_accuracy"] = result["loss"], result["accuracy"]
    return metrics


def train_mlp(model: MLP, cfg: FinetuneConfig, train: Examples, run: RunContext, *,
              val: Examples | None = None) -> list[Event]:
    """Train model in place on ``train``: X (N, F), y (N,) class indices, side (N,) DR groups.

    Rows labelled -1 (no label) are left out of training and of every metric; rows with side
    -1 are trained on but pair with no row in DR. Mini-batches come from
    ``torch.randperm(N, generator=run.generator)`` over the labelled rows each epoch (generator
    on CPU, or on the data's device); sampled DR pairs draw from the same generator. With DR
    off (``cfg.dr`` None or weight 0) no DR is computed and no extra random number is drawn,
    so the run is bit-identical to plain backprop.

    After every batch ``run.callback.should_stop()`` may raise ``TrainingStopped``. After
    every epoch ``run.callback.on_epoch_end`` gets Event("finetune", None, epoch, metrics,
    epoch / cfg.epochs, state) with metrics:
      train_loss, train_accuracy: cross-entropy and accuracy over the epoch's batches, as seen
        by each batch before its update (no extra pass);
      val_loss, val_accuracy: evaluated after the epoch on ``val`` (X, y), when given;
      dr: mean over batches of the (unweighted) DR term, summed over DR layers (only with DR
        on: without it there is no such value);
      grad_norm.layer{i} (0-based hidden layer), grad_norm.head: mean over batches of the
        Frobenius norm of d cross-entropy / d weight: the classification signal alone (the
        vanishing-gradient evidence), whether DR is on or not;
      grad_norm_dr.layer{i}: with DR on, the same norm of d (lambda * DR term) / d weight.
    ``run.resume`` = a state from such an event: continues at the next epoch, bit-identically.
    Returns the events of the epochs run.
    """
    train = _checked(model, cfg, train.to(next(model.parameters()).device))
    optimizer = _make_optimizer(model, cfg)
    start = _restore(run.resume, model, optimizer, run.generator) if run.resume is not None else 0
    steps = _Steps(model, optimizer, cfg, train, run)
    history: list[Event] = []
    for epoch in range(start + 1, cfg.epochs + 1):
        totals, batches = _train_epoch(steps, _n_stats(model, cfg), run, epoch)
        metrics = _epoch_metrics(model, totals, batches, len(train), val, _dr_on(cfg))
        event = Event("finetune", None, epoch, metrics,
                      epoch / cfg.epochs, _training_state(model, optimizer, run.generator, epoch))
        run.callback.on_epoch_end(event)
        history.append(event)
    return history
