"""Checking an uploaded file in a process of its own, after the upload was answered (202).

Why a child process of the API, and not the API's threads or a Celery worker: parsing holds
the GIL and allocates, so in the API it would stall every other request and count against its
memory; in a child it does neither, and a crash or a runaway takes only the child (stopped
past ``upload_validation_seconds``, its address space capped at
``upload_validation_memory_bytes``, run at a lower CPU priority than the API). The file is
already on this machine's disk, where a Celery worker would fetch it back from the object store
and queue it behind hours of training. Children are forked from a multiprocessing forkserver
that has numpy and pyarrow imported, so no child pays for importing them.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from drtrain.datasets.formats import DatasetSummary, inspect_upload
from drtrain.kit.errors import Invalid

log = logging.getLogger(__name__)
_PRELOAD = ["__main__", "drtrain.datasets.validation"]


@dataclass(frozen=True)
class Limits:
    max_decompressed_bytes: int
    max_classes: int


@dataclass(frozen=True)
class Request:
    path: Path
    fmt: str
    labels_path: Path | None
    label_column: str
    side_info_column: str | None
    limits: Limits


@dataclass(frozen=True)
class Outcome:
    """Exactly one of ``summary`` (the file is good), ``problem`` (it is not: the reason, as
    a 422 would say it) and ``error`` (it could not be checked: why)."""

    summary: DatasetSummary | None = None
    problem: str | None = None
    error: str | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0


def check(request: Request) -> Outcome:
    """The check itself, in whatever process calls it."""
    started = time.perf_counter()
    try:
        summary = inspect_upload(request.path, request.fmt, labels_path=request.labels_path,
                                 label_column=request.label_column,
                                 side_info_column=request.side_info_column,
                                 limits=request.limits)
        result = Outcome(summary=summary)
    except Invalid as exc:
        result = Outcome(problem=exc.detail)
    except MemoryError:
        result = Outcome(error="it needed more memory than a check may use")
    except Exception as exc:  # noqa: BLE001 - reported as the dataset's reason, and logged
        log.exception("checking %s failed", request.path)
        result = Outcome(error=f"the check failed ({type(exc).__name__})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return Outcome(result.summary, result.problem, result.error,
                   time.perf_counter() - started, peak)


def _child(conn: Connection, request: Request, memory_bytes: int, cpu_seconds: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the API, which stops us
    os.nice(10)  # the API's requests come first on a shared CPU
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # A backstop that needs no parent: a child whose API died still stops.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    try:
        conn.send(check(request))
    finally:
        conn.close()


class Validator:
    """Runs ``check`` in child processes, at most ``concurrency`` at once (others wait)."""

    def __init__(self, concurrency: int, timeout_seconds: float, memory_bytes: int) -> None:
        self.concurrency = concurrency
        self.timeout = timeout_seconds
        self.memory_bytes = memory_bytes
        self._slots: asyncio.Semaphore | None = None
        self._ctx: Any = None

    def _context(self) -> Any:
        if self._ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            self._ctx = ctx
        return self._ctx

    def warm(self) -> None:
        """Start the forkserver now (a second or so: it imports numpy and pyarrow), so the
        first upload does not wait for it. Blocking: call it from a thread."""
        from multiprocessing import forkserver

        self._context()
        forkserver.ensure_running()

    async def run(self, request: Request, deadline: float) -> Outcome:
        """The check's outcome; ``deadline`` (``time.monotonic()``) bounds the wait for a
        free slot and the check together, so no row stays validating past it."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                await self._slots.acquire()
        except TimeoutError:
            return Outcome(error="the service was too busy to check it in time; upload it again")
        try:
            return await self._run_one(request, max(0.1, deadline - time.monotonic()))
        finally:
            self._slots.release()

    async def _run_one(self, request: Request, timeout: float) -> Outcome:
        loop = asyncio.get_running_loop()
        ctx = self._context()
        reader, writer = ctx.Pipe(duplex=False)
        cpu_seconds = int(timeout * (os.cpu_count() or 1)) + 10
        process = ctx.Process(target=_child, name="drtrain-validate", daemon=True,
                              args=(writer, request, self.memory_bytes, cpu_seconds))
        started = time.perf_counter()
        try:
            # Starting talks to the forkserver (and starts it the first time): not on the loop.
            await loop.run_in_executor(None, process.start)
            writer.close()
            try:
                await asyncio.wait_for(_readable(loop, reader), timeout)
            except TimeoutError:
                process.kill()
                return Outcome(error=f"checking it took longer than {self.timeout:g} s",
                               seconds=time.perf_counter() - started)
            try:
                outcome: Outcome = reader.recv()
            except (EOFError, OSError):
                await loop.run_in_executor(None, process.join, 5)
                return Outcome(error=_death_message(process.exitcode),
                               seconds=time.perf_counter() - started)
            return outcome
        finally:
            # Also when cancelled (the upload was refused after its check started).
            reader.close()
            writer.close()
            if process.pid is not None:
                await loop.run_in_executor(None, process.join, 0.5)
                if process.exitcode is None:
                    process.kill()
                    await loop.run_in_executor(None, process.join, 5)


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic()`` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


async def _readable(loop: asyncio.AbstractEventLoop, conn: Connection) -> None:
    """Wait until ``conn`` has data or its other end is closed, without a thread."""
    ready = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


# What the limits put on a check make a killing signal mean (the kernel's OOM killer sends
# SIGKILL; RLIMIT_CPU sends SIGXCPU).
_SIGNAL_HINTS = {"SIGKILL": " (out of memory?)", "SIGXCPU": " (out of CPU time)"}


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"the check was stopped by {name}{_SIGNAL_HINTS.get(name, '')}"
    # glibc aborts when it cannot allocate a thread's memory: the address-space cap, mostly.
    return f"the check ended without a result (exit code {exitcode}; out of memory?)"
