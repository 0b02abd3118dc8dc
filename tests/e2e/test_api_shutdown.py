"""`drtrain api` stops on SIGTERM though a client follows a job's event stream: the stream lasts
as long as the job, and an orchestrator's SIGKILL after its own grace would skip the API's
shutdown (the submits it holds are drained there)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.e2e.flow import free_port, wait_http

pytestmark = [pytest.mark.e2e]

DRTRAIN = str(Path(sys.executable).with_name("drtrain"))


def test_sigterm_stops_the_api_while_an_event_stream_is_open(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    env["DRTRAIN_DATA_DIR"] = str(tmp_path / "data")  # embedded: SQLite, no worker runs here
    subprocess.run([DRTRAIN, "migrate"], env=env, check=True, timeout=120, capture_output=True)
    out = subprocess.run([DRTRAIN, "keys", "create", "--tenant", "t"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    headers = {"Authorization": f"Bearer {out.strip().split()[-1]}"}
    port = free_port()
    log = open(tmp_path / "api.log", "wb")
    api = subprocess.Popen([DRTRAIN, "api", "--port", str(port), "--shutdown-grace", "1"],
                           env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", api)
        job = httpx.post(f"{base}/v1/jobs", headers=headers, timeout=30,
                         json={"dataset_id": "builtin:digits"}).json()
        opened, ended = threading.Event(), threading.Event()

        def follow() -> None:  # the job never runs (no worker): its stream stays open
            try:
                with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", headers=headers,
                                  timeout=httpx.Timeout(5, read=None)) as stream:
                    for _ in stream.iter_raw():
                        opened.set()
            except httpx.HTTPError:
                pass
            ended.set()

        threading.Thread(target=follow, daemon=True).start()
        assert opened.wait(30), "the event stream sent nothing"
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(30)  # the grace is 1 s; without one it waits for the job, for ever here
        except subprocess.TimeoutExpired:
            raise AssertionError("the API kept running after SIGTERM with a stream open") from None
        # uvicorn ends by the signal it was sent once it has shut down cleanly
        logged = (tmp_path / "api.log").read_text()
        assert api.returncode in (0, -signal.SIGTERM), logged[-2000:]
        assert "Application shutdown complete" in logged and "Traceback" not in logged, logged
        assert ended.wait(10)  # the client saw its stream end
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait(10)
        log.close()
