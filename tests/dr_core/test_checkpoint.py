"""Training-state checkpoints: exact round trip, atomic write, corruption detected."""
import hashlib
import json

import pytest
import torch

from dr_core.checkpoint import CheckpointError, load_state, save_state


def _state():
    g = torch.Generator().manual_seed(3)
    torch.rand(5, generator=g)
    return {"phase": "finetune", "layer": None, "epoch": 7, "lr": 0.1 + 1e-17, "nested": {"a": [1, 2.5, "x"]},
            "W": torch.randn(4, 3, generator=g), "W_t": torch.randn(3, 4, generator=g).t(),  # non-contiguous
            "steps": torch.arange(5, dtype=torch.int64), "generator": g.get_state(), "nan": float("nan")}


def test_round_trip_is_exact_and_returns_the_file_sha(tmp_path):
    state = _state()
    path = tmp_path / "ckpt.safetensors"
    sha = save_state(path, state)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    back = load_state(path, expected_sha256=sha)
    assert set(back) == set(state)
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert back[key].dtype == value.dtype and torch.equal(back[key], value)
        elif key == "nan":
            assert back[key] != back[key]
        else:
            assert back[key] == value
    # The generator state restores the exact random stream.
    g1, g2 = torch.Generator(), torch.Generator()
    g1.set_state(state["generator"])
    g2.set_state(back["generator"])
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt"
    save_state(path, {"epoch": 1, "W": torch.zeros(2)})
    save_state(path, {"epoch": 2, "W": torch.ones(2)})
    assert load_state(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_sha_mismatch_is_detected(tmp_path):
    path = tmp_path / "ckpt"
    sha = save_state(path, _state())
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_state(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits inside a tensor: only the sha can notice
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_state(path, expected_sha256=sha)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing", "no_meta"])
def test_corrupt_files_raise_checkpoint_error(tmp_path, damage):
    path = tmp_path / "ckpt"
    save_state(path, _state())
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    else:
        header = json.dumps({"__metadata__": {"other": "1"}}).encode()
        path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError):
        load_state(path)


def test_non_json_values_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_state(tmp_path / "x", {"bad": object()})
    assert not (tmp_path / "x").exists()
