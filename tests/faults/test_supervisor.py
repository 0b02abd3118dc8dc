"""`drtrain up` as a supervisor, for real: its children die with it even when it is killed with
SIGKILL, a worker that dies is started again, and a second `up` on a busy port fails before it
says that it is up."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.flow import free_port
from tests.faults.stack import REPO, SHORT_SPEC, wait_for

pytestmark = [pytest.mark.e2e]

DRTRAIN = str(Path(sys.executable).with_name("drtrain"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               DRTRAIN_HEARTBEAT_SECONDS="0.5", DRTRAIN_LEASE_SECONDS="3")
    return env


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> list[int]:
    """Live (not zombie) processes below ``root``, from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _ppid_and_state(int(entry.name))):
            if info[1] != "Z":
                parent[int(entry.name)] = info[0]
    found, frontier = [], [root]
    while frontier:
        node = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == node]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    info = _ppid_and_state(pid)
    return info is not None and info[1] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Up:
    proc: subprocess.Popen
    port: int
    data_dir: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[int]:
        return [p for p in descendants(self.proc.pid)
                if _ppid_and_state(p) and _ppid_and_state(p)[0] == self.proc.pid  # type: ignore[index]
                and "celery" in cmdline(p)]


def start_up(root: Path, port: int, name: str = "up") -> Up:
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([DRTRAIN, "up", "--port", str(port), "--data-dir",
                                 str(root / name)], cwd=root, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    up = Up(proc, port, root / name, log)
    try:
        wait_for("drtrain up to say it is up",
                 lambda: "drtrain is up" in up.output() or proc.poll() is not None, 120, 0.3)
        assert proc.poll() is None, up.output()
        wait_for("a worker", lambda: up.workers(), 30)
    except BaseException:
        finish(up)
        raise
    return up


def finish(up: Up, also: tuple[int, ...] | list[int] = ()) -> None:
    """Stop ``up`` and make sure nothing it started is left (whatever the test did)."""
    left = descendants(up.proc.pid) + list(also)
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGTERM)
        try:
            up.proc.wait(30)
        except subprocess.TimeoutExpired:
            up.proc.kill()
            up.proc.wait(10)
    for pid in left:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def running_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("up")
    up = start_up(root, free_port())
    try:
        yield up
    finally:
        finish(up)
        print(up.output()[-4000:])


def test_a_second_up_on_a_busy_port_fails_before_saying_it_is_up(running_up: Up,
                                                                    tmp_path: Path) -> None:
    started = time.monotonic()
    second = subprocess.run([DRTRAIN, "up", "--port", str(running_up.port), "--data-dir",
                             str(tmp_path / "second")], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=120)
    out = second.stdout + second.stderr
    assert second.returncode == 1, out
    assert "drtrain is up" not in out and "API key" not in out, out
    assert f"cannot listen on 127.0.0.1:{running_up.port}" in out, out
    # It failed before it started, migrated or wrote anything.
    assert not (tmp_path / "second").exists()
    assert time.monotonic() - started < 60
    # ... and the first one is untouched.
    assert running_up.proc.poll() is None
    assert httpx.get(running_up.base + "/healthz", timeout=5).status_code == 200


def test_a_dead_worker_is_restarted_and_runs_jobs(running_up: Up) -> None:
    [worker] = running_up.workers()
    os.killpg(worker, signal.SIGKILL)
    restarted = wait_for("a new worker", lambda: [w for w in running_up.workers()
                                                  if w != worker], 30)
    assert len(restarted) == 1
    assert running_up.proc.poll() is None, running_up.output()
    assert "worker-0 exited unexpectedly" in running_up.output()
    assert "worker-0 restarted" in running_up.output()
    # The restarted worker does the work.
    key = (running_up.data_dir / "api-key").read_text().strip()
    with httpx.Client(base_url=running_up.base, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        r = c.post("/v1/jobs", json=SHORT_SPEC)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        done = wait_for("the job to finish", lambda: (j := c.get(f"/v1/jobs/{job_id}").json())
                        ["status"] in ("succeeded", "failed", "cancelled") and j, 120, 0.3)
    assert done["status"] == "succeeded", done["status_reason"]


def test_children_die_when_up_is_killed_with_sigkill(tmp_path: Path) -> None:
    port = free_port()
    up = start_up(tmp_path, port)
    tree: list[int] = []
    try:
        # The API, the worker and the worker's pool process (the one that trains).
        wait_for("the worker's pool process", lambda: any(
            _ppid_and_state(p) and _ppid_and_state(p)[0] in up.workers()  # type: ignore[index]
            for p in descendants(up.proc.pid)), 30)
        tree = descendants(up.proc.pid)
        assert len(tree) >= 3, [cmdline(p) for p in tree]
        os.kill(up.proc.pid, signal.SIGKILL)
        up.proc.wait(10)
        wait_for("every child of the killed `up` to be gone",
                 lambda: not [p for p in tree if alive(p)], 20)
        # Nothing holds the port any more: it can be bound again at once.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
    finally:
        finish(up, also=tree)
        print(up.output()[-4000:])
