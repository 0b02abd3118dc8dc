"""Workers die for real (kill -9 of the whole process group, mid-epoch) and the job still ends
succeeded exactly once: resumed from its checkpoints by a later attempt, with a metric series
that has no gap and no duplicate and a final model that downloads and loads."""
from __future__ import annotations

import pytest

from tests.faults.stack import (
    LONG_SPEC,
    assert_final_model,
    assert_metric_series,
    live_group_members,
    wait_for,
)

pytestmark = [pytest.mark.e2e]


def test_kill_9_worker_mid_epoch_then_restart_resumes_as_attempt_2(stack, tmp_path):
    stack.start_worker("w1")
    job = stack.submit(LONG_SPEC)
    stack.wait_first_metric(job["id"])
    first_points = stack.metrics(job["id"])
    stack.kill_worker("w1")  # no goodbye: the lease just stops being renewed
    wait_for("w1's training process to be gone",
             lambda: not live_group_members([stack.workers["w1"].pid]), 10)
    killed = stack.get_job(job["id"])
    assert killed["status"] == "running" and killed["attempt"] == 1

    stack.start_worker("w2")  # its reaper sees the lease expire, requeues, re-publishes
    job = stack.wait_final(job["id"])
    assert job["status"] == "succeeded", job["status_reason"]
    assert job["attempt"] == 2
    assert job["result"]["resumed_from"] is not None  # not a restart from scratch

    points = stack.metrics(job["id"])
    assert_metric_series(points, job["spec"], complete=True)
    # What attempt 1 reported is kept as it was (same seqs), attempt 2 only appended.
    assert points[:len(first_points)] == first_points
    by_attempt = stack.metric_attempts(job["id"])
    assert set(by_attempt) == {1, 2}, by_attempt
    assert_final_model(stack, job, tmp_path)


def test_two_workers_kill_the_one_running_the_job_the_other_finishes(stack, tmp_path):
    stack.start_worker("a")
    stack.start_worker("b")
    job = stack.submit(LONG_SPEC)
    stack.wait_first_metric(job["id"])
    victim = stack.worker_running(job["id"])
    survivor = "b" if victim == "a" else "a"
    stack.kill_worker(victim)

    job = stack.wait_final(job["id"])
    assert job["status"] == "succeeded", job["status_reason"]
    assert job["attempt"] == 2 and job["result"]["resumed_from"] is not None
    assert stack.workers[survivor].poll() is None
    # The survivor's pool process held the finished job's last lease.
    assert stack.worker_running(job["id"]) == survivor
    assert_metric_series(stack.metrics(job["id"]), job["spec"], complete=True)
    assert_final_model(stack, job, tmp_path)


def test_corrupt_latest_checkpoint_resumes_from_the_previous_valid_one(stack, tmp_path):
    stack.start_worker("w1")
    job = stack.submit(LONG_SPEC)
    wait_for("two checkpoints", lambda: len(stack.checkpoint_rows(job["id"])) >= 2, 60)
    stack.kill_worker("w1")
    latest, previous = stack.checkpoint_rows(job["id"])[:2]
    # Garbage over the newest object while no worker is alive: the bytes no longer match the
    # sha256 recorded in its row.
    (stack.objects / latest.object_key).write_bytes(b"\x00garbage, not safetensors" * 64)

    stack.start_worker("w2")
    job = stack.wait_final(job["id"])
    assert job["status"] == "succeeded", job["status_reason"]
    assert job["attempt"] == 2
    assert job["result"]["resumed_from"] == previous.object_key != latest.object_key
    assert_metric_series(stack.metrics(job["id"]), job["spec"], complete=True)
    assert_final_model(stack, job, tmp_path)
