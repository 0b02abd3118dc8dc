"""Training-state checkpoints: one safetensors file, written atomically, identified by its sha256.

Tensors (weights, momentum, PCD chains, the generator state as a uint8 tensor) are stored as
safetensors tensors; every other value (position, config echoes, strings) must be JSON-able
and goes into the ``__metadata__`` entry ``drtrain_state``. ``load_state`` gives back the same
dict with CPU tensors.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

_META_KEY = "drtrain_state"


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, corrupt or not the one expected (sha256 mismatch)."""


def write_atomic(path: str | os.PathLike, payload: bytes) -> str:
    """Write bytes to ``path`` so that readers see the old file or the whole new one; returns sha256."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # The rename is only durable once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return hashlib.sha256(payload).hexdigest()


def encode_state(state: dict[str, Any]) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            # safetensors refuses shared or strided storage; a CPU copy also detaches CUDA tensors.
            tensors[key] = value.detach().to("cpu").contiguous().clone()
        else:
            values[key] = value
    try:
        meta = json.dumps(values)
    except TypeError as exc:
        raise CheckpointError(f"state has a value that is neither a tensor nor JSON-able: {exc}") from exc
    return st_save(tensors, metadata={_META_KEY: meta})


def decode_state(payload: bytes) -> dict[str, Any]:
    try:
        tensors = st_load(payload)
        header_len = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8:8 + header_len])
        values = json.loads(header["__metadata__"][_META_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint is corrupt or not a drtrain state: {exc}") from exc
    return {**values, **tensors}


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Atomically write ``state`` to ``path``; returns the file's sha256 hex digest."""
    return write_atomic(path, encode_state(state))


def load_state(path: str | os.PathLike, *, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read a state written by ``save_state``; raises ``CheckpointError`` if unreadable or the sha differs."""
    try:
        payload = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if expected_sha256 is not None:
        actual = hashlib.sha256(payload).hexdigest()
        if actual != expected_sha256.lower():
            raise CheckpointError(f"sha256 mismatch for {path}: expected {expected_sha256}, got {actual}")
    return decode_state(payload)
