"""Which jobs have a message in the broker: waiting in the queue, or taken by a worker and not
yet acknowledged (kombu's ``unacked`` hash), on real Redis and on the filesystem transport."""
from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import redis

from drtrain.kit.broker import publish_run_job, publish_run_jobs
from drtrain.kit.broker_messages import (
    UNACKED_KEY,
    job_id_of,
    job_ids_in_broker,
    missing_from_broker,
)
from drtrain.kit.settings import Settings

BROKER = "redis://127.0.0.1:6379/12"  # tests/worker's Redis database


def take_like_a_worker(client: redis.Redis, queue: str, job_id: str) -> None:
    """What kombu does when a worker takes a message: off the list, into ``unacked``."""
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        if job_id_of(message) == job_id:
            client.lrem(queue, 1, raw)
            tag = uuid.uuid4().hex
            client.zadd(UNACKED_KEY + "_index", {tag: time.time()})
            client.hset(UNACKED_KEY, tag, json.dumps([message, queue, queue]))
            return
    raise AssertionError(f"no message for {job_id} in {queue}")


def test_redis_waiting_and_taken_messages_are_both_found() -> None:
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(broker_url=BROKER, environment="test")
    client = redis.Redis.from_url(BROKER)
    waiting, taken, other = (uuid.uuid4().hex for _ in range(3))
    try:
        for job_id in (waiting, taken):
            publish_run_job(settings, job_id, queue=queue)
        assert job_ids_in_broker(settings, queue=queue) == {waiting, taken}
        take_like_a_worker(client, queue, taken)
        assert client.llen(queue) == 1
        # A queue-length test would call the taken one lost; it is not.
        assert job_ids_in_broker(settings, queue=queue) == {waiting, taken}
        assert other not in job_ids_in_broker(settings, queue=queue)  # type: ignore[operator]
    finally:
        _forget(client, queue)


def _forget(client: redis.Redis, queue: str) -> None:
    """Remove a test's queue, and its messages a worker had taken, then close the client."""
    client.delete(queue)
    for tag, raw in client.hgetall(UNACKED_KEY).items():
        if json.loads(raw)[2] == queue:
            client.hdel(UNACKED_KEY, tag)
    client.close()


def test_filesystem_transport_messages_are_found(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="", environment="test")
    job_id = uuid.uuid4().hex
    assert job_ids_in_broker(settings, queue="drtrain") == set()
    publish_run_job(settings, job_id)
    assert job_ids_in_broker(settings, queue="drtrain") == {job_id}
    assert job_ids_in_broker(settings, queue="elsewhere") == set()


def test_an_unreachable_broker_is_unknown_not_empty() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", environment="test")
    assert job_ids_in_broker(settings, queue="drtrain") is None
    assert missing_from_broker(settings, queue="drtrain", wanted=["a" * 32]) is None


class _CountingSocket(socket.socket):
    """A socket that counts the bytes it receives (what Redis sends back to this client)."""

    received = 0

    def recv_into(self, buffer, nbytes=0, flags=0):  # noqa: ANN001, ANN201
        n = super().recv_into(buffer, nbytes, flags)
        _CountingSocket.received += n
        return n

    def recv(self, bufsize, flags=0):  # noqa: ANN001, ANN201
        data = super().recv(bufsize, flags)
        _CountingSocket.received += len(data)
        return data


def test_asking_about_a_few_jobs_reads_only_their_ids_not_the_queue(monkeypatch) -> None:
    """A reaper asking whether a few stale jobs still have a message gets back the ids of
    those that have none, not the whole queue and unacked hash."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(broker_url=BROKER, environment="test")
    client = redis.Redis.from_url(BROKER)
    backlog = [uuid.uuid4().hex for _ in range(300)]
    absent = uuid.uuid4().hex
    try:
        publish_run_jobs(settings, backlog, queue=queue)
        take_like_a_worker(client, queue, backlog[0])
        queue_bytes = sum(len(m) for m in client.lrange(queue, 0, -1))
        monkeypatch.setattr(socket, "socket", _CountingSocket)
        _CountingSocket.received = 0
        wanted = [backlog[0], backlog[-1], absent]
        assert missing_from_broker(settings, queue=queue, wanted=wanted) == {absent}
        assert _CountingSocket.received < 1000 < queue_bytes / 100
        assert job_ids_in_broker(settings, queue=queue) == set(backlog)
    finally:
        _forget(client, queue)


def test_filesystem_transport_missing_jobs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="", environment="test")
    here, gone = uuid.uuid4().hex, uuid.uuid4().hex
    publish_run_job(settings, here)
    assert missing_from_broker(settings, queue="drtrain", wanted=[here, gone]) == {gone}
    assert missing_from_broker(settings, queue="drtrain", wanted=[]) == set()
