"""The background recorder (worker/uploader.py): events recorded off the training thread, in
order, bounded, errors raised in training, nothing left behind; and the checkpoint cadence."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, update

from dr_core.events import Event
from drtrain.kit.db import session_scope
from drtrain.kit.models import Checkpoint, Job, JobStatus, MetricPoint
from tests.factories import get_job
from tests.worker.test_resume import SPEC, Killed, _run
from worker import job_callback
from worker.uploader import BackgroundRecorder, CheckpointCadence


class Inner:
    """A recorder that notes (kind, epoch, has state, thread), optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None,
                 error: BaseException | None = None, gate: threading.Event | None = None):
        self.seen: list[tuple[str, int, bool, str]] = []
        self.batches: list[int] = []  # events per call of record
        self.delay, self.fail_at, self.error, self.gate = delay, fail_at, error, gate

    def _record(self, kind, event):
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.delay)
        if self.fail_at is not None and event.epoch == self.fail_at:
            raise self.error or OSError("store unreachable")
        self.seen.append((kind, event.epoch, event.state is not None,
                          threading.current_thread().name))

    def record(self, items):
        self.batches.append(len(items))
        for kind, event in items:
            self._record(kind, event)

    def should_stop(self):
        return False


def _event(epoch: int) -> Event:
    return Event("finetune", None, epoch, {"loss": 1.0}, epoch / 10, {"epoch": epoch})


def test_events_are_recorded_in_order_on_another_thread_without_waiting():
    gate = threading.Event()
    inner = Inner(gate=gate)
    with BackgroundRecorder(inner, max_pending=8) as rec:
        for epoch in range(1, 6):
            rec.on_epoch_end(_event(epoch))
        rec.on_layer_end(_event(6))
        # Every event was handed over while the recorder was still blocked on the first one:
        # training did not wait for them.
        assert inner.seen == []
        gate.set()
    assert [(k, e) for k, e, _, _ in inner.seen] == [("epoch", e) for e in range(1, 6)] + [("layer", 6)]
    assert {name for *_, name in inner.seen} == {"checkpoint-uploader"}  # ... and all recorded


def test_a_full_queue_makes_training_wait():
    """While the recorder is stuck on an event with a state, training hands over at most
    max_pending more, then waits for room."""
    gate = threading.Event()
    inner = Inner(gate=gate)
    rec = BackgroundRecorder(inner, max_pending=2)
    handed: list[int] = []

    def train():
        for epoch in range(1, 11):
            rec.on_epoch_end(_event(epoch))
            handed.append(epoch)

    training = threading.Thread(target=train)
    training.start()
    training.join(0.3)
    assert training.is_alive()  # waiting for room
    assert 2 <= len(handed) <= 1 + 2
    gate.set()
    training.join(5)
    assert not training.is_alive()
    rec.__exit__(None, None, None)
    assert [e for _, e, _, _ in inner.seen] == list(range(1, 11))


def test_an_error_in_the_thread_is_raised_in_training_and_stops_recording():
    inner = Inner(fail_at=2)
    with pytest.raises(OSError, match="unreachable"):  # noqa: PT012
        with BackgroundRecorder(inner) as rec:
            for epoch in range(1, 5):
                rec.on_epoch_end(_event(epoch))
                time.sleep(0.05)
                rec.should_stop()  # what dr_core calls after every batch
    assert [e for _, e, _, _ in inner.seen] == [1]


def test_an_error_left_at_the_end_is_raised_when_the_block_ends():
    inner = Inner(fail_at=3)
    with pytest.raises(OSError), BackgroundRecorder(inner) as rec:
        for epoch in range(1, 4):
            rec.on_epoch_end(_event(epoch))
    assert [e for _, e, _, _ in inner.seen] == [1, 2]


def test_the_training_error_wins_and_queued_events_are_still_recorded():
    inner = Inner(delay=0.02)
    with pytest.raises(ValueError, match="diverged"), BackgroundRecorder(inner) as rec:
        for epoch in range(1, 4):
            rec.on_epoch_end(_event(epoch))
        raise ValueError("diverged")
    assert [e for _, e, _, _ in inner.seen] == [1, 2, 3]  # what resume needs is kept


def test_checkpoint_cadence_by_epochs_and_by_seconds():
    every3 = CheckpointCadence(every_epochs=3)
    assert [every3.due("epoch", _event(e)) for e in range(1, 8)] == [False, False, True] * 2 + [False]
    # a layer end always, and it resets the count
    assert every3.due("layer", _event(8)) and not every3.due("epoch", _event(9))
    now = [0.0]
    timed = CheckpointCadence(every_epochs=100, every_seconds=10, clock=lambda: now[0])
    due = []
    for epoch in range(1, 6):
        now[0] += 4
        due.append(timed.due("epoch", _event(epoch)))
    assert due == [False, False, True, False, False]  # at 12 s, then not before 22 s
    with pytest.raises(ValueError):
        CheckpointCadence(every_epochs=0)


def test_a_pretraining_layers_last_epoch_leaves_its_state_to_the_layer_end():
    cadence = CheckpointCadence(every_epochs=1, layer_epochs=[3, 2])

    def pretrain(layer: int, epoch: int) -> Event:
        return Event("pretrain", layer, epoch, {}, 0.0, {"epoch": epoch})

    due = [cadence.due("epoch", pretrain(0, e)) for e in (1, 2, 3)]
    due += [cadence.due("layer", pretrain(0, 3))]
    due += [cadence.due("epoch", pretrain(1, e)) for e in (1, 2)] + [cadence.due("layer", pretrain(1, 2))]
    due += [cadence.due("epoch", _event(e)) for e in (1, 2)]  # fine-tuning's last epoch keeps it
    assert due == [True, True, False, True, True, False, True, True, True]


