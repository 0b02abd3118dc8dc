"""Checkpoints through the object store: upload a training state, find the newest valid one.

Objects are keyed by attempt so that a stale worker can never overwrite what a newer attempt
wrote; the SQL row (written fenced) is what makes a checkpoint count.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dr_core.checkpoint import CheckpointError, encode_state, load_state
from drtrain.kit.models import Checkpoint
from drtrain.kit.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Uploaded:
    key: str
    sha256: str
    size_bytes: int


def checkpoint_key(job_id: str, attempt: int, kind: str, phase: str, layer: int | None,
                   epoch: int) -> str:
    layer_part = "head" if layer is None else str(layer)
    return f"jobs/{job_id}/checkpoints/{attempt}-{phase}-{layer_part}-{epoch}-{kind}.safetensors"


def model_key(job_id: str, attempt: int) -> str:
    return f"jobs/{job_id}/attempt-{attempt}/model.safetensors"


def upload_state(store: ObjectStore, key: str, state: dict[str, Any]) -> Uploaded:
    """The state's bytes written once, into the store (atomic and durable there), which hashes
    them as it writes: a local file first would only be a second copy, write and hash."""
    stored = store.put_stream(key, [encode_state(state)])
    return Uploaded(key, stored.sha256, stored.size_bytes)


def load_latest_valid(store: ObjectStore, candidates: list[Checkpoint],
                      workdir: Path) -> tuple[Checkpoint, dict[str, Any]] | None:
    """The newest checkpoint whose bytes match the recorded sha256 and load; older ones are
    tried when the newest is corrupt or missing."""
    for ckpt in candidates:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = Path(tmp) / "state.safetensors"
            try:
                store.get_to_file(ckpt.object_key, path)
                state = load_state(path, expected_sha256=ckpt.sha256)
            except (CheckpointError, FileNotFoundError) as exc:
                log.warning("checkpoint %s unusable (%s); trying an older one", ckpt.object_key,
                            exc)
                continue
        return ckpt, state
    return None
