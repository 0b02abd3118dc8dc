"""Publishing committed jobs ("run job <id>"): one port, ``Publish = (settings, job_ids)``,
with two adapters: ``publish_jobs`` (in this process) and ``ChildPublisher.publish`` (in a
child process, as the served API does).

Celery builds and sends each message in Python. Spent in the API process, that time comes
out of the one interpreter lock every request shares, a large share of the API's CPU under
a stream of submits; a child process spends it on another core instead.

Only what is already committed goes to the child, and the answer never waits for it: a
child that dies is replaced at the next publish, and the publish it had in hand is done
here instead (a second message for a job is harmless: ``claim()`` refuses it). If the child
cannot be started at all, jobs are published here, as before.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from drtrain.kit.outages import log_failure
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

# The port: publish these committed jobs' messages (never raises: the reaper re-publishes
# queued jobs whose message was lost).
Publish = Callable[[Settings, list[str]], None]


def _publish_one(settings: Settings, job_id: str) -> None:
    # Imported late: the broker module pulls in Celery, which request-free code paths
    # (and unit tests of their callers) do not need.
    from drtrain.kit.broker import publish_run_job

    try:
        publish_run_job(settings, job_id)
    except Exception as exc:  # noqa: BLE001
        # The row is already committed as queued and the reaper re-publishes queued jobs,
        # so a broker outage must not turn an accepted submission into a 500.
        log_failure(log, logging.WARNING, exc, "publishing job %s failed; the reaper will retry",
                    job_id)


def publish_jobs(settings: Settings, job_ids: list[str]) -> None:
    """The in-process adapter. Jobs committed together go through one producer (on Redis one
    round trip). If that fails they go one at a time, each with its retries, until one fails
    for good; the rest are left to the reaper, as ``_publish_one`` leaves them."""
    from drtrain.kit.broker import publish_run_job, publish_run_jobs

    if len(job_ids) == 1:  # nothing to batch
        _publish_one(settings, job_ids[0])
        return
    try:
        publish_run_jobs(settings, job_ids)
        return
    except Exception as exc:  # noqa: BLE001 - as in _publish_one; a retry below, then the reaper
        log_failure(log, logging.WARNING, exc,
                    "publishing %d jobs together failed; one at a time now", len(job_ids))
    for n, job_id in enumerate(job_ids):
        try:
            publish_run_job(settings, job_id)
        except Exception as exc:  # noqa: BLE001
            log_failure(log, logging.WARNING, exc,
                        "publishing job %s failed; the reaper will retry it and %d more",
                        job_id, len(job_ids) - n - 1)
            return


# How often the child checks that the API that started it is still there.
PARENT_CHECK_SECONDS = 0.5


def _child_setup(api_pid: int) -> None:
    # Ctrl-C is for the API, which shuts the child down once its last publish is done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # An API killed outright must take the child with it: the pool's pipes would keep it
    # waiting for ever. (Not prctl(PR_SET_PDEATHSIG): that fires when the *thread* that
    # started the child ends, and the threads that start it come and go.)
    threading.Thread(target=_exit_with, args=(api_pid,), name="parent-watch",
                     daemon=True).start()


def _exit_with(api_pid: int) -> None:
    while os.getppid() == api_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _import_broker() -> None:
    import drtrain.kit.broker  # noqa: F401 - Celery and kombu, loaded before the first job


def _publish_in_child(settings: Settings, job_ids: list[str]) -> None:
    publish_jobs(settings, job_ids)


class ChildPublisher:
    """The child adapter: ``publish_jobs`` in a child process (one,
    started by ``warm`` or the first publish; a fresh interpreter, so nothing of the API's
    threads or connections is inherited)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def warm(self) -> None:
        """Start the child now (an interpreter importing Celery: a second or so), so the
        first submit's jobs do not wait for it. Blocking: call it from a thread."""
        pool = self._current()
        if pool is None:
            return
        try:
            pool.submit(_import_broker).result()
        except Exception:  # noqa: BLE001 - publish() falls back, and says so
            log.warning("starting the publishing process failed", exc_info=True)

    def publish(self, settings: Settings, job_ids: list[str]) -> None:
        pool = self._current()
        if pool is not None:
            try:
                pool.submit(_publish_in_child, settings, job_ids).result()
                return
            except BrokenProcessPool:
                log.warning("the publishing process died; publishing %d job(s) here, and "
                            "starting another", len(job_ids))
                self._discard(pool)
            except Exception:  # noqa: BLE001 - e.g. the call could not be sent to the child
                log.warning("publishing %d job(s) in the child failed; publishing them here",
                            len(job_ids), exc_info=True)
        publish_jobs(settings, job_ids)

    def close(self) -> None:
        """Waits for the publish in hand, then ends the child. Later publishes run here."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True)

    def _current(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._pool is None and not self._closed:
                try:
                    self._pool = ProcessPoolExecutor(
                        max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_child_setup, initargs=(os.getpid(),))
                except Exception:  # noqa: BLE001 - e.g. no process may be started here
                    log.warning("no publishing process; publishing in the API process",
                                exc_info=True)
                    self._closed = True
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)
