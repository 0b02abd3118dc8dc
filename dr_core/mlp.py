"""Deep feed-forward network (MLP) and its supervised trainer with discriminative DR.

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
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dr_core.config import ACTIVATIONS, FinetuneConfig
from dr_core.events import Callback, Event, NullCallback, TrainingStopped
from dr_core.regularizers import feature_distance

_ACTIVATION_FNS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


class MLP(nn.Module):
    """hidden: Linear + activation per hidden layer; head: Linear to class logits (or None).

    A freshly constructed MLP has all-zero parameters (no global RNG is touched): initialise it
    with ``init_mlp``, ``MLP.from_rbms`` or ``load_state_dict``.
    """

    def __init__(self, n_features: int, hidden_layers: Sequence[int], n_classes: int | None,
                 activation: str = "sigmoid"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        dims = [n_features, *hidden_layers]
        self.activation = activation
        self.n_features = n_features
        self.n_classes = n_classes
        # skip_init builds on the meta device then allocates: nn.Linear's own random init
        # would consume the global RNG, which the library never touches.
        self.hidden = nn.ModuleList(nn.utils.skip_init(nn.Linear, i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.head = nn.utils.skip_init(nn.Linear, dims[-1], n_classes) if n_classes else None
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x (B, n_features) -> (logits (B, C), [h_l (B, H_l) for each hidden layer]).

        Without a head the "logits" are the last hidden activations.
        """
        act = _ACTIVATION_FNS[self.activation]
        features = []
        h = x
        for layer in self.hidden:
            h = act(layer(h))
            features.append(h)
        return (self.head(h) if self.head is not None else h), features

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]

    @classmethod
    def from_rbms(cls, rbm_weights: list[tuple[Tensor, Tensor]], n_classes: int | None,
                  activation: str, generator: torch.Generator) -> "MLP":
        """Unroll a DBN: rbm_weights[i] = (W (n_in, n_out), hidden bias c (n_out,)), RBM
        convention mu = sigmoid(v @ W + c). The head is initialised at random from generator."""
        dims = [rbm_weights[0][0].shape[0], *(w.shape[1] for w, _ in rbm_weights)]
        for (w, c), n_in in zip(rbm_weights, dims):
            if w.shape[0] != n_in or c.shape != (w.shape[1],):
                raise ValueError("rbm_weights do not chain: each W must be (n_in, n_out), c (n_out,)")
        model = cls(dims[0], dims[1:], n_classes, activation)
        w0 = rbm_weights[0][0]
        model.to(device=w0.device, dtype=w0.dtype)
        with torch.no_grad():
            for layer, (w, c) in zip(model.hidden, rbm_weights):
                layer.weight.copy_(w.T)
                layer.bias.copy_(c)
            if model.head is not None:
                _glorot_(model.head, generator, gain=1.0)
        return model


def _glorot_(layer: nn.Linear, generator: torch.Generator, gain: float) -> None:
    """Uniform(-r, r) weights, r = gain * sqrt(6 / (fan_in + fan_out)); zero bias.

    Drawn on the generator's device then copied, so the draws do not depend on the model's device.
    """
    fan_out, fan_in = layer.weight.shape
    r = gain * math.sqrt(6.0 / (fan_in + fan_out))
    u = torch.rand(layer.weight.shape, generator=generator, device=generator.device,
                   dtype=torch.float64)
    layer.weight.copy_((2 * u - 1) * r)
    layer.bias.zero_()


# Glorot's gain for sigmoid units (their slope at 0 is 1/4); He's sqrt(2) for ReLU.
_INIT_GAIN = {"sigmoid": 4.0, "tanh": 1.0, "relu": math.sqrt(2.0)}


def init_mlp(n_features: int, hidden_layers: Sequence[int], n_classes: int | None,
             activation: str, generator: torch.Generator) -> MLP:
    """An MLP with seeded Glorot-uniform hidden weights (gain by activation), zero biases."""
    model = MLP(n_features, hidden_layers, n_classes, activation)
    with torch.no_grad():
        for layer in model.hidden:
            _glorot_(layer, generator, _INIT_GAIN[activation])
        if model.head is not None:
            _glorot_(model.head, generator, gain=1.0)
    return model


