"""A cancel's fast path from the API to the training loop, beside SQL's ``cancel_requested``.

The worker's heartbeat reads ``cancel_requested`` every few seconds, far less often than a
batch ends. So once the API has committed running -> cancelling it also tells the job's
worker directly, and training stops at the next batch:
- production (Redis broker): a message on the channel ``drtrain:cancel:<job id>``, to which
  the worker subscribes on a thread of its own while the job runs;
- embedded (filesystem broker): a flag file ``<broker folder>/cancel/<job id>``, which the
  worker looks for between batches, at most every ``FLAG_CHECK_SECONDS``.
Either way the check between batches reads a flag in memory, or a file at most that often:
no database round trip per batch. A lost signal (the worker not yet listening, Redis down)
costs only speed: the heartbeat still finds the SQL flag.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Protocol

import redis

from drtrain.kit.broker import is_filesystem
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "drtrain:cancel:"
# A stat() per batch would be cheap beside a CPU batch but not beside a GPU's short ones; a
# check this often still stops the job within "the next batch or so".
FLAG_CHECK_SECONDS = 0.02


def _flag(settings: Settings, job_id: str) -> Path:
    return settings.broker_folder / "cancel" / job_id


def send(settings: Settings, job_id: str) -> None:
    """Tell the worker running ``job_id`` to stop now. Never raises: the heartbeat is the
    fallback."""
    try:
        if is_filesystem(settings):
            flag = _flag(settings, job_id)
            flag.parent.mkdir(parents=True, exist_ok=True)
            flag.touch()
        else:
            with redis.Redis.from_url(settings.resolved_broker_url) as client:
                client.publish(CHANNEL_PREFIX + job_id, "cancel")
    except Exception:  # noqa: BLE001 - the SQL flag still reaches the worker
        log.warning("could not signal the cancel of job %s; the heartbeat will", job_id,
                    exc_info=True)


class CancelWatch(Protocol):
    def requested(self) -> bool: ...
    def close(self) -> None: ...


class FlagWatch:
    """Embedded mode: the flag file, looked for at most every FLAG_CHECK_SECONDS."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self._path = _flag(settings, job_id)
        self._next = 0.0
        self._seen = False

    def requested(self) -> bool:
        now = time.monotonic()
        if not self._seen and now >= self._next:
            self._next = now + FLAG_CHECK_SECONDS
            self._seen = self._path.exists()
        return self._seen

    def close(self) -> None:
        self._path.unlink(missing_ok=True)


class ChannelWatch:
    """Production: a subscription to the job's channel, read on a daemon thread."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self._event, self._closed = threading.Event(), threading.Event()
        self._client = redis.Redis.from_url(settings.resolved_broker_url)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(CHANNEL_PREFIX + job_id)
        self._pubsub.get_message(timeout=5.0)  # the subscription is live once confirmed
        self._thread = threading.Thread(target=self._listen, name=f"cancel-{job_id}", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            while not self._closed.is_set():
                if self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5):
                    self._event.set()
                    return
        except Exception:  # noqa: BLE001 - Redis down: the heartbeat is the fallback
            log.warning("cancel channel lost; the heartbeat still sees cancels", exc_info=True)
        finally:
            # The listening thread owns the connection and closes it, so ``close`` never
            # waits out a read: the worker takes its next job at once.
            self._pubsub.close()
            self._client.close()

    def requested(self) -> bool:
        return self._event.is_set()

    def close(self) -> None:
        """Returns at once; the listener ends within one read's timeout."""
        self._closed.set()


class NoWatch:
    """When the channel cannot be opened: only the heartbeat stops the job."""

    def requested(self) -> bool:
        return False

    def close(self) -> None:
        return None


def watch(settings: Settings, job_id: str) -> CancelWatch:
    """The worker's side for one running job; close it when the job ends."""
    if is_filesystem(settings):
        return FlagWatch(settings, job_id)
    try:
        return ChannelWatch(settings, job_id)
    except Exception:  # noqa: BLE001 - the heartbeat still sees cancels
        log.warning("cannot listen for cancels of job %s; the heartbeat will", job_id,
                    exc_info=True)
        return NoWatch()
