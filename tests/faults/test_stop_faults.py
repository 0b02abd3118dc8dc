"""Jobs that must stop: cancelled through the HTTP API (cooperatively, within a batch), past
their max_runtime_seconds, and stuck in one enormous batch that ignores the cancel until the
grace period ends and the training process is killed."""
from __future__ import annotations

import os
import time
from datetime import datetime

import pytest

from tests.faults.stack import (
    LONG_SPEC,
    SHORT_SPEC,
    TIMINGS,
    assert_final_model,
    assert_metric_series,
    assert_no_model,
    live_group_members,
    wait_for,
)

pytestmark = [pytest.mark.e2e]

HEARTBEAT = float(TIMINGS["DRTRAIN_HEARTBEAT_SECONDS"])
GRACE = float(TIMINGS["DRTRAIN_CANCEL_GRACE_SECONDS"])

# One CD-50 step over every digit at once through 8192 hidden units: a single batch that outlasts
# the cancel grace even on a fast CPU, with no batch boundary at which the cooperative cancel
# could take effect.
STUCK_SPEC = {
    "dataset_id": "builtin:digits",
    "validation_fraction": 0.0,
    "model": {"hidden_layers": [8192]},
    "pretrain": {"epochs": 1, "batch_size": 8192, "cd_k": 50, "dr": None},
    "finetune": None,
    "device": "cpu",
}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_cancel_running_job_over_http_stops_it_within_a_batch(stack):
    stack.start_worker("w1")
    job = stack.submit(LONG_SPEC)
    stack.wait_first_metric(job["id"])
    asked = time.monotonic()
    with stack.client() as c:
        r = c.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelling" and r.json()["cancel_requested"] is True

    done = stack.wait_final(job["id"], timeout=20)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled", done
    assert done["status_reason"] == "cancelled by user"  # cooperative, no kill needed
    assert done["attempt"] == 1
    # Noticed at the next heartbeat, stopped at the next batch (a short one here).
    assert took < HEARTBEAT + 4, took

    points = stack.metrics(job["id"])
    epochs = assert_metric_series(points, done["spec"], complete=False)
    assert 1 <= len(epochs) < len(LONG_SPEC["model"]["hidden_layers"]) * 6 + 4
    assert max(_at(p["at"]) for p in points) <= _at(done["finished_at"])
    time.sleep(2 * HEARTBEAT + 1)  # a stopped job writes nothing more
    assert stack.metrics(job["id"]) == points
    assert stack.get_job(job["id"])["status"] == "cancelled"
    assert_no_model(stack, job["id"])
    assert stack.workers["w1"].poll() is None


def test_job_past_max_runtime_fails_with_a_reason_naming_it(stack):
    stack.start_worker("w1")
    job = stack.submit(dict(LONG_SPEC, max_runtime_seconds=2))

    done = stack.wait_final(job["id"], timeout=30)
    assert done["status"] == "failed", done
    assert "max_runtime_seconds" in done["status_reason"], done["status_reason"]
    assert done["attempt"] == 1
    ran = (_at(done["finished_at"]) - _at(done["started_at"])).total_seconds()
    assert 2 <= ran < 2 + HEARTBEAT + 4, ran  # the whole job needs several times longer
    points = stack.metrics(job["id"])
    assert_metric_series(points, done["spec"], complete=False)
    assert all(_at(p["at"]) <= _at(done["finished_at"]) for p in points)
    assert_no_model(stack, job["id"])


def test_training_stuck_in_a_batch_is_killed_after_the_grace_period(stack, tmp_path):
    worker = stack.start_worker("w1")
    job = stack.submit(STUCK_SPEC)
    stack.wait_job(job["id"], lambda j: j["status"] == "running", "the job to start", 60)
    trainer = int(stack.job_row(job["id"]).worker_id.rsplit(":", 1)[1])
    time.sleep(1.0)  # into the first (and only) batch
    asked = time.monotonic()
    with stack.client() as c:
        assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202

    done = stack.wait_final(job["id"], timeout=30)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled", done
    assert "killed after the grace period" in done["status_reason"], done["status_reason"]
    assert done["attempt"] == 1
    # Heartbeat notices the cancel, grace runs out, the next heartbeat kills: seconds, not
    # the tens of seconds the batch needs.
    assert GRACE <= took < HEARTBEAT + GRACE + 2 * HEARTBEAT + 4, took
    wait_for("the training process to be gone",
             lambda: trainer not in live_group_members([worker.pid]), 10)
    assert stack.metrics(job["id"]) == []  # it never finished an epoch
    assert_no_model(stack, job["id"])

    # The worker itself survives (Celery forks a fresh training process) and runs the next
    # job; the killed job's redelivered message cannot revive it.
    assert worker.poll() is None
    nxt = stack.wait_final(stack.submit(SHORT_SPEC)["id"], timeout=60)
    assert nxt["status"] == "succeeded", nxt
    assert_metric_series(stack.metrics(nxt["id"]), nxt["spec"], complete=True)
    assert_final_model(stack, nxt, tmp_path)
    again = stack.get_job(job["id"])
    assert (again["status"], again["finished_at"]) == ("cancelled", done["finished_at"])
    assert os.getpgid(int(stack.job_row(nxt["id"]).worker_id.rsplit(":", 1)[1])) == worker.pid
