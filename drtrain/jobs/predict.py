"""Torch-free inference on a drtrain model file (safetensors + "drtrain" JSON metadata).

The API process never imports torch, so the MLP forward pass is written again in numpy
against the layout documented by dr_core (docs/model-format.md):
``input.mean``/``input.std`` (D,), ``hidden.{i}.weight`` (out, in), ``hidden.{i}.bias``,
``head.weight`` (C, H), ``head.bias`` (C,).
"""
from __future__ import annotations

import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as load_tensors

from drtrain.kit import integrity


class ModelFormatError(ValueError):
    """The file is not a drtrain model this reader can run (e.g. a DBN without a head)."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large |x| unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * x))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
}


def read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (``safetensors.numpy.load`` drops it)."""
    if len(data) < 8:
        raise ModelFormatError("file too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ModelFormatError("safetensors header length exceeds the file")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as exc:
        raise ModelFormatError(f"unreadable safetensors header: {exc}") from exc
    return header.get("__metadata__") or {}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class NumpyMLP:
    mean: np.ndarray
    std: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    head: tuple[np.ndarray, np.ndarray]
    activation: str
    classes: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """x (N, D) -> class probabilities (N, C), in float64 for a stable softmax."""
        act = ACTIVATIONS[self.activation]
        h = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        for w, b in self.layers:
            h = act(h @ w.T + b)
        wh, bh = self.head
        return softmax(h @ wh.T + bh)

    def predict(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        probs = self.predict_proba(x)
        labels = [self.classes[i] for i in probs.argmax(axis=1)]
        return labels, probs


def load_model(data: bytes) -> NumpyMLP:
    meta_raw = read_metadata(data).get("drtrain")
    if meta_raw is None:
        raise ModelFormatError("no 'drtrain' metadata: not a drtrain model file")
    meta = json.loads(meta_raw)
    fmt = meta.get("format")
    if fmt != "drtrain-mlp":
        raise ModelFormatError(f"model format {fmt!r} has no classifier head to predict with")
    activation = meta.get("activation", "sigmoid")
    if activation not in ACTIVATIONS:
        raise ModelFormatError(f"unknown activation {activation!r}")
    t = {k: v.astype(np.float64) for k, v in load_tensors(data).items()}
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    while f"hidden.{len(layers)}.weight" in t:
        i = len(layers)
        layers.append((t[f"hidden.{i}.weight"], t[f"hidden.{i}.bias"]))
    if not layers or "head.weight" not in t:
        raise ModelFormatError("model file lacks hidden or head tensors")
    std = t["input.std"]
    # A constant feature may have been stored with std 0; dividing by 1 keeps it at 0 after centring.
    std = np.where(std > 0, std, 1.0)
    classes = tuple(str(c) for c in meta.get("classes") or range(t["head.bias"].shape[0]))
    return NumpyMLP(mean=t["input.mean"], std=std, layers=tuple(layers),
                    head=(t["head.weight"], t["head.bias"]), activation=activation,
                    classes=classes)


class ModelCache:
    """A small LRU of loaded models keyed by the file's sha256 (content-addressed, so an
    entry never goes stale). Bytes enter only once their sha256 is the key: a file altered
    in the store raises ``IntegrityFailure`` and is never cached, so repairing the file is
    enough for the next request to load the right model."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, NumpyMLP] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str, read: Callable[[], bytes], *, key: str = "model") -> NumpyMLP:
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return self._items[sha256]
        try:
            data = read()
        except FileNotFoundError:
            raise integrity.missing("predict", key, sha256) from None
        model = load_model(integrity.verify_bytes(data, sha256, key=key, where="predict"))
        with self._lock:
            self._items[sha256] = model
            self._items.move_to_end(sha256)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._items)


model_cache = ModelCache()
