"""The broker and the API die for real: Redis is emptied (FLUSHDB) with jobs queued, and the API
process is killed and started again during a job. SQL is the truth, so nothing is lost."""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from drtrain.kit.models import Job
from drtrain_client import Client
from drtrain_client.errors import ClientError
from tests.faults.stack import (
    LONG_SPEC,
    QUEUE,
    SHORT_SPEC,
    assert_final_model,
    assert_metric_series,
    wait_for,
)

pytestmark = [pytest.mark.e2e]


def test_flushed_broker_with_jobs_queued_republishes_them_and_all_succeed(stack, tmp_path):
    stack.start_worker("w1")
    running = stack.submit(LONG_SPEC)
    # One worker process, prefetch 1: while the first job runs, the others wait in Redis.
    stack.wait_job(running["id"], lambda j: j["status"] == "running", "the first job to run")
    queued = [stack.submit(dict(SHORT_SPEC, seed=s)) for s in (1, 2)]
    # (A duplicate of the first may be there too: claim() makes it harmless.)
    wait_for("both messages in Redis", lambda: stack.redis.llen(QUEUE) >= 2, 10)
    assert [stack.get_job(j["id"])["status"] for j in queued] == ["queued", "queued"]

    stack.redis.flushdb()  # Redis restarted empty: every message and binding is gone
    assert stack.redis.llen(QUEUE) == 0

    for job in [running, *queued]:
        done = stack.wait_final(job["id"], timeout=90)
        assert done["status"] == "succeeded", done["status_reason"]
        assert done["attempt"] == 1  # re-published, not retried: the jobs never failed
        assert_metric_series(stack.metrics(done["id"]), done["spec"], complete=True)
        assert_final_model(stack, done, tmp_path)
    # Only a reaper marks a job as published; the API's first publish does not.
    for job in queued:
        assert stack.job_row(job["id"]).published_at is not None


def test_api_killed_and_restarted_during_a_job_loses_nothing(stack, tmp_path):
    stack.start_worker("w1")
    key = "restart-during-a-job"
    job = stack.submit(LONG_SPEC, **{"Idempotency-Key": key})
    client = Client(stack.base, stack.key, timeout=10)
    frames: list[tuple[str, dict, str | None]] = []
    last_id: str | None = None
    with pytest.raises(ClientError):
        # Follow the job live as a client would; the first metric point triggers the kill,
        # and the open stream then breaks.
        for event, data, last_id in client.events(job["id"]):
            frames.append((event, data, last_id))
            if event == "metric" and stack.api.poll() is None:
                stack.kill_api()
    assert last_id is not None and any(e == "metric" for e, _, _ in frames)
    with pytest.raises(httpx.ConnectError):
        httpx.get(stack.base + "/readyz", timeout=2)

    # Training goes on without the API: more epochs reach SQL while it is down.
    seen = stack.metric_count(job["id"])
    wait_for("progress while the API is down", lambda: stack.metric_count(job["id"]) > seen, 30)

    stack.start_api()
    # The submission is still known: replaying it with its key returns the same job.
    replay = stack.submit(LONG_SPEC, expect=200, **{"Idempotency-Key": key})
    assert replay["id"] == job["id"]
    # The client resumes its stream where it broke off and sees the rest, once.
    for event, data, seen_id in client.events(job["id"], last_event_id=last_id):
        frames.append((event, data, seen_id))
    client.close()
    statuses = [d for e, d, _ in frames if e == "status"]
    assert statuses[-1]["status"] == "succeeded", statuses[-1]
    streamed = [d for e, d, _ in frames if e == "metric"]

    done = stack.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempt"] == 1, done
    points = stack.metrics(job["id"])
    assert_metric_series(points, done["spec"], complete=True)
    assert streamed == points  # every point exactly once, across the restart
    with stack.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)
                            .where(Job.idempotency_key == key)).scalar_one() == 1
    assert_final_model(stack, done, tmp_path)
