"""The cancel's direct path (drtrain.kit.cancel_signal): a flag file embedded, a Redis channel
in production, and the heartbeat alone when neither can be had."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from drtrain.kit import cancel_signal
from drtrain.kit.settings import Settings

REDIS = "redis://127.0.0.1:6379/15"


def _settings(tmp_path: Path, broker_url: str = "") -> Settings:
    return Settings(data_dir=tmp_path / "data", broker_url=broker_url)


def _eventually(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_flag_file_is_seen_and_cleared(tmp_path):
    settings = _settings(tmp_path)
    watch = cancel_signal.watch(settings, "job1")
    other = cancel_signal.watch(settings, "job2")
    assert isinstance(watch, cancel_signal.FlagWatch) and not watch.requested()
    cancel_signal.send(settings, "job1")
    assert _eventually(watch.requested)
    assert not other.requested()
    watch.close()
    assert not (settings.broker_folder / "cancel" / "job1").exists()


def test_redis_channel_is_seen_by_the_job_it_names_only(tmp_path):
    settings = _settings(tmp_path, REDIS)
    watch, other = cancel_signal.watch(settings, "job1"), cancel_signal.watch(settings, "job2")
    try:
        assert isinstance(watch, cancel_signal.ChannelWatch) and not watch.requested()
        cancel_signal.send(settings, "job1")
        assert _eventually(watch.requested)
        assert not _eventually(other.requested, timeout=0.5)
    finally:
        watch.close()
        other.close()


def test_unreachable_redis_leaves_the_heartbeat_in_charge(tmp_path):
    settings = _settings(tmp_path, "redis://127.0.0.1:1/0")
    watch = cancel_signal.watch(settings, "job1")
    assert isinstance(watch, cancel_signal.NoWatch) and not watch.requested()
    cancel_signal.send(settings, "job1")  # logs, never raises
    watch.close()


class _BlockedPubSub:
    """A subscription whose reads block until released, and that records its closing."""

    def __init__(self) -> None:
        self.release, self.closed = threading.Event(), threading.Event()
        self.reads = 0

    def subscribe(self, *_: object) -> None:
        return None

    def get_message(self, **kwargs: object) -> None:
        self.reads += 1
        if self.reads > 1:  # the confirmation read in the constructor answers at once
            self.release.wait()
        return None

    def close(self) -> None:
        self.closed.set()


class _FakeRedis:
    def __init__(self, pubsub: _BlockedPubSub) -> None:
        self._pubsub, self.closed = pubsub, False

    def pubsub(self) -> _BlockedPubSub:
        return self._pubsub

    def close(self) -> None:
        self.closed = True


def test_closing_a_watch_does_not_wait_for_its_listeners_read(tmp_path, monkeypatch):
    """The worker closes the watch when a job ends; waiting out the listener's read there held
    every worker idle after each job. The listener closes the connection itself."""
    pubsub = _BlockedPubSub()
    client = _FakeRedis(pubsub)
    monkeypatch.setattr(cancel_signal.redis.Redis, "from_url", lambda *_a, **_k: client)
    watch = cancel_signal.watch(_settings(tmp_path, REDIS), "job1")
    assert isinstance(watch, cancel_signal.ChannelWatch)
    closer = threading.Thread(target=watch.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive() and not pubsub.closed.is_set()  # closed while still reading
    pubsub.release.set()
    assert pubsub.closed.wait(10) and _eventually(lambda: client.closed)
