"""The user's flow, shared by both end-to-end modes: upload -> submit with DR -> watch -> download."""
from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np

SPEC = {
    "dataset_id": None,
    "validation_fraction": 0.2,
    "model": {"hidden_layers": [64, 32], "visible_units": "auto"},
    # Big enough to learn: a DBN pretrained for only a few dozen updates has tiny weights and
    # fine-tunes poorly (the vanishing gradient DR is meant to help with).
    "pretrain": {"epochs": 5, "batch_size": 32, "learning_rate": 0.1,
                 "dr": {"weight": 0.5, "divergence": "hellinger", "pairs": "all"}},
    "finetune": {"epochs": 10, "batch_size": 32, "learning_rate": 0.1,
                 "dr": {"weight": 0.05, "distance": "euclidean", "layers": "all"}},
    "seed": 3,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_csv(n: int = 1000) -> bytes:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    buf = io.StringIO()
    buf.write(",".join([f"p{i}" for i in range(X.shape[1])] + ["label"]) + "\n")
    for row, label in zip(X[:n] / 16.0, y[:n]):
        buf.write(",".join(f"{v:.4f}" for v in row) + f",{label}\n")
    return buf.getvalue().encode()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not up after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if hasattr(os, "killpg") else proc.kill()
            proc.wait(10)
            raise AssertionError("did not stop within the timeout after SIGTERM") from None
    return proc.returncode


def run_flow(base: str, key: str, tmp: Path, *, timeout: float = 300) -> dict:
    """Returns the finished job; asserts every step of the documented flow."""
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=h, timeout=60) as c:
        r = c.post("/v1/datasets", files={"file": ("digits.csv", digits_csv(), "text/csv")},
                   data={"name": "digits-e2e"})
        assert r.status_code == 202, r.text  # accepted; checked in the background
        assert r.headers["location"] == f"/v1/datasets/{r.json()['id']}"
        ds = r.json()
        deadline = time.monotonic() + 60
        while ds["status"] == "validating" and time.monotonic() < deadline:
            time.sleep(0.1)
            ds = c.get(r.headers["location"]).json()
        assert ds["status"] == "ready", ds
        assert ds["n_samples"] == 1000 and ds["n_features"] == 64 and ds["n_classes"] == 10
        assert ds["visible_units_hint"] == "bernoulli"

        spec = dict(SPEC, dataset_id=ds["id"])
        r = c.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"].endswith(f"/v1/jobs/{job['id']}")
        assert job["status"] in ("queued", "running")

        deadline = time.monotonic() + timeout
        while True:
            job = c.get(f"/v1/jobs/{job['id']}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"job stuck: {job}"
            time.sleep(0.5)
        assert job["status"] == "succeeded", job
        assert job["progress"] == 1.0
        assert job["result"]["val_accuracy"] > 0.5, job["result"]

        points = c.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        names = {(p["phase"], p["name"]) for p in points}
        for expected in [("pretrain", "recon_error"), ("pretrain", "dr"), ("finetune", "val_accuracy"),
                         ("finetune", "grad_norm.layer0"), ("finetune", "dr")]:
            assert expected in names, (expected, sorted(names))
        seqs = [p["seq"] for p in points]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        # 2 layers x 5 pretrain epochs + 10 fine-tune epochs, nothing duplicated
        keys = {(p["phase"], p["layer"], p["epoch"]) for p in points}
        assert len(keys) == 2 * 5 + 10, sorted(keys)
        assert len(points) == len({(p["phase"], p["layer"], p["epoch"], p["name"]) for p in points})

        cks = c.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        final = [ck for ck in cks if ck["kind"] == "final"]
        # Retention: an ended job keeps its final model only (docs/reliability.md).
        assert len(final) == 1 and [ck["kind"] for ck in cks] == ["final"]

        r = c.get(f"/v1/jobs/{job['id']}/model")
        assert r.status_code == 200
        body = r.content
        assert int(r.headers["content-length"]) == len(body)
        sha = hashlib.sha256(body).hexdigest()
        assert sha == final[0]["sha256"] and r.headers["etag"].strip('"') == sha
        path = tmp / "model.safetensors"
        path.write_bytes(body)

        X = np.asarray([[float(v) for v in line.split(",")[:-1]]
                        for line in digits_csv(20).decode().splitlines()[1:]])
        r = c.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": X.tolist()})
        assert r.status_code == 200, r.text
        api_probs = np.asarray(r.json()["probabilities"])

    # The downloaded file loads back into torch and agrees with the API's numpy inference.
    import torch

    from dr_core.model_file import load_model

    model, meta = load_model(path)
    assert meta["format"] == "drtrain-mlp" and meta["hidden_layers"] == [64, 32]
    with torch.no_grad():
        logits = model(torch.tensor(X, dtype=torch.float32))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), api_probs, atol=1e-5)
    return job
