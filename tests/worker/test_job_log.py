"""Each attempt's log lines (worker/job_log.py) and each epoch's system metrics
(worker/system_metrics.py), as the runner records them."""
from __future__ import annotations

import logging

from sqlalchemy import select

from dr_core.events import SYSTEM_METRICS, Event, RecordingCallback
from drtrain.kit.db import session_scope
from drtrain.kit.models import JobLogLine, JobStatus, MetricPoint
from tests.factories import get_job
from worker.job_log import MAX_LINE_CHARS, attempt_log
from worker.runner import run_job
from worker.system_metrics import CPU, GPU_ALLOCATED, RSS, SystemSampler, WithSystemMetrics


def _lines(factory, job_id, attempt=1) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(JobLogLine.text).where(
            JobLogLine.job_id == job_id, JobLogLine.attempt == attempt)
            .order_by(JobLogLine.line)))


def test_a_succeeded_job_keeps_its_phases_and_epochs(settings, factory, store, make_job):
    job_id = make_job()
    # a lease keeper that beats all the time: none of its beats may log after the end line
    busy = settings.model_copy(update={"heartbeat_seconds": 0.002})
    run_job(job_id, settings=busy, sessionmaker=factory, store=store, worker_id="w1")
    assert get_job(factory, job_id).status == JobStatus.succeeded
    lines = _lines(factory, job_id)
    text = "\n".join(lines)
    assert f"job {job_id} attempt 1 claimed by w1" in text
    assert "pretrain layer 1 epoch 2: recon_error=" in text
    assert "finetune epoch 2: train_loss=" in text
    assert lines[-1].endswith(f"job {job_id} attempt 1 ended: succeeded")


def test_a_crashed_job_keeps_its_traceback(settings, factory, store, make_job, monkeypatch):
    import worker.runner as runner_mod

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner_mod, "build_pipeline_config", boom)
    job_id = make_job()
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id="w1")
    assert get_job(factory, job_id).status == JobStatus.failed
    lines = _lines(factory, job_id)
    crashed = next(i for i, line in enumerate(lines) if "crashed" in line)
    assert " ERROR worker.runner: " in lines[crashed]
    assert lines[crashed + 1] == "Traceback (most recent call last):"
    end = lines.index("RuntimeError: disk on fire", crashed)
    frames = lines[crashed + 2:end]
    assert frames and all(line.startswith("  ") for line in frames)
    assert any(line.endswith(", in boom") for line in frames)


def test_an_attempts_lines_stay_within_their_bound(factory, make_job):
    job_id = make_job()
    bound = 4096
    log = logging.getLogger("worker.test_bound")
    with attempt_log(factory, job_id, 1, max_bytes=bound, flush_seconds=0.05):
        log.warning("x" * (3 * MAX_LINE_CHARS))  # one line, cut to MAX_LINE_CHARS
        for i in range(200):
            log.info("line %d", i)
        logging.getLogger("sqlalchemy.engine").warning("not ours")
    lines = _lines(factory, job_id)
    assert sum(len(line.encode()) + 1 for line in lines) <= bound
    assert len(lines[0]) == MAX_LINE_CHARS
    assert lines[1].endswith("worker.test_bound: line 0")
    assert lines[-1].startswith("[log truncated: this attempt passed 4096 bytes")
    assert not any("not ours" in line for line in lines)
    assert not any("line 199" in line for line in lines)


def test_a_later_attempt_log_numbers_on_after_what_is_stored(factory, make_job):
    job_id = make_job()
    log = logging.getLogger("worker.test_numbers")
    for word in ("first", "second"):
        with attempt_log(factory, job_id, 2, max_bytes=65536, flush_seconds=10):
            log.info(word)
    assert [line.rsplit(" ", 1)[1] for line in _lines(factory, job_id, attempt=2)] == \
        ["first", "second"]


