"""One reaper, not one per worker: the reaper's work is done only by the worker holding its
lease in Redis; the lease passes on when its holder stops or dies."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import redis

from drtrain.kit.election import LEASE_KEY, ReaperLease
from drtrain.kit.settings import Settings
from worker import reaper

BROKER = "redis://127.0.0.1:6379/12"  # tests/worker's Redis database


def _settings(**values: object) -> Settings:
    return Settings(broker_url=BROKER, environment="test", **values)


def test_one_holder_at_a_time_and_a_clean_handover() -> None:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    a, b = (ReaperLease(_settings(), queue, ttl_seconds=30) for _ in range(2))
    assert a.held() and not b.held()
    assert a.held() and not b.held()  # renewed, still a's
    a.release()
    assert b.held() and not a.held()
    b.release()


def test_a_dead_holders_lease_runs_out_and_is_taken_over() -> None:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    a, b = (ReaperLease(_settings(), queue, ttl_seconds=0.3) for _ in range(2))
    assert a.held() and not b.held()
    time.sleep(0.5)  # a stops renewing, as a killed worker would
    assert b.held()
    assert not a.held()  # a comes back: the lease is b's now
    b.release()


def test_embedded_mode_always_holds(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="", environment="test")
    assert ReaperLease(settings, "drtrain", ttl_seconds=1).held()
    # Another broker than Redis: every reaper reaps, as before the lease.
    other = Settings(data_dir=tmp_path, broker_url="amqp://127.0.0.1:1//", environment="test")
    assert ReaperLease(other, "drtrain", ttl_seconds=1).held()


def test_of_several_workers_reaper_threads_only_one_reaps(monkeypatch, pg_url) -> None:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    rounds: dict[int, int] = {}

    def count(settings, *_args, **_kwargs):  # noqa: ANN001, ANN202
        rounds[id(settings)] = rounds.get(id(settings), 0) + 1

    monkeypatch.setattr(reaper, "reap_once", count)
    workers = [reaper._Reaper(_settings(database_url=pg_url, heartbeat_seconds=0.1), queue)
               for _ in range(3)]
    for w in workers:
        w.thread.start()
    time.sleep(2.0)
    for w in workers:
        w.stop.set()
    for w in workers:
        w.thread.join(5)
    assert len(rounds) == 1 and sum(rounds.values()) >= 3, rounds
    client = redis.Redis.from_url(BROKER)
    assert client.exists(LEASE_KEY.format(queue=queue)) == 0  # released on stop
    client.close()


def test_a_worker_whose_rounds_fail_hands_the_lease_to_one_that_can_reap(monkeypatch,
                                                                        pg_url) -> None:
    # a worker that cannot reach the database (its rounds raise) must not keep the lease
    # while a healthy worker waits for it
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings = {name: _settings(database_url=pg_url, heartbeat_seconds=0.1)
                for name in ("broken", "healthy")}
    rounds = {"broken": 0, "healthy": 0}

    def reap(s, *_args, **_kwargs):  # noqa: ANN001, ANN202
        name = next(n for n, own in settings.items() if own is s)
        rounds[name] += 1
        if name == "broken":
            raise OSError("connection refused")

    monkeypatch.setattr(reaper, "reap_once", reap)
    broken = reaper._Reaper(settings["broken"], queue)
    broken.thread.start()
    deadline = time.monotonic() + 5
    while rounds["broken"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # the broken worker holds the lease first
    healthy = reaper._Reaper(settings["healthy"], queue)
    healthy.thread.start()
    deadline = time.monotonic() + 10
    while rounds["healthy"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    for w in (broken, healthy):
        w.stop.set()
    for w in (broken, healthy):
        w.thread.join(5)
    assert rounds["broken"] >= 1 and rounds["healthy"] >= 3, rounds
