"""docs/operations.md's "Deploy without Docker" as written: its environment block names the
settings this test sets (to a real PostgreSQL, Redis and an S3 server, moto, with no bucket
yet), and its command block is run line by line (a line ending in `&` is started and left
running). Then a job is submitted with the key the doc's `keys create` printed, and its model
downloaded: the user's flow against the processes the doc started."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.flow import free_port, run_flow, stop, wait_http
from tests.e2e.test_production import pg_database, redis_url  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent


def doc_block(marker: str) -> list[str]:
    """The lines of the bash block after ``<!-- operations:MARKER``, comments stripped."""
    after = DOC.split(f"<!-- operations:{marker}", 1)[1].split("```bash\n", 1)[1]
    lines = after.split("\n```", 1)[0].splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


# What the test gives each process: the doc's environment block must set exactly these.
ENV_NAMES = {"DRTRAIN_ENVIRONMENT", "DRTRAIN_DATABASE_URL", "DRTRAIN_BROKER_URL",
             "DRTRAIN_STORAGE_URL", "DRTRAIN_S3_ENDPOINT_URL", "DRTRAIN_S3_ACCESS_KEY_ID",
             "DRTRAIN_S3_SECRET_ACCESS_KEY", "DRTRAIN_DATA_DIR"}


def test_the_environment_block_sets_what_production_needs() -> None:
    names = [line.removeprefix("export ").split("=", 1)[0] for line in doc_block("environment")]
    assert sorted(names) == sorted(ENV_NAMES)


@pytest.fixture
def s3_server(tmp_path: Path):
    """A bare S3 server: no bucket (the API must make its own)."""
    port = free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc, timeout=60)
    yield url
    stop(proc)


def test_deploy_without_docker_as_written(tmp_path, pg_database, redis_url,  # noqa: F811
                                          s3_server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env['PATH']}",
        DRTRAIN_ENVIRONMENT="production",
        DRTRAIN_DATABASE_URL=pg_database,
        DRTRAIN_BROKER_URL=redis_url,
        DRTRAIN_STORAGE_URL="s3://drtrain-ops/objects",
        DRTRAIN_S3_ENDPOINT_URL=s3_server,
        DRTRAIN_S3_ACCESS_KEY_ID="test",
        DRTRAIN_S3_SECRET_ACCESS_KEY="test",
        DRTRAIN_DATA_DIR=str(tmp_path / "scratch"),
        OMP_NUM_THREADS="1",
    )
    assert ENV_NAMES <= set(env)
    port = free_port()
    services: list[subprocess.Popen] = []
    outputs: dict[str, str] = {}
    try:
        for n, line in enumerate(doc_block("commands")):
            # The doc's port is the operator's; this test takes a free one.
            line = line.replace(":8000", f":{port}").replace("--port 8000", f"--port {port}")
            if line.endswith("&"):
                with open(tmp_path / f"{n:02d}.log", "wb") as log:
                    services.append(subprocess.Popen(
                        shlex.split(line[:-1]), env=env, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True, cwd=tmp_path))
                continue
            done = subprocess.run(["bash", "-c", line], env=env, capture_output=True,
                                  text=True, timeout=180, cwd=tmp_path)
            assert done.returncode == 0, (line, done.stdout, done.stderr, _logs(tmp_path))
            outputs[line.split()[0] + " " + line.split()[1]] = done.stdout
        key = outputs["drtrain keys"].strip().splitlines()[-1].split()[-1]
        assert key.startswith("drt_"), outputs["drtrain keys"]
        assert "pong" in outputs["celery -A"], outputs["celery -A"]
        run_flow(f"http://127.0.0.1:{port}", key, tmp_path)
    finally:
        for proc in services:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in services:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(folder.glob("*.log")))
