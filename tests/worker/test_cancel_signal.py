"""The cancel's direct path (drtrain.kit.cancel_signal): a flag file embedded, a Redis channel
in production, and the heartbeat alone when neither can be had."""
from __future__ import annotations

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
