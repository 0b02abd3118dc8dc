"""The study's side of the service: start an embedded one (``drtrain up``) and upload the
regimes' data over HTTP with drtrain_client (drtrain_study.work runs the jobs).

Nothing here trains: every number of the study comes from a job's result and metric points.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from drtrain_client import Client
from drtrain_client.connection import KEY_FILE, URL_FILE
from drtrain_study.data import StudyData, write_npz


@contextlib.contextmanager
def embedded_service(workers: int, data_dir: Path | None = None, start_timeout: float = 120.0
                     ) -> Iterator[Client]:
    """``drtrain up`` in a temporary data folder, ``workers`` training workers of one torch
    thread each (the cores are shared between them, not oversubscribed); stopped on exit."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drtrain-study-")))
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = (data_dir / "service.log").open("w")
        stack.callback(log.close)
        proc = subprocess.Popen([sys.executable, "-m", "drtrain_cli.main", "up", "--data-dir", str(data_dir),
                                 "--port", str(port), "--workers", str(workers)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_timeout
        while not (data_dir / URL_FILE).exists() or not _healthy(url):  # written once healthy
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"drtrain up did not start; see {data_dir / 'service.log'}")
            time.sleep(0.3)
        key = (data_dir / KEY_FILE).read_text().strip()
        client = stack.enter_context(Client(url, key, timeout=120))
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Uploaded:
    """A regime's dataset ids: the training data (labels, -1 for none) and the test set."""

    train: str
    test: str


def upload_regime(client: Client, data: StudyData, log: Callable[[str], None]) -> Uploaded:
    """Upload the regime's NPZ files (the service's own format) and wait until they are checked."""
    with tempfile.TemporaryDirectory(prefix="drtrain-study-upload-") as tmp:
        def put(name: str, X: Any, y: Any) -> str:
            path = write_npz(Path(tmp) / f"{name}.npz", X, y)
            created = client.upload_dataset(path, name=name)
            ready = client.wait_dataset(created["id"], timeout=600)
            log(f"  uploaded {name}: {ready.get('n_samples')} rows, {ready.get('n_labelled')} labelled "
                f"-> {ready['id']}")
            return str(ready["id"])

        return Uploaded(put(f"study-{data.name}-train", data.X, data.y),
                        put(f"study-{data.name}-test", data.X_test, data.y_test))
