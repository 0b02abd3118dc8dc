"""The connection budget of a worker (docs/operations.md, "Sizing"): its training process
holds at most one PostgreSQL connection at rest and two while a job trains, and its reaper
holds none between rounds. Counted from outside, per process, from the sockets each process
of the worker has open to PostgreSQL's port (/proc), so the count does not depend on what the
code says about itself."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.stack import LONG_SPEC, wait_for

pytestmark = [pytest.mark.e2e]

PG_PORT = 5432
TRAINS_FOR_LONG = {**LONG_SPEC, "pretrain": {**LONG_SPEC["pretrain"], "epochs": 200}}
ESTABLISHED = "01"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _pg_sockets() -> set[str]:
    """Inodes of established TCP connections to PostgreSQL's port."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == PG_PORT and fields[3] == ESTABLISHED:
                inodes.add(fields[9])
    return inodes


def pg_connections(pid: int) -> int:
    """PostgreSQL connections process ``pid`` holds now."""
    targets = _pg_sockets()
    held = 0
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            link = fd.readlink().name
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in targets:
            held += 1
    return held


def sample(main: int, seconds: float) -> tuple[list[int], list[int]]:
    """(the reaper's process, the training process) connection counts, every 50 ms."""
    reaper, training = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reaper.append(pg_connections(main))
        training.append(sum(pg_connections(child) for child in _children(main)))
        time.sleep(0.05)
    return reaper, training


def test_a_worker_holds_one_connection_at_rest_and_two_while_training(stack):
    worker = stack.start_worker("budget")
    main = worker.pid
    wait_for("the worker's training process", lambda: _children(main), 60)
    wait_for("the worker to be ready", lambda: "ready" in stack.logs(), 60)

    # Far longer than the sampling window on any machine; cancelled once it has been sampled,
    # so the test's length does not grow with the job's.
    first = stack.submit(TRAINS_FOR_LONG)
    stack.wait_first_metric(first["id"])
    reaper_training, training = sample(main, 4.0)
    assert stack.get_job(first["id"])["status"] == "running"
    with stack.client() as c:
        assert c.post(f"/v1/jobs/{first['id']}/cancel").status_code == 202
    assert stack.wait_final(first["id"], timeout=120)["status"] == "cancelled"

    time.sleep(1.0)  # the job's last writes are back in the pool
    reaper_rest, rest = sample(main, 3.0)
    print(f"training process: max {max(training)} while training, max {max(rest)} at rest; "
          f"reaper process: min {min(reaper_training + reaper_rest)}, "
          f"max {max(reaper_training + reaper_rest)}")
    assert max(training) <= 2, training
    assert max(rest) <= 1, rest
    # Between its rounds the reaper holds no connection.
    assert min(reaper_rest) == 0 and min(reaper_training) == 0, (reaper_rest, reaper_training)
