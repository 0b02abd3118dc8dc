"""Deep feed-forward network (MLP): construction, seeded initialisation, evaluation.

Its supervised trainer with discriminative DR is ``dr_core.mlp_trainer.train_mlp``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dr_core.config import ACTIVATIONS

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
                  activation: str, generator: torch.Generator, init: str = "glorot",
                  init_std: float = 0.01) -> MLP:
        """Unroll a DBN: rbm_weights[i] = (W (n_in, n_out), hidden bias c (n_out,)), RBM
        convention mu = sigmoid(v @ W + c). The head is initialised at random from generator
        (``init``: "glorot" with gain 1, or "normal" N(0, init_std^2))."""
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
                _random_init_(model.head, generator, init, 1.0, init_std)
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


def _normal_(layer: nn.Linear, generator: torch.Generator, std: float) -> None:
    """N(0, std^2) weights (the classic small initialisation), zero bias; drawn like _glorot_."""
    z = torch.randn(layer.weight.shape, generator=generator, device=generator.device,
                    dtype=torch.float64)
    layer.weight.copy_(z * std)
    layer.bias.zero_()


def _random_init_(layer: nn.Linear, generator: torch.Generator, init: str, gain: float,
                  std: float) -> None:
    if init == "glorot":
        _glorot_(layer, generator, gain)
    elif init == "normal":
        _normal_(layer, generator, std)
    else:
        raise ValueError(f"init must be 'glorot' or 'normal', got {init!r}")


# Glorot's gain for sigmoid units (their slope at 0 is 1/4); He's sqrt(2) for ReLU.
_INIT_GAIN = {"sigmoid": 4.0, "tanh": 1.0, "relu": math.sqrt(2.0)}


def init_mlp(n_features: int, hidden_layers: Sequence[int], n_classes: int | None,
             activation: str, generator: torch.Generator, init: str = "glorot",
             init_std: float = 0.01) -> MLP:
    """An MLP with seeded random weights and zero biases: ``init`` "glorot" (uniform, gain by
    activation; the head gain 1) or "normal" (N(0, init_std^2) for every layer)."""
    model = MLP(n_features, hidden_layers, n_classes, activation)
    with torch.no_grad():
        for layer in model.hidden:
            _random_init_(layer, generator, init, _INIT_GAIN[activation], init_std)
        if model.head is not None:
            _random_init_(model.head, generator, init, 1.0, init_std)
    return model


@torch.no_grad()
def evaluate(model: MLP, X: Tensor, y: Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Mean cross-entropy and accuracy of model on (X, y), in batches, without gradients.

    Rows labelled -1 (no label) are left out of both; one host read at the end."""
    device = next(model.parameters()).device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, rows
    for i in range(0, X.shape[0], batch_size):
        xb, yb = X[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        labelled = yb >= 0
        totals[0] += F.cross_entropy(logits, yb, reduction="sum", ignore_index=-1).double()
        totals[1] += ((logits.argmax(1) == yb) & labelled).sum()
        totals[2] += labelled.sum()
    loss, correct, n = totals.tolist()
    n = max(1.0, n)
    return {"loss": loss / n, "accuracy": correct / n}
