"""An attempt's own log lines, kept for ``GET /v1/jobs/{id}/logs`` (``drtrain.jobs.logs``).

While the runner holds a job, ``AttemptLog`` (a logging handler on the root logger) takes the
records of our packages' loggers and Python's warnings: the phases, each epoch's metrics, the
warnings and any traceback. A Celery worker process runs one job at a time, so every such
record of the process belongs to the job.

* Bounded: an attempt keeps at most ``max_bytes`` of lines (each cut at ``MAX_LINE_CHARS``);
  the line that would pass the bound is replaced by one saying the log was truncated, and
  every later one is dropped.
* Durable: a thread of its own writes the new lines every ``flush_seconds`` in one
  transaction, and closing writes the rest, so a crash of the process loses at most the last
  interval's lines. A write that fails (a database outage) is retried at the next interval;
  the lines wait in memory, which the bound also caps.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from dr_core.events import Callback, Event, EventAdapter
from drtrain.jobs import logs
from drtrain.kit.db import session_scope

CAPTURED = ("worker", "dr_core", "drtrain", "py.warnings")
MAX_LINE_CHARS = 2000
TRUNCATED = "[log truncated: this attempt passed {max_bytes} bytes of log lines; later lines dropped]"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger(__name__)


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return super().formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"


class AttemptLog(logging.Handler):
    """Keeps one attempt's lines and writes them (see the module docstring)."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, attempt: int, *,
                 max_bytes: int, flush_seconds: float) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(_UTCFormatter(_FORMAT))
        self.addFilter(lambda r: r.name.split(".")[0] in CAPTURED and r.thread != self._writer)
        self.factory, self.job_id, self.attempt = factory, job_id, attempt
        self.max_bytes, self.flush_seconds = max_bytes, flush_seconds
        self._pending: list[str] = []
        self._pending_lock, self._write_lock = threading.Lock(), threading.Lock()
        self._used, self._truncated = 0, False
        with session_scope(factory) as s:
            self._next = logs.next_line(s, job_id, attempt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="job-log-writer",
                                        daemon=True)
        self._writer: int | None = None
        self._thread.start()
        self._writer = self._thread.ident

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own contract: a bad record never raises
            self.handleError(record)
            return
        for line in text.splitlines() or [""]:
            self._keep(line[:MAX_LINE_CHARS])

    def _keep(self, line: str) -> None:
        size = len(line.encode("utf-8")) + 1  # and its newline
        with self._pending_lock:
            if self._truncated:
                return
            marker = TRUNCATED.format(max_bytes=self.max_bytes)
            if self._used + size + len(marker) + 1 > self.max_bytes:  # room for the marker kept
                self._truncated, line, size = True, marker, len(marker) + 1
            self._used += size
            self._pending.append(line)

    def write(self) -> None:
        """Store the lines kept since the last write (they stay pending if it fails)."""
        with self._write_lock:  # one write at a time: each numbers its lines from _next
            with self._pending_lock:
                lines, self._pending = self._pending, []
            if not lines:
                return
            try:
                with session_scope(self.factory) as s:
                    logs.append(s, self.job_id, self.attempt, self._next, lines)
            except Exception as exc:  # noqa: BLE001 - logging never breaks the job; retried
                with self._pending_lock:
                    self._pending[:0] = lines
                print(f"job {self.job_id} attempt {self.attempt}: log lines not written yet: "
                      f"{exc!r}", file=sys.stderr)
                return
            self._next += len(lines)

    def _write_loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.write()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        self.write()
        super().close()


@contextmanager
def attempt_log(factory: sessionmaker[Session], job_id: str, attempt: int, *, max_bytes: int,
                flush_seconds: float) -> Iterator[AttemptLog]:
    """Keep the attempt's log lines while the block runs; leaving it writes the rest."""
    handler = AttemptLog(factory, job_id, attempt, max_bytes=max_bytes,
                         flush_seconds=flush_seconds)
    root = logging.getLogger()
    # Our loggers say INFO at least while the job runs (a root left at WARNING would drop the
    # phases before any handler saw them); their levels are put back afterwards.
    quiet = [(name, logging.getLogger(name).level) for name in CAPTURED
             if logging.getLogger(name).getEffectiveLevel() > logging.INFO]
    for name, _ in quiet:
        logging.getLogger(name).setLevel(logging.INFO)
    # ... while the root's other handlers (the worker's own output, `drtrain up`'s terminal)
    # keep showing only what the root's level let through before.
    loud = [(h, h.level) for h in root.handlers if h.level < root.level]
    for other, _ in loud:
        other.setLevel(root.level)
    # Python's warnings (a torch UserWarning, say) become py.warnings records meanwhile.
    warnings_were_captured = getattr(warnings.showwarning, "__module__", "") == "logging"
    logging.captureWarnings(True)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in quiet:
            logging.getLogger(name).setLevel(level)
        for other, level in loud:
            other.setLevel(level)
        logging.captureWarnings(warnings_were_captured)
        handler.close()


def write_job_log(job_id: str) -> None:
    """Store the job's pending lines now (before its final status, so that whoever stops
    reading its log once it has ended reads them all)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, AttemptLog) and handler.job_id == job_id:
            handler.write()


class EpochLines(EventAdapter):
    """``inner`` with a line of each epoch's metrics logged as the epoch ends: in the training
    thread, so that the job's log reads in the order things happened (the recorder writes
    epochs later, several at once)."""

    def __init__(self, inner: Callback) -> None:
        super().__init__(inner, lambda event: event)

    def on_epoch_end(self, event: Event) -> None:
        log.info("%s%s epoch %d: %s", event.phase,
                 "" if event.layer is None else f" layer {event.layer}", event.epoch,
                 " ".join(f"{k}={v:.4g}" for k, v in event.metrics.items()))
        self.inner.on_epoch_end(event)