def test_skipped_epochs_keep_their_metrics_but_not_their_state():
    inner = Inner()
    with BackgroundRecorder(inner, cadence=CheckpointCadence(every_epochs=2)) as rec:
        for epoch in range(1, 5):
            rec.on_epoch_end(_event(epoch))
    assert [(e, has_state) for _, e, has_state, _ in inner.seen] == \
        [(1, False), (2, True), (3, False), (4, True)]


# ------------------------------------------------------------------- through the runner
def test_runner_stores_every_nth_epoch_and_every_metric(settings, factory, store, make_job,
                                                        monkeypatch):
    settings.checkpoint_every_epochs = 2
    seen: list[tuple[int, bool]] = []
    original = job_callback.JobCallback.record

    def record(self, items):
        seen.extend((threading.get_ident(), event.state is not None) for _, event in items)
        original(self, items)

    monkeypatch.setattr(job_callback.JobCallback, "record", record)
    job_id = make_job(**SPEC)
    _run(job_id, settings, factory, store, "w1")
    assert get_job(factory, job_id).status == JobStatus.succeeded
    assert threading.get_ident() not in {t for t, _ in seen}  # recorded off the training thread
    with factory() as s:
        epochs = {(p.phase, p.layer, p.epoch) for p in s.execute(
            select(MetricPoint).where(MetricPoint.job_id == job_id)).scalars()}
        kinds = s.execute(select(Checkpoint.kind, Checkpoint.phase, Checkpoint.epoch)
                          .where(Checkpoint.job_id == job_id)).all()
    assert len(epochs) == 2 * 2 + 3  # every epoch's metrics: 2 layers x 2 epochs, 3 fine-tuning
    assert [k for k, *_ in kinds] == ["final"]  # ended: only the model is kept
    # 7 epochs and 2 layer ends recorded; states: both layer ends (each layer's epoch 2, its
    # last, leaves its state to the layer's end), then fine-tuning epoch 2
    assert len(seen) == 2 * 2 + 2 + 3
    assert sum(has_state for _, has_state in seen) == 3


def test_a_crash_in_the_uploader_crashes_the_job_like_one_in_training(
        settings, factory, store, make_job, monkeypatch):
    original = job_callback.JobCallback.record

    def record(self, items):
        original(self, items)
        raise Killed()

    monkeypatch.setattr(job_callback.JobCallback, "record", record)
    job_id = make_job(**SPEC)
    with pytest.raises(Killed):
        _run(job_id, settings, factory, store, "doomed")
    assert get_job(factory, job_id).status == JobStatus.running  # the reaper's to resume
    with session_scope(factory) as s:  # leave no running job for other tests' reapers
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.failed))


# ------------------------------------------------------------------------------ gathering
def test_events_arriving_within_the_window_are_recorded_together_and_the_end_flushes_at_once():
    inner = Inner()
    # A window far longer than the test: leaving the block must not wait for it.
    with BackgroundRecorder(inner, max_pending=8, flush_seconds=600,
                            cadence=CheckpointCadence(every_epochs=100)) as rec:
        for epoch in range(1, 6):
            rec.on_epoch_end(_event(epoch))  # metrics only
        rec.on_layer_end(_event(6))  # ... and a state
    assert inner.batches == [6]
    assert [e for _, e, _, _ in inner.seen] == [1, 2, 3, 4, 5, 6]


def test_a_gathered_batch_ends_with_its_first_state():
    inner = Inner()
    with BackgroundRecorder(inner, max_pending=8, flush_seconds=600,
                            cadence=CheckpointCadence(every_epochs=2)) as rec:
        for epoch in range(1, 6):
            rec.on_epoch_end(_event(epoch))  # states on epochs 2 and 4
    assert inner.batches == [2, 2, 1]
    assert [(e, has_state) for _, e, has_state, _ in inner.seen] == \
        [(1, False), (2, True), (3, False), (4, True), (5, False)]


def test_the_runner_writes_a_fast_jobs_epochs_in_fewer_transactions_and_loses_none(
        settings, factory, store, make_job, monkeypatch):
    settings.record_every_seconds = 600
    settings.checkpoint_every_epochs = 100  # states at the layer ends only
    calls: list[int] = []
    original = job_callback.JobCallback.record

    def record(self, items):
        calls.append(len(items))
        original(self, items)

    monkeypatch.setattr(job_callback.JobCallback, "record", record)
    job_id = make_job(**SPEC)
    _run(job_id, settings, factory, store, "w1")
    assert get_job(factory, job_id).status == JobStatus.succeeded
    with factory() as s:
        epochs = {(p.phase, p.layer, p.epoch) for p in s.execute(
            select(MetricPoint).where(MetricPoint.job_id == job_id)).scalars()}
    assert len(epochs) == 2 * 2 + 3  # every epoch's metrics
    assert sum(calls) == 2 * 2 + 2 + 3  # every event, epochs and layer ends
    assert len(calls) < sum(calls)  # ... in fewer transactions than events