@torch.no_grad()
def evaluate(model: MLP, X: Tensor, y: Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Mean cross-entropy and accuracy of model on (X, y), in batches, without gradients."""
    device = next(model.parameters()).device
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    n = max(1, X.shape[0])
    return {"loss": loss.item() / n, "accuracy": correct.item() / n}


# ----------------------------------------------------------------------------------- training
def _make_optimizer(model: MLP, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def _training_state(model: MLP, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                    epoch: int, extra: dict | None) -> dict[str, Any]:
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
    state.update(extra or {})
    return state


def _restore(state: dict[str, Any], model: MLP, optimizer: torch.optim.Optimizer,
             generator: torch.Generator) -> int:
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


def _dr_term(features: list[Tensor], side: Tensor, cfg: FinetuneConfig,
             generator: torch.Generator) -> Tensor:
    dr = cfg.dr
    return sum(feature_distance(features[i], side, distance=dr.distance, pairs=dr.pairs,
                                generator=generator, normalize=dr.normalize)
               for i in dr.layer_indices(len(features)))


def train_mlp(model: MLP, cfg: FinetuneConfig, X: Tensor, y: Tensor, side: Tensor | None, *,
              generator: torch.Generator, callback: Callback | None = None,
              X_val: Tensor | None = None, y_val: Tensor | None = None,
              resume: dict | None = None, progress_offset: float = 0.0,
              progress_scale: float = 1.0, state_extra: dict | None = None) -> list[Event]:
    """Train model in place on X (N, F), y (N,) class indices, side (N,) group labels for DR.

    Mini-batches come from ``torch.randperm(N, generator=generator)`` each epoch (generator on
    CPU, or on the data's device); sampled DR pairs draw from the same generator. With DR off
    (``cfg.dr`` None or weight 0) no DR is computed and no extra random number is drawn, so the
    run is bit-identical to plain backprop.

    After every batch ``callback.should_stop()`` may raise ``TrainingStopped``. After every
    epoch ``callback.on_epoch_end`` gets Event("finetune", None, epoch, metrics, progress,
    state) with metrics:
      train_loss, train_accuracy: cross-entropy and accuracy over the epoch's batches, as seen
        by each batch before its update (no extra pass);
      val_loss, val_accuracy: evaluated after the epoch (when X_val/y_val are given);
      dr: mean over batches of the (unweighted) DR term, summed over DR layers; 0 when off;
      grad_norm.layer{i} (0-based hidden layer), grad_norm.head: mean over batches of the
        Frobenius norm of d loss / d weight (the vanishing-gradient evidence).
    ``resume`` = a state from such an event: continues at the next epoch, bit-identically.
    Returns the events of the epochs run.
    """
    if model.head is None:
        raise ValueError("train_mlp needs an MLP with a classification head (n_classes)")
    callback = callback or NullCallback()
    device = next(model.parameters()).device
    dr_on = cfg.dr is not None and cfg.dr.active
    if dr_on:
        if side is None:
            raise ValueError("DR is on (cfg.dr.weight > 0) but no side labels were given")
        cfg.dr.layer_indices(len(model.hidden))  # raises on out-of-range layers before training
        side = side.to(device)
    X, y = X.to(device), y.to(device)
    optimizer = _make_optimizer(model, cfg)
    start = _restore(resume, model, optimizer, generator) if resume is not None else 0
    n = X.shape[0]
    weights = [layer.weight for layer in model.hidden] + [model.head.weight]
    history: list[Event] = []
    for epoch in range(start + 1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
        sums = torch.zeros(3 + len(weights), dtype=torch.float64, device=device)
        batches = 0
        for b0 in range(0, n, cfg.batch_size):
            idx = perm[b0:b0 + cfg.batch_size]
            xb, yb = X[idx], y[idx]
            logits, features = model.forward_features(xb)
            ce = F.cross_entropy(logits, yb)
            loss = ce
            dr = torch.zeros((), device=device)
            if dr_on:
                dr = _dr_term(features, side[idx], cfg, generator)
                loss = ce - cfg.dr.weight * dr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                norms = torch.stack([torch.linalg.vector_norm(w.grad) for w in weights])
                correct = (logits.argmax(1) == yb).sum()
                batch_stats = [ce.detach() * len(idx), correct, dr.detach(), *norms]
                sums += torch.stack([v.double() for v in batch_stats])
            optimizer.step()
            batches += 1
            if callback.should_stop():
                raise TrainingStopped(f"stopped in fine-tuning epoch {epoch}")
        totals = sums.tolist()  # one host sync per epoch
        metrics = {"train_loss": totals[0] / n, "train_accuracy": totals[1] / n,
                   "dr": totals[2] / batches}
        for i in range(len(model.hidden)):
            metrics[f"grad_norm.layer{i}"] = totals[3 + i] / batches
        metrics["grad_norm.head"] = totals[-1] / batches
        if X_val is not None and y_val is not None:
            val = evaluate(model, X_val, y_val)
            metrics["val_loss"], metrics["val_accuracy"] = val["loss"], val["accuracy"]
        event = Event("finetune", None, epoch, metrics,
                      progress_offset + progress_scale * epoch / max(1, cfg.epochs),
                      _training_state(model, optimizer, generator, epoch, state_extra))
        callback.on_epoch_end(event)
        history.append(event)
    return history
