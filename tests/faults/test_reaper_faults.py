"""The reaper against real Redis and a real worker: a message that a worker has taken but not
yet acted on is never re-sent, and a message that is really gone is re-sent exactly once, not
again and again while the job waits its turn."""
from __future__ import annotations

import json
import time

import pytest

from drtrain.kit.broker_messages import job_id_of
from tests.faults.stack import QUEUE, SHORT_SPEC, TIMINGS, assert_final_model, wait_for
from tests.worker.test_broker_messages import take_like_a_worker

pytestmark = [pytest.mark.e2e]


def _messages(stack, job_id: str) -> int:  # noqa: ANN001
    return sum(job_id_of(json.loads(raw)) == job_id
               for raw in stack.redis.lrange(QUEUE, 0, -1))


def test_taken_messages_are_left_alone_and_lost_ones_resent_once(stack, tmp_path) -> None:  # noqa: ANN001
    taken = stack.submit(dict(SHORT_SPEC, seed=11))["id"]
    lost = stack.submit(dict(SHORT_SPEC, seed=12))["id"]
    wait_for("both messages", lambda: _messages(stack, taken) == _messages(stack, lost) == 1, 10)
    # One message is taken by a consumer that has not claimed its job yet (what a worker's
    # prefetch, or a worker between its take and its claim, looks like); the other vanishes.
    take_like_a_worker(stack.redis, QUEUE, taken)
    stack.redis.lrem(QUEUE, 0, next(raw for raw in stack.redis.lrange(QUEUE, 0, -1)
                                    if job_id_of(json.loads(raw)) == lost))
    assert stack.redis.llen(QUEUE) == 0

    worker = stack.start_worker("w1")
    done = stack.wait_final(lost, timeout=90)
    assert done["status"] == "succeeded" and done["attempt"] == 1, done["status_reason"]
    assert_final_model(stack, done, tmp_path)
    # Watch several re-publish thresholds more: the taken one is never sent again.
    threshold = float(TIMINGS["DRTRAIN_REQUEUE_QUEUED_AFTER_SECONDS"])
    deadline = time.monotonic() + 4 * threshold
    while time.monotonic() < deadline:
        assert _messages(stack, taken) == 0, "a taken message was re-sent"
        time.sleep(0.2)
    row = stack.job_row(taken)
    assert row.status == "queued" and row.published_at is None
    assert worker.poll() is None
    log = stack.logs(tail=200_000)
    # The lost one was re-sent once: the worker never met a duplicate of it.
    assert log.count(f"re-published ['{lost}']") == 1, log[-3000:]
    assert "not claimable" not in log, log[-3000:]
