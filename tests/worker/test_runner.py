"""The job runner called as a plain function (no broker) on PostgreSQL and a local store."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import select, update

from dr_core.model_file import load_model
from drtrain.kit import cancel_signal
from drtrain.kit.db import session_scope
from drtrain.kit.models import Checkpoint, Job, JobStatus, MetricPoint
from tests.factories import digits_subset, get_job
from worker.data import split_validation
from worker.runner import run_job


def _run(job_id, settings, factory, store, worker="w1"):
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id=worker)


def _points(factory, job_id):
    with factory() as s:
        return s.execute(select(MetricPoint).where(MetricPoint.job_id == job_id)
                         .order_by(MetricPoint.seq)).scalars().all()


def _checkpoints(factory, job_id):
    with factory() as s:
        return s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                         .order_by(Checkpoint.created_at)).scalars().all()


def _final_model(factory, store, job_id, tmp_path: Path):
    final = [c for c in _checkpoints(factory, job_id) if c.kind == "final"]
    assert len(final) == 1
    path = tmp_path / f"{job_id}.safetensors"
    store.get_to_file(final[0].object_key, path)
    return load_model(path), final[0]


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tiny_job_succeeds_with_metrics_checkpoints_and_a_loadable_model(
        settings, factory, store, make_job, tmp_path):
    job_id = make_job()
    _run(job_id, settings, factory, store)

    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded, job.status_reason
    assert job.progress == 1.0 and job.finished_at is not None and job.lease_expires_at is None
    assert job.phase == "finetune" and job.epoch == 2
    res = job.result
    assert 0.0 <= res["val_accuracy"] <= 1.0 and res["train_loss"] > 0
    assert res["epochs"] == {"pretrain": 4, "finetune": 2}  # 2 layers x 2 epochs, then 2
    assert res["wall_seconds"] == res["metrics"]["wall_seconds"] > 0
    assert res["attempt_seconds"] > res["wall_seconds"] and res["resumed_from"] is None

    points = _points(factory, job_id)
    assert [p.seq for p in points] == list(range(1, len(points) + 1))
    keys = {(p.phase, p.layer, p.epoch) for p in points}
    assert keys == {("pretrain", 0, 1), ("pretrain", 0, 2), ("pretrain", 1, 1),
                    ("pretrain", 1, 2), ("finetune", None, 1), ("finetune", None, 2)}
    names = {p.name for p in points}
    assert {"recon_error", "dr", "train_loss", "val_accuracy", "grad_norm.layer0",
            "grad_norm.head"} <= names

    cks = _checkpoints(factory, job_id)
    # Retention: once the job has ended only its final model is kept (tests/worker/
    # test_retention.py follows the layer and epoch checkpoints while it runs).
    assert [c.kind for c in cks] == ["final"]
    for c in cks:
        assert store.exists(c.object_key) and store.size(c.object_key) == c.size_bytes

    (model, meta), final = _final_model(factory, store, job_id, tmp_path)
    assert res["model_sha256"] == final.sha256
    assert meta["format"] == "drtrain-mlp" and meta["hidden_layers"] == [16, 8]
    assert meta["classes"] == [str(i) for i in range(10)]
    # The stored model is the trained one: on the job's own validation rows it scores exactly
    # the validation accuracy the job reported.
    X, y = digits_subset()
    _, val_idx = split_validation(y, 0.2, 7)
    with torch.no_grad():
        pred = model(torch.from_numpy(X[val_idx])).argmax(1).numpy()
    assert abs(float((pred == y[val_idx]).mean()) - res["val_accuracy"]) < 1e-6


def test_running_twice_is_a_no_op(settings, factory, store, make_job):
    job_id = make_job()
    _run(job_id, settings, factory, store)
    n_points = len(_points(factory, job_id))
    _run(job_id, settings, factory, store, worker="w2")  # a duplicate message
    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded and job.attempt == 1 and job.worker_id == "w1"
    assert len(_points(factory, job_id)) == n_points


def test_an_attempt_removes_the_scratch_a_killed_attempt_left(settings, factory, store,
                                                            make_job):
    job_id = make_job()
    work = settings.data_dir / "work"
    # a killed training process never ran its folder's cleanup: its dataset copy is there
    left = work / f"job-{job_id}-x1y2z3"
    left.mkdir(parents=True)
    (left / "dataset.csv").write_text("a,label\n1,x\n")
    other = work / "job-someotherjob-abc"  # another job's: not this attempt's to remove
    other.mkdir()
    _run(job_id, settings, factory, store)
    assert get_job(factory, job_id).status == JobStatus.succeeded
    assert not left.exists() and other.exists()
    assert not list(work.glob(f"job-{job_id}-*"))  # nor does the attempt leave its own


def _run_in_thread(job_id, settings, factory, store, worker="w1") -> threading.Thread:
    t = threading.Thread(target=_run, args=(job_id, settings, factory, store, worker))
    t.start()
    return t


def _wait_for(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


LONG = {"pretrain": {"epochs": 400, "batch_size": 32}, "finetune": {"epochs": 2}}


def test_cancel_mid_run_stops_within_a_batch(settings, factory, store, make_job):
    job_id = make_job(**LONG)
    t = _run_in_thread(job_id, settings, factory, store)
    _wait_for(lambda: get_job(factory, job_id).epoch is not None)
    with session_scope(factory) as s:  # what POST /cancel does to a running job
        s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running)
                  .values(status=JobStatus.cancelling, cancel_requested=True))
    asked = time.monotonic()
    t.join(60)
    assert not t.is_alive()
    assert time.monotonic() - asked < 10
    job = get_job(factory, job_id)
    assert job.status == JobStatus.cancelled and job.status_reason == "cancelled by user"
    assert job.progress < 0.5 and job.finished_at is not None
    assert not any(c.kind == "final" for c in _checkpoints(factory, job_id))


def test_max_runtime_fails_the_job(settings, factory, store, make_job):
    job_id = make_job(max_runtime_seconds=1, **LONG)
    _run(job_id, settings, factory, store)
    job = get_job(factory, job_id)
    assert job.status == JobStatus.failed
    assert job.status_reason == "max_runtime_seconds exceeded"


def test_bad_inputs_fail_with_a_reason(settings, factory, store, make_job):
    job_id = make_job(device="cuda:7")
    _run(job_id, settings, factory, store)
    job = get_job(factory, job_id)
    assert job.status == JobStatus.failed and "cuda:7" in job.status_reason

    job_id = make_job(test_dataset_id="0123456789abcdef0123456789abcdef")
    _run(job_id, settings, factory, store)
    job = get_job(factory, job_id)
    assert job.status == JobStatus.failed and "no longer exists" in job.status_reason


def test_unexpected_errors_fail_with_class_and_message(settings, factory, store, make_job,
                                                       monkeypatch):
    import worker.runner as runner_mod

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner_mod, "build_pipeline_config", boom)
    job_id = make_job()
    _run(job_id, settings, factory, store)
    job = get_job(factory, job_id)
    assert job.status == JobStatus.failed and job.status_reason == "RuntimeError: disk on fire"


@pytest.mark.parametrize("broker_url", ["", "redis://127.0.0.1:6379/15"])
def test_cancel_reaches_training_without_waiting_for_the_heartbeat(settings, factory, store,
                                                                    make_job, broker_url):
    """A heartbeat that would not look again for an hour: only the direct signal (a flag file
    embedded, a Redis channel in production) can stop the job before it runs to the end."""
    settings = settings.model_copy(update={"heartbeat_seconds": 3600.0, "broker_url": broker_url})
    job_id = make_job(**LONG)
    t = _run_in_thread(job_id, settings, factory, store)
    _wait_for(lambda: get_job(factory, job_id).epoch is not None)
    with session_scope(factory) as s:  # what POST /cancel commits, then signals
        s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running)
                  .values(status=JobStatus.cancelling, cancel_requested=True))
    cancel_signal.send(settings, job_id)
    t.join(60)
    assert not t.is_alive()
    job = get_job(factory, job_id)
    assert job.status == JobStatus.cancelled and job.status_reason == "cancelled by user"
    assert job.progress < 0.5
    assert not (settings.broker_folder / "cancel" / job_id).exists()  # the flag is cleared


def test_checkpoints_and_the_model_are_written_once_straight_into_the_store(
        settings, factory, store, make_job, monkeypatch):
    """No staging copy in the work folder (written, synced, hashed, then copied, synced and
    hashed again by the store): each state and the model file go into the store once, as
    the bytes the store hashes."""
    import dr_core.checkpoint

    def no_local_copy(*_args, **_kwargs):
        raise AssertionError("a checkpoint or the model was written to a local file first")

    monkeypatch.setattr(dr_core.checkpoint, "write_atomic", no_local_copy)
    monkeypatch.setattr("dr_core.model_file.write_atomic", no_local_copy)
    written = []
    put_stream = store.put_stream
    monkeypatch.setattr(store, "put_stream",
                        lambda key, chunks, **kw: written.append(key) or put_stream(key, chunks, **kw))
    job_id = make_job()
    _run(job_id, settings, factory, store)

    job = get_job(factory, job_id)
    assert job.status == JobStatus.succeeded, job.status_reason
    # 2 pretraining epochs (each layer's second, its last, leaves its state to the layer's
    # end) + 2 layer ends + 2 fine-tuning epochs at checkpoint_every_epochs=1, then the model:
    # each written once.
    assert len(written) == len(set(written)) == 7
    final = [c for c in _checkpoints(factory, job_id) if c.kind == "final"][0]
    assert written[-1] == final.object_key and job.result["model_sha256"] == final.sha256


def test_a_metric_point_is_stamped_when_its_epoch_ended_not_when_it_was_written(
        settings, factory, store, make_job):
    # a layer's epochs gathered into one write, at its end (which carries the layer's state)
    settings = settings.model_copy(update={"record_every_seconds": 60.0,
                                           "checkpoint_every_epochs": 1000,
                                           "checkpoint_every_seconds": 1e6})
    job_id = make_job(pretrain={"epochs": 4, "batch_size": 32}, finetune={"epochs": 4})
    _run(job_id, settings, factory, store)
    assert get_job(factory, job_id).status == JobStatus.succeeded
    ends: dict[tuple, set] = {}
    for p in _points(factory, job_id):
        ends.setdefault((p.phase, p.layer, p.epoch), set()).add(p.at)
    assert all(len(times) == 1 for times in ends.values())  # one epoch, one time
    order = sorted(ends, key=lambda k: (k[0] != "pretrain", k[1] or 0, k[2]))
    times = [next(iter(ends[k])) for k in order]
    assert times == sorted(times) and len(set(times)) == len(times), times
