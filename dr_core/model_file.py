"""The final model file: safetensors, float32, self-describing; layout in docs/model-format.md.

Tensors: ``input.mean`` / ``input.std`` (D,), ``hidden.{i}.weight`` (out, in), ``hidden.{i}.bias``
(out,), ``head.weight`` (C, H_last) and ``head.bias`` (C,) (no head for a pretraining-only job).
``__metadata__["drtrain"]`` is a JSON string with format, format_version, activation,
hidden_layers, n_features, classes, visible, spec and metrics.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from dr_core.checkpoint import CheckpointError, write_atomic
from dr_core.mlp import MLP

FORMAT_VERSION = 1
_META_KEY = "drtrain"


class RBMStack(nn.Module):
    """The up pass of a pretrained DBN: sigmoid(x W_i^T + b_i) per layer; returns the top features."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.sigmoid(layer(x))
        return x


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32).contiguous().clone()


def _model_tensors(result: Any) -> tuple[dict[str, torch.Tensor], str, str]:
    """(tensors, format, activation) of a PipelineResult."""
    tensors: dict[str, torch.Tensor] = {}
    if result.model is not None:
        model = result.model
        for i, layer in enumerate(model.hidden):
            tensors[f"hidden.{i}.weight"] = _f32(layer.weight)
            tensors[f"hidden.{i}.bias"] = _f32(layer.bias)
        if model.head is not None:
            tensors["head.weight"] = _f32(model.head.weight)
            tensors["head.bias"] = _f32(model.head.bias)
        return tensors, "drtrain-mlp", str(model.activation)
    if not result.rbms:
        raise ValueError("result has neither a model nor pretrained RBMs")
    for i, rbm in enumerate(result.rbms):
        tensors[f"hidden.{i}.weight"] = _f32(rbm.W.t())
        tensors[f"hidden.{i}.bias"] = _f32(rbm.c)
    return tensors, "drtrain-dbn", "sigmoid"


def encode_model(result: Any, *, classes: list, spec: dict | None = None,
                 extra_metadata: dict | None = None) -> bytes:
    """The model file's bytes for ``result`` (a PipelineResult)."""
    tensors, fmt, activation = _model_tensors(result)
    n_hidden = len([k for k in tensors if k.startswith("hidden.") and k.endswith(".weight")])
    hidden_layers = [int(tensors[f"hidden.{i}.weight"].shape[0]) for i in range(n_hidden)]
    n_features = int(tensors["hidden.0.weight"].shape[1])
    if result.normalization is not None:
        mean, std = result.normalization
    else:
        mean, std = np.zeros(n_features, np.float32), np.ones(n_features, np.float32)
    tensors["input.mean"] = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32)).clone()
    tensors["input.std"] = torch.from_numpy(np.ascontiguousarray(std, dtype=np.float32)).clone()
    if "head.weight" in tensors and tensors["head.weight"].shape[0] != len(classes):
        raise ValueError(f"classes: model has {tensors['head.weight'].shape[0]} outputs, "
                         f"got {len(classes)} labels")
    visible = result.rbms[0].visible if result.rbms else None
    meta = {"format": fmt, "format_version": FORMAT_VERSION, "activation": activation,
            "hidden_layers": hidden_layers, "n_features": n_features, "classes": [str(c) for c in classes],
            "visible": visible, "spec": spec or {}, "metrics": dict(result.metrics)}
    meta.update(extra_metadata or {})
    return st_save(tensors, metadata={_META_KEY: json.dumps(meta)})


def save_model(path: str | os.PathLike, result: Any, *, classes: list, spec: dict | None = None,
               extra_metadata: dict | None = None) -> str:
    """Atomically write ``result`` (a PipelineResult) to ``path``; returns the file's sha256 hex."""
    return write_atomic(path, encode_model(result, classes=classes, spec=spec,
                                           extra_metadata=extra_metadata))


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a model file; ``CheckpointError`` if it is not a readable drtrain model."""
    try:
        payload = Path(path).read_bytes()
        tensors = st_load(payload)
        header = json.loads(payload[8:8 + int.from_bytes(payload[:8], "little")])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"not a readable drtrain model file: {path}: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"unsupported model format_version {meta.get('format_version')!r}")
    return tensors, meta


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the module (MLP for drtrain-mlp, RBMStack for drtrain-dbn) and return it with the metadata.

    The module expects *normalised* input; the metadata dict gains ``input_mean`` and ``input_std``
    (float32 numpy (D,)) for that; ``predict`` does the whole inference.
    """
    tensors, meta = read_model_file(path)
    hidden = list(meta["hidden_layers"])
    if meta["format"] == "drtrain-mlp":
        n_classes = int(tensors["head.weight"].shape[0]) if "head.weight" in tensors else None
        module: nn.Module = MLP(meta["n_features"], hidden, n_classes, meta["activation"])
    elif meta["format"] == "drtrain-dbn":
        module = RBMStack(list(zip([meta["n_features"], *hidden[:-1]], hidden)))
    else:
        raise CheckpointError(f"unknown model format {meta['format']!r}")
    with torch.no_grad():
        for i, layer in enumerate(module.hidden):
            layer.weight.copy_(tensors[f"hidden.{i}.weight"])
            layer.bias.copy_(tensors[f"hidden.{i}.bias"])
        head = getattr(module, "head", None)
        if head is not None:
            head.weight.copy_(tensors["head.weight"])
            head.bias.copy_(tensors["head.bias"])
    module.eval()
    meta["input_mean"] = tensors["input.mean"].numpy()
    meta["input_std"] = tensors["input.std"].numpy()
    return module, meta


@torch.no_grad()
def predict(module: nn.Module, meta: dict[str, Any], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class indices (N,), class probabilities (N, C)) for raw features X (N, D)."""
    x = (torch.as_tensor(np.asarray(X, np.float32)) - torch.from_numpy(meta["input_mean"])) \
        / torch.from_numpy(meta["input_std"])
    probs = torch.softmax(module(x), dim=1)
    return probs.argmax(dim=1).numpy(), probs.numpy()