def test_a_job_records_its_process_figures_every_epoch(settings, factory, store, make_job):
    job_id = make_job()
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id="w1")
    with factory() as s:
        points = s.execute(select(MetricPoint.phase, MetricPoint.layer, MetricPoint.epoch,
                                  MetricPoint.name, MetricPoint.value)
                           .where(MetricPoint.job_id == job_id)).all()
    epochs = {(p.phase, p.layer, p.epoch) for p in points}
    assert len(epochs) == 6  # 2 layers x 2 epochs, then 2 of fine-tuning
    for name in (CPU, RSS):
        got = {(p.phase, p.layer, p.epoch): p.value for p in points if p.name == name}
        assert set(got) == epochs, name
        assert all(v >= 0 for v in got.values())
    assert min(p.value for p in points if p.name == RSS) > 10 * 2**20  # torch alone is more
    assert not any(p.name == GPU_ALLOCATED for p in points)  # a CPU job has no GPU readings


def test_the_sampler_gives_cpu_use_since_its_last_sample():
    cpu, wall = iter([10.0, 10.5, 12.5]), iter([100.0, 101.0, 103.0])
    sampler = SystemSampler("cpu", cpu_clock=lambda: next(cpu), wall_clock=lambda: next(wall))
    assert sampler.sample()[CPU] == 50.0   # half a core over the first second
    assert sampler.sample()[CPU] == 100.0  # one core over the next two


def test_only_epoch_events_get_system_metrics():
    inner = RecordingCallback()
    measured = WithSystemMetrics(inner, SystemSampler("cpu"))
    measured.on_epoch_end(Event("finetune", None, 1, {"train_loss": 0.5}))
    measured.on_layer_end(Event("pretrain", 0, 2, {"recon_error": 0.1}))
    epoch, layer = inner.events
    assert set(epoch.metrics) >= {"train_loss", CPU, RSS}
    assert set(epoch.metrics) <= {"train_loss", *SYSTEM_METRICS}
    assert layer.metrics == {"recon_error": 0.1}


def test_lines_go_with_their_job(factory, make_job):
    from drtrain.kit.models import Job

    job_id = make_job()
    with attempt_log(factory, job_id, 1, max_bytes=65536, flush_seconds=10):
        logging.getLogger("worker.test_cascade").info("kept")
    assert _lines(factory, job_id)
    with session_scope(factory) as s:
        s.delete(s.get(Job, job_id))
    assert _lines(factory, job_id) == []


def test_a_cancelled_job_says_so_in_its_log(settings, factory, store, make_job):
    import threading
    import time

    from sqlalchemy import update

    from drtrain.kit.models import Job

    job_id = make_job(pretrain={"epochs": 400, "batch_size": 32}, finetune={"epochs": 2})
    t = threading.Thread(target=run_job, args=(job_id,), kwargs=dict(
        settings=settings, sessionmaker=factory, store=store, worker_id="w1"))
    t.start()
    deadline = time.monotonic() + 60
    while get_job(factory, job_id).epoch is None:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.02)
    with session_scope(factory) as s:  # what POST /cancel does to a running job
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.cancelling, cancel_requested=True))
    t.join(60)
    assert get_job(factory, job_id).status == JobStatus.cancelled
    lines = _lines(factory, job_id)
    assert any(f"job {job_id} attempt 1: stopping (cancel)" in line for line in lines)
    ended = [i for i, line in enumerate(lines)
             if line.endswith(f"job {job_id} attempt 1 ended: cancelled (cancelled by user)")]
    epochs = [i for i, line in enumerate(lines) if " epoch " in line and ": recon_error=" in line]
    assert ended and ended[0] > max(epochs)


def test_the_workers_own_output_keeps_its_level_while_a_job_logs_more(factory, make_job):
    """A worker started at WARNING (as `drtrain up` starts them) prints no epoch lines, though
    the job's log keeps them."""
    import io

    job_id = make_job()
    root, out = logging.getLogger(), io.StringIO()
    printed = logging.StreamHandler(out)
    saved = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(printed)
    try:
        with attempt_log(factory, job_id, 1, max_bytes=65536, flush_seconds=10):
            logging.getLogger("worker.test_quiet").info("an epoch line")
            logging.getLogger("worker.test_quiet").warning("a warning")
        assert printed.level == logging.NOTSET  # put back
    finally:
        root.removeHandler(printed)
        root.setLevel(saved)
    assert out.getvalue() == "a warning\n"
    assert [line.rsplit(": ", 1)[1] for line in _lines(factory, job_id)] == \
        ["an epoch line", "a warning"]
