"""Input normalisation shared by the pipeline, the model file and its numpy reader."""
from __future__ import annotations

import numpy as np
import torch

# A constant feature would divide by zero; its standardised value is then simply x - mean.
STD_FLOOR = 1e-6


def normalization_for(X: np.ndarray, visible: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 (D,): train statistics for Gaussian visible units, identity for Bernoulli."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array, got shape {X.shape}")
    if visible == "gaussian":
        mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = np.maximum(X.std(axis=0, dtype=np.float64), STD_FLOOR).astype(np.float32)
        return mean, std
    if visible == "bernoulli":
        return np.zeros(X.shape[1], np.float32), np.ones(X.shape[1], np.float32)
    raise ValueError(f"visible: must be 'bernoulli' or 'gaussian', got {visible!r}")


def normalize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(X - mean) / std as float32 (N, D)."""
    return ((np.asarray(X, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)


def to_tensor(X: np.ndarray, mean: np.ndarray, std: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Normalised float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(normalize(X, mean, std))).to(device)
