"""Embedded mode's broker latency: the filesystem transport has no push, so a worker sees a
message only when it next looks, every FILESYSTEM_POLLING_SECONDS: the polling interval bounds
how long a submitted job waits in the queue."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from kombu import Consumer

from drtrain.kit.broker import (
    DEFAULT_QUEUE,
    FILESYSTEM_POLLING_SECONDS,
    make_celery,
    publish_run_job,
)
from drtrain.kit.settings import Settings

pytestmark = pytest.mark.timeout(60)


def test_the_embedded_transport_polls_ten_times_a_second_or_more(tmp_path: Path) -> None:
    """The latency itself is measured by bench/service.py (queue latency p50, docs/benchmarks.md),
    not asserted here: what a test can hold without timing is the interval that bounds it."""
    app = make_celery(Settings(data_dir=tmp_path, environment="test"))
    options = app.conf.broker_transport_options
    assert options["polling_interval"] <= 0.1 and FILESYSTEM_POLLING_SECONDS <= 0.1


def test_every_message_reaches_an_idle_consumer(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, environment="test")  # the embedded broker folder
    app = make_celery(settings)
    delays: list[float] = []
    sent: dict[str, float] = {}

    def on_message(body: object, message) -> None:  # noqa: ANN001
        job_id = message.headers["argsrepr"].strip("[]'")
        delays.append(time.monotonic() - sent[job_id])
        message.ack()

    def publish() -> None:
        for i in range(12):
            time.sleep(0.137)  # never in step with the consumer's polls
            sent[f"job{i}"] = time.monotonic()
            publish_run_job(settings, f"job{i}")

    with app.connection_for_read() as conn:
        queue = app.amqp.queues[DEFAULT_QUEUE]
        with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]):
            producer = threading.Thread(target=publish)
            producer.start()
            deadline = time.monotonic() + 30
            while len(delays) < 12 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
            producer.join()
    assert len(delays) == 12
    assert sorted(sent) == sorted(f"job{i}" for i in range(12))


def test_a_published_message_is_never_visible_half_written(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's own publish creates the message file, then writes it: a consumer polling
    meanwhile took an empty file, failed to decode it and lost the message. Ours is renamed
    into the queue folder complete."""
    import os

    from drtrain.kit import fs_transport

    settings = Settings(data_dir=tmp_path, environment="test")
    queue_dir = settings.broker_folder / "queue"
    seen: list[list[str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(sorted(p.name for p in queue_dir.iterdir()))
        assert Path(src).read_bytes().startswith(b"{")  # complete before it is renamed
        real_replace(src, dst)

    monkeypatch.setattr(fs_transport.os, "replace", spy)
    publish_run_job(settings, "job-1")
    assert len(seen) == 1
    assert not [n for n in seen[0] if n.endswith(f".{DEFAULT_QUEUE}.msg")]  # nothing to take yet
    names = [p.name for p in queue_dir.iterdir()]
    assert len(names) == 1 and names[0].endswith(f".{DEFAULT_QUEUE}.msg")


def test_many_publishers_lose_no_message(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, environment="test")
    app = make_celery(settings)
    received: list[str] = []

    def on_message(body: object, message) -> None:  # noqa: ANN001
        received.append(message.headers["argsrepr"])
        message.ack()

    def publish(prefix: str) -> None:
        for i in range(40):
            publish_run_job(settings, f"{prefix}{i}")

    with app.connection_for_read() as conn:
        with Consumer(conn, [app.amqp.queues[DEFAULT_QUEUE]], callbacks=[on_message],
                      accept=["json"]):
            threads = [threading.Thread(target=publish, args=(p,)) for p in "ab"]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while len(received) < 80 and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
            for t in threads:
                t.join()
    assert len(received) == 80 and len(set(received)) == 80


@pytest.mark.parametrize("clock", [(999_999, 1_000_000), (9_999_999_999_999, 10_000_000_000_000)])
def test_queue_files_sort_in_publish_order_across_a_clock_digit(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              clock: tuple[int, int]) -> None:
    """Consumers take the queue's files in name order; an unpadded clock put a message
    published after the clock gained a digit before the older ones."""
    from drtrain.kit import fs_transport

    settings = Settings(data_dir=tmp_path, environment="test")
    ticks = iter(clock)
    monkeypatch.setattr(fs_transport, "clock_us", lambda: next(ticks))
    publish_run_job(settings, "job-older")
    publish_run_job(settings, "job-newer")
    files = sorted((settings.broker_folder / "queue").iterdir(), key=lambda p: p.name)
    assert [b"job-older" in f.read_bytes() for f in files] == [True, False]
