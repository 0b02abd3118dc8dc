"""(a) Embedded mode for real: `drtrain up` in a subprocess, then the whole user flow."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.flow import free_port, run_flow, stop, wait_http

pytestmark = [pytest.mark.e2e]

DRTRAIN = str(Path(sys.executable).with_name("drtrain"))


def test_drtrain_up_full_flow(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    log = open(tmp_path / "up.log", "wb")
    proc = subprocess.Popen([DRTRAIN, "up", "--port", str(port), "--data-dir", str(data_dir)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc)
        key = (data_dir / "api-key").read_text().strip()
        # `up` announces the URL and key once it has seen the API healthy itself.
        deadline = time.monotonic() + 30
        while f"API key: {key}" not in (tmp_path / "up.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, "key never printed"
            time.sleep(0.2)
        assert f"drtrain is up at {base}" in (tmp_path / "up.log").read_text()
        assert "[config]" not in (tmp_path / "up.log").read_text()  # no Celery banner
        assert (data_dir / "api-key").stat().st_mode & 0o077 == 0
        job = run_flow(base, key, tmp_path)
        assert job["attempt"] == 1
        run_readme_step_3(job["id"], data_dir, tmp_path)
    finally:
        code = stop(proc)
        log.close()
        print((tmp_path / "up.log").read_text()[-5000:])
    assert code == 0
    # The workers print warnings only: a job's epochs are in its log, not on the terminal.
    assert not [line for line in (tmp_path / "up.log").read_text().splitlines()
                if "INFO/" in line], "the workers printed INFO lines"
    # Embedded defaults really are embedded: SQLite file and local objects in the data folder.
    assert any(p.suffix == ".sqlite3" for p in data_dir.iterdir())
    assert any((data_dir / "objects").rglob("*.safetensors"))


def run_readme_step_3(job_id: str, data_dir: Path, folder: Path) -> None:
    """The README's "download and classify" commands, as written (the job's id for <id>)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    step = readme.split("\n# 3. ", 1)[1].split("\n# 4. ", 1)[0]
    lines = [line for line in step.splitlines()[1:] if line and not line.startswith("#")]
    assert any(" jobs predict " in line for line in lines) and "..." not in step
    script = "\n".join(lines).replace("<id>", job_id).replace(".venv/bin/drtrain", DRTRAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    done = subprocess.run(["bash", "-euc", script], cwd=folder, capture_output=True, text=True,
                          env={**env, "DRTRAIN_DATA_DIR": str(data_dir)}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "model.safetensors").stat().st_size > 0
    assert "prediction" in done.stdout, done.stdout
