"""Child processes of ``drtrain up``: they die with it, and a dead one is started again.

- **Die with the parent.** On Linux every child asks the kernel for SIGKILL when its parent
  dies (``prctl(PR_SET_PDEATHSIG)``), so ``kill -9`` or the OOM killer on ``drtrain up`` takes
  the API and the workers with it; Celery's pool processes do the same towards their worker,
  so a training process goes too, and its job is requeued by its lease as for any lost worker.
- **Restart with backoff.** A child that exits while ``up`` is running is started again after
  1, 2, 4 ... seconds (at most ``MAX_BACKOFF_SECONDS``); the delay resets once a child has
  stayed up ``STABLE_SECONDS``. A child that dies ``MAX_QUICK_FAILURES`` times in a row before
  that is broken rather than unlucky, and ``up`` gives up.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STOP_TIMEOUT_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 30.0
MAX_QUICK_FAILURES = 5
PR_SET_PDEATHSIG = 1


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up before any fork: the child only calls it.
_PRCTL = _libc_prctl()


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn``: SIGKILL this child when ``parent`` dies (Linux), and exit at once if
    the parent is already gone (it died between the fork and the prctl)."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(70)
    return setup


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Children:
    def __init__(self) -> None:
        self.children: list[Child] = []

    @property
    def procs(self) -> list[tuple[str, subprocess.Popen]]:
        return [(c.name, c.proc) for c in self.children if c.proc is not None]

    def _spawn(self, child: Child) -> None:
        # Own process group: a worker's pool processes are stopped with it (killpg), and
        # Ctrl-C in the terminal reaches them only through ``up``, in order.
        child.proc = subprocess.Popen(child.argv, env=child.env, cwd=child.cwd,
                                      start_new_session=True, pass_fds=child.pass_fds,
                                      preexec_fn=die_with_parent(os.getpid()))
        child.started_at = time.monotonic()
        child.restart_at = None

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
              pass_fds: tuple[int, ...] = ()) -> None:
        child = Child(name, argv, env, cwd, pass_fds)
        self.children.append(child)
        self._spawn(child)

    def dead(self) -> list[tuple[str, int]]:
        return [(c.name, c.proc.returncode) for c in self.children
                if c.proc is not None and c.proc.poll() is not None]

    def supervise(self, say: Callable[[str], None]) -> bool:
        """Schedule the restart of children that exited, start those that are due; False
        once a child keeps dying right after its start (``up`` should give up)."""
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if proc is not None and child.restart_at is None and proc.poll() is not None:
                _signal_group(proc, signal.SIGKILL)  # whatever it left behind in its group
                child.exits.append(proc.returncode)
                stable = now - child.started_at >= STABLE_SECONDS
                child.quick_failures = 0 if stable else child.quick_failures + 1
                if child.quick_failures >= MAX_QUICK_FAILURES:
                    say(f"drtrain up: {child.name} exited {child.quick_failures} times in a row "
                        f"within {STABLE_SECONDS:.0f} s of starting (last code "
                        f"{proc.returncode}); giving up")
                    return False
                delay = min(2.0 ** max(child.quick_failures - 1, 0), MAX_BACKOFF_SECONDS)
                child.restart_at = now + delay
                say(f"drtrain up: {child.name} exited unexpectedly with {proc.returncode}; "
                    f"restarting it in {delay:.0f} s")
            if child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
                say(f"drtrain up: {child.name} restarted (pid {child.proc.pid})")
        return True

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        procs = [p for _, p in self.procs]
        for proc in procs:
            # The leader only: a Celery worker then stops warmly (lets a nearly done job end);
            # the group is killed below if that takes too long.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            # The whole group: a prefork pool child must not outlive its worker.
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
